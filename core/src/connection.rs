//! A pooled connection bound to one schema.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deadpool_postgres::{ClientWrapper, Object, Transaction};
use futures_util::future::join;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, SimpleQueryMessage, Statement};

use crate::error::{Error, Result};
use crate::router::{RouterInner, SearchPathMode};
use crate::schema::SchemaName;

/// A pooled connection bound to one schema: every statement it runs sees the search path
/// `"<schema>", public` (plus the router's extra schemas).
///
/// Get one from [`SchemaRouter`](crate::SchemaRouter). The search path is switched lazily:
/// when the connection is not known to be on the schema already, the switch is sent in the
/// same round trip as the first statement's preparation. Until a switch has succeeded, no
/// statement runs, so a failed or cancelled switch cannot send a statement to the schema
/// the connection was on before.
///
/// The query methods take SQL text (prepared once per connection and cached) or a
/// [`Statement`] from [`ConnectionScope::prepare`]. For the rest of the tokio-postgres API
/// use [`ConnectionScope::client`].
pub struct ConnectionScope {
    /// Always `Some` until dropped; `Drop` takes it out to discard a connection left inside
    /// an unfinished transaction.
    conn: Option<Object>,
    schema: SchemaName,
    path: Arc<str>,
    on_path: AtomicBool,
    /// Transaction mode: a statement's transaction is open (BEGIN sent, COMMIT/ROLLBACK not
    /// yet answered). If the scope is dropped then (a cancelled request), the connection is
    /// closed instead of going back to the pool half-way through a transaction.
    open_transaction: AtomicBool,
    router: Arc<RouterInner>,
}

/// SQL text or a prepared [`Statement`], as accepted by the query methods of
/// [`ConnectionScope`].
pub trait ToScopedStatement: sealed::Sealed {
    #[doc(hidden)]
    fn as_source(&self) -> Source<'_>;
}

#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    Text(&'a str),
    Prepared(&'a Statement),
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for str {}
    impl Sealed for String {}
    impl Sealed for tokio_postgres::Statement {}
}

impl ToScopedStatement for str {
    fn as_source(&self) -> Source<'_> {
        Source::Text(self)
    }
}

impl ToScopedStatement for String {
    fn as_source(&self) -> Source<'_> {
        Source::Text(self)
    }
}

impl ToScopedStatement for Statement {
    fn as_source(&self) -> Source<'_> {
        Source::Prepared(self)
    }
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl ConnectionScope {
    pub(crate) fn new(
        conn: Object,
        schema: SchemaName,
        path: Arc<str>,
        on_path: bool,
        router: Arc<RouterInner>,
    ) -> Self {
        ConnectionScope {
            conn: Some(conn),
            schema,
            path,
            on_path: AtomicBool::new(on_path),
            open_transaction: AtomicBool::new(false),
            router,
        }
    }

    fn conn(&self) -> &Object {
        self.conn
            .as_ref()
            .expect("the connection is only taken out on drop")
    }

    fn transaction_mode(&self) -> bool {
        self.router.mode == SearchPathMode::Transaction
    }

    /// The schema this connection is bound to.
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// The search path its statements run under, e.g. `"acme", public`.
    pub fn search_path(&self) -> &str {
        &self.path
    }

    /// Switches the search path now if it is not known to be set, without running anything
    /// else. In transaction mode there is no session search path to set: it does nothing.
    pub async fn ensure_search_path(&self) -> Result<()> {
        if self.on_path.load(Ordering::Acquire) || self.transaction_mode() {
            return Ok(());
        }
        self.switch().await
    }

    /// Sends the switch. Its message is written on this future's first poll, so it reaches
    /// the server before any request of a future polled after it: what
    /// [`prepare`](Self::prepare) relies on to pipeline a statement behind the switch.
    ///
    /// The switch is a plain `SET search_path TO "<schema>", public` (the path holds only
    /// validated, quoted identifiers). Measured against `SELECT set_config($1, …)`: a utility
    /// statement is neither planned nor kept in the plan cache, whereas a prepared
    /// `set_config` is re-planned on every switch, because its own plan depends on the search
    /// path it changes (see BENCHMARKS.md).
    async fn switch(&self) -> Result<()> {
        let tracker = self.router.tracker.as_ref();
        if let Some(t) = tracker {
            t.mark_unknown(&self.conn().statement_cache);
        }
        self.router.stats.switches.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(schema = %self.schema, path = %self.path, "switching search_path");
        let sql = format!("SET search_path TO {}", self.path);
        self.conn().batch_execute(&sql).await.map_err(|e| {
            tracing::debug!(schema = %self.schema, error = %e, "search_path switch failed");
            Error::db("switching search_path", &self.schema, e)
        })?;
        if let Some(t) = tracker {
            t.mark_on(&self.conn().statement_cache, self.path.clone());
        }
        self.on_path.store(true, Ordering::Release);
        Ok(())
    }

    /// Prepares `sql` (cached per connection). A pending switch travels in the same round trip.
    ///
    /// Not in transaction mode, where a statement cannot outlive its transaction: prepare
    /// it on the [`transaction`](Self::transaction) instead.
    pub async fn prepare(&self, sql: &str) -> Result<Statement> {
        if self.transaction_mode() {
            return Err(not_in_transaction_mode(
                "a statement prepared outside a transaction",
            ));
        }
        if self.on_path.load(Ordering::Acquire) {
            return self.prepare_on_path(sql).await;
        }
        // Both requests are written to the socket in this order on the first poll; the server
        // parses `sql` after the switch has run. Nothing executes before the switch's result is
        // checked below, so a failed switch costs a wasted parse, never a misplaced statement.
        let (switched, prepared) = join(self.switch(), self.prepare_on_path(sql)).await;
        switched?;
        prepared
    }

    async fn prepare_on_path(&self, sql: &str) -> Result<Statement> {
        self.conn()
            .prepare_cached(sql)
            .await
            .map_err(|e| Error::db("preparing a statement", &self.schema, e))
    }

    async fn statement(&self, source: Source<'_>) -> Result<Statement> {
        match source {
            Source::Text(sql) => self.prepare(sql).await,
            Source::Prepared(stmt) => {
                self.ensure_search_path().await?;
                Ok(stmt.clone())
            }
        }
    }

    /// Runs `op` on the statement; if PostgreSQL answers that the cached plan's result type
    /// changed (schemas that diverged, e.g. during a rolling migration), drops the cached
    /// statement and tries once more with a fresh one.
    async fn with_statement<T, F, Fut>(
        &self,
        source: Source<'_>,
        action: &'static str,
        op: F,
    ) -> Result<T>
    where
        F: Fn(Statement) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        if self.transaction_mode() {
            return self.in_own_transaction(source, action, op).await;
        }
        let stmt = self.statement(source).await?;
        match op(stmt).await {
            Err(e) if is_stale_plan(&e) => {
                if let Source::Text(sql) = source {
                    tracing::debug!(schema = %self.schema, "result type changed; re-preparing");
                    self.conn().statement_cache.remove(sql, &[]);
                    let stmt = self.prepare(sql).await?;
                    return op(stmt)
                        .await
                        .map_err(|e| Error::db(action, &self.schema, e));
                }
                Err(Error::db(action, &self.schema, e))
            }
            other => other.map_err(|e| Error::db(action, &self.schema, e)),
        }
    }

    /// Transaction mode: `BEGIN`, the local switch and the statement's preparation in one
    /// round trip; then the statement; then `COMMIT` (or `ROLLBACK`), after the statement was
    /// closed, so nothing outlives the transaction on a shared server connection.
    async fn in_own_transaction<T, F, Fut>(
        &self,
        source: Source<'_>,
        action: &'static str,
        op: F,
    ) -> Result<T>
    where
        F: FnOnce(Statement) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let Source::Text(sql) = source else {
            return Err(not_in_transaction_mode(
                "a statement prepared outside a transaction",
            ));
        };
        let client: &tokio_postgres::Client = self.conn();
        let outcome = self
            .begin_local(async {
                let stmt = client.prepare(sql).await?;
                // `op` drops its statement when done: the Close is queued before COMMIT.
                op(stmt).await
            })
            .await;
        self.end_local(outcome, action).await
    }

    /// Sends `BEGIN` and the transaction-local switch, then runs `body` (whose first request
    /// is pipelined with them). The body runs only if both succeeded.
    async fn begin_local<T>(
        &self,
        body: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, tokio_postgres::Error> {
        let client: &tokio_postgres::Client = self.conn();
        self.open_transaction.store(true, Ordering::Release);
        self.router.stats.switches.fetch_add(1, Ordering::Relaxed);
        // One message: if BEGIN or the SET fails, the transaction is aborted (or absent)
        // and the body's first request fails with it, so nothing runs outside the tenant's
        // search path.
        let begin_sql = format!("BEGIN; SET LOCAL search_path TO {}", self.path);
        let (begun, result) = join(client.batch_execute(&begin_sql), body).await;
        begun?;
        result
    }

    async fn end_local<T>(
        &self,
        outcome: Result<T, tokio_postgres::Error>,
        action: &'static str,
    ) -> Result<T> {
        let client: &tokio_postgres::Client = self.conn();
        let end = if outcome.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let ended = client.batch_execute(end).await;
        match (outcome, ended) {
            (Ok(value), Ok(())) => {
                self.open_transaction.store(false, Ordering::Release);
                Ok(value)
            }
            (Ok(_), Err(e)) => Err(Error::db("committing", &self.schema, e)),
            (Err(e), ended) => {
                if ended.is_ok() {
                    self.open_transaction.store(false, Ordering::Release);
                }
                Err(Error::db(action, &self.schema, e))
            }
        }
    }

    /// Runs a statement and returns its rows.
    pub async fn query<S>(&self, statement: &S, params: Params<'_>) -> Result<Vec<Row>>
    where
        S: ToScopedStatement + ?Sized,
    {
        let client: &tokio_postgres::Client = self.conn();
        self.with_statement(
            statement.as_source(),
            "running a query",
            |stmt| async move { client.query(&stmt, params).await },
        )
        .await
    }

    /// Runs a statement that returns exactly one row.
    pub async fn query_one<S>(&self, statement: &S, params: Params<'_>) -> Result<Row>
    where
        S: ToScopedStatement + ?Sized,
    {
        let client: &tokio_postgres::Client = self.conn();
        self.with_statement(
            statement.as_source(),
            "running a query",
            |stmt| async move { client.query_one(&stmt, params).await },
        )
        .await
    }

    /// Runs a statement that returns at most one row.
    pub async fn query_opt<S>(&self, statement: &S, params: Params<'_>) -> Result<Option<Row>>
    where
        S: ToScopedStatement + ?Sized,
    {
        let client: &tokio_postgres::Client = self.conn();
        self.with_statement(
            statement.as_source(),
            "running a query",
            |stmt| async move { client.query_opt(&stmt, params).await },
        )
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
            |stmt| async move { client.execute(&stmt, params).await },
        )
        .await
    }

    /// Runs one or more statements separated by `;`, without parameters.
    pub async fn batch_execute(&self, sql: &str) -> Result<()> {
        let client: &tokio_postgres::Client = self.conn();
        if self.transaction_mode() {
            let outcome = self.begin_local(client.batch_execute(sql)).await;
            return self.end_local(outcome, "running a batch").await;
        }
        self.ensure_search_path().await?;
        client
            .batch_execute(sql)
            .await
            .map_err(|e| Error::db("running a batch", &self.schema, e))
    }

    /// Runs statements through the simple query protocol and returns their messages.
    pub async fn simple_query(&self, sql: &str) -> Result<Vec<SimpleQueryMessage>> {
        let client: &tokio_postgres::Client = self.conn();
        if self.transaction_mode() {
            let outcome = self.begin_local(client.simple_query(sql)).await;
            return self.end_local(outcome, "running a simple query").await;
        }
        self.ensure_search_path().await?;
        client
            .simple_query(sql)
            .await
            .map_err(|e| Error::db("running a simple query", &self.schema, e))
    }

    /// Begins a transaction on the schema. It rolls back when dropped without
    /// [`commit`](Transaction::commit).
    ///
    /// In transaction mode its first statement is the transaction-local switch.
    pub async fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.ensure_search_path().await?;
        let local = self.transaction_mode();
        let (schema, path) = (self.schema.clone(), self.path.clone());
        self.router
            .stats
            .switches
            .fetch_add(u64::from(local), Ordering::Relaxed);
        let conn = self
            .conn
            .as_mut()
            .expect("the connection is only taken out on drop");
        let tx = conn
            .transaction()
            .await
            .map_err(|e| Error::db("beginning a transaction", &schema, e))?;
        if local {
            // On failure `tx` is dropped here, which rolls it back.
            tx.batch_execute(&format!("SET LOCAL search_path TO {path}"))
                .await
                .map_err(|e| Error::db("switching search_path", &schema, e))?;
        }
        Ok(tx)
    }

    /// The underlying client, with the search path switched, for the rest of the
    /// tokio-postgres API (`copy_in`, `query_raw`, notifications …).
    ///
    /// Statements run through it may change session state, so the router forgets this
    /// connection's search path and switches again on its next use.
    ///
    /// Not in transaction mode, where the session has no tenant search path.
    pub async fn client(&self) -> Result<&ClientWrapper> {
        if self.transaction_mode() {
            return Err(not_in_transaction_mode("the raw client"));
        }
        self.ensure_search_path().await?;
        self.forget_path();
        Ok(self.conn())
    }

    fn forget_path(&self) {
        self.on_path.store(false, Ordering::Release);
        if let Some(t) = &self.router.tracker {
            t.mark_unknown(&self.conn().statement_cache);
        }
    }

    /// Whether the connection to the server is closed.
    pub fn is_closed(&self) -> bool {
        self.conn().is_closed()
    }
}

impl Drop for ConnectionScope {
    fn drop(&mut self) {
        if self.open_transaction.load(Ordering::Acquire) {
            if let Some(conn) = self.conn.take() {
                tracing::debug!(schema = %self.schema, "closing a connection left inside a transaction");
                drop(Object::take(conn));
            }
            return;
        }
        // A connection known to be on this schema may go straight to a request waiting for
        // it; otherwise (or if nobody waits for it) it returns to the pool.
        if let (Some(handoff), true) = (&self.router.handoff, self.on_path.load(Ordering::Acquire))
        {
            if let Some(conn) = self.conn.take() {
                drop(handoff.release(conn, &self.path));
            }
        }
    }
}

fn not_in_transaction_mode(what: &'static str) -> Error {
    Error::NotInTransactionMode {
        what,
        instead: "run it inside ConnectionScope::transaction()",
    }
}

impl fmt::Debug for ConnectionScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionScope")
            .field("schema", &self.schema)
            .field("search_path", &&*self.path)
            .field("on_path", &self.on_path.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn is_stale_plan(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED)
        && err.as_db_error().is_some_and(|db| {
            db.message()
                .contains("cached plan must not change result type")
        })
}
