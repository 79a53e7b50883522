//! The session-mode switch: one statement the router prepares on each pooled connection,
//! outside sqlx's statement cache. It survives the closing of sqlx's statements when a
//! connection changes schema, and statements dropped behind sqlx's back (`DEALLOCATE ALL`,
//! `DISCARD ALL`, which drop the switch's statement too) do not reach the next checkout.

#![allow(clippy::unwrap_used)]

use sqlx::postgres::PgPoolOptions;
use sqlx::Executor;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::SchemaName;
use tenant_schemas_sqlx::{connect_options, SqlxConnection, SqlxRouter};

/// Tenants `<prefix>0..n` with their markers, and a router over a pool of one connection, so
/// that every checkout reuses what the one before left.
async fn setup(prefix: &str, n: usize) -> (TestDatabase, Vec<SchemaName>, SqlxRouter) {
    let db = database().await;
    let tenancy = tenant_schemas::Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let schemas = marked_tenants(&tenancy, prefix, n).await;
    plant_public_marker(db.pool()).await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(connect_options(db.config()))
        .await
        .unwrap();
    (db, schemas, SqlxRouter::new(pool))
}

/// The marker, through a statement sqlx prepares and caches.
async fn marker(conn: &mut SqlxConnection) -> String {
    sqlx::query_scalar("SELECT schema_name FROM marker")
        .fetch_one(&mut **conn)
        .await
        .unwrap()
}

/// How many statements named like the router's switch the connection's session holds.
async fn switch_statements(conn: &mut SqlxConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_prepared_statements \
         WHERE name LIKE 'tenant\\_schemas\\_sqlx\\_switch\\_%'",
    )
    .fetch_one(&mut **conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_is_prepared_once_and_outlives_closed_statements() {
    let (_db, s, router) = setup("sw_once_", 2).await;
    for round in 0..4 {
        let schema = &s[round % 2];
        let mut conn = router.connection_for_schema(schema).await.unwrap();
        assert_eq!(marker(&mut conn).await, schema.as_str(), "round {round}");
        assert_eq!(switch_statements(&mut conn).await, 1, "round {round}");
    }
    // Each change of schema closed sqlx's statements (the marker query), not the switch.
    assert_eq!(router.stats().statements_cleared, 3);
    assert_eq!(router.stats().discarded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_dropped_behind_sqlxs_back_do_not_reach_the_next_checkout() {
    let (_db, s, router) = setup("sw_drop_", 1).await;
    let mut misuses = vec!["DEALLOCATE ALL".to_string(), "DISCARD ALL".to_string()];
    // Only the router's own statement, found by its name.
    let mut conn = router.connection_for_schema(&s[0]).await.unwrap();
    let name: String = sqlx::query_scalar(
        "SELECT name FROM pg_prepared_statements \
         WHERE name LIKE 'tenant\\_schemas\\_sqlx\\_switch\\_%'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    misuses.push(format!("DEALLOCATE \"{name}\""));
    let cleared = router.stats().statements_cleared;
    for (i, sql) in misuses.iter().enumerate() {
        let mut conn = router.connection_for_schema(&s[0]).await.unwrap();
        assert_eq!(marker(&mut conn).await, s[0].as_str());
        conn.execute(sql.as_str()).await.unwrap();
        drop(conn);
        // sqlx's cached marker statement is gone from the server: that connection is closed,
        // and the next one prepares everything afresh.
        let mut conn = router.connection_for_schema(&s[0]).await.unwrap();
        assert_eq!(marker(&mut conn).await, s[0].as_str(), "after {sql}");
        assert_eq!(switch_statements(&mut conn).await, 1, "after {sql}");
        assert_eq!(router.stats().discarded, i as u64 + 1, "after {sql}");
    }
    // One tenant throughout: nothing was closed for a change of schema.
    assert_eq!(router.stats().statements_cleared, cleared);
}

/// `shared_statements(true)`: sqlx's statements are kept when the connection changes schema,
/// and the server analyses them again under the new path, so the same SQL alternating between
/// tenants on one connection reads each tenant's own rows; none is closed. Where two tenants'
/// result types differ, the kept statement fails (an error), never reads the other's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_statements_are_analysed_again_for_each_tenant() {
    let (db, schemas, plain) = setup("sx_sh_", 3).await;
    let router = SqlxRouter::builder(plain.pool().clone())
        .shared_statements(true)
        .build();
    for round in 0..3 {
        for s in &schemas {
            let mut conn = router.connection_for_schema(s).await.unwrap();
            assert_eq!(marker(&mut conn).await, s.as_str(), "round {round}");
        }
    }
    assert_eq!(router.stats().statements_cleared, 0);
    // One statement per SQL text, kept: the connection's cache holds the marker query.
    let conn = router.connection_for_schema(&schemas[0]).await.unwrap();
    assert!(sqlx::Connection::cached_statements_size(&*conn) >= 1);
    drop(conn);

    // A tenant whose `marker` now has another result type.
    let admin = db.pool().get().await.unwrap();
    admin
        .batch_execute("ALTER TABLE sx_sh_2.marker ALTER COLUMN schema_name TYPE int USING 2")
        .await
        .unwrap();
    let mut conn = router.connection_for_schema(&schemas[0]).await.unwrap();
    assert_eq!(marker(&mut conn).await, "sx_sh_0");
    drop(conn);
    let mut conn = router.connection_for_schema(&schemas[2]).await.unwrap();
    let err = sqlx::query_scalar::<_, String>("SELECT schema_name FROM marker")
        .fetch_one(&mut *conn)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, sqlx::Error::Database(e) if e.code().as_deref() == Some("0A000")),
        "{err:?}"
    );
}

/// `shared_statements(true)`, two tenants whose `people` tables have the same column types
/// in another order (one created `first_name, last_name`, the other `last_name, first_name`,
/// as an adopted schema or another migration history leaves them): a statement kept from
/// one tenant never hands the other's columns under the first tenant's names (the server
/// compares the result's names too: `0A000`). The default router reads them right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_statements_never_mislabel_a_tenants_columns() {
    let (db, schemas, plain) = setup("sx_cols_", 2).await;
    let admin = db.pool().get().await.unwrap();
    admin
        .batch_execute(
            "CREATE TABLE sx_cols_0.people (id int, first_name text, last_name text);
             INSERT INTO sx_cols_0.people VALUES (1, 'Ada', 'Lovelace');
             CREATE TABLE sx_cols_1.people (id int, last_name text, first_name text);
             INSERT INTO sx_cols_1.people VALUES (1, 'Hopper', 'Grace');",
        )
        .await
        .unwrap();
    let shared = SqlxRouter::builder(plain.pool().clone())
        .shared_statements(true)
        .build();
    for (name, router) in [("default", plain.clone()), ("shared", shared)] {
        for (schema, want) in [(&schemas[0], "Ada"), (&schemas[1], "Grace")] {
            let mut conn = router.connection_for_schema(schema).await.unwrap();
            let read = sqlx::query("SELECT * FROM people")
                .fetch_one(&mut *conn)
                .await
                .and_then(|row| sqlx::Row::try_get::<String, _>(&row, "first_name"));
            match read {
                Ok(first) => assert_eq!(first, want, "{name}: {schema}'s first_name"),
                // The server compares the names too: an error, as the docs say.
                Err(sqlx::Error::Database(e))
                    if name == "shared" && e.code().as_deref() == Some("0A000") => {}
                Err(e) => panic!("{name}: {e:?}"),
            }
        }
    }
}
