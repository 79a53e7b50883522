//! What the tenant-schemas examples share, kept out of the library: a database to run on
//! (`DATABASE_URL`, connected the production way with
//! [`Tenancy::builder_from_settings`], TLS included; or a throwaway PostgreSQL, whose server
//! binaries are installed with apt first when they are missing and this runs as root on
//! Debian), the tenants a demo starts with, and the curl lines it prints.
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

mod install;

use std::fmt;
use std::net::SocketAddr;

use tenant_schemas::deadpool_postgres::Pool;
use tenant_schemas::testing::{HarnessError, TestCluster};
use tenant_schemas::tokio_postgres::Config;
use tenant_schemas::{
    ConnectionSettings, Host, NewTenant, SchemaName, Tenancy, TenancyBuilder, TenantMigrations,
};

/// Why a demo could not get its database: the message says what to do. Its `Debug` is its
/// `Display`, so `main` returning it prints the message as it is.
pub struct DemoError(Box<dyn std::error::Error + Send + Sync>);

impl DemoError {
    fn msg(message: String) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for DemoError {}

impl From<HarnessError> for DemoError {
    fn from(err: HarnessError) -> Self {
        Self(err.into())
    }
}

impl From<tenant_schemas::Error> for DemoError {
    fn from(err: tenant_schemas::Error) -> Self {
        Self(err.into())
    }
}

/// The database of a demo or example: `DATABASE_URL` when set, otherwise a throwaway
/// cluster that lives as long as this value.
#[derive(Debug)]
pub struct DemoDatabase {
    settings: ConnectionSettings,
    cluster: Option<TestCluster>,
}

impl DemoDatabase {
    /// Reads `DATABASE_URL` (a URL or libpq `key=value` string; `sslmode` and `sslrootcert`
    /// as libpq reads them), or starts a throwaway PostgreSQL with a fresh database. On a
    /// machine without PostgreSQL's server binaries it installs the `postgresql` package
    /// with apt first when running as root, and otherwise fails with the command to run.
    pub async fn from_env() -> Result<Self, DemoError> {
        if std::env::var_os(tenant_schemas::DATABASE_URL).is_some() {
            return Ok(Self {
                settings: ConnectionSettings::from_env()?,
                cluster: None,
            });
        }
        println!("No DATABASE_URL: starting a throwaway PostgreSQL (removed on exit) ...");
        let cluster = match TestCluster::start() {
            Err(HarnessError::NoPostgres) => {
                install::install_postgresql()?;
                TestCluster::start()?
            }
            other => other?,
        };
        let db = cluster.create_database().await?;
        Ok(Self {
            settings: ConnectionSettings::from(db.config().clone()),
            cluster: Some(cluster),
        })
    }

    /// The connection settings.
    #[must_use]
    pub fn settings(&self) -> &ConnectionSettings {
        &self.settings
    }

    /// The driver's connection settings.
    #[must_use]
    pub fn config(&self) -> &Config {
        self.settings.config()
    }

    /// Whether this is a throwaway cluster.
    #[must_use]
    pub fn is_throwaway(&self) -> bool {
        self.cluster.is_some()
    }

    /// A new pool of `max_size` connections to the database (TLS as the settings say).
    pub fn pool(&self, max_size: usize) -> Result<Pool, DemoError> {
        Ok(self.settings.clone().pool_size(max_size).pool()?)
    }

    /// The set-up of a [`Tenancy`] the production way
    /// ([`Tenancy::builder_from_settings`]): a pool of 16 connections and the change
    /// listener, both over TLS as the settings say.
    pub fn builder(&self) -> Result<TenancyBuilder, DemoError> {
        Ok(Tenancy::builder_from_settings(
            self.settings.clone().pool_size(16),
        )?)
    }

    /// A [`Tenancy`] from [`builder`](Self::builder) with `migrations`, [seeded](seed) with
    /// the public tenant on `localhost` and a tenant per name in `tenants` (kept when they
    /// exist already).
    pub async fn tenancy(
        &self,
        migrations: TenantMigrations,
        tenants: &[&str],
    ) -> Result<Tenancy, DemoError> {
        let tenancy = self.builder()?.migrations(migrations).build().await?;
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
    pub async fn notes_tenancy(&self) -> Result<Tenancy, DemoError> {
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
