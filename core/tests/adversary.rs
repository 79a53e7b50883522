//! Adversarial tests: a careless application or a hostile tenant trying to make a statement
//! sent through a `ConnectionScope` run outside its tenant's schema (another tenant's, or
//! `public`), using only the public API.
//!
//! As in `misuse.rs`, every tenant has a `marker` row naming its own schema and `public`
//! holds a `marker` row `PUBLIC`, so a fall-through shows as a wrong row, not an error. The
//! pools are small so that connections are reused. Each test asserts the guarantee: a
//! failing test here is a break.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tenant_schemas::deadpool_postgres::Pool;
use tenant_schemas::deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::tokio_postgres::{NoTls, SimpleQueryMessage};
use tenant_schemas::{
    ConnectionScope, Error, NewTenant, SchemaName, SchemaRouter, SearchPathMode, Tenancy,
    TenantMigrations,
};

async fn setup(
    prefix: &str,
    n: usize,
    size: usize,
) -> (TestDatabase, Tenancy, Vec<SchemaName>, Pool) {
    marked_over_public(prefix, n, size, SearchPathMode::Session).await
}

/// What the scope's next call, and the next checkout of the (only) connection, read after
/// the attack; both must be the scope's own tenant.
async fn after_attack(router: &SchemaRouter, s0: &SchemaName, db: ConnectionScope) {
    let same_scope = marker_of(&db).await;
    drop(db);
    let next_checkout = seen_by(router, s0).await;
    assert_eq!(
        (same_scope.as_str(), next_checkout.as_str()),
        (s0.as_str(), s0.as_str()),
        "(same scope's next call, next checkout of the connection)"
    );
}

/// Runs `sql` through `how` on a scope of `s0`, then asserts that the same scope's next
/// call, and the next checkout of the (only) connection, read `s0`'s marker.
async fn next_call_stays_on_path(router: &SchemaRouter, s0: &SchemaName, how: &str, sql: &str) {
    let db = router.connection_for_schema(s0).await.unwrap();
    assert_eq!(marker_of(&db).await, s0.as_str());
    match how {
        "batch_execute" => db.batch_execute(sql).await.unwrap(),
        "simple_query" => drop(db.simple_query(sql).await.unwrap()),
        "query" => drop(db.query(sql, &[]).await.unwrap()),
        _ => drop(db.execute(sql, &[]).await.unwrap()),
    }
    after_attack(router, s0, db).await;
}

// ---------------------------------------------------------------------------------------
// The SQL lexer: text PostgreSQL reads differently from the library.
// ---------------------------------------------------------------------------------------

/// PostgreSQL identifiers may contain `$` after their first character (`x$a$` is one
/// identifier); the library's lexer reads `$a$` as the opening tag of a dollar-quoted
/// string and skips everything up to the next `$a$`, so a `SET` in between is not seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dollar_sign_inside_an_identifier_cannot_hide_a_set() {
    let (_db, tenancy, s, _pool) = setup("adv_dollar_", 1, 1).await;
    next_call_stays_on_path(
        tenancy.router(),
        &s[0],
        "batch_execute",
        "SELECT 1 AS x$a$; SET search_path TO public; SELECT 1 AS y$a$",
    )
    .await;
}

/// A string right after a word ending in `e` is taken for an `E'…'` escape string, where
/// `\'` does not end it: `name'\'` (a typed literal of type `name`, value `\`) is a
/// complete standard string for PostgreSQL, but the lexer keeps reading a string through
/// the `SET` that follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_literal_after_a_word_ending_in_e_cannot_hide_a_set() {
    let (_db, tenancy, s, _pool) = setup("adv_estr_", 1, 1).await;
    next_call_stays_on_path(
        tenancy.router(),
        &s[0],
        "batch_execute",
        r"SELECT name'\' AS n; SET search_path TO public; SELECT 'x'",
    )
    .await;
}

/// `U&"set\005fconfig"` is the identifier `set_config` written with a Unicode escape; the
/// lexer looks for the bytes `set_config` only. One statement, through the extended
/// protocol (`query`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unicode_escaped_set_config_is_recognised() {
    let (_db, tenancy, s, _pool) = setup("adv_uesc_", 1, 1).await;
    next_call_stays_on_path(
        tenancy.router(),
        &s[0],
        "query",
        r#"SELECT pg_catalog.U&"set\005fconfig"('search_path', 'public', false)"#,
    )
    .await;
}

/// More text PostgreSQL splits where the lexer does not, each hiding a `SET` that moves the
/// next call: `begin` followed by the word `atomic` anywhere (here `begin.atomic`, a column
/// of a subquery aliased `begin`) is taken for a `BEGIN ATOMIC` body in which `;` does not
/// end statements; a dollar-quote tag with a non-ASCII character (`$é$`) is not seen as one,
/// so a `'` inside it opens a string for the lexer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lexer_edge_cases_cannot_hide_a_set() {
    let (_db, tenancy, s, _pool) = setup("adv_lex_", 1, 1).await;
    let router = tenancy.router();
    let mut moved = Vec::new();
    for sql in [
        "SELECT begin.atomic FROM (SELECT 1 AS atomic) AS begin; SET search_path TO public",
        "SELECT $\u{e9}$'$\u{e9}$ AS q; SET search_path TO public; SELECT '1'",
    ] {
        let db = router.connection_for_schema(&s[0]).await.unwrap();
        assert_eq!(marker_of(&db).await, s[0].as_str());
        db.batch_execute(sql).await.unwrap();
        let same_scope = marker_of(&db).await;
        drop(db);
        let next_checkout = seen_by(router, &s[0]).await;
        if same_scope != s[0].as_str() || next_checkout != s[0].as_str() {
            moved.push((sql, same_scope, next_checkout));
        }
        // Put the connection back on a known path for the next variant.
        router
            .connection_for_schema(&s[0])
            .await
            .unwrap()
            .batch_execute("RESET search_path")
            .await
            .unwrap();
    }
    assert!(
        moved.is_empty(),
        "(sql, same scope, next checkout): {moved:#?}"
    );
}

/// `SET standard_conforming_strings = off` (an ordinary setting, seen as a session change and
/// switched after) makes PostgreSQL read `\'` inside a plain string as an escaped quote,
/// where the lexer reads a backslash and the end of the string. In a later call, `'a\''`
/// is then a complete string for PostgreSQL, but for the lexer a doubled quote inside a
/// string that runs on through the `SET` that follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_read_with_backslash_escapes_cannot_hide_a_set() {
    let (_db, tenancy, s, _pool) = setup("adv_scs_", 1, 1).await;
    let router = tenancy.router();
    let db = router.connection_for_schema(&s[0]).await.unwrap();
    db.batch_execute("SET standard_conforming_strings = off")
        .await
        .unwrap();
    assert_eq!(marker_of(&db).await, s[0].as_str());
    db.batch_execute(r"SELECT 'a\''; SET search_path TO public; SELECT '1'")
        .await
        .unwrap();
    after_attack(router, &s[0], db).await;
}

/// The same through a real PgBouncer in transaction pooling: the setting, run inside the
/// tenant's transaction, stays on the server connection, and a `COMMIT` hidden by it ends
/// the tenant's transaction so that what follows runs outside it (here, reads `public`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_refuses_a_commit_hidden_by_backslash_escapes() {
    let db = database().await;
    let (_bouncer, tenancy) = bounced_tenancy(&db, 1, 1).await;
    let s = marked_tenants(&tenancy, "adv_txscs_", 1).await;
    plant_public_marker(db.pool()).await;
    // A session setting through the scope is refused in transaction mode (it would outlive
    // the call's transaction); another client of the one server connection makes it.
    let raw = tenancy.router().pool().get().await.unwrap();
    raw.batch_execute("SET standard_conforming_strings = off")
        .await
        .unwrap();
    drop(raw);
    let conn = tenancy.router().connection_for_schema(&s[0]).await.unwrap();
    let refused = conn
        .batch_execute("SET standard_conforming_strings = off")
        .await;
    assert!(
        matches!(refused, Err(Error::NotInTransactionMode { .. })),
        "{refused:?}"
    );
    let result = conn
        .simple_query(r"SELECT 'a\''; COMMIT; SELECT schema_name FROM marker; SELECT '1'")
        .await;
    let rows: Vec<String> = match &result {
        Ok(messages) => messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    assert!(
        matches!(result, Err(Error::NotInTransactionMode { .. })),
        "transaction control must be refused in transaction mode; it ran and read {rows:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Prepared statements whose effects the scope did not see being prepared.
// ---------------------------------------------------------------------------------------

/// A `Statement` prepared on the scope's own `transaction()` (not through
/// `ConnectionScope::prepare`) and run through the scope after the commit: the scope never
/// learned what it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_on_the_transaction_cannot_move_the_scope() {
    let (_db, tenancy, s, _pool) = setup("adv_txprep_", 1, 1).await;
    let router = tenancy.router();
    let mut db = router.connection_for_schema(&s[0]).await.unwrap();
    let tx = db.transaction().await.unwrap();
    let stmt = tx
        .prepare("SELECT pg_catalog.set_config('search_path', 'public', false)")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    db.query(&stmt, &[]).await.unwrap();
    after_attack(router, &s[0], db).await;
}

/// A `Statement` prepared through one scope (which records its effects) and run through the
/// next scope that gets the same pooled connection — here another tenant's: that scope never
/// learned what the statement does, and its next call reads the first tenant's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_by_one_scope_cannot_move_the_next() {
    let (_db, tenancy, s, _pool) = setup("adv_xprep_", 2, 1).await;
    let router = tenancy.router();
    let first = router.connection_for_schema(&s[0]).await.unwrap();
    // Moves the session to the *other* tenant's schema.
    let stmt = first
        .prepare(&format!(
            "SELECT pg_catalog.set_config('search_path', '{}', false)",
            s[0]
        ))
        .await
        .unwrap();
    drop(first);
    let db = router.connection_for_schema(&s[1]).await.unwrap();
    assert_eq!(marker_of(&db).await, s[1].as_str());
    db.query(&stmt, &[]).await.unwrap();
    after_attack(router, &s[1], db).await;
}

// ---------------------------------------------------------------------------------------
// Cancellation.
// ---------------------------------------------------------------------------------------

/// A recognised `set_config` call cancelled by a timeout while it runs. When the scope was
/// off its path (but the schema seen a moment ago), the switch is pipelined in front of
/// the statement and marks the scope "on path" when it completes — after the statement's
/// own "forget the path". The cancelled statement still runs on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_session_change_cannot_leave_the_path_trusted() {
    let (_db, tenancy, s, _pool) = setup("adv_cancel_", 1, 1).await;
    let router = tenancy.router();
    let db = router.connection_for_schema(&s[0]).await.unwrap();
    assert_eq!(marker_of(&db).await, s[0].as_str());
    // Any recognised session change: the scope is now off its path, the schema verified.
    db.batch_execute("SET application_name = 'adversary'")
        .await
        .unwrap();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(150),
        db.query(
            "SELECT pg_catalog.set_config('search_path', 'public', false), pg_catalog.pg_sleep(0.5)",
            &[],
        ),
    )
    .await;
    assert!(cancelled.is_err(), "the timeout fired");
    after_attack(router, &s[0], db).await;
}

// ---------------------------------------------------------------------------------------
// Session state other than search_path that changes name resolution.
// ---------------------------------------------------------------------------------------

/// PostgreSQL searches the session's temporary schema before the search path for tables
/// (unless `pg_temp` is listed in it). A temporary table created by one tenant's request
/// outlives the request on the pooled connection and shadows the next tenant's table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_table_of_one_tenant_cannot_shadow_the_next_tenants_table() {
    let (_db, tenancy, s, _pool) = setup("adv_temp_", 2, 1).await;
    let router = tenancy.router();
    {
        let db = router.connection_for_schema(&s[0]).await.unwrap();
        // A report built in a temporary copy, as careless code does.
        db.batch_execute("CREATE TEMP TABLE marker AS SELECT * FROM marker")
            .await
            .unwrap();
    }
    assert_eq!(seen_by(router, &s[1]).await, s[1].as_str());
}

// ---------------------------------------------------------------------------------------
// Transaction mode.
// ---------------------------------------------------------------------------------------

/// Transaction mode behind a real PgBouncer refuses SQL with transaction control — as read
/// by the lexer. A `COMMIT` hidden from it by `x$a$` is sent: it ends the tenant's
/// transaction, and what follows in the text runs outside it, on the server connection's
/// own session path (`public`), and is committed whatever happens next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_refuses_a_hidden_commit() {
    let db = database().await;
    let (_bouncer, tenancy) = bounced_tenancy(&db, 2, 2).await;
    let s = marked_tenants(&tenancy, "adv_txhide_", 1).await;
    plant_public_marker(db.pool()).await;
    let conn = tenancy.router().connection_for_schema(&s[0]).await.unwrap();
    let result = conn
        .simple_query("SELECT 1 AS x$a$; COMMIT; SELECT schema_name FROM marker AS y$a$")
        .await;
    let rows: Vec<String> = match &result {
        Ok(messages) => messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    assert!(
        matches!(result, Err(Error::NotInTransactionMode { .. })),
        "transaction control must be refused in transaction mode; it ran and read {rows:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Migrations: the same lexer guards atomic creation.
// ---------------------------------------------------------------------------------------

/// A migration whose `COMMIT` is hidden from the lexer by `x$a$` is not refused; it ends
/// the creating transaction, so a later failing migration leaves a half-created schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_commit_in_a_migration_cannot_break_atomic_creation() {
    let db = database().await;
    let migrations = TenantMigrations::new()
        .with("notes", NOTES)
        .with(
            "stray",
            "CREATE TABLE early (x int); SELECT 1 AS x$a$; COMMIT; SELECT 1 AS y$a$",
        )
        .with("fails", "SELECT 1 / 0");
    let built = Tenancy::builder(db.pool().clone())
        .migrations(migrations)
        .build()
        .await;
    let tenancy = match built {
        Err(Error::MigrationRefused { .. }) => return,
        Err(e) => panic!("{e}"),
        Ok(t) => t,
    };
    let created = tenancy.create_tenant(NewTenant::new(schema("half"))).await;
    assert!(created.is_err(), "the last migration fails");
    assert!(
        !schema_exists(&db, "half").await,
        "creation is not atomic: the schema `half` (tables {:?}) outlived the failed creation",
        schemas_holding(&db, "early").await
    );
}

/// A migration whose `SET` is hidden from the lexer moves the later migrations of the
/// creation out of the tenant's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_set_in_a_migration_cannot_move_later_migrations() {
    let db = database().await;
    let migrations = TenantMigrations::new()
        .with("notes", NOTES)
        .with(
            "escape",
            "SELECT 1 AS x$a$; SET search_path TO public; SELECT 1 AS y$a$",
        )
        .with("later", "CREATE TABLE later_hidden (x int)");
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(migrations)
        .build()
        .await
        .unwrap();
    let created = tenancy
        .create_tenant(NewTenant::new(schema("victim")))
        .await;
    let holding = schemas_holding(&db, "later_hidden").await;
    assert!(
        created.is_err() || holding == ["victim"],
        "created {created:?}; later_hidden is in {holding:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Configuration a careless developer may choose.
// ---------------------------------------------------------------------------------------

/// `track_search_path(true)` forced on a pool whose recycling resets the session
/// (`RecyclingMethod::Clean`, which runs `RESET ALL`): the memory survives the reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_cannot_be_forced_on_a_clean_recycling_pool() {
    let db = database().await;
    let manager = Manager::from_config(
        db.config().clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Clean,
        },
    );
    let pool = Pool::builder(manager).max_size(1).build().unwrap();
    let tenancy = Tenancy::builder(pool.clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "adv_clean_", 1).await;
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.marker (schema_name text NOT NULL);
             INSERT INTO public.marker VALUES ('PUBLIC')",
        )
        .await
        .unwrap();
    let router = SchemaRouter::builder(pool).track_search_path(true).build();
    let first = seen_by(&router, &s[0]).await;
    let second = seen_by(&router, &s[0]).await;
    assert_eq!(
        (first.as_str(), second.as_str()),
        (s[0].as_str(), s[0].as_str())
    );
}

// ---------------------------------------------------------------------------------------
// Cancellation at other await points (these hold).
// ---------------------------------------------------------------------------------------

/// Tiny timeouts around every kind of call except a recognised session change sent through
/// `query`/`execute` (see `a_cancelled_session_change_behind_a_pipelined_switch`), two
/// tenants alternating on one connection: after each, the same scope and a fresh checkout
/// read their own tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_at_other_await_points_stays_on_path() {
    let (_db, tenancy, s, _pool) = setup("adv_fuzz_", 2, 1).await;
    let router = tenancy.router();
    for round in 0..240u64 {
        let i = (round % 2) as usize;
        let (own, other) = (&s[i], &s[1 - i]);
        let budget = Duration::from_micros((round * 53) % 2500);
        let mut db = router.connection_for_schema(own).await.unwrap();
        let set_other = format!("SET search_path TO {other}");
        let op = (round / 2) % 5;
        let _ = tokio::time::timeout(budget, async {
            match op {
                0 => drop(db.query("SELECT schema_name FROM marker", &[]).await),
                1 => drop(db.batch_execute(&set_other).await),
                2 => drop(db.simple_query(&set_other).await),
                3 => {
                    if let Ok(tx) = db.transaction().await {
                        let _ = tx.batch_execute(&set_other).await;
                        let _ = tx.commit().await;
                    }
                }
                _ => {
                    if let Ok(stmt) = db.prepare("SELECT schema_name FROM marker").await {
                        let _ = db.query(&stmt, &[]).await;
                    }
                }
            }
        })
        .await;
        let same = marker_of(&db).await;
        drop(db);
        let next = seen_by(router, own).await;
        assert_eq!(
            (same.as_str(), next.as_str()),
            (own.as_str(), own.as_str()),
            "round {round}, op {op}, budget {budget:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Hosts (these hold).
// ---------------------------------------------------------------------------------------

/// A hostile sign-up cannot claim another tenant's host spelled differently (case, port,
/// trailing dot), and an untrusted `X-Forwarded-Host` does not move a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_spelled_differently_do_not_reach_another_tenant() {
    let (_db, tenancy, s, _pool) = setup("adv_host_", 2, 2).await;
    for spelling in [
        "ADV-HOST-0.TEST",
        "adv-host-0.test.",
        "Adv-Host-0.test.:8443",
    ] {
        let created = tenancy
            .create_tenant(NewTenant::new(schema("evil")).domain(host(spelling)))
            .await;
        assert!(created.is_err(), "{spelling}: {created:?}");
    }
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::HOST, "adv-host-0.test".parse().unwrap());
    headers.insert("x-forwarded-host", "adv-host-1.test".parse().unwrap());
    headers.insert("forwarded", "host=adv-host-1.test".parse().unwrap());
    let uri: http::Uri = "/notes".parse().unwrap();
    let tenant = tenancy.resolve_request(&uri, &headers).await.unwrap();
    assert_eq!(tenant.schema(), &s[0]);
    let tenant = tenancy.resolve(&host("ADV-HOST-1.test.:80")).await.unwrap();
    assert_eq!(tenant.schema(), &s[1]);
}
