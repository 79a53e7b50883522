//! sqlx connection options from the core's tokio-postgres settings.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use tenant_schemas::tokio_postgres::config::{Host, SslMode as DriverSslMode};
use tenant_schemas::tokio_postgres::Config;
use tenant_schemas::{ConnectionSettings, SslMode};

/// sqlx connection options for the database `config` points at (host or socket directory,
/// port, user, password, database) and its sslmode (`disable`, `prefer` or `require`, all a
/// `Config` holds), so a [`Tenancy`](tenant_schemas::Tenancy) and a
/// [`SqlxRouter`](crate::SqlxRouter) can be built from the same settings. Other options are
/// not carried over: set them on the result. For a URL with `verify-ca`, `verify-full` or
/// `sslrootcert`, use [`connect_options_from_settings`].
#[must_use]
pub fn connect_options(config: &Config) -> PgConnectOptions {
    let mut options =
        PgConnectOptions::new().port(config.get_ports().first().copied().unwrap_or(5432));
    if let Some(user) = config.get_user() {
        options = options.username(user);
    }
    if let Some(dbname) = config.get_dbname() {
        options = options.database(dbname);
    }
    if let Some(password) = config.get_password() {
        options = options.password(&String::from_utf8_lossy(password));
    }
    options = options.ssl_mode(match config.get_ssl_mode() {
        DriverSslMode::Disable => PgSslMode::Disable,
        DriverSslMode::Prefer => PgSslMode::Prefer,
        _ => PgSslMode::Require,
    });
    match config.get_hosts().first() {
        Some(Host::Unix(dir)) => options.socket(dir),
        Some(Host::Tcp(host)) => options.host(host),
        None => options,
    }
}

/// sqlx connection options from the core's [`ConnectionSettings`] (e.g.
/// [`ConnectionSettings::from_url`]): where to connect, as [`connect_options`], and TLS as
/// the settings say, so that one URL means one security level for both drivers.
///
/// As libpq and the core: `prefer` (the default) and `require` encrypt without checking the
/// server's certificate (any X.509 version: Citus' self-signed version 1 certificate is
/// accepted), `prefer` falls back to plain text when the server has no TLS; `verify-ca`
/// checks the chain against `sslrootcert` (or `require` with a `sslrootcert` file);
/// `verify-full` also the host name. `sslrootcert=system` (only with `verify-full`, as in
/// libpq) trusts OpenSSL's system roots here, where the core trusts Mozilla's.
///
/// TLS needs the crate's `tls` feature (sqlx's native-tls, OpenSSL); without it, as the core
/// without its own, `prefer` connects in plain text and the other modes are refused here.
/// Fails with [`tenant_schemas::Error::ConnectionSettings`] for what the core refuses too
/// (`sslmode=require&sslrootcert=system`).
///
/// ```
/// use tenant_schemas::ConnectionSettings;
/// use tenant_schemas_sqlx::connect_options_from_settings;
///
/// let settings = ConnectionSettings::from_url("postgres://app@db.example.com/app?sslmode=disable")?;
/// let options = connect_options_from_settings(&settings)?;
/// assert_eq!(options.get_host(), "db.example.com");
/// let weak = ConnectionSettings::from_url("postgres://app@db.example.com/app")?
///     .ssl_mode(tenant_schemas::SslMode::Require)
///     .root_cert("system");
/// assert!(connect_options_from_settings(&weak).is_err());
/// # Ok::<(), tenant_schemas::Error>(())
/// ```
pub fn connect_options_from_settings(
    settings: &ConnectionSettings,
) -> Result<PgConnectOptions, tenant_schemas::Error> {
    let mode = settings.effective_ssl_mode()?;
    if !cfg!(feature = "tls") && !matches!(mode, SslMode::Disable | SslMode::Prefer) {
        return Err(tenant_schemas::Error::ConnectionSettings {
            reason: format!(
                "sslmode={mode} needs TLS, and tenant-schemas-sqlx was built without its `tls` feature"
            ),
        });
    }
    let mut options = connect_options(settings.config()).ssl_mode(match mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require => PgSslMode::Require,
        SslMode::VerifyCa => PgSslMode::VerifyCa,
        _ => PgSslMode::VerifyFull,
    });
    if let Some(root) = settings.get_root_cert() {
        if root != std::path::Path::new("system") {
            options = options.ssl_root_cert(root);
        }
    }
    Ok(options)
}

/// sqlx pool options with the core's production settings
/// ([`ConnectionSettings::pool`](tenant_schemas::ConnectionSettings::pool)): as many
/// connections ([`get_pool_size`](ConnectionSettings::get_pool_size)), and a request waits at
/// most the core's wait timeout for a connection
/// ([`get_wait_timeout`](ConnectionSettings::get_wait_timeout), 10 s), making one included
/// (sqlx bounds both with `acquire_timeout`; the longer of the wait and the `connect_timeout`
/// is taken), not sqlx's default 30 s.
///
/// A database that is down answers fast through [`SqlxRouter`](crate::SqlxRouter) whatever
/// the pool's options: sqlx retries a refused connection until `acquire_timeout`, so the
/// router checks, when a checkout waits, whether the server accepts connections at all, and
/// answers [`Error::Pool`](crate::Error::Pool) (503) when it does not.
///
/// ```
/// use tenant_schemas::ConnectionSettings;
/// use tenant_schemas_sqlx::pool_options_from_settings;
///
/// let settings = ConnectionSettings::from_url("postgres://app@db.example.com/app")?.pool_size(12);
/// let options = pool_options_from_settings(&settings);
/// assert_eq!(options.get_max_connections(), 12);
/// assert_eq!(options.get_acquire_timeout(), settings.get_wait_timeout());
/// # Ok::<(), tenant_schemas::Error>(())
/// ```
#[must_use]
pub fn pool_options_from_settings(settings: &ConnectionSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(u32::try_from(settings.get_pool_size()).unwrap_or(u32::MAX))
        .acquire_timeout(
            settings
                .get_wait_timeout()
                .max(settings.get_connect_timeout()),
        )
}

/// The sqlx pool for `settings`, as the core's
/// [`ConnectionSettings::pool`](tenant_schemas::ConnectionSettings::pool) makes its own: TLS
/// as the settings say ([`connect_options_from_settings`]), the core's pool size and timeouts
/// ([`pool_options_from_settings`]). No connection is made yet. Must be called within a
/// tokio runtime.
///
/// ```no_run
/// use tenant_schemas::ConnectionSettings;
/// use tenant_schemas_sqlx::{pool_from_settings, SqlxRouter};
///
/// # async fn demo() -> Result<(), tenant_schemas::Error> {
/// let settings = ConnectionSettings::from_env()?; // DATABASE_URL
/// let router = SqlxRouter::new(pool_from_settings(&settings)?);
/// # Ok(()) }
/// ```
pub fn pool_from_settings(settings: &ConnectionSettings) -> Result<PgPool, tenant_schemas::Error> {
    Ok(pool_options_from_settings(settings)
        .connect_lazy_with(connect_options_from_settings(settings)?))
}
