//! How a [`Tenancy`] is set up: its databases, resolver, cache, search-path policy,
//! migrations, hooks and listener.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use moka::future::Cache;

use super::caches::Caches;
use super::events::{Hooks, TenantEvent};
use super::{listener, Inner, Tenancy};
use crate::checkout::TenantStates;
use crate::connect::ConnectionSettings;
use crate::databases::Databases;
use crate::error::Result;
use crate::migrate::{MigrationSets, TenantMigrations};
use crate::registry::Registry;
use crate::resolve::{
    CacheConfig, CachedResolver, CoherentCache, RegistryResolver, TenantResolver,
};
use crate::router::{SchemaRouter, SearchPathMode};
use crate::schema::SchemaName;
use crate::shard::ShardName;
use crate::tenant::TenantLimits;

/// How long a deletion or rename waits for drivers' connections held for the schema.
const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Builds a [`Tenancy`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct TenancyBuilder {
    databases: Databases,
    resolver: Option<Box<dyn TenantResolver>>,
    cache: CacheConfig,
    extra_schemas: Vec<SchemaName>,
    mode: SearchPathMode,
    pooler_statements: bool,
    reset_settings: bool,
    implicit_transactions: Option<bool>,
    sets: MigrationSets,
    hooks: Hooks,
    listen: Option<ConnectionSettings>,
    install: bool,
    groups: Vec<Pool>,
    citus: Option<bool>,
    grace: Duration,
    limits: TenantLimits,
    roles: Option<crate::roles::TenantRoles>,
    /// The settings each database's pool was made with, where known: what a move's
    /// subscription connects to the source with.
    sources: BTreeMap<ShardName, ConnectionSettings>,
}

impl std::fmt::Debug for TenancyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenancyBuilder")
            .field("custom_resolver", &self.resolver.is_some())
            .field("cache", &self.cache)
            .field("extra_schemas", &self.extra_schemas)
            .field("migrations", &self.sets.tenant.len())
            .field("install", &self.install)
            .finish_non_exhaustive()
    }
}

impl Tenancy {
    /// Connects to the database at `url` the production way and sets everything up with
    /// the defaults: [`builder_from_url`](Self::builder_from_url), then
    /// [`build`](TenancyBuilder::build) (which installs the registry tables when missing).
    ///
    /// ```no_run
    /// # async fn demo() -> tenant_schemas::Result<()> {
    /// let tenancy = tenant_schemas::Tenancy::connect(
    ///     "postgres://app:secret@db.example.com/app?sslmode=verify-full&sslrootcert=/etc/db-ca.crt",
    /// )
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder_from_url(url)?.build().await
    }

    /// Starts the set-up from a connection string (a `postgres://` URL or libpq's
    /// `key=value` form, read by [`ConnectionSettings::from_url`]): a pool with production
    /// defaults ([`ConnectionSettings::pool`]: twice the CPU cores, at least 4 connections;
    /// connect, wait and recycle timeouts; fast recycling) and the change listener
    /// ([`listen_for_changes`](TenancyBuilder::listen_for_changes)), both connecting over TLS
    /// as the string's `sslmode` and `sslrootcert` say. Nothing connects before
    /// [`build`](TenancyBuilder::build).
    ///
    /// The listener needs a direct connection: behind PgBouncer in transaction pooling mode,
    /// give it the database's own address with `listen_for_changes`, or turn it off with
    /// [`without_listener`](TenancyBuilder::without_listener).
    ///
    /// ```no_run
    /// use tenant_schemas::{Tenancy, TenantMigrations};
    ///
    /// # async fn demo() -> tenant_schemas::Result<()> {
    /// let tenancy = Tenancy::builder_from_url("postgres://app@db.example.com/app?sslmode=verify-full")?
    ///     .migrations(TenantMigrations::from_dir("migrations/tenant")?)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder_from_url(url: &str) -> Result<TenancyBuilder> {
        Self::builder_from_settings(ConnectionSettings::from_url(url)?)
    }

    /// [`builder_from_url`](Self::builder_from_url) with the `DATABASE_URL` environment
    /// variable.
    ///
    /// ```no_run
    /// # async fn demo() -> tenant_schemas::Result<()> {
    /// let tenancy = tenant_schemas::Tenancy::builder_from_env()?.build().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder_from_env() -> Result<TenancyBuilder> {
        Self::builder_from_settings(ConnectionSettings::from_env()?)
    }

    /// [`builder_from_url`](Self::builder_from_url) with settings already read (e.g. with
    /// a root certificate or pool size set in code).
    pub fn builder_from_settings(settings: ConnectionSettings) -> Result<TenancyBuilder> {
        Ok(Self::builder(settings.pool()?)
            .replication_source(ShardName::DEFAULT, settings.clone())
            .listen_for_changes(settings))
    }

    /// Starts the set-up over `pool`.
    pub fn builder(pool: Pool) -> TenancyBuilder {
        TenancyBuilder {
            databases: Databases::new(pool),
            resolver: None,
            cache: CacheConfig::default(),
            extra_schemas: Vec::new(),
            mode: SearchPathMode::Session,
            pooler_statements: false,
            reset_settings: false,
            implicit_transactions: None,
            sets: MigrationSets::default(),
            hooks: Hooks::default(),
            listen: None,
            install: true,
            groups: Vec::new(),
            citus: None,
            grace: DEFAULT_GRACE,
            limits: TenantLimits::new(),
            roles: None,
            sources: BTreeMap::new(),
        }
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

    /// Transaction mode: named, cached prepared statements where the pooler keeps them
    /// (PgBouncer 1.21+ with `max_prepared_statements` > 0), detected per connection;
    /// unnamed elsewhere. See
    /// [`SchemaRouterBuilder::pooler_prepared_statements`](crate::SchemaRouterBuilder::pooler_prepared_statements).
    pub fn pooler_prepared_statements(mut self, yes: bool) -> Self {
        self.pooler_statements = yes;
        self
    }

    /// Session mode: every checkout starts from the connection's startup settings, even
    /// those a function or trigger left; see
    /// [`SchemaRouterBuilder::reset_settings`](crate::SchemaRouterBuilder::reset_settings).
    pub fn reset_settings(mut self, yes: bool) -> Self {
        self.reset_settings = yes;
        self
    }

    /// Transaction mode: a plain query runs in its message's implicit transaction (`true`)
    /// or in `BEGIN` … `COMMIT` (`false`); see
    /// [`SchemaRouterBuilder::implicit_transactions`](crate::SchemaRouterBuilder::implicit_transactions).
    /// Without this call it is on for a Citus coordinator ([`citus`](Self::citus), or
    /// detected while installing the registry), where a transaction block costs round trips
    /// to the worker, and off elsewhere.
    pub fn implicit_transactions(mut self, yes: bool) -> Self {
        self.implicit_transactions = Some(yes);
        self
    }

    /// Further pools to the default database, each a group of connections that tenants are
    /// spread over; see [`SchemaRouterBuilder::connection_groups`]. The registry, migrations
    /// and the listener use the first pool only.
    ///
    /// [`SchemaRouterBuilder::connection_groups`]: crate::SchemaRouterBuilder::connection_groups
    pub fn connection_groups(mut self, more: impl IntoIterator<Item = Pool>) -> Self {
        self.groups.extend(more);
        self
    }

    /// The migrations every new tenant gets.
    pub fn migrations(mut self, migrations: TenantMigrations) -> Self {
        self.sets.tenant = migrations;
        self
    }

    /// Another PostgreSQL database (shard) for tenants. The registry stays on the main pool's
    /// database; new tenants go to the database with the fewest tenants (or the one
    /// [`NewTenant::shard`](crate::NewTenant::shard) names), and every tenant's connections
    /// come from its own database's pool. Migrations, `for_each_tenant` and `doctor` cover
    /// every database. The name [`DEFAULT_SHARD`](crate::DEFAULT_SHARD) is the main pool's
    /// database: a shard given that name is ignored.
    pub fn shard(mut self, name: impl Into<ShardName>, pool: Pool) -> Self {
        self.databases.add(name.into(), pool);
        self
    }

    /// [`shard`](Self::shard) with a pool made from a connection string the way
    /// [`Tenancy::builder_from_url`] makes the main one (production defaults, TLS as its
    /// `sslmode` says).
    ///
    /// ```no_run
    /// # async fn demo() -> tenant_schemas::Result<()> {
    /// let tenancy = tenant_schemas::Tenancy::builder_from_env()?
    ///     .shard_url("eu", "postgres://app@eu.db.example.com/app?sslmode=verify-full")?
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn shard_url(self, name: impl Into<ShardName>, url: &str) -> Result<Self> {
        let settings = ConnectionSettings::from_url(url)?;
        let name = name.into();
        let pool = settings.pool()?;
        Ok(self
            .replication_source(name.clone(), settings)
            .shard(name, pool))
    }

    /// How the database `shard` is reached for a [move](Tenancy::move_to_shard) of a tenant
    /// away from it: the target database's subscription connects to it with these settings
    /// (host, port, user, password, database, sslmode, sslrootcert), from the target
    /// *server*. Set by [`Tenancy::builder_from_url`] (the default database) and
    /// [`shard_url`](Self::shard_url); without it a move connects as the source server
    /// describes its own connection (address or socket directory, port, user, database)
    /// without a password, which needs `trust` or a password file on the target server.
    pub fn replication_source(
        mut self,
        shard: impl Into<ShardName>,
        settings: impl Into<ConnectionSettings>,
    ) -> Self {
        self.sources.insert(shard.into(), settings.into());
        self
    }

    /// Keeps this process's host cache coherent with the others: a task holds one `LISTEN`
    /// connection (made from `settings` — a [`ConnectionSettings`] or a `tokio_postgres`
    /// `Config` — over TLS as its sslmode says, like the pools; a direct connection, not
    /// through PgBouncer in transaction mode) and forgets the hosts of every registry change
    /// announced on [`CHANNEL`](crate::CHANNEL), whichever process made it. After a
    /// reconnect it forgets everything, since changes may have gone unheard.
    /// [`Tenancy::is_listening`] tells whether it is connected. [`Tenancy::builder_from_url`]
    /// turns it on with the URL's settings.
    pub fn listen_for_changes(mut self, settings: impl Into<ConnectionSettings>) -> Self {
        self.listen = Some(settings.into());
        self
    }

    /// No change listener (see [`listen_for_changes`](Self::listen_for_changes)), e.g. for a
    /// short-lived process, or behind PgBouncer in transaction mode with no direct address.
    pub fn without_listener(mut self) -> Self {
        self.listen = None;
        self
    }

    /// The shared migrations, run in `public` by [`Tenancy::migrate`].
    pub fn shared_migrations(mut self, migrations: TenantMigrations) -> Self {
        self.sets.shared = migrations;
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
        self.hooks.add(hook);
        self
    }

    /// Whether [`build`](Self::build) creates the registry tables when missing (default: yes).
    pub fn install_registry(mut self, install: bool) -> Self {
        self.install = install;
        self
    }

    /// Whether the default database is a Citus coordinator on which tenants are created as
    /// distributed schemas (see [`citus`](crate::citus)). Without this call it is detected:
    /// Citus is on when the `citus` extension is installed in the default database (looked
    /// up by [`build`](Self::build) while installing the registry, or on first use).
    pub fn citus(mut self, on: bool) -> Self {
        self.citus = Some(on);
        self
    }

    /// How long [`Tenancy::delete_tenant`] and [`Tenancy::rename_schema`] wait for
    /// connections that a driver without statement hooks (tenant-schemas-sqlx) checked out
    /// for the schema before they terminate those connections' backends
    /// (`pg_terminate_backend`), so that a connection held across the change can afterwards
    /// reach nothing (default: 5 s). See [`checkout`](crate::checkout). The core's own
    /// connections need no grace: their statements wait for the change and then fail with
    /// [`Error::SchemaMissing`](crate::Error::SchemaMissing).
    pub fn held_connection_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How much of the pool one tenant may take at a time (default: no limit): at most
    /// [`max_connections`](TenantLimits::max_connections) checked out for a tenant through
    /// every router and driver of this tenancy in this process; more checkouts of that
    /// tenant wait in their order of arrival, *outside* the pool's own queue, so a tenant
    /// flooding slow requests holds at most its limit and the other tenants' checkouts do not
    /// queue behind its backlog. A checkout that cannot wait
    /// ([`max_waiting`](TenantLimits::max_waiting), [`max_wait`](TenantLimits::max_wait)) is
    /// [`Error::TenantBusy`](crate::Error::TenantBusy): 503 with `Retry-After` in the
    /// adapters. The shared `public` schema asked for by name, the library's own work
    /// (migrations, registry) and routers without the tenancy's
    /// [`TenantStates`](crate::checkout::TenantStates) are not limited.
    ///
    /// Keep `max_connections` below the pool size, or the limit shares nothing. Every
    /// connection held counts: a handler that holds one of a tenant's connections and asks
    /// for a second waits for the others to end like any checkout.
    pub fn tenant_limits(mut self, limits: TenantLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Role mode (off by default): each tenant gets its own `NOLOGIN` role, set with every
    /// switch, so that PostgreSQL itself refuses a tenant's statements naming another
    /// tenant's schema (`permission denied`). See [`TenantRoles`](crate::TenantRoles) for
    /// what it sets up and what it refuses.
    ///
    /// The login role of the pools must be able to create roles (`CREATEROLE`, or a
    /// superuser). Tenants created before role mode was turned on are refused
    /// ([`Error::NoTenantRole`](crate::Error::NoTenantRole)) until
    /// [`Tenancy::sync_roles`](crate::Tenancy::sync_roles) (`tenant-schemas roles sync`)
    /// gives them one.
    pub fn tenant_roles(mut self, roles: crate::roles::TenantRoles) -> Self {
        self.roles = Some(roles);
        self
    }

    /// Finishes the set-up.
    pub async fn build(self) -> Result<Tenancy> {
        // A migration set that would end its schema's transaction is refused up front.
        self.sets.tenant.validate()?;
        self.sets.shared.validate()?;
        // A root certificate that cannot be read is an error now, not a listener retrying.
        let listen = match self.listen {
            Some(settings) => Some((settings.connect_config(), settings.tls_connector()?)),
            None => None,
        };
        let mut registry = Registry::over(self.databases.clone(), self.sets);
        if let Some(on) = self.citus {
            registry.citus = crate::registry::CitusMode::fixed(on);
        }
        registry.roles = self.roles.map(Arc::new);
        if self.install {
            registry.install().await?;
            registry.install_roles().await?;
            registry.is_citus().await?;
            registry.load_shared_names().await?;
        } else if let Err(e) = registry.load_shared_names().await {
            // A tool that only reads says what is wrong with the database when it reads.
            tracing::debug!(error = %e, "shared names not read");
        }
        let implicit_transactions = match self.implicit_transactions {
            Some(yes) => yes,
            None => self.citus.unwrap_or(false) || (self.install && registry.is_citus().await?),
        };
        let resolver = self
            .resolver
            .unwrap_or_else(|| Box::new(RegistryResolver::new(self.databases.default().clone())));
        let caches = Caches {
            hosts: CachedResolver::with_config(resolver, self.cache),
            by_schema: CoherentCache::new(
                Cache::builder()
                    .max_capacity(self.cache.max_capacity)
                    .time_to_live(self.cache.negative_ttl)
                    .build(),
            ),
        };
        // Every checkout of the router reads the tenant's state from the registry, through
        // the by-schema cache the listener keeps coherent.
        let states = TenantStates::new(caches.by_schema.clone(), registry.clone(), self.limits);
        let router = SchemaRouter::over(self.databases)
            .extra_schemas(self.extra_schemas)
            .mode(self.mode)
            .pooler_prepared_statements(self.pooler_statements)
            .reset_settings(self.reset_settings)
            .implicit_transactions(implicit_transactions)
            .connection_groups(self.groups)
            .tenant_states(states.clone())
            .build();
        let listening = Arc::new(AtomicBool::new(false));
        let listener = listen.map(|(config, tls)| {
            tokio::spawn(listener::listen(
                config,
                tls,
                caches.clone(),
                listening.clone(),
            ))
        });
        Ok(Tenancy {
            inner: Arc::new(Inner {
                listener,
                listening,
                hooks: self.hooks,
                router,
                caches,
                registry,
                states,
                grace: self.grace,
                sources: self.sources,
                usage: tokio::sync::Mutex::new(None),
            }),
        })
    }
}
