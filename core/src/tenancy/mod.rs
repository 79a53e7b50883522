//! [`Tenancy`]: everything an adapter needs in one handle, and the one door for writes.
//!
//! Every change of the registry (tenants created, cloned, deleted, renamed, suspended;
//! domains added, removed, made primary; migrations) goes through a [`Tenancy`], which keeps
//! this process's caches and connections coherent with it and runs the event hooks; the
//! [`Registry`] it hands out only reads. The files of this folder: `builder.rs` (the set-up),
//! `events.rs` (what happened, for hooks), `caches.rs` (what is cached, and forgetting it)
//! and `listener.rs` (hearing other processes' changes).

mod builder;
mod caches;
mod events;
mod listener;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{HeaderMap, Uri};

use crate::error::{Error, Result};
use crate::host::Host;
use crate::migrate::{default_parallelism, MigrationReport, Outcome, Progress, RunOptions};
use crate::registry::{DropSchema, NewTenant, Registry};
use crate::resolve::{CachedResolver, TenantResolver};
use crate::router::{session, ConnectionScope, SchemaRouter};
use crate::schema::SchemaName;
use crate::tenant::{Tenant, TenantRecord, TenantStatus};

pub use builder::TenancyBuilder;
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

    /// The active tenant living in `schema`, from the registry (cached briefly, for the
    /// [negative TTL](crate::CacheConfig::negative_ttl)); `None` when there is none. As for hosts,
    /// a lookup that raced an invalidation of the schema is not cached.
    pub async fn tenant_by_schema(&self, schema: &SchemaName) -> Result<Option<Tenant>> {
        let registry = &self.inner.registry;
        self.inner
            .caches
            .by_schema
            .get_or_try_insert_with(schema, || async move {
                match registry.get(schema).await {
                    Ok(record) if record.status == TenantStatus::Active => {
                        Ok(Some(record.tenant()))
                    }
                    Ok(_) | Err(Error::TenantNotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await
            .map(|(tenant, _)| tenant)
            .map_err(|source| Error::Lookup {
                key: schema.to_string(),
                source,
            })
    }

    /// Whether the registry listener (see [`TenancyBuilder::listen_for_changes`]) is
    /// connected and listening.
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::Acquire)
    }

    /// The router handing out schema-bound connections.
    pub fn router(&self) -> &SchemaRouter {
        &self.inner.router
    }

    /// A connection for the tenant in scope (see [`SchemaRouter::connection`]).
    pub async fn connection(&self) -> Result<ConnectionScope> {
        self.inner.router.connection().await
    }

    /// The registry. Changes made on it directly do not invalidate the host cache; prefer the
    /// methods of `Tenancy`.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The cached resolver, e.g. to invalidate hosts changed by another process.
    pub fn resolver(&self) -> &CachedResolver<Box<dyn TenantResolver>> {
        &self.inner.caches.hosts
    }

    async fn forget(&self, record: &TenantRecord) {
        self.inner.caches.forget_record(record).await;
    }

    /// Creates a tenant (see [`Registry::create_tenant`]); its domains resolve at once.
    pub async fn create_tenant(&self, new: NewTenant) -> Result<TenantRecord> {
        let record = self.inner.registry.create_tenant(new).await?;
        self.forget(&record).await;
        self.emit(TenantEvent::Created(record.clone())).await;
        Ok(record)
    }

    /// Clones a tenant, rows included (see [`Registry::clone_tenant`]).
    pub async fn clone_tenant(&self, source: &SchemaName, new: NewTenant) -> Result<TenantRecord> {
        let record = self.inner.registry.clone_tenant(source, new).await?;
        self.forget(&record).await;
        self.emit(TenantEvent::Created(record.clone())).await;
        Ok(record)
    }

    /// Deletes a tenant (see [`Registry::delete_tenant`]); its domains stop resolving at once.
    pub async fn delete_tenant(
        &self,
        schema: &SchemaName,
        drop: DropSchema,
    ) -> Result<TenantRecord> {
        // Statements for the schema in this process finish first; new ones wait until the
        // deletion is over and then find the schema gone (or, on failure, verify it again).
        let closed = session::gate(schema).close().await;
        let record = self.inner.registry.delete_tenant(schema, drop).await?;
        self.forget(&record).await;
        std::mem::drop(closed);
        self.emit(TenantEvent::Deleted(record.clone())).await;
        Ok(record)
    }

    async fn emit(&self, event: TenantEvent) {
        self.inner.hooks.emit(event).await;
    }

    /// Migrates `public` and every tenant that is behind (see [`Registry::migrate`]).
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

    /// Makes an existing domain the tenant's primary one (see [`Registry::set_primary_domain`]).
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

    /// Adds a domain to a tenant (see [`Registry::add_domain`]).
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

    /// Removes a domain from a tenant (see [`Registry::remove_domain`]).
    pub async fn remove_domain(&self, schema: &SchemaName, domain: &Host) -> Result<()> {
        self.inner.registry.remove_domain(schema, domain).await?;
        self.inner.caches.hosts.invalidate(domain).await;
        Ok(())
    }

    /// Suspends or re-activates a tenant (see [`Registry::set_status`]).
    pub async fn set_status(&self, schema: &SchemaName, status: TenantStatus) -> Result<()> {
        self.inner.registry.set_status(schema, status).await?;
        let record = self.inner.registry.get(schema).await?;
        self.forget(&record).await;
        Ok(())
    }
}
