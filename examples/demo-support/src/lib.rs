//! What the tenant-schemas examples share, kept out of the library: a database to run on
//! (`DATABASE_URL`, or a throwaway PostgreSQL), the tenants a demo starts with, and the curl
//! lines it prints.
//!
//! ```no_run
//! use demo_support::{demo_addr, demo_instructions, DemoDatabase};
//! use tenant_schemas::TenantMigrations;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let db = DemoDatabase::from_env().await?; // a throwaway cluster lives as long as `db`
//! let migrations = TenantMigrations::new().with("notes", "CREATE TABLE notes (body text)");
//! let tenancy = db.tenancy(migrations, &["acme", "globex"]).await?;
//! let addr = demo_addr();
//! println!("{}", demo_instructions(addr));
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::str::FromStr;

use tenant_schemas::deadpool_postgres::Pool;
use tenant_schemas::testing::{pool, HarnessError, TestCluster};
use tenant_schemas::tokio_postgres::Config;
use tenant_schemas::{Host, NewTenant, SchemaName, Tenancy, TenantMigrations};

/// The database of a demo or example: `DATABASE_URL` when set, otherwise a throwaway
/// cluster that lives as long as this value.
#[derive(Debug)]
pub struct DemoDatabase {
    config: Config,
    cluster: Option<TestCluster>,
}

impl DemoDatabase {
    /// Reads `DATABASE_URL`, or starts a throwaway PostgreSQL with a fresh database.
    pub async fn from_env() -> Result<Self, HarnessError> {
        match std::env::var("DATABASE_URL") {
            Ok(url) => Ok(Self {
                config: Config::from_str(&url).map_err(|e| HarnessError::BadUrl(e.to_string()))?,
                cluster: None,
            }),
            Err(_) => {
                println!("No DATABASE_URL: starting a throwaway PostgreSQL (removed on exit) ...");
                let cluster = TestCluster::start()?;
                let db = cluster.create_database().await?;
                Ok(Self {
                    config: db.config().clone(),
                    cluster: Some(cluster),
                })
            }
        }
    }

    /// The connection settings.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether this is a throwaway cluster.
    #[must_use]
    pub fn is_throwaway(&self) -> bool {
        self.cluster.is_some()
    }

    /// A new pool of `max_size` connections to the database.
    pub fn pool(&self, max_size: usize) -> Result<Pool, HarnessError> {
        pool(self.config.clone(), max_size)
    }

    /// A [`Tenancy`] over a new pool with `migrations`, [seeded](seed) with the public tenant
    /// on `localhost` and a tenant per name in `tenants` (kept when they exist already).
    pub async fn tenancy(
        &self,
        migrations: TenantMigrations,
        tenants: &[&str],
    ) -> Result<Tenancy, HarnessError> {
        let tenancy = Tenancy::builder(self.pool(16)?)
            .migrations(migrations)
            .build()
            .await?;
        let tenants: Vec<(&str, &str)> = tenants.iter().map(|name| (*name, *name)).collect();
        seed(&tenancy, &tenants).await?;
        Ok(tenancy)
    }
}

/// The minimal examples' one tenant migration: a table of notes.
pub const NOTES: &str = "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)";

impl DemoDatabase {
    /// The minimal examples' [`Tenancy`]: [`NOTES`] as the tenant migration, the public
    /// tenant and the tenants `acme` and `globex`.
    pub async fn notes_tenancy(&self) -> Result<Tenancy, HarnessError> {
        self.tenancy(
            TenantMigrations::new().with("notes", NOTES),
            &["acme", "globex"],
        )
        .await
    }
}

/// The host a demo serves the tenant `slug` on: `<slug>.localhost`, with `_` written `-`
/// (browsers resolve `*.localhost` to 127.0.0.1).
pub fn tenant_host(slug: &str) -> tenant_schemas::Result<Host> {
    Ok(Host::parse(&format!(
        "{}.localhost",
        slug.replace('_', "-")
    ))?)
}

/// Registers the public tenant on `localhost` and each `(slug, display name)` of `tenants`
/// not registered yet, in schema `slug` on its [`tenant_host`].
pub async fn seed(tenancy: &Tenancy, tenants: &[(&str, &str)]) -> tenant_schemas::Result<()> {
    tenancy
        .ensure_public_tenant(&Host::parse("localhost")?)
        .await?;
    for (slug, name) in tenants {
        let schema = SchemaName::new(slug)?;
        if tenancy.registry().get(&schema).await.is_ok() {
            continue;
        }
        tenancy
            .create_tenant(
                NewTenant::new(schema)
                    .name(*name)
                    .domain(tenant_host(slug)?),
            )
            .await?;
    }
    Ok(())
}

/// Where a demo listens: 127.0.0.1 and `$PORT`, or port 3000.
#[must_use]
pub fn demo_addr() -> SocketAddr {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The lines a demo prints to show how to reach its tenants with curl.
#[must_use]
pub fn demo_instructions(addr: SocketAddr) -> String {
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
