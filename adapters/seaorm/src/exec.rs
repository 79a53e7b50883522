//! Running SeaORM's statements on a tenant-bound sqlx connection: what both
//! [`SeaOrmConnection`](crate::SeaOrmConnection) and
//! [`SeaOrmTransaction`](crate::SeaOrmTransaction) do with a [`Statement`].

use sea_orm::sea_query::Values;
use sea_orm::{DbErr, ExecResult, QueryResult, Statement};
use sea_query_binder::SqlxValues;
use sqlx::{Executor, PgConnection};
use tenant_schemas::checkout::SqlEffects;
use tenant_schemas::{SchemaName, TenantStatus};

use crate::error::Stage;

/// One call of SeaORM's [`ConnectionTrait`](sea_orm::ConnectionTrait).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op<'s> {
    Execute(&'s Statement),
    Unprepared(&'s str),
    One(&'s Statement),
    All(&'s Statement),
}

/// What an [`Op`] answers.
#[derive(Debug)]
pub(crate) enum Out {
    Exec(ExecResult),
    One(Option<QueryResult>),
    All(Vec<QueryResult>),
}

impl<'s> Op<'s> {
    /// The SQL text the call sends.
    pub(crate) fn text(self) -> &'s str {
        match self {
            Self::Execute(s) | Self::One(s) | Self::All(s) => &s.sql,
            Self::Unprepared(sql) => sql,
        }
    }

    pub(crate) fn stage(self) -> Stage {
        match self {
            Self::Execute(_) | Self::Unprepared(_) => Stage::Execute,
            Self::One(_) | Self::All(_) => Stage::Query,
        }
    }
}

/// Reads `op`'s SQL before it is sent, as the core's router reads the SQL sent through a
/// scope: for a read-only tenant, SQL that could make its transaction writable is refused
/// ([`SqlEffects::refuse_read_write`]); for every tenant, transaction control is refused in
/// favour of `begin()`/`transaction()` (a `BEGIN` sent alone would leave the pooled
/// connection in a transaction this handle does not know of, a `COMMIT` end one it does);
/// in transaction mode (`transaction_mode`), a setting that would outlive the transaction on
/// the pooler's server connection is refused ([`SqlEffects::refuse_session_settings`]).
pub(crate) fn admit(
    op: Op<'_>,
    schema: &SchemaName,
    status: TenantStatus,
    transaction_mode: bool,
) -> Result<SqlEffects, DbErr> {
    let effects = SqlEffects::of(op.text());
    let refuse = |err| {
        op.stage()
            .refusal(tenant_schemas_sqlx::Error::Checkout(err))
    };
    effects.refuse_read_write(schema, status).map_err(refuse)?;
    if transaction_mode {
        effects.refuse_session_settings().map_err(refuse)?;
    }
    if effects.controls_transaction {
        return Err(refuse(tenant_schemas::Error::Refused {
            what: "SQL with transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT …) on a SeaORM tenant connection",
            instead: "use `begin()` or `transaction()` and end it with `commit()` or `rollback()`",
        }));
    }
    Ok(effects)
}

/// Runs `op` on `conn`. `persistent`: whether sqlx may prepare and cache a named statement
/// (not behind a transaction pooler, where only unnamed statements are safe).
pub(crate) async fn run(
    conn: &mut PgConnection,
    op: Op<'_>,
    persistent: bool,
) -> Result<Out, DbErr> {
    let stage = op.stage();
    match op {
        Op::Execute(stmt) => query(stmt, persistent)
            .execute(conn)
            .await
            .map(|done| Out::Exec(done.into()))
            .map_err(|e| stage.sqlx(e)),
        Op::Unprepared(sql) => conn
            .execute(sql)
            .await
            .map(|done| Out::Exec(done.into()))
            .map_err(|e| stage.sqlx(e)),
        Op::One(stmt) => query(stmt, persistent)
            .fetch_optional(conn)
            .await
            .map(|row| Out::One(row.map(Into::into)))
            .map_err(|e| stage.sqlx(e)),
        Op::All(stmt) => query(stmt, persistent)
            .fetch_all(conn)
            .await
            .map(|rows| Out::All(rows.into_iter().map(Into::into).collect()))
            .map_err(|e| stage.sqlx(e)),
    }
}

/// `stmt` as a sqlx query with its values bound, as SeaORM's own driver binds them.
fn query(stmt: &Statement, persistent: bool) -> sqlx::query::Query<'_, sqlx::Postgres, SqlxValues> {
    let values = stmt.values.clone().unwrap_or(Values(Vec::new()));
    sqlx::query_with(&stmt.sql, SqlxValues(values)).persistent(persistent)
}

impl Out {
    pub(crate) fn exec(self) -> ExecResult {
        match self {
            Self::Exec(r) => r,
            _ => unreachable!("an execute answers an ExecResult"),
        }
    }

    pub(crate) fn one(self) -> Option<QueryResult> {
        match self {
            Self::One(r) => r,
            _ => unreachable!("query_one answers one row"),
        }
    }

    pub(crate) fn all(self) -> Vec<QueryResult> {
        match self {
            Self::All(r) => r,
            _ => unreachable!("query_all answers rows"),
        }
    }
}
