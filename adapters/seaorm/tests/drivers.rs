//! SeaORM as one more door of the driver scenario (`tests/tests/drivers/scenario.rs`, included
//! here by path so that sea-orm stays out of the workspace tests' build): plain reads,
//! session-changing SQL through a tenant's connection, reads cancelled mid-query, and a
//! schema dropped behind the library's back — in session mode, and in transaction mode
//! through a real PgBouncer.

#![allow(clippy::unwrap_used)]

#[path = "../../../tests/tests/drivers/scenario.rs"]
mod scenario;

use scenario::{Answer, Driver, Failure};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use sqlx::postgres::PgPoolOptions;
use tenant_schemas::testing::fixtures::marked_over_public;
use tenant_schemas::testing::{TestCluster, TestDatabase, TestPgBouncer};
use tenant_schemas::{SchemaName, SearchPathMode};
use tenant_schemas_seaorm::{Error, SeaOrmRouter};
use tenant_schemas_sqlx::{connect_options, SqlxRouter};

const MARKER: &str = "SELECT schema_name FROM marker";
const SLOW_MARKER: &str = "SELECT schema_name FROM marker, pg_catalog.pg_sleep(0.002)";

fn failure(e: &Error) -> Failure {
    Failure {
        schema_missing: e.is_schema_missing(),
        text: e.to_string(),
    }
}

fn orm_failure(schema: &SchemaName, e: DbErr) -> Failure {
    failure(&Error::from_db_err(schema, e))
}

async fn marker(db: &impl ConnectionTrait, sql: &str) -> Result<String, DbErr> {
    let row = db
        .query_one(Statement::from_string(DbBackend::Postgres, sql))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("marker".into()))?;
    row.try_get("", "schema_name")
}

/// `tenant-schemas-seaorm`: connections in session mode, transactions in either mode.
#[derive(Clone)]
struct SeaOrm(SeaOrmRouter);

impl SeaOrm {
    fn session(&self) -> bool {
        self.0.sqlx().mode() == SearchPathMode::Session
    }

    async fn read(&self, schema: &SchemaName, sql: &str) -> Answer {
        if !self.session() {
            return self.read_in_transaction(schema, sql).await;
        }
        let db = self
            .0
            .connection_for_schema(schema)
            .await
            .map_err(|e| failure(&e))?;
        marker(&db, sql).await.map_err(|e| orm_failure(schema, e))
    }

    async fn read_in_transaction(&self, schema: &SchemaName, sql: &str) -> Answer {
        let tx = self.0.begin_for(schema).await.map_err(|e| failure(&e))?;
        let got = marker(&tx, sql).await.map_err(|e| orm_failure(schema, e))?;
        tx.commit().await.map_err(|e| orm_failure(schema, e))?;
        Ok(got)
    }
}

impl Driver for SeaOrm {
    async fn read_marker(&self, schema: &SchemaName) -> Answer {
        self.read(schema, MARKER).await
    }

    async fn read_marker_in_transaction(&self, schema: &SchemaName) -> Answer {
        self.read_in_transaction(schema, MARKER).await
    }

    async fn slow_read_marker(&self, schema: &SchemaName) -> Answer {
        self.read(schema, SLOW_MARKER).await
    }

    async fn misuse(&self, schema: &SchemaName, sql: &str) {
        if self.session() {
            let db = self.0.connection_for_schema(schema).await.unwrap();
            let _ = db.execute_unprepared(sql).await;
            let _ = marker(&db, MARKER).await;
        } else {
            let tx = self.0.begin_for(schema).await.unwrap();
            let _ = tx.execute_unprepared(sql).await;
            let _ = marker(&tx, MARKER).await;
        }
    }
}

async fn drop_behind_the_back(pool: &tenant_schemas::deadpool_postgres::Pool, schema: &SchemaName) {
    pool.get()
        .await
        .unwrap()
        .batch_execute(&format!("DROP SCHEMA {} CASCADE", schema.quoted()))
        .await
        .unwrap();
}

/// A SeaORM router in session mode over a sqlx pool of 3 connections to `db`.
async fn session_router(db: &TestDatabase) -> SeaOrmRouter {
    let sqlx_pool = PgPoolOptions::new()
        .max_connections(3)
        .connect_with(connect_options(db.config()))
        .await
        .unwrap();
    SeaOrmRouter::new(SqlxRouter::new(sqlx_pool))
}

/// Whether `got` is a refusal for a missing schema (not a read of `public`'s marker).
fn is_missing(schema: &SchemaName, got: Result<String, DbErr>) -> bool {
    match got {
        Ok(_) => false,
        Err(e) => Error::from_db_err(schema, e).is_schema_missing(),
    }
}

/// A tenant's own SQL drops its schema through SeaORM (`DROP SCHEMA`, which the door reads):
/// on a connection handle, the handle's next statement fails with a missing schema instead
/// of reading `public`'s marker; inside a transaction, the dropping call itself fails and so
/// does everything after it in the transaction; rolled back, the schema is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaorm_a_tenant_dropping_its_own_schema_fails_closed() {
    let (db, _tenancy, schemas, _pool) =
        marked_over_public("sdrop", 3, 3, SearchPathMode::Session).await;
    let router = session_router(&db).await;
    let drop_sql = |s: &SchemaName| format!("DROP SCHEMA {} CASCADE", s.quoted());

    // A connection handle.
    let s = &schemas[0];
    let conn = router.connection_for_schema(s).await.unwrap();
    assert_eq!(marker(&conn, MARKER).await.unwrap(), s.as_str());
    conn.execute_unprepared(&drop_sql(s)).await.unwrap();
    let after = marker(&conn, MARKER).await;
    let shown = format!("{after:?}");
    assert!(is_missing(s, after), "the handle's next statement: {shown}");
    drop(conn);

    // Inside a transaction of its own: the dropping call fails, and so does what follows.
    let s = &schemas[1];
    let tx = router.begin_for(s).await.unwrap();
    assert_eq!(marker(&tx, MARKER).await.unwrap(), s.as_str());
    let dropped = tx.execute_unprepared(&drop_sql(s)).await;
    let shown = format!("{dropped:?}");
    assert!(
        dropped.is_err_and(|e| Error::from_db_err(s, e).is_schema_missing()),
        "the dropping call in a transaction: {shown}"
    );
    let after = marker(&tx, MARKER).await;
    assert!(
        after.is_err(),
        "a statement after it in the transaction: {after:?}"
    );
    drop(tx);

    // A transaction begun on a handle: the dropping call fails; rolled back, the handle
    // reads its schema again.
    let s = &schemas[2];
    let mut conn = router.connection_for_schema(s).await.unwrap();
    assert_eq!(marker(&conn, MARKER).await.unwrap(), s.as_str());
    {
        let tx = conn.begin().await.unwrap();
        let dropped = tx.execute_unprepared(&drop_sql(s)).await;
        assert!(dropped.is_err(), "{dropped:?}");
        tx.rollback().await.unwrap();
    }
    assert_eq!(marker(&conn, MARKER).await.unwrap(), s.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaorm_session_mode() {
    let (db, _tenancy, schemas, pool) =
        marked_over_public("dorm", 2, 3, SearchPathMode::Session).await;
    let router = session_router(&db).await;
    scenario::run(SeaOrm(router.clone()), &schemas[0], &schemas[1], || async {
        drop_behind_the_back(&pool, &schemas[1]).await;
    })
    .await;
    // Outside any scope: an error, not public.
    for err in [
        router.connection().await.unwrap_err(),
        router.begin().await.unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                Error::Driver(tenant_schemas_sqlx::Error::NoTenantInScope)
            ),
            "{err}"
        );
    }
}

/// A transaction-mode SeaORM router over `clients` sqlx connections through a PgBouncer in
/// transaction pooling with `servers` server connections (no statement cache: PgBouncer 1.18
/// keeps no prepared statements across transactions).
async fn bounced_router(
    db: &TestDatabase,
    servers: usize,
    clients: u32,
) -> (TestPgBouncer, SeaOrmRouter) {
    let bouncer = TestPgBouncer::start(TestCluster::shared().unwrap(), servers).unwrap();
    let sqlx_pool = PgPoolOptions::new()
        .max_connections(clients)
        .connect_with(connect_options(&bouncer.config(db.name())).statement_cache_capacity(0))
        .await
        .unwrap();
    let router = SeaOrmRouter::new(
        SqlxRouter::builder(sqlx_pool)
            .mode(SearchPathMode::Transaction)
            .build(),
    );
    (bouncer, router)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaorm_transaction_mode_through_pgbouncer() {
    let (db, _tenancy, schemas, pool) =
        marked_over_public("dormt", 2, 3, SearchPathMode::Session).await;
    let (_bouncer, router) = bounced_router(&db, 3, 6).await;
    let err = router.connection_for_schema(&schemas[0]).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Driver(tenant_schemas_sqlx::Error::NotInTransactionMode { .. })
        ),
        "{err}"
    );
    scenario::run(SeaOrm(router), &schemas[0], &schemas[1], || async {
        drop_behind_the_back(&pool, &schemas[1]).await;
    })
    .await;
}

/// Transaction mode through a PgBouncer with one server connection (found by a red-team
/// review: SeaORM's statements were read for transaction control only): a setting made for
/// the session in a tenant's transaction is refused before it is sent, and the next tenant's
/// transaction on the same server connection sees none of it; `SET LOCAL` is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaorm_transaction_mode_refuses_settings_that_outlive_the_transaction() {
    let (db, _tenancy, schemas, _pool) =
        marked_over_public("dormset", 2, 1, SearchPathMode::Session).await;
    let (_bouncer, router) = bounced_router(&db, 1, 1).await;
    let tx = router.begin_for(&schemas[0]).await.unwrap();
    for sql in [
        "SET app.x = 'leaked'",
        "SELECT set_config('app.x', 'leaked', false)",
    ] {
        assert!(tx.execute_unprepared(sql).await.is_err(), "{sql}");
    }
    let stmt = Statement::from_string(
        DbBackend::Postgres,
        "SELECT set_config('app.x', 'leaked', false)",
    );
    assert!(tx.query_one(stmt).await.is_err());
    tx.execute_unprepared("SET LOCAL app.x = 'local'")
        .await
        .unwrap();
    assert_eq!(app_x(&tx).await, "local");
    tx.commit().await.unwrap();
    let other = router.begin_for(&schemas[1]).await.unwrap();
    assert_eq!(
        app_x(&other).await,
        "",
        "a setting outlived its tenant's transaction"
    );
    other.commit().await.unwrap();
}

async fn app_x(tx: &impl ConnectionTrait) -> String {
    let stmt = Statement::from_string(
        DbBackend::Postgres,
        "SELECT coalesce(current_setting('app.x', true), '') AS v",
    );
    let row = tx.query_one(stmt).await.unwrap().unwrap();
    row.try_get::<String>("", "v").unwrap()
}
