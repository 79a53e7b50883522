//! Red team of the session-mode switch sent in the statement's own implicit transaction
//! (`ConnectionScope::run_switching`: the switch as unnamed Parse/Bind/Execute in the same
//! message as a cached statement's Bind/Execute, one Sync).
//!
//! Each test attacks one guarantee: no statement runs on another tenant's path, under
//! another tenant's role or `statement_timeout`, and the library's memory of a pooled
//! connection's path never diverges from the server's. Pools of one connection make every
//! checkout reuse the last one's session; statements are run once first so that they are
//! cached and the next switch travels in front of them.
//!
//! What these tests found, and the fixes they hold in place:
//! - a switch's answer read after a session change sent later on the same scope marked the
//!   path as set (`a_late_read_answer_…`, `a_cancelled_session_change_…`): a switch now
//!   marks the path only if it was not forgotten since it was sent (both the pipelined
//!   switch and the one in the statement's message);
//! - `VACUUM`, `CREATE INDEX CONCURRENTLY`, `REINDEX … CONCURRENTLY`, cached, failed behind
//!   the switch (25001 "cannot be executed within a pipeline"): only plain statements travel
//!   behind it;
//! - statements deallocated where the library cannot see it (a function running `DEALLOCATE
//!   ALL`, a pool recycled with `DISCARD ALL`) failed with 26000 on every later use: the
//!   cache is emptied and the statement prepared again, and such a pool's cache is emptied
//!   at every checkout.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tenant_schemas::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::tokio_postgres::NoTls;
use tenant_schemas::{
    ConnectionScope, Error, NewTenant, SchemaName, SchemaRouter, SearchPathMode, Tenancy,
    TenantRoles,
};

/// What a statement sees: the marker row, `current_schema()`, the search path as shown,
/// `current_user` and `statement_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    marker: String,
    schema: String,
    path: String,
    user: String,
    timeout: String,
}

const STATE: &str = "SELECT (SELECT schema_name FROM marker), current_schema()::text, \
     current_setting('search_path'), current_user::text, current_setting('statement_timeout')";

async fn state_of(db: &ConnectionScope) -> Seen {
    let row = db.query_one(STATE, &[]).await.expect("state query");
    Seen {
        marker: row.get(0),
        schema: row.get(1),
        path: row.get(2),
        user: row.get(3),
        timeout: row.get(4),
    }
}

async fn fresh_state(router: &SchemaRouter, s: &SchemaName) -> Seen {
    let db = router.connection_for_schema(s).await.expect("connection");
    state_of(&db).await
}

/// What `s`'s statements must see: its marker, its schema, `<quoted s>, public`, `user`,
/// `timeout`.
async fn expected(pool: &Pool, s: &SchemaName, user: &str, timeout: &str) -> Seen {
    let quoted: String = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT quote_ident($1)", &[&s.as_str()])
        .await
        .unwrap()
        .get(0);
    Seen {
        marker: s.to_string(),
        schema: s.to_string(),
        path: format!("{quoted}, public"),
        user: user.to_owned(),
        timeout: timeout.to_owned(),
    }
}

/// A database whose own `statement_timeout` is 7 s, tenants `<prefix>0..n` over a pool of
/// `size`, `public.marker` = `PUBLIC`.
async fn setup(
    prefix: &str,
    n: usize,
    size: usize,
) -> (TestDatabase, Tenancy, Vec<SchemaName>, Pool) {
    setup_with(prefix, n, size, false).await
}

/// [`setup`], in role mode when `roles`.
async fn setup_with(
    prefix: &str,
    n: usize,
    size: usize,
    roles: bool,
) -> (TestDatabase, Tenancy, Vec<SchemaName>, Pool) {
    let db = database().await;
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET statement_timeout = '7s'",
            db.name()
        ))
        .await
        .unwrap();
    let pool = db.new_pool(size).unwrap();
    let mut builder = Tenancy::builder(pool.clone()).migrations(marker_and_notes());
    if roles {
        builder = builder.tenant_roles(TenantRoles::new());
    }
    let tenancy = builder.build().await.unwrap();
    let s = marked_tenants(&tenancy, prefix, n).await;
    // In role mode a raw connection is under whatever role the last checkout left.
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "RESET ROLE; CREATE TABLE public.marker (schema_name text NOT NULL);
             INSERT INTO public.marker VALUES ('PUBLIC')",
        )
        .await
        .unwrap();
    (db, tenancy, s, pool)
}

async fn login_role(pool: &Pool) -> String {
    pool.get()
        .await
        .unwrap()
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

fn code(err: &Error) -> String {
    sqlstate(err).unwrap_or_else(|| format!("{err}"))
}

// ---------------------------------------------------------------------------------------
// The probe: the tests below do run statements behind a switch in one transaction.
// ---------------------------------------------------------------------------------------

/// A cached statement that fails behind the switch takes the switch down with it: the only
/// connection is still on the other tenant's path afterwards. (The separate switch would
/// have left it on the failing tenant's path.) This shows the prelude path is exercised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_a_failing_statement_rolls_its_switch_back() {
    let (_db, tenancy, s, pool) = setup("rtp_probe_", 2, 1).await;
    let router = tenancy.router();
    let (a, b) = (&s[0], &s[1]);
    let db = router.connection_for_schema(a).await.unwrap();
    db.query("SELECT 1 / $1::int", &[&1i32]).await.unwrap();
    drop(db);
    fresh_state(router, b).await;
    let db = router.connection_for_schema(a).await.unwrap();
    let err = db.query("SELECT 1 / $1::int", &[&0i32]).await.unwrap_err();
    assert_eq!(code(&err), "22012");
    drop(db);
    let path: String = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT current_setting('search_path')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        path,
        format!("{b}, public"),
        "the switch to {a} rolled back"
    );
}

// ---------------------------------------------------------------------------------------
// 1. Statements failing behind the switch.
// ---------------------------------------------------------------------------------------

/// Unique violation, division by zero, a table dropped since the statement was cached, a
/// deferred constraint failing at the implicit commit, a client-side cardinality error:
/// each behind the switch, then the same scope, the other tenant and the first again on
/// the only connection see their own path, user and timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_behind_the_switch_leave_path_and_timeout_right() {
    let (_db, tenancy, s, pool) = setup("rtp_fail_", 2, 1).await;
    let router = tenancy.router();
    let (a, b) = (&s[0], &s[1]);
    tenancy
        .set_statement_timeout(a, Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    let user = login_role(&pool).await;
    let want_a = expected(&pool, a, &user, "1500ms").await;
    let want_b = expected(&pool, b, &user, "7s").await;
    for t in [a, b] {
        router
            .connection_for_schema(t)
            .await
            .unwrap()
            .batch_execute(
                "CREATE TABLE u (id int PRIMARY KEY); INSERT INTO u VALUES (1);
                 CREATE TABLE gone (x int);
                 CREATE TABLE p (id int PRIMARY KEY);
                 CREATE TABLE c (pid int REFERENCES p DEFERRABLE INITIALLY DEFERRED)",
            )
            .await
            .unwrap();
    }
    type Attempt = (&'static str, &'static str);
    let attempts: [Attempt; 5] = [
        ("unique", "INSERT INTO u VALUES (1)"),
        ("divide", "SELECT 1 / (SELECT count(*) - 1 FROM u)::int"),
        ("gone", "SELECT count(*) FROM gone"),
        ("deferred", "INSERT INTO c VALUES (42)"),
        ("cardinality", "SELECT * FROM generate_series(1, 2)"),
    ];
    for t in [a, b] {
        fresh_state(router, t).await;
    }
    let mut failures = Vec::new();
    for (what, sql) in attempts {
        // Cached for `a` (it may fail already: it is prepared and listed anyway).
        {
            let db = router.connection_for_schema(a).await.unwrap();
            let _ = db.query_one(sql, &[]).await;
            if what == "gone" {
                db.batch_execute("DROP TABLE gone").await.unwrap();
            }
        }
        let seen_b = fresh_state(router, b).await;
        assert_eq!(seen_b, want_b, "{what}: b before");
        let db = router.connection_for_schema(a).await.unwrap();
        let result = db.query_one(sql, &[]).await;
        assert!(result.is_err(), "{what}: {result:?}");
        let same = state_of(&db).await;
        drop(db);
        let next_b = fresh_state(router, b).await;
        let next_a = fresh_state(router, a).await;
        for (label, seen, want) in [
            ("same scope", &same, &want_a),
            ("next b", &next_b, &want_b),
            ("next a", &next_a, &want_a),
        ] {
            if seen != want {
                failures.push(format!("{what}: {label}: {seen:?} != {want:?}"));
            }
        }
        if what == "gone" {
            for t in [a, b] {
                router
                    .connection_for_schema(t)
                    .await
                    .unwrap()
                    .batch_execute("CREATE TABLE IF NOT EXISTS gone (x int)")
                    .await
                    .unwrap();
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------
// 2. Futures dropped in flight.
// ---------------------------------------------------------------------------------------

/// A cached statement's future dropped after its first poll (the switch and the statement
/// written), or while the statement sleeps on the server: the same scope, the other tenant
/// and the first again see their own path and timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_dropped_in_flight_behind_the_switch() {
    let (_db, tenancy, s, pool) = setup("rtp_drop_", 2, 1).await;
    let router = tenancy.router();
    let (a, b) = (&s[0], &s[1]);
    tenancy
        .set_statement_timeout(a, Some(Duration::from_secs(3)))
        .await
        .unwrap();
    let user = login_role(&pool).await;
    let want_a = expected(&pool, a, &user, "3s").await;
    let want_b = expected(&pool, b, &user, "7s").await;
    let sleep = "SELECT pg_sleep($1), (SELECT schema_name FROM marker)";
    for t in [a, b] {
        let db = router.connection_for_schema(t).await.unwrap();
        db.query(sleep, &[&0.0f64]).await.unwrap();
        state_of(&db).await;
    }
    let mut failures = Vec::new();
    for (round, budget_us) in [0u64, 1, 50, 200, 1000, 5000, 50_000, 150_000]
        .into_iter()
        .enumerate()
    {
        for (own, other, want_own, want_other) in
            [(a, b, &want_a, &want_b), (b, a, &want_b, &want_a)]
        {
            fresh_state(router, other).await;
            let db = router.connection_for_schema(own).await.unwrap();
            let _ = tokio::time::timeout(
                Duration::from_micros(budget_us),
                db.query(sleep, &[&0.2f64]),
            )
            .await;
            let same = state_of(&db).await;
            drop(db);
            let next_other = fresh_state(router, other).await;
            let next_own = fresh_state(router, own).await;
            for (label, seen, want) in [
                ("same scope", &same, want_own),
                ("next other", &next_other, want_other),
                ("next own", &next_own, want_own),
            ] {
                if seen != want {
                    failures.push(format!(
                        "round {round} ({budget_us} us), {own}: {label}: {seen:?} != {want:?}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------
// 3. Per-tenant statement_timeout.
// ---------------------------------------------------------------------------------------

/// `a` has 100 ms, `b` none (the database's 7 s); alternating on the only connection with
/// cached statements, `a`'s 0.3 s sleep is cancelled every time and `b`'s never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_travel_with_the_switch() {
    let (_db, tenancy, s, _pool) = setup("rtp_timeout_", 2, 1).await;
    let router = tenancy.router();
    let (a, b) = (&s[0], &s[1]);
    tenancy
        .set_statement_timeout(a, Some(Duration::from_millis(100)))
        .await
        .unwrap();
    let sleep = "SELECT pg_sleep($1)";
    let shown = "SELECT current_setting('statement_timeout')";
    let mut wrong = Vec::new();
    for round in 0..6 {
        for (t, secs, must_finish) in [(a, 0.3f64, false), (b, 0.3, true), (a, 0.3, false)] {
            let db = router.connection_for_schema(t).await.unwrap();
            let slept = db.execute(sleep, &[&secs]).await;
            let finished = match &slept {
                Ok(_) => true,
                Err(e) if e.is_cancelled() => false,
                Err(e) => panic!("round {round} {t}: {e:?}"),
            };
            let setting: String = db.query_one(shown, &[]).await.unwrap().get(0);
            if finished != must_finish {
                wrong.push(format!(
                    "round {round}: {t} finished={finished} ({setting})"
                ));
            }
            let want = if t == a { "100ms" } else { "7s" };
            if setting != want {
                wrong.push(format!("round {round}: {t} shows {setting}"));
            }
        }
        // b's cached sleep right after a's cancelled one on the same connection.
        let db = router.connection_for_schema(b).await.unwrap();
        if let Err(e) = db.execute(sleep, &[&0.3f64]).await {
            wrong.push(format!("round {round}: b after a's cancellation: {e}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

// ---------------------------------------------------------------------------------------
// 4. Prepared statements dropped behind the library's back.
// ---------------------------------------------------------------------------------------

/// A tenant's `DEALLOCATE ALL` (or `DISCARD ALL`, or a function's, which no SQL reader sees)
/// drops tokio-postgres's own statements too, those it looks user-defined types up with once
/// per connection: the next statement with a column of a type not yet seen on the connection
/// still runs, in both modes, instead of failing with "prepared statement does not exist" at
/// every such lookup from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deallocation_keeps_type_lookups_working() {
    let mut failures = Vec::new();
    for (mode, drop_sql) in [
        (SearchPathMode::Session, "DEALLOCATE ALL"),
        (SearchPathMode::Session, "DISCARD ALL"),
        (SearchPathMode::Session, "SELECT public.forget_all()"),
        (SearchPathMode::Transaction, "DEALLOCATE ALL"),
        (SearchPathMode::Transaction, "SELECT public.forget_all()"),
    ] {
        let db = database().await;
        db.pool()
            .get()
            .await
            .unwrap()
            .batch_execute(
                "CREATE TYPE public.mood AS ENUM ('happy', 'sad'); \
                 CREATE TYPE public.pace AS ENUM ('slow', 'fast'); \
                 CREATE TYPE public.tone AS ENUM ('low', 'high'); \
                 CREATE FUNCTION public.forget_all() RETURNS void LANGUAGE plpgsql AS \
                 $$ BEGIN DEALLOCATE ALL; END $$",
            )
            .await
            .unwrap();
        let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
            .migrations(marker_and_notes())
            .search_path_mode(mode)
            .build()
            .await
            .unwrap();
        let s = marked_tenants(&tenancy, "rtp_types_", 1).await;
        let conn = tenancy.router().connection_for_schema(&s[0]).await.unwrap();
        let read = |sql: &'static str| {
            let conn = &conn;
            async move { conn.query_one(sql, &[]).await.map(drop) }
        };
        let first = read("SELECT 'happy'::public.mood").await;
        let dropped = conn.batch_execute(drop_sql).await;
        let second = read("SELECT 'slow'::public.pace").await;
        drop(conn);
        let next = tenancy.router().connection_for_schema(&s[0]).await.unwrap();
        let third = next
            .query_one("SELECT 'low'::public.tone", &[])
            .await
            .map(drop);
        if first.is_err() || dropped.is_err() || second.is_err() || third.is_err() {
            failures.push(format!(
                "{mode:?}, {drop_sql}: first read {first:?}, {drop_sql} {dropped:?}, read of \
                 another type {second:?}, in the next checkout {third:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `DEALLOCATE ALL`, `DISCARD ALL`, `DISCARD PLANS` through every method: the other tenant's
/// and the first tenant's cached statements on the only connection still run, on their
/// own path, without "prepared statement does not exist".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recognised_deallocation_keeps_cached_statements_working() {
    let (_db, tenancy, s, pool) = setup("rtp_dealloc_", 2, 1).await;
    let router = tenancy.router();
    let (a, b) = (&s[0], &s[1]);
    let user = login_role(&pool).await;
    let want_a = expected(&pool, a, &user, "7s").await;
    let want_b = expected(&pool, b, &user, "7s").await;
    let mut failures = Vec::new();
    for (how, sql) in [
        ("batch_execute", "DEALLOCATE ALL"),
        ("simple_query", "DISCARD ALL"),
        ("query", "DEALLOCATE ALL"),
        ("execute", "DEALLOCATE PREPARE ALL"),
        ("batch_execute", "DISCARD PLANS"),
        ("query", "DISCARD PLANS"),
        ("batch_execute", "SELECT 1; DEALLOCATE ALL"),
    ] {
        for round in 0..2 {
            fresh_state(router, a).await;
            fresh_state(router, b).await;
            let db = router.connection_for_schema(a).await.unwrap();
            let ran = match how {
                "batch_execute" => db.batch_execute(sql).await.map(drop),
                "simple_query" => db.simple_query(sql).await.map(drop),
                "query" => db.query(sql, &[]).await.map(drop),
                _ => db.execute(sql, &[]).await.map(drop),
            };
            if let Err(e) = ran {
                failures.push(format!("{how} {sql} round {round}: {e}"));
                continue;
            }
            let same = state_of_checked(&db).await;
            drop(db);
            let rb = try_state(router, b).await;
            let ra = try_state(router, a).await;
            for (label, seen, want) in [
                ("same scope", same, &want_a),
                ("next b", rb, &want_b),
                ("next a", ra, &want_a),
            ] {
                match seen {
                    Ok(seen) if &seen == want => {}
                    other => {
                        failures.push(format!("{how} {sql} round {round}: {label}: {other:?}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

async fn state_of_checked(db: &ConnectionScope) -> Result<Seen, String> {
    let row = db.query_one(STATE, &[]).await.map_err(|e| e.to_string())?;
    Ok(Seen {
        marker: row.get(0),
        schema: row.get(1),
        path: row.get(2),
        user: row.get(3),
        timeout: row.get(4),
    })
}

async fn try_state(router: &SchemaRouter, s: &SchemaName) -> Result<Seen, String> {
    let db = router
        .connection_for_schema(s)
        .await
        .map_err(|e| e.to_string())?;
    state_of_checked(&db).await
}

/// Server-side code that deallocates the session's prepared statements (a function running
/// `EXECUTE 'DEALLOCATE ALL'`): the cached statements are gone on the server but not in the
/// client's cache. The error may reach the caller once, but the next call must work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_deallocates_does_not_break_the_connection_for_good() {
    let (_db, tenancy, s, pool) = setup("rtp_fdealloc_", 2, 1).await;
    let router = tenancy.router();
    let (a, b) = (&s[0], &s[1]);
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE FUNCTION public.forget_statements() RETURNS int LANGUAGE plpgsql AS
             $$BEGIN EXECUTE 'DEALLOCATE ALL'; RETURN 1; END$$",
        )
        .await
        .unwrap();
    let user = login_role(&pool).await;
    let want_b = expected(&pool, b, &user, "7s").await;
    fresh_state(router, a).await;
    fresh_state(router, b).await;
    let db = router.connection_for_schema(a).await.unwrap();
    db.query_one("SELECT public.forget_statements()", &[])
        .await
        .unwrap();
    drop(db);
    let first = try_state(router, b).await;
    let second = try_state(router, b).await;
    let third = try_state(router, b).await;
    assert!(
        second.as_ref() == Ok(&want_b) && third.as_ref() == Ok(&want_b),
        "first: {first:?}\nsecond: {second:?}\nthird: {third:?}"
    );
}

/// A pool recycled with `DISCARD ALL` (`RecyclingMethod::Custom`; README: such pools
/// "switch on every checkout"): each checkout's recycling deallocates the statements the
/// library keeps cached for the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_recycled_with_discard_all_keeps_working() {
    let db = database().await;
    let manager = Manager::from_config(
        db.config().clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Custom("DISCARD ALL".into()),
        },
    );
    let pool = Pool::builder(manager).max_size(1).build().unwrap();
    let tenancy = Tenancy::builder(pool.clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "rtp_recycle_", 2).await;
    let router = tenancy.router();
    let mut seen = Vec::new();
    for t in [&s[0], &s[1], &s[0], &s[1]] {
        seen.push(
            router
                .connection_for_schema(t)
                .await
                .unwrap()
                .query_one("SELECT schema_name FROM marker", &[])
                .await
                .map(|r| r.get::<_, String>(0))
                .map_err(|e| e.to_string()),
        );
    }
    let want: Vec<Result<String, String>> = [&s[0], &s[1], &s[0], &s[1]]
        .iter()
        .map(|t| Ok(t.to_string()))
        .collect();
    assert_eq!(seen, want);
}

// ---------------------------------------------------------------------------------------
// 5. A schema dropped outside the library.
// ---------------------------------------------------------------------------------------

/// `DROP SCHEMA a CASCADE` by another connection while the only pooled connection has
/// statements cached for `a` and sits on `b`'s path: `a`'s cached statements fail with
/// `SchemaMissing` once the last sighting is over a second old, and within that second
/// (documented window) a name that is not in `public` still fails; never `b`'s rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_dropped_outside_the_library() {
    let (db, tenancy, s, _pool) = setup("rtp_gone_", 3, 1).await;
    let router = tenancy.router();
    let (a, b, c) = (&s[0], &s[1], &s[2]);
    for t in [a, c] {
        let scope = router.connection_for_schema(t).await.unwrap();
        state_of(&scope).await;
        scope
            .query("SELECT count(*) FROM notes", &[])
            .await
            .unwrap();
    }
    fresh_state(router, b).await;
    let raw = db.pool().get().await.unwrap();
    raw.batch_execute(&format!("DROP SCHEMA {} CASCADE", a.quoted()))
        .await
        .unwrap();
    // Within the second: `notes` exists only in tenant schemas.
    let scope = router.connection_for_schema(a).await.unwrap();
    let within = scope.query_one("SELECT count(*) FROM notes", &[]).await;
    assert!(within.is_err(), "within the second: {within:?}");
    let marker = scope.query_one("SELECT schema_name FROM marker", &[]).await;
    if let Ok(row) = &marker {
        let m: String = row.get(0);
        assert_eq!(m, "PUBLIC", "within the second, a's statement read {m}");
    }
    drop(scope);
    fresh_state(router, b).await;
    // `c` dropped and left alone for more than a second.
    raw.batch_execute(&format!("DROP SCHEMA {} CASCADE", c.quoted()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    fresh_state(router, b).await;
    let scope = router.connection_for_schema(c).await.unwrap();
    match scope.query_one(STATE, &[]).await {
        Err(Error::SchemaMissing { .. }) => {}
        other => panic!("after the second: {other:?}"),
    }
    match scope.query_one("SELECT count(*) FROM notes", &[]).await {
        Err(Error::SchemaMissing { .. }) => {}
        other => panic!("after the second (notes): {other:?}"),
    }
    drop(scope);
    assert_eq!(fresh_state(router, b).await.marker, b.as_str());
}

// ---------------------------------------------------------------------------------------
// 6. Role mode.
// ---------------------------------------------------------------------------------------

async fn role_setup(prefix: &str) -> (TestDatabase, Tenancy, Vec<SchemaName>) {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .tenant_roles(TenantRoles::new())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, prefix, 3).await;
    (db, tenancy, s)
}

/// `a`'s cached statement naming `b`'s schema, run when the only connection was last used
/// by `b` (under `b`'s role): permission denied every time, and `current_user` is right
/// for each tenant after each failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_mode_denies_another_schema_behind_the_switch() {
    let (_db, tenancy, s) = role_setup("rtp_role_").await;
    let router = tenancy.router();
    let (a, b) = (&s[0], &s[1]);
    let role_a = tenancy.registry().get(a).await.unwrap().role.unwrap();
    let role_b = tenancy.registry().get(b).await.unwrap().role.unwrap();
    let steal = format!("SELECT schema_name FROM {}.marker", b.quoted());
    let write = format!("INSERT INTO {}.notes (body) VALUES ('by a')", b.quoted());
    let who = "SELECT current_user::text, (SELECT schema_name FROM marker)";
    let mut wrong = Vec::new();
    for round in 0..4 {
        for sql in [&steal, &write] {
            let scope = router.connection_for_schema(b).await.unwrap();
            let row = scope.query_one(who, &[]).await.unwrap();
            let (u, m): (String, String) = (row.get(0), row.get(1));
            if (u.as_str(), m.as_str()) != (role_b.as_str(), b.as_str()) {
                wrong.push(format!("round {round}: b sees ({u}, {m})"));
            }
            drop(scope);
            let scope = router.connection_for_schema(a).await.unwrap();
            match scope.query(sql.as_str(), &[]).await {
                Err(e) if code(&e) == "42501" => {}
                other => wrong.push(format!("round {round}: {sql}: {other:?}")),
            }
            let row = scope.query_one(who, &[]).await.unwrap();
            let (u, m): (String, String) = (row.get(0), row.get(1));
            if (u.as_str(), m.as_str()) != (role_a.as_str(), a.as_str()) {
                wrong.push(format!("round {round}: a after denial sees ({u}, {m})"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// `a`'s cached write into `b`'s schema, after `b` used the only connection and an admin
/// dropped `a`'s role: the switch fails, the statement does not run (not under `b`'s role,
/// which could write there), and `b` then sees its own role and path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_mode_a_dropped_role_does_not_run_the_cached_statement_as_the_previous_tenant() {
    let (db, tenancy, s) = role_setup("rtp_roledrop_").await;
    let router = tenancy.router();
    let (a, b) = (&s[0], &s[1]);
    let role_a = tenancy.registry().get(a).await.unwrap().role.unwrap();
    let role_b = tenancy.registry().get(b).await.unwrap().role.unwrap();
    let write = format!(
        "INSERT INTO {}.notes (body) VALUES ('written by a')",
        b.quoted()
    );
    let who = "SELECT current_user::text, (SELECT schema_name FROM marker)";
    // Cached for a (denied, but prepared and listed), the schema seen a moment ago.
    let scope = router.connection_for_schema(a).await.unwrap();
    assert!(scope.execute(write.as_str(), &[]).await.is_err());
    drop(scope);
    let scope = router.connection_for_schema(b).await.unwrap();
    scope.query_one(who, &[]).await.unwrap();
    drop(scope);
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "DROP OWNED BY \"{role_a}\"; DROP ROLE \"{role_a}\""
        ))
        .await
        .unwrap();
    let scope = router.connection_for_schema(a).await.unwrap();
    let ran = scope.execute(write.as_str(), &[]).await;
    assert!(ran.is_err(), "{ran:?}");
    drop(scope);
    let written: i64 = db
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.notes WHERE body = 'written by a'",
                b.quoted()
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, 0, "a's statement wrote into {b}");
    let scope = router.connection_for_schema(b).await.unwrap();
    let row = scope.query_one(who, &[]).await.unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        (role_b, b.to_string())
    );
}

// ---------------------------------------------------------------------------------------
// 7. Schema names that are SQL keywords.
// ---------------------------------------------------------------------------------------

/// Tenants named like key words, alternating on one connection with cached statements:
/// each sees its own marker, schema and path (`"user", public` as PostgreSQL shows it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_schema_names_behind_the_switch() {
    let (_db, tenancy, _s, pool) = setup("rtp_kw_", 1, 1).await;
    let router = tenancy.router();
    // Tenant tables named like one in `public` are refused: plant `public.marker` after.
    let raw = pool.get().await.unwrap();
    raw.batch_execute("DROP TABLE public.marker").await.unwrap();
    drop(raw);
    let mut names = Vec::new();
    let mut refused = Vec::new();
    for word in [
        "user",
        "order",
        "select",
        "default",
        "none",
        "all",
        "table",
        "current_user",
        "from",
        "session_user",
        "local",
        "true",
        "null",
    ] {
        let name = match SchemaName::new(word) {
            Ok(name) => name,
            Err(e) => {
                refused.push(format!("{word}: {e}"));
                continue;
            }
        };
        if let Err(e) = tenancy.create_tenant(NewTenant::new(name.clone())).await {
            refused.push(format!("{word}: {e}"));
            continue;
        }
        router
            .connection_for_schema(&name)
            .await
            .unwrap()
            .execute("INSERT INTO marker VALUES ($1)", &[&word])
            .await
            .unwrap();
        names.push(name);
    }
    plant_public_marker(&pool).await;
    eprintln!("accepted: {names:?}, refused: {refused:?}");
    assert!(
        names.len() >= 3,
        "accepted: {names:?}, refused: {refused:#?}"
    );
    let user = login_role(&pool).await;
    let mut wrong = Vec::new();
    for round in 0..3 {
        for name in &names {
            let want = expected(&pool, name, &user, "7s").await;
            match try_state(router, name).await {
                Ok(seen) if seen == want => {}
                other => wrong.push(format!("round {round} {name}: {other:?} != {want:?}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

// ---------------------------------------------------------------------------------------
// 8. Concurrency.
// ---------------------------------------------------------------------------------------

/// 64 tasks over a pool of 3 and 50 tenants: cached state queries, failures behind the
/// switch and cancelled statements mixed in. Any statement that sees another schema is a
/// break.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_many_tenants_few_connections() {
    load(false).await;
}

/// The same in role mode: `current_user` is each tenant's own role too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_many_tenants_few_connections_role_mode() {
    load(true).await;
}

async fn load(roles: bool) {
    let prefix = if roles { "rtp_rload_" } else { "rtp_load_" };
    let (_db, tenancy, s, pool) = setup_with(prefix, 50, 3, roles).await;
    for (i, t) in s.iter().enumerate().filter(|(i, _)| i % 5 == 0) {
        tenancy
            .set_statement_timeout(t, Some(Duration::from_millis(1001 + i as u64)))
            .await
            .unwrap();
    }
    let user = login_role(&pool).await;
    let mut wants = Vec::new();
    for (i, t) in s.iter().enumerate() {
        let timeout = if i % 5 == 0 {
            format!("{}ms", 1001 + i)
        } else {
            "7s".to_owned()
        };
        let user = if roles {
            tenancy.registry().get(t).await.unwrap().role.unwrap()
        } else {
            user.clone()
        };
        wants.push(expected(&pool, t, &user, &timeout).await);
    }
    let wants = Arc::new(wants);
    let s = Arc::new(s);
    let tenancy = Arc::new(tenancy);
    let bad = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let checked = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..64u64 {
        let (wants, s, tenancy, bad, checked) = (
            wants.clone(),
            s.clone(),
            tenancy.clone(),
            bad.clone(),
            checked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(task);
            for _ in 0..25 {
                let i = rng.random_range(0..s.len());
                let db = match tenancy.router().connection_for_schema(&s[i]).await {
                    Ok(db) => db,
                    Err(e) => {
                        bad.lock().unwrap().push(format!("checkout {}: {e}", s[i]));
                        continue;
                    }
                };
                match rng.random_range(0..6) {
                    0 => {
                        let _ = db.query("SELECT 1 / $1::int", &[&0i32]).await;
                    }
                    1 => {
                        let budget = Duration::from_micros(rng.random_range(0..3000));
                        let _ = tokio::time::timeout(
                            budget,
                            db.query(
                                "SELECT pg_sleep(0.002), (SELECT schema_name FROM marker)",
                                &[],
                            ),
                        )
                        .await;
                    }
                    _ => {}
                }
                match state_of_checked(&db).await {
                    Ok(seen) if seen == wants[i] => {}
                    other => bad.lock().unwrap().push(format!("{}: {other:?}", s[i])),
                }
                checked.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let bad = bad.lock().unwrap();
    assert!(
        bad.is_empty(),
        "{} of {}: {:#?}",
        bad.len(),
        checked.load(Ordering::Relaxed),
        &bad[..bad.len().min(20)]
    );
}

// ---------------------------------------------------------------------------------------
// 9. set_config, functions with SET clauses, prepared statements.
// ---------------------------------------------------------------------------------------

/// `set_config('search_path', …, false)` through `query`, a function declared with a `SET
/// search_path` clause (PostgreSQL restores the path on exit), and a statement from
/// `prepare()` run after a session change: the scope's next call and the next checkouts
/// stay on their own paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_config_and_functions_behind_the_switch() {
    let (_db, tenancy, s, pool) = setup("rtp_setcfg_", 2, 1).await;
    let router = tenancy.router();
    let (a, b) = (&s[0], &s[1]);
    pool.get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE FUNCTION public.peek() RETURNS text LANGUAGE sql SET search_path = {b}
             AS 'SELECT schema_name FROM marker'"
        ))
        .await
        .unwrap();
    let user = login_role(&pool).await;
    let want_a = expected(&pool, a, &user, "7s").await;
    let want_b = expected(&pool, b, &user, "7s").await;
    let mut wrong = Vec::new();
    for round in 0..3 {
        // set_config through query, cached from the second round on.
        fresh_state(router, b).await;
        let db = router.connection_for_schema(a).await.unwrap();
        db.query(
            &format!("SELECT set_config('search_path', '{b}', false)"),
            &[],
        )
        .await
        .unwrap();
        let same = state_of(&db).await;
        drop(db);
        if same != want_a {
            wrong.push(format!("round {round} set_config: same scope {same:?}"));
        }
        let next = fresh_state(router, a).await;
        if next != want_a {
            wrong.push(format!("round {round} set_config: next {next:?}"));
        }
        // A function with its own path: it reads b (as declared), then a again.
        fresh_state(router, b).await;
        let db = router.connection_for_schema(a).await.unwrap();
        let peeked: String = db
            .query_one("SELECT public.peek()", &[])
            .await
            .unwrap()
            .get(0);
        let same = state_of(&db).await;
        drop(db);
        if peeked != b.as_str() || same != want_a {
            wrong.push(format!("round {round} peek: {peeked}, {same:?}"));
        }
        if fresh_state(router, b).await != want_b {
            wrong.push(format!("round {round} peek: next b"));
        }
        // A statement of prepare(), after a recognised session change in the same scope.
        let db = router.connection_for_schema(a).await.unwrap();
        let stmt = db.prepare(STATE).await.unwrap();
        db.batch_execute(&format!("SET search_path TO {b}"))
            .await
            .unwrap();
        let row = db.query_one(&stmt, &[]).await.unwrap();
        let m: String = row.get(0);
        if m != a.as_str() {
            wrong.push(format!("round {round} prepared after SET: {m}"));
        }
        drop(db);
        if fresh_state(router, a).await != want_a {
            wrong.push(format!("round {round} prepared: next a"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

// ---------------------------------------------------------------------------------------
// Beyond the list.
// ---------------------------------------------------------------------------------------

/// Two calls on one scope at once (its methods take `&self`), polled in a fixed order: a
/// recognised session change (`SET search_path TO b` in a batch, after a sleep) is written
/// first (its switch), then a cached statement behind its own switch; the batch is then
/// driven until a timeout cancels it while it runs on the server, and the statement's
/// answer read. The statement's success must not mark the scope on its path after the
/// batch's "forget the path": the batch's own "forget" after its `SET` never comes. (With
/// `tokio::join!` instead of the fixed order the outcome depends on which future is polled
/// first after the answers arrive.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_session_change_beside_a_switched_statement() {
    let (_db, tenancy, s, _pool) = setup("rtp_race_", 2, 1).await;
    let router = tenancy.router();
    let (a, b) = (&s[0], &s[1]);
    let batch = format!("SELECT pg_sleep(0.5); SET search_path TO {b}");
    // Until the statement's first poll leaves it waiting for its answer (a thread preempted
    // between writing it and looking for the answer finds the answer there).
    for _attempt in 0..20 {
        let db = cached_for_both(router, a, b).await;
        {
            let mut cancelled = std::pin::pin!(tokio::time::timeout(
                Duration::from_millis(200),
                db.batch_execute(&batch)
            ));
            let mut marker = std::pin::pin!(db.query_one("SELECT schema_name FROM marker", &[]));
            assert!(poll_once(cancelled.as_mut()).await, "batch: first poll");
            if !poll_once(marker.as_mut()).await {
                continue;
            }
            assert!(cancelled.await.is_err(), "the timeout fired");
            assert_eq!(marker.await.unwrap().get::<_, String>(0), a.as_str());
        }
        reads_its_own_after(router, db, a).await;
        return;
    }
    panic!("the statement's first poll finished it 20 times in a row");
}

/// Caches the marker query for `a` and `b` on the only connection (last used by `b`), and
/// checks it out for `a`.
async fn cached_for_both(router: &SchemaRouter, a: &SchemaName, b: &SchemaName) -> ConnectionScope {
    assert_eq!(seen_by(router, a).await, a.as_str());
    assert_eq!(seen_by(router, b).await, b.as_str());
    router.connection_for_schema(a).await.unwrap()
}

/// `db`'s next call, and the next checkout of its connection, read `a`'s marker.
async fn reads_its_own_after(router: &SchemaRouter, db: ConnectionScope, a: &SchemaName) {
    let same_scope = marker_of(&db).await;
    drop(db);
    let next_checkout = seen_by(router, a).await;
    assert_eq!(
        (same_scope.as_str(), next_checkout.as_str()),
        (a.as_str(), a.as_str()),
        "(same scope's next call, next checkout of the connection)"
    );
}

/// Polls `f` once; whether it is still pending.
async fn poll_once<F: Future>(mut f: std::pin::Pin<&mut F>) -> bool {
    std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx).is_pending())).await
}

/// Statements PostgreSQL refuses inside a pipeline (several Executes before one Sync):
/// `VACUUM`, `CREATE INDEX CONCURRENTLY`. Cached, then run again for the same tenant after
/// another used the only connection: they must run as they did the first time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_refused_in_a_pipeline_still_run_after_a_switch() {
    let (_db, tenancy, s, _pool) = setup("rtp_vacuum_", 2, 1).await;
    let router = tenancy.router();
    let (a, b) = (&s[0], &s[1]);
    let mut failed = Vec::new();
    for sql in [
        "VACUUM notes",
        "ANALYZE notes",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS notes_body ON notes (body)",
        "REINDEX TABLE CONCURRENTLY notes",
    ] {
        for round in 0..2 {
            let db = router.connection_for_schema(a).await.unwrap();
            if let Err(e) = db.execute(sql, &[]).await {
                failed.push(format!("{sql} (round {round}): {e}"));
            }
            drop(db);
            fresh_state(router, b).await;
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// No cancellation at all: a cached statement's future is polled once (the switch and the
/// statement are written), then a recognised session change runs to completion on the same
/// scope (`SET search_path TO b`, which leaves the path unknown), then the first future is
/// awaited. Its answer, read last, must not mark the scope on its path: the server ran the
/// `SET` after it, and the next call and the next checkout would read `b`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_read_answer_of_a_switched_statement_cannot_mark_the_path_set() {
    let (_db, tenancy, s, _pool) = setup("rtp_late_", 2, 1).await;
    let router = tenancy.router();
    let (a, b) = (&s[0], &s[1]);
    // Until the first poll leaves the statement waiting for its answer (see above).
    for _attempt in 0..20 {
        let db = cached_for_both(router, a, b).await;
        {
            let mut first = std::pin::pin!(db.query_one("SELECT schema_name FROM marker", &[]));
            // One poll: the request is written.
            if !poll_once(first.as_mut()).await {
                continue;
            }
            db.batch_execute(&format!("SET search_path TO {b}"))
                .await
                .unwrap();
            let first: String = first.await.unwrap().get(0);
            assert_eq!(first, a.as_str());
        }
        reads_its_own_after(router, db, a).await;
        return;
    }
    panic!("the statement's first poll finished it 20 times in a row");
}
