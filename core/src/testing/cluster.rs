//! A PostgreSQL server for tests: a throwaway cluster of the system's PostgreSQL, or an
//! external server.

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::sync::OnceLock;

use tokio_postgres::{Config, NoTls};

use super::database::TestDatabase;
use super::{io, pool, unique, HarnessError, HarnessResult, DATABASE_URL_ENV};

/// A PostgreSQL server for tests: a throwaway cluster (stopped and removed on drop), or an
/// external server named by `TENANT_SCHEMAS_TEST_DATABASE_URL`.
#[derive(Debug)]
pub struct TestCluster {
    admin: Config,
    local: Option<LocalCluster>,
}

#[derive(Debug)]
struct LocalCluster {
    root: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    port: u16,
    settings: Vec<String>,
    watchdog: Option<std::process::Child>,
    ca_cert: Option<PathBuf>,
}

impl TestCluster {
    /// One cluster for the whole test process, started on first use.
    ///
    /// It is never dropped; a watchdog process stops and removes it once this process exits.
    pub fn shared() -> HarnessResult<&'static Self> {
        static SHARED: OnceLock<std::result::Result<TestCluster, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| HarnessError::Command {
                command: "starting the shared test cluster".into(),
                output: e.clone(),
            })
    }

    /// Starts a new throwaway cluster (or connects to the external server). This blocks for
    /// the second or two `initdb` and `pg_ctl start` take.
    pub fn start() -> HarnessResult<Self> {
        Self::start_with_settings(&[])
    }

    /// Like [`start`](Self::start), with extra server settings such as `log_statement=all`
    /// (ignored for an external server).
    pub fn start_with_settings(settings: &[&str]) -> HarnessResult<Self> {
        if let Ok(url) = std::env::var(DATABASE_URL_ENV) {
            let admin = Config::from_str(&url).map_err(|e| HarnessError::BadUrl(e.to_string()))?;
            return Ok(Self { admin, local: None });
        }
        Self::start_local(settings, None)
    }

    /// Like [`start`](Self::start), with TLS on (`ssl = on`): the harness makes a
    /// certificate authority and a server certificate for `localhost` and `127.0.0.1` signed
    /// by it; [`ca_cert`](Self::ca_cert) is the CA's PEM file, for `sslrootcert`. Plain
    /// connections are still accepted. Needs the system's PostgreSQL: with
    /// `TENANT_SCHEMAS_TEST_DATABASE_URL` set it fails with [`HarnessError::ExternalServer`].
    ///
    /// ```no_run
    /// use tenant_schemas::testing::TestCluster;
    ///
    /// let cluster = TestCluster::start_with_tls()?;
    /// let url = format!(
    ///     "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
    ///     cluster.port().unwrap(),
    ///     cluster.ca_cert().unwrap().display(),
    /// );
    /// # Ok::<(), tenant_schemas::testing::HarnessError>(())
    /// ```
    pub fn start_with_tls() -> HarnessResult<Self> {
        if std::env::var_os(DATABASE_URL_ENV).is_some() {
            return Err(HarnessError::ExternalServer);
        }
        Self::start_local(&[], Some(Tls::MadeHere))
    }

    /// Like [`start_with_tls`](Self::start_with_tls), with the server's certificate and key
    /// given (PEM), e.g. a self-signed X.509 version 1 certificate such as the one
    /// `CREATE EXTENSION citus` makes, and extra server settings (e.g.
    /// `ssl_max_protocol_version=TLSv1.2`); [`ca_cert`](Self::ca_cert) is `None`. Needs the
    /// system's PostgreSQL, as `start_with_tls` does.
    pub fn start_with_certificate(
        cert_pem: &str,
        key_pem: &str,
        settings: &[&str],
    ) -> HarnessResult<Self> {
        if std::env::var_os(DATABASE_URL_ENV).is_some() {
            return Err(HarnessError::ExternalServer);
        }
        Self::start_local(
            settings,
            Some(Tls::Given {
                cert: cert_pem.to_owned(),
                key: key_pem.to_owned(),
            }),
        )
    }

    fn start_local(settings: &[&str], tls: Option<Tls>) -> HarnessResult<Self> {
        let bin = find_bin_dir().ok_or(HarnessError::NoPostgres)?;
        let as_postgres = is_root();
        let root = std::env::temp_dir().join(unique("tenant-schemas-pg-"));
        std::fs::create_dir(&root).map_err(io(format!("creating {}", root.display())))?;
        // `postgres` must be able to reach the directory when we run as root.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(io("setting permissions"))?;
        let mut local = LocalCluster {
            root,
            bin,
            as_postgres,
            port: 0,
            settings: settings.iter().map(|s| format!(" -c {s}")).collect(),
            watchdog: None,
            ca_cert: None,
        };
        if as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(&local.root))?;
        }
        let data = local.root.join("data");
        local.run_pg(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--no-sync".as_ref(),
                "--no-instructions".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
            ],
        )?;
        match tls {
            Some(Tls::MadeHere) => local.make_certificates()?,
            Some(Tls::Given { cert, key }) => local.install_certificate(&cert, &key)?,
            None => {}
        }
        local.watchdog = Some(local.spawn_watchdog()?);
        // A free port is only free until someone else binds it: another harness in a
        // parallel test may take the same one between our probe and the server's bind.
        let mut attempts = 0;
        loop {
            local.port = free_port()?;
            match local.start_server() {
                Ok(()) => break,
                Err(err) if attempts < 4 && local.lost_its_port() => {
                    attempts += 1;
                    tracing::debug!(%err, "test cluster's port was taken; trying another");
                }
                Err(err) => return Err(err),
            }
        }
        let mut admin = Config::new();
        admin
            .host_path(&local.root)
            .port(local.port)
            .user("postgres")
            .dbname("postgres");
        Ok(Self {
            admin,
            local: Some(local),
        })
    }

    /// Connection settings for database `dbname` on this server.
    #[must_use]
    pub fn config(&self, dbname: &str) -> Config {
        let mut config = self.admin.clone();
        config.dbname(dbname);
        config
    }

    /// A `postgres://` URL for `dbname` over TCP on 127.0.0.1 (for tools like `psql`).
    /// `None` for an external server (use its own URL).
    #[must_use]
    pub fn url(&self, dbname: &str) -> Option<String> {
        self.local
            .as_ref()
            .map(|l| format!("postgres://postgres@127.0.0.1:{}/{dbname}", l.port))
    }

    /// The PEM file of the certificate authority that signed the server's certificate, for
    /// a cluster started with [`start_with_tls`](Self::start_with_tls).
    #[must_use]
    pub fn ca_cert(&self) -> Option<&Path> {
        self.local.as_ref().and_then(|l| l.ca_cert.as_deref())
    }

    /// The TCP port of a throwaway cluster.
    #[must_use]
    pub fn port(&self) -> Option<u16> {
        self.local.as_ref().map(|l| l.port)
    }

    /// The server log of a throwaway cluster.
    #[must_use]
    pub fn log_file(&self) -> Option<PathBuf> {
        self.local.as_ref().map(|l| l.root.join("server.log"))
    }

    /// Creates a new, empty database with a unique name.
    pub async fn create_database(&self) -> HarnessResult<TestDatabase> {
        let name = unique("tenant_schemas_test_");
        let (client, conn) = self.admin.connect(NoTls).await?;
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        drop(client);
        let _ = task.await;
        let config = self.config(&name);
        let pool = pool(config.clone(), 16)?;
        Ok(TestDatabase::new(name, config, pool))
    }

    /// Where a proxy in front of this server connects: the socket directory (throwaway
    /// cluster) or host, the port, and the user.
    pub(super) fn server(&self) -> (String, u16, String) {
        let (host, port) = match &self.local {
            Some(local) => (local.root.display().to_string(), local.port),
            None => {
                let host = match self.admin.get_hosts().first() {
                    Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                    Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
                    None => "127.0.0.1".into(),
                };
                (
                    host,
                    self.admin.get_ports().first().copied().unwrap_or(5432),
                )
            }
        };
        let user = self.admin.get_user().unwrap_or("postgres").to_owned();
        (host, port, user)
    }

    /// Stops the throwaway cluster immediately (all connections drop), keeping its files,
    /// to test what happens when the database goes away.
    pub fn stop(&self) -> HarnessResult<()> {
        match &self.local {
            Some(local) => local.pg_ctl("stop", "fast"),
            None => Ok(()),
        }
    }

    /// Starts a cluster stopped with [`TestCluster::stop`] again, on the same port.
    pub fn restart(&self) -> HarnessResult<()> {
        match &self.local {
            Some(local) => local.start_server(),
            None => Ok(()),
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(local) = &mut self.local {
            let _ = local.pg_ctl("stop", "immediate");
            if let Some(mut watchdog) = local.watchdog.take() {
                let _ = watchdog.kill();
                let _ = watchdog.wait();
            }
            let _ = std::fs::remove_dir_all(&local.root);
        }
    }
}

/// Where a TLS server's certificate comes from.
enum Tls {
    /// A CA and a certificate signed by it, made by the harness.
    MadeHere,
    /// The certificate and key given (PEM).
    Given { cert: String, key: String },
}

impl LocalCluster {
    /// A CA (written to `ca.crt` beside the data directory) and a server certificate for
    /// `localhost` and `127.0.0.1` signed by it (`server.crt`, `server.key` in the data
    /// directory, owned by the server's user, the key readable by it alone, as PostgreSQL
    /// demands); TLS is turned on for the server.
    fn make_certificates(&mut self) -> HarnessResult<()> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let failed = |e: rcgen::Error| HarnessError::Certificate(e.to_string());
        let ca_key = KeyPair::generate().map_err(failed)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca.distinguished_name
            .push(DnType::CommonName, "tenant-schemas test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca.self_signed(&ca_key).map_err(failed)?;
        let server_key = KeyPair::generate().map_err(failed)?;
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(failed)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server = server
            .signed_by(&server_key, &ca, &ca_key)
            .map_err(failed)?;

        let ca_file = self.root.join("ca.crt");
        write(&ca_file, &ca.pem(), 0o644)?;
        self.install_certificate(&server.pem(), &server_key.serialize_pem())?;
        self.ca_cert = Some(ca_file);
        Ok(())
    }

    /// The server's certificate and key (`server.crt`, `server.key` in the data directory,
    /// owned by the server's user, the key readable by it alone, as PostgreSQL demands);
    /// TLS is turned on for the server.
    fn install_certificate(&mut self, cert_pem: &str, key_pem: &str) -> HarnessResult<()> {
        let data = self.root.join("data");
        let (cert_file, key_file) = (data.join("server.crt"), data.join("server.key"));
        write(&cert_file, cert_pem, 0o644)?;
        write(&key_file, key_pem, 0o600)?;
        if self.as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(&cert_file)
                .arg(&key_file))?;
        }
        // Relative to the data directory.
        self.settings
            .push(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".to_owned());
        Ok(())
    }

    /// `pg_ctl start` on the cluster's private port and socket directory, tuned for tests
    /// (no fsync: a crash loses nothing a test needs).
    fn start_server(&self) -> HarnessResult<()> {
        let data = self.root.join("data");
        let log = self.root.join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=400 -c shared_buffers=64MB{}",
            self.port,
            self.root.display(),
            self.settings.concat()
        );
        self.run_pg(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-o".as_ref(),
                options.as_ref(),
                "start".as_ref(),
            ],
        )
    }

    /// Whether the last start failed because its port was in use.
    fn lost_its_port(&self) -> bool {
        std::fs::read_to_string(self.root.join("server.log"))
            .is_ok_and(|log| log.contains("Address already in use"))
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn run_pg(&self, program: &str, args: &[&std::ffi::OsStr]) -> HarnessResult<()> {
        let mut cmd = self.command(program);
        cmd.args(args).current_dir(&self.root);
        run(&mut cmd)
    }

    fn pg_ctl(&self, action: &str, mode: &str) -> HarnessResult<()> {
        let data = self.root.join("data");
        self.run_pg(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                mode.as_ref(),
                "-w".as_ref(),
                action.as_ref(),
            ],
        )
    }

    /// A shell loop that stops and removes the cluster once this process is gone, so a test
    /// process that exits without dropping the cluster (a static, a panic) leaves nothing.
    fn spawn_watchdog(&self) -> HarnessResult<std::process::Child> {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!("runuser -u postgres -- '{}'", pg_ctl.display())
        } else {
            format!("'{}'", pg_ctl.display())
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {stop} -D '{root}/data' -m immediate stop >/dev/null 2>&1; rm -rf '{root}'",
            pid = std::process::id(),
            root = self.root.display(),
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("starting the cluster watchdog"))
    }
}

/// Writes `text` to `path` with permissions `mode`.
fn write(path: &Path, text: &str, mode: u32) -> HarnessResult<()> {
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("setting permissions of {}", path.display())))
}

pub(super) fn run(cmd: &mut Command) -> HarnessResult<()> {
    let output: Output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("running {cmd:?}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(HarnessError::Command {
        command: format!("{cmd:?}"),
        output: format!(
            "{}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        ),
    })
}

pub(super) fn is_root() -> bool {
    // /proc/self belongs to the effective user of this process.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub(super) fn free_port() -> HarnessResult<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("finding a free port"))?
        .port())
}

pub(super) fn find_bin_dir() -> Option<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        if has_initdb(&dir) {
            return Some(dir);
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_initdb(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}
