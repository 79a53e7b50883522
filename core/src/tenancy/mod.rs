//! [`Tenancy`]: everything an adapter needs in one handle, and the one door for writes.
//!
//! Every change of the registry (tenants created, cloned, deleted, renamed, suspended;
//! domains added, removed, made primary; migrations) goes through a [`Tenancy`], which keeps
//! this process's caches and connections coherent with it and runs the event hooks; the
//! [`Registry`] it hands out only reads. The files of this folder: `builder.rs` (the set-up),
//! `events.rs` (what happened, for hooks), `caches.rs` (what is cached, and forgetting it)
//! and `listener.rs` (hearing other processes' changes); and one file per operation that
//! is more than a call into the registry: `adopt.rs` (registering existing schemas),
//! `citus.rs` (moving tenants between Citus workers), `jobs.rs` (running a background job
//! for a [`TenantRef`](crate::TenantRef)) and `report.rs` (one query over every tenant).
//!
//! The rule for a new tenant operation: its public method goes in `tenancy/<op>.rs` (an
//! `impl Tenancy` block), its SQL in `registry/<op>.rs`, its value types in a leaf module
//! (one that imports nothing above `tenant.rs`, e.g. `citus.rs`, `tenant.rs`). Nothing
//! below this folder imports it.

mod adopt;
pub use adopt::ImportDryRun;
mod builder;
mod caches;
mod citus;
mod erase;
mod events;
mod export;
mod jobs;
mod listener;
pub mod report;
mod shard_move;
mod shared_names;
mod status;
mod usage;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{HeaderMap, Uri};

use crate::checkout::TenantStates;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::migrate::{default_parallelism, MigrationReport, Outcome, Progress, RunOptions};
use crate::registry::dependents::{refuse_outside_dependents, Dropping};
use crate::registry::{DropSchema, NewTenant, Registry};
use crate::resolve::{CachedResolver, TenantResolver};
use crate::router::{session, ConnectionScope, SchemaRouter};
use crate::schema::SchemaName;
use crate::tenant::{Tenant, TenantRecord, TenantStatus};

pub use builder::TenancyBuilder;
pub use erase::EraseOptions;
pub use events::TenantEvent;

use caches::Caches;
use events::Hooks;

/// The resolver (behind its cache), the router and the registry of one application.
///
/// Cheap to clone. Registry changes made through it invalidate the cached hosts they affect,
/// so a new tenant is served at once and a deleted one is not served any more.
///
/// ```no_run
/// use tenant_schemas::{Host, NewTenant, SchemaName, Tenancy, TenantMigrations};
///
/// # async fn demo(pool: tenant_schemas::deadpool_postgres::Pool) -> tenant_schemas::Result<()> {
/// let tenancy = Tenancy::builder(pool)
///     .migrations(TenantMigrations::new().with("notes", "CREATE TABLE notes (body text)"))
///     .build()
///     .await?; // creates the registry tables if missing
/// tenancy
///     .create_tenant(NewTenant::new(SchemaName::new("acme")?).domain(Host::parse("acme.example.com")?))
///     .await?;
/// let tenant = tenancy.resolve(&Host::parse("acme.example.com")?).await?;
/// assert_eq!(tenant.schema().as_str(), "acme");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Tenancy {
    inner: Arc<Inner>,
}

struct Inner {
    listener: Option<tokio::task::JoinHandle<()>>,
    listening: Arc<AtomicBool>,
    hooks: Hooks,
    router: SchemaRouter,
    caches: Caches,
    registry: Registry,
    states: TenantStates,
    /// How long a deletion or rename waits for drivers' connections checked out for the
    /// schema before it terminates them.
    grace: std::time::Duration,
    /// The settings of the databases whose pools were made from them (see
    /// [`TenancyBuilder::replication_source`]).
    sources:
        std::collections::BTreeMap<crate::shard::ShardName, crate::connect::ConnectionSettings>,
    /// The last measurement of the tenants' schemas ([`Tenancy::usage`]).
    usage: tokio::sync::Mutex<Option<(std::time::Instant, Arc<[crate::receipt::SchemaUsage]>)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenancy")
            .field("router", &self.router)
            .field("resolver", &self.caches.hosts)
            .field("registry", &self.registry)
            .field("hooks", &self.hooks.len())
            .finish_non_exhaustive()
    }
}

impl Tenancy {
    /// The tenant for `host`; [`Error::UnknownHost`] when there is none.
    pub async fn resolve(&self, host: &Host) -> Result<Tenant> {
        self.inner
            .caches
            .hosts
            .resolve(host)
            .await?
            .ok_or_else(|| Error::UnknownHost {
                host: host.to_string(),
            })
    }

    /// The tenant of a request, from its Host header or URI authority.
    pub async fn resolve_request(&self, uri: &Uri, headers: &HeaderMap) -> Result<Tenant> {
        let host = Host::from_request(uri, headers)?;
        self.resolve(&host).await
    }

    /// The tenant living in `schema`, with its state, from the registry (cached briefly, for the
    /// [negative TTL](crate::CacheConfig::negative_ttl)); `None` when there is none. As for hosts,
    /// a lookup that raced an invalidation of the schema is not cached.
    pub async fn tenant_by_schema(&self, schema: &SchemaName) -> Result<Option<Tenant>> {
        self.inner.states.registered(schema).await
    }

    /// The tenants' states as the registry holds them, which every checkout of this
    /// `Tenancy`'s router reads (see [`checkout`](crate::checkout)); for a router or driver
    /// built by hand over the same database
    /// ([`SchemaRouterBuilder::tenant_states`](crate::SchemaRouterBuilder::tenant_states)).
    #[must_use]
    pub fn tenant_states(&self) -> TenantStates {
        self.inner.states.clone()
    }

    /// Whether the registry listener (see [`TenancyBuilder::listen_for_changes`]) is
    /// connected and listening.
    #[must_use]
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Acquire)
    }

    /// The router handing out schema-bound connections.
    #[must_use]
    pub fn router(&self) -> &SchemaRouter {
        &self.inner.router
    }

    /// A connection for the tenant in scope (see [`SchemaRouter::connection`]).
    pub async fn connection(&self) -> Result<ConnectionScope> {
        self.inner.router.connection().await
    }

    /// The registry, to read tenants ([`Registry::get`], [`Registry::list`],
    /// [`Registry::doctor`]). Changes go through the methods of `Tenancy`.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The cached resolver, e.g. to invalidate hosts changed by another process.
    ///
    /// Named for what it returns: the [`CachedResolver`] in front of the resolver given to
    /// [`TenancyBuilder::resolver`] (or the registry's), whose cache it is for.
    #[must_use]
    pub fn cached_resolver(&self) -> &CachedResolver<Box<dyn TenantResolver>> {
        &self.inner.caches.hosts
    }

    /// The former name of [`cached_resolver`](Self::cached_resolver).
    #[deprecated(note = "use `Tenancy::cached_resolver`")]
    #[must_use]
    pub fn resolver(&self) -> &CachedResolver<Box<dyn TenantResolver>> {
        self.cached_resolver()
    }

    async fn forget(&self, record: &TenantRecord) {
        self.inner.caches.forget_record(record).await;
    }

    /// Creates a tenant: `CREATE SCHEMA`, the tenant migrations, and the registry rows, in one
    /// transaction, so a tenant whose schema or migrations fail leaves neither a schema nor
    /// a registry row behind. Its domains resolve at once; the hooks hear
    /// [`TenantEvent::Created`].
    ///
    /// On another database ([`NewTenant::shard`], or the one with the fewest tenants) the
    /// schema is committed there first, then the registry rows: the tenant is resolvable only
    /// once its schema is complete.
    ///
    /// [No-transaction migrations](crate::Migration::no_transaction) (`CREATE INDEX
    /// CONCURRENTLY`) cannot run in that transaction: the tenant is committed at the version
    /// before the first of them, which then run (with the migrations after them), each
    /// recorded as it succeeds. Should one fail, the tenant exists at the version it reached
    /// and the error is [`Error::TenantCreatedBehind`]; the hooks still hear
    /// [`TenantEvent::Created`], and [`migrate`](Self::migrate) finishes it.
    ///
    /// A process whose tenant migrations end before the version a tenant of the registry is
    /// at (newer code migrated it: a rolling deploy) creates nothing:
    /// [`Error::MigrationSetBehind`] names both versions, rather than a tenant created behind
    /// the others.
    pub async fn create_tenant(&self, new: NewTenant) -> Result<TenantRecord> {
        let record = match self.inner.registry.create_tenant(new).await {
            Ok(record) => record,
            Err(e) => {
                // Created, but behind: it exists, so it is announced like any other.
                if let Error::TenantCreatedBehind { schema, .. } = &e {
                    if let Ok(record) = self.inner.registry.get(schema).await {
                        self.forget(&record).await;
                        self.emit(TenantEvent::Created(record)).await;
                    }
                }
                return Err(e);
            }
        };
        self.forget(&record).await;
        self.emit(TenantEvent::Created(record.clone())).await;
        Ok(record)
    }

    /// Creates `new` like [`create_tenant`](Self::create_tenant) and, in the same
    /// transaction, copies every table's rows and every sequence's position from the tenant
    /// in `source` (which must be at the latest migration version, so both have the same
    /// tables; [`Error::CloneVersion`] otherwise). The clone lives on the source's database.
    /// Foreign keys are not re-checked during the copy (`session_replication_role =
    /// replica`, which needs a superuser or, on PostgreSQL 15, a role granted that setting).
    /// Refused ([`Error::Refused`]) when the set has [no-transaction
    /// migrations](crate::Migration::no_transaction).
    pub async fn clone_tenant(&self, source: &SchemaName, new: NewTenant) -> Result<TenantRecord> {
        let record = self.inner.registry.clone_tenant(source, new).await?;
        self.forget(&record).await;
        self.emit(TenantEvent::Created(record.clone())).await;
        Ok(record)
    }

    /// Deletes the tenant's registry rows and, with [`DropSchema::Yes`] (or
    /// [`DropSchema::WithDependents`]), its schema, in one transaction; returns the record as
    /// it was. The `public` schema is never dropped. Its domains stop resolving at once;
    /// statements for it in this process finish first, later ones fail with
    /// [`Error::SchemaMissing`]; the hooks hear [`TenantEvent::Deleted`].
    ///
    /// With [`DropSchema::Yes`], a tenant whose objects have dependents outside its schema
    /// (a view in `public` or in another tenant's schema selecting from its table, a foreign
    /// key of another schema's table referencing it, a table inheriting from it …), which
    /// `DROP SCHEMA … CASCADE` would destroy with it, is refused
    /// ([`Error::OutsideDependents`], naming each): nothing is deleted, and no connection is
    /// cut off. They are looked for before anything else, and again in the dropping
    /// transaction once it holds the schema's tables. [`DropSchema::WithDependents`] drops
    /// them with the schema.
    pub async fn delete_tenant(
        &self,
        schema: &SchemaName,
        drop: DropSchema,
    ) -> Result<TenantRecord> {
        Ok(self
            .delete_counting(schema, drop, false, Dropping::Delete)
            .await?
            .0)
    }

    /// [`delete_tenant`](Self::delete_tenant); with `count` (and the schema dropped), each
    /// table's rows too, counted once nothing writes any more and under locks held until
    /// the drop. A refusal for outside dependents is worded for `dropping`.
    pub(crate) async fn delete_counting(
        &self,
        schema: &SchemaName,
        drop: DropSchema,
        count: bool,
        dropping: Dropping,
    ) -> Result<(TenantRecord, Option<Vec<crate::receipt::TableRows>>)> {
        let conns = self.inner.registry.delete_connections(schema).await?;
        // Refused before any connection is closed or cut off (and again, under locks, in
        // the dropping transaction).
        if drop == DropSchema::Yes && !schema.is_public() {
            refuse_outside_dependents(conns.schema_database(), schema, dropping).await?;
        }
        // Statements for the schema in this process finish first; new ones wait until the
        // deletion is over and then find the schema gone (or, on failure, verify it again).
        let closed = session::close(schema).await;
        // Drivers' connections checked out for it (sqlx) end, or are cut off.
        crate::checkout::cut_off_drivers(schema, self.inner.grace, conns.schema_database()).await?;
        let (record, rows) = self
            .inner
            .registry
            .delete_tenant(schema, drop, conns, count, dropping)
            .await?;
        self.forget(&record).await;
        std::mem::drop(closed);
        self.emit(TenantEvent::Deleted(record.clone())).await;
        Ok((record, rows))
    }

    async fn emit(&self, event: TenantEvent) {
        self.inner.hooks.emit(event).await;
    }

    /// Looks the registry and every tenant schema over (see [`Registry::doctor`]); with
    /// `fix`, repairs invalid indexes left by failed concurrent builds (see
    /// [`Finding::InvalidIndex`](crate::Finding::InvalidIndex)), gives tenants their missing
    /// roles ([`Finding::RoleMissing`](crate::Finding::RoleMissing), role mode), then migrates the tenants
    /// that are behind, through [`migrate`](Self::migrate), so the hooks hear
    /// [`TenantEvent::Migrated`], and reports what it repaired.
    pub async fn doctor(&self, fix: bool) -> Result<crate::registry::DoctorReport> {
        let mut report = self.inner.registry.doctor().await?;
        if fix {
            // Before migrating: an invalid index left by a failed build is dropped first in
            // a tenant behind, so that the migration can build it again.
            for (finding, error) in self.inner.registry.repair_invalid_indexes(&report).await? {
                report.record_repair(finding, error);
            }
            // Role mode: tenants without their role get it (made again where it is gone).
            let missing: Vec<crate::Finding> = report
                .findings
                .iter()
                .filter(|f| matches!(f, crate::Finding::RoleMissing { .. }))
                .cloned()
                .collect();
            if !missing.is_empty() {
                let error = match self.sync_roles().await {
                    Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                };
                for finding in missing {
                    report.record_repair(finding, error.clone());
                }
            }
        }
        let behind = report.behind();
        if fix && !behind.is_empty() {
            let run = self
                .migrate(
                    &RunOptions {
                        schemas: behind,
                        skip_public: true,
                        ..RunOptions::default()
                    },
                    None,
                )
                .await?;
            report.record_repairs(&run);
        }
        Ok(report)
    }

    /// Runs the shared migrations in `public` (of every database), then brings every tenant
    /// that the registry says is behind to the latest tenant migration, each in its own
    /// transaction, at most `options.parallel` at once. A failed schema keeps its previous
    /// version and does not stop the others; a second migrator (another process) waits on an
    /// advisory lock until this one is done. Creates the registry tables when missing. The
    /// hooks hear [`TenantEvent::Migrated`] for each schema migrated.
    ///
    /// Needs session state for the lock: run it over a direct connection, not through
    /// PgBouncer in transaction pooling mode.
    pub async fn migrate(
        &self,
        options: &RunOptions,
        progress: Option<Progress>,
    ) -> Result<MigrationReport> {
        let report = self.inner.registry.migrate(options, progress).await?;
        for r in &report.schemas {
            if let Outcome::Migrated { from, to } = r.outcome {
                self.emit(TenantEvent::Migrated {
                    schema: r.schema.clone(),
                    from,
                    to,
                })
                .await;
            }
        }
        Ok(report)
    }

    /// Runs `job` once per tenant (and in `public`, unless skipped), each inside the
    /// tenant's scope, at most `options.parallel` at once; returns every tenant's result in
    /// schema order. One tenant's failure does not stop the others.
    ///
    /// ```no_run
    /// # async fn demo(tenancy: tenant_schemas::Tenancy) -> tenant_schemas::Result<()> {
    /// use tenant_schemas::RunOptions;
    /// let options = RunOptions { skip_public: true, ..RunOptions::default() };
    /// let counts = tenancy
    ///     .for_each_tenant(&options, |_tenant| {
    ///         let tenancy = tenancy.clone();
    ///         async move {
    ///             let db = tenancy.connection().await?; // this tenant's schema
    ///             Ok(db.query_one("SELECT count(*) FROM notes", &[]).await?.get::<_, i64>(0))
    ///         }
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn for_each_tenant<F, Fut, T>(
        &self,
        options: &RunOptions,
        job: F,
    ) -> Result<Vec<(SchemaName, Result<T>)>>
    where
        F: Fn(Tenant) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        use futures_util::stream::{self, StreamExt};
        let mut tenants: Vec<Tenant> = self
            .inner
            .registry
            .list()
            .await?
            .into_iter()
            .map(|r| r.tenant())
            .collect();
        // `public` is a target even when no public tenant is registered.
        if !tenants.iter().any(Tenant::is_public) {
            tenants.push(Tenant::public());
        }
        tenants.retain(|t| !(options.skip_public && t.is_public()));
        tenants.retain(|t| options.schemas.is_empty() || options.schemas.contains(t.schema()));
        let parallel = if options.parallel > 0 {
            options.parallel
        } else {
            default_parallelism(self.inner.router.pool())
        };
        let job = &job;
        let mut results: Vec<(SchemaName, Result<T>)> = stream::iter(tenants)
            .map(|tenant| async move {
                let schema = tenant.schema().clone();
                (schema, crate::scope::run(tenant.clone(), job(tenant)).await)
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        results.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(results)
    }

    /// Makes `domain`, already one of the tenant's domains, its primary domain.
    pub async fn set_primary_domain(&self, schema: &SchemaName, domain: &Host) -> Result<()> {
        self.inner.registry.set_primary_domain(schema, domain).await
    }

    /// Changes a tenant's display name; cached hosts pick it up at once.
    pub async fn rename(&self, schema: &SchemaName, name: &str) -> Result<()> {
        self.inner.registry.rename(schema, name).await?;
        let record = self.inner.registry.get(schema).await?;
        self.forget(&record).await;
        Ok(())
    }

    /// Moves a tenant to another schema name: `ALTER SCHEMA old RENAME TO new` and its
    /// registry row in one transaction (its migration history lives in the schema and moves
    /// with it). Returns its record under the new name. [`rename`](Self::rename) changes
    /// the display name only.
    ///
    /// Statements for either name in this process finish first and new ones wait while the
    /// rename runs (as during [`delete_tenant`](Self::delete_tenant)); afterwards every
    /// connection verifies its schema again, so a request resolved to the old name before
    /// the rename fails with [`Error::SchemaMissing`] instead of running anywhere else, and
    /// the tenant's hosts resolve to the new name at once (other instances listening for
    /// changes within moments). The hooks hear [`TenantEvent::SchemaRenamed`].
    ///
    /// Fails with nothing changed: [`Error::TenantExists`] when `new` is taken (by a schema
    /// or a registered tenant), [`Error::SchemaNamedAfterRole`] when a database role has
    /// that name, [`Error::TenantNotFound`] when no tenant lives in `old`,
    /// [`Error::Refused`] for the public schema.
    ///
    /// ```no_run
    /// # async fn demo(tenancy: tenant_schemas::Tenancy) -> tenant_schemas::Result<()> {
    /// use tenant_schemas::SchemaName;
    /// let record = tenancy
    ///     .rename_schema(&SchemaName::new("acme")?, &SchemaName::new("acme_corp")?)
    ///     .await?;
    /// assert_eq!(record.schema.as_str(), "acme_corp");
    /// # Ok(()) }
    /// ```
    pub async fn rename_schema(&self, old: &SchemaName, new: &SchemaName) -> Result<TenantRecord> {
        // Taken before the gates close: requests held back at a closed gate keep their
        // pooled connections. Refusals (public, the same name twice) come first.
        let conns = self.inner.registry.rename_connections(old, new).await?;
        // Both names are closed, in name order so that two renames crossing each other
        // cannot deadlock: statements for the old name wait instead of finding the schema
        // half renamed, and none can start on the new name before its row is committed.
        let (first, second) = if old < new { (old, new) } else { (new, old) };
        let closed_first = session::close(first).await;
        let closed_second = session::close(second).await;
        for name in [old, new] {
            crate::checkout::cut_off_drivers(name, self.inner.grace, conns.schema_database())
                .await?;
        }
        let renamed = self.inner.registry.rename_schema(old, new, conns).await;
        if let Ok(record) = &renamed {
            let hosts: Vec<Host> = record
                .domains
                .iter()
                .filter_map(|domain| Host::parse(domain).ok())
                .collect();
            self.inner.caches.forget(old, &hosts).await;
            self.inner.caches.forget(new, &hosts).await;
        }
        // Dropping the gates bumps both names' epochs: every connection checks again.
        drop(closed_second);
        drop(closed_first);
        let record = renamed?;
        self.emit(TenantEvent::SchemaRenamed {
            from: old.clone(),
            to: new.clone(),
        })
        .await;
        Ok(record)
    }

    /// Adds `domain` to the tenant in `schema`; with `primary`, it replaces the primary
    /// domain. It resolves at once; [`Error::DomainTaken`] when another tenant has it.
    pub async fn add_domain(
        &self,
        schema: &SchemaName,
        domain: &Host,
        primary: bool,
    ) -> Result<()> {
        self.inner
            .registry
            .add_domain(schema, domain, primary)
            .await?;
        self.inner.caches.hosts.invalidate(domain).await;
        Ok(())
    }

    /// Removes `domain` from the tenant in `schema`; it stops resolving at once.
    pub async fn remove_domain(&self, schema: &SchemaName, domain: &Host) -> Result<()> {
        self.inner.registry.remove_domain(schema, domain).await?;
        self.inner.caches.hosts.invalidate(domain).await;
        Ok(())
    }

    /// Sets (or, with `None`, clears) `schema`'s own connection limit, over the tenancy's
    /// default [`TenantLimits::max_connections`](crate::TenantLimits::max_connections)
    /// ([`TenancyBuilder::tenant_limits`](crate::TenancyBuilder::tenant_limits)): kept in the
    /// registry, followed by this process at once and by others listening for changes
    /// within moments. A tenant with a limit of its own is limited even when the tenancy has
    /// no default; the waiting limits are the tenancy's. Checkouts already holding
    /// connections keep them.
    pub async fn set_max_connections(&self, schema: &SchemaName, limit: Option<u32>) -> Result<()> {
        self.inner
            .registry
            .set_max_connections(schema, limit)
            .await?;
        let record = self.inner.registry.get(schema).await?;
        self.forget(&record).await;
        Ok(())
    }

    /// Role mode ([`TenancyBuilder::tenant_roles`](crate::TenancyBuilder::tenant_roles)):
    /// gives every tenant without a role its own (recorded in the registry, followed by
    /// this process at once and by others listening within moments) and makes every tenant
    /// role's grants on its schema whole again (after migrations run by another database
    /// role, or tables created outside the library). The group role and the shared tables'
    /// grants are set up too. Idempotent; `tenant-schemas roles sync` runs it. Returns each
    /// tenant's schema, role and whether the role is new.
    ///
    /// [`Error::InvalidRoleSetting`] when role mode is off.
    pub async fn sync_roles(&self) -> Result<Vec<(SchemaName, String, bool)>> {
        let synced = self.inner.registry.sync_roles().await?;
        for (schema, _, new) in &synced {
            if *new {
                let record = self.inner.registry.get(schema).await?;
                self.forget(&record).await;
            }
        }
        Ok(synced)
    }

    /// Sets (or, with `None`, clears) `schema`'s own `statement_timeout`, over the tenancy's
    /// default [`TenantLimits::statement_timeout`](crate::TenantLimits::statement_timeout):
    /// kept in the registry, followed by this process at once and by others listening for
    /// changes within moments. Its sessions get it at their next switch, in every driver: a
    /// statement running longer is cancelled by the server (`57014`, `query_canceled`). In
    /// whole milliseconds, at least 10 (a session's next switch begins under it).
    pub async fn set_statement_timeout(
        &self,
        schema: &SchemaName,
        timeout: Option<std::time::Duration>,
    ) -> Result<()> {
        self.inner
            .registry
            .set_statement_timeout(schema, timeout)
            .await?;
        let record = self.inner.registry.get(schema).await?;
        self.forget(&record).await;
        Ok(())
    }

    /// Changes a tenant's [state](TenantStatus): how its requests are answered (every
    /// adapter) and whether its sessions may write. This process follows at once, other
    /// instances listening for changes within moments; connections pooled on the tenant are
    /// switched again before their next statement. The hooks hear
    /// [`TenantEvent::StatusChanged`] when the state changed.
    pub async fn set_status(&self, schema: &SchemaName, status: TenantStatus) -> Result<()> {
        let tenant = self.inner.registry.get(schema).await?;
        let before = tenant.status;
        self.inner.registry.set_status(schema, status).await?;
        // Read back by id: a rename committed since the change moved the tenant, and the
        // change, made, would otherwise be reported as a tenant not found. By name when the
        // id is gone (deleted, and the name taken by another tenant the change then reached).
        let record = match self.inner.registry.get_by_id(tenant.id).await? {
            Some(record) => record,
            None => self.inner.registry.get(schema).await?,
        };
        self.forget(&record).await;
        if before != status {
            self.emit(TenantEvent::StatusChanged {
                schema: schema.clone(),
                from: before,
                to: status,
            })
            .await;
        }
        Ok(())
    }

    /// Registers the public tenant (schema `public`) with `main_domain` as its primary
    /// domain, unless it exists already (then `main_domain` is added to its domains when
    /// missing, as the primary one if it has none). Returns its record; its domains resolve at
    /// once. Safe to run from several processes at once. The hooks are not run.
    ///
    /// ```no_run
    /// # async fn demo(tenancy: tenant_schemas::Tenancy) -> tenant_schemas::Result<()> {
    /// use tenant_schemas::Host;
    /// let public = tenancy.ensure_public_tenant(&Host::parse("example.com")?).await?;
    /// assert!(public.schema.is_public());
    /// # Ok(()) }
    /// ```
    pub async fn ensure_public_tenant(&self, main_domain: &Host) -> Result<TenantRecord> {
        let record = self
            .inner
            .registry
            .ensure_public_tenant(main_domain)
            .await?;
        self.forget(&record).await;
        Ok(record)
    }
}
