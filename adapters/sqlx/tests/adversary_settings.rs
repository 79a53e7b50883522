//! Red team, sqlx: settings a tenant's SQL gives a pooled session must never reach the next
//! checkout of that connection. Every session-mode checkout's switch begins with `RESET ALL`
//! (`DriverCheckout::session_prefix`); these tests look for what that does not cover.
//!
//! Every test runs on a sqlx pool of ONE connection, so each checkout reuses the same session.
//! Tests marked `Broke` failed before the fix that came with them (each asserts the
//! guaranteed behaviour); the others held when first tried.

#![allow(clippy::unwrap_used)]

use sqlx::postgres::PgPoolOptions;
use sqlx::Row;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{NewTenant, SchemaName, Tenancy};
use tenant_schemas_sqlx::{connect_options, SqlxRouter};

/// A database with tenants `<prefix>0`, `<prefix>1`, a `Tenancy` (pool of one), and a sqlx
/// router over a pool of one connection.
async fn setup(prefix: &str) -> (TestDatabase, Tenancy, SchemaName, SchemaName, SqlxRouter) {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, prefix, 2).await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(connect_options(db.config()))
        .await
        .unwrap();
    let router = SqlxRouter::builder(pool)
        .tenant_states(tenancy.tenant_states())
        .build();
    (db, tenancy, s[0].clone(), s[1].clone(), router)
}

async fn setting(conn: &mut sqlx::PgConnection, name: &str) -> String {
    sqlx::query_scalar("SELECT coalesce(current_setting($1, true), '')")
        .bind(name)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Runs `verb <role>` in one tenant's checkout, then reads `current_user` in the next one's.
async fn role_left(prefix: &str, verb: &str) {
    let (db, _tenancy, a, b, router) = setup(prefix).await;
    let role = format!("{prefix}other");
    let how = format!("{verb} {role}");
    let admin = db.pool().get().await.unwrap();
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {role} NOLOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             GRANT {role} TO CURRENT_USER"
        ))
        .await
        .unwrap();
    let me: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *router.connection_for_schema(&b).await.unwrap())
        .await
        .unwrap();
    let mut conn = router.connection_for_schema(&a).await.unwrap();
    sqlx::raw_sql(&how).execute(&mut *conn).await.unwrap();
    drop(conn);
    let got: Result<String, String> = async {
        let mut conn = router
            .connection_for_schema(&b)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    assert_eq!(got, Ok(me), "{how}: the next tenant's current_user");
}

/// Broke before the fix (role, outside role mode): `RESET ALL` leaves `role` and
/// `session_authorization` alone, and outside role mode the switch sends no `RESET ROLE` (only once
/// a tenant role was seen in the process). The next checkout runs as the role the last tenant
/// chose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_reaches_the_next_sqlx_checkout() {
    role_left("sxadv_role_", "SET ROLE").await;
}

/// Broke before the fix (as [`set_role_reaches_the_next_sqlx_checkout`]): `SET SESSION
/// AUTHORIZATION`, which not even `RESET ROLE` would undo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_session_authorization_reaches_the_next_sqlx_checkout() {
    role_left("sxadv_auth_", "SET SESSION AUTHORIZATION").await;
}

/// `SET idle_session_timeout` ends the pooled session while it waits in the
/// pool; the next checkout must still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_timeout_does_not_fail_the_next_sqlx_checkout() {
    let (_db, _tenancy, a, b, router) = setup("sxadv_idle_").await;
    let mut conn = router.connection_for_schema(&a).await.unwrap();
    sqlx::raw_sql("SET idle_session_timeout = '100ms'")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut conn = router.connection_for_schema(&b).await.unwrap();
    sqlx::raw_sql("SELECT 1").execute(&mut *conn).await.unwrap();
}

/// What the core's SQL reader misses, the sqlx switch's unconditional `RESET ALL`
/// covers: `UPDATE pg_settings`, a function or trigger that sets, `SET SESSION
/// CHARACTERISTICS`, `SET TIME ZONE`, a `SET` in a committed transaction, `set_config` in a CTE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_settings_are_reset_by_the_sqlx_switch() {
    let (_db, tenancy, a, b, router) = setup("sxadv_held_").await;
    let names = [
        "app.token",
        "work_mem",
        "default_transaction_isolation",
        "TimeZone",
        "lock_timeout",
    ];
    let mut before = Vec::new();
    {
        let mut conn = router.connection_for_schema(&b).await.unwrap();
        for n in names {
            before.push(setting(&mut conn, n).await);
        }
        sqlx::raw_sql(
            "CREATE FUNCTION login_as(t text) RETURNS text LANGUAGE sql \
             AS $$ SELECT set_config('app.token', t, false) $$",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    {
        let mut conn = router.connection_for_schema(&a).await.unwrap();
        sqlx::raw_sql(
            "CREATE FUNCTION login_as(t text) RETURNS text LANGUAGE sql \
             AS $$ SELECT set_config('app.token', t, false) $$",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    for sql in [
        "UPDATE pg_settings SET setting = '1234kB' WHERE name = 'work_mem'",
        "SELECT login_as('a-secret')",
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET TIME ZONE 'Pacific/Chatham'",
        "WITH x AS (SELECT set_config('app.token', 'a-secret', false)) SELECT * FROM x",
        "DO $$ BEGIN PERFORM set_config('lock_timeout', '1ms', false); END $$",
        "BEGIN; SET work_mem = '1234kB'; COMMIT",
        "SET statement_timeout = '1ms'; SET lock_timeout = '1ms'",
    ] {
        let mut conn = router.connection_for_schema(&a).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut *conn).await.unwrap();
        drop(conn);
        let mut conn = router.connection_for_schema(&b).await.unwrap();
        for (n, want) in names.iter().zip(&before) {
            assert_eq!(&setting(&mut conn, n).await, want, "{sql}: {n}");
        }
    }
    // A SqlxTransaction that sends COMMIT itself, then sets something outside it.
    let mut tx = router.begin_for(&a).await.unwrap();
    sqlx::raw_sql("COMMIT; SET app.token = 'a-secret'; SET work_mem = '1234kB'")
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);
    let mut conn = router.connection_for_schema(&b).await.unwrap();
    assert_eq!(
        setting(&mut conn, "app.token").await,
        "",
        "after a COMMIT sent through"
    );
    drop(conn);
    // The library's own work after a tenant left a tiny timeout on the sqlx pool's connection
    // (a different pool: the core's migrations are not on it; checked for the record).
    tenancy
        .create_tenant(NewTenant::new(schema("sxadv_held_c")))
        .await
        .unwrap();
    let mut conn = router.connection_for_schema(&a).await.unwrap();
    let row = sqlx::query("SELECT current_setting('statement_timeout') AS t")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("t"), "0");
}
