//! Creating (from scratch or as a clone), renaming, suspending and deleting tenants.

use std::time::SystemTime;

use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use super::clone::copy_rows;
use super::dependents::{lock_and_refuse, Dropping};
use super::erase::count_rows_locked;
use super::notify::announce;
use super::Registry;
use crate::databases;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::migrate::{refuse_shadowing, MigrationReport, Progress, RunOptions, Runner};
use crate::receipt::TableRows;
use crate::schema::SchemaName;
use crate::shard::ShardName;
use crate::tenant::{TenantRecord, TenantStatus};

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
    pub(super) schema: SchemaName,
    pub(super) name: Option<String>,
    pub(super) domains: Vec<Host>,
    pub(super) shard: Option<ShardName>,
    pub(super) status: TenantStatus,
    /// Role mode: the role made for it (set by the creation, never by the caller).
    pub(super) role: Option<String>,
}

impl NewTenant {
    /// A tenant in `schema`, named after it, with no domain yet.
    #[must_use]
    pub fn new(schema: SchemaName) -> Self {
        Self {
            schema,
            name: None,
            domains: Vec::new(),
            shard: None,
            status: TenantStatus::Active,
            role: None,
        }
    }

    /// Creates the tenant in this state instead of active (e.g. in maintenance, while its
    /// data is loaded).
    #[must_use]
    pub fn status(mut self, status: TenantStatus) -> Self {
        self.status = status;
        self
    }

    /// Sets the display name.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a domain; the first one added is the primary domain.
    #[must_use]
    pub fn domain(mut self, domain: Host) -> Self {
        self.domains.push(domain);
        self
    }

    /// Puts the tenant on this database (shard) instead of the one with the fewest tenants.
    #[must_use]
    pub fn shard(mut self, shard: impl Into<ShardName>) -> Self {
        self.shard = Some(shard.into());
        self
    }

    /// The schema the tenant will live in.
    #[must_use]
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// The state it will be created in.
    #[must_use]
    pub fn get_status(&self) -> TenantStatus {
        self.status
    }
}

/// Whether [`Tenancy::delete_tenant`](crate::Tenancy::delete_tenant) drops the tenant's
/// schema too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropSchema {
    /// Drop the schema and everything in it. Refused ([`Error::OutsideDependents`], nothing
    /// deleted) when objects outside the schema depend on objects in it — a view in
    /// `public` or in another tenant's schema selecting from its table, a foreign key
    /// referencing its table, a table inheriting from its table —, which dropping the
    /// schema would destroy: drop them first, or use [`WithDependents`](Self::WithDependents).
    Yes,
    /// Keep the schema (e.g. to archive it); only the registry rows go.
    No,
    /// Drop the schema, everything in it and every object outside it that depends on them
    /// (`DROP SCHEMA … CASCADE`): a view of another schema, a foreign key (the constraint,
    /// not its table), a table inheriting from one of its tables (with its rows) … are
    /// dropped too.
    WithDependents,
}

impl DropSchema {
    /// Whether the schema is dropped.
    pub(crate) fn drops(self) -> bool {
        self != Self::No
    }
}

impl Registry {
    /// Creates a tenant: `CREATE SCHEMA`, the tenant migrations, and the registry rows, in one
    /// transaction.
    pub(crate) async fn create_tenant(&self, new: NewTenant) -> Result<TenantRecord> {
        self.create_tenant_with(new, None).await
    }

    /// [`Error::MigrationSetBehind`] when a tenant of the registry is at a newer version
    /// than this process's tenant migrations know: a tenant created here would start behind.
    async fn refuse_older_set(&self, schema: &SchemaName) -> Result<()> {
        let latest = self.sets.tenant.latest();
        let registry: i32 = self
            .conn()
            .await?
            .query_typed_one(
                "SELECT coalesce(max(version), 0) FROM public.tenant_schemas_tenants \
                 WHERE schema_name <> 'public'",
                &[],
            )
            .await
            .map_err(|e| Error::db("reading the registry's newest version", schema, e))?
            .get(0);
        if registry > latest {
            return Err(Error::MigrationSetBehind {
                schema: schema.clone(),
                latest,
                registry,
            });
        }
        Ok(())
    }

    async fn create_tenant_with(
        &self,
        new: NewTenant,
        copy_from: Option<&TenantRecord>,
    ) -> Result<TenantRecord> {
        let mut new = new;
        let schema = new.schema.clone();
        let db = |e| Error::db("creating a tenant", &schema, e);
        // Role mode: the tenant's role is made with its schema, in the same transaction.
        new.role = match self.roles() {
            Some(_) if !schema.is_public() => Some(crate::roles::new_role_name()),
            _ => None,
        };
        // A refused migration set fails before anything runs.
        self.sets.tenant.validate()?;
        if !schema.is_public() {
            self.refuse_older_set(&schema).await?;
        }
        // A migration that may change session state beyond the creating transaction (a plain
        // `SET search_path`, `RESET ALL` …) leaves its connection closed, not pooled.
        let discard = !schema.is_public() && self.sets.tenant.may_change_session_after(0);
        let shard = match (copy_from, &new.shard) {
            _ if schema.is_public() => ShardName::DEFAULT,
            (Some(source), _) => source.shard.clone(),
            (None, Some(shard)) => shard.clone(),
            (None, None) => self.place().await?,
        };
        let shard_pool = self.databases.get(&shard)?;
        let source = copy_from.map(|r| &r.schema);
        if shard.is_default() {
            // On a Citus coordinator the schema is made a distributed one.
            let citus = !schema.is_public() && self.is_citus().await?;
            // Schema, migrations and registry rows in one transaction.
            let mut conn = self.conn().await?;
            let made = async {
                let tx = conn.transaction().await.map_err(db)?;
                if citus {
                    super::citus::distribute_new_schemas(&tx, &schema).await?;
                }
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
            return self
                .finish_creation(self.created(new, id, created_at, version, shard))
                .await;
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
            Ok((id, created_at)) => {
                self.finish_creation(self.created(new, id, created_at, version, shard))
                    .await
            }
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

    /// Runs what the creating transaction could not: the [no-transaction
    /// steps](crate::Migration::no_transaction) and the migrations after them, each recorded
    /// as it succeeds. The tenant exists already (committed and resolvable, at the version
    /// before the first such step); a failure leaves it at the version it reached and is
    /// reported as [`Error::TenantCreatedBehind`] (migrating it again finishes it).
    async fn finish_creation(&self, mut record: TenantRecord) -> Result<TenantRecord> {
        if record.schema.is_public() || record.version >= self.sets.tenant.latest() {
            return Ok(record);
        }
        let runner = Runner {
            databases: &self.databases,
            sets: &self.sets,
        };
        match runner
            .migrate_schema(
                &record.schema,
                &record.shard,
                record.version,
                &self.sets.tenant,
            )
            .await
        {
            Ok((_, to)) => {
                record.version = to;
                Ok(record)
            }
            Err((source, version)) => Err(Error::TenantCreatedBehind {
                schema: record.schema,
                version,
                source: Box::new(source),
            }),
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
        refuse_role_name(tx, schema, "creating a tenant").await?;
        tx.batch_execute(&format!("CREATE SCHEMA {}", schema.quoted()))
            .await
            .map_err(|e| conflict(e, schema, &new.domains))?;
        let version = self.sets.tenant.apply(tx, schema).await?.1;
        refuse_shadowing(tx.client(), schema, &self.sets.shared_names()).await?;
        if let Some(source) = source {
            copy_rows(tx, source, schema).await?;
        }
        if let (Some(role), Some(roles)) = (&new.role, self.roles()) {
            tx.batch_execute(&crate::roles::attach_sql(schema, role, roles))
                .await
                .map_err(|e| Error::db("giving the tenant its role", schema, e))?;
        }
        Ok(version)
    }

    /// The registry rows of a new tenant, and the announcement, in `tx` (on the registry's
    /// database).
    pub(super) async fn register(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        new: &NewTenant,
        version: i32,
        shard: &ShardName,
    ) -> Result<(i64, SystemTime)> {
        self.register_as(tx, new, version, shard, None).await
    }

    /// [`register`](Self::register) under the id `id` when given, not one from the
    /// registry's sequence: for a dry run, whose rows are rolled back but whose sequence
    /// values would not be.
    pub(super) async fn register_as(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        new: &NewTenant,
        version: i32,
        shard: &ShardName,
        id: Option<i64>,
    ) -> Result<(i64, SystemTime)> {
        let schema = &new.schema;
        let name = new.name.clone().unwrap_or_else(|| schema.to_string());
        let (schema_text, shard_text, status) =
            (schema.as_str(), shard.as_str(), new.status.as_str());
        let role = new.role.as_deref();
        let mut params: Vec<(&(dyn tokio_postgres::types::ToSql + Sync), Type)> = vec![
            (&schema_text, Type::TEXT),
            (&name, Type::TEXT),
            (&version, Type::INT4),
            (&shard_text, Type::TEXT),
            (&status, Type::TEXT),
            (&role, Type::TEXT),
        ];
        let sql = match &id {
            None => {
                "INSERT INTO public.tenant_schemas_tenants (schema_name, name, version, shard, status, role)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, created_at"
            }
            Some(id) => {
                params.push((id, Type::INT8));
                "INSERT INTO public.tenant_schemas_tenants (schema_name, name, version, shard, status, role, id)
                 OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, created_at"
            }
        };
        let row = tx
            .query_typed_one(sql, &params)
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
        announce(tx, schema, &hosts)
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
            status: new.status,
            version,
            domains: new.domains.iter().map(|d| d.as_str().to_owned()).collect(),
            shard,
            max_connections: None,
            storage_quota: None,
            statement_timeout: None,
            role: new.role,
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

    /// Creates `new` like [`create_tenant`](Self::create_tenant) and, in the same
    /// transaction, copies every table's rows and every sequence's position from the tenant
    /// in `source` (which must be at the latest migration version, so both have the same
    /// tables). Foreign keys are not re-checked during the copy
    /// (`session_replication_role = replica`, which needs a superuser or, on PostgreSQL 15,
    /// a role granted that setting).
    pub(crate) async fn clone_tenant(
        &self,
        source: &SchemaName,
        new: NewTenant,
    ) -> Result<TenantRecord> {
        if self.sets.tenant.has_no_transaction_steps() {
            return Err(Error::Refused {
                what: "cloning with no-transaction migrations in the set",
                instead: "the clone's copy runs in its creating transaction, before such steps \
                          could; create the tenant and copy its rows yourself",
            });
        }
        let from = self.get(source).await?;
        let latest = self.sets.tenant.latest();
        if from.version != latest {
            return Err(Error::CloneVersion {
                schema: source.clone(),
                version: from.version,
                latest,
            });
        }
        self.create_tenant_with(new, Some(&from)).await
    }

    /// Runs the shared migrations in `public`, then brings every tenant that the registry
    /// says is behind to the latest tenant migration, each in its own transaction (see
    /// [`Tenancy::migrate`](crate::Tenancy::migrate)). Creates the registry tables first
    /// when missing; a refused migration set fails before anything runs anywhere.
    pub(crate) async fn migrate(
        &self,
        options: &RunOptions,
        progress: Option<Progress>,
    ) -> Result<MigrationReport> {
        self.sets.validate()?;
        self.install().await?;
        let report = Runner {
            databases: &self.databases,
            sets: &self.sets,
        }
        .run(options, progress)
        .await?;
        // Role mode: shared tables the shared migrations just made are granted.
        self.install_roles().await?;
        Ok(report)
    }

    /// Registers the public tenant (schema `public`) with `main_domain` as its primary domain,
    /// unless it exists already. Returns its record.
    pub(crate) async fn ensure_public_tenant(&self, main_domain: &Host) -> Result<TenantRecord> {
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

    /// Runs one statement of a registry change in a transaction that also announces the
    /// change on [`CHANNEL`] when it affected a row; returns the rows it affected.
    pub(super) async fn change(
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
            announce(&tx, schema, hosts).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(changed)
    }

    /// Changes a tenant's display name.
    pub(crate) async fn rename(&self, schema: &SchemaName, name: &str) -> Result<()> {
        self.set_field(schema, "renaming a tenant", "name", &name, Type::TEXT)
            .await
    }

    /// Sets one column of `schema`'s registry row (announced; [`Error::TenantNotFound`] when
    /// the registry has no such tenant). `column` is one of this crate's, never input.
    pub(super) async fn set_field(
        &self,
        schema: &SchemaName,
        action: &'static str,
        column: &'static str,
        value: &(dyn tokio_postgres::types::ToSql + Sync),
        ty: Type,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE public.tenant_schemas_tenants SET {column} = $2 WHERE schema_name = $1"
        );
        let changed = self
            .change(
                schema,
                action,
                &[],
                &sql,
                &[(&schema.as_str(), Type::TEXT), (value, ty)],
            )
            .await?;
        if changed == 0 {
            return Err(Error::tenant_not_found(schema));
        }
        Ok(())
    }

    /// The connections a rename of `old` uses, taken before its gates are closed: requests
    /// waiting at a closed gate hold pooled connections, so none may be needed from the pool
    /// meanwhile. Refuses the public schema and `old == new` before anything else.
    /// The connections a deletion of `schema` needs, taken before its gate closes: requests
    /// held back at a closed gate keep their pooled connections, so a deletion that waited
    /// for one of those would wait for them to time out.
    pub(crate) async fn delete_connections(
        &self,
        schema: &SchemaName,
    ) -> Result<DeleteConnections> {
        let registry = self.conn().await?;
        let shard = super::get_with(&registry, schema).await?.shard;
        let elsewhere = if shard.is_default() {
            None
        } else {
            Some(self.databases.connect(&shard, schema).await?)
        };
        Ok(DeleteConnections {
            registry,
            elsewhere,
        })
    }

    pub(crate) async fn rename_connections(
        &self,
        old: &SchemaName,
        new: &SchemaName,
    ) -> Result<RenameConnections> {
        if old.is_public() || new.is_public() {
            return Err(Error::Refused {
                what: "renaming the public schema (or renaming a tenant to `public`)",
                instead: "the public schema holds the registry and the shared tables; only \
                          tenant schemas can be renamed",
            });
        }
        if old == new {
            return Err(Error::TenantExists {
                schema: new.clone(),
            });
        }
        let registry = self.conn().await?;
        let shard = super::get_with(&registry, old).await?.shard;
        let elsewhere = if shard.is_default() {
            None
        } else {
            Some((shard.clone(), self.databases.connect(&shard, old).await?))
        };
        Ok(RenameConnections {
            registry,
            elsewhere,
        })
    }

    /// Renames a tenant's schema: `ALTER SCHEMA old RENAME TO new` and the registry row
    /// (its migration history lives in the schema and moves with it), announced under both
    /// names, in one transaction; on another database the schema is renamed there first and
    /// renamed back should the registry refuse. Returns the record under its new name.
    pub(crate) async fn rename_schema(
        &self,
        old: &SchemaName,
        new: &SchemaName,
        conns: RenameConnections,
    ) -> Result<TenantRecord> {
        let RenameConnections {
            mut registry,
            elsewhere,
        } = conns;
        let fail = |e: tokio_postgres::Error| rename_error(e, old, new);
        let record = super::get_with(&registry, old).await?;
        let hosts: Vec<&str> = record.domains.iter().map(String::as_str).collect();
        match elsewhere {
            // Schema and registry row in one transaction.
            _ if record.shard.is_default() => {
                let tx = registry.transaction().await.map_err(fail)?;
                rename_in(&tx, old, new).await?;
                register_rename(&tx, old, new, &hosts).await?;
                tx.commit().await.map_err(fail)?;
            }
            // Renamed on its database, then registered (renamed back should that fail).
            Some((shard, mut shard_conn)) if shard == record.shard => {
                let stx = shard_conn.transaction().await.map_err(fail)?;
                rename_in(&stx, old, new).await?;
                let tx = registry.transaction().await.map_err(fail)?;
                register_rename(&tx, old, new, &hosts).await?;
                stx.commit().await.map_err(fail)?;
                if let Err(e) = tx.commit().await {
                    let _ = shard_conn
                        .batch_execute(&format!(
                            "ALTER SCHEMA {} RENAME TO {}",
                            new.quoted(),
                            old.quoted()
                        ))
                        .await;
                    return Err(fail(e));
                }
            }
            _ => {
                return Err(Error::Refused {
                    what: "renaming a tenant whose database changed during the rename",
                    instead: "try again",
                })
            }
        }
        tracing::info!(from = %old, to = %new, shard = %record.shard, "tenant schema renamed");
        Ok(TenantRecord {
            schema: new.clone(),
            ..record
        })
    }

    /// Sets or clears (`None`) a tenant's own connection limit.
    pub(crate) async fn set_max_connections(
        &self,
        schema: &SchemaName,
        limit: Option<u32>,
    ) -> Result<()> {
        let limit = limit.map(|n| i32::try_from(n.max(1)).unwrap_or(i32::MAX));
        let action = "changing a tenant's connection limit";
        self.set_field(schema, action, "max_connections", &limit, Type::INT4)
            .await
    }

    pub(crate) async fn set_statement_timeout(
        &self,
        schema: &SchemaName,
        timeout: Option<std::time::Duration>,
    ) -> Result<()> {
        let ms = timeout.map(|d| i32::try_from(crate::tenant::duration_ms(d)).unwrap_or(i32::MAX));
        let action = "changing a tenant's statement timeout";
        self.set_field(schema, action, "statement_timeout_ms", &ms, Type::INT4)
            .await
    }

    /// Suspends or re-activates a tenant. A suspended tenant's hosts resolve to no tenant.
    pub(crate) async fn set_status(&self, schema: &SchemaName, status: TenantStatus) -> Result<()> {
        let action = "changing a tenant's status";
        self.set_field(schema, action, "status", &status.as_str(), Type::TEXT)
            .await
    }

    /// Deletes the tenant's registry rows and, unless [`DropSchema::No`], its schema, in one
    /// transaction. Returns the record as it was, and with `count` (and a schema dropped) each
    /// table's rows, counted under locks held until the drop: the rows erased. The `public`
    /// schema is never dropped. With [`DropSchema::Yes`], objects outside the schema that
    /// depend on it are looked for in the dropping transaction, under the locks of the
    /// schema's tables, before anything is deleted: refused ([`Error::OutsideDependents`],
    /// in the words of `dropping`) when there are.
    pub(crate) async fn delete_tenant(
        &self,
        schema: &SchemaName,
        drop: DropSchema,
        conns: DeleteConnections,
        count: bool,
        dropping: Dropping,
    ) -> Result<(TenantRecord, Option<Vec<TableRows>>)> {
        let db = |e| Error::db("deleting a tenant", schema, e);
        let DeleteConnections {
            registry: mut conn,
            elsewhere,
        } = conns;
        let record = super::get_with(&conn, schema).await?;
        let drop_sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", schema.quoted());
        let drop_schema = drop.drops() && !schema.is_public();
        // Refused when something outside depends on the schema, unless asked for.
        let check = drop_schema && drop == DropSchema::Yes;
        let here = record.shard.is_default();
        // On another database the schema is dropped after the registry row is gone (nothing
        // resolves to it any more), in a transaction opened (and counted in) before.
        let mut shard_conn = match elsewhere {
            Some(conn) if drop_schema && !here => Some(conn),
            None if drop_schema && !here => {
                Some(self.databases.connect(&record.shard, schema).await?)
            }
            _ => None,
        };
        let mut shard_tx = match shard_conn.as_mut() {
            Some(conn) => Some(conn.transaction().await.map_err(db)?),
            None => None,
        };
        let mut rows = None;
        if let (true, Some(stx)) = (count, &shard_tx) {
            rows = Some(count_rows_locked(stx, schema).await.map_err(db)?);
        }
        if let (true, Some(stx)) = (check, &shard_tx) {
            lock_and_refuse(stx, schema, dropping).await?;
        }
        let tx = conn.transaction().await.map_err(db)?;
        if count && drop_schema && here {
            // First in `tx`: the count waits for transactions creating objects in the schema
            // holding no lock they could be waiting for (the registry row's, here).
            rows = Some(count_rows_locked(&tx, schema).await.map_err(db)?);
        }
        if check && here {
            // Before the registry row is deleted (its lock taken), as the count.
            lock_and_refuse(&tx, schema, dropping).await?;
        }
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
        if drop_schema && here {
            tx.batch_execute(&drop_sql).await.map_err(db)?;
        }
        let hosts: Vec<&str> = record.domains.iter().map(String::as_str).collect();
        announce(&tx, schema, &hosts).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        if let Some(stx) = shard_tx.take() {
            stx.batch_execute(&drop_sql).await.map_err(db)?;
            stx.commit().await.map_err(db)?;
        }
        std::mem::drop(shard_tx);
        // Role mode: the role goes with the schema (kept while another database holds
        // something of it). A tenant whose schema is kept keeps its role's grants there.
        if let (true, Some(role)) = (drop_schema, &record.role) {
            match shard_conn.as_ref() {
                Some(shard_conn) => super::drop_role(shard_conn, schema, role).await,
                None => super::drop_role(&conn, schema, role).await,
            }
        }
        tracing::info!(schema = %schema, dropped = drop_schema, "tenant deleted");
        Ok((record, rows))
    }
}

/// The schema's side of a rename, in `tx` on its database: refused when a role has the new
/// name, with a short lock timeout (the schema's statements are held back meanwhile).
async fn rename_in(
    tx: &tokio_postgres::Transaction<'_>,
    old: &SchemaName,
    new: &SchemaName,
) -> Result<()> {
    let fail = |e| rename_error(e, old, new);
    tx.batch_execute("SET LOCAL lock_timeout = '5s'")
        .await
        .map_err(fail)?;
    let is_role: bool = tx
        .query_typed_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)",
            &[(&new.as_str(), Type::TEXT)],
        )
        .await
        .map_err(fail)?
        .get(0);
    if is_role {
        return Err(Error::SchemaNamedAfterRole {
            schema: new.clone(),
        });
    }
    tx.batch_execute(&format!(
        "ALTER SCHEMA {} RENAME TO {}",
        old.quoted(),
        new.quoted()
    ))
    .await
    .map_err(fail)
}

/// The registry's side of a rename, in `tx`: the row, and the announcement under both names.
async fn register_rename(
    tx: &tokio_postgres::Transaction<'_>,
    old: &SchemaName,
    new: &SchemaName,
    hosts: &[&str],
) -> Result<()> {
    let fail = |e| rename_error(e, old, new);
    let changed = tx
        .execute_typed(
            "UPDATE public.tenant_schemas_tenants SET schema_name = $2 WHERE schema_name = $1",
            &[(&old.as_str(), Type::TEXT), (&new.as_str(), Type::TEXT)],
        )
        .await
        .map_err(fail)?;
    if changed == 0 {
        return Err(Error::tenant_not_found(old));
    }
    announce(tx, old, hosts).await.map_err(fail)?;
    announce(tx, new, hosts).await.map_err(fail)?;
    Ok(())
}

/// A failed rename in words: the new name taken (by a schema or a registered tenant), the
/// old schema missing, or a database error.
fn rename_error(err: tokio_postgres::Error, old: &SchemaName, new: &SchemaName) -> Error {
    let code = err.code();
    if code == Some(&SqlState::DUPLICATE_SCHEMA)
        || (code == Some(&SqlState::UNIQUE_VIOLATION)
            && err
                .as_db_error()
                .and_then(|d| d.constraint())
                .is_some_and(|c| {
                    c.starts_with("tenant_schemas_tenants") || c == "pg_namespace_nspname_index"
                }))
    {
        return Error::TenantExists {
            schema: new.clone(),
        };
    }
    if code == Some(&SqlState::INVALID_SCHEMA_NAME) {
        return Error::SchemaMissing {
            schema: old.clone(),
        };
    }
    Error::db("renaming a tenant schema", old, err)
}

/// The connections a rename uses (see [`Registry::rename_connections`]).
pub(crate) struct RenameConnections {
    /// To the registry's database.
    registry: Object,
    /// To the tenant's database, when it is another one.
    elsewhere: Option<(ShardName, Object)>,
}

impl RenameConnections {
    /// A connection to the database the tenant's schema lives on.
    pub(crate) fn schema_database(&self) -> &Object {
        self.elsewhere.as_ref().map_or(&self.registry, |(_, c)| c)
    }
}

/// Turns a unique violation into the conflict it means; other errors stay database errors.
pub(super) fn conflict(err: tokio_postgres::Error, schema: &SchemaName, domains: &[Host]) -> Error {
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

/// Fails with [`Error::SchemaNamedAfterRole`] when a role has `schema`'s name (a tenant
/// created or imported; `action` names which in a database error): `"$user"` in the
/// default search path would resolve to that schema on every connection of that role not
/// switched to a tenant. Roles are cluster-wide, so any database of the cluster can tell.
pub(super) async fn refuse_role_name(
    client: &impl GenericClient,
    schema: &SchemaName,
    action: &'static str,
) -> Result<()> {
    let is_role: bool = client
        .query_typed_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)",
            &[(&schema.as_str(), Type::TEXT)],
        )
        .await
        .map_err(|e| Error::db(action, schema, e))?
        .get(0);
    if is_role {
        return Err(Error::SchemaNamedAfterRole {
            schema: schema.clone(),
        });
    }
    Ok(())
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    //! A [`Tenancy`](crate::Tenancy) refuses a migration set that controls transactions when
    //! it is built, so no public path hands such a set to the registry any more; its create
    //! and migrate paths refuse it too, before anything runs. Against a real PostgreSQL.

    use super::*;
    use crate::databases::Databases;
    use crate::migrate::{MigrationSets, RunOptions, TenantMigrations};
    use crate::testing::fixtures::{
        database, host, is_registered, schema, schema_exists, schemas_holding, NOTES,
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_migration_set_runs_nothing() {
        let db = database().await;
        for (i, stray) in [
            "COMMIT",
            "ROLLBACK",
            "END",
            "ABORT",
            "BEGIN",
            "START TRANSACTION",
            "SAVEPOINT s",
            "COMMIT; BEGIN",
            "PREPARE TRANSACTION 'x'",
        ]
        .into_iter()
        .enumerate()
        {
            let sql = format!(
                "CREATE TABLE early_{i} (x int);\n{stray};\nCREATE TABLE stray_{i} (x int)"
            );
            // Built with the infallible `with`.
            let migrations = TenantMigrations::new()
                .with("notes", NOTES)
                .with("stray", sql.as_str())
                .with("later", format!("CREATE TABLE later_{i} (x int)"))
                .with("fails", "SELECT 1 / 0");
            let t = Registry::over(
                Databases::new(db.pool().clone()),
                MigrationSets {
                    tenant: migrations,
                    ..MigrationSets::default()
                },
            );
            t.install().await.unwrap();
            let s = format!("txn_{i}");
            let result = t
                .create_tenant(NewTenant::new(schema(&s)).domain(host(&format!("txn-{i}.test"))))
                .await;
            assert!(
                matches!(&result, Err(Error::MigrationRefused { migration, .. }) if migration == "V2__stray.sql"),
                "{stray}: {result:?}"
            );
            assert!(!schema_exists(&db, &s).await, "{stray}: orphan schema");
            assert!(!is_registered(&db, &s).await, "{stray}: registry row");
            for table in [
                format!("early_{i}"),
                format!("stray_{i}"),
                format!("later_{i}"),
            ] {
                assert_eq!(
                    schemas_holding(&db, &table).await,
                    Vec::<String>::new(),
                    "{stray}: {table}"
                );
            }
            // `migrate` refuses it before touching any schema.
            let err = t
                .migrate(&RunOptions::default(), None)
                .await
                .map(|r| r.is_success());
            assert!(
                matches!(err, Err(Error::MigrationRefused { .. })),
                "{stray}: {err:?}"
            );
        }
    }
}

/// See [`Registry::delete_connections`].
#[derive(Debug)]
pub(crate) struct DeleteConnections {
    registry: Object,
    /// The tenant's database, when it is not the registry's.
    elsewhere: Option<Object>,
}

impl DeleteConnections {
    /// A connection to the database the tenant's schema lives on.
    pub(crate) fn schema_database(&self) -> &Object {
        self.elsewhere.as_ref().unwrap_or(&self.registry)
    }
}
