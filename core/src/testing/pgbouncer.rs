//! A real `pgbouncer` in front of a test cluster, in transaction (or session) pooling mode.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use tokio_postgres::Config;

use super::cluster::{free_port, is_root, run, TestCluster};
use super::{io, unique, HarnessError, HarnessResult};

/// A real `pgbouncer` in transaction pooling mode in front of a [`TestCluster`], for testing
/// [`SearchPathMode::Transaction`](crate::SearchPathMode::Transaction). Stopped on drop.
#[derive(Debug)]
pub struct TestPgBouncer {
    root: PathBuf,
    port: u16,
    process: std::process::Child,
}

impl TestPgBouncer {
    /// Starts `pgbouncer` (from `$PATH` or `/usr/sbin`) on a free port of 127.0.0.1, with
    /// `pool_size` server connections per database, in transaction pooling mode.
    pub fn start(cluster: &TestCluster, pool_size: usize) -> HarnessResult<Self> {
        Self::start_in_mode(cluster, pool_size, "transaction")
    }

    /// [`start`](Self::start) in session pooling mode (a server connection per client
    /// connection for as long as it lasts), e.g. for a baseline to compare with.
    pub fn start_session_pooling(cluster: &TestCluster, pool_size: usize) -> HarnessResult<Self> {
        Self::start_in_mode(cluster, pool_size, "session")
    }

    fn start_in_mode(cluster: &TestCluster, pool_size: usize, mode: &str) -> HarnessResult<Self> {
        let bin = [
            "/usr/sbin/pgbouncer",
            "/usr/bin/pgbouncer",
            "/usr/local/bin/pgbouncer",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| HarnessError::Command {
            command: "pgbouncer".into(),
            output: "not found; install it, e.g. `apt-get install pgbouncer`".into(),
        })?;
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
             ignore_startup_parameters = extra_float_digits,options\n",
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
