//! A Citus cluster for tests: a coordinator and two workers, each a throwaway cluster of the
//! system's PostgreSQL with the Citus extension loaded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tokio_postgres::{Config, NoTls};

use super::cluster::find_bin_dir;
use super::database::TestDatabase;
use super::{HarnessError, HarnessResult, TestCluster, DATABASE_URL_ENV};
use crate::citus::CitusNode;

/// The environment variable that skips the Citus tests (`TENANT_SCHEMAS_SKIP_CITUS=1`) on a
/// machine without Citus. Without it, a Citus test fails there with
/// [`HarnessError::CitusMissing`], which says how to install Citus.
pub const SKIP_CITUS_ENV: &str = "TENANT_SCHEMAS_SKIP_CITUS";

/// The server settings of every node: Citus loaded, logical replication for online moves
/// (`citus_schema_move`), room for Citus' background workers in many test databases, the
/// rebalancer's background tasks picked up at once (not every 5 s). Nodes talk to each
/// other over TCP on 127.0.0.1 as Citus sets itself up by default (`citus.node_conninfo`
/// `sslmode=require`): `CREATE EXTENSION citus` turns SSL on with a self-signed X.509
/// version 1 certificate, which is what an application connecting with a URL without
/// `sslmode` meets.
const NODE_SETTINGS: &[&str] = &[
    "shared_preload_libraries=citus",
    "wal_level=logical",
    "max_worker_processes=64",
    "max_logical_replication_workers=16",
    "max_replication_slots=32",
    "max_wal_senders=32",
    "citus.background_task_queue_interval=100ms",
];

/// A Citus cluster for tests: a coordinator and two workers, throwaway clusters of the
/// system's PostgreSQL started with `shared_preload_libraries = 'citus'` and
/// `wal_level = logical`, stopped and removed on drop.
///
/// [`create_database`](Self::create_database) makes a database on all three with the
/// `citus` extension and the workers added to the coordinator's metadata; connect to it
/// through the coordinator.
///
/// ```no_run
/// use tenant_schemas::testing::TestCitusCluster;
/// use tenant_schemas::Tenancy;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// if TestCitusCluster::skip_requested() {
///     return Ok(()); // TENANT_SCHEMAS_SKIP_CITUS=1 on a machine without Citus
/// }
/// let cluster = TestCitusCluster::shared()?; // fails saying how to install Citus
/// let db = cluster.create_database().await?;
/// let tenancy = Tenancy::builder(db.pool().clone()).build().await?; // detects Citus
/// assert!(tenancy.registry().is_citus().await?);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TestCitusCluster {
    coordinator: TestCluster,
    workers: Vec<TestCluster>,
}

impl TestCitusCluster {
    /// Whether the user asked to skip the Citus tests ([`SKIP_CITUS_ENV`] set to anything
    /// but empty or `0`).
    #[must_use]
    pub fn skip_requested() -> bool {
        std::env::var(SKIP_CITUS_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
    }

    /// Whether the Citus extension is installed for the system's PostgreSQL.
    #[must_use]
    pub fn is_installed() -> bool {
        find_bin_dir().is_some_and(|bin| citus_library(&bin).is_file())
    }

    /// One Citus cluster for the whole test process, started on first use; a watchdog
    /// stops and removes it once the process exits.
    pub fn shared() -> HarnessResult<&'static Self> {
        static SHARED: OnceLock<std::result::Result<TestCitusCluster, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| HarnessError::Command {
                command: "starting the shared Citus test cluster".into(),
                output: e.clone(),
            })
    }

    /// Starts a coordinator and two workers (in parallel; a few seconds). Fails with
    /// [`HarnessError::CitusMissing`] when Citus is not installed, and with
    /// [`HarnessError::ExternalServer`] when `TENANT_SCHEMAS_TEST_DATABASE_URL` is set.
    pub fn start() -> HarnessResult<Self> {
        if std::env::var_os(DATABASE_URL_ENV).is_some() {
            return Err(HarnessError::ExternalServer);
        }
        let bin = find_bin_dir().ok_or(HarnessError::NoPostgres)?;
        if !citus_library(&bin).is_file() {
            return Err(HarnessError::CitusMissing {
                bin: bin.display().to_string(),
            });
        }
        let mut nodes = std::thread::scope(|s| {
            let started: Vec<_> = (0..3)
                .map(|_| s.spawn(|| TestCluster::start_with_settings(NODE_SETTINGS)))
                .collect();
            started
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(HarnessError::Command {
                            command: "starting a Citus node".into(),
                            output: "the starting thread panicked".into(),
                        })
                    })
                })
                .collect::<HarnessResult<Vec<_>>>()
        })?;
        let coordinator = nodes.remove(0);
        Ok(Self {
            coordinator,
            workers: nodes,
        })
    }

    /// The coordinator: connect to it for everything.
    #[must_use]
    pub fn coordinator(&self) -> &TestCluster {
        &self.coordinator
    }

    /// The two workers, e.g. to stop one.
    #[must_use]
    pub fn workers(&self) -> &[TestCluster] {
        &self.workers
    }

    /// The workers as the coordinator's metadata names them (`127.0.0.1` and their port),
    /// for [`Tenancy::move_tenant`](crate::Tenancy::move_tenant).
    #[must_use]
    pub fn worker_nodes(&self) -> Vec<CitusNode> {
        self.workers.iter().map(node).collect()
    }

    /// Connection settings for database `dbname` on the coordinator.
    #[must_use]
    pub fn coordinator_config(&self, dbname: &str) -> Config {
        self.coordinator.config(dbname)
    }

    /// A new database with a unique name on all three nodes, the `citus` extension created
    /// in each, and the coordinator's metadata naming itself and both workers; the returned
    /// database (and its pool) is the coordinator's.
    ///
    /// One at a time in a process, and a failed addition of a worker tried again (three
    /// attempts): in a full `cargo test` run, where a test binary's tests share this cluster,
    /// `citus_add_node` failed once with "failure on connection marked as essential", which
    /// hides the worker's own error. Two databases adding the same workers at once both sync
    /// metadata to them, cluster-wide objects included; that race is the likely cause.
    pub async fn create_database(&self) -> HarnessResult<TestDatabase> {
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one_at_a_time = ONE_AT_A_TIME.lock().await;
        let db = self.coordinator.create_database().await?;
        for worker in &self.workers {
            let (client, conn) = worker.config("postgres").connect(NoTls).await?;
            let task = tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE DATABASE \"{}\"", db.name()))
                .await?;
            drop(client);
            let _ = task.await;
            create_extension(&worker.config(db.name())).await?;
        }
        create_extension(&self.coordinator.config(db.name())).await?;
        let coordinator = db
            .pool()
            .get()
            .await
            .map_err(|e| HarnessError::Pool(e.to_string()))?;
        let port = |c: &TestCluster| i32::from(c.port().unwrap_or(5432));
        coordinator
            .execute(
                "SELECT pg_catalog.citus_set_coordinator_host('127.0.0.1', $1)",
                &[&port(&self.coordinator)],
            )
            .await?;
        for worker in &self.workers {
            let mut attempt = 1;
            while let Err(e) = coordinator
                .execute(
                    "SELECT pg_catalog.citus_add_node('127.0.0.1', $1)",
                    &[&port(worker)],
                )
                .await
            {
                if attempt == 3 {
                    return Err(e.into());
                }
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
        Ok(db)
    }
}

fn node(cluster: &TestCluster) -> CitusNode {
    CitusNode::new("127.0.0.1", cluster.port().unwrap_or(5432))
}

/// `CREATE EXTENSION citus` in the database of `config`. The first time on a node, Citus
/// turns SSL on (`ALTER SYSTEM SET ssl TO on`, a certificate, a reload signal to the
/// postmaster): the reload is asynchronous, so this waits until a new connection sees it,
/// since the other nodes connect with `sslmode=require` right after.
async fn create_extension(config: &Config) -> HarnessResult<()> {
    let ssl = query_once(
        config,
        "CREATE EXTENSION citus; SELECT pg_catalog.current_setting('ssl')",
    )
    .await?;
    if ssl.as_deref() != Some("on") {
        return Ok(());
    }
    // Bounded: a reload takes milliseconds; a minute means the server is stuck.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let seen = query_once(config, "SELECT pg_catalog.current_setting('ssl')").await?;
        if seen.as_deref() == Some("on") {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(HarnessError::Command {
                command: "waiting for the server to reload with the SSL Citus turned on".into(),
                output: format!("new connections still see ssl = {seen:?} after a minute"),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runs `sql` once on a fresh connection made from `config`; the first column of the last
/// row it returned, if any.
async fn query_once(config: &Config, sql: &str) -> HarnessResult<Option<String>> {
    let (client, conn) = config.connect(NoTls).await?;
    let task = tokio::spawn(conn);
    let result = client.simple_query(sql).await;
    drop(client);
    let _ = task.await;
    Ok(result?.iter().rev().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    }))
}

/// Where `citus.so` is for the PostgreSQL in `bin`: `pg_config --pkglibdir` when the
/// development files are installed, the Debian layout (`bin/../lib`) otherwise.
fn citus_library(bin: &Path) -> PathBuf {
    let pkglibdir = Command::new(bin.join("pg_config"))
        .arg("--pkglibdir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    pkglibdir
        .unwrap_or_else(|| bin.parent().unwrap_or(bin).join("lib"))
        .join("citus.so")
}
