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
/// (`citus_schema_move`), nodes talking to each other over plain TCP on 127.0.0.1 (the test
/// clusters trust local connections and have no TLS), room for Citus' background workers in
/// many test databases, the rebalancer's background tasks picked up at once (not every 5 s).
const NODE_SETTINGS: &[&str] = &[
    "shared_preload_libraries=citus",
    "wal_level=logical",
    "citus.node_conninfo=sslmode=disable",
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
    pub async fn create_database(&self) -> HarnessResult<TestDatabase> {
        let db = self.coordinator.create_database().await?;
        for worker in &self.workers {
            let (client, conn) = worker.config("postgres").connect(NoTls).await?;
            let task = tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE DATABASE \"{}\"", db.name()))
                .await?;
            drop(client);
            let _ = task.await;
            execute(&worker.config(db.name()), "CREATE EXTENSION citus").await?;
        }
        let coordinator = db
            .pool()
            .get()
            .await
            .map_err(|e| HarnessError::Pool(e.to_string()))?;
        coordinator.batch_execute("CREATE EXTENSION citus").await?;
        let port = |c: &TestCluster| i32::from(c.port().unwrap_or(5432));
        coordinator
            .execute(
                "SELECT pg_catalog.citus_set_coordinator_host('127.0.0.1', $1)",
                &[&port(&self.coordinator)],
            )
            .await?;
        for worker in &self.workers {
            coordinator
                .execute(
                    "SELECT pg_catalog.citus_add_node('127.0.0.1', $1)",
                    &[&port(worker)],
                )
                .await?;
        }
        Ok(db)
    }
}

fn node(cluster: &TestCluster) -> CitusNode {
    CitusNode::new("127.0.0.1", cluster.port().unwrap_or(5432))
}

/// Runs `sql` once on a fresh connection made from `config`.
async fn execute(config: &Config, sql: &str) -> HarnessResult<()> {
    let (client, conn) = config.connect(NoTls).await?;
    let task = tokio::spawn(conn);
    let result = client.batch_execute(sql).await;
    drop(client);
    let _ = task.await;
    Ok(result?)
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
