//! A pooled connection bound to one schema.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deadpool_postgres::{ClientWrapper, Object, Transaction};
use futures_util::future::join;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, SimpleQueryMessage, Statement};

use crate::error::{Error, Result};
use crate::router::RouterInner;
use crate::schema::SchemaName;

const SWITCH_SQL: &str = "SELECT set_config('search_path', $1, false)";

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
    conn: Object,
    schema: SchemaName,
    path: Arc<str>,
    on_path: AtomicBool,
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
            conn,
            schema,
            path,
            on_path: AtomicBool::new(on_path),
            router,
        }
    }

    /// The schema this connection is bound to.
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// The search path its statements run under, e.g. `"acme", public`.
    pub fn search_path(&self) -> &str {
        &self.path
    }

    /// Switches the search path now if it is not known to be set, without running anything else.
    pub async fn ensure_search_path(&self) -> Result<()> {
        if self.on_path.load(Ordering::Acquire) {
            return Ok(());
        }
        self.switch().await
    }

    async fn switch(&self) -> Result<()> {
        let tracker = self.router.tracker.as_ref();
        if let Some(t) = tracker {
            t.mark_unknown(&self.conn.statement_cache);
        }
        self.router
            .stats
            .switches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::trace!(schema = %self.schema, path = %self.path, "switching search_path");
        self.conn
            .execute_typed(SWITCH_SQL, &[(&&*self.path, Type::TEXT)])
            .await
            .map_err(|e| {
                tracing::debug!(schema = %self.schema, error = %e, "search_path switch failed");
                Error::db("switching search_path", &self.schema, e)
            })?;
        if let Some(t) = tracker {
            t.mark_on(&self.conn.statement_cache, self.path.clone());
        }
        self.on_path.store(true, Ordering::Release);
        Ok(())
    }

    /// Prepares `sql` (cached per connection). A pending switch travels in the same round trip.
    pub async fn prepare(&self, sql: &str) -> Result<Statement> {
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
        self.conn
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
        let stmt = self.statement(source).await?;
        match op(stmt).await {
            Err(e) if is_stale_plan(&e) => {
                if let Source::Text(sql) = source {
                    tracing::debug!(schema = %self.schema, "result type changed; re-preparing");
                    self.conn.statement_cache.remove(sql, &[]);
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

    /// Runs a statement and returns its rows.
    pub async fn query<S>(&self, statement: &S, params: Params<'_>) -> Result<Vec<Row>>
    where
        S: ToScopedStatement + ?Sized,
    {
        let client: &tokio_postgres::Client = &self.conn;
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
        let client: &tokio_postgres::Client = &self.conn;
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
        let client: &tokio_postgres::Client = &self.conn;
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
        let client: &tokio_postgres::Client = &self.conn;
        self.with_statement(
            statement.as_source(),
            "running a statement",
            |stmt| async move { client.execute(&stmt, params).await },
        )
        .await
    }

    /// Runs one or more statements separated by `;`, without parameters.
    pub async fn batch_execute(&self, sql: &str) -> Result<()> {
        self.ensure_search_path().await?;
        self.conn
            .batch_execute(sql)
            .await
            .map_err(|e| Error::db("running a batch", &self.schema, e))
    }

    /// Runs statements through the simple query protocol and returns their messages.
    pub async fn simple_query(&self, sql: &str) -> Result<Vec<SimpleQueryMessage>> {
        self.ensure_search_path().await?;
        self.conn
            .simple_query(sql)
            .await
            .map_err(|e| Error::db("running a simple query", &self.schema, e))
    }

    /// Begins a transaction on the schema. It rolls back when dropped without
    /// [`commit`](Transaction::commit).
    pub async fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.ensure_search_path().await?;
        let schema = self.schema.clone();
        self.conn
            .transaction()
            .await
            .map_err(|e| Error::db("beginning a transaction", &schema, e))
    }

    /// The underlying client, with the search path switched, for the rest of the
    /// tokio-postgres API (`copy_in`, `query_raw`, notifications …).
    ///
    /// Statements run through it may change session state, so the router forgets this
    /// connection's search path and switches again on its next use.
    pub async fn client(&self) -> Result<&ClientWrapper> {
        self.ensure_search_path().await?;
        self.forget_path();
        Ok(&self.conn)
    }

    fn forget_path(&self) {
        self.on_path.store(false, Ordering::Release);
        if let Some(t) = &self.router.tracker {
            t.mark_unknown(&self.conn.statement_cache);
        }
    }

    /// Whether the connection to the server is closed.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
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
