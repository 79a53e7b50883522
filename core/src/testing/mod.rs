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
//!
//! The files of this folder: `cluster.rs` ([`TestCluster`]), `citus.rs`
//! ([`TestCitusCluster`]), `pgbouncer.rs`
//! ([`TestPgBouncer`]), `database.rs` ([`TestDatabase`]), `tenant.rs` ([`TempTenant`]),
//! `client.rs` ([`TenantClient`]) and `fixtures.rs` (the set-up most tests share).

mod citus;
mod client;
mod cluster;
mod database;
pub mod fixtures;
mod pgbouncer;
mod tenant;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Config, NoTls};

pub use citus::{TestCitusCluster, SKIP_CITUS_ENV};
pub use client::{TenantClient, TestResponse};
pub use cluster::TestCluster;
pub use database::TestDatabase;
pub use pgbouncer::{TestPgBouncer, TestPgBouncerBuilder, PGBOUNCER_ENV, PGBOUNCER_PATHS};
pub use tenant::TempTenant;

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
    /// The test certificates of a TLS cluster could not be made.
    #[error("making the test certificates: {0}")]
    Certificate(String),
    /// What was asked needs a throwaway cluster of the system's PostgreSQL.
    #[error("a TLS or Citus test cluster needs the system's PostgreSQL binaries, but {DATABASE_URL_ENV} names an external server: unset it")]
    ExternalServer,
    /// A Citus test cluster was asked for, but the Citus extension is not installed for the
    /// system's PostgreSQL.
    #[error("Citus is not installed for the PostgreSQL in {bin}: run ../shared/citus/install.sh (builds Citus 13.2.2 into PostgreSQL 15), or set {}=1 to skip the Citus tests", citus::SKIP_CITUS_ENV)]
    CitusMissing {
        /// The PostgreSQL binaries' directory.
        bin: String,
    },
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
