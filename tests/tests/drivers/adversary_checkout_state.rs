//! Adversarial review of "a pooled connection whose server's last `ReadyForQuery` said a
//! transaction block is open is closed at checkout" (`Client::in_transaction`) and of
//! transaction mode's pipelined prelude/`COMMIT`, over ONE pooled connection.
//!
//! `BROKEN (…)` marks a test that fails against the code it was written for; `HELD (…)` one
//! that passed when first tried.

use std::time::Duration;

use sqlx::Executor;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{NewTenant, SchemaName, SearchPathMode, Tenancy, TenantRoles};

use super::doors::{admin, checkout, one_connection_core, sqlx_over_one_connection, writes};

const W: &str = "INSERT INTO notes (body) VALUES ($1)";

async fn admin_count(db: &TestDatabase, sql: &str) -> i64 {
    db.pool()
        .get()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

/// The request a raw pool user gives up on: it opens a transaction, writes into `a`, and is
/// still sleeping when the caller's timeout drops the future. The connection goes back to
/// the pool with the request in flight: the last `ReadyForQuery` the client saw said idle.
fn dropped_begin(a: &SchemaName, body: &str) -> String {
    format!(
        "BEGIN READ WRITE; INSERT INTO {}.notes (body) VALUES ('{body}'); \
         SELECT pg_catalog.pg_sleep(0.4)",
        a.quoted()
    )
}

/// A raw user of the very pool the door uses (`router.pool().get()`) sends
/// [`dropped_begin`] and gives up after 50 ms (`tokio::time::timeout`), giving the
/// connection back while the server is still inside the request.
async fn leave_begin_in_flight(tenancy: &Tenancy, a: &SchemaName, body: &str) {
    let raw = tenancy.router().pool().get().await.unwrap();
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        raw.batch_execute(&dropped_begin(a, body)),
    )
    .await;
    assert!(gave_up.is_err(), "the raw request answered within 50 ms");
    assert!(
        !raw.is_idle(),
        "the raw request was answered: the attack needs it in flight when the connection goes back"
    );
}

/// The in-flight-BEGIN scenario in `mode`: a raw pool user's `BEGIN; INSERT INTO a.notes …`
/// is still running when its connection goes back; writer b checks out (the status byte
/// still says idle), writes, and is told `Ok`; the scope is given back and a third checkout
/// (of a) follows. b's write must be committed, and the raw user's uncommitted row must not
/// be committed by anything b's checkout sent.
async fn begin_in_flight(mode: SearchPathMode, prefix: &str) {
    let (db, tenancy, s) = one_connection_core(mode, false, prefix).await;
    let (a, b) = (&s[0], &s[1]);
    // Warm: the connection exists, b's text is learned (transaction mode: the prelude path).
    writes(&tenancy, b, "warm").await;
    leave_begin_in_flight(&tenancy, a, "raw").await;
    let wrote = checkout(&tenancy, b).await.execute(W, &[&"b-ok"]).await;
    let b_rows_after_ok = notes_with_body(&db, b, "b-ok").await;
    // The next checkout (which may close the connection it finds in a transaction).
    let next = checkout(&tenancy, a)
        .await
        .query_one("SELECT schema_name FROM marker", &[])
        .await
        .map(|r| r.get::<_, String>(0));
    let (b_rows, raw_rows) = (
        notes_with_body(&db, b, "b-ok").await,
        notes_with_body(&db, a, "raw").await,
    );
    assert!(
        wrote.is_err() || (b_rows_after_ok == 1 && b_rows == 1),
        "{mode:?}: after a raw pool user gave the connection back with `BEGIN; INSERT INTO {a}.notes …; \
         pg_sleep` in flight, tenant {b}'s write returned {wrote:?} but {b_rows_after_ok} of its rows \
         were committed when it returned, {b_rows} after the next checkout ({next:?}): it ran \
         inside the raw user's transaction"
    );
    assert_eq!(
        raw_rows, 0,
        "{mode:?}: the raw user's uncommitted row in {a} was committed by tenant {b}'s checkout \
         (b's write: {wrote:?}, {b_rows} rows; next checkout: {next:?})"
    );
}

/// Broke before the fix (deterministic: 400 ms sleep vs a 50 ms timeout). Door: the core, session mode,
/// pool of ONE connection; the leaver a raw user of that pool whose
/// `BEGIN; INSERT …; pg_sleep(0.4)` is dropped by `tokio::time::timeout` before its answer.
/// `in_transaction()` reads the LAST ANSWERED `ReadyForQuery` (idle), so b's checkout takes
/// the connection; b's switch and write run inside the raw user's transaction and b is told
/// `Ok`; the write is not committed, and the next checkout closes the connection (rolled
/// back): a write reported `Ok` is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_checkout_state_session_begin_in_flight_when_given_back() {
    begin_in_flight(SearchPathMode::Session, "acs_bs").await;
}

/// Broke before the fix (deterministic, as above). Door: the core, transaction mode, pool of ONE
/// connection. b's learned write runs behind its prelude: its `BEGIN` only warns inside the
/// raw user's transaction, and b's pipelined `COMMIT` commits the raw user's row into a.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_checkout_state_transaction_begin_in_flight_when_given_back() {
    begin_in_flight(SearchPathMode::Transaction, "acs_bt").await;
}

/// HELD (deterministic). Door: `tenant-schemas-sqlx`, session mode, pool of ONE direct connection (registry states
/// of a session-mode `Tenancy`). A raw user of the router's sqlx pool sends
/// `BEGIN; INSERT INTO a.notes …; pg_sleep(0.4)` and gives up after 50 ms; writer b checks
/// out and writes (told `Ok`); then a checks out and reads. b's row must be committed when
/// b is told `Ok`, and the raw row never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_checkout_state_sqlx_session_begin_in_flight_when_given_back() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "acs_xs").await;
    let (a, b) = (&s[0], &s[1]);
    let router = sqlx_over_one_connection(&db, &tenancy).await;
    {
        let mut raw = router.pool().acquire().await.unwrap();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            raw.execute(sqlx::raw_sql(&dropped_begin(a, "raw"))),
        )
        .await;
        assert!(gave_up.is_err(), "the raw request answered within 50 ms");
    }
    let wrote = async {
        let mut conn = router
            .connection_for_schema(b)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query(W)
            .bind("b-ok")
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    let b_rows_after_ok = notes_with_body(&db, b, "b-ok").await;
    let next = async {
        let mut conn = router
            .connection_for_schema(a)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query_scalar::<_, String>("SELECT schema_name FROM marker")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    let (b_rows, raw_rows) = (
        notes_with_body(&db, b, "b-ok").await,
        notes_with_body(&db, a, "raw").await,
    );
    assert!(
        wrote.is_err() || (b_rows_after_ok == 1 && b_rows == 1),
        "sqlx session: after a raw pool user dropped `BEGIN; INSERT INTO {a}.notes …` in flight, \
         {b}'s write returned {wrote:?} but {b_rows_after_ok} rows were committed when it \
         returned, {b_rows} after the next checkout ({next:?})"
    );
    assert_eq!(
        raw_rows, 0,
        "sqlx session: the raw user's uncommitted row in {a} was committed (b: {wrote:?}; \
         next: {next:?})"
    );
}

/// Two calls of ONE transaction-mode scope at once (`tokio::join!`): the first a text never
/// seen (it waits for its `BEGIN …` message's answer before writing its statement), the
/// second a learned text (prelude + statement + `Sync` and `COMMIT`, written in one poll).
/// The second's `BEGIN` only warns inside the first's transaction and its `COMMIT` ends it;
/// the first's statement is then written after its transaction is gone, in autocommit, on
/// the session's path — `public` in transaction mode over a direct connection, where a
/// `notes` table waits.
async fn two_calls_at_once(prefix: &str, fresh: &str) {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Transaction, false, prefix).await;
    let b = &s[1];
    admin(
        &db,
        "CREATE TABLE public.notes (id bigserial PRIMARY KEY, body text NOT NULL)",
    )
    .await;
    let db_scope = checkout(&tenancy, b).await;
    db_scope.execute(W, &[&"warm"]).await.unwrap();
    let (first, second) = tokio::join!(
        db_scope.execute(fresh, &[&"fresh"]),
        db_scope.execute(W, &[&"learned"])
    );
    drop(db_scope);
    let public_rows = admin_count(&db, "SELECT count(*) FROM public.notes").await;
    let (fresh_rows, learned_rows) = (
        notes_with_body(&db, b, "fresh").await,
        notes_with_body(&db, b, "learned").await,
    );
    assert_eq!(
        (public_rows, first.is_ok().then_some(fresh_rows)),
        (0, first.is_ok().then_some(1)),
        "two calls of one transaction-mode scope of {b} at once: the fresh text's call returned \
         {first:?} with {fresh_rows} rows in {b}, the learned one {second:?} ({learned_rows} rows \
         in {b}); public.notes gained {public_rows} rows"
    );
}

/// Broke before the fix (deterministic: the join polls the first call first; nothing else uses the
/// connection). Door: the core, transaction mode, pool of ONE direct connection, one
/// `ConnectionScope` (`&self` methods) and `tokio::join!` of a first-use `INSERT` and a
/// learned one: the first-use INSERT, reported `Ok(1)`, lands in `public.notes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_checkout_state_transaction_two_calls_of_one_scope_at_once() {
    two_calls_at_once(
        "acs_j",
        "INSERT INTO notes (body) VALUES ($1) /* first use */",
    )
    .await;
}

const WHO: &str = "SELECT pg_catalog.current_setting('search_path'), current_user::text";

/// As `two_calls_at_once`, with a read that says where and as whom it ran:
/// the fresh text (`WHO`, never seen) must answer what the same read answers alone.
async fn two_calls_who(roles: bool, prefix: &str) {
    let db = database().await;
    let mut builder = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .search_path_mode(SearchPathMode::Transaction);
    if roles {
        builder = builder.tenant_roles(TenantRoles::new());
    }
    let tenancy = builder.build().await.unwrap();
    let s = marked_tenants(&tenancy, prefix, 2).await;
    let b = &s[1];
    let scope = checkout(&tenancy, b).await;
    let alone = format!("{WHO} /* alone */");
    let expected = scope.query_one(&alone, &[]).await.unwrap();
    let expected: (String, String) = (expected.get(0), expected.get(1));
    scope.execute(W, &[&"warm"]).await.unwrap();
    let fresh = format!("{WHO} /* first use, at once */");
    let (first, second) = tokio::join!(
        scope.query_one(&fresh, &[]),
        scope.execute(W, &[&"learned"])
    );
    drop(scope);
    let first = first.map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)));
    assert_eq!(
        first.as_ref().ok(),
        Some(&expected),
        "roles={roles}: a read of {b}'s transaction-mode scope, joined with a learned write of \
         the same scope ({second:?}), ran with (search_path, current_user) = {first:?}; alone \
         it runs with {expected:?}"
    );
}

/// Broke before the fix (deterministic). Door: the core, transaction mode, pool of ONE direct connection,
/// one scope, `tokio::join!` of a first-use read and a learned write: the read runs in
/// autocommit after the write's `COMMIT` ended its transaction, on the session's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_checkout_state_transaction_two_calls_at_once_path() {
    two_calls_who(false, "acs_jw").await;
}

/// Broke before the fix (deterministic). As above in ROLE mode (`tenant_roles(TenantRoles::new())`): the
/// read runs under the session's login role, not b's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_checkout_state_transaction_role_mode_two_calls_at_once() {
    two_calls_who(true, "acs_jr").await;
}

/// Two learned calls of ONE transaction-mode scope at once, the second failing at run time
/// (division by zero on its parameter): each writes its prelude, statement, `Sync` and
/// `COMMIT` in one poll, so the first's transaction is its own; what the first reports
/// `Ok` must be committed.
/// HELD (deterministic). Door: the core, transaction mode, pool of ONE direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_checkout_state_transaction_two_learned_calls_one_fails() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Transaction, false, "acs_jf").await;
    let b = &s[1];
    const FAILS: &str = "INSERT INTO notes (body) VALUES ((1 / $1::int)::text)";
    let scope = checkout(&tenancy, b).await;
    scope.execute(W, &[&"warm"]).await.unwrap();
    scope.execute(FAILS, &[&1i32]).await.unwrap();
    let (ok, failed) = tokio::join!(
        scope.execute(W, &[&"joined-ok"]),
        scope.execute(FAILS, &[&0i32])
    );
    drop(scope);
    let rows = notes_with_body(&db, b, "joined-ok").await;
    assert!(
        failed.is_err() && (ok.is_err() || rows == 1),
        "two learned calls of {b}'s scope at once: the write returned {ok:?} with {rows} rows \
         committed; the failing one returned {failed:?}"
    );
}

/// HELD (deterministic). Door: the library's own work (`Tenancy::create_tenant`, registry and migrations through
/// `databases::connect`), session mode, pool of ONE connection. A raw user of the pool gives
/// the connection back with `BEGIN; INSERT INTO a.notes …; pg_sleep(0.4)` in flight (the
/// status byte says idle); `create_tenant(c)` reports `Ok`. c's schema must be committed when
/// it returns (and stay after the next checkout); the raw row must never be committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_checkout_state_create_tenant_after_begin_in_flight() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "acs_ct").await;
    let a = &s[0];
    let c = schema("acs_ct_new");
    leave_begin_in_flight(&tenancy, a, "raw").await;
    let created = tenancy.create_tenant(NewTenant::new(c.clone())).await;
    let count_c = format!(
        "SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = '{}'",
        c.as_str()
    );
    let c_after_ok = admin_count(&db, &count_c).await;
    let next = checkout(&tenancy, a)
        .await
        .query_one("SELECT schema_name FROM marker", &[])
        .await
        .map(|r| r.get::<_, String>(0));
    let c_later = admin_count(&db, &count_c).await;
    let raw_rows = notes_with_body(&db, a, "raw").await;
    assert!(
        created.is_err() || (c_after_ok == 1 && c_later == 1),
        "create_tenant({c}) after a raw pool user's in-flight `BEGIN …` returned {created:?}; \
         its schema existed (committed) {c_after_ok} times when it returned, {c_later} after \
         the next checkout ({next:?})"
    );
    assert_eq!(
        raw_rows, 0,
        "the raw user's uncommitted row in {a} was committed by create_tenant({c}) \
         ({created:?})"
    );
}

/// Broke before the fix (deterministic). Door: the core, transaction mode behind a real PgBouncer with ONE
/// server connection (`bounced_tenancy(db, 1, 1)`), one scope, `tokio::join!` of a first-use
/// read and a learned write: as over a direct connection, the read runs after the write's
/// `COMMIT`, outside any transaction the library opened, on the server session's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_checkout_state_behind_pgbouncer_two_calls_at_once() {
    let db = database().await;
    let (_bouncer, tenancy) = bounced_tenancy(&db, 1, 1).await;
    let s = marked_tenants(&tenancy, "acs_jb", 2).await;
    let b = &s[1];
    let scope = checkout(&tenancy, b).await;
    let expected = scope
        .query_one(&format!("{WHO} /* alone */"), &[])
        .await
        .unwrap();
    let expected: (String, String) = (expected.get(0), expected.get(1));
    scope.execute(W, &[&"warm"]).await.unwrap();
    let fresh = format!("{WHO} /* first use, at once */");
    let (first, second) = tokio::join!(
        scope.query_one(&fresh, &[]),
        scope.execute(W, &[&"learned"])
    );
    drop(scope);
    let first = first.map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)));
    assert_eq!(
        first.as_ref().ok(),
        Some(&expected),
        "behind PgBouncer: a read of {b}'s scope joined with a learned write ({second:?}) ran \
         with (search_path, current_user) = {first:?}; alone {expected:?}"
    );
}
