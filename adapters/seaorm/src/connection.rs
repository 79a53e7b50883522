//! [`SeaOrmConnection`]: a SeaORM connection bound to one tenant's schema.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex as StdMutex, PoisonError};

use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement, TransactionError,
};
use sqlx::{Database, Postgres, TransactionManager};
use tenant_schemas::{SchemaName, Tenant, TenantStatus};
use tenant_schemas_sqlx::{SqlxConnection, SqlxRouter};

use crate::error::{Error, Stage};
use crate::exec::{self, Op, Out};
use crate::transaction::{SeaOrmTransaction, TxConn};

/// How a connection was asked for, so that it can be checked out the same way again.
#[derive(Debug, Clone)]
pub(crate) enum Door {
    /// For a tenant (its state from the registry).
    Tenant(Tenant),
    /// For a schema by name (`public` read and write).
    Schema(SchemaName),
}

impl Door {
    pub(crate) async fn checkout(
        &self,
        router: &SqlxRouter,
    ) -> tenant_schemas_sqlx::Result<SqlxConnection> {
        match self {
            Self::Tenant(tenant) => router.connection_for_tenant(tenant).await,
            Self::Schema(schema) => router.connection_for_schema(schema).await,
        }
    }
}

/// The handle's checked-out sqlx connection; `None` after a statement that may have changed
/// the session: the next statement checks a connection out again.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) conn: Option<SqlxConnection>,
}

/// A SeaORM connection bound to one tenant's schema, from
/// [`SeaOrmRouter`](crate::SeaOrmRouter) (or the axum extractor).
///
/// It implements SeaORM's [`ConnectionTrait`], so entities work on it unchanged —
/// `note::Entity::find().all(&db)`, `active_model.insert(&db)` — and reads need no
/// transaction: each statement runs on its own (autocommit) on the connection the handle
/// holds. [`begin`](Self::begin) and [`transaction`](Self::transaction) give a
/// [`SeaOrmTransaction`] on the same connection.
///
/// Underneath is one [`SqlxConnection`] of tenant-schemas-sqlx, held for the handle's life,
/// with everything its checkout keeps: the tenant's state read from the registry (not served
/// → no handle; read-only → a read-only session), the search path `"<schema>", public` with
/// the schema checked to exist, nothing an earlier user left on the pooled connection, and
/// the schema's gate — a deletion or rename of the schema through `Tenancy` waits for the
/// handle to be dropped for its grace period, then terminates its backend, so that it reaches
/// nothing afterwards.
///
/// What this handle adds, because SeaORM hands it the SQL it sends: statements are read as
/// the core's router reads them ([`tenant_schemas::checkout::SqlEffects`]). For a read-only
/// tenant, SQL that could make a transaction writable (`BEGIN READ WRITE`, `SET TRANSACTION
/// READ WRITE`, `set_config('transaction_read_only', …)`, …) is refused before it is sent
/// ([`Error::is_read_only`]: 403); transaction control (`BEGIN`, `COMMIT`, …) is refused for
/// every tenant, in favour of [`begin`](Self::begin); and after a statement that may have
/// changed the session (`SET search_path`, `RESET ALL`, `DISCARD ALL`, `set_config`, …) the
/// connection goes back to the pool and the next statement is run on a fresh checkout. As in
/// the core, the *rest of one SQL text* runs under whatever that text set.
pub struct SeaOrmConnection {
    router: SqlxRouter,
    door: Door,
    schema: SchemaName,
    status: StdMutex<TenantStatus>,
    held: tokio::sync::Mutex<Held>,
}

impl SeaOrmConnection {
    pub(crate) fn new(router: SqlxRouter, door: Door, conn: SqlxConnection) -> Self {
        Self {
            router,
            door,
            schema: conn.schema().clone(),
            status: StdMutex::new(conn.status()),
            held: tokio::sync::Mutex::new(Held { conn: Some(conn) }),
        }
    }

    /// The schema this connection is bound to.
    #[must_use]
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// The state the tenant is served in ([`TenantStatus::Active`] or
    /// [`TenantStatus::ReadOnly`]), as of the last checkout.
    #[must_use]
    pub fn status(&self) -> TenantStatus {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What a SeaORM call on this connection failed with, as this crate's [`Error`] (see
    /// [`Error::from_db_err`]).
    #[must_use]
    pub fn error(&self, err: DbErr) -> Error {
        Error::from_db_err(&self.schema, err)
    }

    /// The held connection, checked out again if a statement may have changed its session.
    async fn ensure<'h>(
        &self,
        held: &'h mut Held,
        stage: Stage,
    ) -> Result<&'h mut SqlxConnection, DbErr> {
        if held.conn.is_none() {
            let conn = self
                .door
                .checkout(&self.router)
                .await
                .map_err(|e| stage.refusal(e))?;
            *self.status.lock().unwrap_or_else(PoisonError::into_inner) = conn.status();
            held.conn = Some(conn);
        }
        Ok(held
            .conn
            .as_mut()
            .expect("a connection was just checked out"))
    }

    async fn run(&self, op: Op<'_>) -> Result<Out, DbErr> {
        let mut held = self.held.lock().await;
        let conn = self.ensure(&mut held, op.stage()).await?;
        let effects = exec::admit(op, conn.schema(), conn.status(), false)?;
        if !effects.changes_session && !effects.changes_schemas {
            return exec::run(conn, op, true).await;
        }
        // The session may no longer be what the checkout made it (path, read-only, prepared
        // statements), or the schema may be gone (`DROP SCHEMA`, after which unqualified
        // names resolve in `public`): the connection goes back to the pool, whose next
        // checkout sets it afresh and checks the schema, and this handle's next statement
        // checks one out. Taken out before the statement is sent, so that a call cancelled
        // mid-flight cannot leave it held.
        let mut conn = held.conn.take().expect("a connection was just checked out");
        drop(held);
        let out = exec::run(&mut conn, op, true).await;
        if effects.changes_schemas {
            tenant_schemas::checkout::schemas_changed();
        }
        out
    }

    /// Begins a transaction on this connection (`BEGIN`; `BEGIN READ ONLY` for a read-only
    /// tenant). The connection cannot be used otherwise until the transaction ends: end it
    /// with [`SeaOrmTransaction::commit`] or [`SeaOrmTransaction::rollback`]; dropped without
    /// either, it is rolled back before the connection's next use.
    pub async fn begin(&mut self) -> Result<SeaOrmTransaction<'_>, DbErr> {
        let held = self.held.get_mut();
        if held.conn.is_none() {
            let conn = self
                .door
                .checkout(&self.router)
                .await
                .map_err(|e| Stage::Connect.refusal(e))?;
            *self
                .status
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner) = conn.status();
            held.conn = Some(conn);
        }
        let conn = held
            .conn
            .as_mut()
            .expect("a connection was just checked out");
        let (schema, status) = (conn.schema().clone(), conn.status());
        let begin = if status == TenantStatus::ReadOnly {
            "BEGIN READ ONLY"
        } else {
            "BEGIN"
        };
        if let Err(e) =
            <Postgres as Database>::TransactionManager::begin(&mut **conn, Some(begin.into())).await
        {
            // Whatever state the session is in, it is not known: not kept.
            held.conn = None;
            return Err(Stage::Execute.sqlx(e));
        }
        Ok(SeaOrmTransaction::new(
            TxConn::Borrowed(held),
            schema,
            status,
            true,
        ))
    }

    /// Runs `callback` in a transaction on this connection ([`begin`](Self::begin)):
    /// committed if it returns `Ok`, rolled back if it returns `Err` — SeaORM's
    /// [`TransactionTrait::transaction`](sea_orm::TransactionTrait::transaction), for this
    /// connection.
    ///
    /// ```no_run
    /// # use tenant_schemas_seaorm::SeaOrmConnection;
    /// # async fn demo(db: &mut SeaOrmConnection) -> Result<(), Box<dyn std::error::Error>> {
    /// use sea_orm::ConnectionTrait;
    /// let moved = db
    ///     .transaction::<_, u64, sea_orm::DbErr>(|tx| {
    ///         Box::pin(async move {
    ///             let out = tx.execute_unprepared("UPDATE notes SET body = upper(body)").await?;
    ///             Ok(out.rows_affected())
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction<F, T, E>(&mut self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'t, 'c> FnOnce(
                &'t SeaOrmTransaction<'c>,
            )
                -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 't>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let tx = self.begin().await.map_err(TransactionError::Connection)?;
        tx.run(callback).await
    }
}

impl std::fmt::Debug for SeaOrmConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeaOrmConnection")
            .field("schema", &self.schema)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for SeaOrmConnection {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    async fn execute(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.run(Op::Execute(&stmt)).await.map(Out::exec)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.run(Op::Unprepared(sql)).await.map(Out::exec)
    }

    async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.run(Op::One(&stmt)).await.map(Out::one)
    }

    async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.run(Op::All(&stmt)).await.map(Out::all)
    }
}
