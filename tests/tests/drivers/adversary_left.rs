//! Red-team attacks on "nothing one tenant's checkout leaves on a pooled connection — or on a
//! PgBouncer server connection — reaches another tenant's checkout". Each test asserts the
//! guaranteed behaviour. `Broke` marks a test that failed when written and passes since its
//! fix (every transaction-mode `BEGIN`, and with `reset_settings(true)` every session-mode
//! checkout's first switch, undo the core's `LEFT_OBJECTS`: temporary tables, held cursors,
//! sequence state); `Held` one that passed when first tried.

use sqlx::Executor;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{SchemaName, SearchPathMode, Tenancy, TenantRoles};
use tenant_schemas_sqlx::SqlxRouter;

use super::doors::{one_connection_core, sqlx_behind_one_server, sqlx_over_one_connection};

const READ: &str = "SELECT schema_name FROM marker";

/// Tenants `<prefix>0..2` over a session-mode `Tenancy` of one connection, and a sqlx router
/// in session mode over a pool of ONE direct connection with the registry's states.
async fn sqlx_session_one_connection(prefix: &str) -> (TestDatabase, SqlxRouter, Vec<SchemaName>) {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, prefix).await;
    let router = sqlx_over_one_connection(&db, &tenancy).await;
    (db, router, s)
}

/// `public.hijack(target)`: a PL/pgSQL function that replaces, on its session, every prepared
/// statement reading `marker` with one of the same name reading `<target>.marker`. The SQL
/// reader sees a `SELECT`.
const HIJACK: &str =
    "CREATE FUNCTION public.hijack(target text) RETURNS int LANGUAGE plpgsql AS $$ \
     DECLARE r record; n int := 0; \
     BEGIN FOR r IN SELECT name FROM pg_catalog.pg_prepared_statements \
                    WHERE statement LIKE '%FROM marker%' LOOP \
       EXECUTE format('DEALLOCATE %I', r.name); \
       EXECUTE format('PREPARE %I AS SELECT schema_name FROM %I.marker', r.name, target); \
       n := n + 1; \
     END LOOP; RETURN n; END $$";

/// Held, in role mode (core, session mode, direct pool of one connection). The core caches
/// each tenant's statements on the connection. Tenant `a` calls a function the application
/// created (the SQL reader sees a plain `SELECT`) that re-`PREPARE`s, under the same names,
/// the statements tenant `b` prepared there earlier, so that they read `a.marker`. Without
/// role mode `b`'s cached statement then runs `a`'s query and reads `a`'s rows (found by this
/// red team; README, "not guaranteed": without role mode SQL and functions can name any
/// schema anyway). In role mode `a`'s first switch on the connection drops every statement
/// on it (`DEALLOCATE ALL`), so `a`'s function finds none of `b`'s, and `b`'s next switch
/// drops whatever `a` left: `b` reads its own marker (before, its statement ran `a`'s query
/// under `b`'s role and was refused; see also `adversary_statements.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_mode_refuses_a_cached_statement_another_tenant_s_function_replaced() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .search_path_mode(SearchPathMode::Session)
        .reset_settings(true)
        .tenant_roles(TenantRoles::new())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "adl_cs", 2).await;
    let (a, b) = (&s[0], &s[1]);
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(HIJACK)
        .await
        .unwrap();
    let router = tenancy.router();
    let read_b = || async {
        let conn = router.connection_for_schema(b).await.unwrap();
        conn.query_one(READ, &[])
            .await
            .map(|r| r.get::<_, String>(0))
            .map_err(|e| e.to_string())
    };
    assert_eq!(read_b().await.unwrap(), b.as_str());
    let replaced: i32 = router
        .connection_for_schema(a)
        .await
        .unwrap()
        .query_one("SELECT public.hijack($1)", &[&a.as_str()])
        .await
        .unwrap()
        .get(0);
    let read = read_b().await;
    assert_eq!(
        read.as_deref(),
        Ok(b.as_str()),
        "tenant {a}'s function replaced {replaced} statement(s) on the connection; tenant \
         {b}'s read then returned {read:?}"
    );
}

/// Broke (minor: a value, not rows; fixed: `DISCARD SEQUENCES`). Sequence state is per
/// session and no reset cleared it: after tenant `a` inserts a note (its `notes_id_seq`
/// advances), tenant `b`'s checkout on the same server connection got `a`'s last id from
/// `lastval()` instead of "lastval is not yet defined in this session". Behind PgBouncer with sqlx in transaction mode (reset
/// on by default). What a user loses: another tenant's row count / ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_behind_pgbouncer_lastval_of_another_tenant() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "adl_lv").await;
    let (a, b) = (&s[0], &s[1]);
    let (_bouncer, router, _other) = sqlx_behind_one_server(&db, &tenancy, 1).await;
    for _ in 0..5 {
        let mut tx = router.begin_for(a).await.unwrap();
        sqlx::query("INSERT INTO notes (body) VALUES ('secret of a')")
            .persistent(false)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let mut tx = router.begin_for(b).await.unwrap();
    let last: Result<i64, sqlx::Error> = sqlx::query_scalar("SELECT lastval()")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await;
    drop(tx);
    assert!(
        last.is_err(),
        "tenant {b}'s lastval() returned tenant {a}'s last id: {last:?}"
    );
}

/// `public.keep_cursor()`: a PL/pgSQL function that leaves a cursor held open past its
/// transaction, over the caller's `marker`. The SQL reader sees a `SELECT`.
const KEEP_CURSOR: &str =
    "CREATE FUNCTION public.keep_cursor() RETURNS int LANGUAGE plpgsql AS $$ \
     BEGIN EXECUTE 'DECLARE left_open CURSOR WITH HOLD FOR SELECT schema_name FROM marker'; \
     RETURN 1; END $$";

/// Broke (fixed: `CLOSE ALL` at a checkout's first switch, with the option). Core, session
/// mode, direct pool of one connection, `reset_settings(true)`: a cursor held open (`WITH
/// HOLD`) by a function tenant `a` called — the SQL reader sees a plain `SELECT`, and a
/// checkout's first switch sent `DISCARD TEMP` and the resets, not `CLOSE ALL`. Tenant `b`'s
/// `FETCH ALL FROM left_open` returned `a`'s rows. (Without the option the first switch sends
/// `DISCARD TEMP` alone: README, "not guaranteed".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_session_cursor_held_by_a_function() {
    core_session_cursor_held(false, "adl_cc").await;
}

/// Broke (fixed as above). Core, session mode, role mode (`tenant_roles(TenantRoles::new())`),
/// one connection: as [`core_session_cursor_held_by_a_function`], under tenant roles. The
/// cursor's query ran under `a`'s role when the function opened it; `FETCH` checks no
/// privilege, so `b`, whose role the database itself refuses `a`'s schema, read `a`'s rows:
/// role mode's "the database refuses other tenants' schemas" was bypassed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_session_role_mode_cursor_held_by_a_function() {
    core_session_cursor_held(true, "adl_cr").await;
}

async fn core_session_cursor_held(roles: bool, prefix: &str) {
    let db = database().await;
    let mut builder = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .reset_settings(true);
    if roles {
        builder = builder.tenant_roles(TenantRoles::new());
    }
    let tenancy = builder.build().await.unwrap();
    let s = marked_tenants(&tenancy, prefix, 2).await;
    let (a, b) = (&s[0], &s[1]);
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(KEEP_CURSOR)
        .await
        .unwrap();
    let router = tenancy.router();
    let kept = router
        .connection_for_schema(a)
        .await
        .unwrap()
        .query_one("SELECT public.keep_cursor()", &[])
        .await;
    let conn = router.connection_for_schema(b).await.unwrap();
    let fetched = conn.query("FETCH ALL FROM left_open", &[]).await;
    let fetched: Result<Vec<String>, String> = fetched
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .map_err(|e| e.to_string());
    assert!(
        fetched.is_err(),
        "tenant {b} fetched from a cursor tenant {a}'s function held open (kept: {}): {fetched:?}",
        kept.is_ok()
    );
}

/// Held (sqlx, transaction mode behind PgBouncer, one server connection): tenant `a`
/// `PREPARE`s by SQL `peek AS SELECT schema_name FROM marker` in its transaction; the
/// statement outlives it on the server connection, but tenant `b`'s `EXECUTE peek` is parsed
/// again on `b`'s path (PostgreSQL re-parses a prepared statement when `search_path`
/// changed) and reads `b`'s own marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_behind_pgbouncer_execute_of_another_tenants_prepare() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "adl_ex").await;
    let (a, b) = (&s[0], &s[1]);
    let (_bouncer, router, _other) = sqlx_behind_one_server(&db, &tenancy, 1).await;
    let mut tx = router.begin_for(a).await.unwrap();
    tx.execute("PREPARE peek AS SELECT schema_name FROM marker")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = router.begin_for(b).await.unwrap();
    let read: Result<String, String> = sqlx::query_scalar("EXECUTE peek")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| e.to_string());
    drop(tx);
    assert_ne!(
        read.as_deref(),
        Ok(a.as_str()),
        "tenant {b}'s EXECUTE of tenant {a}'s prepared statement read {a}'s rows"
    );
}

/// Broke (minor: a value, not rows; fixed: `DISCARD SEQUENCES`). Core, session mode, direct
/// pool of one connection, `reset_settings(true)`: as
/// [`sqlx_behind_pgbouncer_lastval_of_another_tenant`], through the core's `ConnectionScope`:
/// tenant `b`'s `lastval()` returned tenant `a`'s last id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_session_lastval_of_another_tenant() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .reset_settings(true)
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "adl_cl", 2).await;
    let (a, b) = (&s[0], &s[1]);
    let router = tenancy.router();
    for _ in 0..5 {
        router
            .connection_for_schema(a)
            .await
            .unwrap()
            .execute("INSERT INTO notes (body) VALUES ('secret of a')", &[])
            .await
            .unwrap();
    }
    let last = router
        .connection_for_schema(b)
        .await
        .unwrap()
        .query_one("SELECT lastval()", &[])
        .await
        .map(|r| r.get::<_, i64>(0));
    assert!(
        last.is_err(),
        "tenant {b}'s lastval() returned tenant {a}'s last id: {last:?}"
    );
}

/// Held (sqlx, session mode, one direct connection): the cursor a function held open for
/// tenant `a` is seen by the next checkout's check (`pg_cursors`) and the connection closed;
/// tenant `b`'s `FETCH` finds no such cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_session_cursor_held_by_a_function() {
    let (db, router, s) = sqlx_session_one_connection("adl_sc").await;
    let (a, b) = (&s[0], &s[1]);
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(KEEP_CURSOR)
        .await
        .unwrap();
    {
        let mut conn = router.connection_for_schema(a).await.unwrap();
        conn.execute("SELECT public.keep_cursor()").await.unwrap();
    }
    let mut conn = router.connection_for_schema(b).await.unwrap();
    let fetched: Result<Vec<String>, sqlx::Error> = sqlx::query_scalar("FETCH ALL FROM left_open")
        .persistent(false)
        .fetch_all(&mut *conn)
        .await;
    assert!(
        fetched.is_err(),
        "tenant {b} fetched from a cursor tenant {a}'s function held open: {fetched:?}"
    );
}
