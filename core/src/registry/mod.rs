//! The tenant registry: tenants and their domains, in tables in `public` of the default
//! database.
//!
//! `public.tenant_schemas_tenants` holds one row per tenant (id, schema name, display
//! name, creation time, status, migration version, database); `public.tenant_schemas_domains`
//! maps each domain to its tenant, with at most one primary domain per tenant.
//!
//! [`Registry`] reads them. Every change goes through [`Tenancy`](crate::Tenancy), the one
//! door for writes, which keeps this process's caches coherent; each change is announced to
//! the other processes in its own transaction. The files of this folder:
//!
//! - `install.rs`: the tables (idempotent, safe to run from several processes at once);
//! - `lifecycle.rs`: creating (from scratch or as a clone), renaming, suspending and
//!   deleting tenants;
//! - `clone.rs`: copying a tenant's rows into its clone;
//! - `domains.rs`: a tenant's domains;
//! - `import.rs`: registering schemas that exist already, and baselines;
//! - `notify.rs`: the announcement of a change, written and read in one place;
//! - `doctor.rs`: the registry checked against the schemas and their histories;
//! - `citus.rs`: Citus as a deployment mode (detection, distributed schemas, placements).
//!
//! The rule: a tenant operation's SQL lives here, in `registry/<op>.rs`; its public method
//! in `tenancy/<op>.rs`; its value types in a leaf module. Nothing here imports the
//! tenancy, the router or the request side.

mod citus;
mod clone;
pub(crate) mod dependents;
mod doctor;
mod domains;
mod erase;
mod export;
mod import;
mod install;
mod lifecycle;
pub(crate) mod notify;
mod roles;
mod shard_move;
mod shared_names;
mod usage;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::Type;
use tokio_postgres::Row;

use crate::databases::{self, Databases};
use crate::error::{Error, Result};
use crate::migrate::{MigrationSets, TenantMigrations};
use crate::schema::SchemaName;
use crate::shard::ShardName;
use crate::tenant::{Tenant, TenantId, TenantRecord, TenantStatus};

pub(crate) use citus::CitusMode;
pub use doctor::{DoctorReport, Finding};
pub(crate) use export::read_header as read_export_header;
pub use import::ImportSource;
pub use lifecycle::{DropSchema, NewTenant};
pub use notify::CHANNEL;
pub(crate) use roles::drop_role;

const SELECT_TENANTS: &str = "
SELECT t.id, t.schema_name, t.name, t.created_at, t.status, t.version, t.shard,
       t.max_connections, t.storage_quota, t.statement_timeout_ms, t.role,
       coalesce(pg_catalog.array_agg(d.domain ORDER BY d.is_primary DESC, d.domain)
                FILTER (WHERE d.domain IS NOT NULL), '{}') AS domains
FROM public.tenant_schemas_tenants t
LEFT JOIN public.tenant_schemas_domains d ON d.tenant_id = t.id";

/// [`Registry::tenant_in`]: the columns of [`SELECT_TENANTS`] from the tenant table alone
/// (no domains: a [`Tenant`] has none).
const TENANT_IN: &str = "
SELECT t.id, t.schema_name, t.name, t.created_at, t.status, t.version, t.shard,
       t.max_connections, t.storage_quota, t.statement_timeout_ms, t.role,
       '{}'::text[] AS domains
FROM public.tenant_schemas_tenants t WHERE t.schema_name = $1";

/// Reads the tenants and their domains: [`get`](Self::get), [`list`](Self::list),
/// [`doctor`](Self::doctor), [`is_installed`](Self::is_installed).
///
/// Get it from [`Tenancy::registry`](crate::Tenancy::registry). Every change goes through
/// the [`Tenancy`](crate::Tenancy), which keeps the caches of this process coherent with it;
/// each change runs in one transaction and is announced on [`CHANNEL`] to the others. Its
/// statements are unnamed (sent with their parameter types), so it works through PgBouncer
/// in transaction pooling mode.
#[derive(Debug, Clone)]
pub struct Registry {
    /// The default database holds the registry.
    databases: Databases,
    sets: MigrationSets,
    /// Whether the default database is a Citus coordinator (tenants as distributed schemas).
    pub(crate) citus: citus::CitusMode,
    /// Role mode's settings ([`TenancyBuilder::tenant_roles`](crate::TenancyBuilder::tenant_roles)).
    pub(crate) roles: Option<std::sync::Arc<crate::roles::TenantRoles>>,
}

impl Registry {
    /// A registry on the default database of `databases`, placing tenants on all of them,
    /// with the migration sets `sets`.
    pub(crate) fn over(databases: Databases, sets: MigrationSets) -> Self {
        Self {
            databases,
            sets,
            citus: citus::CitusMode::default(),
            roles: None,
        }
    }

    /// The migrations every new tenant gets.
    #[must_use]
    pub fn migrations(&self) -> &TenantMigrations {
        &self.sets.tenant
    }

    /// The shared migrations, run in `public` by [`Tenancy::migrate`](crate::Tenancy::migrate).
    #[must_use]
    pub fn shared_migrations(&self) -> &TenantMigrations {
        &self.sets.shared
    }

    /// The databases tenants live on, the registry's first.
    pub(crate) fn databases(&self) -> &Databases {
        &self.databases
    }

    /// Both migration sets.
    pub(crate) fn sets(&self) -> &MigrationSets {
        &self.sets
    }

    /// A connection to the registry's database.
    pub(crate) async fn conn(&self) -> Result<Object> {
        databases::connect(self.databases.default(), &SchemaName::public()).await
    }

    /// The pool of a database (shard) by name.
    pub fn shard_pool(&self, shard: &ShardName) -> Result<&Pool> {
        self.databases.get(shard)
    }

    /// The tenant in `schema`.
    pub async fn get(&self, schema: &SchemaName) -> Result<TenantRecord> {
        get_with(&self.conn().await?, schema).await
    }

    /// The tenant living in `schema` as a checkout reads it (its state, shard, role, limits:
    /// [`TenantRecord::tenant`]), `None` when the registry has none: one row of the tenant
    /// table, without the join and aggregate of its domains, which [`get`](Self::get) plans
    /// every time (an unnamed statement) — the state cache reads it for each tenant in use
    /// once per its TTL.
    pub(crate) async fn tenant_in(&self, schema: &SchemaName) -> Result<Option<Tenant>> {
        let conn = self.conn().await?;
        let row = conn
            .query_typed_opt(TENANT_IN, &[(&schema.as_str(), Type::TEXT)])
            .await
            .map_err(|e| Error::db("reading the registry", schema, e))?;
        row.map(|row| record(&row).map(|record| record.tenant()))
            .transpose()
    }

    /// Every tenant, the public one included, ordered by schema name.
    pub async fn list(&self) -> Result<Vec<TenantRecord>> {
        let conn = self.conn().await?;
        let sql = format!("{SELECT_TENANTS} GROUP BY t.id ORDER BY t.schema_name");
        let rows = conn
            .query_typed(&sql, &[])
            .await
            .map_err(|e| Error::db("reading the registry", &SchemaName::public(), e))?;
        rows.iter().map(record).collect()
    }

    /// The tenant with registry id `id`, or `None` when there is none (ids are never reused:
    /// a tenant re-created in the same schema has a new one).
    pub async fn get_by_id(&self, id: TenantId) -> Result<Option<TenantRecord>> {
        let conn = self.conn().await?;
        let sql = format!("{SELECT_TENANTS} WHERE t.id = $1 GROUP BY t.id");
        let row = conn
            .query_typed_opt(&sql, &[(&id, Type::INT8)])
            .await
            .map_err(|e| Error::db("reading the registry", &SchemaName::public(), e))?;
        row.as_ref().map(record).transpose()
    }
}

/// The tenant in `schema`, read over `conn` (on the registry's database).
pub(crate) async fn get_with(conn: &Object, schema: &SchemaName) -> Result<TenantRecord> {
    let sql = format!("{SELECT_TENANTS} WHERE t.schema_name = $1 GROUP BY t.id");
    let row = conn
        .query_typed_opt(&sql, &[(&schema.as_str(), Type::TEXT)])
        .await
        .map_err(|e| Error::db("reading the registry", schema, e))?;
    match row {
        Some(row) => record(&row),
        None => Err(Error::tenant_not_found(schema)),
    }
}

fn record(row: &Row) -> Result<TenantRecord> {
    Ok(TenantRecord {
        id: row.get("id"),
        schema: SchemaName::from_registry(row.get("schema_name"))?,
        name: row.get("name"),
        created_at: row.get("created_at"),
        status: TenantStatus::from_db(row.get("status")),
        version: row.get("version"),
        domains: row.get("domains"),
        shard: ShardName::new(row.get("shard")),
        max_connections: row
            .get::<_, Option<i32>>("max_connections")
            .and_then(|n| u32::try_from(n).ok()),
        storage_quota: row
            .get::<_, Option<i64>>("storage_quota")
            .and_then(|n| u64::try_from(n).ok()),
        statement_timeout: row
            .get::<_, Option<i32>>("statement_timeout_ms")
            .and_then(|n| u64::try_from(n).ok())
            .map(std::time::Duration::from_millis),
        role: row.get("role"),
    })
}
