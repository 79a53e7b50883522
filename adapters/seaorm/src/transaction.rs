//! [`SeaOrmTransaction`]: a SeaORM transaction bound to one tenant's schema.

use std::future::Future;
use std::pin::Pin;

use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement, TransactionError,
};
use sqlx::{Database, PgConnection, Postgres, TransactionManager};
use tenant_schemas::{SchemaName, TenantStatus};
use tenant_schemas_sqlx::SqlxTransaction;

use crate::connection::Held;
use crate::error::{Error, Stage};
use crate::exec::{self, Op, Out};

/// Where a transaction runs.
#[derive(Debug)]
pub(crate) enum TxConn<'c> {
    /// On a [`SeaOrmConnection`](crate::SeaOrmConnection)'s connection, borrowed for the
    /// transaction's life (begun with sqlx's transaction manager).
    Borrowed(&'c mut Held),
    /// A transaction of tenant-schemas-sqlx's router, owned.
    Owned(SqlxTransaction),
    /// Committed or rolled back.
    Done,
}

#[derive(Debug)]
struct State<'c> {
    conn: TxConn<'c>,
    /// The search path the transaction began on, read before a statement that may change the
    /// session and set again (`SET LOCAL`) after it.
    path: Option<String>,
    /// A statement that may have changed the session was sent and the path not set again
    /// since (the call was cancelled, or failed): set it before the next statement.
    reassert: bool,
    /// A statement that may drop or rename a schema ran: the process is told when the
    /// transaction commits ([`tenant_schemas::checkout::schemas_changed`]).
    changes_schemas: bool,
}

/// A SeaORM transaction bound to one tenant's schema: from
/// [`SeaOrmConnection::begin`](crate::SeaOrmConnection::begin) (on that connection) or
/// [`SeaOrmRouter::begin`](crate::SeaOrmRouter::begin) (a connection of its own; the only
/// way in behind PgBouncer in transaction pooling).
///
/// It implements SeaORM's [`ConnectionTrait`]: entities work on it unchanged. It is not
/// SeaORM's `DatabaseTransaction`: that type can only be made by SeaORM itself, from a
/// connection of a SeaORM pool, on which nothing of the tenant's checkout could be kept (see
/// the crate's docs). End it with [`commit`](Self::commit) or [`rollback`](Self::rollback);
/// dropped without either, it is rolled back.
///
/// Statements are read as on a [`SeaOrmConnection`](crate::SeaOrmConnection): for a
/// read-only tenant (whose transaction is `READ ONLY`), SQL that could make it writable is
/// refused; transaction control (`COMMIT`, `SAVEPOINT` …) is refused in favour of
/// `commit()`/`rollback()`; after a statement that may have changed the session, the
/// tenant's search path is set again (`SET LOCAL`) before the next statement.
pub struct SeaOrmTransaction<'c> {
    state: tokio::sync::Mutex<State<'c>>,
    schema: SchemaName,
    status: TenantStatus,
    persistent: bool,
}

impl<'c> SeaOrmTransaction<'c> {
    pub(crate) fn new(
        conn: TxConn<'c>,
        schema: SchemaName,
        status: TenantStatus,
        persistent: bool,
    ) -> Self {
        Self {
            state: tokio::sync::Mutex::new(State {
                conn,
                path: None,
                reassert: false,
                changes_schemas: false,
            }),
            schema,
            status,
            persistent,
        }
    }

    /// The schema this transaction is bound to.
    #[must_use]
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// The state the tenant is served in ([`TenantStatus::ReadOnly`]: the transaction is
    /// `READ ONLY`).
    #[must_use]
    pub fn status(&self) -> TenantStatus {
        self.status
    }

    /// What a SeaORM call on this transaction failed with, as this crate's [`Error`].
    #[must_use]
    pub fn error(&self, err: DbErr) -> Error {
        Error::from_db_err(&self.schema, err)
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.finish(true).await
    }

    /// Rolls the transaction back.
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.finish(false).await
    }

    async fn finish(self, commit: bool) -> Result<(), DbErr> {
        let mut state = self.state.lock().await;
        let done = self.finish_locked(&mut state, commit).await;
        if commit && state.changes_schemas {
            tenant_schemas::checkout::schemas_changed();
        }
        done
    }

    async fn finish_locked(&self, state: &mut State<'c>, commit: bool) -> Result<(), DbErr> {
        match std::mem::replace(&mut state.conn, TxConn::Done) {
            TxConn::Borrowed(held) => {
                let Some(conn) = held.conn.as_mut() else {
                    return Err(gone());
                };
                let conn: &mut PgConnection = conn;
                let done = if commit {
                    <Postgres as Database>::TransactionManager::commit(conn).await
                } else {
                    <Postgres as Database>::TransactionManager::rollback(conn).await
                };
                if done.is_err() || state.path.is_some() || state.changes_schemas {
                    // Failed to end, or a statement may have changed the session for good
                    // (a `SET` without `LOCAL`) or dropped the schema: the connection's next
                    // statement checks one out afresh (and the schema's existence with it).
                    held.conn = None;
                }
                done.map_err(|e| Stage::Execute.sqlx(e))
            }
            TxConn::Owned(tx) => {
                let done = if commit {
                    tx.commit().await
                } else {
                    tx.rollback().await
                };
                done.map_err(|e| Stage::Execute.refusal(e))
            }
            TxConn::Done => Ok(()),
        }
    }

    /// Runs `callback` on this transaction, then commits (`Ok`) or rolls back (`Err`).
    pub(crate) async fn run<F, T, E>(self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'t, 'x> FnOnce(
                &'t SeaOrmTransaction<'x>,
            )
                -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 't>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let res = callback(&self).await.map_err(TransactionError::Transaction);
        if res.is_ok() {
            self.commit().await.map_err(TransactionError::Connection)?;
        } else {
            self.rollback()
                .await
                .map_err(TransactionError::Connection)?;
        }
        res
    }

    async fn run_op(&self, op: Op<'_>) -> Result<Out, DbErr> {
        let mut state = self.state.lock().await;
        // Unnamed statements: behind a transaction pooler (transaction mode).
        let effects = exec::admit(op, &self.schema, self.status, !self.persistent)?;
        let State {
            conn,
            path,
            reassert,
            changes_schemas,
        } = &mut *state;
        let conn: &mut PgConnection = match conn {
            TxConn::Borrowed(held) => match held.conn.as_mut() {
                Some(conn) => conn,
                None => return Err(gone()),
            },
            TxConn::Owned(tx) => tx,
            TxConn::Done => return Err(gone()),
        };
        if *reassert {
            self.set_path(conn, path.as_deref(), op).await?;
            *reassert = false;
        }
        if effects.changes_session && path.is_none() {
            let current: String =
                sqlx::query_scalar("SELECT pg_catalog.current_setting('search_path')")
                    .persistent(self.persistent)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| op.stage().sqlx(e))?;
            *path = Some(current);
        }
        *reassert = effects.changes_session;
        *changes_schemas |= effects.changes_schemas;
        let out = exec::run(conn, op, self.persistent).await?;
        if *reassert {
            self.set_path(conn, path.as_deref(), op).await?;
            *reassert = false;
        }
        if effects.changes_schemas {
            // The tenant's schema may be gone inside this transaction: its unqualified names
            // would resolve in `public` from the next statement on. Checked now; missing, the
            // call fails (and the transaction with it).
            self.check_schema(conn, op).await?;
        }
        Ok(out)
    }

    /// Fails with [`tenant_schemas_sqlx::Error::SchemaMissing`] if the transaction no longer
    /// sees its schema: the server's error (`3F000`) aborts the transaction, so no later
    /// statement runs in it, even if the caller goes on after the error.
    async fn check_schema(&self, conn: &mut PgConnection, op: Op<'_>) -> Result<(), DbErr> {
        let checked = sqlx::query("SELECT $1::pg_catalog.text::pg_catalog.regnamespace")
            .bind(self.schema.quoted())
            .persistent(self.persistent)
            .execute(conn)
            .await;
        match checked {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3F000") => Err(op
                .stage()
                .refusal(tenant_schemas_sqlx::Error::SchemaMissing {
                    schema: self.schema.clone(),
                })),
            Err(e) => Err(op.stage().sqlx(e)),
        }
    }

    /// Sets the transaction's search path again (`SET LOCAL`), as read before the first
    /// statement that may have changed the session.
    async fn set_path(
        &self,
        conn: &mut PgConnection,
        path: Option<&str>,
        op: Op<'_>,
    ) -> Result<(), DbErr> {
        let Some(path) = path else {
            return Ok(());
        };
        sqlx::query("SELECT pg_catalog.set_config('search_path', $1, true)")
            .bind(path)
            .persistent(self.persistent)
            .execute(conn)
            .await
            .map(drop)
            .map_err(|e| op.stage().sqlx(e))
    }
}

/// The transaction's connection is gone (ended, or lost with a failed statement).
fn gone() -> DbErr {
    DbErr::Conn(sea_orm::RuntimeErr::Internal(
        "the transaction has ended or lost its connection".into(),
    ))
}

impl Drop for SeaOrmTransaction<'_> {
    fn drop(&mut self) {
        let state = self.state.get_mut();
        if let TxConn::Borrowed(held) = &mut state.conn {
            if let Some(conn) = held.conn.as_mut() {
                // Queued: sent before the connection's next statement, or when it goes back
                // to the pool (sqlx's own transactions end this way).
                <Postgres as Database>::TransactionManager::start_rollback(conn);
            }
            if state.path.is_some() {
                held.conn = None;
            }
        }
        // An owned `SqlxTransaction` rolls itself back when dropped.
    }
}

impl std::fmt::Debug for SeaOrmTransaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeaOrmTransaction")
            .field("schema", &self.schema)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for SeaOrmTransaction<'_> {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    async fn execute(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.run_op(Op::Execute(&stmt)).await.map(Out::exec)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.run_op(Op::Unprepared(sql)).await.map(Out::exec)
    }

    async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.run_op(Op::One(&stmt)).await.map(Out::one)
    }

    async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.run_op(Op::All(&stmt)).await.map(Out::all)
    }
}
