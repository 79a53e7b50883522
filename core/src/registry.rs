//! The tenant registry: tenants and their domains, in tables in `public`.
//!
//! `public.tenant_schemas_tenants` holds one row per tenant (id, schema name, display
//! name, creation time, status, migration version); `public.tenant_schemas_domains` maps
//! each domain to its tenant, with at most one primary domain per tenant. [`Registry::install`]
//! creates both (idempotent, safe to run from several processes at once).

use std::time::SystemTime;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::Row;

use crate::databases::{self, Databases, ShardName};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::migrate::TenantMigrations;
use crate::schema::SchemaName;
use crate::tenant::{TenantRecord, TenantStatus};

/// Serializes [`Registry::install`] across processes (an arbitrary constant: "tenantsc").
const INSTALL_LOCK: i64 = 0x7465_6e61_6e74_7363;

const INSTALL_SQL: &str = "
CREATE TABLE IF NOT EXISTS public.tenant_schemas_tenants (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schema_name text NOT NULL UNIQUE CHECK (schema_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    version     integer NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS public.tenant_schemas_domains (
    domain     text PRIMARY KEY CHECK (domain = pg_catalog.lower(domain) AND pg_catalog.length(domain) BETWEEN 1 AND 253),
    tenant_id  bigint NOT NULL REFERENCES public.tenant_schemas_tenants (id) ON DELETE CASCADE,
    is_primary boolean NOT NULL DEFAULT false
);
ALTER TABLE public.tenant_schemas_tenants
    ADD COLUMN IF NOT EXISTS shard text NOT NULL DEFAULT 'default';
CREATE INDEX IF NOT EXISTS tenant_schemas_domains_tenant_idx
    ON public.tenant_schemas_domains (tenant_id);
CREATE UNIQUE INDEX IF NOT EXISTS tenant_schemas_domains_one_primary
    ON public.tenant_schemas_domains (tenant_id) WHERE is_primary;
";

const SELECT_TENANTS: &str = "
SELECT t.id, t.schema_name, t.name, t.created_at, t.status, t.version, t.shard,
       coalesce(pg_catalog.array_agg(d.domain ORDER BY d.is_primary DESC, d.domain)
                FILTER (WHERE d.domain IS NOT NULL), '{}') AS domains
FROM public.tenant_schemas_tenants t
LEFT JOIN public.tenant_schemas_domains d ON d.tenant_id = t.id";

/// A tenant to create: its schema, display name and domains (the first is primary).
///
/// ```
/// use tenant_schemas::{Host, NewTenant, SchemaName};
///
/// let acme = NewTenant::new(SchemaName::new("acme").unwrap())
///     .name("Acme Inc.")
///     .domain(Host::parse("acme.example.com").unwrap());
/// ```
#[derive(Debug, Clone)]
pub struct NewTenant {
    schema: SchemaName,
    name: Option<String>,
    domains: Vec<Host>,
    shard: Option<ShardName>,
}

impl NewTenant {
    /// A tenant in `schema`, named after it, with no domain yet.
    pub fn new(schema: SchemaName) -> Self {
        NewTenant {
            schema,
            name: None,
            domains: Vec::new(),
            shard: None,
        }
    }

    /// Sets the display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a domain; the first one added is the primary domain.
    pub fn domain(mut self, domain: Host) -> Self {
        self.domains.push(domain);
        self
    }

    /// Puts the tenant on this database (shard) instead of the one with the fewest tenants.
    pub fn shard(mut self, shard: impl Into<ShardName>) -> Self {
        self.shard = Some(shard.into());
        self
    }

    /// The schema the tenant will live in.
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }
}

/// Whether [`Registry::delete_tenant`] drops the tenant's schema too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropSchema {
    /// Drop the schema and everything in it.
    Yes,
    /// Keep the schema (e.g. to archive it); only the registry rows go.
    No,
}

/// Creates, lists and deletes tenants and their domains.
///
/// Its statements are unnamed (sent with their parameter types), so it works through
/// PgBouncer in transaction pooling mode. Every change runs in one transaction: a tenant whose schema or migrations fail leaves
/// neither a schema nor a registry row behind.
#[derive(Debug, Clone)]
pub struct Registry {
    /// The default database holds the registry.
    pub(crate) databases: Databases,
    pub(crate) migrations: TenantMigrations,
    pub(crate) shared: TenantMigrations,
}

impl Registry {
    /// A registry over `pool`, creating tenants with no migrations.
    pub fn new(pool: Pool) -> Self {
        Self::over(Databases::new(pool))
    }

    /// A registry on the default database of `databases`, placing tenants on all of them.
    pub(crate) fn over(databases: Databases) -> Self {
        Registry {
            databases,
            migrations: TenantMigrations::new(),
            shared: TenantMigrations::new(),
        }
    }

    /// The migrations every new tenant gets.
    pub fn with_migrations(mut self, migrations: TenantMigrations) -> Self {
        self.migrations = migrations;
        self
    }

    /// The migrations every new tenant gets.
    pub fn migrations(&self) -> &TenantMigrations {
        &self.migrations
    }

    /// The shared migrations, run in `public` by [`Registry::migrate`].
    pub fn with_shared_migrations(mut self, migrations: TenantMigrations) -> Self {
        self.shared = migrations;
        self
    }

    /// The shared migrations.
    pub fn shared_migrations(&self) -> &TenantMigrations {
        &self.shared
    }

    pub(crate) async fn conn(&self) -> Result<Object> {
        databases::connect(self.databases.default(), &SchemaName::public()).await
    }

    /// Creates the registry tables in `public` if they are missing.
    pub async fn install(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let public = SchemaName::public();
        let tx = conn
            .transaction()
            .await
            .map_err(|e| Error::db("installing the registry", &public, e))?;
        tx.execute_typed(
            "SELECT pg_catalog.pg_advisory_xact_lock($1)",
            &[(&INSTALL_LOCK, Type::INT8)],
        )
        .await
        .map_err(|e| Error::db("installing the registry", &public, e))?;
        tx.batch_execute(INSTALL_SQL)
            .await
            .map_err(|e| Error::db("installing the registry", &public, e))?;
        tx.commit()
            .await
            .map_err(|e| Error::db("installing the registry", &public, e))
    }

    /// Creates a tenant: `CREATE SCHEMA`, the tenant migrations, and the registry rows, in one
    /// transaction.
    pub async fn create_tenant(&self, new: NewTenant) -> Result<TenantRecord> {
        self.create_tenant_with(new, None).await
    }

    async fn create_tenant_with(
        &self,
        new: NewTenant,
        copy_from: Option<&TenantRecord>,
    ) -> Result<TenantRecord> {
        let schema = new.schema.clone();
        let db = |e| Error::db("creating a tenant", &schema, e);
        // A refused migration set fails before anything runs.
        self.migrations.validate()?;
        // A migration that may change session state beyond the creating transaction (a plain
        // `SET search_path`, `RESET ALL` …) leaves its connection closed, not pooled.
        let discard = !schema.is_public() && self.migrations.may_change_session_after(0);
        let shard = match (copy_from, &new.shard) {
            _ if schema.is_public() => ShardName::DEFAULT,
            (Some(source), _) => source.shard.clone(),
            (None, Some(shard)) => shard.clone(),
            (None, None) => self.place().await?,
        };
        let shard_pool = self.databases.get(&shard)?;
        let source = copy_from.map(|r| &r.schema);
        if shard.is_default() {
            // Schema, migrations and registry rows in one transaction.
            let mut conn = self.conn().await?;
            let made = async {
                let tx = conn.transaction().await.map_err(db)?;
                let version = self.build_schema(&tx, &new, source).await?;
                let (id, created_at) = self.register(&tx, &new, version, &shard).await?;
                tx.commit().await.map_err(db)?;
                Ok::<_, Error>((id, created_at, version))
            }
            .await;
            if discard {
                drop(Object::take(conn));
            }
            let (id, created_at, version) = made?;
            return Ok(self.created(new, id, created_at, version, shard));
        }
        // Another database: the schema is committed there first, then the registry rows here,
        // so the tenant is resolvable only once its schema is complete; if registering fails,
        // the schema is dropped again (a crash in between leaves a schema without a row, which
        // `doctor` reports).
        let mut shard_conn = databases::connect(shard_pool, &schema).await?;
        let built = async {
            let stx = shard_conn.transaction().await.map_err(db)?;
            let version = self.build_schema(&stx, &new, source).await?;
            stx.commit().await.map_err(db)?;
            Ok::<_, Error>(version)
        }
        .await;
        let version = match built {
            Ok(version) => version,
            Err(e) => {
                if discard {
                    drop(Object::take(shard_conn));
                }
                return Err(e);
            }
        };
        // Kept for dropping the schema again should registering fail: a fresh one when the
        // migrations may have changed this one's session.
        let shard_conn = if discard {
            drop(Object::take(shard_conn));
            databases::connect(shard_pool, &schema).await?
        } else {
            shard_conn
        };
        let registered = async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(db)?;
            let row = self.register(&tx, &new, version, &shard).await?;
            tx.commit().await.map_err(db)?;
            Ok::<_, Error>(row)
        }
        .await;
        match registered {
            Ok((id, created_at)) => Ok(self.created(new, id, created_at, version, shard)),
            Err(e) => {
                let _ = shard_conn
                    .batch_execute(&format!(
                        "DROP SCHEMA IF EXISTS {} CASCADE",
                        schema.quoted()
                    ))
                    .await;
                Err(e)
            }
        }
    }

    /// CREATE SCHEMA, the tenant migrations and (for a clone) the rows of `source`, in `tx`.
    async fn build_schema(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        new: &NewTenant,
        source: Option<&SchemaName>,
    ) -> Result<i32> {
        let schema = &new.schema;
        if schema.is_public() {
            return Ok(0);
        }
        // `"$user"` in the default search path would resolve to a schema named like a role,
        // on every connection of that role not switched to a tenant: refused (roles are
        // cluster-wide, so any database of the cluster can tell).
        let is_role: bool = tx
            .query_typed_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)",
                &[(&schema.as_str(), Type::TEXT)],
            )
            .await
            .map_err(|e| Error::db("creating a tenant", schema, e))?
            .get(0);
        if is_role {
            return Err(Error::SchemaNamedAfterRole {
                schema: schema.clone(),
            });
        }
        tx.batch_execute(&format!("CREATE SCHEMA {}", schema.quoted()))
            .await
            .map_err(|e| conflict(e, schema, &new.domains))?;
        let version = self.migrations.apply(tx, schema).await?.1;
        self.refuse_shadowing(tx.client(), schema).await?;
        if let Some(source) = source {
            copy_rows(tx, source, schema).await?;
        }
        Ok(version)
    }

    /// The registry rows of a new tenant, and the announcement, in `tx` (on the registry's
    /// database).
    async fn register(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        new: &NewTenant,
        version: i32,
        shard: &ShardName,
    ) -> Result<(i64, SystemTime)> {
        let schema = &new.schema;
        let name = new.name.clone().unwrap_or_else(|| schema.to_string());
        let row = tx
            .query_typed_one(
                "INSERT INTO public.tenant_schemas_tenants (schema_name, name, version, shard)
                 VALUES ($1, $2, $3, $4) RETURNING id, created_at",
                &[
                    (&schema.as_str(), Type::TEXT),
                    (&name, Type::TEXT),
                    (&version, Type::INT4),
                    (&shard.as_str(), Type::TEXT),
                ],
            )
            .await
            .map_err(|e| conflict(e, schema, &new.domains))?;
        let id: i64 = row.get(0);
        // Domains are inserted in one global order: two creations whose lists cross
        // ([x, y] and [y, x]) then queue on the first shared domain instead of deadlocking,
        // and the second gets `DomainTaken` once the first commits.
        let mut domains: Vec<(usize, &Host)> = new.domains.iter().enumerate().collect();
        domains.sort_by(|a, b| a.1.as_str().cmp(b.1.as_str()));
        for (i, domain) in domains {
            tx.execute_typed(
                "INSERT INTO public.tenant_schemas_domains (domain, tenant_id, is_primary)
                 VALUES ($1, $2, $3)",
                &[
                    (&domain.as_str(), Type::TEXT),
                    (&id, Type::INT8),
                    (&(i == 0), Type::BOOL),
                ],
            )
            .await
            .map_err(|e| conflict(e, schema, std::slice::from_ref(domain)))?;
        }
        let hosts: Vec<&str> = new.domains.iter().map(Host::as_str).collect();
        notify(tx, schema, &hosts)
            .await
            .map_err(|e| Error::db("creating a tenant", schema, e))?;
        Ok((id, row.get(1)))
    }

    fn created(
        &self,
        new: NewTenant,
        id: i64,
        created_at: SystemTime,
        version: i32,
        shard: ShardName,
    ) -> TenantRecord {
        tracing::info!(schema = %new.schema, tenant_id = id, shard = %shard, "tenant created");
        TenantRecord {
            id,
            name: new.name.unwrap_or_else(|| new.schema.to_string()),
            schema: new.schema,
            created_at,
            status: TenantStatus::Active,
            version,
            domains: new.domains.iter().map(|d| d.as_str().to_owned()).collect(),
            shard,
        }
    }

    /// The database a new tenant goes to: the one with the fewest tenants.
    async fn place(&self) -> Result<ShardName> {
        if !self.databases.has_others() {
            return Ok(ShardName::DEFAULT);
        }
        let conn = self.conn().await?;
        let rows = conn
            .query_typed(
                "SELECT shard, pg_catalog.count(*) FROM public.tenant_schemas_tenants GROUP BY shard",
                &[],
            )
            .await
            .map_err(|e| Error::db("placing a tenant", &SchemaName::public(), e))?;
        let count = |shard: &ShardName| {
            rows.iter()
                .find(|r| *shard == r.get::<_, &str>(0))
                .map_or(0, |r| r.get::<_, i64>(1))
        };
        Ok(self
            .databases
            .iter()
            .map(|(name, _)| name)
            .min_by_key(|name| count(name))
            .cloned()
            .unwrap_or_default())
    }

    /// The pool of a database (shard) by name.
    pub fn shard_pool(&self, shard: &ShardName) -> Result<&Pool> {
        self.databases.get(shard)
    }

    /// Adds another database (shard) that new tenants can be placed on.
    pub fn with_shard(mut self, name: impl Into<ShardName>, pool: Pool) -> Self {
        self.databases.add(name.into(), pool);
        self
    }

    /// Creates `new` like [`create_tenant`](Self::create_tenant) and, in the same
    /// transaction, copies every table's rows and every sequence's position from the tenant
    /// in `source` (which must be at the latest migration version, so both have the same
    /// tables). Foreign keys are not re-checked during the copy
    /// (`session_replication_role = replica`, which needs a superuser or, on PostgreSQL 15,
    /// a role granted that setting).
    pub async fn clone_tenant(&self, source: &SchemaName, new: NewTenant) -> Result<TenantRecord> {
        let from = self.get(source).await?;
        let latest = self.migrations.latest();
        if from.version != latest {
            return Err(Error::CloneVersion {
                schema: source.clone(),
                version: from.version,
                latest,
            });
        }
        self.create_tenant_with(new, Some(&from)).await
    }

    /// Registers the public tenant (schema `public`) with `main_domain` as its primary domain,
    /// unless it exists already. Returns its record.
    pub async fn ensure_public_tenant(&self, main_domain: &Host) -> Result<TenantRecord> {
        match self.get(&SchemaName::public()).await {
            Ok(record) => {
                if !record.domains.iter().any(|d| d == main_domain.as_str()) {
                    self.add_domain(&record.schema, main_domain, record.domains.is_empty())
                        .await?;
                    return self.get(&SchemaName::public()).await;
                }
                Ok(record)
            }
            Err(Error::TenantNotFound { .. }) => {
                let new = NewTenant::new(SchemaName::public())
                    .name("public")
                    .domain(main_domain.clone());
                match self.create_tenant(new).await {
                    // Another process registered it first.
                    Err(Error::TenantExists { .. }) => self.get(&SchemaName::public()).await,
                    other => other,
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The tenant in `schema`.
    pub async fn get(&self, schema: &SchemaName) -> Result<TenantRecord> {
        let conn = self.conn().await?;
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

    /// Adds `domain` to the tenant in `schema`; with `primary`, it replaces the primary domain.
    pub async fn add_domain(
        &self,
        schema: &SchemaName,
        domain: &Host,
        primary: bool,
    ) -> Result<()> {
        let db = |e| Error::db("adding a domain", schema, e);
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db)?;
        let id = tenant_id(&tx, schema).await?;
        if primary {
            tx.execute_typed(
                "UPDATE public.tenant_schemas_domains SET is_primary = false
                 WHERE tenant_id = $1 AND is_primary",
                &[(&id, Type::INT8)],
            )
            .await
            .map_err(db)?;
        }
        tx.execute_typed(
            "INSERT INTO public.tenant_schemas_domains (domain, tenant_id, is_primary)
             VALUES ($1, $2, $3)",
            &[
                (&domain.as_str(), Type::TEXT),
                (&id, Type::INT8),
                (&primary, Type::BOOL),
            ],
        )
        .await
        .map_err(|e| conflict(e, schema, std::slice::from_ref(domain)))?;
        notify(&tx, schema, &[domain.as_str()]).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// Removes `domain` from the tenant in `schema`.
    pub async fn remove_domain(&self, schema: &SchemaName, domain: &Host) -> Result<()> {
        let removed = self
            .change(
                schema,
                "removing a domain",
                &[domain.as_str()],
                "DELETE FROM public.tenant_schemas_domains d
                 USING public.tenant_schemas_tenants t
                 WHERE d.tenant_id = t.id AND t.schema_name = $1 AND d.domain = $2",
                &[
                    (&schema.as_str(), Type::TEXT),
                    (&domain.as_str(), Type::TEXT),
                ],
            )
            .await?;
        if removed == 0 {
            return Err(Error::domain_not_found(domain, schema));
        }
        Ok(())
    }

    /// Runs one statement of a registry change in a transaction that also announces the
    /// change on [`CHANNEL`] when it affected a row; returns the rows it affected.
    async fn change(
        &self,
        schema: &SchemaName,
        action: &'static str,
        hosts: &[&str],
        sql: &str,
        params: &[(&(dyn tokio_postgres::types::ToSql + Sync), Type)],
    ) -> Result<u64> {
        let db = |e| Error::db(action, schema, e);
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db)?;
        let changed = tx.execute_typed(sql, params).await.map_err(db)?;
        if changed > 0 {
            notify(&tx, schema, hosts).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(changed)
    }

    /// Makes `domain`, already one of the tenant's domains, its primary domain.
    pub async fn set_primary_domain(&self, schema: &SchemaName, domain: &Host) -> Result<()> {
        let db = |e| Error::db("changing the primary domain", schema, e);
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db)?;
        let id = tenant_id(&tx, schema).await?;
        tx.execute_typed(
            "UPDATE public.tenant_schemas_domains SET is_primary = false WHERE tenant_id = $1 AND is_primary",
            &[(&id, Type::INT8)],
        )
        .await
        .map_err(db)?;
        let changed = tx
            .execute_typed(
                "UPDATE public.tenant_schemas_domains SET is_primary = true WHERE tenant_id = $1 AND domain = $2",
                &[(&id, Type::INT8), (&domain.as_str(), Type::TEXT)],
            )
            .await
            .map_err(db)?;
        if changed == 0 {
            return Err(Error::domain_not_found(domain, schema));
        }
        notify(&tx, schema, &[]).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// Changes a tenant's display name.
    pub async fn rename(&self, schema: &SchemaName, name: &str) -> Result<()> {
        let changed = self
            .change(
                schema,
                "renaming a tenant",
                &[],
                "UPDATE public.tenant_schemas_tenants SET name = $2 WHERE schema_name = $1",
                &[(&schema.as_str(), Type::TEXT), (&name, Type::TEXT)],
            )
            .await?;
        if changed == 0 {
            return Err(Error::tenant_not_found(schema));
        }
        Ok(())
    }

    /// Suspends or re-activates a tenant. A suspended tenant's hosts resolve to no tenant.
    pub async fn set_status(&self, schema: &SchemaName, status: TenantStatus) -> Result<()> {
        let changed = self
            .change(
                schema,
                "changing a tenant's status",
                &[],
                "UPDATE public.tenant_schemas_tenants SET status = $2 WHERE schema_name = $1",
                &[
                    (&schema.as_str(), Type::TEXT),
                    (&status.as_str(), Type::TEXT),
                ],
            )
            .await?;
        if changed == 0 {
            return Err(Error::tenant_not_found(schema));
        }
        Ok(())
    }

    /// Deletes the tenant's registry rows and, with [`DropSchema::Yes`], its schema, in one
    /// transaction. Returns the record as it was. The `public` schema is never dropped.
    pub async fn delete_tenant(
        &self,
        schema: &SchemaName,
        drop: DropSchema,
    ) -> Result<TenantRecord> {
        let db = |e| Error::db("deleting a tenant", schema, e);
        let record = self.get(schema).await?;
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db)?;
        let deleted = tx
            .execute_typed(
                "DELETE FROM public.tenant_schemas_tenants WHERE schema_name = $1",
                &[(&schema.as_str(), Type::TEXT)],
            )
            .await
            .map_err(db)?;
        if deleted == 0 {
            return Err(Error::tenant_not_found(schema));
        }
        let drop_sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", schema.quoted());
        let drop_schema = drop == DropSchema::Yes && !schema.is_public();
        let here = record.shard.is_default();
        if drop_schema && here {
            tx.batch_execute(&drop_sql).await.map_err(db)?;
        }
        let hosts: Vec<&str> = record.domains.iter().map(String::as_str).collect();
        notify(&tx, schema, &hosts).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        if drop_schema && !here {
            // On another database: unregistered first (nothing resolves to it any more),
            // then dropped there.
            let shard_conn = self.databases.connect(&record.shard, schema).await?;
            shard_conn.batch_execute(&drop_sql).await.map_err(db)?;
        }
        tracing::info!(schema = %schema, dropped = drop == DropSchema::Yes, "tenant deleted");
        Ok(record)
    }
}

/// The `LISTEN`/`NOTIFY` channel every registry change is announced on, in the changing
/// transaction, so other processes can drop what they cached (see
/// [`TenancyBuilder::listen_for_changes`](crate::TenancyBuilder::listen_for_changes)). The
/// payload is the tenant's schema, then the hosts the change concerns, separated by spaces;
/// `*` in place of the hosts means "forget every host".
pub const CHANNEL: &str = "tenant_schemas_registry";

/// NOTIFY payloads are limited to 8,000 bytes.
const MAX_PAYLOAD: usize = 7_900;

async fn notify(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &SchemaName,
    hosts: &[&str],
) -> Result<(), tokio_postgres::Error> {
    let mut payload = schema.as_str().to_owned();
    for host in hosts {
        if payload.len() + host.len() + 3 > MAX_PAYLOAD {
            payload.push_str(" *");
            break;
        }
        payload.push(' ');
        payload.push_str(host);
    }
    tx.execute_typed(
        "SELECT pg_catalog.pg_notify($1, $2)",
        &[(&CHANNEL, Type::TEXT), (&payload, Type::TEXT)],
    )
    .await
    .map(drop)
}

/// Copies every table's rows and every sequence's position from `source` into `target`
/// (same tables: both at the latest migration version), inside `tx`.
///
/// Columns are copied by name: generated columns (`GENERATED ALWAYS AS (…) STORED`) are left
/// out and computed again, identity columns (`GENERATED ALWAYS AS IDENTITY`) are copied with
/// `OVERRIDING SYSTEM VALUE`. Every sequence gets the source's position, and a sequence that
/// owns a column (identity, `serial`) is moved past the highest value copied into it, so the
/// next row inserted in the clone does not collide.
async fn copy_rows(
    tx: &tokio_postgres::Transaction<'_>,
    source: &SchemaName,
    target: &SchemaName,
) -> Result<()> {
    let db = |e| Error::db("copying a tenant", target, e);
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .await
        .map_err(db)?;
    let relations = tx
        .query_typed(
            "SELECT c.relname::text, c.relkind::text,
                    ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                            AND a.attgenerated = ''
                          ORDER BY a.attnum)
             FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'S') AND c.relname::text <> $2
             ORDER BY c.relname",
            &[
                (&source.as_str(), Type::TEXT),
                (&crate::migrate::HISTORY_TABLE, Type::TEXT),
            ],
        )
        .await
        .map_err(db)?;
    for row in relations {
        let name: String = row.get(0);
        let (from, to) = (
            format!("{}.{}", source.quoted(), ident(&name)),
            format!("{}.{}", target.quoted(), ident(&name)),
        );
        if row.get::<_, String>(1) == "S" {
            tx.batch_execute(&format!(
                "SELECT pg_catalog.setval({to_lit}, last_value, is_called) FROM {from}",
                to_lit = literal(&to)
            ))
            .await
            .map_err(db)?;
        } else {
            let columns: Vec<String> = row.get(2);
            let columns: Vec<String> = columns.iter().map(|c| ident(c)).collect();
            let columns = columns.join(", ");
            // No column left (all generated, or none at all): every row is made of defaults.
            let sql = if columns.is_empty() {
                format!("INSERT INTO {to} SELECT FROM {from}")
            } else {
                format!(
                    "INSERT INTO {to} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} FROM {from}"
                )
            };
            tx.batch_execute(&sql).await.map_err(db)?;
        }
    }
    // Sequences owning an integer column (identity or serial) go past the highest value
    // copied: rows inserted in the source with an explicit id must not collide in the clone.
    let owned = tx
        .query_typed(
            "SELECT s.relname::text, t.relname::text, a.attname::text
             FROM pg_catalog.pg_depend d
             JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
             JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid AND q.seqincrement > 0
             JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
             JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace
             JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
             WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
               AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
               AND d.deptype IN ('a', 'i') AND n.nspname = $1
               AND a.atttypid IN ('pg_catalog.int2'::pg_catalog.regtype,
                                  'pg_catalog.int4'::pg_catalog.regtype,
                                  'pg_catalog.int8'::pg_catalog.regtype)
             ORDER BY 1",
            &[(&target.as_str(), Type::TEXT)],
        )
        .await
        .map_err(db)?;
    for row in owned {
        let (sequence, table, column): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        let sequence = format!("{}.{}", target.quoted(), ident(&sequence));
        let table = format!("{}.{}", target.quoted(), ident(&table));
        tx.batch_execute(&format!(
            "SELECT pg_catalog.setval({seq_lit}, m.top, true)
             FROM (SELECT pg_catalog.max({column})::bigint AS top FROM {table}) m, {sequence} s
             WHERE m.top IS NOT NULL
               AND m.top > CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END",
            seq_lit = literal(&sequence),
            column = ident(&column),
        ))
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// A catalog name (which can hold anything) quoted as an identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Text quoted as a string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

async fn tenant_id(tx: &tokio_postgres::Transaction<'_>, schema: &SchemaName) -> Result<i64> {
    let row = tx
        .query_typed_opt(
            "SELECT id FROM public.tenant_schemas_tenants WHERE schema_name = $1 FOR UPDATE",
            &[(&schema.as_str(), Type::TEXT)],
        )
        .await
        .map_err(|e| Error::db("reading the registry", schema, e))?;
    row.map(|r| r.get(0))
        .ok_or_else(|| Error::tenant_not_found(schema))
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
    })
}

/// Turns a unique violation into the conflict it means; other errors stay database errors.
fn conflict(err: tokio_postgres::Error, schema: &SchemaName, domains: &[Host]) -> Error {
    let code = err.code();
    if code == Some(&SqlState::DUPLICATE_SCHEMA) {
        return Error::TenantExists {
            schema: schema.clone(),
        };
    }
    if code == Some(&SqlState::UNIQUE_VIOLATION) {
        let constraint = err.as_db_error().and_then(|d| d.constraint()).unwrap_or("");
        if constraint.starts_with("tenant_schemas_domains") {
            return Error::DomainTaken {
                domain: domains.first().map(ToString::to_string).unwrap_or_default(),
            };
        }
        // `pg_namespace_nspname_index`: two transactions created the same schema at once.
        if constraint.starts_with("tenant_schemas_tenants")
            || constraint == "pg_namespace_nspname_index"
        {
            return Error::TenantExists {
                schema: schema.clone(),
            };
        }
    }
    Error::db("creating a tenant", schema, err)
}
