//! From a connection string to connections: [`ConnectionSettings`] (a `tokio_postgres`
//! `Config` plus libpq's `sslmode` and `sslrootcert`, which it does not fully read), the
//! [`TlsConnector`] made from them (rustls, feature `tls`), and a pool with production
//! defaults. [`Tenancy::builder_from_url`](crate::Tenancy::builder_from_url) starts here.
//!
//! The files of this folder: `url.rs` (taking the TLS parameters out of a connection string),
//! `tls.rs` (the connector and its certificate verification) and `fallback.rs` (`prefer`
//! retried in plain text when the TLS handshake fails, as libpq does).

pub(crate) mod fallback;
mod tls;
mod url;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode as DriverSslMode;
use tokio_postgres::Config;

use crate::error::{Error, Result};

pub use tls::TlsConnector;
#[cfg(feature = "tls")]
pub use tls::TlsHandshake;

/// libpq's `sslrootcert` value for the system's root certificates.
const SYSTEM_ROOTS: &str = "system";

/// The environment variable [`ConnectionSettings::from_env`] reads.
pub const DATABASE_URL: &str = "DATABASE_URL";

/// How long making a connection may take when the connection string does not say
/// (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for a free pooled connection.
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long checking a returned connection may take.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether and how a connection uses TLS: libpq's `sslmode`, all of it.
///
/// `tokio_postgres` reads only `disable`, `prefer` and `require`; [`ConnectionSettings`]
/// reads the two verifying modes too. Like libpq, `prefer` and `require` encrypt without
/// verifying who the server is, which protects against eavesdropping but not against someone
/// in the middle; use `verify-full` where that matters.
///
/// ```
/// use tenant_schemas::SslMode;
///
/// assert_eq!("verify-full".parse::<SslMode>().unwrap(), SslMode::VerifyFull);
/// assert_eq!(SslMode::default(), SslMode::Prefer);
/// assert!("allow".parse::<SslMode>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, unverified; plain otherwise, and when the TLS
    /// handshake fails, as libpq retries it (libpq's default). Without the `tls` feature,
    /// plain.
    #[default]
    Prefer,
    /// TLS or no connection; the server's certificate is not verified. With a root
    /// certificate file given ([`ConnectionSettings::root_cert`], `sslrootcert`), it is
    /// verified as for [`VerifyCa`](Self::VerifyCa), as libpq does; with
    /// `sslrootcert=system` it is an error, as in libpq (use `verify-full`).
    Require,
    /// TLS, with the server's certificate chain verified against the root certificates.
    VerifyCa,
    /// TLS, with the certificate chain verified and the certificate naming the host
    /// connected to (the `host` of the connection string, even when `hostaddr` says where to
    /// connect).
    VerifyFull,
}

impl SslMode {
    /// The name libpq gives it, e.g. `verify-full`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    fn driver(self) -> DriverSslMode {
        match self {
            Self::Disable => DriverSslMode::Disable,
            Self::Prefer => DriverSslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => DriverSslMode::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" => {
                return Err(settings(
                    "sslmode=allow is not supported: use disable, prefer, require, verify-ca or verify-full",
                ))
            }
            _ => {
                return Err(settings(
                    "invalid sslmode: use disable, prefer, require, verify-ca or verify-full",
                ))
            }
        })
    }
}

fn settings(reason: impl Into<String>) -> Error {
    Error::ConnectionSettings {
        reason: reason.into(),
    }
}

/// Where and how to connect: a `tokio_postgres` [`Config`] plus the whole of libpq's
/// `sslmode` and `sslrootcert`, and the size of the pool made from it.
///
/// [`from_url`](Self::from_url) reads a `postgres://` URL or a libpq `key=value` string.
/// `sslmode` may be any of [`SslMode`] (default `prefer`); `sslrootcert=FILE` names the PEM
/// file of the root certificates `verify-ca` and `verify-full` trust (without it, or with
/// `sslrootcert=system`, Mozilla's roots from `webpki-roots`). Both are taken out of the
/// string before the rest goes to `Config::from_str`, which knows neither.
///
/// As in libpq, `prefer` and `require` encrypt without checking the server's certificate at
/// all (any X.509 version, any issuer, any name), `require` with `sslrootcert=FILE` checks
/// the chain as `verify-ca` does, and `sslrootcert=system` makes the default sslmode
/// `verify-full` and refuses any other one: the system's roots vouch for a host name, so
/// trusting them without checking the name would be an illusion of safety.
///
/// ```
/// use tenant_schemas::{ConnectionSettings, SslMode};
///
/// let system = ConnectionSettings::from_url("postgres://db.example.com/app?sslrootcert=system")?;
/// assert_eq!(system.get_ssl_mode(), SslMode::VerifyFull);
/// let weak = ConnectionSettings::from_url(
///     "postgres://db.example.com/app?sslmode=require&sslrootcert=system",
/// );
/// assert!(weak.unwrap_err().to_string().contains("sslrootcert=system"));
/// # Ok::<(), tenant_schemas::Error>(())
/// ```
///
/// ```
/// use tenant_schemas::{ConnectionSettings, SslMode};
///
/// let settings = ConnectionSettings::from_url(
///     "postgres://app:secret@db.example.com:5432/app?sslmode=verify-full&sslrootcert=/etc/db-ca.crt",
/// )?;
/// assert_eq!(settings.get_ssl_mode(), SslMode::VerifyFull);
/// assert_eq!(settings.get_root_cert().unwrap().to_str(), Some("/etc/db-ca.crt"));
/// assert_eq!(settings.config().get_dbname(), Some("app"));
/// # Ok::<(), tenant_schemas::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    config: Config,
    ssl_mode: SslMode,
    /// Whether the sslmode was given (a `sslrootcert=system` changes only a default one).
    ssl_mode_given: bool,
    root_cert: Option<PathBuf>,
    pool_size: Option<usize>,
}

impl ConnectionSettings {
    /// Settings from a connection string: a `postgres://` (or `postgresql://`) URL or
    /// libpq's `key=value` form. The error does not repeat the string (it may hold a
    /// password).
    pub fn from_url(url: &str) -> Result<Self> {
        let split =
            url::split(url).map_err(|e| settings(format!("invalid connection string: {e}")))?;
        let ssl_mode: Option<SslMode> = split.ssl_mode.as_deref().map(str::parse).transpose()?;
        let config = Config::from_str(&split.rest).map_err(|e| {
            // The driver's error names the option, never the string.
            settings(format!(
                "invalid connection string: {}",
                crate::error::with_sources(e.to_string(), std::error::Error::source(&e))
            ))
        })?;
        let mut out = Self::new(config);
        if let Some(mode) = ssl_mode {
            out = out.ssl_mode(mode);
        }
        if let Some(path) = split.root_cert {
            out = out.root_cert(path);
        }
        // A combination libpq refuses is refused here already.
        out.effective_mode()?;
        Ok(out)
    }

    /// Settings from the `DATABASE_URL` environment variable (see
    /// [`from_url`](Self::from_url)).
    pub fn from_env() -> Result<Self> {
        match std::env::var(DATABASE_URL) {
            Ok(url) => Self::from_url(&url)
                .map_err(|e| settings(format!("{DATABASE_URL}: {}", strip_prefix(&e)))),
            Err(std::env::VarError::NotPresent) => Err(settings(format!(
                "{DATABASE_URL} is not set: set it to the database's URL, e.g. postgres://user:password@host/dbname"
            ))),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(settings(format!("{DATABASE_URL} is not valid UTF-8")))
            }
        }
    }

    /// Settings from a `tokio_postgres` [`Config`], whose sslmode (`disable`, `prefer` or
    /// `require`) is kept. `prefer`, the driver's default, counts as not given: a later
    /// [`root_cert("system")`](Self::root_cert) makes it `verify-full`.
    #[must_use]
    pub fn new(config: Config) -> Self {
        let ssl_mode = match config.get_ssl_mode() {
            DriverSslMode::Disable => SslMode::Disable,
            DriverSslMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        };
        Self {
            config,
            ssl_mode,
            ssl_mode_given: ssl_mode != SslMode::Prefer,
            root_cert: None,
            pool_size: None,
        }
    }

    /// Sets the sslmode.
    #[must_use]
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.ssl_mode = mode;
        self.ssl_mode_given = true;
        self.config.ssl_mode(mode.driver());
        self
    }

    /// Sets the PEM file of the root certificates trusted by `verify-ca` and `verify-full`
    /// (libpq's `sslrootcert`). `system` means Mozilla's roots, as when none is given, and,
    /// as in libpq, makes the sslmode `verify-full` unless one was given: any other given
    /// sslmode is then refused by [`tls_connector`](Self::tls_connector) and
    /// [`pool`](Self::pool).
    #[must_use]
    pub fn root_cert(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        if path == Path::new(SYSTEM_ROOTS) && !self.ssl_mode_given {
            self.ssl_mode = SslMode::VerifyFull;
            self.config.ssl_mode(SslMode::VerifyFull.driver());
        }
        self.root_cert = Some(path);
        self
    }

    /// Sets the number of connections of [`pool`](Self::pool) (default: twice the CPU
    /// cores, at least 4).
    #[must_use]
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = Some(size);
        self
    }

    /// The driver's settings (its sslmode says only whether TLS is used: `require` for the
    /// verifying modes).
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The sslmode.
    #[must_use]
    pub fn get_ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// The root certificate file, when one is given.
    #[must_use]
    pub fn get_root_cert(&self) -> Option<&Path> {
        self.root_cert.as_deref()
    }

    /// The sslmode connections are made and verified with, as libpq decides it: `require`
    /// with a root certificate file given is `verify-ca`; with `sslrootcert=system` only
    /// `verify-full` is allowed (libpq: "weak sslmode may not be used with
    /// sslrootcert=system"), since the system's roots vouch for host names.
    ///
    /// ```
    /// use tenant_schemas::{ConnectionSettings, SslMode};
    ///
    /// let s = ConnectionSettings::from_url("postgres://db/app?sslmode=require&sslrootcert=/etc/ca.pem")?;
    /// assert_eq!(s.effective_ssl_mode()?, SslMode::VerifyCa);
    /// let s = ConnectionSettings::from_url("postgres://db/app?sslmode=require")?.root_cert("system");
    /// assert!(s.effective_ssl_mode().is_err());
    /// # Ok::<(), tenant_schemas::Error>(())
    /// ```
    pub fn effective_ssl_mode(&self) -> Result<SslMode> {
        self.effective_mode()
    }

    fn effective_mode(&self) -> Result<SslMode> {
        match (self.ssl_mode, self.root_cert.as_deref()) {
            (SslMode::VerifyFull, _) => Ok(SslMode::VerifyFull),
            (mode, Some(path)) if path == Path::new(SYSTEM_ROOTS) => Err(settings(format!(
                "weak sslmode \"{mode}\" may not be used with sslrootcert=system (use \
                 \"verify-full\"), as libpq refuses it: the system's root certificates vouch \
                 for host names, so they are trusted only with the host name checked"
            ))),
            (SslMode::Require, Some(_)) => Ok(SslMode::VerifyCa),
            (mode, _) => Ok(mode),
        }
    }

    /// The TLS connector for these settings; fails when the root certificate file cannot be
    /// read, the sslmode is refused with `sslrootcert=system`, or TLS is asked for without
    /// the `tls` feature.
    pub fn tls_connector(&self) -> Result<TlsConnector> {
        TlsConnector::new(self.effective_mode()?, self.root_cert.as_deref())
    }

    /// The number of connections of [`pool`](Self::pool): the one set with
    /// [`pool_size`](Self::pool_size), or twice the CPU cores, at least 4. Other drivers'
    /// pools (tenant-schemas-sqlx) are sized from it.
    #[must_use]
    pub fn get_pool_size(&self) -> usize {
        self.pool_size.unwrap_or_else(default_pool_size)
    }

    /// How long making a connection may take: the connection string's `connect_timeout`, or
    /// 10 s.
    #[must_use]
    pub fn get_connect_timeout(&self) -> Duration {
        self.config
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT)
    }

    /// How long a request waits for a free pooled connection of [`pool`](Self::pool): 10 s.
    #[must_use]
    pub fn get_wait_timeout(&self) -> Duration {
        WAIT_TIMEOUT
    }

    /// The driver's settings as the library connects with them: a 10-second
    /// `connect_timeout` unless the string gave one.
    pub(crate) fn connect_config(&self) -> Config {
        let mut config = self.config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config
    }

    /// A deadpool pool with production defaults: [`pool_size`](Self::pool_size) connections
    /// (twice the CPU cores, at least 4, unless set), made over TLS as the sslmode says,
    /// within the `connect_timeout` (10 s unless the string says); a request waits at most
    /// 10 s for a free connection; a returned connection is checked with the fast method
    /// (`RecyclingMethod::Fast`: is it closed?) within 5 s. No connection is made yet.
    pub fn pool(&self) -> Result<Pool> {
        let config = self.connect_config();
        let create_timeout = config.get_connect_timeout().copied();
        let size = self.get_pool_size();
        let manager = Manager::from_connect(
            config,
            fallback::PreferFallback(self.tls_connector()?),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .create_timeout(create_timeout)
            .wait_timeout(Some(WAIT_TIMEOUT))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .build()
            .map_err(|e| settings(format!("cannot build the pool: {e}")))
    }
}

impl From<Config> for ConnectionSettings {
    fn from(config: Config) -> Self {
        Self::new(config)
    }
}

impl FromStr for ConnectionSettings {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::from_url(s)
    }
}

/// Twice the CPU cores, at least 4: a connection waits on the network most of its time.
fn default_pool_size() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    (cores * 2).max(4)
}

/// The reason of a settings error, without its "invalid connection settings" prefix.
fn strip_prefix(err: &Error) -> String {
    match err {
        Error::ConnectionSettings { reason } => reason.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifying_modes_are_read_and_the_driver_is_told_to_require_tls() {
        let s = ConnectionSettings::from_url(
            "postgres://u:p@localhost:5433/app?sslmode=verify-full&sslrootcert=/tmp/ca.pem",
        )
        .unwrap();
        assert_eq!(s.get_ssl_mode(), SslMode::VerifyFull);
        assert_eq!(s.get_root_cert(), Some(Path::new("/tmp/ca.pem")));
        assert_eq!(s.config().get_ssl_mode(), DriverSslMode::Require);
        assert_eq!(s.config().get_ports(), &[5433]);

        let s = ConnectionSettings::from_url("host=db dbname=app sslmode=verify-ca").unwrap();
        assert_eq!(s.get_ssl_mode(), SslMode::VerifyCa);
        assert_eq!(s.config().get_dbname(), Some("app"));

        let s = ConnectionSettings::from_url("postgres://db/app").unwrap();
        assert_eq!(s.get_ssl_mode(), SslMode::Prefer);
        let s = ConnectionSettings::from_url("postgres://db/app?sslmode=disable").unwrap();
        assert_eq!(s.config().get_ssl_mode(), DriverSslMode::Disable);
    }

    #[test]
    fn require_with_a_root_certificate_verifies_the_chain_as_libpq_does() {
        let s = ConnectionSettings::from_url("postgres://db/app?sslmode=require").unwrap();
        assert_eq!(s.effective_mode().unwrap(), SslMode::Require);
        let s = s.root_cert("/tmp/ca.pem");
        assert_eq!(s.effective_mode().unwrap(), SslMode::VerifyCa);
    }

    #[test]
    fn sslrootcert_system_means_verify_full_and_refuses_weaker_modes_as_libpq_does() {
        // No sslmode: libpq's default becomes verify-full.
        for url in [
            "postgres://db/app?sslrootcert=system",
            "host=db dbname=app sslrootcert=system",
        ] {
            let s = ConnectionSettings::from_url(url).unwrap();
            assert_eq!(s.get_ssl_mode(), SslMode::VerifyFull, "{url}");
            assert_eq!(s.effective_mode().unwrap(), SslMode::VerifyFull, "{url}");
            assert_eq!(s.config().get_ssl_mode(), DriverSslMode::Require, "{url}");
        }
        let s = ConnectionSettings::from_url(
            "postgres://db/app?sslmode=verify-full&sslrootcert=system",
        )
        .unwrap();
        assert_eq!(s.effective_mode().unwrap(), SslMode::VerifyFull);
        // Any weaker sslmode given is refused, whichever order the parameters come in.
        for mode in ["disable", "prefer", "require", "verify-ca"] {
            for url in [
                format!("postgres://u:hunter2@db/app?sslmode={mode}&sslrootcert=system"),
                format!("postgres://u:hunter2@db/app?sslrootcert=system&sslmode={mode}"),
                format!("host=db password=hunter2 sslrootcert=system sslmode={mode}"),
            ] {
                let err = ConnectionSettings::from_url(&url).unwrap_err().to_string();
                assert!(
                    err.contains(&format!(
                        "weak sslmode \"{mode}\" may not be used with sslrootcert=system"
                    )),
                    "{url}: {err}"
                );
                assert!(err.contains("verify-full"), "{err}");
                assert!(!err.contains("hunter2"), "{err}");
            }
        }
        // Built in code: the same rules, told by the connector and the pool.
        let given = ConnectionSettings::from_url("postgres://db/app?sslmode=require")
            .unwrap()
            .root_cert("system");
        assert!(given.tls_connector().is_err());
        assert!(given.pool().is_err());
        let defaulted = ConnectionSettings::from_url("postgres://db/app")
            .unwrap()
            .root_cert("system");
        assert_eq!(defaulted.effective_mode().unwrap(), SslMode::VerifyFull);
        let overridden = defaulted.ssl_mode(SslMode::Require);
        assert!(overridden.effective_mode().is_err());
    }

    #[test]
    fn bad_settings_are_errors_that_never_show_the_password() {
        for url in [
            "postgres://u:hunter2@db/app?sslmode=sometimes",
            "postgres://u:hunter2@db/app?sslmode=allow",
            "postgres://u:hunter2@db/app?nonsense=1",
            "postgres://u:hunter2@db:notaport/app",
        ] {
            let err = ConnectionSettings::from_url(url).unwrap_err().to_string();
            assert!(err.starts_with("invalid connection settings"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let err = ConnectionSettings::from_url("postgres://db/app?nonsense=1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nonsense"), "{err}");
    }

    #[test]
    fn a_missing_root_certificate_file_is_named() {
        let s = ConnectionSettings::from_url(
            "postgres://db/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap();
        let err = s.tls_connector().unwrap_err().to_string();
        if cfg!(feature = "tls") {
            assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        } else {
            assert!(err.contains("`tls` feature"), "{err}");
        }
    }

    #[test]
    fn default_pools_have_at_least_four_connections() {
        assert!(default_pool_size() >= 4);
    }
}
