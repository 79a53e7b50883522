//! Everything an adapter needs, in one handle.

use std::sync::Arc;

use deadpool_postgres::Pool;
use http::{HeaderMap, Uri};
use moka::future::Cache;

use crate::databases::{Databases, ShardName};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::migrate::TenantMigrations;
use crate::migrate::{default_parallelism, MigrationReport, Outcome, Progress, RunOptions};
use crate::registry::{DropSchema, NewTenant, Registry};
use crate::resolve::{
    CacheConfig, CachedResolver, CoherentCache, RegistryResolver, TenantResolver,
};
use crate::router::{session, ConnectionScope, SchemaRouter, SearchPathMode};
use crate::schema::SchemaName;
use crate::tenant::{Tenant, TenantRecord, TenantStatus};

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
    listening: Arc<std::sync::atomic::AtomicBool>,
    hooks: Vec<EventHook>,
    router: SchemaRouter,
    resolver: CachedResolver<Box<dyn TenantResolver>>,
    /// Active tenants by schema name, for the path and header strategies.
    by_schema: CoherentCache<SchemaName, Option<Tenant>>,
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
            .field("resolver", &self.resolver)
            .field("registry", &self.registry)
            .field("hooks", &self.hooks.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Tenancy`].
pub struct TenancyBuilder {
    databases: Databases,
    listen: Option<tokio_postgres::Config>,
    hooks: Vec<EventHook>,
    shared: TenantMigrations,
    resolver: Option<Box<dyn TenantResolver>>,
    cache: CacheConfig,
    extra_schemas: Vec<SchemaName>,
    mode: SearchPathMode,
    migrations: TenantMigrations,
    install: bool,
}

impl std::fmt::Debug for TenancyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenancyBuilder")
            .field("custom_resolver", &self.resolver.is_some())
            .field("cache", &self.cache)
            .field("extra_schemas", &self.extra_schemas)
            .field("migrations", &self.migrations.len())
            .field("install", &self.install)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for dyn TenantResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn TenantResolver")
    }
}

impl TenancyBuilder {
    /// The resolver to use instead of the [`RegistryResolver`] over the pool.
    pub fn resolver(mut self, resolver: impl TenantResolver) -> Self {
        self.resolver = Some(Box::new(resolver));
        self
    }

    /// How resolved hosts are cached.
    pub fn cache(mut self, config: CacheConfig) -> Self {
        self.cache = config;
        self
    }

    /// Shared schemas put on every search path after `public`.
    pub fn extra_schemas(mut self, schemas: impl IntoIterator<Item = SchemaName>) -> Self {
        self.extra_schemas = schemas.into_iter().collect();
        self
    }

    /// How the search path reaches the server; [`SearchPathMode::Transaction`] behind
    /// PgBouncer in transaction pooling mode.
    pub fn search_path_mode(mut self, mode: SearchPathMode) -> Self {
        self.mode = mode;
        self
    }

    /// The migrations every new tenant gets.
    pub fn migrations(mut self, migrations: TenantMigrations) -> Self {
        self.migrations = migrations;
        self
    }

    /// Another PostgreSQL database (shard) for tenants. The registry stays on the main pool's
    /// database; new tenants go to the database with the fewest tenants (or the one
    /// [`NewTenant::shard`] names), and every tenant's connections come from its own
    /// database's pool. Migrations, `for_each_tenant` and `doctor` cover every database.
    pub fn shard(mut self, name: impl Into<ShardName>, pool: Pool) -> Self {
        self.databases.add(name.into(), pool);
        self
    }

    /// Keeps this process's host cache coherent with the others: a task holds one `LISTEN`
    /// connection (made from `config`: a direct connection, not through PgBouncer in
    /// transaction mode; no TLS) and forgets the hosts of every registry change announced on
    /// [`CHANNEL`](crate::CHANNEL), whichever process made it. After a reconnect it forgets
    /// everything, since changes may have gone unheard. [`Tenancy::is_listening`] tells
    /// whether it is connected.
    pub fn listen_for_changes(mut self, config: tokio_postgres::Config) -> Self {
        self.listen = Some(config);
        self
    }

    /// The shared migrations, run in `public` by [`Tenancy::migrate`].
    pub fn shared_migrations(mut self, migrations: TenantMigrations) -> Self {
        self.shared = migrations;
        self
    }

    /// An async callback run after each tenant is created, migrated or deleted through the
    /// `Tenancy` (after the change committed), e.g. to seed data or notify someone.
    ///
    /// ```no_run
    /// # fn demo(builder: tenant_schemas::TenancyBuilder) {
    /// use tenant_schemas::TenantEvent;
    /// builder.on_event(|event| async move {
    ///     if let TenantEvent::Created(tenant) = event {
    ///         println!("welcome, {}", tenant.name);
    ///     }
    /// });
    /// # }
    /// ```
    pub fn on_event<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(TenantEvent) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.hooks
            .push(Arc::new(move |event| Box::pin(hook(event))));
        self
    }

    /// Whether [`build`](Self::build) creates the registry tables when missing (default: yes).
    pub fn install_registry(mut self, install: bool) -> Self {
        self.install = install;
        self
    }

    /// Finishes the set-up.
    pub async fn build(self) -> Result<Tenancy> {
        // A migration set that would end its schema's transaction is refused up front.
        self.migrations.validate()?;
        self.shared.validate()?;
        let registry = Registry::over(self.databases.clone())
            .with_migrations(self.migrations)
            .with_shared_migrations(self.shared);
        if self.install {
            registry.install().await?;
        }
        let resolver = self
            .resolver
            .unwrap_or_else(|| Box::new(RegistryResolver::new(self.databases.default().clone())));
        let router = SchemaRouter::over(self.databases)
            .extra_schemas(self.extra_schemas)
            .mode(self.mode)
            .build();
        let by_schema = CoherentCache::new(
            Cache::builder()
                .max_capacity(self.cache.max_capacity)
                .time_to_live(self.cache.negative_ttl)
                .build(),
        );
        let resolver = CachedResolver::with_config(resolver, self.cache);
        let listening = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let listener = self.listen.map(|config| {
            tokio::spawn(crate::listener::listen(
                config,
                crate::listener::Caches {
                    hosts: resolver.clone(),
                    by_schema: by_schema.clone(),
                    listening: listening.clone(),
                },
            ))
        });
        Ok(Tenancy {
            inner: Arc::new(Inner {
                listener,
                listening,
                hooks: self.hooks,
                router,
                resolver,
                by_schema,
                registry,
            }),
        })
    }
}

/// What happened to a tenant, for the hooks of [`TenancyBuilder::on_event`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TenantEvent {
    /// A tenant was created (schema, migrations and registry rows committed).
    Created(TenantRecord),
    /// A tenant's schema was migrated.
    Migrated {
        /// The tenant's schema.
        schema: SchemaName,
        /// The version before.
        from: i32,
        /// The version after.
        to: i32,
    },
    /// A tenant was deleted.
    Deleted(TenantRecord),
}

type EventHook =
    Arc<dyn Fn(TenantEvent) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

impl Tenancy {
    /// Starts the set-up over `pool`.
    pub fn builder(pool: Pool) -> TenancyBuilder {
        TenancyBuilder {
            databases: Databases::new(pool),
            listen: None,
            hooks: Vec::new(),
            shared: TenantMigrations::new(),
            resolver: None,
            cache: CacheConfig::default(),
            extra_schemas: Vec::new(),
            mode: SearchPathMode::Session,
            migrations: TenantMigrations::new(),
            install: true,
        }
    }

    /// The tenant for `host`; [`Error::UnknownHost`] when there is none.
    pub async fn resolve(&self, host: &Host) -> Result<Tenant> {
        self.inner
            .resolver
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
    /// [negative TTL](CacheConfig::negative_ttl)); `None` when there is none. As for hosts,
    /// a lookup that raced an invalidation of the schema is not cached.
    pub async fn tenant_by_schema(&self, schema: &SchemaName) -> Result<Option<Tenant>> {
        let registry = &self.inner.registry;
        self.inner
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
        self.inner
            .listening
            .load(std::sync::atomic::Ordering::Acquire)
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
        &self.inner.resolver
    }

    async fn forget(&self, record: &TenantRecord) {
        session::schema_changed(&record.schema);
        self.inner.by_schema.invalidate(&record.schema).await;
        self.inner.resolver.invalidate_tenant(&record.schema).await;
        for domain in &record.domains {
            if let Ok(host) = Host::parse(domain) {
                self.inner.resolver.invalidate(&host).await;
            }
        }
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
        for hook in &self.inner.hooks {
            hook(event.clone()).await;
        }
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
        self.inner.resolver.invalidate(domain).await;
        Ok(())
    }

    /// Removes a domain from a tenant (see [`Registry::remove_domain`]).
    pub async fn remove_domain(&self, schema: &SchemaName, domain: &Host) -> Result<()> {
        self.inner.registry.remove_domain(schema, domain).await?;
        self.inner.resolver.invalidate(domain).await;
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
