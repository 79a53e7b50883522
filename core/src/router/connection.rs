//! A pooled connection bound to one schema.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use deadpool_postgres::{ClientWrapper, Object};
use futures_util::future::join;
use tokio::sync::OwnedRwLockReadGuard;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Prelude, Row, SimpleQueryMessage, Statement};

use super::pool::{RouterPool, SearchPathMode};
use super::preludes::Preludes;
use super::session::{self, Gate, Remembered};
use super::statement::{PreparedEffects, Source, ToScopedStatement};
use super::tenant_transaction::TenantTransaction;
use crate::checkout::{begin_access, DriverCheckout};
use crate::error::{Error, Result};
use crate::schema::SchemaName;
use crate::sql::{self, Effects};
use crate::tenant::TenantStatus;

mod transaction;

/// A pooled connection bound to one schema: every statement it runs sees the search path
/// `"<schema>", public` (plus the router's extra schemas), or does not run.
///
/// Get one from [`SchemaRouter`](crate::SchemaRouter). The search path is switched lazily:
/// when the connection is not known to be on the schema already, the switch is sent in the
/// same round trip as the first statement's preparation. The switch also checks that the
/// schema exists ([`Error::SchemaMissing`] otherwise: PostgreSQL would silently skip a
/// missing schema and resolve every name in `public`). Until a switch has succeeded, no
/// statement runs, so a failed or cancelled switch cannot send a statement to the schema
/// the connection was on before.
///
/// What the scope guarantees, and what it does not:
///
/// - Every call (`query`, `execute`, `batch_execute`, …) starts on the tenant's path. SQL
///   that changes session state (`SET`, `RESET`, `DISCARD`, `set_config`, `DO`, `CALL`,
///   transaction control …) is recognised in the text; after it the connection is switched
///   again before the next call and is not trusted by the next checkout. Only the rest of
///   the same SQL text runs under whatever that text set.
/// - SQL that opens or ends transactions (`BEGIN`, `COMMIT` …) outside
///   [`transaction`](Self::transaction), and any use of [`client`](Self::client), make the
///   connection close when the scope is dropped instead of returning to the pool: it may be
///   left inside a transaction block whose rollback would undo a later switch.
/// - While a deletion of the schema through [`Tenancy`](crate::Tenancy) runs in this
///   process, statements for it wait, then fail with [`Error::SchemaMissing`].
///
/// The query methods take SQL text (prepared once per connection and cached) or a
/// [`Statement`] from [`ConnectionScope::prepare`]. For the rest of the tokio-postgres API
/// use [`ConnectionScope::client`].
pub struct ConnectionScope {
    /// The tenant's share of the pool under its limits, released with the connection.
    slot: Option<crate::checkout::Slot>,
    /// Always `Some` until dropped; `Drop` takes it out to discard a connection left inside
    /// an unfinished transaction.
    conn: Option<Object>,
    schema: SchemaName,
    path: Arc<str>,
    /// What the session is set to, as the path memory and the handoff know it: the path,
    /// marked when the session is read-only and with the tenant's `statement_timeout`.
    key: Arc<str>,
    /// The tenant is read-only: its sessions' (or, in transaction mode, its transactions')
    /// writes fail.
    read_only: bool,
    /// The tenant's sessions' (or transactions') `statement_timeout` in milliseconds, if it
    /// has one.
    statement_timeout_ms: Option<u32>,
    /// Role mode: the tenant's role (quoted), set with every switch; SQL that could leave
    /// it is refused.
    role: Option<Arc<str>>,
    /// The tenancy gives its tenants roles and keeps no statements across tenants:
    /// statements prepared while another schema's checkout used the connection are dropped
    /// (see [`statements_trusted`](Self::statements_trusted)).
    guard_statements: bool,
    /// Transaction mode's preludes for the schema (see [`Preludes`]).
    preludes: Arc<Preludes>,
    gate: Arc<Gate>,
    /// Transaction mode: held by each of the scope's transactions from its `BEGIN` to its
    /// end. Calls of one scope made at once would otherwise interleave on the connection: one
    /// call's `COMMIT` ending the transaction another call's statement was about to run in,
    /// which then ran in autocommit on the session's path and role, or one call's failure
    /// rolling back another's write already reported done.
    calls: tokio::sync::Mutex<()>,
    /// The gate epoch under which the path was last set and the schema seen to exist;
    /// [`NOT_ON_PATH`] when the next statement must switch first.
    verified: AtomicU64,
    /// How many times the path was forgotten: a switch marks the path set only if no
    /// forgetting came between its sending and its answer (see
    /// [`mark_on_path`](Self::mark_on_path)).
    forgotten: AtomicU64,
    /// At least as many statements as the connection's cache holds ([`UNCOUNTED`]: not
    /// known yet). Kept instead of asking the cache, whose count walks all its entries.
    statements: AtomicUsize,
    /// Transaction mode: a statement's transaction is open (BEGIN sent, COMMIT/ROLLBACK not
    /// yet answered). If the scope is dropped then (a cancelled request), the connection is
    /// closed instead of going back to the pool half-way through a transaction.
    open_transaction: AtomicBool,
    /// The raw client was handed out, or user SQL controlled transactions or created
    /// session-lifetime objects (temporary tables): the session may be in any state. The
    /// path is never trusted again and the connection is closed on drop.
    untrusted: AtomicBool,
    /// Session mode: user SQL gave the session settings beyond those a switch sets (`SET
    /// work_mem …`, `SET app.token …`): kept for the rest of this scope; when it lets go of
    /// the connection, the next switch (whoever's) resets them first.
    left_settings: AtomicBool,
    /// The checkout's first switch resets the session whatever it holds (the router's
    /// [`reset_settings`](crate::SchemaRouterBuilder::reset_settings)); later switches of
    /// the same scope keep what the scope itself set.
    reset_pending: AtomicBool,
    /// The session's transactions are known to begin writable: its read-only default was
    /// left off by the last switch that committed on it (this scope's, or a writer's that
    /// released it with nothing but this library using it since). A writer's statement may
    /// then travel behind its switch although the router has served read-only tenants (see
    /// [`switches_in_prelude`](Self::switches_in_prelude)).
    writable: AtomicBool,
    /// No switch of this scope has committed yet: the next one drops the temporary tables
    /// the connection's last user left, with `reset_settings` all of `LEFT_OBJECTS`
    /// (temporary tables, held cursors, sequence state).
    first_switch: AtomicBool,
    /// What each statement prepared through [`prepare`](Self::prepare) may do: applied
    /// when it runs.
    prepared: PreparedEffects,
    /// The schema's use of the connection was recorded for the statement cache's eviction.
    noted: AtomicBool,
    /// Transaction mode with pooler statements: whether the connection's pooler keeps named
    /// statements ([`POOLER_UNKNOWN`] until read from the connection's memory or asked).
    pooler_keeps: AtomicU8,
    /// Held from [`transaction`](Self::transaction) until the scope is dropped, so a deletion
    /// of the schema waits for the transaction.
    transaction_gate: Option<OwnedRwLockReadGuard<()>>,
    /// The router's state for the connection's database, where switches are counted and the
    /// connection is given back.
    pool: Arc<RouterPool>,
    /// The connection group the connection came from.
    group: usize,
    /// Once the raw client was handed out: the checkout registered with the schema's gate
    /// for the rest of the scope's life, as a driver's is (what runs on the client is out of
    /// sight), so a deletion or rename waits for it, then terminates its backend.
    raw_client: OnceLock<DriverCheckout>,
}

/// What a checkout's session is set to: the search path, the key the path memory and the
/// handoff know it by, whether its transactions are read-only, its `statement_timeout` and
/// (role mode) its role, quoted.
pub(crate) struct SessionSettings {
    pub(crate) path: Arc<str>,
    pub(crate) key: Arc<str>,
    pub(crate) read_only: bool,
    pub(crate) statement_timeout_ms: Option<u32>,
    pub(crate) role: Option<Arc<str>>,
    /// The tenancy gives its tenants roles and keeps no statements across tenants (see
    /// [`ConnectionScope::statements_trusted`]).
    pub(crate) guard_statements: bool,
    /// Transaction mode's preludes for the schema, kept by its place.
    pub(crate) preludes: Arc<Preludes>,
}

const NOT_ON_PATH: u64 = u64::MAX;

/// [`ConnectionScope::pooler_keeps`]: not known yet, yes, no.
const POOLER_UNKNOWN: u8 = 0;
const POOLER_KEEPS: u8 = 1;
const POOLER_DOES_NOT_KEEP: u8 = 2;

const UNCOUNTED: usize = usize::MAX;

/// What makes the current transaction read-only, whatever the session's default says: a
/// read-only tenant's statements run behind it (see [`ConnectionScope::alone`]). A function
/// call rather than `SET LOCAL`, which PostgreSQL warns about outside a transaction block.
const READ_ONLY_NOW: &str = "SELECT pg_catalog.set_config('transaction_read_only', 'on', true)";

/// [`READ_ONLY_NOW`] ahead of a read-only tenant's simple query, in its implicit transaction
/// block (one statement more in the messages [`ConnectionScope::simple_query`] returns,
/// taken out again).
const READ_ONLY_NOW_SIMPLE: &str = "SET LOCAL transaction_read_only TO on; ";

/// How many statements a connection keeps prepared (over all schemas) before the coldest
/// schemas' are closed: the server holds a plan for each.
const MAX_CACHED_STATEMENTS: usize = 2048;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// What a query method runs: a prepared statement (session mode) or SQL text with the
/// parameter types already learned for it (transaction mode: an unnamed statement, so
/// nothing named outlives the transaction).
#[derive(Clone)]
enum Target<'a> {
    Prepared(Statement),
    Typed(&'a str, Arc<[Type]>),
    /// A prepared statement run behind the switch in the same implicit transaction (session
    /// mode; see [`ConnectionScope::run_switching`]).
    After(Arc<Prelude>, Statement),
    /// [`Typed`](Self::Typed) behind a prelude that begins its transaction (transaction
    /// mode; see [`ConnectionScope::local_transaction_after`]).
    TypedAfter(Arc<Prelude>, &'a str, Arc<[Type]>),
}

/// What runs behind a session-mode switch, in its message
/// ([`ConnectionScope::run_switching`]).
enum Behind<'a> {
    /// A statement prepared on the connection for this schema.
    Cached(Statement),
    /// Text with the parameter types learned for it, unnamed (role mode, the connection's
    /// statements dropped by the switch: see [`ConnectionScope::statements_trusted`]).
    Typed(&'a str, Arc<[Type]>),
}

impl<'a> Behind<'a> {
    fn after(&self, prelude: Arc<Prelude>) -> Target<'a> {
        match self {
            Self::Cached(stmt) => Target::After(prelude, stmt.clone()),
            Self::Typed(sql, types) => Target::TypedAfter(prelude, sql, types.clone()),
        }
    }
}

fn typed<'a>(params: Params<'a>, types: &[Type]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().copied().zip(types.iter().cloned()).collect()
}

/// What running a [`Statement`] the scope did not prepare itself may do: anything. It may
/// have been prepared on a [`TenantTransaction`], by another scope on the same connection, or
/// outside the library, from SQL the scope never read.
const UNKNOWN_STATEMENT: Effects = Effects {
    session: true,
    transaction_control: true,
    drops_prepared: false,
    session_objects: true,
    escapes_read_only: true,
    sets: true,
    leaves_role: true,
    session_settings: true,
    own_transaction: true,
    runs_unseen: true,
    // Not assumed: every connection of the process would verify its schema again after
    // each such statement. A schema dropped by one is noticed within a second.
    changes_schemas: false,
};

/// The operation [`ConnectionScope::with_statement`] runs for the query family: the
/// client's method `$prepared` on a prepared statement, `$after` on one behind a switch, or
/// `$typed` on text with the parameter types learned for it (transaction mode), `$typed_after`
/// behind the `BEGIN` and the switch.
macro_rules! on_target {
    ($client:ident, $params:ident, $prepared:ident, $after:ident, $typed:ident, $typed_after:ident) => {
        |target| async move {
            match target {
                Target::Prepared(stmt) => $client.$prepared(&stmt, $params).await,
                Target::After(prelude, stmt) => $client.$after(&prelude, &stmt, $params).await,
                Target::Typed(sql, types) => $client.$typed(sql, &typed($params, &types)).await,
                Target::TypedAfter(prelude, sql, types) => {
                    $client
                        .$typed_after(&prelude, sql, &typed($params, &types))
                        .await
                }
            }
        }
    };
}

impl ConnectionScope {
    pub(crate) fn new(
        conn: Object,
        schema: SchemaName,
        SessionSettings {
            path,
            key,
            read_only,
            statement_timeout_ms,
            role,
            guard_statements,
            preludes,
        }: SessionSettings,
        gate: Arc<Gate>,
        known: Remembered,
        epoch: u64,
        (pool, group): (Arc<RouterPool>, usize),
    ) -> Self {
        Self {
            slot: None,
            conn: Some(conn),
            schema,
            path,
            key,
            read_only,
            statement_timeout_ms,
            role,
            guard_statements,
            preludes,
            gate,
            calls: tokio::sync::Mutex::new(()),
            verified: AtomicU64::new(if known.on_path { epoch } else { NOT_ON_PATH }),
            forgotten: AtomicU64::new(0),
            statements: AtomicUsize::new(known.statements.unwrap_or(UNCOUNTED)),
            open_transaction: AtomicBool::new(false),
            untrusted: AtomicBool::new(false),
            left_settings: AtomicBool::new(false),
            reset_pending: AtomicBool::new(pool.resets_settings()),
            writable: AtomicBool::new(known.writable),
            first_switch: AtomicBool::new(true),
            prepared: PreparedEffects::default(),
            noted: AtomicBool::new(false),
            pooler_keeps: AtomicU8::new(POOLER_UNKNOWN),
            transaction_gate: None,
            pool,
            group,
            raw_client: OnceLock::new(),
        }
    }

    /// Holds `slot` (the tenant's share of the pool) as long as the connection.
    pub(crate) fn holding(mut self, slot: Option<crate::checkout::Slot>) -> Self {
        self.slot = slot;
        self
    }

    fn conn(&self) -> &Object {
        self.conn
            .as_ref()
            .expect("the connection is only taken out on drop")
    }

    fn transaction_mode(&self) -> bool {
        self.pool.mode() == SearchPathMode::Transaction
    }

    /// The schema this connection is bound to.
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// The search path its statements run under, e.g. `"acme", public`.
    pub fn search_path(&self) -> &str {
        &self.path
    }

    /// Whether the connection is known to be on the path, with the schema seen to exist
    /// since the last change announced for it.
    fn on_path(&self) -> bool {
        if self.untrusted.load(Ordering::Acquire) {
            return false;
        }
        let epoch = self.gate.epoch();
        self.verified.load(Ordering::Acquire) == epoch && self.gate.recently_verified(epoch)
    }

    /// Marks the path unknown; returns the count of forgettings [`mark_on_path`] compares
    /// with (this one included).
    ///
    /// [`mark_on_path`]: Self::mark_on_path
    fn forget_path(&self) -> u64 {
        let forgotten = self.forgotten.fetch_add(1, Ordering::SeqCst) + 1;
        self.verified.store(NOT_ON_PATH, Ordering::SeqCst);
        forgotten
    }

    /// Marks the connection on the path, verified under `epoch`, after a switch sent when
    /// [`forget_path`](Self::forget_path) returned `forgotten` — unless the path was
    /// forgotten since. A switch's answer can be read after a later call on the same scope
    /// (futures polled together) ran SQL that changed the session: marking the path set
    /// then would trust a path the server no longer has. The count is read again after the
    /// mark, so a forgetting racing with it always wins.
    fn mark_on_path(&self, epoch: u64, forgotten: u64) {
        if self.forgotten.load(Ordering::SeqCst) != forgotten {
            return;
        }
        self.verified.store(epoch, Ordering::SeqCst);
        if self.forgotten.load(Ordering::SeqCst) != forgotten {
            self.verified.store(NOT_ON_PATH, Ordering::SeqCst);
        }
    }

    /// Switches the search path now if it is not known to be set, without running anything
    /// else. In transaction mode there is no session search path to set: it does nothing.
    pub async fn ensure_search_path(&self) -> Result<()> {
        if self.transaction_mode() {
            return Ok(());
        }
        let _entered = self.gate.enter(&self.schema).await?;
        self.ensure_path().await
    }

    async fn ensure_path(&self) -> Result<()> {
        if self.on_path() {
            return Ok(());
        }
        self.switch().await
    }

    /// The statement that makes sure the schema exists, run with every switch: it fails
    /// with `invalid_schema_name` (3F000) when it does not, which rolls back the switch it
    /// is sent with.
    fn existence_check(&self) -> String {
        crate::schema::existence_check(&self.schema)
    }

    /// Sends the switch. Its message is written on this future's first poll, so it reaches
    /// the server before any request of a future polled after it: what
    /// [`prepare`](Self::prepare) relies on to pipeline a statement behind the switch.
    ///
    /// The switch is a plain `SET search_path TO "<schema>", public` (the path holds only
    /// validated, quoted identifiers) followed, in the same implicit transaction, by the
    /// existence check. A utility `SET` is neither planned nor kept in the plan cache,
    /// whereas a prepared `set_config` is re-planned on every switch (see BENCHMARKS.md).
    async fn switch(&self) -> Result<()> {
        self.switch_checking(false).await
    }

    /// [`switch`](Self::switch), checking the schema's existence when `force`d or when it
    /// was not seen to exist a moment ago (and announced as changed since): the check costs
    /// a planned statement.
    async fn switch_checking(&self, force: bool) -> Result<()> {
        let forgotten = self.forget_path();
        let epoch = self.gate.epoch();
        self.pool.count_switch();
        tracing::trace!(schema = %self.schema, path = %self.path, "switching search_path");
        let check = force || !self.gate.recently_verified(epoch);
        let (mut sql, reset) = self.session_settings();
        if check {
            self.pool.count_existence_check();
            sql.push_str("; ");
            sql.push_str(&self.existence_check());
        }
        let mut switched = self.conn().batch_execute(&sql).await;
        if matches!(&switched, Err(e) if cancelled_reset(reset, e)) {
            tracing::debug!(schema = %self.schema, "a switch's reset was cancelled; once more");
            switched = self.conn().batch_execute(&sql).await;
        }
        switched.map_err(|e| self.switch_error(e))?;
        if check {
            self.gate.mark_verified(epoch);
        }
        self.switched(reset);
        self.mark_on_path(epoch, forgotten);
        Ok(())
    }

    /// What a switch sets: the search path and, once the router has served a read-only
    /// tenant, whether the session's transactions are read-only; one message. And whether it
    /// resets the settings a tenant's SQL left on the session (`RESET ALL` first).
    fn session_settings(&self) -> (String, bool) {
        let (statements, reset) = self.session_statements();
        (statements.join("; "), reset)
    }

    /// The statements of [`session_settings`](Self::session_settings), in order.
    fn session_statements(&self) -> (Vec<String>, bool) {
        let mut statements = Vec::with_capacity(9);
        // Settings a scope's SQL left (see `left_settings`), or at the checkout's first switch
        // any a function may have left (`reset_pending`): reset before the rest, which `RESET
        // ALL` would undo (the role excepted, which it does not touch).
        let pending = self.reset_pending.load(Ordering::Acquire);
        let reset = pending || crate::databases::settings_left(self.conn());
        if reset {
            // `SET SESSION AUTHORIZATION` and `SET ROLE` too, which `RESET ALL` leaves.
            statements.extend(crate::leftovers::SESSION_RESETS.map(str::to_owned));
        }
        // The timeout before the rest: each statement runs under the timeout in force when it
        // starts, so only this `SET` runs under the last user's (after a reset, under none).
        // `DISCARD TEMP` of many temporary tables can take longer than a tiny one.
        if let Some(timeout) = crate::checkout::timeout_setting(self.statement_timeout_ms) {
            statements.push(format!("SET statement_timeout TO {timeout}"));
        }
        if self.drop_others_statements() {
            // Role mode, the connection last switched for another tenant: every statement on
            // the session is dropped, whatever its name and whoever made it (see
            // `statements_trusted`). Not transactional: gone even if the switch fails.
            statements.push("DEALLOCATE ALL".to_owned());
        }
        if self.first_switch.load(Ordering::Acquire) {
            // What the connection's last user left where the SQL reader could not see it (a
            // function's body). Always its temporary tables: `pg_temp` is searched before the
            // path, so one named like a tenant's table would shadow it (seen in the SQL text
            // they make the connection untrusted, closed). With `reset_settings`, held cursors
            // and sequence state too (`LEFT_OBJECTS`): two statements more on every switching
            // checkout cost 5-10 % of the throughput at T = 1,000 (BENCHMARKS.md §16). The
            // checkout's first switch only: later ones keep what this scope made itself.
            if pending {
                statements.extend(crate::leftovers::LEFT_OBJECTS.map(str::to_owned));
            } else {
                statements.push(crate::leftovers::DROP_LEFT_TEMPORARY.to_owned());
            }
        }
        if let Some(role) = crate::checkout::role_setting(self.role.as_deref()) {
            statements.push(role);
        } else if reset {
            statements.push("RESET ROLE".to_owned());
        }
        statements.push(format!("SET search_path TO {}", self.path));
        if self.read_only {
            statements.push("SET default_transaction_read_only TO on".into());
        } else if crate::databases::read_only_sessions_seen() {
            statements.push("SET default_transaction_read_only TO off".into());
        }
        (statements, reset)
    }

    /// What a transaction of its own sets (transaction mode): `SET LOCAL search_path`, and
    /// the tenant's `statement_timeout` and role when it has them (a `SET LOCAL` ends with
    /// the transaction: nothing to reset). Sent again, alone, to set the path back inside a
    /// transaction; a transaction-mode `BEGIN` sends [`local_start`](Self::local_start).
    pub(super) fn local_settings(&self) -> String {
        crate::checkout::local_settings(&self.path, self.statement_timeout_ms, self.role.as_deref())
    }

    /// What a transaction-mode transaction sends behind its `BEGIN` (see
    /// [`crate::checkout::local_start`]): with `reset`, the session's resets; the temporary
    /// tables left on the connection dropped; the [`local_settings`](Self::local_settings).
    pub(super) fn local_start(&self, reset: bool) -> String {
        crate::checkout::local_start(
            &self.path,
            self.statement_timeout_ms,
            self.role.as_deref(),
            reset,
        )
    }

    /// Whether the statements prepared on the connection may run for this scope: always,
    /// unless the tenancy gives its tenants roles (role mode) without keeping statements
    /// across tenants, and the last switch that committed on the connection had another
    /// session key (another schema, or the same schema under another role, state or router).
    /// A prepared statement belongs to the session, not to a role: another tenant's SQL — a
    /// function's, where no SQL reader sees it — can `DEALLOCATE` one of this schema's
    /// statements by name and `PREPARE` its own text in its place, which the next `Bind` of
    /// the name would run under this tenant's role and path (PostgreSQL analyses an
    /// unqualified text again there). Without tenant roles, nothing but the SQL reader
    /// separates tenants, and such SQL could write anywhere itself.
    fn statements_trusted(&self) -> bool {
        !self.guard_statements || session::statements_owned_by(self.conn(), &self.key)
    }

    /// When the connection's statements may not run for this scope ([`statements_trusted`]):
    /// empties the connection's cache (its statements are prepared again, for this schema)
    /// and says so, for the switch to drop every statement on the session (`DEALLOCATE ALL`:
    /// those the library prepared, and any another tenant's SQL prepared or put in their
    /// place). Statements prepared afresh belong to this schema once its switch committed.
    ///
    /// [`statements_trusted`]: Self::statements_trusted
    fn drop_others_statements(&self) -> bool {
        if self.statements_trusted() {
            return false;
        }
        self.statements_dropped();
        true
    }

    /// The server no longer has the connection's prepared statements, or is about to lose
    /// them (`DEALLOCATE ALL`, `DISCARD ALL`): the connection's cache is emptied, and the
    /// client forgets the statements it looks user-defined types up with (see
    /// [`session::statements_dropped`]).
    pub(super) fn statements_dropped(&self) {
        session::statements_dropped(self.conn());
        self.statements.store(0, Ordering::Release);
    }

    /// After a switch committed: the checkout's first is done, and when it `reset` the
    /// session, nothing is left to reset. The connection's statements are now this session
    /// key's (see [`statements_trusted`](Self::statements_trusted)).
    fn switched(&self, reset: bool) {
        session::own_statements(self.conn(), &self.key);
        self.writable.store(!self.read_only, Ordering::Release);
        self.first_switch.store(false, Ordering::Release);
        if reset {
            self.reset_pending.store(false, Ordering::Release);
            crate::databases::settings_reset(self.conn());
        }
    }

    fn switch_error(&self, e: tokio_postgres::Error) -> Error {
        tracing::debug!(schema = %self.schema, error = %e, "search_path switch failed");
        if e.code() == Some(&SqlState::INVALID_SCHEMA_NAME) {
            return Error::SchemaMissing {
                schema: self.schema.clone(),
            };
        }
        // Anything else (cancelled under a `statement_timeout` the last user left, a role
        // that cannot be set, a lost connection): the session is in a state the library did
        // not choose, perhaps still on the last tenant's path with its settings. The
        // connection is closed when the scope is given back, not handed to the next checkout.
        self.untrusted.store(true, Ordering::Release);
        Error::db("switching search_path", &self.schema, e)
    }

    /// What the tenant's state and role mode refuse before anything is sent: for a read-only
    /// tenant SQL that could make its transaction writable, under a tenant role SQL that
    /// could leave it.
    fn refuse(&self, effects: Effects) -> Result<()> {
        if self.read_only {
            self.refuse_read_write(effects)?;
        }
        if self.role.is_some() && effects.leaves_role {
            return Err(Error::leaves_role_refused(&self.schema));
        }
        Ok(())
    }

    /// Whether anything is refused before it is sent (see [`refuse`](Self::refuse)).
    fn guarded(&self) -> bool {
        self.read_only || self.role.is_some()
    }

    /// For a read-only tenant, SQL that could make its transaction writable is refused
    /// before it is sent (see [`Effects::escapes_read_only`]): a `BEGIN READ WRITE` sent
    /// alone, followed by a write and a `COMMIT` in later calls, would commit it.
    fn refuse_read_write(&self, effects: Effects) -> Result<()> {
        if effects.escapes_read_only {
            return Err(Error::read_only_refused(
                &self.schema,
                "SQL that controls transactions or how they write (BEGIN, START TRANSACTION, \
                 SET TRANSACTION, SET SESSION CHARACTERISTICS, COMMIT, DO, CALL, \
                 transaction_read_only …), a large-object writer (lo_from_bytea, lo_unlink …), \
                 or a statement this scope did not prepare,",
            ));
        }
        Ok(())
    }

    /// Before running SQL with `effects`: a session change makes the path unknown (also to
    /// any statement running concurrently on this scope), transaction control makes the
    /// connection untrusted for good.
    fn before_running(&self, effects: Effects) {
        if effects.transaction_control || effects.session_objects {
            self.untrusted.store(true, Ordering::Release);
        }
        // Marked before it runs: if the statement is cancelled, the server may still have
        // made the setting.
        if effects.leaves_settings() && !self.transaction_mode() {
            self.left_settings.store(true, Ordering::Release);
        }
        if effects.session {
            self.forget_path();
        }
    }

    /// After running SQL with `effects`: statements the server dropped leave the cache.
    fn after_running(&self, effects: Effects) {
        if effects.drops_prepared {
            self.statements_dropped();
        }
        if effects.changes_schemas {
            // A schema dropped or renamed by this SQL (the tenant's own, say): its
            // unqualified names would otherwise resolve in `public` until the sighting of
            // the schema expires.
            session::everything_changed();
        }
        if effects.session {
            self.forget_path();
        }
    }

    /// Prepares `sql` (cached per connection). A pending switch travels in the same round trip.
    ///
    /// Not in transaction mode, where a statement cannot outlive its transaction: prepare
    /// it on the [`transaction`](Self::transaction) instead.
    pub async fn prepare(&self, sql: &str) -> Result<Statement> {
        let effects = sql::effects(sql);
        self.refuse(effects)?;
        if self.transaction_mode() {
            return Err(not_in_transaction_mode(
                "a statement prepared outside a transaction",
            ));
        }
        let _entered = self.gate.enter(&self.schema).await?;
        let stmt = self.prepare_on_schema(sql).await?;
        self.prepared.remember(&stmt, effects);
        Ok(stmt)
    }

    /// What running `stmt` may do: what its SQL said if this scope prepared it, anything
    /// otherwise.
    fn statement_effects(&self, stmt: &Statement) -> Effects {
        self.prepared.get(stmt).unwrap_or(UNKNOWN_STATEMENT)
    }

    /// [`prepare`](Self::prepare) for a caller that holds the gate.
    async fn prepare_on_schema(&self, sql: &str) -> Result<Statement> {
        if self.on_path() {
            return self.prepare_on_path(sql).await;
        }
        // Both requests are written to the socket in this order on the first poll; the server
        // parses `sql` after the switch has run. Nothing executes before the switch's result is
        // checked below, so a failed switch costs a wasted parse, never a misplaced statement.
        // Boxed, as every branch a statement already on its path never takes: an async fn's
        // future is as large as its largest state, and each call moves it.
        let (switched, prepared) = Box::pin(join(self.switch(), self.prepare_on_path(sql))).await;
        switched?;
        prepared
    }

    async fn prepare_on_path(&self, sql: &str) -> Result<Statement> {
        self.prepare_keyed(self.keyed(sql))
            .await
            .map_err(|e| Error::db("preparing a statement", &self.schema, e))
    }

    /// Prepares `keyed` (a text marked with the schema, see [`keyed`](Self::keyed)), cached
    /// per connection.
    async fn prepare_keyed(&self, keyed: String) -> Result<Statement, tokio_postgres::Error> {
        // Bounded: the server keeps a plan per statement and connection. Each call adds at
        // most one statement, so the cache is counted (a walk over it) only when the bound
        // carried from earlier counts reaches the limit. A full cache gives up the statements
        // of the schemas that used the connection least recently, down to three quarters of
        // the limit; all of them only when that is not enough (statements it knows nothing
        // of).
        let conn = self.conn();
        let cache = &conn.statement_cache;
        let mut bound = self.statements.load(Ordering::Acquire);
        if bound == UNCOUNTED && self.transaction_mode() {
            // Carried from the last scope instead of counted (a walk over the cache).
            if let Some(carried) = session::take_statement_bound(conn) {
                bound = carried;
                self.statements.store(bound, Ordering::Release);
            }
        }
        if bound == UNCOUNTED || bound >= MAX_CACHED_STATEMENTS {
            let mut size = cache.size();
            if size >= MAX_CACHED_STATEMENTS {
                size = session::evict_coldest(conn, &self.schema, MAX_CACHED_STATEMENTS * 3 / 4);
                if size >= MAX_CACHED_STATEMENTS {
                    cache.clear();
                    session::forget_statements(conn);
                    size = 0;
                }
            }
            self.statements.store(size, Ordering::Release);
        }
        // The schema's use recorded (its statements become the warmest, for the eviction
        // above), and whether the memory beside the connection lists the text as cached for
        // it: asked there, not of the cache, whose count walks all its entries. (Nor can it
        // be told from whether the preparation finished on its first poll: a thread
        // preempted between sending the Parse and waiting for its answer finds the answer
        // there.)
        let first = !self.noted.swap(true, Ordering::AcqRel);
        let known = session::note_statement_use(conn, &self.schema, &keyed, first);
        let prepared = conn.prepare_cached(&keyed).await;
        if !known && prepared.is_ok() {
            // A text the memory did not list: most likely a new entry, counted as one.
            session::note_statement_cached(conn, &self.schema, keyed);
            self.statements.fetch_add(1, Ordering::AcqRel);
        }
        prepared
    }

    /// `sql` as cached on the connection: one prepared statement per schema and SQL text,
    /// marked with the schema in a leading comment. A statement is then planned under its
    /// schema's search path and only run under it, so switching never makes PostgreSQL
    /// re-plan it, and parameter types are learned per schema.
    fn keyed(&self, sql: &str) -> String {
        let mut keyed = String::with_capacity(sql.len() + self.schema.as_str().len() + 8);
        keyed.push_str("/* ");
        keyed.push_str(self.schema.as_str());
        keyed.push_str(" */ ");
        keyed.push_str(sql);
        keyed
    }

    /// Runs `op` on the statement, under the schema's gate and on its path; if PostgreSQL
    /// answers that the cached statement no longer fits (schemas that diverged, e.g. during
    /// a rolling migration: another result type, or parameter types that fit another
    /// tenant's columns), drops the cached statement and tries once more with a fresh one.
    /// The failed attempt ran nothing: such errors are raised while planning.
    async fn with_statement<'s, T, F, Fut>(
        &self,
        source: Source<'s>,
        action: &'static str,
        op: F,
    ) -> Result<T>
    where
        F: Fn(Target<'s>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        super::observed(
            &self.schema,
            self.with_statement_unobserved(source, action, op),
        )
        .await
    }

    /// [`with_statement`](Self::with_statement) without its metrics.
    async fn with_statement_unobserved<'s, T, F, Fut>(
        &self,
        source: Source<'s>,
        action: &'static str,
        op: F,
    ) -> Result<T>
    where
        F: Fn(Target<'s>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        if self.guarded() {
            let effects = match source {
                Source::Text(sql) => sql::effects(sql),
                Source::Prepared(stmt) => self.statement_effects(stmt),
            };
            self.refuse(effects)?;
        }
        if self.transaction_mode() {
            return Box::pin(self.in_own_transaction(source, action, op)).await;
        }
        let _entered = self.gate.enter(&self.schema).await?;
        let effects = match source {
            Source::Text(sql) => sql::effects(sql),
            Source::Prepared(stmt) => self.statement_effects(stmt),
        };
        // A session-changing statement is never written behind an unanswered switch: if it
        // were cancelled, the switch's answer would mark the path as set after it ran.
        // In role mode, the first switch on a connection another tenant used drops its
        // statements: no cached one runs behind it (see `statements_trusted`).
        let switching = !effects.session && !self.on_path();
        let in_prelude = switching && self.switches_in_prelude(effects);
        let others_statements = switching && !self.statements_trusted();
        let behind_switch = match source {
            // Role mode, another schema's checkout switched the connection last: its
            // statements are dropped by this switch, none runs behind it. A text whose
            // parameter types are known runs unnamed behind it instead (one round trip, as
            // a cached statement would).
            Source::Text(sql) if in_prelude && others_statements => self
                .pool
                .param_types(sql)
                .map(|types| Behind::Typed(sql, types)),
            _ if others_statements => None,
            Source::Text(sql) if in_prelude => Box::pin(self.cached_statement(sql))
                .await
                .map(Behind::Cached),
            Source::Prepared(stmt) if in_prelude => Some(Behind::Cached(stmt.clone())),
            _ => None,
        };
        let result = if let Some(behind) = behind_switch {
            self.before_running(effects);
            let result = Box::pin(self.run_switching(behind, &op)).await;
            self.after_running(effects);
            result?
        } else {
            // Nothing runs behind a switch that has not answered (its Parse at most, see
            // `prepare_on_schema`): the switch can fail on its own — cancelled under a
            // `statement_timeout` the last user left, its `RESET`s or `DISCARD TEMP` slower
            // than that — while a statement written behind it, in a message of its own,
            // would run on the previous tenant's path.
            let stmt = match source {
                Source::Text(sql) => {
                    let stmt = self.prepare_on_schema(sql).await?;
                    if others_statements {
                        // For the next such switch: the text then runs behind it, unnamed.
                        self.pool.learn_param_types(sql, stmt.params().into());
                    }
                    stmt
                }
                Source::Prepared(stmt) => {
                    Box::pin(self.ensure_path()).await?;
                    stmt.clone()
                }
            };
            let target = self.alone(stmt)?;
            self.before_running(effects);
            let result = op(target).await;
            self.after_running(effects);
            result
        };
        match (result, source) {
            (Err(e), Source::Text(sql))
                if is_replannable(&e) || (!effects.session && is_lost_statement(&e)) =>
            {
                if is_lost_statement(&e) {
                    // Deallocated behind the cache (server-side code running `DEALLOCATE
                    // ALL`): the statement ran nothing, and no cached one can be trusted.
                    tracing::warn!(schema = %self.schema, error = %e, "the connection's prepared statements were dropped behind its cache; preparing again");
                    self.statements_dropped();
                } else {
                    tracing::debug!(schema = %self.schema, error = %e, "cached statement does not fit this schema; re-preparing");
                    if others_statements {
                        // Run unnamed with parameter types learned under another schema.
                        self.pool.forget_param_types(sql);
                    }
                    let keyed = self.keyed(sql);
                    self.conn().statement_cache.remove(&keyed, &[]);
                    session::forget_statement(self.conn(), &self.schema, &keyed);
                }
                let stmt = Box::pin(self.prepare_on_schema(sql)).await?;
                let target = self.alone(stmt)?;
                self.before_running(effects);
                let result = op(target).await;
                self.after_running(effects);
                result.map_err(|e| Error::db(action, &self.schema, e))
            }
            (Err(e), _) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                Err(Box::pin(self.explain_undefined_table(e, action)).await)
            }
            (other, _) => other.map_err(|e| Error::db(action, &self.schema, e)),
        }
    }

    /// How a statement runs in a message of its own, on the path (session mode): as it is;
    /// a read-only tenant's behind [`READ_ONLY_NOW`] in the same implicit transaction. The
    /// session's read-only default, set by the switch, is not enough: a function the tenant
    /// calls can set it off for the session (`set_config('default_transaction_read_only',
    /// 'off', false)`, which no SQL reader sees), and the next statement would begin
    /// writable.
    fn alone<'s>(&self, stmt: Statement) -> Result<Target<'s>> {
        if !self.read_only {
            return Ok(Target::Prepared(stmt));
        }
        static PRELUDE: OnceLock<Arc<Prelude>> = OnceLock::new();
        if let Some(prelude) = PRELUDE.get() {
            return Ok(Target::After(prelude.clone(), stmt));
        }
        let mut prelude = Prelude::new();
        prelude
            .push_text(READ_ONLY_NOW)
            .map_err(|e| Error::db("making the transaction read-only", &self.schema, e))?;
        let prelude = PRELUDE.get_or_init(|| Arc::new(prelude)).clone();
        Ok(Target::After(prelude, stmt))
    }

    /// Whether a statement with `effects` may run behind the switch in the same implicit
    /// transaction ([`run_switching`](Self::run_switching)): not SQL that controls
    /// transactions (a `BEGIN` there would take the switch into its transaction block) or
    /// that PostgreSQL runs only on its own (`VACUUM`, `… CONCURRENTLY`), not
    /// a connection whose session may be in any state, not a read-only tenant's, and once the
    /// router has served a read-only tenant, only on a session known to begin its
    /// transactions writable ([`writable`](Self::writable)): a transaction's read-only mode
    /// is fixed when it starts, before the switch in it could set the default, so such
    /// switches stay messages of their own (a read-only tenant's statement would otherwise
    /// run as writable as the connection's last session left it, a writer's be refused
    /// after a read-only tenant's). A read-only default left by someone else refuses a
    /// writer's statement all the same: see [`began_read_only`](Self::began_read_only).
    fn switches_in_prelude(&self, effects: Effects) -> bool {
        !effects.transaction_control
            && !effects.own_transaction
            && !self.read_only
            && (!crate::databases::read_only_sessions_seen()
                || self.writable.load(Ordering::Acquire))
            && !self.untrusted.load(Ordering::Acquire)
    }

    /// Whether `e`, a writer's statement failing behind the switch in its own message, was
    /// refused because the implicit transaction began read-only: a
    /// `default_transaction_read_only` someone other than the library left on the session (a
    /// function's `set_config(…, false)`, a raw user of the pool), which the switch in the
    /// same transaction set back too late (see [`switches_in_prelude`](Self::switches_in_prelude)).
    fn began_read_only(&self, e: &tokio_postgres::Error) -> bool {
        !self.read_only && e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION)
    }

    /// The statement cached on the connection for `sql` under this schema, when the memory
    /// beside the connection lists it (`None`: it must be prepared, on the path).
    async fn cached_statement(&self, sql: &str) -> Option<Statement> {
        let keyed = self.keyed(sql);
        let first = !self.noted.swap(true, Ordering::AcqRel);
        if !session::note_statement_use(self.conn(), &self.schema, &keyed, first) {
            return None;
        }
        // Listed, so normally cached: `prepare_cached` answers from the cache. Should the
        // cache have been emptied behind the memory's back, it prepares the text on whatever
        // path the connection is on; the statement is then analysed again on the tenant's
        // path when it runs behind the switch (PostgreSQL re-analyses a statement run under
        // another search path than it was prepared under), and a text that cannot even be
        // prepared there takes the separate switch.
        self.conn().prepare_cached(&keyed).await.ok()
    }

    /// Runs `op` on `stmt` behind the switch, in one message and one implicit transaction:
    /// the switch's statements as unnamed `Parse`/`Bind`/`Execute` (the timeout, the role,
    /// the path and, when the schema was not seen a moment ago, the existence check; see
    /// [`switch_prelude`](Self::switch_prelude)), then the statement's own `Bind`/`Execute`,
    /// then one `Sync`. If the switch fails, PostgreSQL skips the
    /// statement: it never runs on the path or under the role the connection had before. If
    /// the statement fails, the switch rolls back with it and the path is unknown.
    ///
    /// The outer error is the switch's; the inner result is the statement's.
    async fn run_switching<'s, T, F, Fut>(
        &self,
        behind: Behind<'s>,
        op: &F,
    ) -> Result<Result<T, tokio_postgres::Error>>
    where
        F: Fn(Target<'s>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let forgotten = self.forget_path();
        let epoch = self.gate.epoch();
        let check = !self.gate.recently_verified(epoch);
        let (prelude, reset) = self.switch_prelude(check)?;
        self.pool.count_switch();
        if check {
            self.pool.count_existence_check();
        }
        let mut result = op(behind.after(prelude)).await;
        if matches!(&result, Err(e) if e.is_from_prelude() && cancelled_reset(reset, e)) {
            // Nothing ran: PostgreSQL skipped the statement behind the failed switch.
            tracing::debug!(schema = %self.schema, "a switch's reset was cancelled; once more");
            let (prelude, _) = self.switch_prelude(check)?;
            result = op(behind.after(prelude)).await;
        }
        match result {
            Err(e) if e.is_from_prelude() => Err(self.switch_error(e)),
            Err(e) if self.began_read_only(&e) => {
                // The implicit transaction began under a read-only default someone left on
                // the session (the library sets it only for read-only tenants, and then
                // switches in messages of their own): the write was refused, nothing ran.
                // Not run again (what the statement did before the refusal outside the
                // transaction, a session advisory lock, would happen twice); the connection
                // is not handed on in that state.
                tracing::warn!(schema = %self.schema, error = %e, "a writer's statement began read-only behind its switch; closing the connection");
                self.untrusted.store(true, Ordering::Release);
                Ok(Err(e))
            }
            result => {
                // A row count the driver refused ran, and committed, on the server.
                if result
                    .as_ref()
                    .map_or_else(tokio_postgres::Error::is_row_count, |_| true)
                {
                    if check {
                        self.gate.mark_verified(epoch);
                    }
                    self.switched(reset);
                    self.mark_on_path(epoch, forgotten);
                }
                Ok(result)
            }
        }
    }

    /// The switch as a [`Prelude`]: the statements of [`session_settings`] and, when
    /// `check`ed, the existence check, each parsed as the unnamed statement (as the simple
    /// query protocol would parse them: a utility `SET` is not planned, and nothing named is
    /// left on the connection). And whether it resets the settings a scope's SQL left.
    ///
    /// [`session_settings`]: Self::session_settings
    fn switch_prelude(&self, check: bool) -> Result<(Arc<Prelude>, bool)> {
        let mut prelude = Prelude::new();
        let (mut statements, reset) = self.session_statements();
        if check {
            statements.push(self.existence_check());
        }
        for statement in &statements {
            prelude
                .push_text(statement)
                .map_err(|e| self.switch_error(e))?;
        }
        Ok((Arc::new(prelude), reset))
    }

    /// A relation was not found: if the reason is that the schema itself is gone (deleted by
    /// another process while this connection was remembered on it), say so.
    async fn explain_undefined_table(
        &self,
        e: tokio_postgres::Error,
        action: &'static str,
    ) -> Error {
        match self.switch_checking(true).await {
            Err(missing @ Error::SchemaMissing { .. }) => missing,
            _ => Error::db(action, &self.schema, e),
        }
    }

    /// Runs a statement and returns its rows.
    pub async fn query<S>(&self, statement: &S, params: Params<'_>) -> Result<Vec<Row>>
    where
        S: ToScopedStatement + ?Sized,
    {
        let client: &tokio_postgres::Client = self.conn();
        let run = on_target!(
            client,
            params,
            query,
            query_after,
            query_typed,
            query_typed_after
        );
        self.with_statement(statement.as_source(), "running a query", run)
            .await
    }

    /// Runs a statement that returns exactly one row.
    pub async fn query_one<S>(&self, statement: &S, params: Params<'_>) -> Result<Row>
    where
        S: ToScopedStatement + ?Sized,
    {
        let client: &tokio_postgres::Client = self.conn();
        let run = on_target!(
            client,
            params,
            query_one,
            query_one_after,
            query_typed_one,
            query_typed_one_after
        );
        self.with_statement(statement.as_source(), "running a query", run)
            .await
    }

    /// Runs a statement that returns at most one row.
    pub async fn query_opt<S>(&self, statement: &S, params: Params<'_>) -> Result<Option<Row>>
    where
        S: ToScopedStatement + ?Sized,
    {
        let client: &tokio_postgres::Client = self.conn();
        let run = on_target!(
            client,
            params,
            query_opt,
            query_opt_after,
            query_typed_opt,
            query_typed_opt_after
        );
        self.with_statement(statement.as_source(), "running a query", run)
            .await
    }

    /// Runs a statement and returns the number of rows it affected.
    pub async fn execute<S>(&self, statement: &S, params: Params<'_>) -> Result<u64>
    where
        S: ToScopedStatement + ?Sized,
    {
        let client: &tokio_postgres::Client = self.conn();
        self.with_statement(
            statement.as_source(),
            "running a statement",
            |target| async move {
                match target {
                    Target::Prepared(stmt) => client.execute(&stmt, params).await,
                    Target::After(prelude, stmt) => {
                        client.execute_after(&prelude, &stmt, params).await
                    }
                    Target::Typed(sql, types) => {
                        let rows = client.query_typed_raw(sql, typed(params, &types)).await?;
                        count_rows(rows).await
                    }
                    Target::TypedAfter(prelude, sql, types) => {
                        let rows = client
                            .query_typed_raw_after(&prelude, sql, typed(params, &types))
                            .await?;
                        count_rows(rows).await
                    }
                }
            },
        )
        .await
    }
}

/// Reads `rows` to the end; the number of rows the statement affected.
async fn count_rows(rows: tokio_postgres::RowStream) -> Result<u64, tokio_postgres::Error> {
    futures_util::pin_mut!(rows);
    while futures_util::StreamExt::next(&mut rows)
        .await
        .transpose()?
        .is_some()
    {}
    Ok(rows.rows_affected().unwrap_or(0))
}

impl ConnectionScope {
    /// Runs SQL text through the simple query protocol, under the gate, on the path, with
    /// its effects accounted for (or, in transaction mode, inside its own transaction).
    async fn run_simple<T, Fut>(
        &self,
        sql: &str,
        action: &'static str,
        run: impl FnOnce() -> Fut,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        super::observed(&self.schema, self.run_simple_unobserved(sql, action, run)).await
    }

    /// [`run_simple`](Self::run_simple) without its metrics.
    async fn run_simple_unobserved<T, Fut>(
        &self,
        sql: &str,
        action: &'static str,
        run: impl FnOnce() -> Fut,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        if self.guarded() {
            self.refuse(sql::effects(sql))?;
        }
        if self.transaction_mode() {
            refuse_transaction_control(sql)?;
            let _entered = self.gate.enter(&self.schema).await?;
            let result = self.local_transaction(run(), true).await;
            self.after_own_transaction(sql);
            return result.map_err(|e| e.while_doing(action));
        }
        let effects = sql::effects(sql);
        let _entered = self.gate.enter(&self.schema).await?;
        self.ensure_path().await?;
        self.before_running(effects);
        let result = run().await;
        self.after_running(effects);
        match result {
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                Err(Box::pin(self.explain_undefined_table(e, action)).await)
            }
            other => other.map_err(|e| Error::db(action, &self.schema, e)),
        }
    }

    /// Runs one or more statements separated by `;`, without parameters.
    pub async fn batch_execute(&self, sql: &str) -> Result<()> {
        let client: &tokio_postgres::Client = self.conn();
        let text = self.simple_text(sql);
        self.run_simple(sql, "running a batch", || client.batch_execute(&text))
            .await
    }

    /// Runs statements through the simple query protocol and returns their messages.
    pub async fn simple_query(&self, sql: &str) -> Result<Vec<SimpleQueryMessage>> {
        let client: &tokio_postgres::Client = self.conn();
        let text = self.simple_text(sql);
        let mut messages = self
            .run_simple(sql, "running a simple query", || client.simple_query(&text))
            .await?;
        if text.len() != sql.len() {
            // The completion of `READ_ONLY_NOW_SIMPLE`, first.
            messages.remove(0);
        }
        Ok(messages)
    }

    /// The text a simple query sends for `sql`: in session mode, a read-only tenant's behind
    /// [`READ_ONLY_NOW_SIMPLE`] (see [`alone`](Self::alone)); transaction mode begins each
    /// transaction `READ ONLY`.
    fn simple_text<'s>(&self, sql: &'s str) -> std::borrow::Cow<'s, str> {
        if self.read_only && !self.transaction_mode() {
            format!("{READ_ONLY_NOW_SIMPLE}{sql}").into()
        } else {
            sql.into()
        }
    }

    /// Begins a transaction on the schema. It rolls back when dropped without
    /// [`commit`](TenantTransaction::commit).
    ///
    /// In transaction mode its first statement is the transaction-local switch. A deletion
    /// of the schema in this process waits until this scope is dropped.
    ///
    /// Statements run through the transaction may change session state, so the scope
    /// switches again before its next statement. In transaction mode, behind PgBouncer,
    /// drop the rows of a statement run on the transaction before committing: a statement
    /// prepared on it is closed when its last row is dropped.
    pub async fn transaction(&mut self) -> Result<TenantTransaction<'_>> {
        let entered = self.gate.enter(&self.schema).await?;
        let local = self.transaction_mode();
        // Transaction mode with `reset_settings`: the transaction begins with the resets.
        let reset = local && self.pool.resets_settings();
        if !local {
            self.ensure_path().await?;
        }
        // Whatever runs through the transaction is out of sight.
        self.forget_path();
        self.transaction_gate = Some(entered);
        // A read-only tenant's transaction is made read-only and runs a query (the check)
        // before the caller's first statement, after which it cannot become read-write.
        let (schema, settings, begin) = (
            self.schema.clone(),
            self.local_settings(),
            format!(
                "{}{}; {}",
                match begin_access(self.read_only, reset) {
                    "" => String::new(),
                    access => format!("SET TRANSACTION{access}; "),
                },
                // Transaction mode: what the server connection's last user left (see
                // `local_start`).
                if local {
                    self.local_start(reset)
                } else {
                    self.local_settings()
                },
                self.existence_check()
            ),
        );
        if local {
            self.pool.count_switch();
        }
        if local || self.read_only {
            self.pool.count_existence_check();
        }
        let conn = self
            .conn
            .as_mut()
            .expect("the connection is only taken out on drop");
        let untrusted = (!local).then_some((&self.untrusted, &self.left_settings));
        let tx = conn
            .transaction()
            .await
            .map_err(|e| Error::db("beginning a transaction", &schema, e))?;
        if local || self.read_only {
            // On failure `tx` is dropped here, which rolls it back.
            tx.batch_execute(&begin).await.map_err(|e| {
                if e.code() == Some(&SqlState::INVALID_SCHEMA_NAME) {
                    Error::SchemaMissing {
                        schema: schema.clone(),
                    }
                } else {
                    Error::db("switching search_path", &schema, e)
                }
            })?;
        }
        Ok(TenantTransaction::new(
            tx,
            schema,
            settings.into(),
            (self.read_only, self.role.is_some()),
            untrusted,
        ))
    }

    /// The underlying client, with the search path switched, for the rest of the
    /// tokio-postgres API (`copy_in`, `query_raw`, notifications …).
    ///
    /// Statements run through it are out of the library's sight: from now on the scope
    /// switches before each of its own statements, and the connection is closed when the
    /// scope is dropped rather than returned to the pool. As for a driver's connection (see
    /// [`checkout`](crate::checkout)), the scope is then registered with the schema's gate
    /// until it is dropped: a deletion or rename of the schema through
    /// [`Tenancy`](crate::Tenancy) waits for it for the grace period, then terminates its
    /// backend, so that the client reaches nothing afterwards (not `public`).
    ///
    /// Not in transaction mode, where the session has no tenant search path, nor for a
    /// read-only tenant ([`Error::TenantReadOnly`]): what runs on it could write.
    pub async fn client(&self) -> Result<&ClientWrapper> {
        if self.transaction_mode() {
            return Err(not_in_transaction_mode("the raw client"));
        }
        if self.read_only {
            // Whatever runs on it is out of sight: it could write.
            return Err(Error::read_only_refused(&self.schema, "the raw client"));
        }
        if self.role.is_some() {
            // Whatever runs on it is out of sight: it could leave the role.
            return Err(Error::LeavesTenantRole {
                schema: self.schema.clone(),
                what: "the raw client",
            });
        }
        self.untrusted.store(true, Ordering::Release);
        if self.raw_client.get().is_none() {
            // Registered before the switch: a deletion that ended before is seen by the
            // switch (the schema's epoch changed, so its existence is checked); one that
            // starts after waits for this scope, then terminates its backend.
            let checkout =
                DriverCheckout::register(self.schema.clone(), TenantStatus::Active).await?;
            self.ensure_search_path().await?;
            let pid = self.backend_pid().await?;
            checkout.attach_backend(pid)?;
            let _ = self.raw_client.set(checkout);
        } else {
            self.ensure_search_path().await?;
        }
        Ok(self.conn())
    }

    /// The connection's backend process id (`pg_backend_pid()`).
    async fn backend_pid(&self) -> Result<i32> {
        let messages = self
            .conn()
            .simple_query("SELECT pg_catalog.pg_backend_pid()")
            .await
            .map_err(|e| Error::db("reading the backend's process id", &self.schema, e))?;
        messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).and_then(|pid| pid.parse().ok()),
                _ => None,
            })
            .ok_or(Error::Refused {
                what: "a raw client whose backend process id cannot be read",
                instead: "use the scope's query methods",
            })
    }

    /// Whether the connection to the server is closed.
    pub fn is_closed(&self) -> bool {
        self.conn().is_closed()
    }
}

/// Whether a switch that failed with `e` is sent once more: it began with the resets of what
/// the connection's last user left (`reset`), among which may be a `statement_timeout` small
/// enough to cancel the first of them before it took effect. The whole message rolled back
/// (nothing behind the switch ran) and the server is as it was; the reset takes the timeout
/// away before anything slower runs, so a second cancellation needs the server to stall again
/// within that first statement.
fn cancelled_reset(reset: bool, e: &tokio_postgres::Error) -> bool {
    reset && e.code() == Some(&SqlState::QUERY_CANCELED)
}

impl Drop for ConnectionScope {
    fn drop(&mut self) {
        if self.open_transaction.load(Ordering::Acquire) || self.untrusted.load(Ordering::Acquire) {
            if let Some(conn) = self.conn.take() {
                tracing::debug!(schema = %self.schema, "closing a connection whose session state is unknown");
                drop(Object::take(conn));
            }
            return;
        }
        if self.transaction_mode() {
            // Named statements through a pooler that keeps them: the cache's bound, for the
            // next scope on this connection.
            let statements = self.statements.load(Ordering::Acquire);
            if statements != UNCOUNTED {
                if let Some(conn) = &self.conn {
                    session::remember_statement_bound(conn, statements);
                }
            }
        }
        if self.left_settings.load(Ordering::Acquire) {
            // Not remembered on the path: the next checkout switches, resetting them first.
            if let Some(conn) = &self.conn {
                crate::databases::note_settings_left(conn);
            }
            return;
        }
        if !self.on_path() {
            return;
        }
        let epoch = self.verified.load(Ordering::Acquire);
        let statements = self.statements.load(Ordering::Acquire);
        if let Some(conn) = self.conn.take() {
            // Still UNCOUNTED when nothing was prepared during this checkout.
            self.pool.release(
                conn,
                self.group,
                &self.key,
                self.gate.clone(),
                epoch,
                statements,
            );
        }
    }
}

fn not_in_transaction_mode(what: &'static str) -> Error {
    Error::NotInTransactionMode {
        what,
        instead: "run it inside ConnectionScope::transaction()",
    }
}

/// Transaction mode wraps each call in its own transaction: SQL that ended it would run the
/// rest of its text outside, without the tenant's path; and what outlives a transaction in
/// the session (see [`Error::session_objects_refused`], [`Error::session_settings_refused`])
/// is refused.
fn refuse_transaction_control(sql: &str) -> Result<()> {
    let effects = sql::effects(sql);
    if effects.transaction_control {
        return Err(Error::NotInTransactionMode {
            what: "SQL with transaction control (BEGIN, COMMIT, ROLLBACK …)",
            instead: "use ConnectionScope::transaction()",
        });
    }
    if effects.session_objects {
        return Err(Error::session_objects_refused());
    }
    if effects.session_settings {
        return Err(Error::session_settings_refused());
    }
    Ok(())
}

impl fmt::Debug for ConnectionScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionScope")
            .field("schema", &self.schema)
            .field("search_path", &&*self.path)
            .field("on_path", &self.on_path())
            .finish_non_exhaustive()
    }
}

/// Errors raised before a cached statement ran because it no longer fits the schema it now
/// runs in — by PostgreSQL while planning it, or by the driver because its parameter types
/// were learned under another tenant's columns: nothing was executed, so running it again
/// prepared afresh is safe.
fn is_replannable(err: &tokio_postgres::Error) -> bool {
    let Some(db) = err.as_db_error() else {
        return std::error::Error::source(err)
            .is_some_and(|cause| cause.is::<tokio_postgres::types::WrongType>());
    };
    let code = db.code();
    (*code == SqlState::FEATURE_NOT_SUPPORTED
        && db
            .message()
            .contains("cached plan must not change result type"))
        || *code == SqlState::UNDEFINED_FUNCTION
        || *code == SqlState::DATATYPE_MISMATCH
}

/// A cached statement the server no longer has (`invalid_sql_statement_name`, raised at its
/// `Bind`, before anything ran).
fn is_lost_statement(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&SqlState::INVALID_SQL_STATEMENT_NAME)
}
