//! Handing out connections bound to a schema.
//!
//! [`SchemaRouter`] holds each database's pool and the search-path policy and hands out
//! [`ConnectionScope`]s. The files of this folder, from the top down:
//!
//! - `builder.rs`: [`SchemaRouterBuilder`], the policy;
//! - `connection.rs`: [`ConnectionScope`], and in `connection/transaction.rs` its
//!   transaction mode, where nothing relies on session state;
//! - `pool.rs`: what the router keeps per database (policy, counters, handoff, learned
//!   parameter types), and how a scope gives its connection back;
//! - `tenant_transaction.rs`: [`TenantTransaction`], a transaction bound to the schema;
//! - `preludes.rs`: transaction mode's preludes, encoded once per schema and settings;
//! - `statement.rs`: the statements the query methods take, and what each prepared one
//!   may do (one type for the scope and the transaction);
//! - `session.rs`: the path memory and schema gates every router of the process shares;
//! - `affinity.rs`: schema-affine checkout.

mod affinity;
mod builder;
mod connection;
mod pool;
mod preludes;
pub(crate) mod session;
mod statement;
mod tenant_transaction;

use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::checkout::{self as protocol, TenantStates};
use crate::databases::Databases;
use crate::error::{Error, Result};
use crate::schema::SchemaName;
use crate::scope;
use crate::tenant::{Tenant, TenantStatus};

pub use builder::SchemaRouterBuilder;
pub use connection::ConnectionScope;
pub use pool::{RouterStats, SearchPathMode};
pub use statement::ToScopedStatement;
pub use tenant_transaction::TenantTransaction;

use pool::RouterPool;

/// Runs `work`, a statement of `schema` (or several, sent as one), recording it in the
/// per-tenant metrics under feature `metrics`.
pub(crate) async fn observed<T>(
    schema: &SchemaName,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    #[cfg(feature = "metrics")]
    {
        let started = std::time::Instant::now();
        let outcome = work.await;
        crate::metrics::statement(schema, started.elapsed(), &outcome);
        outcome
    }
    #[cfg(not(feature = "metrics"))]
    {
        let _ = schema;
        work.await
    }
}

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
    /// Each database (shard) with its own pool and policy.
    databases: Databases<Arc<RouterPool>>,
    /// The registry's tenant states, read at every checkout; `None`: the `Tenant` values'.
    states: Option<TenantStates>,
}

impl SchemaRouter {
    /// A connection for the tenant in scope; [`Error::NoTenantInScope`] outside any scope.
    pub async fn connection(&self) -> Result<ConnectionScope> {
        let tenant = scope::require_tenant()?;
        self.connection_for_tenant(&tenant).await
    }

    /// A connection bound to `tenant`'s schema, on the database (shard) it lives on, in the
    /// tenant's [state](crate::TenantStatus) as the registry has it (see
    /// [`checkout`](crate::checkout): never only as the `Tenant` value says, when the router
    /// has the registry's states): [`Error::TenantNotServed`] for a tenant in maintenance,
    /// suspended or archived; for a read-only tenant, a session whose transactions are
    /// read-only, so writes fail with [`Error::TenantReadOnly`].
    pub async fn connection_for_tenant(&self, tenant: &Tenant) -> Result<ConnectionScope> {
        let admission = self.admit(tenant).await?;
        Ok(checkout(
            self.databases.get(tenant.shard())?,
            tenant.schema(),
            admission.status == TenantStatus::ReadOnly,
            admission.statement_timeout_ms,
            (admission.role.clone(), admission.guard_statements),
        )
        .await?
        .holding(admission.slot))
    }

    /// The state `tenant` is served in: the registry's (when the router has its states) and
    /// the value's, the stricter one winning (see [`checkout`](crate::checkout)), and its
    /// share of the pool under the tenancy's limits.
    async fn admit(&self, tenant: &Tenant) -> Result<protocol::Admission> {
        protocol::admit_tenant(self.states.as_ref(), tenant).await
    }

    /// A connection bound to `schema` on the default database. The shared `public` schema is
    /// served read and write; another schema in the state the registry has for it (when the
    /// router has the registry's states; read and write otherwise), as for
    /// [`connection_for_tenant`](Self::connection_for_tenant); a tenant the registry places
    /// on another database is [`Error::SchemaMissing`].
    ///
    /// Named for what the connection is bound to: a schema by name, where
    /// [`connection_for_tenant`](Self::connection_for_tenant) takes a tenant (with its
    /// database and state) and [`connection`](Self::connection) the tenant in scope.
    pub async fn connection_for_schema(&self, schema: &SchemaName) -> Result<ConnectionScope> {
        let admission = protocol::admit_by_name(self.states.as_ref(), schema).await?;
        Ok(checkout(
            self.databases.default(),
            schema,
            admission.status == TenantStatus::ReadOnly,
            admission.statement_timeout_ms,
            (admission.role.clone(), admission.guard_statements),
        )
        .await?
        .holding(admission.slot))
    }

    /// The registry's tenant states this router reads at every checkout, if it has them.
    #[must_use]
    pub fn tenant_states(&self) -> Option<&TenantStates> {
        self.states.as_ref()
    }

    /// The former name of [`connection_for_schema`](Self::connection_for_schema).
    #[deprecated(note = "use `SchemaRouter::connection_for_schema`")]
    pub async fn connection_for(&self, schema: &SchemaName) -> Result<ConnectionScope> {
        self.connection_for_schema(schema).await
    }

    /// A connection bound to the shared `public` schema.
    pub async fn public(&self) -> Result<ConnectionScope> {
        self.connection_for_schema(&SchemaName::public()).await
    }

    /// The underlying pool. Connections taken from it directly are not bound to any schema;
    /// do not change their `search_path` outside a transaction (`set_config(…, true)` is fine).
    #[must_use]
    pub fn pool(&self) -> &Pool {
        self.databases.default().pool()
    }

    /// How the search path reaches the server.
    #[must_use]
    pub fn mode(&self) -> SearchPathMode {
        self.databases.default().mode()
    }

    /// Whether the router remembers each connection's search path (see the type's docs).
    #[must_use]
    pub fn tracks_search_path(&self) -> bool {
        self.databases.default().tracks_search_path()
    }

    /// Whether a plain query in transaction mode runs in its message's implicit transaction
    /// (see [`SchemaRouterBuilder::implicit_transactions`]); `false` in session mode.
    #[must_use]
    pub fn implicit_transactions(&self) -> bool {
        self.databases.default().in_implicit_transactions()
    }

    /// What the router has done so far on the default database.
    #[must_use]
    pub fn stats(&self) -> RouterStats {
        self.databases.default().stats()
    }
}

/// A connection from `pool`, bound to `schema`; switched already when the path memory
/// knows it is on the schema's path.
async fn checkout(
    pool: &Arc<RouterPool>,
    schema: &SchemaName,
    read_only: bool,
    statement_timeout_ms: Option<u32>,
    (role, guard_statements): (Option<Arc<str>>, bool),
) -> Result<ConnectionScope> {
    let pool::Place {
        path,
        group,
        gate,
        preludes,
    } = pool.place(schema);
    // What the session is set to, as remembered and handed over: the path, whether its
    // transactions are read-only, its statement timeout and its role.
    let key: Arc<str> = if read_only || statement_timeout_ms.is_some() || role.is_some() {
        if read_only && pool.mode() == SearchPathMode::Session {
            crate::databases::note_read_only_session();
        }
        let mut key = path.to_string();
        if read_only {
            key.push_str(session::READ_ONLY_KEY);
        }
        if let Some(ms) = statement_timeout_ms {
            key.push_str(&format!(" (statement timeout {ms} ms)"));
        }
        if let Some(role) = &role {
            key.push_str(&format!(" (role {role})"));
        }
        key.into()
    } else {
        path.clone()
    };
    let (conn, handed_over) = pool
        .get(schema, group, &key)
        .await
        .map_err(|source| Error::pool(schema, source))?;
    // The gate is the group pool's: sightings are kept per group pool, so a group given for
    // the same database that is not (a configuration mistake) never vouches for another's
    // schemas.
    let epoch = gate.epoch();
    if pool.drops_statements() {
        session::statements_dropped(&conn);
    }
    let mut known = if pool.tracks_search_path() {
        session::take_known_path(&conn, &key, &gate, epoch, handed_over)
    } else {
        session::Remembered::default()
    };
    if pool.resets_settings() {
        // Whatever the path: the switch is what resets the session.
        known.on_path = false;
    }
    Ok(ConnectionScope::new(
        conn,
        schema.clone(),
        connection::SessionSettings {
            path,
            key,
            read_only,
            statement_timeout_ms,
            role,
            guard_statements,
            preludes,
        },
        gate,
        known,
        epoch,
        (pool.clone(), group),
    ))
}
