//! Test helpers: a throwaway PostgreSQL, a fresh database per test, temporary tenants.
//!
//! Enabled by the `testing` feature. [`TestCluster`] runs `initdb` and `pg_ctl` from the
//! system's PostgreSQL (`pg_config --bindir`, `/usr/lib/postgresql/*/bin`, or `$PG_BIN`) on
//! a private port and socket directory; as root it runs them as the `postgres` user. Set
//! `TENANT_SCHEMAS_TEST_DATABASE_URL` to a superuser URL to use an existing server instead.
//!
//! ```no_run
//! use tenant_schemas::testing::TestCluster;
//! use tenant_schemas::{Tenancy, TenantMigrations};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let db = TestCluster::shared()?.create_database().await?; // a fresh, empty database
//! let tenancy = Tenancy::builder(db.pool().clone())
//!     .migrations(TenantMigrations::new().with("notes", "CREATE TABLE notes (body text)"))
//!     .build()
//!     .await?;
//! let acme = tenant_schemas::testing::TempTenant::create(&tenancy).await?;
//! let db = acme.connection().await?;
//! db.execute("INSERT INTO notes VALUES ('hello')", &[]).await?;
//! # Ok(()) }
//! ```

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Config, NoTls};

use crate::host::Host;
use crate::migrate::TenantMigrations;
use crate::registry::{DropSchema, NewTenant};
use crate::router::ConnectionScope;
use crate::schema::SchemaName;
use crate::tenancy::Tenancy;
use crate::tenant::{Tenant, TenantRecord};

/// The environment variable naming an existing server to test against.
pub const DATABASE_URL_ENV: &str = "TENANT_SCHEMAS_TEST_DATABASE_URL";

/// What went wrong setting up a test database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// No PostgreSQL server binaries were found.
    #[error("no PostgreSQL server binaries found (looked at $PG_BIN, `pg_config --bindir` and /usr/lib/postgresql/*/bin); install them, e.g. `apt-get install postgresql`, or set {DATABASE_URL_ENV}")]
    NoPostgres,
    /// A command of the set-up failed.
    #[error("`{command}` failed: {output}")]
    Command {
        /// The command.
        command: String,
        /// Its exit status and error output.
        output: String,
    },
    /// A file-system step failed.
    #[error("{action}: {source}")]
    Io {
        /// The step.
        action: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server refused a statement or a connection.
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// A pool could not be built.
    #[error("pool: {0}")]
    Pool(String),
    /// The library itself failed (creating a tenant, …).
    #[error(transparent)]
    Tenancy(#[from] crate::Error),
    /// `TENANT_SCHEMAS_TEST_DATABASE_URL` is not a valid connection string.
    #[error("{DATABASE_URL_ENV} is not a valid connection string: {0}")]
    BadUrl(String),
}

type HarnessResult<T> = std::result::Result<T, HarnessError>;

fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let action = action.into();
    move |source| HarnessError::Io { action, source }
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A name no other test of this machine uses at the same time.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}{}_{}_{nanos:x}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

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
}

impl TestCluster {
    /// One cluster for the whole test process, started on first use.
    ///
    /// It is never dropped; a watchdog process stops and removes it once this process exits.
    pub fn shared() -> HarnessResult<&'static TestCluster> {
        static SHARED: OnceLock<std::result::Result<TestCluster, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| TestCluster::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| HarnessError::Command {
                command: "starting the shared test cluster".into(),
                output: e.clone(),
            })
    }

    /// Starts a new throwaway cluster (or connects to the external server). This blocks for
    /// the second or two `initdb` and `pg_ctl start` take.
    pub fn start() -> HarnessResult<TestCluster> {
        Self::start_with_settings(&[])
    }

    /// Like [`start`](Self::start), with extra server settings such as `log_statement=all`
    /// (ignored for an external server).
    pub fn start_with_settings(settings: &[&str]) -> HarnessResult<TestCluster> {
        if let Ok(url) = std::env::var(DATABASE_URL_ENV) {
            let admin = Config::from_str(&url).map_err(|e| HarnessError::BadUrl(e.to_string()))?;
            return Ok(TestCluster { admin, local: None });
        }
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
        local.port = free_port()?;
        local.watchdog = Some(local.spawn_watchdog()?);
        local.start_server()?;
        let mut admin = Config::new();
        admin
            .host_path(&local.root)
            .port(local.port)
            .user("postgres")
            .dbname("postgres");
        Ok(TestCluster {
            admin,
            local: Some(local),
        })
    }

    /// Connection settings for database `dbname` on this server.
    pub fn config(&self, dbname: &str) -> Config {
        let mut config = self.admin.clone();
        config.dbname(dbname);
        config
    }

    /// A `postgres://` URL for `dbname` over TCP on 127.0.0.1 (for tools like `psql`).
    /// `None` for an external server (use its own URL).
    pub fn url(&self, dbname: &str) -> Option<String> {
        self.local
            .as_ref()
            .map(|l| format!("postgres://postgres@127.0.0.1:{}/{dbname}", l.port))
    }

    /// The TCP port of a throwaway cluster.
    pub fn port(&self) -> Option<u16> {
        self.local.as_ref().map(|l| l.port)
    }

    /// The server log of a throwaway cluster.
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
        Ok(TestDatabase { name, config, pool })
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

impl LocalCluster {
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

fn run(cmd: &mut Command) -> HarnessResult<()> {
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

fn is_root() -> bool {
    // /proc/self belongs to the effective user of this process.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn free_port() -> HarnessResult<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("finding a free port"))?
        .port())
}

fn find_bin_dir() -> Option<PathBuf> {
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

/// A deadpool pool over `config` with `max_size` connections, recycled the fast way.
pub fn pool(config: Config, max_size: usize) -> HarnessResult<Pool> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(std::time::Duration::from_secs(10)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| HarnessError::Pool(e.to_string()))
}

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
    /// `pool_size` server connections per database.
    pub fn start(cluster: &TestCluster, pool_size: usize) -> HarnessResult<TestPgBouncer> {
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
        let (server_host, server_port) = match &cluster.local {
            Some(local) => (local.root.display().to_string(), local.port),
            None => {
                let host = match cluster.admin.get_hosts().first() {
                    Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                    Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
                    None => "127.0.0.1".into(),
                };
                (
                    host,
                    cluster.admin.get_ports().first().copied().unwrap_or(5432),
                )
            }
        };
        let user = cluster.admin.get_user().unwrap_or("postgres").to_owned();
        let as_postgres = is_root();
        let root = std::env::temp_dir().join(unique("tenant-schemas-pgbouncer-"));
        std::fs::create_dir(&root).map_err(io(format!("creating {}", root.display())))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(io("setting permissions"))?;
        let port = free_port()?;
        let ini = format!(
            "[databases]\n* = host={server_host} port={server_port} user={user}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = any\npool_mode = transaction\ndefault_pool_size = {pool_size}\n\
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
        let bouncer = TestPgBouncer {
            root,
            port,
            process,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(bouncer);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(HarnessError::Command {
            command: "pgbouncer".into(),
            output: format!(
                "did not listen on port {port}; see {}",
                bouncer.root.join("pgbouncer.log").display()
            ),
        })
    }

    /// Connection settings for `dbname` through the bouncer.
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

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    config: Config,
    pool: Pool,
}

impl TestDatabase {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its connection settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A pool of 16 connections to it.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A new pool of `max_size` connections to it, e.g. to test a small pool.
    pub fn new_pool(&self, max_size: usize) -> HarnessResult<Pool> {
        pool(self.config.clone(), max_size)
    }
}

/// A tenant with a unique schema and the domain `<schema>.test`, made for one test.
#[derive(Debug)]
pub struct TempTenant {
    tenancy: Tenancy,
    record: TenantRecord,
    host: Host,
}

impl TempTenant {
    /// Creates the tenant (with the tenancy's migrations).
    pub async fn create(tenancy: &Tenancy) -> HarnessResult<TempTenant> {
        let schema = SchemaName::new(&unique("t_")).map_err(crate::Error::from)?;
        let host = Host::parse(&format!("{}.test", schema.as_str().replace('_', "-")))
            .map_err(crate::Error::from)?;
        let record = tenancy
            .create_tenant(NewTenant::new(schema).domain(host.clone()))
            .await?;
        Ok(TempTenant {
            tenancy: tenancy.clone(),
            record,
            host,
        })
    }

    /// The tenant, to enter its scope.
    pub fn tenant(&self) -> Tenant {
        self.record.tenant()
    }

    /// Its schema.
    pub fn schema(&self) -> &SchemaName {
        &self.record.schema
    }

    /// Its domain, to send requests to.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// A connection bound to its schema.
    pub async fn connection(&self) -> crate::Result<ConnectionScope> {
        self.tenancy
            .router()
            .connection_for_tenant(&self.record.tenant())
            .await
    }

    /// Deletes the tenant and drops its schema.
    pub async fn delete(self) -> crate::Result<()> {
        self.tenancy
            .delete_tenant(&self.record.schema, DropSchema::Yes)
            .await
            .map(drop)
    }
}

/// An HTTP/1.1 client whose requests go to one tenant's host, for testing an application
/// over real HTTP on 127.0.0.1 (whichever framework serves it).
///
/// Each request opens a connection, sends `Host: <host>` and `Connection: close`, and
/// reads the whole response. [`TenantClient::raw`] sends bytes as they are, for malformed
/// requests no ordinary client would send.
#[derive(Debug, Clone)]
pub struct TenantClient {
    addr: std::net::SocketAddr,
    host: String,
}

/// A response read by [`TenantClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl TestResponse {
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl TenantClient {
    /// A client for the server at `addr`, sending `Host: <host>`.
    pub fn new(addr: std::net::SocketAddr, host: impl Into<String>) -> Self {
        TenantClient {
            addr,
            host: host.into(),
        }
    }

    /// A client for `tenant`'s host.
    pub fn for_tenant(addr: std::net::SocketAddr, tenant: &TempTenant) -> Self {
        Self::new(addr, tenant.host().as_str())
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> std::io::Result<TestResponse> {
        self.send("GET", path, &[], b"").await
    }

    /// `POST path` with a body of `content_type`.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> std::io::Result<TestResponse> {
        self.send("POST", path, &[("content-type", content_type)], body)
            .await
    }

    /// Any request, with extra headers.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<TestResponse> {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        for (name, value) in headers {
            request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        Self::raw(self.addr, &request).await
    }

    /// Sends `request` exactly as given and reads the response.
    pub async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> std::io::Result<TestResponse> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(request).await?;
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).await?;
            Ok::<_, std::io::Error>(bytes)
        };
        let bytes = tokio::time::timeout(std::time::Duration::from_secs(30), exchange)
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in 30 s")
            })??;
        parse_response(&bytes)
    }
}

fn parse_response(bytes: &[u8]) -> std::io::Result<TestResponse> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers in the response"))?;
    let head =
        std::str::from_utf8(&bytes[..split]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw_body = &bytes[split + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body).ok_or_else(|| bad("malformed chunked body"))?
    } else {
        raw_body.to_vec()
    };
    Ok(TestResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// The database of a demo or example: `DATABASE_URL` when set, otherwise a throwaway
/// cluster that lives as long as this value.
#[derive(Debug)]
pub struct DemoDatabase {
    config: Config,
    cluster: Option<TestCluster>,
}

impl DemoDatabase {
    /// Reads `DATABASE_URL`, or starts a throwaway PostgreSQL with a fresh database.
    pub async fn from_env() -> HarnessResult<Self> {
        match std::env::var("DATABASE_URL") {
            Ok(url) => Ok(DemoDatabase {
                config: Config::from_str(&url).map_err(|e| HarnessError::BadUrl(e.to_string()))?,
                cluster: None,
            }),
            Err(_) => {
                println!("No DATABASE_URL: starting a throwaway PostgreSQL (removed on exit) ...");
                let cluster = TestCluster::start()?;
                let db = cluster.create_database().await?;
                Ok(DemoDatabase {
                    config: db.config().clone(),
                    cluster: Some(cluster),
                })
            }
        }
    }

    /// The connection settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether this is a throwaway cluster.
    pub fn is_throwaway(&self) -> bool {
        self.cluster.is_some()
    }

    /// A [`Tenancy`] over a new pool with `migrations`, the public tenant on `localhost`, and
    /// a tenant per name in `tenants` on `<name>.localhost` (kept when they exist already).
    pub async fn tenancy(
        &self,
        migrations: TenantMigrations,
        tenants: &[&str],
    ) -> HarnessResult<Tenancy> {
        let tenancy = Tenancy::builder(pool(self.config.clone(), 16)?)
            .migrations(migrations)
            .build()
            .await?;
        tenancy
            .ensure_public_tenant(&Host::parse("localhost").map_err(crate::Error::from)?)
            .await?;
        for name in tenants {
            let schema = SchemaName::new(name).map_err(crate::Error::from)?;
            if tenancy.registry().get(&schema).await.is_ok() {
                continue;
            }
            let host = Host::parse(&format!("{}.localhost", name.replace('_', "-")))
                .map_err(crate::Error::from)?;
            tenancy
                .create_tenant(NewTenant::new(schema).domain(host))
                .await?;
        }
        Ok(tenancy)
    }
}

/// Where a demo listens: 127.0.0.1 and `$PORT`, or port 3000.
pub fn demo_addr() -> std::net::SocketAddr {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// The lines a demo prints to show how to reach its tenants with curl.
pub fn demo_instructions(addr: std::net::SocketAddr) -> String {
    format!(
        "Serving on http://{addr} — try:\n\
         \n  curl -H 'Host: acme.localhost' http://{addr}/\
         \n  curl -H 'Host: acme.localhost' -d 'a note' http://{addr}/notes\
         \n  curl -H 'Host: acme.localhost' http://{addr}/\
         \n  curl -H 'Host: globex.localhost' http://{addr}/     # globex has its own notes\
         \n  curl -i -H 'Host: nobody.localhost' http://{addr}/  # 404\
         \n\nCtrl-C stops it.\n"
    )
}
