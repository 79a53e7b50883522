//! Tenants whose schemas diverge in column types, through `tenant-schemas-sqlx`: the same SQL
//! for both on one pooled connection returns each tenant's own types and takes each tenant's
//! own parameter types (the core's router re-prepares: core/tests/misuse.rs). sqlx caches a
//! prepared statement by its SQL; prepared under one tenant's path it would fail under the
//! other's ("cached plan must not change result type", or a parameter of the wrong type).

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use tenant_schemas::testing::fixtures::database;
use tenant_schemas::testing::{TestCluster, TestDatabase, TestPgBouncer};
use tenant_schemas::{NewTenant, SchemaName, SearchPathMode, Tenancy, TenantMigrations};
use tenant_schemas_sqlx::SqlxRouter;

const RESULT: &str = "SELECT code FROM items ORDER BY code LIMIT 1";
const PARAMETER: &str = "SELECT name FROM items WHERE code = $1";

/// Tenants `<prefix>_int` (`items.code` int, row 7) and `<prefix>_text` (`items.code` text,
/// row 'a7').
async fn diverged(prefix: &str) -> (TestDatabase, Tenancy, SchemaName, SchemaName) {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(
            TenantMigrations::new().with("items", "CREATE TABLE items (code int, name text)"),
        )
        .held_connection_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let ints = SchemaName::new(&format!("{prefix}_int")).unwrap();
    let texts = SchemaName::new(&format!("{prefix}_text")).unwrap();
    for s in [&ints, &texts] {
        tenancy
            .create_tenant(NewTenant::new(s.clone()))
            .await
            .unwrap();
    }
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "INSERT INTO {ints}.items VALUES (7, 'int row');
             ALTER TABLE {texts}.items ALTER COLUMN code TYPE text;
             INSERT INTO {texts}.items VALUES ('a7', 'text row')",
            ints = ints.quoted(),
            texts = texts.quoted(),
        ))
        .await
        .unwrap();
    (db, tenancy, ints, texts)
}

/// Both statements, alternating between the tenants, through connections and transactions;
/// `persistent` as the mode needs it (behind PgBouncer: unnamed statements).
async fn alternate(router: &SqlxRouter, ints: &SchemaName, texts: &SchemaName, persistent: bool) {
    let session = router.mode() == SearchPathMode::Session;
    for round in 0..3 {
        if session {
            let mut conn = router.connection_for_schema(ints).await.unwrap();
            let code: i32 = sqlx::query_scalar(RESULT)
                .persistent(persistent)
                .fetch_one(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("round {round}, int result: {e}"));
            assert_eq!(code, 7);
            let name: String = sqlx::query_scalar(PARAMETER)
                .bind(7_i32)
                .persistent(persistent)
                .fetch_one(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("round {round}, int parameter: {e}"));
            assert_eq!(name, "int row");
            drop(conn);

            let mut conn = router.connection_for_schema(texts).await.unwrap();
            let code: String = sqlx::query_scalar(RESULT)
                .persistent(persistent)
                .fetch_one(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("round {round}, text result: {e}"));
            assert_eq!(code, "a7");
            let name: String = sqlx::query_scalar(PARAMETER)
                .bind("a7")
                .persistent(persistent)
                .fetch_one(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("round {round}, text parameter: {e}"));
            assert_eq!(name, "text row");
        }

        // The same through transactions, in the other order.
        let mut tx = router.begin_for(texts).await.unwrap();
        let code: String = sqlx::query_scalar(RESULT)
            .persistent(persistent)
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("round {round}, text result in a transaction: {e}"));
        assert_eq!(code, "a7");
        let name: String = sqlx::query_scalar(PARAMETER)
            .bind("a7")
            .persistent(persistent)
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("round {round}, text parameter in a transaction: {e}"));
        assert_eq!(name, "text row");
        tx.commit().await.unwrap();

        let mut tx = router.begin_for(ints).await.unwrap();
        let code: i32 = sqlx::query_scalar(RESULT)
            .persistent(persistent)
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("round {round}, int result in a transaction: {e}"));
        assert_eq!(code, 7);
        let name: String = sqlx::query_scalar(PARAMETER)
            .bind(7_i32)
            .persistent(persistent)
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("round {round}, int parameter in a transaction: {e}"));
        assert_eq!(name, "int row");
        tx.commit().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_column_types_sqlx_session_mode() {
    let (db, tenancy, ints, texts) = diverged("div_ss").await;
    // One connection: every checkout reuses what the one before prepared.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(tenant_schemas_sqlx::connect_options(db.config()))
        .await
        .unwrap();
    let router = SqlxRouter::builder(pool)
        .tenant_states(tenancy.tenant_states())
        .build();
    alternate(&router, &ints, &texts, true).await;
    let cleared = router.stats().statements_cleared;
    assert!(
        cleared > 0,
        "the statements of the other schema were closed"
    );
    // The same tenant again: what it prepared is kept (nothing to close).
    for _ in 0..3 {
        let mut conn = router.connection_for_schema(&ints).await.unwrap();
        let code: i32 = sqlx::query_scalar(RESULT)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(code, 7);
    }
    assert_eq!(router.stats().statements_cleared, cleared);
    // Two routers over the same pool (one connection), taking turns.
    let other = SqlxRouter::new(router.pool().clone());
    for round in 0..3 {
        let mut conn = other.connection_for_schema(&texts).await.unwrap();
        let code: String = sqlx::query_scalar(RESULT)
            .fetch_one(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("round {round}, text result, second router: {e}"));
        assert_eq!(code, "a7");
        drop(conn);
        let mut conn = router.connection_for_schema(&ints).await.unwrap();
        let code: i32 = sqlx::query_scalar(RESULT)
            .fetch_one(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("round {round}, int result, first router: {e}"));
        assert_eq!(code, 7);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_column_types_sqlx_behind_pgbouncer() {
    let (db, tenancy, ints, texts) = diverged("div_sb").await;
    let bouncer = TestPgBouncer::start(TestCluster::shared().unwrap(), 1).unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            tenant_schemas_sqlx::connect_options(&bouncer.config(db.name()))
                .statement_cache_capacity(0),
        )
        .await
        .unwrap();
    let router = SqlxRouter::builder(pool)
        .mode(SearchPathMode::Transaction)
        .tenant_states(tenancy.tenant_states())
        .build();
    alternate(&router, &ints, &texts, false).await;
}
