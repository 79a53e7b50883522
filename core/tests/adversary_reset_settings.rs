//! Red team: `reset_settings(true)` (session mode) promises that every checkout starts from
//! the connection's startup settings — even those made inside functions and triggers the SQL
//! reader cannot see — that the library's own work resets first too, and that what a scope
//! sets itself stays for the rest of that scope.
//!
//! Every test runs on a pool of ONE connection, so each checkout reuses the same session.
//! Tests marked `Broke` failed when written (each asserts the promised behaviour) and pass since
//! their fix; the others held when first tried.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{
    scope, ConnectionScope, NewTenant, RunOptions, SchemaName, SchemaRouter, SearchPathMode,
    Tenancy, TenantRoles, TenantStatus,
};

/// What the probe reads: settings a hostile function sets, and who the session runs as.
const PROBE: &str = "SELECT coalesce(current_setting('app.token', true), '') \
     || '|' || current_setting('work_mem') \
     || '|' || current_setting('lock_timeout') \
     || '|' || current_setting('default_transaction_isolation') \
     || '|' || current_setting('default_transaction_read_only') \
     || '|' || current_setting('DateStyle') \
     || '|' || current_setting('TimeZone') \
     || '|' || current_setting('bytea_output') \
     || '|' || current_setting('standard_conforming_strings') \
     || '|' || current_setting('enable_seqscan') \
     || '|' || current_setting('client_min_messages') \
     || '|' || current_setting('row_security') \
     || '|' || current_setting('idle_in_transaction_session_timeout') \
     || '|' || session_user || '|' || current_user";

async fn probe(db: &ConnectionScope) -> String {
    db.query_one(PROBE, &[]).await.unwrap().get(0)
}

async fn probe_of(router: &SchemaRouter, schema: &SchemaName) -> String {
    probe(&router.connection_for_schema(schema).await.unwrap()).await
}

/// `public.leave_all(who)`: sets, for the session, every setting the probe reads (the reader
/// sees a plain `SELECT`); `public.become(who)`: sets the session authorization and role;
/// `public.stamp()`: a trigger on `notes` calling `leave_all`.
async fn hostile_functions(tenancy: &Tenancy, tenants: &[&SchemaName]) {
    let raw = tenancy.router().pool().get().await.unwrap();
    raw.batch_execute(
        "DO $$ BEGIN CREATE ROLE rt_nobody NOLOGIN; \
           EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
         CREATE FUNCTION public.leave_all(who text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN \
           PERFORM set_config('app.token', who, false); \
           PERFORM set_config('work_mem', '1234kB', false); \
           PERFORM set_config('lock_timeout', '1ms', false); \
           PERFORM set_config('default_transaction_isolation', 'serializable', false); \
           PERFORM set_config('DateStyle', 'German, DMY', false); \
           PERFORM set_config('TimeZone', 'Pacific/Chatham', false); \
           PERFORM set_config('bytea_output', 'escape', false); \
           PERFORM set_config('standard_conforming_strings', 'off', false); \
           PERFORM set_config('enable_seqscan', 'off', false); \
           PERFORM set_config('client_min_messages', 'error', false); \
           PERFORM set_config('row_security', 'off', false); \
           PERFORM set_config('idle_in_transaction_session_timeout', '1h', false); \
           PERFORM set_config('default_transaction_read_only', 'on', false); \
           RETURN who; END $$; \
         CREATE FUNCTION public.become(who text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN \
           PERFORM set_config('session_authorization', who, false); \
           PERFORM set_config('role', who, false); \
           RETURN who; END $$; \
         GRANT USAGE ON SCHEMA public TO rt_nobody; \
         CREATE FUNCTION public.stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           PERFORM public.leave_all(NEW.body); RETURN NEW; END $$",
    )
    .await
    .unwrap();
    for s in tenants {
        raw.batch_execute(&format!(
            "CREATE TRIGGER stamp BEFORE INSERT ON {}.notes \
             FOR EACH ROW EXECUTE FUNCTION public.stamp()",
            s.quoted()
        ))
        .await
        .unwrap();
    }
}

/// A database, a tenancy with `reset_settings(true)` over ONE connection, tenants `a`, `b`.
async fn setup(prefix: &str) -> (TestDatabase, Tenancy, SchemaName, SchemaName) {
    setup_with(prefix, SearchPathMode::Session, None).await
}

async fn setup_with(
    prefix: &str,
    mode: SearchPathMode,
    roles: Option<TenantRoles>,
) -> (TestDatabase, Tenancy, SchemaName, SchemaName) {
    let db = database().await;
    let mut builder = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .search_path_mode(mode)
        .reset_settings(true);
    if let Some(roles) = roles {
        builder = builder.tenant_roles(roles);
    }
    let tenancy = builder.build().await.unwrap();
    let (a, b) = (schema(&format!("{prefix}a")), schema(&format!("{prefix}b")));
    for s in [&a, &b] {
        tenancy
            .create_tenant(NewTenant::new(s.clone()))
            .await
            .unwrap();
    }
    hostile_functions(&tenancy, &[&a, &b]).await;
    (db, tenancy, a, b)
}

/// Every door of a scope through which a function's settings are left, each followed by the
/// next checkout of another tenant, of the same tenant, and of `public` by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_door_leaves_a_function_s_settings_to_the_next_checkout() {
    let (_db, tenancy, a, b) = setup("rsd_").await;
    let router = tenancy.router();
    let clean = probe_of(router, &b).await;
    assert_eq!(probe_of(router, &a).await, clean);
    assert!(clean.starts_with("|"), "{clean}");
    for how in [
        "query_one",
        "query",
        "query_opt",
        "execute",
        "prepare",
        "batch_execute",
        "simple_query",
        "tx_commit",
        "tx_rollback_after_commit_of_savepoint",
        "trigger",
        "become",
        "ensure_then_query",
    ] {
        let mut conn = router.connection_for_schema(&a).await.unwrap();
        let q = "SELECT public.leave_all('a-secret')";
        match how {
            "query_one" => drop(conn.query_one(q, &[]).await.unwrap()),
            "query" => drop(conn.query(q, &[]).await.unwrap()),
            "query_opt" => drop(conn.query_opt(q, &[]).await.unwrap()),
            "execute" => drop(conn.execute(q, &[]).await.unwrap()),
            "prepare" => {
                let stmt = conn.prepare("SELECT public.leave_all($1)").await.unwrap();
                conn.query_one(&stmt, &[&"a-secret"]).await.unwrap();
            }
            "batch_execute" => conn.batch_execute(q).await.unwrap(),
            "simple_query" => drop(conn.simple_query(q).await.unwrap()),
            "tx_commit" => {
                let tx = conn.transaction().await.unwrap();
                tx.query_one(q, &[]).await.unwrap();
                tx.commit().await.unwrap();
            }
            "tx_rollback_after_commit_of_savepoint" => {
                // A session setting made in a transaction is undone by its rollback: the
                // first transaction commits it, the second rolls back only its own work.
                let tx = conn.transaction().await.unwrap();
                tx.query_one(q, &[]).await.unwrap();
                tx.commit().await.unwrap();
                let tx = conn.transaction().await.unwrap();
                tx.query_one("SELECT 1", &[]).await.unwrap();
                tx.rollback().await.unwrap();
            }
            "trigger" => drop(
                conn.execute("INSERT INTO notes (body) VALUES ('a-secret')", &[])
                    .await
                    .unwrap(),
            ),
            "become" => {
                conn.query_one("SELECT public.become('rt_nobody')", &[])
                    .await
                    .unwrap();
            }
            _ => {
                conn.ensure_search_path().await.unwrap();
                conn.query_one(q, &[]).await.unwrap();
            }
        }
        drop(conn);
        assert_eq!(probe_of(router, &b).await, clean, "{how}: the next tenant");
        assert_eq!(probe_of(router, &a).await, clean, "{how}: the same tenant");
        // Left again, then `public` by name.
        let conn = router.connection_for_schema(&a).await.unwrap();
        conn.query_one(q, &[]).await.unwrap();
        drop(conn);
        assert_eq!(
            probe(&router.public().await.unwrap()).await,
            clean,
            "{how}: public by name"
        );
    }
}

/// The tenant in scope (`Tenancy::connection`), a `for_each_tenant` job, a read-only tenant
/// and a tenant with a `statement_timeout` as the next checkout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_checkouts_find_the_session_clean() {
    let (_db, tenancy, a, b) = setup("rso_").await;
    let router = tenancy.router();
    let clean = probe_of(router, &b).await;
    let leave = || async {
        let conn = router.connection_for_schema(&a).await.unwrap();
        conn.query_one("SELECT public.leave_all('a-secret')", &[])
            .await
            .unwrap();
    };

    leave().await;
    let t = tenancy.registry().get(&b).await.unwrap().tenant();
    let seen = scope::run(t, async {
        probe(&tenancy.connection().await.unwrap()).await
    })
    .await;
    assert_eq!(seen, clean, "the tenant in scope");

    leave().await;
    let options = RunOptions {
        schemas: vec![b.clone()],
        parallel: 1,
        ..RunOptions::default()
    };
    let seen = tenancy
        .for_each_tenant(&options, |_| {
            let tenancy = tenancy.clone();
            async move { Ok(probe(&tenancy.connection().await?).await) }
        })
        .await
        .unwrap();
    assert_eq!(seen[0].1.as_ref().unwrap(), &clean, "a job");

    // A read-only tenant: its own switch sets read-only; the rest must be clean.
    let ro = schema("rso_ro");
    tenancy
        .create_tenant(NewTenant::new(ro.clone()))
        .await
        .unwrap();
    tenancy
        .set_status(&ro, TenantStatus::ReadOnly)
        .await
        .unwrap();
    // (Its scope refuses SQL naming `transaction_read_only`: that column is left out.)
    let probe_ro = PROBE.replace("current_setting('default_transaction_read_only')", "'-'");
    let read = |s: SchemaName| {
        let probe_ro = probe_ro.clone();
        async move {
            let conn = router.connection_for_schema(&s).await.unwrap();
            conn.query_one(probe_ro.as_str(), &[])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    let clean_ro = read(b.clone()).await;
    leave().await;
    assert_eq!(read(ro.clone()).await, clean_ro, "a read-only tenant");
    // A tenant with a statement timeout.
    let slow = schema("rso_slow");
    tenancy
        .create_tenant(NewTenant::new(slow.clone()))
        .await
        .unwrap();
    tenancy
        .set_statement_timeout(&slow, Some(Duration::from_millis(5000)))
        .await
        .unwrap();
    leave().await;
    assert_eq!(probe_of(router, &slow).await, clean, "a timed tenant");
    // And back to a plain tenant after the read-only and the timed one.
    let conn = router.connection_for_schema(&ro).await.unwrap();
    let _ = conn.query_one("SELECT public.leave_all('ro')", &[]).await;
    drop(conn);
    assert_eq!(
        probe_of(router, &b).await,
        clean,
        "after the read-only tenant"
    );
}

/// The library's own work after a function left read-only, a 1 ms lock timeout, another
/// session authorization and role: create, migrate, list, state change, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_s_own_work_resets_first() {
    let (_db, tenancy, a, b) = setup("rsl_").await;
    let router = tenancy.router();
    let leave = || async {
        let conn = router.connection_for_schema(&a).await.unwrap();
        conn.query_one("SELECT public.leave_all('a-secret')", &[])
            .await
            .unwrap();
        conn.query_one("SELECT public.become('rt_nobody')", &[])
            .await
            .unwrap();
    };
    leave().await;
    tenancy
        .create_tenant(NewTenant::new(schema("rsl_c")))
        .await
        .unwrap();
    leave().await;
    tenancy.migrate(&RunOptions::default(), None).await.unwrap();
    leave().await;
    assert!(tenancy.registry().list().await.unwrap().len() >= 3);
    leave().await;
    tenancy
        .set_status(&b, TenantStatus::ReadOnly)
        .await
        .unwrap();
    leave().await;
    tenancy.set_status(&b, TenantStatus::Active).await.unwrap();
    leave().await;
    tenancy
        .delete_tenant(&schema("rsl_c"), tenant_schemas::DropSchema::Yes)
        .await
        .unwrap();
}

/// A checkout whose first call does not complete — cancelled while the switch (with the
/// resets) is on its way, or failing behind the switch in the same message — still finds,
/// and leaves, the session clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_call_that_fails_or_is_cancelled_still_resets() {
    let (_db, tenancy, a, b) = setup("rsc_").await;
    let router = tenancy.router();
    let clean = probe_of(router, &b).await;
    // Cache a failing statement for `b`, so it travels behind the switch.
    let conn = router.connection_for_schema(&b).await.unwrap();
    let _ = conn.query_one("SELECT 1 / (0 * $1::int)", &[&1i32]).await;
    drop(conn);
    for how in [
        "cancelled",
        "failing",
        "cancelled_then_drop",
        "missing_table",
    ] {
        let conn = router.connection_for_schema(&a).await.unwrap();
        conn.query_one("SELECT public.leave_all('a-secret')", &[])
            .await
            .unwrap();
        drop(conn);
        let conn = router.connection_for_schema(&b).await.unwrap();
        match how {
            "cancelled" | "cancelled_then_drop" => {
                let _ = tokio::time::timeout(
                    Duration::from_millis(50),
                    conn.query_one("SELECT pg_sleep(0.3)::text", &[]),
                )
                .await;
            }
            "failing" => {
                conn.query_one("SELECT 1 / (0 * $1::int)", &[&1i32])
                    .await
                    .unwrap_err();
            }
            _ => {
                conn.query_one("SELECT * FROM no_such_table", &[])
                    .await
                    .unwrap_err();
            }
        }
        if how != "cancelled_then_drop" {
            assert_eq!(probe(&conn).await, clean, "{how}: the same scope");
        }
        drop(conn);
        assert_eq!(
            probe_of(router, &b).await,
            clean,
            "{how}: the next checkout"
        );
    }
}

/// What a scope sets itself stays for the rest of that scope, through failures, transactions
/// (committed and rolled back), cancelled calls and calls run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_keeps_what_it_set_itself() {
    let (_db, tenancy, a, _b) = setup("rsk_").await;
    let router = tenancy.router();
    // Cache statements for `a`, so later ones travel behind the switch.
    let conn = router.connection_for_schema(&a).await.unwrap();
    let work_mem = "SELECT current_setting('work_mem')";
    conn.query_one(work_mem, &[]).await.unwrap();
    let _ = conn.query_one("SELECT 1 / (0 * $1::int)", &[&1i32]).await;
    drop(conn);
    for how in [
        "failing",
        "tx_rollback",
        "tx_commit",
        "cancelled",
        "join",
        "join_reversed",
        "function",
        "failing_first",
    ] {
        let mut conn = router.connection_for_schema(&a).await.unwrap();
        match how {
            "join" => {
                let (set, _) = futures_util::future::join(
                    conn.batch_execute("SET work_mem = '777kB'"),
                    conn.query_one(work_mem, &[]),
                )
                .await;
                set.unwrap();
            }
            "join_reversed" => {
                let (_, set) = futures_util::future::join(
                    conn.query_one(work_mem, &[]),
                    conn.batch_execute("SET work_mem = '777kB'"),
                )
                .await;
                set.unwrap();
            }
            "function" => {
                conn.query_one("SELECT set_config('work_mem', '777kB', false)", &[])
                    .await
                    .unwrap();
            }
            "failing_first" => {
                conn.query_one("SELECT 1 / (0 * $1::int)", &[&1i32])
                    .await
                    .unwrap_err();
                conn.batch_execute("SET work_mem = '777kB'").await.unwrap();
            }
            _ => conn.batch_execute("SET work_mem = '777kB'").await.unwrap(),
        }
        match how {
            "failing" => {
                conn.query_one("SELECT 1 / (0 * $1::int)", &[&1i32])
                    .await
                    .unwrap_err();
            }
            "tx_rollback" => {
                let tx = conn.transaction().await.unwrap();
                tx.batch_execute("SELECT 1").await.unwrap();
                tx.rollback().await.unwrap();
            }
            "tx_commit" => {
                let tx = conn.transaction().await.unwrap();
                tx.batch_execute("SELECT 1").await.unwrap();
                tx.commit().await.unwrap();
            }
            "cancelled" => {
                let _ = tokio::time::timeout(
                    Duration::from_millis(50),
                    conn.query_one("SELECT pg_sleep(0.3)::text", &[]),
                )
                .await;
            }
            _ => {}
        }
        // A session-changing statement in between makes the scope switch again.
        conn.batch_execute("SET lock_timeout = '2s'").await.unwrap();
        let seen: String = conn.query_one(work_mem, &[]).await.unwrap().get(0);
        assert_eq!(seen, "777kB", "{how}: the scope's own setting");
        let _ = &mut conn;
    }
}

/// Transaction mode with the option (every transaction begins with the resets): statements,
/// transactions, tenant creation and migrations are served as without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_with_the_option_serves_as_without() {
    let (_db, tenancy, a, b) = setup_with("rst_", SearchPathMode::Transaction, None).await;
    let router = tenancy.router();
    let mut conn = router.connection_for_schema(&a).await.unwrap();
    conn.execute("INSERT INTO marker VALUES ($1)", &[&a.as_str()])
        .await
        .unwrap();
    assert_eq!(marker_of(&conn).await, a.as_str());
    let tx = conn.transaction().await.unwrap();
    tx.execute("INSERT INTO marker VALUES ('x')", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drop(conn);
    let conn = router.connection_for_schema(&b).await.unwrap();
    conn.execute("INSERT INTO marker VALUES ($1)", &[&b.as_str()])
        .await
        .unwrap();
    assert_eq!(marker_of(&conn).await, b.as_str());
    drop(conn);
    tenancy
        .create_tenant(NewTenant::new(schema("rst_c")))
        .await
        .unwrap();
    tenancy.migrate(&RunOptions::default(), None).await.unwrap();
}

/// Role mode: a function a tenant may call leaves settings; the next tenant's checkout runs
/// under its own role with clean settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_mode_resets_too() {
    let (_db, tenancy, a, b) = setup_with(
        "rsr_",
        SearchPathMode::Session,
        Some(TenantRoles::new().tenant_ddl(true)),
    )
    .await;
    let router = tenancy.router();
    let clean = probe_of(router, &b).await;
    let clean_a = probe_of(router, &a).await;
    for _ in 0..2 {
        let conn = router.connection_for_schema(&a).await.unwrap();
        conn.query_one("SELECT public.leave_all('a-secret')", &[])
            .await
            .unwrap();
        drop(conn);
        assert_eq!(probe_of(router, &b).await, clean, "the next tenant");
        assert_eq!(probe_of(router, &a).await, clean_a, "the same tenant");
    }
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.query_one("SELECT public.leave_all('a-secret')", &[])
        .await
        .unwrap();
    drop(conn);
    tenancy
        .create_tenant(NewTenant::new(schema("rsr_c")))
        .await
        .unwrap();
}

/// `session_replication_role = replica`, set inside a function (the login role may: a
/// superuser), turns off the next tenant's triggers and foreign keys; `RESET ALL` must undo it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_s_replication_role_does_not_reach_the_next_tenant() {
    let (_db, tenancy, a, b) = setup("rsrr_").await;
    let router = tenancy.router();
    let raw = router.pool().get().await.unwrap();
    raw.batch_execute(
        "CREATE FUNCTION public.replica() RETURNS text LANGUAGE sql AS \
         $$ SELECT set_config('session_replication_role', 'replica', false) $$",
    )
    .await
    .unwrap();
    drop(raw);
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.query_one("SELECT public.replica()", &[])
        .await
        .unwrap();
    drop(conn);
    let seen: String = router
        .connection_for_schema(&b)
        .await
        .unwrap()
        .query_one("SELECT current_setting('session_replication_role')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, "origin");
}

/// Tenant `a`'s function call leaves temporary tables `notes` and `cache`
/// (`CREATE TEMP TABLE IF NOT EXISTS` in a PL/pgSQL body) on the only connection: tenant `b`'s
/// next checkout neither reads `a`'s `notes` instead of its own nor finds `a`'s `cache` rows in
/// its own call of the function, and `b`'s own temporary table stays through a later switch of
/// its scope (a `SET` makes the path unknown).
async fn function_temporary_tables_stay_with_their_scope(
    tenancy: &Tenancy,
    a: &SchemaName,
    b: &SchemaName,
) {
    let router = tenancy.router();
    let raw = router.pool().get().await.unwrap();
    raw.batch_execute(
        "CREATE FUNCTION public.plant(who text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN \
           CREATE TEMP TABLE IF NOT EXISTS notes (id bigint, body text); \
           CREATE TEMP TABLE IF NOT EXISTS cache (body text); \
           INSERT INTO notes VALUES (1, 'planted by ' || who); \
           INSERT INTO cache VALUES ('cached for ' || who); RETURN 'ok'; END $$",
    )
    .await
    .unwrap();
    drop(raw);
    let conn = router.connection_for_schema(a).await.unwrap();
    conn.query_one("SELECT public.plant('a')", &[])
        .await
        .unwrap();
    drop(conn);

    let conn = router.connection_for_schema(b).await.unwrap();
    let bodies: Vec<String> = conn
        .query("SELECT body FROM notes", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        bodies.is_empty(),
        "tenant b's `notes` resolved to tenant a's temporary table: {bodies:?}"
    );
    // Tenant b's own call of the same function finds no `cache` of tenant a's.
    conn.query_one("SELECT public.plant('b')", &[])
        .await
        .unwrap();
    let cached: Vec<String> = conn
        .query("SELECT body FROM cache ORDER BY body", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(cached, ["cached for b"]);
    // A later switch of the same scope keeps them.
    conn.batch_execute("SET work_mem = '2MB'").await.unwrap();
    let cached: i64 = conn
        .query_one("SELECT count(*) FROM cache", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        cached, 1,
        "the scope's own temporary table, after a re-switch"
    );
}

/// Broke: a user would lose tenant isolation: tenant b reads and writes tenant a's rows. Fixed:
/// every checkout's first switch sends `DISCARD TEMP` (with the option, the library's own work
/// too).
///
/// A temporary table a function creates (`pg_temp` is searched before the tenant's path)
/// must not shadow the next tenant's table on the same connection: the next tenant would read
/// and write another tenant's rows. (A session object, not a setting: the README promises it
/// for `CREATE TEMP` in SQL text.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_table_a_function_creates_does_not_shadow_the_next_tenant_s() {
    let (_db, tenancy, a, b) = setup("rstmp_").await;
    function_temporary_tables_stay_with_their_scope(&tenancy, &a, &b).await;
}

/// Broke: a user would lose, mid-scope, what their own call set (an RLS policy's `app.user`).
/// Fixed: a row count the driver refused counts as the switch's success (the `_after` methods
/// read to the end first, so a commit that failed is still seen).
///
/// What a scope's statement sets through a function stays for the rest of the scope, even when
/// the driver answers that statement with an error of its own after the server ran (and
/// committed) it: `query_one` on two rows (or none), `query_opt` on two. Cached for the tenant,
/// the statement travels behind the checkout's first switch (`run_switching`), whose resets are
/// marked done only when the statement's result is `Ok`: the scope's next call resets again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_side_error_behind_the_first_switch_does_not_reset_the_scope_again() {
    let (_db, tenancy, a, _b) = setup("rsdr_").await;
    let router = tenancy.router();
    let two = "SELECT public.leave_all('a-' || g) FROM generate_series(1, 2) g";
    // Cached for `a` on the connection (the error is the driver's: the rows came back).
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.query_one(two, &[]).await.unwrap_err();
    drop(conn);
    for how in ["query_one", "query_opt"] {
        let conn = router.connection_for_schema(&a).await.unwrap();
        // The checkout's first call: the server runs it (both rows), the driver refuses it.
        let err = match how {
            "query_one" => conn.query_one(two, &[]).await.map(drop).unwrap_err(),
            _ => conn.query_opt(two, &[]).await.map(drop).unwrap_err(),
        };
        assert!(err.to_string().contains("row"), "{how}: {err}");
        let seen: String = conn
            .query_one(
                "SELECT coalesce(current_setting('app.token', true), '')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            seen, "a-2",
            "{how}: the scope's own setting, right after its call"
        );
    }
}

/// Control for the test above: without `reset_settings` the scope keeps what its call set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_option_a_driver_side_error_keeps_the_scope_s_setting() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let a = schema("rsdc_a");
    tenancy
        .create_tenant(NewTenant::new(a.clone()))
        .await
        .unwrap();
    hostile_functions(&tenancy, &[&a]).await;
    let router = tenancy.router();
    let two = "SELECT public.leave_all('a-' || g) FROM generate_series(1, 2) g";
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.query_one(two, &[]).await.unwrap_err();
    drop(conn);
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.query_one(two, &[]).await.map(drop).unwrap_err();
    let seen: String = conn
        .query_one(
            "SELECT coalesce(current_setting('app.token', true), '')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, "a-2");
}

/// A statement behind the checkout's first switch that succeeds but whose implicit
/// transaction fails at commit (a deferred foreign key): the switch and its resets roll back
/// with it, so neither may be trusted: the next call must switch (and reset) again, never run
/// on the previous checkout's path with its settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_time_failure_behind_the_switch_is_not_taken_for_a_switch() {
    let (_db, tenancy, a, b) = setup("rscm_").await;
    let router = tenancy.router();
    let raw = router.pool().get().await.unwrap();
    raw.batch_execute(&format!(
        "CREATE TABLE {b}.parent (id int PRIMARY KEY); \
         CREATE TABLE {b}.child (pid int REFERENCES {b}.parent DEFERRABLE INITIALLY DEFERRED); \
         INSERT INTO {a}.marker VALUES ('{an}'); INSERT INTO {b}.marker VALUES ('{bn}')",
        a = a.quoted(),
        b = b.quoted(),
        an = a.as_str(),
        bn = b.as_str()
    ))
    .await
    .unwrap();
    drop(raw);
    let clean = probe_of(router, &b).await;
    let insert = "INSERT INTO child VALUES (1)";
    // Cached for `b`.
    let conn = router.connection_for_schema(&b).await.unwrap();
    let _ = conn.execute(insert, &[]).await;
    let _ = conn.query(insert, &[]).await;
    let _ = conn.query_one(insert, &[]).await;
    drop(conn);
    let two = "INSERT INTO child VALUES (1), (2) RETURNING pid";
    let conn = router.connection_for_schema(&b).await.unwrap();
    let _ = conn.query_one(two, &[]).await;
    drop(conn);
    for how in ["execute", "query", "query_opt", "query_one_two_rows"] {
        let conn = router.connection_for_schema(&a).await.unwrap();
        conn.query_one("SELECT public.leave_all('a-secret')", &[])
            .await
            .unwrap();
        drop(conn);
        let conn = router.connection_for_schema(&b).await.unwrap();
        let failed = match how {
            "execute" => conn.execute(insert, &[]).await.is_err(),
            "query" => conn.query(insert, &[]).await.is_err(),
            // Two rows, then the failed commit: a row-count error must not hide it.
            "query_one_two_rows" => conn.query_one(two, &[]).await.is_err(),
            _ => conn.query_opt(insert, &[]).await.is_err(),
        };
        assert!(failed, "{how}: the commit failed");
        assert_eq!(marker_of(&conn).await, b.as_str(), "{how}: the path");
        assert_eq!(probe(&conn).await, clean, "{how}: the settings");
    }
}

/// Without `reset_settings` too (the default): a temporary table a function created
/// (`CREATE TEMP TABLE IF NOT EXISTS` in a PL/pgSQL body, a common pattern) is dropped by the
/// next tenant's first switch, so it neither shadows that tenant's table nor hands it the last
/// tenant's rows; a scope's own temporary table stays through its later switches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_function_s_temporary_table_does_not_reach_the_next_tenant() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let (a, b) = (schema("dftmp_a"), schema("dftmp_b"));
    for s in [&a, &b] {
        tenancy
            .create_tenant(NewTenant::new(s.clone()))
            .await
            .unwrap();
    }
    function_temporary_tables_stay_with_their_scope(&tenancy, &a, &b).await;
}
