//! A real `pgbouncer` in front of a test cluster, in transaction (or session) pooling mode.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use tokio_postgres::Config;

use super::cluster::{free_port, is_root, run, TestCluster};
use super::{io, unique, HarnessError, HarnessResult};

/// Where [`TestPgBouncer`] looks for `pgbouncer`, in order, when neither
/// [`TestPgBouncerBuilder::binary`] nor [`PGBOUNCER_ENV`] names one: the build that
/// `scripts/test` installs (1.25.2, with prepared statements in transaction pooling), then
/// Debian's package (1.18 on Debian 12).
pub const PGBOUNCER_PATHS: [&str; 3] = [
    "/usr/local/bin/pgbouncer",
    "/usr/sbin/pgbouncer",
    "/usr/bin/pgbouncer",
];

/// The environment variable naming the `pgbouncer` binary the tests start (a path), e.g.
/// `/usr/sbin/pgbouncer` to run them against Debian's 1.18.
pub const PGBOUNCER_ENV: &str = "TENANT_SCHEMAS_PGBOUNCER";

/// A real `pgbouncer` in transaction pooling mode in front of a [`TestCluster`], for testing
/// [`SearchPathMode::Transaction`](crate::SearchPathMode::Transaction). Stopped on drop.
///
/// The binary is the one [`PGBOUNCER_ENV`] names, else the first of [`PGBOUNCER_PATHS`];
/// [`TestPgBouncer::builder`] can pick another. A PgBouncer that can keep prepared statements
/// in transaction pooling (1.21 and later) is started with `max_prepared_statements = 0` unless
/// [`TestPgBouncerBuilder::max_prepared_statements`] says otherwise, so that a test can count
/// what the library leaves named on a server connection; PgBouncer's own default since 1.24 is
/// 200, what deployments run (the benchmarks use it). With it on, PgBouncer keeps a named
/// statement on the server after its client closes it and shares it among all its clients
/// that prepare the same text, whatever their `search_path`.
#[derive(Debug)]
pub struct TestPgBouncer {
    root: PathBuf,
    port: u16,
    process: std::process::Child,
    version: (u32, u32, u32),
    binary: PathBuf,
    max_prepared_statements: u32,
}

/// Starts a [`TestPgBouncer`] with a chosen binary or pooling mode.
#[derive(Debug)]
#[must_use]
pub struct TestPgBouncerBuilder<'a> {
    cluster: &'a TestCluster,
    pool_size: usize,
    mode: &'static str,
    binary: Option<PathBuf>,
    max_prepared_statements: u32,
}

impl TestPgBouncerBuilder<'_> {
    /// PgBouncer's `max_prepared_statements` (1.21 and later; ignored for older ones):
    /// named prepared statements kept per server connection in transaction pooling, shared by
    /// every client preparing the same text. Default 0 here (see [`TestPgBouncer`]); 200 is
    /// PgBouncer's own default since 1.24.
    pub fn max_prepared_statements(mut self, n: u32) -> Self {
        self.max_prepared_statements = n;
        self
    }

    /// Server connections per database (default 4).
    pub fn pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// Session pooling (a server connection per client connection for as long as it lasts)
    /// instead of transaction pooling.
    pub fn session_pooling(mut self) -> Self {
        self.mode = "session";
        self
    }

    /// This `pgbouncer` binary instead of the default one (see [`TestPgBouncer`]).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Starts it on a free port of 127.0.0.1.
    pub fn start(self) -> HarnessResult<TestPgBouncer> {
        let bin = match &self.binary {
            Some(bin) => bin.clone(),
            None => TestPgBouncer::default_binary()?,
        };
        TestPgBouncer::start_binary(&self, bin)
    }
}

impl TestPgBouncer {
    /// Starts `pgbouncer` (see [`TestPgBouncer`] for which) on a free port of 127.0.0.1, with
    /// `pool_size` server connections per database, in transaction pooling mode.
    pub fn start(cluster: &TestCluster, pool_size: usize) -> HarnessResult<Self> {
        Self::builder(cluster).pool_size(pool_size).start()
    }

    /// [`start`](Self::start) in session pooling mode (a server connection per client
    /// connection for as long as it lasts), e.g. for a baseline to compare with.
    pub fn start_session_pooling(cluster: &TestCluster, pool_size: usize) -> HarnessResult<Self> {
        Self::builder(cluster)
            .pool_size(pool_size)
            .session_pooling()
            .start()
    }

    /// A builder, to pick the binary or the pooling mode.
    pub fn builder(cluster: &TestCluster) -> TestPgBouncerBuilder<'_> {
        TestPgBouncerBuilder {
            cluster,
            pool_size: 4,
            mode: "transaction",
            binary: None,
            max_prepared_statements: 0,
        }
    }

    /// The binary [`start`](Self::start) runs: [`PGBOUNCER_ENV`]'s, else the first of
    /// [`PGBOUNCER_PATHS`] that exists.
    pub fn default_binary() -> HarnessResult<PathBuf> {
        if let Some(bin) = std::env::var_os(PGBOUNCER_ENV).filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(bin));
        }
        PGBOUNCER_PATHS
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| HarnessError::Command {
                command: "pgbouncer".into(),
                output: "not found; install it, e.g. `apt-get install pgbouncer` (1.18 on \
                         Debian 12), or 1.21+ as /usr/local/bin/pgbouncer"
                    .into(),
            })
    }

    /// The version `bin --version` reports, e.g. `(1, 25, 2)`.
    pub fn binary_version(bin: &std::path::Path) -> HarnessResult<(u32, u32, u32)> {
        let out = Command::new(bin)
            .arg("--version")
            .output()
            .map_err(io(format!("running {} --version", bin.display())))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        parse_version(&text).ok_or_else(|| HarnessError::Command {
            command: format!("{} --version", bin.display()),
            output: text,
        })
    }

    fn start_binary(options: &TestPgBouncerBuilder<'_>, bin: PathBuf) -> HarnessResult<Self> {
        let TestPgBouncerBuilder {
            cluster,
            pool_size,
            mode,
            max_prepared_statements,
            ..
        } = *options;
        let version = Self::binary_version(&bin)?;
        // Protocol-level prepared statements in transaction pooling: 1.21 and later (the
        // setting is unknown to older ones).
        let prepared = if version >= (1, 21, 0) {
            format!("max_prepared_statements = {max_prepared_statements}\n")
        } else {
            String::new()
        };
        let (server_host, server_port, user) = cluster.server();
        let as_postgres = is_root();
        let root = std::env::temp_dir().join(unique("tenant-schemas-pgbouncer-"));
        std::fs::create_dir(&root).map_err(io(format!("creating {}", root.display())))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(io("setting permissions"))?;
        let port = free_port()?;
        let ini = format!(
            "[databases]\n* = host={server_host} port={server_port} user={user}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = any\npool_mode = {mode}\ndefault_pool_size = {pool_size}\n\
             max_client_conn = 1000\nserver_reset_query =\nlogfile = {log}\npidfile = {pid}\n\
             ignore_startup_parameters = extra_float_digits,options\n{prepared}",
            log = root.join("pgbouncer.log").display(),
            pid = root.join("pgbouncer.pid").display(),
        );
        let ini_path = root.join("pgbouncer.ini");
        std::fs::write(&ini_path, ini).map_err(io("writing pgbouncer.ini"))?;
        let mut cmd = Command::new(&bin);
        if as_postgres {
            // pgbouncer refuses to run as root; `-u` makes it switch user itself, so the
            // child we hold is pgbouncer and stopping it needs no signal forwarding.
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&root))?;
            cmd.args(["-u", "postgres"]);
        }
        let process = cmd
            .arg(&ini_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("starting pgbouncer"))?;
        let mut bouncer = Self {
            root,
            port,
            process,
            version,
            binary: bin,
            max_prepared_statements: if version >= (1, 21, 0) {
                max_prepared_statements
            } else {
                0
            },
        };
        for _ in 0..100 {
            // Listening is only ours while our pgbouncer runs: one that exited (its port
            // taken in between) must not pass for ready because someone else listens there.
            if bouncer.process.try_wait().ok().flatten().is_some() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(bouncer);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(HarnessError::Command {
            command: "pgbouncer".into(),
            output: format!(
                "did not start listening on port {port}; see {}",
                bouncer.root.join("pgbouncer.log").display()
            ),
        })
    }

    /// Connection settings for `dbname` through the bouncer.
    #[must_use]
    pub fn config(&self, dbname: &str) -> Config {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname(dbname);
        config
    }

    /// Its version, e.g. `(1, 25, 2)`.
    #[must_use]
    pub fn version(&self) -> (u32, u32, u32) {
        self.version
    }

    /// Whether it keeps named prepared statements across transactions in transaction pooling
    /// (1.21 and later, started with `max_prepared_statements` > 0).
    #[must_use]
    pub fn keeps_prepared_statements(&self) -> bool {
        self.max_prepared_statements > 0
    }

    /// The binary it runs.
    #[must_use]
    pub fn binary(&self) -> &std::path::Path {
        &self.binary
    }

    /// The bouncer's port on 127.0.0.1.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TestPgBouncer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `(major, minor, patch)` from `pgbouncer --version`'s first line, `PgBouncer 1.25.2`.
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let rest = text.lines().next()?.trim().strip_prefix("PgBouncer ")?;
    let mut parts = rest
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    Some((
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_are_read_from_the_first_line() {
        assert_eq!(
            parse_version("PgBouncer 1.25.2\nlibevent 2.1.12"),
            Some((1, 25, 2))
        );
        assert_eq!(parse_version("PgBouncer 1.18.0\n"), Some((1, 18, 0)));
        assert_eq!(parse_version("pgbouncer"), None);
    }
}
