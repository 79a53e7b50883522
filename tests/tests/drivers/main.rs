//! The isolation scenario of `scenario.rs`, run for each driver: the core's tokio-postgres
//! router and `tenant-schemas-sqlx` (session mode, and transaction mode through a real
//! PgBouncer).

#![allow(clippy::unwrap_used)]

mod adversary_checkout_state;
mod adversary_left;
mod adversary_prelude;
mod adversary_round4;
mod adversary_round5;
mod adversary_statements;
mod adversary_switch_failed;
mod diverged;
mod doors;
mod kept_statements;
mod outage;
mod scenario;

use scenario::{Answer, Driver, Failure};
use sqlx::postgres::PgPoolOptions;
use sqlx::Executor;
use tenant_schemas::testing::fixtures::marked_over_public;
use tenant_schemas::testing::{TestCluster, TestPgBouncer};
use tenant_schemas::{SchemaName, SchemaRouter, SearchPathMode};
use tenant_schemas_sqlx::SqlxRouter;

const MARKER: &str = "SELECT schema_name FROM marker";
const SLOW_MARKER: &str = "SELECT schema_name FROM marker, pg_catalog.pg_sleep(0.002)";

fn core_failure(e: &tenant_schemas::Error) -> Failure {
    Failure {
        schema_missing: matches!(e, tenant_schemas::Error::SchemaMissing { .. }),
        text: e.to_string(),
    }
}

fn sqlx_failure(e: &tenant_schemas_sqlx::Error) -> Failure {
    Failure {
        schema_missing: e.is_schema_missing(),
        text: e.to_string(),
    }
}

fn query_failure(e: &sqlx::Error) -> Failure {
    Failure {
        schema_missing: false,
        text: e.to_string(),
    }
}

/// The core's router (tokio-postgres, deadpool).
#[derive(Clone)]
struct Core(SchemaRouter);

impl Driver for Core {
    async fn read_marker(&self, schema: &SchemaName) -> Answer {
        let conn = self
            .0
            .connection_for_schema(schema)
            .await
            .map_err(|e| core_failure(&e))?;
        let row = conn
            .query_one(MARKER, &[])
            .await
            .map_err(|e| core_failure(&e))?;
        Ok(row.get(0))
    }

    async fn read_marker_in_transaction(&self, schema: &SchemaName) -> Answer {
        let mut conn = self
            .0
            .connection_for_schema(schema)
            .await
            .map_err(|e| core_failure(&e))?;
        let tx = conn.transaction().await.map_err(|e| core_failure(&e))?;
        let row = tx
            .query_one(MARKER, &[])
            .await
            .map_err(|e| core_failure(&e))?;
        tx.commit().await.map_err(|e| core_failure(&e))?;
        Ok(row.get(0))
    }

    async fn slow_read_marker(&self, schema: &SchemaName) -> Answer {
        let conn = self
            .0
            .connection_for_schema(schema)
            .await
            .map_err(|e| core_failure(&e))?;
        let row = conn
            .query_one(SLOW_MARKER, &[])
            .await
            .map_err(|e| core_failure(&e))?;
        Ok(row.get(0))
    }

    async fn misuse(&self, schema: &SchemaName, sql: &str) {
        let conn = self.0.connection_for_schema(schema).await.unwrap();
        let _ = conn.batch_execute(sql).await;
        let _ = conn.query_one(MARKER, &[]).await;
    }
}

/// `tenant-schemas-sqlx`: connections in session mode, transactions in either mode.
#[derive(Clone)]
struct Sqlx(SqlxRouter);

impl Sqlx {
    fn session(&self) -> bool {
        self.0.mode() == SearchPathMode::Session
    }
}

impl Driver for Sqlx {
    async fn read_marker(&self, schema: &SchemaName) -> Answer {
        if !self.session() {
            return self.read_marker_in_transaction(schema).await;
        }
        let mut conn = self
            .0
            .connection_for_schema(schema)
            .await
            .map_err(|e| sqlx_failure(&e))?;
        let (marker,): (String,) = sqlx::query_as(MARKER)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| query_failure(&e))?;
        Ok(marker)
    }

    async fn read_marker_in_transaction(&self, schema: &SchemaName) -> Answer {
        let mut tx = self
            .0
            .begin_for(schema)
            .await
            .map_err(|e| sqlx_failure(&e))?;
        // Behind PgBouncer 1.18, unnamed statements only (see the crate's docs).
        let (marker,): (String,) = sqlx::query_as(MARKER)
            .persistent(self.session())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| query_failure(&e))?;
        tx.commit().await.map_err(|e| sqlx_failure(&e))?;
        Ok(marker)
    }

    async fn slow_read_marker(&self, schema: &SchemaName) -> Answer {
        if !self.session() {
            let mut tx = self
                .0
                .begin_for(schema)
                .await
                .map_err(|e| sqlx_failure(&e))?;
            let (marker,): (String,) = sqlx::query_as(SLOW_MARKER)
                .persistent(false)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| query_failure(&e))?;
            return Ok(marker);
        }
        let mut conn = self
            .0
            .connection_for_schema(schema)
            .await
            .map_err(|e| sqlx_failure(&e))?;
        let (marker,): (String,) = sqlx::query_as(SLOW_MARKER)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| query_failure(&e))?;
        Ok(marker)
    }

    async fn misuse(&self, schema: &SchemaName, sql: &str) {
        if self.session() {
            let mut conn = self.0.connection_for_schema(schema).await.unwrap();
            let _ = conn.execute(sql).await;
            let _ = sqlx::query(MARKER).fetch_one(&mut *conn).await;
        } else {
            let mut tx = self.0.begin_for(schema).await.unwrap();
            let _ = tx.execute(sql).await;
            let _ = sqlx::query(MARKER)
                .persistent(false)
                .fetch_one(&mut *tx)
                .await;
        }
    }
}

use tenant_schemas_sqlx::connect_options as sqlx_options;

async fn drop_behind_the_back(pool: &tenant_schemas::deadpool_postgres::Pool, schema: &SchemaName) {
    pool.get()
        .await
        .unwrap()
        .batch_execute(&format!("DROP SCHEMA {} CASCADE", schema.quoted()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_router() {
    let (_db, tenancy, schemas, _pool) =
        marked_over_public("dc", 2, 3, SearchPathMode::Session).await;
    let driver = Core(tenancy.router().clone());
    // The core trusts a schema it saw less than a second ago unless a deletion is announced
    // (README, "not guaranteed"): delete through the Tenancy, as its guarantee says.
    scenario::run(driver, &schemas[0], &schemas[1], || async {
        tenancy
            .delete_tenant(&schemas[1], tenant_schemas::DropSchema::Yes)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_session_mode() {
    let (db, _tenancy, schemas, pool) =
        marked_over_public("ds", 2, 3, SearchPathMode::Session).await;
    let sqlx_pool = PgPoolOptions::new()
        .max_connections(3)
        .connect_with(sqlx_options(db.config()))
        .await
        .unwrap();
    let router = SqlxRouter::new(sqlx_pool);
    scenario::run(Sqlx(router.clone()), &schemas[0], &schemas[1], || async {
        drop_behind_the_back(&pool, &schemas[1]).await;
    })
    .await;
    let stats = router.stats();
    assert!(
        stats.discarded > 0,
        "misuse left nothing to discard: {stats:?}"
    );
    // Outside any scope: an error, not public.
    assert!(matches!(
        router.connection().await,
        Err(tenant_schemas_sqlx::Error::NoTenantInScope)
    ));
    assert!(matches!(
        router.begin().await,
        Err(tenant_schemas_sqlx::Error::NoTenantInScope)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_transaction_mode_through_pgbouncer() {
    let (db, _tenancy, schemas, pool) =
        marked_over_public("dt", 2, 3, SearchPathMode::Session).await;
    let bouncer = TestPgBouncer::start(TestCluster::shared().unwrap(), 3).unwrap();
    let sqlx_pool = PgPoolOptions::new()
        .max_connections(6)
        .connect_with(sqlx_options(&bouncer.config(db.name())).statement_cache_capacity(0))
        .await
        .unwrap();
    let router = SqlxRouter::builder(sqlx_pool)
        .mode(SearchPathMode::Transaction)
        .build();
    assert!(matches!(
        router.connection_for_schema(&schemas[0]).await,
        Err(tenant_schemas_sqlx::Error::NotInTransactionMode { .. })
    ));
    scenario::run(Sqlx(router), &schemas[0], &schemas[1], || async {
        drop_behind_the_back(&pool, &schemas[1]).await;
    })
    .await;
}
