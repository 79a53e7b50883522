//! [`SqlxRouter`]: tenant-bound connections and transactions over a `sqlx::PgPool`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres, Row};
use tenant_schemas::checkout::{DriverCheckout, TenantStates};
use tenant_schemas::{scope, SchemaName, SearchPathMode, Tenant};

use crate::connection::SqlxConnection;
use crate::error::{Error, Result};
use crate::transaction::SqlxTransaction;

/// How many pooled connections a checkout closes, at most, because an earlier user left them
/// in a state that cannot be undone (an open transaction, temporary objects, dropped prepared
/// statements) before it gives up.
const MAX_DISCARDED: usize = 8;

/// Hands out sqlx connections and transactions bound to a tenant's schema.
///
/// Cheap to clone. A connection is for the tenant in [scope](tenant_schemas::scope) (an error
/// outside any scope: the router fails closed), for a schema named explicitly, or for
/// `public` when asked for by name.
///
/// **Every checkout switches.** sqlx hands out a `&mut PgConnection` on which any SQL can run
/// without the library seeing it, so nothing a pooled connection comes back with is trusted:
/// each [`connection`](Self::connection) runs, in one round trip, one statement prepared on
/// the connection (`EXECUTE` of a statement the router prepares by SQL, outside sqlx's
/// statement cache) that sets `search_path` to `"<schema>", public` and
/// `default_transaction_read_only`, and checks that the schema exists, that no transaction
/// block is left open on the connection and that the session holds no temporary objects
/// (PostgreSQL searches them before the path) nor held cursors. `DISCARD ALL` or
/// `DEALLOCATE ALL` drop that statement with sqlx's own: such a connection is not reused either. A connection that fails
/// a check is closed, not reused, and another one is taken. A connection last checked out
/// for another schema has sqlx's prepared statements closed (they carry that schema's column
/// and parameter types). See the crate's docs for why the path is not remembered between
/// checkouts.
///
/// ```no_run
/// use tenant_schemas::{scope, SchemaName, Tenant};
/// use tenant_schemas_sqlx::SqlxRouter;
///
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let router = SqlxRouter::new(pool);
/// let acme = Tenant::new(SchemaName::new("acme")?);
/// let count: i64 = scope::run(acme, async {
///     let mut conn = router.connection().await?; // the tenant in scope
///     let row: (i64,) = sqlx::query_as("SELECT count(*) FROM notes")
///         .fetch_one(&mut *conn)
///         .await?;
///     Ok::<_, Box<dyn std::error::Error>>(row.0)
/// })
/// .await?;
/// assert!(router.connection().await.is_err()); // no tenant in scope
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqlxRouter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    mode: SearchPathMode,
    extra_schemas: Vec<SchemaName>,
    stats: Counters,
    /// The registry's tenant states, read at every checkout.
    states: Option<TenantStates>,
    /// When a [`probe`] last found the server accepting connections: a busy pool then makes
    /// no further probes for [`PROBE_VALID_FOR`] (each would start a server process).
    probed_up: Mutex<Option<Instant>>,
    /// Statements prepared for one schema are kept for the next
    /// ([`SqlxRouterBuilder::shared_statements`]).
    shared_statements: bool,
    /// Session mode: each switch begins with `RESET ALL`
    /// ([`SqlxRouterBuilder::reset_settings`]).
    reset_settings: bool,
}

#[derive(Debug, Default)]
struct Counters {
    checkouts: AtomicU64,
    transactions: AtomicU64,
    discarded: AtomicU64,
    statements_cleared: AtomicU64,
}

/// Counters of what a [`SqlxRouter`] did, for tests, metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqlxStats {
    /// Connections handed out by [`SqlxRouter::connection`] and its siblings.
    pub checkouts: u64,
    /// Transactions begun by [`SqlxRouter::begin`] and its siblings.
    pub transactions: u64,
    /// Pooled connections closed at checkout because an earlier user left them in a state
    /// that could not be undone: an open transaction, temporary objects, prepared statements
    /// dropped behind sqlx's back.
    pub discarded: u64,
    /// Checkouts that closed sqlx's prepared statements of the connection because they were
    /// prepared for another schema (whose column and parameter types may differ).
    pub statements_cleared: u64,
}

/// Builds a [`SqlxRouter`] with a search-path mode or extra shared schemas.
#[derive(Debug)]
#[must_use]
pub struct SqlxRouterBuilder {
    pool: PgPool,
    mode: SearchPathMode,
    extra_schemas: Vec<SchemaName>,
    states: Option<TenantStates>,
    shared_statements: bool,
    /// Session mode: each switch begins with `RESET ALL`
    /// ([`SqlxRouterBuilder::reset_settings`]).
    reset_settings: bool,
}

impl SqlxRouterBuilder {
    /// Keeps the statements sqlx prepared on a connection when the connection changes schema
    /// (opt-in), instead of closing them: for tenants whose tables all have the same shape
    /// (one set of migrations, run to the same version), where it saves a round trip and a
    /// fresh prepare at nearly every checkout when there are many tenants.
    ///
    /// Isolation does not depend on it: PostgreSQL analyses a prepared statement again when
    /// the search path it was prepared under has changed, so a kept statement reads the new
    /// tenant's tables. What it gives up is the guarantee for tenants whose shapes differ (a
    /// rolling migration, a tenant behind): a statement whose result types differ between
    /// two tenants fails with `cached plan must not change result type` (`0A000`), one
    /// whose parameter types no longer fit fails to bind; an error, never another tenant's
    /// rows. Leave it off while a migration that changes column types is rolling out.
    pub fn shared_statements(mut self, keep: bool) -> Self {
        self.shared_statements = keep;
        self
    }

    /// Whether each checkout's switch begins by resetting what an earlier checkout's SQL
    /// left on the pooled session (on by default): `RESET ALL`, `RESET SESSION
    /// AUTHORIZATION`, `RESET ROLE`, in the same message as the switch, so that `SET work_mem
    /// …`, `SET app.user_id …` or `set_config(…, false)` made for one request (one tenant)
    /// never reach the next. The driver does not read the SQL sent through its connections, so it cannot
    /// tell when that is needed. In transaction mode the resets follow `BEGIN READ WRITE`
    /// (`READ ONLY` for a read-only tenant) in the transaction's first message and commit
    /// with it, so they also undo what another client of the pooler left on the server
    /// connection (`DriverCheckout::local_begin`).
    ///
    /// `false` saves what the reset costs: with it, 0.36 and 0.48 of plain sqlx's throughput
    /// with one tenant where `false` gave 0.45 and 0.52 in the same runs; 0.13–0.14 against
    /// 0.14–0.15 with 1,000 tenants (`load_sqlx`, BENCHMARKS.md §13).
    /// Turn it off only where no SQL sent through the router sets anything for the session:
    /// settings made then stay on the pooled connection for whoever is next.
    pub fn reset_settings(mut self, reset: bool) -> Self {
        self.reset_settings = reset;
        self
    }

    /// How the search path reaches the server. [`SearchPathMode::Session`] (the default) for
    /// direct connections; [`SearchPathMode::Transaction`] behind PgBouncer in transaction
    /// pooling mode or RDS Proxy, where only [`SqlxRouter::begin`] (and its siblings) hand
    /// out anything: each transaction begins with `SET LOCAL search_path`, and session-level
    /// connections are refused ([`Error::NotInTransactionMode`]). Build that pool with
    /// `PgConnectOptions::statement_cache_capacity(0)` and run queries with
    /// `.persistent(false)`: PgBouncer 1.18 keeps no prepared statements across
    /// transactions (see the crate's docs). Keep it so with PgBouncer 1.21+ in role mode:
    /// a named statement the pooler keeps on a server connection can be replaced by another
    /// tenant's SQL there (`DriverCheckout::may_share_statements`).
    pub fn mode(mut self, mode: SearchPathMode) -> Self {
        self.mode = mode;
        self
    }

    /// Shared schemas searched after the tenant's schema and `public`, e.g. one holding
    /// extensions.
    pub fn extra_schemas(mut self, schemas: impl IntoIterator<Item = SchemaName>) -> Self {
        self.extra_schemas = schemas.into_iter().collect();
        self
    }

    /// The registry's tenant states
    /// ([`Tenancy::tenant_states`](tenant_schemas::Tenancy::tenant_states)), read at every
    /// checkout as the core's router reads them (see [`tenant_schemas::checkout`]): a tenant
    /// in maintenance, suspended or archived gets no connection ([`Error::TenantNotServed`]),
    /// a read-only one a read-only session, whatever `Tenant` value is in scope. Without
    /// them, a tenant is served in the state its `Tenant` value carries.
    pub fn tenant_states(mut self, states: TenantStates) -> Self {
        self.states = Some(states);
        self
    }

    /// The router.
    #[must_use]
    pub fn build(self) -> SqlxRouter {
        SqlxRouter {
            inner: Arc::new(Inner {
                pool: self.pool,
                mode: self.mode,
                extra_schemas: self.extra_schemas,
                stats: Counters::default(),
                states: self.states,
                probed_up: Mutex::new(None),
                shared_statements: self.shared_statements,
                reset_settings: self.reset_settings,
            }),
        }
    }
}

impl SqlxRouter {
    /// A router over `pool` in [`SearchPathMode::Session`].
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self::builder(pool).build()
    }

    /// A builder, to choose the mode or extra schemas.
    pub fn builder(pool: PgPool) -> SqlxRouterBuilder {
        SqlxRouterBuilder {
            pool,
            mode: SearchPathMode::Session,
            extra_schemas: Vec::new(),
            states: None,
            shared_statements: false,
            reset_settings: true,
        }
    }

    /// The pool. Connections taken from it directly are not bound to any schema: their
    /// statements run wherever their session points.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// How the search path reaches the server.
    #[must_use]
    pub fn mode(&self) -> SearchPathMode {
        self.inner.mode
    }

    /// What the router has done so far.
    #[must_use]
    pub fn stats(&self) -> SqlxStats {
        let c = &self.inner.stats;
        SqlxStats {
            checkouts: c.checkouts.load(Ordering::Relaxed),
            transactions: c.transactions.load(Ordering::Relaxed),
            discarded: c.discarded.load(Ordering::Relaxed),
            statements_cleared: c.statements_cleared.load(Ordering::Relaxed),
        }
    }

    /// A connection for the tenant in scope; [`Error::NoTenantInScope`] outside any scope.
    pub async fn connection(&self) -> Result<SqlxConnection> {
        self.connection_for_tenant(&current_tenant()?).await
    }

    /// A connection bound to `tenant`'s schema, in the state the registry has for it (when
    /// the router has the registry's states; see
    /// [`tenant_states`](SqlxRouterBuilder::tenant_states)): [`Error::TenantNotServed`] for a
    /// tenant not served, a read-only session for a read-only one.
    pub async fn connection_for_tenant(&self, tenant: &Tenant) -> Result<SqlxConnection> {
        let checkout = self.admit(tenant).await?;
        self.connection_checked_out(checkout).await
    }

    /// A connection bound to the shared `public` schema (read and write).
    pub async fn public(&self) -> Result<SqlxConnection> {
        self.connection_for_schema(&SchemaName::public()).await
    }

    /// The former name of [`connection_for_schema`](Self::connection_for_schema).
    #[deprecated(note = "use `SqlxRouter::connection_for_schema`")]
    pub async fn connection_for(&self, schema: &SchemaName) -> Result<SqlxConnection> {
        self.connection_for_schema(schema).await
    }

    /// A connection bound to `schema`: its search path is `"<schema>", public` (plus the
    /// extra schemas) when it is handed out, and the schema exists
    /// ([`Error::SchemaMissing`] otherwise). The tenant's state applies as for
    /// [`connection_for_tenant`](Self::connection_for_tenant); `public` is always served.
    /// Named like
    /// [`SchemaRouter::connection_for_schema`](tenant_schemas::SchemaRouter::connection_for_schema).
    pub async fn connection_for_schema(&self, schema: &SchemaName) -> Result<SqlxConnection> {
        let checkout = DriverCheckout::begin_for_schema(self.inner.states.as_ref(), schema)
            .await
            .map_err(Error::from_core)?;
        self.connection_checked_out(checkout).await
    }

    /// The core's checkout of `tenant`: its state, and the registration with its schema's
    /// gate that deletions and renames honour (see [`tenant_schemas::checkout`]).
    async fn admit(&self, tenant: &Tenant) -> Result<DriverCheckout> {
        DriverCheckout::begin(self.inner.states.as_ref(), tenant)
            .await
            .map_err(Error::from_core)
    }

    async fn connection_checked_out(&self, checkout: DriverCheckout) -> Result<SqlxConnection> {
        if self.inner.mode != SearchPathMode::Session {
            return Err(Error::NotInTransactionMode {
                what: "a session-level connection",
                instead: "use `begin()`: behind a transaction pooler only a transaction keeps its search path",
            });
        }
        let switch = self.session_switch(&checkout);
        let conn = self.checkout(&checkout, &switch).await?;
        self.inner.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        Ok(SqlxConnection::new(conn, checkout))
    }

    /// A transaction for the tenant in scope; [`Error::NoTenantInScope`] outside any scope.
    pub async fn begin(&self) -> Result<SqlxTransaction> {
        self.begin_for_tenant(&current_tenant()?).await
    }

    /// A transaction bound to `schema` (the tenant's state applies as for
    /// [`connection_for_schema`](Self::connection_for_schema)).
    pub async fn begin_for(&self, schema: &SchemaName) -> Result<SqlxTransaction> {
        let checkout = DriverCheckout::begin_for_schema(self.inner.states.as_ref(), schema)
            .await
            .map_err(Error::from_core)?;
        self.begin_checked_out(checkout).await
    }

    /// A transaction bound to `tenant`'s schema, in its state (see
    /// [`connection_for_tenant`](Self::connection_for_tenant); a read-only tenant's
    /// transaction is `READ ONLY`), with the schema checked to exist
    /// ([`Error::SchemaMissing`] otherwise). Works in both modes; behind PgBouncer in
    /// transaction pooling it is the only way in.
    ///
    /// In [`SearchPathMode::Session`] the checkout's switch and checks (one round trip), then
    /// `BEGIN` (a second). In [`SearchPathMode::Transaction`], one round trip: `BEGIN`, `SET
    /// LOCAL search_path TO "<schema>", public` and the checks in one message.
    pub async fn begin_for_tenant(&self, tenant: &Tenant) -> Result<SqlxTransaction> {
        let checkout = self.admit(tenant).await?;
        self.begin_checked_out(checkout).await
    }

    /// A transaction on the schema `checkout` admitted.
    async fn begin_checked_out(&self, checkout: DriverCheckout) -> Result<SqlxTransaction> {
        let schema = checkout.schema().clone();
        let path = self.search_path(&schema);
        let begin = if checkout.read_only() {
            "BEGIN READ ONLY"
        } else {
            "BEGIN"
        };
        let conn = if self.inner.mode == SearchPathMode::Session {
            // The session's path first, committed on its own: a `COMMIT` or `ROLLBACK` the
            // application sends through the transaction then leaves the connection on the
            // tenant's path, never on the one an earlier checkout set.
            let switch = self.session_switch(&checkout);
            let mut conn = self.checkout(&checkout, &switch).await?;
            if let Err(err) = conn.execute(begin).await {
                conn.close_on_drop();
                return Err(Error::Database {
                    action: "beginning a transaction",
                    schema,
                    source: err,
                });
            }
            conn
        } else {
            // Behind a transaction pooler the session is not ours: `SET LOCAL` in the
            // transaction this message begins. That it is this message's (`fresh`: `now()`
            // is the start of the current transaction, `statement_timestamp()` the receipt of
            // this message) is checked: a `BEGIN` inside a block left open would only warn,
            // and join it. What the server connection's last user left — settings (unless
            // `reset_settings(false)`), temporary objects — is undone first
            // (`DriverCheckout::local_begin`). Prepared statements are not checked.
            let sql = format!(
                "{}; {}",
                checkout.local_begin(&path, self.inner.reset_settings),
                checks(&schema)
            );
            self.checkout(&checkout, &Switch::Transaction(sql)).await?
        };
        self.inner
            .stats
            .transactions
            .fetch_add(1, Ordering::Relaxed);
        Ok(SqlxTransaction::new(conn, checkout))
    }

    /// A pooled connection on which `sql` (a switch followed by [`checks`]) succeeded and
    /// found nothing an earlier user left behind; connections that fail a check are closed.
    async fn checkout(
        &self,
        checkout: &DriverCheckout,
        switch: &Switch,
    ) -> Result<PoolConnection<Postgres>> {
        let schema = checkout.schema();
        let session_checks = matches!(switch, Switch::Session { .. });
        for _ in 0..=MAX_DISCARDED {
            let mut conn = self.acquire(schema).await?;
            let row = match switch.run(&mut conn).await {
                Ok(row) => row,
                Err(err) => {
                    // Whatever the session is in now, it is not known: never reuse it.
                    conn.close_on_drop();
                    if has_sqlstate(&err, "25P02") {
                        // A failed transaction block an earlier user left: take another.
                        self.inner.stats.discarded.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    return Err(switch_error(schema, err));
                }
            };
            let fresh = row
                .as_ref()
                .is_some_and(|row| row.try_get("fresh").unwrap_or(false));
            let no_temp = row
                .as_ref()
                .is_some_and(|row| !session_checks || row.try_get("no_temp").unwrap_or(false));
            if let (Some(row), true, true) = (&row, fresh, no_temp) {
                // Registered with the checkout, so a deletion that gives up waiting for it
                // can terminate it; one that already gave up refuses it.
                let pid: i32 = row.try_get("pid").unwrap_or(0);
                if let Err(e) = checkout.attach_backend(pid) {
                    conn.close_on_drop();
                    return Err(Error::from_core(e));
                }
                // Recorded for every checkout, so that a new connection's first statements are
                // known to be this schema's.
                let switched = self.switches_schema(pid, schema, checkout.role());
                let shared = self.inner.shared_statements && checkout.may_share_statements();
                if switched && !checkout.may_share_statements() {
                    // Role mode: whatever another tenant's SQL prepared on the session goes
                    // too, not only sqlx's own statements (closed by name below): a statement
                    // under the name sqlx gives its next one would make that one fail.
                    if let Err(err) = conn.execute("DEALLOCATE ALL").await {
                        conn.close_on_drop();
                        return Err(Error::Database {
                            action: "dropping statements prepared for another tenant",
                            schema: schema.clone(),
                            source: err,
                        });
                    }
                }
                if switched && !shared && conn.cached_statements_size() > 0 {
                    // Statements prepared under another schema's path: their result and
                    // parameter types are that schema's ("cached plan must not change result
                    // type" otherwise). Closed, so that this schema's are prepared afresh. In
                    // role mode always, `shared_statements` or not: another tenant's SQL may
                    // have put its own text under their names (see
                    // `DriverCheckout::may_share_statements`); closing by name drops that too.
                    if let Err(err) = conn.clear_cached_statements().await {
                        conn.close_on_drop();
                        return Err(Error::Database {
                            action: "closing statements prepared for another schema",
                            schema: schema.clone(),
                            source: err,
                        });
                    }
                    self.inner
                        .stats
                        .statements_cleared
                        .fetch_add(1, Ordering::Relaxed);
                }
                return Ok(conn);
            }
            tracing::debug!(
                %schema, fresh, no_temp, statements_lost = row.is_none(),
                "closing a pooled connection an earlier user left with an open transaction, \
                 temporary objects, held cursors or dropped prepared statements"
            );
            self.inner.stats.discarded.fetch_add(1, Ordering::Relaxed);
            conn.close_on_drop();
        }
        Err(Error::Pool {
            schema: schema.clone(),
            source: sqlx::Error::Protocol(format!(
                "{MAX_DISCARDED} pooled connections in a row had to be closed"
            )),
        })
    }

    /// A pooled connection. sqlx retries a refused connection until the pool's
    /// `acquire_timeout` (30 s by default), where the core answers at once: when the pool
    /// has not answered within [`PROBE_AFTER`], whether the server accepts connections at all
    /// is checked ([`probe`]) while the wait goes on, and a refusal ends the wait.
    async fn acquire(&self, schema: &SchemaName) -> Result<PoolConnection<Postgres>> {
        let pool_error = |source| Error::Pool {
            schema: schema.clone(),
            source,
        };
        let acquire = self.inner.pool.acquire();
        tokio::pin!(acquire);
        tokio::select! {
            biased;
            conn = &mut acquire => return conn.map_err(pool_error),
            () = tokio::time::sleep(PROBE_AFTER) => {}
        }
        let up_lately = |probed: &Mutex<Option<Instant>>| {
            probed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some_and(|at| at.elapsed() < PROBE_VALID_FOR)
        };
        if up_lately(&self.inner.probed_up) {
            // The pool is busy, not the server down: no probe per waiting checkout.
            return acquire.await.map_err(pool_error);
        }
        let options = self.inner.pool.connect_options();
        tokio::select! {
            biased;
            conn = &mut acquire => return conn.map_err(pool_error),
            probed = probe(&options) => match probed {
                Ok(()) => {
                    *self
                        .inner
                        .probed_up
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
                }
                Err(e) => {
                    tracing::debug!(%schema, error = %e, "the database refuses connections");
                    return Err(pool_error(sqlx::Error::Io(e)));
                }
            }
        }
        acquire.await.map_err(pool_error)
    }

    /// Records that the pool's connection to backend `pid` is now checked out for `schema`
    /// (in role mode, under `role`: a tenant deleted and made again under its schema's name
    /// has another); whether its statements may have been prepared for another schema or
    /// role (or for one not known). Shared by every router over the pool.
    fn switches_schema(&self, pid: i32, schema: &SchemaName, role: Option<&str>) -> bool {
        let pool_id = Arc::as_ptr(&self.inner.pool.connect_options()) as usize;
        let mut last = PREPARED_FOR
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = last.get_or_insert_with(HashMap::new);
        if last.len() >= MAX_REMEMBERED && !last.contains_key(&(pool_id, pid)) {
            // Forgetting is safe: a connection not known clears its statements.
            last.clear();
        }
        let now = (schema.clone(), role.map(str::to_owned));
        last.insert((pool_id, pid), now.clone()).as_ref() != Some(&now)
    }

    /// The switch of a session-mode checkout: the tenant's path and read-only state, given
    /// as the parameters of the prepared [`SWITCH`] statement (in role mode, as the literals
    /// of a [`switch_select`] of its own).
    fn session_switch(&self, checkout: &DriverCheckout) -> Switch {
        let schema = checkout.schema();
        let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let (path, read_only, quoted) = (
            literal(&self.search_path(schema)),
            literal(if checkout.read_only() { "on" } else { "off" }),
            literal(&schema.quoted()),
        );
        // The settings an earlier checkout's SQL left reset (unless opted out), then the
        // tenant's timeout and role (see `DriverCheckout::session_prefix`), before the checks.
        // After a reset, the tenant's path is set again before the switch statement runs:
        // run on the default path and changing it as it ran, the switch cost 35-40 % of the
        // throughput of a connection that stays with one tenant (BENCHMARKS.md §13).
        let mut prefix = checkout.session_prefix(self.inner.reset_settings);
        if self.inner.reset_settings {
            prefix.push_str(&format!(
                "SET search_path TO {}; ",
                self.search_path(schema)
            ));
        }
        if !checkout.may_share_statements() {
            // Role mode: the switch is not run from a statement prepared by SQL once per
            // connection, which another tenant's SQL could replace under the same name (one
            // that sets the path but not the read-only default, say). Parsed each time.
            return Switch::Session {
                execute: format!("{prefix}{}", switch_select(&path, &read_only, &quoted)),
            };
        }
        Switch::Session {
            execute: format!("{prefix}EXECUTE {}({path}, {read_only}, {quoted})", *SWITCH),
        }
    }

    /// The value of `search_path` for `schema`: `"<schema>", public`, then the extras.
    fn search_path(&self, schema: &SchemaName) -> String {
        let mut path = schema.quoted();
        if !schema.is_public() {
            path.push_str(", public");
        }
        for extra in &self.inner.extra_schemas {
            if extra != schema && !extra.is_public() {
                path.push_str(", ");
                path.push_str(&extra.quoted());
            }
        }
        path
    }
}

/// The schema (and role, in role mode) each pooled connection (its pool's connect options,
/// its backend's process id) was last checked out for, which its sqlx statement cache was prepared under. A connection
/// that closed leaves an entry that its successor with the same process id overwrites at its
/// first checkout, before it prepares anything.
static PREPARED_FOR: Mutex<Option<HashMap<(usize, i32), PreparedFor>>> = Mutex::new(None);

/// A schema and, in role mode, the role a connection was checked out under ([`PREPARED_FOR`]).
type PreparedFor = (SchemaName, Option<String>);

/// How many connections [`PREPARED_FOR`] remembers before it starts afresh.
const MAX_REMEMBERED: usize = 65_536;

/// How long a checkout waits for the pool before it checks whether the server accepts
/// connections ([`probe`]). A free pooled connection or a new one takes far less.
const PROBE_AFTER: Duration = Duration::from_millis(100);

/// How long a probe that found the server up spares the router further probes: under load,
/// waiting checkouts would otherwise each open a connection, and each starts a server
/// process. Checkouts that start waiting within it wait for the pool even if the server
/// went down meanwhile (up to the pool's `acquire_timeout`); the first after it probes again.
const PROBE_VALID_FOR: Duration = Duration::from_secs(1);

/// Whether the server `options` point at accepts connections: a TCP (or Unix-domain socket)
/// connection opened and closed without a byte sent (PostgreSQL logs no such connection).
/// Fails as connecting does when the server is down (refused, or no socket file).
async fn probe(options: &PgConnectOptions) -> std::io::Result<()> {
    let port = options.get_port();
    let socket_dir = options.get_socket().cloned().or_else(|| {
        let host = options.get_host();
        host.starts_with('/').then(|| host.into())
    });
    match socket_dir {
        #[cfg(unix)]
        Some(dir) => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            tokio::net::UnixStream::connect(path).await.map(drop)
        }
        #[cfg(not(unix))]
        Some(_) => Ok(()),
        None => tokio::net::TcpStream::connect((options.get_host(), port))
            .await
            .map(drop),
    }
}

fn current_tenant() -> Result<Tenant> {
    scope::current_tenant().ok_or(Error::NoTenantInScope)
}

/// The checks that follow a transaction-mode switch (`SET LOCAL`), in the same message: the
/// schema exists (an error with `3F000` otherwise), the transaction is the one this message
/// began (`fresh`), and the backend's process id (`pid`, for the checkout's registration with
/// the schema's gate). A session-mode switch runs the same checks and more in its prepared
/// statement ([`prepare_switch`]).
fn checks(schema: &SchemaName) -> String {
    format!(
        "SELECT {check}, \
                pg_catalog.now() = pg_catalog.statement_timestamp() AS fresh, \
                pg_catalog.pg_backend_pid() AS pid",
        check = existence_check(schema),
    )
}

/// How a checkout switches a pooled connection, in one round trip.
enum Switch {
    /// Session mode: `EXECUTE` of the prepared [`SWITCH`] statement with the checkout's
    /// arguments (prepared first, in the same message, on a connection that does not have it).
    Session { execute: String },
    /// Transaction mode: `BEGIN`, `SET LOCAL search_path` and the [`checks`], one simple query.
    Transaction(String),
}

impl Switch {
    /// Runs the switch on `conn`: the row of its checks. [`Self::Session`]: `Ok(None)` when
    /// the connection lost the [`SWITCH`] statement although sqlx has statements cached
    /// (`DISCARD ALL`, `DEALLOCATE ALL`: those are gone too, and sqlx would use them).
    async fn run(
        &self,
        conn: &mut PgConnection,
    ) -> std::result::Result<Option<PgRow>, sqlx::Error> {
        match self {
            Self::Transaction(sql) => conn.fetch_one(sql.as_str()).await.map(Some),
            Self::Session { execute } => match conn.fetch_one(execute.as_str()).await {
                Err(err) if has_sqlstate(&err, "26000") => {
                    if conn.cached_statements_size() > 0 {
                        return Ok(None);
                    }
                    // A new connection (or one whose statements were all closed): the
                    // statement is prepared in the same message as its first execution.
                    let sql = format!("{}; {execute}", prepare_switch());
                    conn.fetch_one(sql.as_str()).await.map(Some)
                }
                other => other.map(Some),
            },
        }
    }
}

/// The name of the prepared statement of a session-mode switch. It is prepared by SQL
/// (`PREPARE`) on each pooled connection, outside sqlx's statement cache, so closing that
/// cache when a connection changes schema leaves it in place; `EXECUTE` of it is parsed
/// faster than the statements it runs, and its plan is kept. The name ends in a number drawn
/// at random once per process, so that no statement an application prepares itself takes its
/// place by chance.
static SWITCH: LazyLock<String> = LazyLock::new(|| {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("tenant_schemas_sqlx_switch_{random:016x}")
});

/// `PREPARE` of the [`SWITCH`] statement: `set_config` of `search_path` (`$1`) and
/// `default_transaction_read_only` (`$2`, `on` or `off`) for the session, then the checks of
/// [`checks`] but the count of prepared statements, for the schema `$3` (quoted).
fn prepare_switch() -> String {
    format!(
        "PREPARE {}(pg_catalog.text, pg_catalog.text, pg_catalog.text) AS {}",
        *SWITCH,
        switch_select("$1", "$2", "$3")
    )
}

/// The query of a session-mode switch, with SQL expressions for its three values: the path,
/// the read-only default (`on` or `off`) and the schema (quoted): the body of the prepared
/// [`SWITCH`] statement (parameters), or a switch of its own (literals, in role mode).
fn switch_select(path: &str, read_only: &str, schema: &str) -> String {
    format!(
        "SELECT pg_catalog.set_config('search_path', {path}, false) IS NOT NULL AS path_set, \
                pg_catalog.set_config('default_transaction_read_only', {read_only}, false) \
                  IS NOT NULL AS read_only_set, \
                {schema}::pg_catalog.regnamespace::pg_catalog.oid::pg_catalog.int8 AS schema_oid, \
                pg_catalog.now() = pg_catalog.statement_timestamp() AS fresh, \
                pg_catalog.pg_my_temp_schema() = 0 \
                  AND NOT EXISTS (SELECT FROM pg_catalog.pg_cursors) AS no_temp, \
                pg_catalog.pg_backend_pid() AS pid"
    )
}

/// Whether `err` is the server's error with SQLSTATE `code`.
fn has_sqlstate(err: &sqlx::Error, code: &str) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some(code))
}

/// A select-list item that fails with `3F000` (invalid_schema_name) when `schema` is missing.
fn existence_check(schema: &SchemaName) -> String {
    // The cast takes an identifier: quoting keeps it exact (the name is validated anyway).
    let quoted = schema.quoted().replace('\'', "''");
    format!("'{quoted}'::pg_catalog.regnamespace::pg_catalog.oid::pg_catalog.int8 AS schema_oid")
}

/// What a failed switch means: a missing schema, or a database error.
fn switch_error(schema: &SchemaName, err: sqlx::Error) -> Error {
    if has_sqlstate(&err, "3F000") {
        return Error::SchemaMissing {
            schema: schema.clone(),
        };
    }
    Error::Database {
        action: "switching search_path",
        schema: schema.clone(),
        source: err,
    }
}
