//! Red team: settings a tenant's SQL gives a pooled session (beyond the switch's own) must
//! stay in the checkout that made them and never reach the next checkout of the same pooled
//! connection — another tenant's, the same tenant's, or the library's own work.
//!
//! Every test runs on a pool of ONE connection, so each checkout reuses the same session.
//! Tests marked `Broke` failed before the fix that came with them (each asserts the
//! guaranteed behaviour); the others held when first tried.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{ConnectionScope, NewTenant, SchemaName, SchemaRouter, Tenancy};

/// `app.token` (empty when unset), `work_mem`, `lock_timeout`.
async fn settings(db: &ConnectionScope) -> (String, String, String) {
    let row = db
        .query_one(
            "SELECT coalesce(current_setting('app.token', true), ''), \
             current_setting('work_mem'), current_setting('lock_timeout')",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

async fn settings_of(router: &SchemaRouter, schema: &SchemaName) -> (String, String, String) {
    settings(&router.connection_for_schema(schema).await.unwrap()).await
}

async fn one_setting(router: &SchemaRouter, schema: &SchemaName, name: &str) -> String {
    let conn = router.connection_for_schema(schema).await.unwrap();
    let row = conn
        .query_one("SELECT coalesce(current_setting($1, true), '')", &[&name])
        .await
        .unwrap();
    row.get(0)
}

/// A database, a `Tenancy` over a pool of one connection, tenants `<prefix>a`, `<prefix>b`.
async fn setup(prefix: &str) -> (TestDatabase, Tenancy, SchemaName, SchemaName) {
    setup_in(prefix, tenant_schemas::SearchPathMode::Session).await
}

/// As [`setup`], in `mode`.
async fn setup_in(
    prefix: &str,
    mode: tenant_schemas::SearchPathMode,
) -> (TestDatabase, Tenancy, SchemaName, SchemaName) {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .search_path_mode(mode)
        .build()
        .await
        .unwrap();
    let (a, b) = (schema(&format!("{prefix}a")), schema(&format!("{prefix}b")));
    for s in [&a, &b] {
        tenancy
            .create_tenant(NewTenant::new(s.clone()))
            .await
            .unwrap();
    }
    (db, tenancy, a, b)
}

/// Broke before the fix: `UPDATE pg_settings SET setting = … WHERE name = …` is documented by
/// PostgreSQL as equivalent to `SET` (the view's rule calls `set_config(name, setting, false)`): a
/// session setting. The SQL reader sees an `UPDATE` with no `set_config` in its text, so the
/// connection is not marked and the next checkout's switch sends no `RESET ALL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_of_pg_settings_reaches_the_next_checkout() {
    let (_db, tenancy, a, b) = setup("adv_pgs_").await;
    let router = tenancy.router();
    let clean = settings_of(router, &b).await;
    assert_eq!(clean.0, "");
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.execute(
        "UPDATE pg_settings SET setting = '1234kB' WHERE name = 'work_mem'",
        &[],
    )
    .await
    .unwrap();
    conn.batch_execute("UPDATE pg_settings SET setting = '1ms' WHERE name = 'lock_timeout'")
        .await
        .unwrap();
    assert_eq!(settings(&conn).await.1, "1234kB", "the own scope");
    drop(conn);
    assert_eq!(settings_of(router, &b).await, clean, "the next tenant");
    assert_eq!(settings_of(router, &a).await, clean, "the same tenant");
}

/// Broke before the fix: the library's own work fails because of a setting a tenant's `UPDATE
/// pg_settings` left: `default_transaction_read_only = on` survives on the pooled connection
/// (nothing marks it, no read-only tenant was ever served so the library does not reset it), and
/// the next `create_tenant` — the library's migrations — runs in a read-only transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_of_pg_settings_breaks_the_librarys_own_work() {
    let (_db, tenancy, a, _b) = setup("adv_pgro_").await;
    let conn = tenancy.router().connection_for_schema(&a).await.unwrap();
    conn.execute(
        "UPDATE pg_settings SET setting = 'on' WHERE name = 'default_transaction_read_only'",
        &[],
    )
    .await
    .unwrap();
    drop(conn);
    let created = tenancy
        .create_tenant(NewTenant::new(schema("adv_pgro_c")))
        .await;
    assert!(
        created.is_ok(),
        "create_tenant after a tenant's UPDATE pg_settings: {:?}",
        created.err()
    );
}

/// Broke before the fix: a statement prepared by SQL (`PREPARE`) in an earlier checkout (marked:
/// its text has `set_config`) outlives `RESET ALL`; a later checkout's `EXECUTE` of it is read as a
/// session change but not as a setting (only `SET`/`RESET`/`set_config` are), so nothing is marked
/// and the next tenant reads the token. Any tenant can `EXECUTE` it, not only its author.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_of_a_statement_prepared_earlier_sets_the_session_unseen() {
    let (_db, tenancy, a, b) = setup("adv_exec_").await;
    let router = tenancy.router();
    let clean = settings_of(router, &b).await;
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.batch_execute("PREPARE leak AS SELECT set_config('app.token', 'a-secret', false)")
        .await
        .unwrap();
    drop(conn);
    assert_eq!(settings_of(router, &b).await, clean);
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.batch_execute("EXECUTE leak").await.unwrap();
    assert_eq!(settings(&conn).await.0, "a-secret", "the own scope");
    drop(conn);
    assert_eq!(settings_of(router, &b).await, clean, "the next tenant");
}

/// Broke before the fix: `CALL` of a procedure created in an earlier checkout: the reader knows
/// `CALL` runs code (it counts it as leaving the role and escaping read-only) but not as a setting,
/// so a procedure's `set_config(…, false)` goes unmarked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_of_a_procedure_created_earlier_sets_the_session_unseen() {
    let (_db, tenancy, a, b) = setup("adv_call_").await;
    let router = tenancy.router();
    let clean = settings_of(router, &b).await;
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.batch_execute(
        "CREATE PROCEDURE login_as(t text) LANGUAGE plpgsql \
         AS $$ BEGIN PERFORM set_config('app.token', t, false); END $$",
    )
    .await
    .unwrap();
    drop(conn);
    assert_eq!(settings_of(router, &b).await, clean);
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.batch_execute("CALL login_as('a-secret')")
        .await
        .unwrap();
    assert_eq!(settings(&conn).await.0, "a-secret", "the own scope");
    drop(conn);
    assert_eq!(settings_of(router, &b).await, clean, "the next tenant");
}

/// A statement that sets something, its future dropped 200 ms into a 1 s sleep.
async fn cancelled(how: &str) {
    let (_db, tenancy, a, b) = setup(&format!("adv_cancel_{how}_")).await;
    let router = tenancy.router();
    let clean = settings_of(router, &b).await;
    let conn = router.connection_for_schema(&a).await.unwrap();
    let timed_out = match how {
        "batch" => tokio::time::timeout(
            Duration::from_millis(200),
            conn.batch_execute("SET app.token = 'a-secret'; SELECT pg_sleep(1)"),
        )
        .await
        .is_err(),
        _ => tokio::time::timeout(
            Duration::from_millis(200),
            conn.query(
                "SELECT set_config('app.token', 'a-secret', false), pg_sleep(1)",
                &[],
            ),
        )
        .await
        .is_err(),
    };
    assert!(timed_out, "{how}: the statement should still be running");
    drop(conn);
    assert_eq!(
        settings_of(router, &b).await,
        clean,
        "{how}: the next tenant"
    );
}

/// Broke before the fix: a statement that sets something, whose future is dropped (a request
/// timeout) while the statement still runs. The scope marks settings only after the statement
/// answers (`after_running`), the path was forgotten before it ran, so `Drop` returns the
/// connection to the pool unmarked; the server finishes the `SET` anyway, and the next checkout
/// (queued behind it on the same connection) reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_leaves_its_setting_unmarked() {
    cancelled("batch").await;
}

/// Broke before the fix: as [`a_cancelled_batch_leaves_its_setting_unmarked`], through `query` (the
/// extended protocol, `with_statement`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_query_leaves_its_setting_unmarked() {
    cancelled("query").await;
}

/// Runs `how` in one tenant's checkout, then reads `current_user` in the next tenant's.
async fn role_left(prefix: &str, verb: &str) {
    let (db, tenancy, a, b) = setup(prefix).await;
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
    let router = tenancy.router();
    let who = |s: SchemaName| async move {
        let conn = router.connection_for_schema(&s).await.unwrap();
        let row = conn
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap();
        row.get::<_, String>(0)
    };
    let me = who(b.clone()).await;
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.batch_execute(&how).await.unwrap();
    drop(conn);
    assert_eq!(who(b.clone()).await, me, "{how}: the next tenant");
}

/// Broke before the fix (role, outside role mode): `SET ROLE` is a setting `RESET ALL` does not
/// touch, and outside role mode the switch sends no `RESET ROLE` (only once a tenant role was seen
/// in the process). The next tenant runs as the role the last one chose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_reaches_the_next_checkout() {
    role_left("adv_role_", "SET ROLE").await;
}

/// Broke before the fix (as [`set_role_reaches_the_next_checkout`]): `SET SESSION AUTHORIZATION`,
/// which not even `RESET ROLE` undoes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_session_authorization_reaches_the_next_checkout() {
    role_left("adv_auth_", "SET SESSION AUTHORIZATION").await;
}

/// `SET idle_session_timeout` ends the pooled session while it waits in
/// the pool; the next checkout must still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_timeout_does_not_fail_the_next_checkout() {
    let (_db, tenancy, a, b) = setup("adv_idle_").await;
    let router = tenancy.router();
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.batch_execute("SET idle_session_timeout = '100ms'")
        .await
        .unwrap();
    drop(conn);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let conn = router.connection_for_schema(&b).await.unwrap();
    conn.query_one("SELECT 1", &[]).await.unwrap();
    drop(conn);
    tokio::time::sleep(Duration::from_millis(500)).await;
    tenancy
        .create_tenant(NewTenant::new(schema("adv_idle_c")))
        .await
        .unwrap();
}

/// Settings the reader does see, spelt in the ways a red team tried: each is reset
/// before the next checkout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_the_reader_sees_are_reset() {
    let (_db, tenancy, a, b) = setup("adv_seen_").await;
    let router = tenancy.router();
    let clean = settings_of(router, &b).await;
    let names = [
        "app.token",
        "default_transaction_isolation",
        "TimeZone",
        "xmloption",
        "work_mem",
        "search_path",
    ];
    let mut before = Vec::new();
    for n in names {
        before.push(one_setting(router, &b, n).await);
    }
    for sql in [
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET TIME ZONE 'Pacific/Chatham'",
        "SET XML OPTION DOCUMENT",
        "SET SCHEMA 'pg_catalog'",
        "DO $$ BEGIN PERFORM set_config('app.token', 'a-secret', false); END $$",
        "DO $$ BEGIN EXECUTE 'SET work_mem = ''1234kB'''; END $$",
        "WITH x AS (SELECT set_config('app.token', 'a-secret', false)) SELECT * FROM x",
        "SELECT set_config/**/('app.token', 'a-secret', false)",
        "SELECT set_config('app.token', 'a-secret', 'f')",
        "SELECT set_config('app.token', set_config('work_mem', '1234kB', false), true)",
        "SELECT * FROM set_config('app.token', 'a-secret', false)",
        "select 1; /* ; */ set app.token = 'a-secret'",
        "SELECT query_to_xml('SELECT set_config(''app.token'', ''a-secret'', false)', true, false, '')",
    ] {
        let conn = router.connection_for_schema(&a).await.unwrap();
        conn.batch_execute(sql).await.unwrap();
        drop(conn);
        for (n, want) in names.iter().zip(&before) {
            if *n == "search_path" {
                continue;
            }
            assert_eq!(&one_setting(router, &b, n).await, want, "{sql}: {n}");
        }
    }
    // Prepared on the scope, then run twice: marked each time.
    let conn = router.connection_for_schema(&a).await.unwrap();
    let stmt = conn
        .prepare("SELECT set_config('app.token', $1, false)")
        .await
        .unwrap();
    conn.query(&stmt, &[&"a-secret"]).await.unwrap();
    drop(conn);
    assert_eq!(settings_of(router, &b).await.0, "");
    // A SET inside a committed transaction.
    let mut conn = router.connection_for_schema(&a).await.unwrap();
    let tx = conn.transaction().await.unwrap();
    tx.execute("UPDATE notes SET body = body", &[])
        .await
        .unwrap();
    tx.batch_execute("SET work_mem = '1234kB'").await.unwrap();
    tx.commit().await.unwrap();
    drop(conn);
    assert_eq!(settings_of(router, &b).await, clean);
}

/// A tiny `statement_timeout` or `lock_timeout` a tenant sets with plain `SET` does not
/// make the next tenant's switch or the library's own migration fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_timeouts_do_not_reach_the_next_tenant_or_the_library() {
    let (_db, tenancy, a, b) = setup("adv_tiny_").await;
    let router = tenancy.router();
    for round in 0..3 {
        let conn = router.connection_for_schema(&a).await.unwrap();
        conn.batch_execute("SET statement_timeout = '1ms'; SET lock_timeout = '1ms'")
            .await
            .unwrap();
        drop(conn);
        let conn = router.connection_for_schema(&b).await.unwrap();
        conn.query_one("SELECT pg_sleep(0.05)", &[])
            .await
            .unwrap_or_else(|e| panic!("round {round}: the next tenant: {e}"));
        drop(conn);
    }
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.batch_execute("SET statement_timeout = '1ms'")
        .await
        .unwrap();
    drop(conn);
    tenancy
        .create_tenant(NewTenant::new(schema("adv_tiny_c")))
        .await
        .unwrap();
}

/// Broke before the fix (the library's own work): after a tenant's `SET SESSION AUTHORIZATION` to a
/// role without privileges, the library's next `create_tenant` on the pooled connection runs its
/// migrations as that role (`RESET ALL` does not touch it, no `RESET SESSION AUTHORIZATION` is
/// sent) and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_authorization_left_by_a_tenant_fails_the_librarys_own_work() {
    let (db, tenancy, a, _b) = setup("adv_authlib_").await;
    let admin = db.pool().get().await.unwrap();
    admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE adv_authlib_other NOLOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        )
        .await
        .unwrap();
    drop(admin);
    let conn = tenancy.router().connection_for_schema(&a).await.unwrap();
    conn.batch_execute("SET SESSION AUTHORIZATION adv_authlib_other")
        .await
        .unwrap();
    drop(conn);
    let created = tenancy
        .create_tenant(NewTenant::new(schema("adv_authlib_c")))
        .await;
    assert!(
        created.is_ok(),
        "create_tenant after a tenant's SET SESSION AUTHORIZATION: {:?}",
        created.err()
    );
}

/// A `Tenancy` in `SearchPathMode::Transaction` over a pool of one direct connection (as a
/// transaction pooler with one server connection would hand it on), tenants a and b.
async fn transaction_mode(prefix: &str) -> (TestDatabase, Tenancy, SchemaName, SchemaName) {
    setup_in(prefix, tenant_schemas::SearchPathMode::Transaction).await
}

/// In transaction mode the core refuses the session settings it can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_refuses_the_settings_it_reads() {
    let (_db, tenancy, a, _b) = transaction_mode("adv_txref_").await;
    let conn = tenancy.router().connection_for_schema(&a).await.unwrap();
    for sql in [
        "SET work_mem = '1234kB'",
        "SELECT set_config('app.token', 'a-secret', false)",
        "DO $$ BEGIN PERFORM set_config('app.token', 'a-secret', false); END $$",
    ] {
        assert!(conn.batch_execute(sql).await.is_err(), "{sql}");
    }
}

/// Broke before the fix (transaction mode): `UPDATE pg_settings` is a session `SET` the reader does
/// not see, so transaction mode does not refuse it, and the setting stays on the server connection
/// for the next checkout (no `RESET ALL` is ever sent in transaction mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_lets_update_of_pg_settings_through_to_the_next_checkout() {
    let (_db, tenancy, a, b) = transaction_mode("adv_txpgs_").await;
    let router = tenancy.router();
    let clean = settings_of(router, &b).await;
    let conn = router.connection_for_schema(&a).await.unwrap();
    let sent = conn
        .execute(
            "UPDATE pg_settings SET setting = '1234kB' WHERE name = 'work_mem'",
            &[],
        )
        .await;
    drop(conn);
    if sent.is_ok() {
        assert_eq!(settings_of(router, &b).await, clean, "the next tenant");
    }
}
