//! Adversarial review of "a failed switch runs nothing elsewhere" (see `doors.rs`,
//! `no_write_runs_behind_a_failed_switch`): other ways to make a checkout's switch fail, and
//! what then runs where.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sqlx::postgres::PgPool;
use tenant_schemas::deadpool_postgres::Pool;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::{TestCluster, TestDatabase, TestPgBouncer};
use tenant_schemas::{SchemaName, SearchPathMode, Tenancy, Tenant};
use tenant_schemas_sqlx::SqlxRouter;

use super::doors::{one_connection_core, sqlx_behind_one_server, sqlx_over_one_connection};

const INSERT: &str = "INSERT INTO notes (body) VALUES ($1)";

/// A door into tenant `b`, one checkout per write.
#[derive(Clone)]
enum Victim {
    /// The core: a checkout and `execute`.
    Core(Tenancy),
    /// The core: a checkout, `transaction()`, `execute` on it, `commit()`.
    CoreTransaction(Tenancy),
    /// `tenant-schemas-sqlx`: `connection_for_schema` (session mode) or `begin_for` (transaction
    /// mode), a write, and a commit.
    Sqlx(SqlxRouter),
}

impl Victim {
    /// One checkout of `schema` that inserts a note `body`.
    async fn write(&self, schema: &SchemaName, body: &str) -> Result<(), String> {
        let tenant = Tenant::new(schema.clone());
        match self {
            Self::Core(tenancy) => {
                let db = tenancy
                    .router()
                    .connection_for_tenant(&tenant)
                    .await
                    .map_err(|e| e.to_string())?;
                db.execute(INSERT, &[&body])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Self::CoreTransaction(tenancy) => {
                let mut db = tenancy
                    .router()
                    .connection_for_tenant(&tenant)
                    .await
                    .map_err(|e| e.to_string())?;
                let tx = db.transaction().await.map_err(|e| e.to_string())?;
                tx.execute(INSERT, &[&body])
                    .await
                    .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())?;
            }
            Self::Sqlx(router) if router.mode() == SearchPathMode::Session => {
                let mut conn = router
                    .connection_for_schema(schema)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(INSERT)
                    .bind(body)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Self::Sqlx(router) => {
                let mut tx = router.begin_for(schema).await.map_err(|e| e.to_string())?;
                sqlx::query(INSERT)
                    .bind(body)
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

/// Who leaves the heavy unnamed statement on the one server connection: another client of
/// the pooler, or a raw user of the very pool the door uses.
enum Leaver {
    Deadpool(Pool),
    Sqlx(PgPool),
}

impl Leaver {
    /// Leaves [`heavy_unnamed`] on the session, pointing it at `path`.
    async fn leave(&self, path: &str) {
        let heavy = heavy_unnamed(path, 400_000);
        match self {
            Self::Deadpool(pool) => {
                let c = pool.get().await.unwrap();
                c.batch_execute("RESET statement_timeout").await.unwrap();
                c.query_typed(&heavy, &[]).await.unwrap();
            }
            Self::Sqlx(pool) => {
                let mut c = pool.acquire().await.unwrap();
                sqlx::Executor::execute(&mut *c, "RESET statement_timeout")
                    .await
                    .unwrap();
                sqlx::query(&heavy)
                    .persistent(false)
                    .execute(&mut *c)
                    .await
                    .unwrap();
            }
        }
    }
}

/// The heavy-unnamed-statement scenario: `rounds` times, `leaver` leaves on the one server
/// connection `search_path = a`, `statement_timeout = 1ms` and a heavy unnamed statement
/// (freed, in 5-10 ms, at the start of the next simple-query message, under that timeout);
/// then tenant `b` writes through `victim`. The write must not land in `a` (nor `public`,
/// which has no `notes`); afterwards, a checkout with nothing left behind serves `b`.
async fn heavy_unnamed_then_write(
    victim: &Victim,
    leaver: &Leaver,
    db: &TestDatabase,
    s: &[SchemaName],
    rounds: usize,
) -> Vec<Result<(), String>> {
    let (a, b) = (&s[0], &s[1]);
    // Tenant b known (registry cached, schema verified, parameter types learned).
    victim.write(b, "warm").await.unwrap();
    let mut outcomes = Vec::new();
    for round in 0..rounds {
        leaver.leave(&format!("{}, public", a.quoted())).await;
        let body = format!("b-round-{round}");
        let wrote = victim.write(b, &body).await;
        assert_eq!(
            notes_with_body(db, a, &body).await,
            0,
            "round {round}: tenant {b}'s INSERT landed in tenant {a}'s schema (the call returned \
             {wrote:?})"
        );
        assert_eq!(
            notes_with_body(db, b, &body).await,
            i64::from(wrote.is_ok()),
            "round {round}: the call returned {wrote:?}"
        );
        outcomes.push(wrote);
    }
    eprintln!("outcomes: {outcomes:?}");
    // Nothing heavy left: the next checkout serves b (the 1 ms timeout may still be on the
    // server connection; the write is tiny).
    let mut served = Err(String::new());
    for _ in 0..3 {
        served = victim.write(b, "after").await;
        if served.is_ok() {
            break;
        }
    }
    assert_eq!(
        served,
        Ok(()),
        "no later checkout served {b} (rounds: {outcomes:?})"
    );
    assert_eq!(notes_with_body(db, a, "after").await, 0);
    outcomes
}

/// A real PgBouncer with one server connection, a core `Tenancy` in transaction mode through
/// it (`reset_settings`, `pooler_prepared_statements` as given), tenants `<prefix>0..1`, and
/// another client of the pooler.
async fn core_behind_one_server(
    db: &TestDatabase,
    prefix: &str,
    reset: bool,
    pooler_statements: bool,
) -> (TestPgBouncer, Tenancy, Vec<SchemaName>, Pool) {
    let bouncer = TestPgBouncer::start(TestCluster::shared().unwrap(), 1).unwrap();
    let through = tenant_schemas::testing::pool(bouncer.config(db.name()), 2).unwrap();
    let tenancy = Tenancy::builder(through)
        .migrations(marker_and_notes())
        .search_path_mode(SearchPathMode::Transaction)
        .reset_settings(reset)
        .pooler_prepared_statements(pooler_statements)
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, prefix, 2).await;
    let other = tenant_schemas::testing::pool(bouncer.config(db.name()), 1).unwrap();
    (bouncer, tenancy, s, other)
}

/// Broke before the fix (deterministic, every round). Door: the core, transaction mode, behind a real
/// PgBouncer with one server connection. Another client of the pooler (not the library) runs
/// ONE statement that leaves on the server connection `search_path = a`, `statement_timeout =
/// 1ms` and a heavy unnamed prepared statement. Tenant b's next statement is written as the
/// `BEGIN; SET LOCAL statement_timeout TO DEFAULT; DISCARD TEMP; …; SET LOCAL search_path …`
/// message with the statement (Parse/Bind/Execute/Sync) and `COMMIT` right behind it,
/// unanswered. PostgreSQL frees the unnamed statement at the start of that message — after
/// the message's `statement_timeout` (the 1 ms left) started, before `BEGIN` runs — and cancels
/// the message before `BEGIN` ran: no transaction, no `SET LOCAL`. The statement behind it
/// then runs on its own, in autocommit, on the session's `search_path`: tenant a's. The
/// server log shows `ERROR: canceling statement due to statement timeout` for the `BEGIN …`
/// message, then `execute <unnamed>: INSERT INTO notes …`, then `COMMIT` with `WARNING:
/// there is no transaction in progress`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_switch_failed_core_behind_pgbouncer_begin_cancelled() {
    let db = database().await;
    let (_bouncer, tenancy, s, other) = core_behind_one_server(&db, "asf_cb", false, false).await;
    heavy_unnamed_then_write(&Victim::Core(tenancy), &Leaver::Deadpool(other), &db, &s, 3).await;
}

/// Broke before the fix (deterministic, round 0): as above with `reset_settings(true)`: the message begins `BEGIN READ
/// WRITE; RESET ALL; …`, and is cancelled before its `BEGIN` all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_switch_failed_core_behind_pgbouncer_begin_cancelled_reset_settings() {
    let db = database().await;
    let (_bouncer, tenancy, s, other) = core_behind_one_server(&db, "asf_cr", true, false).await;
    heavy_unnamed_then_write(&Victim::Core(tenancy), &Leaver::Deadpool(other), &db, &s, 3).await;
}

/// Broke before the fix (deterministic, round 0): as above with `pooler_prepared_statements(true)` (PgBouncer 1.25
/// keeps them): a cached named statement's `Bind`/`Execute` is written behind the `BEGIN`
/// message too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_switch_failed_core_behind_pgbouncer_begin_cancelled_pooler_statements() {
    let db = database().await;
    let (_bouncer, tenancy, s, other) = core_behind_one_server(&db, "asf_cp", false, true).await;
    heavy_unnamed_then_write(&Victim::Core(tenancy), &Leaver::Deadpool(other), &db, &s, 3).await;
}

/// HELD (deterministic). The same attack on the core's `transaction()` behind PgBouncer: its `BEGIN` is sent
/// alone and answered before anything else is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_switch_failed_core_transaction_behind_pgbouncer() {
    let db = database().await;
    let (_bouncer, tenancy, s, other) = core_behind_one_server(&db, "asf_ctx", false, false).await;
    heavy_unnamed_then_write(
        &Victim::CoreTransaction(tenancy),
        &Leaver::Deadpool(other),
        &db,
        &s,
        3,
    )
    .await;
}

/// Broke before the fix (deterministic, round 0). Door: the core, transaction mode, direct (no pooler), pool of ONE
/// connection. The leaver is a raw user of that pool (`router.pool().get()`, the pooler's
/// "other client" without a pooler). The same cancelled `BEGIN` message; the statement behind
/// it runs on tenant a's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_switch_failed_core_transaction_mode_direct_begin_cancelled() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Transaction, false, "asf_ct").await;
    let leaver = Leaver::Deadpool(tenancy.router().pool().clone());
    heavy_unnamed_then_write(&Victim::Core(tenancy), &leaver, &db, &s, 3).await;
}

/// HELD (deterministic). Door: the core, session mode, pool of ONE connection, the same raw pool user. The
/// switch's first message (a `Parse` of the prelude, or the simple-query switch) is cancelled;
/// the statement behind it is skipped (extended protocol: skipped up to the `Sync`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_switch_failed_core_session_mode_direct() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "asf_cs").await;
    let leaver = Leaver::Deadpool(tenancy.router().pool().clone());
    heavy_unnamed_then_write(&Victim::Core(tenancy), &leaver, &db, &s, 3).await;
}

/// HELD (deterministic). Door: the core, session mode, `reset_settings(true)`, pool of ONE connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_switch_failed_core_session_mode_direct_reset_settings() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, true, "asf_csr").await;
    let leaver = Leaver::Deadpool(tenancy.router().pool().clone());
    heavy_unnamed_then_write(&Victim::Core(tenancy), &leaver, &db, &s, 3).await;
}

/// HELD (deterministic). Door: sqlx, session mode, pool of ONE connection; the leaver a raw user of that pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_switch_failed_sqlx_session_mode() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "asf_ss").await;
    let router = sqlx_over_one_connection(&db, &tenancy).await;
    let leaver = Leaver::Sqlx(router.pool().clone());
    heavy_unnamed_then_write(&Victim::Sqlx(router), &leaver, &db, &s, 3).await;
}

/// HELD (deterministic). Door: sqlx, transaction mode behind PgBouncer with ONE server connection; the leaver
/// another client of the pooler. sqlx waits for its `BEGIN …; <checks>` message's answer
/// before writing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_switch_failed_sqlx_behind_pgbouncer() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "asf_sb").await;
    let (_bouncer, router, other) = sqlx_behind_one_server(&db, &tenancy, 2).await;
    heavy_unnamed_then_write(&Victim::Sqlx(router), &Leaver::Deadpool(other), &db, &s, 3).await;
}

/// `public.stay_on(path)`: a function that leaves `search_path` on the session, where the SQL
/// reader cannot see it (transaction mode lets a statement call one created beforehand).
const STAY_ON: &str = "CREATE FUNCTION public.stay_on(path text) RETURNS text LANGUAGE sql AS \
     $$ SELECT pg_catalog.set_config('search_path', path, false) $$";

/// Broke before the fix (timing-dependent: up to 2,000 rounds, stops at the first misplaced row; it broke
/// at rounds 147 and 904 in two runs). Door: the
/// core, transaction mode, direct, pool of ONE connection (tagged `application_name =
/// victim_<prefix>`). Tenant a calls a function that leaves `search_path = a` on the session; then
/// tenant b writes while two other connections send `pg_cancel_backend` to the victim's backend
/// in a loop. A cancel that arrives after the server read b's `BEGIN …` message but before
/// `BEGIN` ran fails that message alone; the statement written behind it runs in autocommit on
/// tenant a's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_switch_failed_core_transaction_mode_cancel_request() {
    cancel_requests(SearchPathMode::Transaction, "asf_cc").await;
}

/// HELD (timing-dependent, 2,000 rounds, ~25,000 cancel requests): the same cancel storm on the core in session mode:
/// a cancelled switch (simple query, or the prelude of the extended-protocol message) skips
/// the statement behind it up to its `Sync`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_switch_failed_core_session_mode_cancel_request() {
    cancel_requests(SearchPathMode::Session, "asf_sc").await;
}

/// The cancel-storm scenario in `mode` (see the tests above).
async fn cancel_requests(mode: SearchPathMode, prefix: &str) {
    let db = database().await;
    // Named for this test, and its cancels kept to its own database: the two storms run at
    // once in the suite, and each would otherwise cancel the other's set-up.
    let victim_name = format!("victim_{prefix}");
    let mut config = db.config().clone();
    config.application_name(&victim_name);
    let tenancy = Tenancy::builder(tenant_schemas::testing::pool(config, 1).unwrap())
        .migrations(marker_and_notes())
        .search_path_mode(mode)
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, prefix, 2).await;
    let (a, b) = (&s[0], &s[1]);
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(STAY_ON)
        .await
        .unwrap();
    let victim = Victim::Core(tenancy.clone());
    victim.write(b, "warm").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut spammers = Vec::new();
    for _ in 0..2 {
        let stop = stop.clone();
        let c = tenant_schemas::testing::pool(db.config().clone(), 1).unwrap();
        let cancel_sql = format!(
            "SELECT count(pg_catalog.pg_cancel_backend(pid)) FROM pg_catalog.pg_stat_activity \
             WHERE application_name = '{victim_name}' AND datname = pg_catalog.current_database()"
        );
        spammers.push(tokio::spawn(async move {
            let c = c.get().await.unwrap();
            let cancel = c.prepare(&cancel_sql).await.unwrap();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = c.query_one(&cancel, &[]).await;
                sent += 1;
            }
            sent
        }));
    }
    let path = format!("{}, public", a.quoted());
    let (mut failed, mut skipped, mut landed_in_a) = (0, 0, None);
    for round in 0..2000 {
        let left = async {
            let db = tenancy
                .router()
                .connection_for_tenant(&Tenant::new(a.clone()))
                .await
                .map_err(|e| e.to_string())?;
            db.query_one("SELECT public.stay_on($1)", &[&path])
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if left.is_err() {
            skipped += 1;
            continue;
        }
        let body = format!("b-round-{round}");
        let wrote = victim.write(b, &body).await;
        failed += usize::from(wrote.is_err());
        if notes_with_body(&db, a, &body).await > 0 {
            landed_in_a = Some((round, wrote));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for spammer in spammers {
        sent += spammer.await.unwrap();
    }
    eprintln!("{sent} cancel requests, {skipped} rounds skipped, {failed} of b's writes failed, landed: {landed_in_a:?}");
    assert_eq!(
        landed_in_a, None,
        "(round, what the call returned): tenant {b}'s INSERT landed in tenant {a}'s schema"
    );
}
