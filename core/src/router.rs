//! Handing out connections bound to a schema.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use tokio_postgres::types::Type;

use crate::connection::ConnectionScope;
use crate::databases::{Databases, ShardName};
use crate::error::{Error, Result};
use crate::schema::{search_path, SchemaName};
use crate::scope;
use crate::session;

/// Owns the pool and the search-path policy, and hands out [`ConnectionScope`]s.
///
/// Cheap to clone. A connection is for the tenant in [scope](crate::scope) (an error outside
/// any scope: the router fails closed), for a schema named explicitly, or for `public` when
/// asked for by name.
///
/// The process remembers which search path each pooled connection was on when a
/// [`ConnectionScope`] released it, and a checkout skips the switch when it finds the
/// connection still there. The memory is shared by every router over the same connections
/// and trusted only when nothing could have changed the session since: the scope ran no SQL
/// that changes session state, nobody else took the connection from the pool in between
/// (a plain `pool.get()` shows in the pool's recycle count), and the schema has not been
/// deleted or announced as changed. It is used only when the pool recycles connections
/// without resetting session state
/// ([`RecyclingMethod::Fast`](deadpool_postgres::RecyclingMethod::Fast) or `Verified`, the
/// usual choices); with `Clean` or a custom recycling SQL every checkout switches.
///
/// ```no_run
/// use tenant_schemas::{scope, SchemaName, SchemaRouter, Tenant};
///
/// # async fn demo(pool: tenant_schemas::deadpool_postgres::Pool) -> tenant_schemas::Result<()> {
/// let router = SchemaRouter::new(pool);
/// let acme = Tenant::new(SchemaName::new("acme")?);
/// let notes = scope::run(acme, async {
///     let db = router.connection().await?; // the tenant in scope
///     db.query("SELECT body FROM notes", &[]).await
/// })
/// .await?;
/// assert!(router.connection().await.is_err()); // no tenant in scope
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SchemaRouter {
    /// Each database (shard) with its own pool and path memory.
    databases: Databases<Arc<RouterInner>>,
}

#[derive(Debug)]
pub(crate) struct RouterInner {
    pub(crate) pool: Pool,
    pub(crate) mode: SearchPathMode,
    /// Schema-affine handoff of returning connections (session mode with tracking).
    pub(crate) handoff: Option<crate::affinity::Handoff>,
    extra_schemas: Vec<SchemaName>,
    /// Whether connections' search paths are remembered across checkouts (see
    /// [`crate::session`]); off when the pool's recycling may reset session state.
    pub(crate) track: bool,
    /// Transaction mode: the parameter types learned per SQL text.
    param_types: Mutex<HashMap<Box<str>, Arc<[Type]>>>,
    pub(crate) stats: Counters,
}

/// How many SQL texts' parameter types a transaction-mode router keeps.
const MAX_PARAM_TYPES: usize = 4096;

impl RouterInner {
    pub(crate) fn param_types(&self, sql: &str) -> Option<Arc<[Type]>> {
        self.param_types
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
            .cloned()
    }

    pub(crate) fn learn_param_types(&self, sql: &str, types: Arc<[Type]>) {
        let mut known = self.param_types.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= MAX_PARAM_TYPES {
            known.clear();
        }
        known.insert(sql.into(), types);
    }

    pub(crate) fn forget_param_types(&self, sql: &str) {
        self.param_types
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sql);
    }
}

/// How the search path reaches the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SearchPathMode {
    /// Set on the connection's session with `SET search_path`, remembered per pooled
    /// connection and skipped when it already matches. For direct connections and PgBouncer
    /// in session pooling mode.
    #[default]
    Session,
    /// Nothing relies on session state: every statement runs in a transaction that begins
    /// with `SET LOCAL search_path` — its own, or the one of
    /// [`ConnectionScope::transaction`]. Statements are prepared inside that transaction
    /// and closed before it ends, so this works behind PgBouncer in transaction pooling
    /// mode (1.18 keeps no prepared statements across transactions) and RDS Proxy.
    Transaction,
}

/// Counters of what the router did, for tests, metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterStats {
    /// Connections handed out.
    pub checkouts: u64,
    /// `search_path` switches sent to the server.
    pub switches: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    checkouts: AtomicU64,
    pub(crate) switches: AtomicU64,
}

/// Builds a [`SchemaRouter`].
#[derive(Debug)]
pub struct SchemaRouterBuilder {
    databases: Databases,
    mode: SearchPathMode,
    affinity: bool,
    extra_schemas: Vec<SchemaName>,
    track: Option<bool>,
}

impl SchemaRouterBuilder {
    /// Another database (shard): tenants whose [`Tenant::shard`](crate::Tenant::shard) names
    /// it get their connections from `pool`.
    pub fn shard(mut self, name: impl Into<ShardName>, pool: Pool) -> Self {
        self.databases.add(name.into(), pool);
        self
    }

    /// The databases to route to, configured once for the router and the registry.
    pub(crate) fn databases(mut self, databases: Databases) -> Self {
        self.databases = databases;
        self
    }

    /// Shared schemas put on the search path after `public`, e.g. one holding extensions.
    pub fn extra_schemas(mut self, schemas: impl IntoIterator<Item = SchemaName>) -> Self {
        self.extra_schemas = schemas.into_iter().collect();
        self
    }

    /// How the search path reaches the server (default: [`SearchPathMode::Session`]).
    pub fn mode(mut self, mode: SearchPathMode) -> Self {
        self.mode = mode;
        self
    }

    /// Whether a connection released on a schema goes straight to a request waiting for that
    /// schema when the pool is exhausted (default: yes; session mode with search-path memory
    /// only). Saves the switch for busy tenants; see BENCHMARKS.md.
    pub fn schema_affinity(mut self, yes: bool) -> Self {
        self.affinity = yes;
        self
    }

    /// Forces the per-connection search-path memory on or off (session mode only).
    ///
    /// By default it is on when the pool's recycling method keeps session state, off
    /// otherwise. Turn it off when something else may change `search_path` on the pool's
    /// connections behind the router's back.
    pub fn track_search_path(mut self, track: bool) -> Self {
        self.track = Some(track);
        self
    }

    /// Finishes the router.
    pub fn build(self) -> SchemaRouter {
        let inner = |pool: &Pool| {
            let track = self.mode == SearchPathMode::Session
                && self
                    .track
                    .unwrap_or_else(|| recycling_keeps_session_state(pool));
            Arc::new(RouterInner {
                track,
                param_types: Mutex::default(),
                handoff: (track && self.affinity).then(crate::affinity::Handoff::default),
                mode: self.mode,
                pool: pool.clone(),
                extra_schemas: self.extra_schemas.clone(),
                stats: Counters::default(),
            })
        };
        SchemaRouter {
            databases: self.databases.map(inner),
        }
    }
}

/// deadpool-postgres keeps its manager's configuration private; its `Debug` output is the
/// only place the recycling method shows. If that output ever changes, this returns false
/// and the router switches on every checkout: slower, never wrong.
fn recycling_keeps_session_state(pool: &Pool) -> bool {
    let manager = format!("{:?}", pool.manager());
    manager.contains("recycling_method: Fast") || manager.contains("recycling_method: Verified")
}

impl SchemaRouter {
    /// A router over `pool` with the default policy: search path `"<schema>", public`.
    pub fn new(pool: Pool) -> Self {
        Self::builder(pool).build()
    }

    /// A builder to set extra shared schemas or the search-path memory.
    pub fn builder(pool: Pool) -> SchemaRouterBuilder {
        SchemaRouterBuilder {
            databases: Databases::new(pool),
            mode: SearchPathMode::Session,
            affinity: true,
            extra_schemas: Vec::new(),
            track: None,
        }
    }

    /// A connection for the tenant in scope; [`Error::NoTenantInScope`] outside any scope.
    pub async fn connection(&self) -> Result<ConnectionScope> {
        let tenant = scope::require_tenant()?;
        self.connection_for_tenant(&tenant).await
    }

    /// A connection bound to `tenant`'s schema, on the database (shard) it lives on.
    pub async fn connection_for_tenant(&self, tenant: &crate::Tenant) -> Result<ConnectionScope> {
        checkout(self.databases.get(tenant.shard())?, tenant.schema()).await
    }

    /// A connection bound to `schema` on the default database.
    pub async fn connection_for(&self, schema: &SchemaName) -> Result<ConnectionScope> {
        checkout(self.databases.default(), schema).await
    }

    /// A connection bound to the shared `public` schema.
    pub async fn public(&self) -> Result<ConnectionScope> {
        self.connection_for(&SchemaName::public()).await
    }

    /// The underlying pool. Connections taken from it directly are not bound to any schema;
    /// do not change their `search_path` outside a transaction (`set_config(…, true)` is fine).
    pub fn pool(&self) -> &Pool {
        &self.databases.default().pool
    }

    /// How the search path reaches the server.
    pub fn mode(&self) -> SearchPathMode {
        self.databases.default().mode
    }

    /// Whether the router remembers each connection's search path (see the type's docs).
    pub fn tracks_search_path(&self) -> bool {
        self.databases.default().track
    }

    /// What the router has done so far on the default database.
    pub fn stats(&self) -> RouterStats {
        let stats = &self.databases.default().stats;
        RouterStats {
            checkouts: stats.checkouts.load(Ordering::Relaxed),
            switches: stats.switches.load(Ordering::Relaxed),
        }
    }
}

/// A connection from `inner`'s pool, bound to `schema`.
async fn checkout(inner: &Arc<RouterInner>, schema: &SchemaName) -> Result<ConnectionScope> {
    let path = search_path(schema, &inner.extra_schemas);
    let gate = session::gate(schema);
    let (conn, handed_over) = match &inner.handoff {
        Some(handoff) => handoff.checkout(&inner.pool, &path).await,
        None => inner.pool.get().await.map(|conn| (conn, false)),
    }
    .map_err(|source| Error::pool(schema, source))?;
    inner.stats.checkouts.fetch_add(1, Ordering::Relaxed);
    let epoch = gate.epoch();
    let known = inner.track
        && session::take_known_path(&conn, &path, &gate, epoch, handed_over)
        && gate.recently_verified(epoch);
    Ok(ConnectionScope::new(
        conn,
        schema.clone(),
        path,
        gate,
        known.then_some(epoch),
        inner.clone(),
    ))
}
