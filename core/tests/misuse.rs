//! The isolation promise under misuse: what a careless or hostile application does with the
//! connections, routers and pools the library hands out must never make a statement run in
//! another tenant's schema or fall through to `public`.
//!
//! Every test runs over a small pool so that connections are reused, and `public` holds a
//! `marker` table of its own, so a fall-through shows as the row `PUBLIC` instead of an error.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use tenant_schemas::deadpool_postgres::Pool;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::{pool, TestCluster, TestDatabase, TestPgBouncer};
use tenant_schemas::{
    scope, DropSchema, Error, ErrorKind, NewTenant, SchemaName, SchemaRouter, SearchPathMode,
    SubdomainResolver, Tenancy, TenantMigrations,
};

async fn setup(
    prefix: &str,
    n: usize,
    size: usize,
) -> (TestDatabase, Tenancy, Vec<SchemaName>, Pool) {
    marked_over_public(prefix, n, size, SearchPathMode::Session).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_over_one_pool_stay_on_their_tenants() {
    let (_db, _tenancy, s, pool) = setup("two_routers_", 2, 1).await;
    let web = SchemaRouter::new(pool.clone());
    let worker = SchemaRouter::new(pool.clone());
    for _ in 0..5 {
        assert_eq!(seen_by(&web, &s[0]).await, s[0].as_str());
        assert_eq!(seen_by(&worker, &s[1]).await, s[1].as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_pool_checkout_that_changes_the_path_is_noticed() {
    let (_db, tenancy, s, pool) = setup("plain_pool_", 2, 1).await;
    let router = tenancy.router();
    assert_eq!(seen_by(router, &s[0]).await, s[0].as_str());
    {
        let raw = pool.get().await.unwrap();
        raw.batch_execute(&format!("SET search_path TO {}", s[1]))
            .await
            .unwrap();
    }
    assert_eq!(seen_by(router, &s[0]).await, s[0].as_str());
}

/// Each way of changing the session through the scope itself; after it, the same scope's
/// next call and the next checkout of the connection are on the tenant's path again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_changes_sent_through_the_scope_do_not_outlive_the_call() {
    let (_db, tenancy, s, _pool) = setup("user_set_", 2, 1).await;
    let router = tenancy.router();
    let other = s[1].as_str();
    let misuses: Vec<(&str, String)> = vec![
        ("batch_execute", format!("SET search_path TO {other}")),
        ("batch_execute", "RESET search_path".into()),
        ("batch_execute", "RESET ALL".into()),
        ("batch_execute", "DISCARD ALL".into()),
        ("simple_query", format!("SET search_path = {other}, public")),
        ("simple_query", "RESET search_path".into()),
        (
            "query",
            format!("SELECT set_config('search_path', '{other}', false)"),
        ),
        ("execute", format!("SET search_path TO {other}")),
        (
            "batch_execute",
            format!(
                "DO $$ BEGIN PERFORM pg_catalog.set_config('search_path', '{other}', false); END $$"
            ),
        ),
    ];
    for (how, sql) in &misuses {
        let db = router.connection_for_schema(&s[0]).await.unwrap();
        // Warm the statement cache, then misuse the scope.
        let before = marker_of(&db).await;
        assert_eq!(before, s[0].as_str());
        match *how {
            "batch_execute" => db.batch_execute(sql).await.unwrap(),
            "simple_query" => drop(db.simple_query(sql).await.unwrap()),
            "query" => drop(db.query(sql.as_str(), &[]).await.unwrap()),
            _ => drop(db.execute(sql.as_str(), &[]).await.unwrap()),
        }
        let same_scope: String = db
            .query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap_or_else(|e| panic!("{how} {sql}: {e}"))
            .get(0);
        assert_eq!(same_scope, s[0].as_str(), "same scope after {how} {sql}");
        drop(db);
        assert_eq!(
            seen_by(router, &s[0]).await,
            s[0].as_str(),
            "next checkout after {how} {sql}"
        );
        assert_eq!(seen_by(router, &s[1]).await, s[1].as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_set_inside_a_committed_transaction_does_not_leak() {
    let (_db, tenancy, s, _pool) = setup("tx_set_", 2, 1).await;
    let router = tenancy.router();
    let mut db = router.connection_for_schema(&s[0]).await.unwrap();
    let tx = db.transaction().await.unwrap();
    tx.batch_execute(&format!("SET search_path TO {}", s[1]))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let name = marker_of(&db).await;
    assert_eq!(name, s[0].as_str());
    drop(db);
    assert_eq!(seen_by(router, &s[0]).await, s[0].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_begin_rolled_back_later_cannot_undo_a_switch() {
    let (_db, tenancy, s, _pool) = setup("stray_begin_", 2, 1).await;
    let router = tenancy.router();
    assert_eq!(seen_by(router, &s[0]).await, s[0].as_str());
    // A handler opens a transaction and forgets it.
    router
        .connection_for_schema(&s[0])
        .await
        .unwrap()
        .batch_execute("BEGIN")
        .await
        .unwrap();
    // The next request, for another tenant, gets the connection, writes and rolls back
    // whatever it was in.
    let db = router.connection_for_schema(&s[1]).await.unwrap();
    db.execute("INSERT INTO notes (body) VALUES ('kept')", &[])
        .await
        .unwrap();
    db.batch_execute("ROLLBACK").await.unwrap();
    drop(db);
    assert_eq!(seen_by(router, &s[1]).await, s[1].as_str());
    assert_eq!(seen_by(router, &s[0]).await, s[0].as_str());
    // The write of the second request was not swallowed by the forgotten transaction.
    let kept: i64 = router
        .connection_for_schema(&s[1])
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM notes WHERE body = 'kept'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_client_kept_past_a_switch_cannot_move_the_scope() {
    let (_db, tenancy, s, _pool) = setup("raw_client_", 2, 1).await;
    let router = tenancy.router();
    let db = router.connection_for_schema(&s[0]).await.unwrap();
    let raw = db.client().await.unwrap();
    let name = marker_of(&db).await;
    assert_eq!(name, s[0].as_str());
    raw.batch_execute(&format!("SET search_path TO {}", s[1]))
        .await
        .unwrap();
    let name = marker_of(&db).await;
    assert_eq!(name, s[0].as_str());
    drop(db);
    assert_eq!(seen_by(router, &s[0]).await, s[0].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_does_not_break_the_statement_cache() {
    let (_db, tenancy, s, _pool) = setup("discard_", 1, 1).await;
    let router = tenancy.router();
    let db = router.connection_for_schema(&s[0]).await.unwrap();
    for round in 0..3 {
        let name: String = db
            .query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"))
            .get(0);
        assert_eq!(name, s[0].as_str());
        db.batch_execute("DISCARD ALL").await.unwrap();
    }
    drop(db);
    assert_eq!(seen_by(router, &s[0]).await, s[0].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_while_its_tenant_is_deleted_never_reaches_public() {
    let (_db, tenancy, s, pool) = setup("deleted_", 1, 2).await;
    pool.get()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE public.notes (id bigserial, body text)")
        .await
        .unwrap();
    let db = tenancy.router().connection_for_schema(&s[0]).await.unwrap();
    let name = marker_of(&db).await;
    assert_eq!(name, s[0].as_str());
    tenancy.delete_tenant(&s[0], DropSchema::Yes).await.unwrap();
    let read = db.query_one("SELECT schema_name FROM marker", &[]).await;
    assert!(matches!(read, Err(Error::SchemaMissing { .. })), "{read:?}");
    let write = db
        .execute("INSERT INTO notes (body) VALUES ('lost')", &[])
        .await;
    assert!(
        matches!(write, Err(Error::SchemaMissing { .. })),
        "{write:?}"
    );
    assert_eq!(write.unwrap_err().kind(), ErrorKind::NotFound);
    let in_public: i64 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM public.notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_public, 0, "nothing was written to public");
    // The next checkout of a remembered connection fails closed too.
    drop(db);
    let again = tenancy
        .router()
        .connection_for_schema(&s[0])
        .await
        .unwrap()
        .query_one("SELECT schema_name FROM marker", &[])
        .await;
    assert!(
        matches!(again, Err(Error::SchemaMissing { .. })),
        "{again:?}"
    );
}

/// PL/pgSQL resolves the names of each of its statements when it reaches it: a function
/// called before a deletion may write after it. The deletion waits for it to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_in_flight_finishes_before_its_schema_is_dropped() {
    let (_db, tenancy, s, pool) = setup("drain_", 1, 4).await;
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.notes (id bigserial, body text);
             CREATE FUNCTION public.slow_note() RETURNS void LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM pg_sleep(0.5);
                 INSERT INTO notes (body) VALUES ('late');
             END $$",
        )
        .await
        .unwrap();
    let router = tenancy.router().clone();
    let schema = s[0].clone();
    let slow = tokio::spawn(async move {
        let db = router.connection_for_schema(&schema).await.unwrap();
        db.execute("SELECT public.slow_note()", &[]).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    tenancy.delete_tenant(&s[0], DropSchema::Yes).await.unwrap();
    assert!(slow.is_finished(), "the deletion waited for the statement");
    slow.await.unwrap().unwrap();
    let in_public: i64 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM public.notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_public, 0, "the late write did not land in public");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tenancy_with_a_stale_cache_fails_closed() {
    let (_db, tenancy, s, pool) = setup("stale_", 1, 2).await;
    let other = Tenancy::builder(pool.clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let tenant = other.resolve(&host("stale-0.test")).await.unwrap();
    let first: String = scope::run(tenant.clone(), async {
        other
            .connection()
            .await
            .unwrap()
            .query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap()
            .get(0)
    })
    .await;
    assert_eq!(first, s[0].as_str());
    tenancy.delete_tenant(&s[0], DropSchema::Yes).await.unwrap();
    // `other` has no listener: its cache still resolves the host.
    let stale = other.resolve(&host("stale-0.test")).await.unwrap();
    let read = scope::run(stale, async {
        other
            .connection()
            .await
            .unwrap()
            .query_one("SELECT schema_name FROM marker", &[])
            .await
    })
    .await;
    assert!(matches!(read, Err(Error::SchemaMissing { .. })), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_that_invents_tenants_fails_closed() {
    let (_db, _tenancy, _s, pool) = setup("invent_", 1, 2).await;
    let resolver = SubdomainResolver::new(host("example.test"));
    let tenancy = Tenancy::builder(pool.clone())
        .resolver(resolver)
        .build()
        .await
        .unwrap();
    let ghost = tenancy.resolve(&host("ghost.example.test")).await.unwrap();
    let read = scope::run(ghost, async {
        tenancy
            .connection()
            .await
            .unwrap()
            .query_one("SELECT schema_name FROM marker", &[])
            .await
    })
    .await;
    let err = read.unwrap_err();
    assert!(matches!(err, Error::SchemaMissing { .. }), "{err:?}");
    assert_eq!(err.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_on_another_shard_reached_by_schema_name_fails_closed() {
    let (a, _b, tenancy) = two_databases().await;
    plant_public_marker(a.pool()).await;
    let s = schema("far_away");
    tenancy
        .create_tenant(NewTenant::new(s.clone()).shard("b"))
        .await
        .unwrap();
    // Refused at checkout (the registry places it on `b`), or at its first statement.
    let read = async {
        tenancy
            .router()
            .connection_for_schema(&s)
            .await?
            .query_one("SELECT schema_name FROM marker", &[])
            .await
    }
    .await;
    assert!(matches!(read, Err(Error::SchemaMissing { .. })), "{read:?}");
    let in_scope = scope::run_in_schema(s.clone(), async {
        tenancy
            .connection()
            .await?
            .query("SELECT schema_name FROM marker", &[])
            .await
    })
    .await;
    assert!(
        matches!(in_scope, Err(Error::SchemaMissing { .. })),
        "{in_scope:?}"
    );
}

/// Tenants whose schemas diverged (a rolling migration changed a column's type in some of
/// them): one SQL text, cached on a connection for one tenant, stays valid for the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_whose_column_types_differ_share_a_connection_safely() {
    let db = database().await;
    let pool = db.new_pool(1).unwrap();
    let tenancy = Tenancy::builder(pool.clone())
        .migrations(
            TenantMigrations::new().with("items", "CREATE TABLE items (code int, name text)"),
        )
        .build()
        .await
        .unwrap();
    let (ints, texts) = (schema("items_int"), schema("items_text"));
    for s in [&ints, &texts] {
        tenancy
            .create_tenant(NewTenant::new(s.clone()))
            .await
            .unwrap();
    }
    let router = tenancy.router();
    let setup_text = router.connection_for_schema(&texts).await.unwrap();
    setup_text
        .batch_execute(
            "ALTER TABLE items ALTER COLUMN code TYPE text;
             INSERT INTO items VALUES ('a7', 'text row')",
        )
        .await
        .unwrap();
    drop(setup_text);
    router
        .connection_for_schema(&ints)
        .await
        .unwrap()
        .execute("INSERT INTO items VALUES (7, 'int row')", &[])
        .await
        .unwrap();
    let sql = "SELECT name FROM items WHERE code = $1";
    for _ in 0..3 {
        let name: String = router
            .connection_for_schema(&ints)
            .await
            .unwrap()
            .query_one(sql, &[&7i32])
            .await
            .unwrap()
            .get(0);
        assert_eq!(name, "int row");
        let name: String = router
            .connection_for_schema(&texts)
            .await
            .unwrap()
            .query_one(sql, &[&"a7"])
            .await
            .unwrap()
            .get(0);
        assert_eq!(name, "text row");
    }
    // An operator that exists for one type only.
    let like = "SELECT count(*) FROM items WHERE code::text LIKE $1 AND code = code";
    for s in [&ints, &texts, &ints] {
        let n: i64 = router
            .connection_for_schema(s)
            .await
            .unwrap()
            .query_one(like, &[&"%7"])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1);
    }
    drop(db);
}

/// Behind PgBouncer in transaction pooling, a statement whose rows outlive the transaction
/// must not leave a named statement on a server connection that other clients then share:
/// with PgBouncer's prepared statements off, and on as deployed (`max_prepared_statements`
/// 200, PgBouncer's default since 1.24; ignored by 1.18). Nor may the library's own work
/// (creating the tenants): a statement prepared by name outside a transaction, executed and
/// closed in later messages, can be closed on another server connection than it was prepared
/// on, and stays there (the registry's version check did, about one run in three on a busy
/// machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_leaves_nothing_named_on_a_shared_server_connection() {
    for prepared in [0, 200] {
        leaves_nothing_named(prepared).await;
    }
}

async fn leaves_nothing_named(max_prepared_statements: u32) {
    let cluster = TestCluster::shared().unwrap();
    let db = cluster.create_database().await.unwrap();
    let bouncer = TestPgBouncer::builder(cluster)
        .pool_size(2)
        .max_prepared_statements(max_prepared_statements)
        .start()
        .unwrap();
    let mut instances = Vec::new();
    for _ in 0..2 {
        instances.push(
            Tenancy::builder(pool(bouncer.config(db.name()), 2).unwrap())
                .migrations(marker_and_notes())
                .search_path_mode(SearchPathMode::Transaction)
                .build()
                .await
                .unwrap(),
        );
    }
    let schemas = Arc::new(marked_tenants(&instances[0], "named_", 2).await);
    let mut held = Vec::new();
    for round in 0..60 {
        for (i, tenancy) in instances.iter().enumerate() {
            let s = &schemas[(round + i) % 2];
            let conn = tenancy.router().connection_for_schema(s).await.unwrap();
            // Rows kept past the statement's transaction.
            let rows = conn
                .query("SELECT schema_name FROM marker WHERE $1::int > 0", &[&1i32])
                .await
                .unwrap_or_else(|e| panic!("round {round}, instance {i}: {e}"));
            assert_eq!(rows[0].get::<_, String>(0), s.as_str());
            held.push(rows);
            let n = conn
                .execute("INSERT INTO notes (body) VALUES ($1)", &[&"x"])
                .await
                .unwrap();
            assert_eq!(n, 1);
        }
        if held.len() > 8 {
            held.clear();
        }
    }
    drop(held);
    // Whatever server connection a probe lands on holds no named statement of a client's
    // (PgBouncer 1.21+ with `max_prepared_statements` keeps statements of its own there,
    // named `PGBOUNCER_<n>`, which it hands only to clients that prepared the same text).
    let probe = pool(bouncer.config(db.name()), 2).unwrap();
    for _ in 0..10 {
        let (a, b) = (probe.get().await.unwrap(), probe.get().await.unwrap());
        for c in [&a, &b] {
            let rows = c
                .simple_query(
                    "SELECT string_agg(name || ': ' || statement, ' | ') \
                     FROM pg_prepared_statements WHERE name NOT LIKE 'PGBOUNCER\\_%'",
                )
                .await
                .unwrap();
            let left = rows.iter().find_map(|m| match m {
                tenant_schemas::tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some(r.get(0).map(str::to_owned))
                }
                _ => None,
            });
            assert_eq!(
                left,
                Some(None),
                "max_prepared_statements {max_prepared_statements}: named statements left on \
                 a shared server connection"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_refuses_user_transaction_control() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(marker_and_notes())
        .search_path_mode(SearchPathMode::Transaction)
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "tx_ctl_", 1).await;
    let conn = tenancy.router().connection_for_schema(&s[0]).await.unwrap();
    let err = conn
        .batch_execute("COMMIT; INSERT INTO notes (body) VALUES ('outside')")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotInTransactionMode { .. }), "{err:?}");
    let n: i64 = conn
        .query_one("SELECT count(*) FROM notes WHERE body = 'outside'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// Another process deleted the tenant (here: its schema dropped behind this process's
/// back): a connection remembered on it answers "schema missing", not a bare SQL error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_dropped_by_another_process_reads_as_missing() {
    let db = database().await;
    let pool = db.new_pool(1).unwrap();
    let tenancy = Tenancy::builder(pool.clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "elsewhere_", 1).await;
    let router = tenancy.router();
    assert_eq!(seen_by(router, &s[0]).await, s[0].as_str());
    let stats = router.stats();
    let other_process = pool.get().await.unwrap();
    other_process
        .batch_execute(&format!("DROP SCHEMA {} CASCADE", s[0].quoted()))
        .await
        .unwrap();
    drop(other_process);
    let read = try_seen_by(router, &s[0]).await;
    assert!(matches!(read, Err(Error::SchemaMissing { .. })), "{read:?}");
    assert!(router.stats().switches > stats.switches);
}

/// Another process deleted the tenant and this one does not listen for changes: within
/// `VERIFIED_FOR` (one second) of the schema last being seen, a remembered connection may
/// still be trusted; after it, the schema is checked again, even where `public` has a table
/// of the same name to fall through to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_deletion_is_noticed_within_a_second() {
    let (_db, tenancy, s, pool) = setup("noticed_", 1, 1).await;
    let router = tenancy.router();
    assert_eq!(seen_by(router, &s[0]).await, s[0].as_str());
    pool.get()
        .await
        .unwrap()
        .batch_execute(&format!("DROP SCHEMA {} CASCADE", s[0].quoted()))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let read = try_seen_by(router, &s[0]).await;
    assert!(matches!(read, Err(Error::SchemaMissing { .. })), "{read:?}");
}

/// A connection remembered on a tenant (no scope open, so nothing else holds on to the
/// tenant) is not trusted after the tenant is deleted and its schema dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tenant_is_not_served_from_a_remembered_connection() {
    let (_db, tenancy, s, _pool) = setup("remembered_", 1, 1).await;
    let router = tenancy.router();
    assert_eq!(seen_by(router, &s[0]).await, s[0].as_str());
    tenancy.delete_tenant(&s[0], DropSchema::Yes).await.unwrap();
    let read = try_seen_by(router, &s[0]).await;
    assert!(matches!(read, Err(Error::SchemaMissing { .. })), "{read:?}");
}

/// The same with connection groups over the tenancy's pool: connections of every group
/// remembered on the tenant's path (each group's own sighting of it) and a second router
/// built over the same pools; after the deletion none of them reads `public`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tenant_is_not_served_from_any_connection_group() {
    let (db, tenancy, s, pool) = setup("grouped_", 1, 2).await;
    let more = [db.new_pool(1).unwrap(), db.new_pool(1).unwrap()];
    let routers = [
        SchemaRouter::builder(pool.clone())
            .connection_groups(more.clone())
            .build(),
        SchemaRouter::builder(more[1].clone())
            .connection_groups([pool.clone(), more[0].clone()])
            .build(),
    ];
    for router in &routers {
        assert_eq!(seen_by(router, &s[0]).await, s[0].as_str());
    }
    tenancy.delete_tenant(&s[0], DropSchema::Yes).await.unwrap();
    for router in &routers {
        for _ in 0..3 {
            let read = try_seen_by(router, &s[0]).await;
            assert!(matches!(read, Err(Error::SchemaMissing { .. })), "{read:?}");
        }
    }
}

/// A request that checks out a connection while a deletion of its tenant is under way (here
/// held up by another transaction's lock) never reads `public` (which has rows the tenant's
/// table has not): its statements wait for the deletion and then find the schema missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_starts_while_its_tenant_is_being_deleted_never_reaches_public() {
    let (db, tenancy, s, pool) = setup("late_", 1, 4).await;
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.notes (id bigserial, body text); \
             INSERT INTO public.notes (body) SELECT 'public' FROM generate_series(1, 7)",
        )
        .await
        .unwrap();
    let blocker = pool.get().await.unwrap();
    blocker
        .batch_execute(&format!(
            "BEGIN; SELECT count(*) FROM {}.notes",
            s[0].quoted()
        ))
        .await
        .unwrap();
    let (t, s0) = (tenancy.clone(), s[0].clone());
    let deletion = tokio::spawn(async move { t.delete_tenant(&s0, DropSchema::Yes).await });
    // Under way: waiting for the blocker's lock (the gate of this process is closed before).
    // Not a fixed pause: on a busy machine the deletion took longer to get there, the request
    // then ran before it, on the tenant's own schema, and the test failed without a fault.
    until_counted(
        &db,
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
        &[],
    )
    .await;
    // A worker's router over a pool of its own, which has not used the tenant before.
    let router = SchemaRouter::new(db.new_pool(2).unwrap());
    let s0 = s[0].clone();
    let request = tokio::spawn(async move {
        let db = router.connection_for_schema(&s0).await.unwrap();
        let first = db
            .query_one("SELECT schema_name FROM marker", &[])
            .await
            .map(|r| r.get::<_, String>(0));
        let second = db
            .query_one("SELECT count(*) FROM notes", &[])
            .await
            .map(|r| r.get::<_, i64>(0));
        (first, second)
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    deletion.await.unwrap().unwrap();
    let (first, second) = request.await.unwrap();
    if let Ok(marker) = &first {
        assert_eq!(marker, s[0].as_str(), "first statement");
    }
    assert!(
        matches!(second, Err(Error::SchemaMissing { .. })),
        "second statement: {second:?} (first: {first:?})"
    );
}

/// Transaction mode: a setting made for the session (`SET` without `LOCAL`, `RESET`,
/// `set_config(…, false)`) would stay on the server connection after the call's transaction —
/// behind a pooler, for another client's tenant (an application's `app.user_id` read by
/// row-level security, say). Refused before it is sent, through every way a scope and its
/// transactions take SQL; `SET LOCAL` inside a transaction is served and ends with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_refuses_settings_that_outlive_the_transaction() {
    let (_db, tenancy, s, _pool) =
        marked_over_public("tx_set_", 2, 1, SearchPathMode::Transaction).await;
    let router = tenancy.router();
    let setting = "SELECT coalesce(current_setting('app.user_id', true), '') \
                   || '/' || current_setting('work_mem')";
    let default: String = {
        let other = router.connection_for_schema(&s[1]).await.unwrap();
        other.query_one(setting, &[]).await.unwrap().get(0)
    };
    assert_eq!(default, "/4MB");
    let refused = |what: &str, result: Result<(), Error>| {
        let err = result.expect_err(what);
        assert!(
            matches!(err, Error::NotInTransactionMode { .. }),
            "{what}: {err:?}"
        );
        assert!(err.to_string().contains("SET LOCAL"), "{what}: {err}");
    };
    {
        let mut db = router.connection_for_schema(&s[0]).await.unwrap();
        refused(
            "batch_execute SET",
            db.batch_execute("SET app.user_id = '42'").await,
        );
        refused(
            "simple_query SET SESSION",
            db.simple_query("SET SESSION work_mem = '64kB'")
                .await
                .map(drop),
        );
        refused(
            "execute set_config(…, false)",
            db.execute("SELECT set_config('app.user_id', '42', false)", &[])
                .await
                .map(drop),
        );
        refused(
            "query set_config with a parameter",
            db.query("SELECT set_config('app.user_id', '42', $1)", &[&false])
                .await
                .map(drop),
        );
        refused(
            "query_one behind another statement",
            db.batch_execute("SELECT 1; SET work_mem = '64kB'").await,
        );
        refused("RESET", db.batch_execute("RESET work_mem").await);
        let tx = db.transaction().await.unwrap();
        refused(
            "a transaction's batch_execute SET",
            tx.batch_execute("SET app.user_id = '42'").await,
        );
        refused(
            "a transaction's query set_config(…, false)",
            tx.query("SELECT set_config('app.user_id', '42', false)", &[])
                .await
                .map(drop),
        );
        // What ends with the transaction is served.
        tx.batch_execute("SET LOCAL app.user_id = '7'; SET LOCAL work_mem = '64kB'")
            .await
            .unwrap();
        tx.query_one("SELECT set_config('app.user_id', '8', true)", &[])
            .await
            .unwrap();
        let inside: String = tx.query_one(setting, &[]).await.unwrap().get(0);
        assert_eq!(inside, "8/64kB");
        tx.commit().await.unwrap();
    }
    // The only connection, now the other tenant's: nothing of the first one's settings.
    let other = router.connection_for_schema(&s[1]).await.unwrap();
    let seen: String = other.query_one(setting, &[]).await.unwrap().get(0);
    assert_eq!(seen, default, "a setting outlived its tenant's transaction");
}

/// Transaction mode, other spellings of a session setting (found by a red-team review): a
/// qualified name whose first part is `local`, `transaction` or `constraints` (`SET local.x`
/// sets the session's `local.x`), a comment or dollar-quoted string hiding `, true` in a
/// `set_config` call, `set_config` spelt with `U&` escapes, a `DO` block setting it, a
/// function created to set it and called next, and `set_config` in the SQL text a
/// `query_to_xml` runs. Each is refused, through the scope and a
/// transaction; the other tenant, next on the only connection, sees none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_refuses_settings_however_spelt() {
    let (_db, tenancy, s, _pool) =
        marked_over_public("tx_spelt_", 2, 1, SearchPathMode::Transaction).await;
    let router = tenancy.router();
    let setting = "SELECT coalesce(current_setting('local.x', true), '') || '/' \
                   || coalesce(current_setting('app.x', true), '') || '/' \
                   || current_setting('work_mem')";
    let default: String = {
        let other = router.connection_for_schema(&s[1]).await.unwrap();
        other.query_one(setting, &[]).await.unwrap().get(0)
    };
    assert_eq!(default, "//4MB");
    let attempts = [
        "SET local.x = '1'",
        "SET transaction.x = '1'",
        "SET constraints.x = '1'",
        "SELECT set_config('app.x', '1', false --, true\n)",
        "SELECT set_config('app.x', '1', false /*, true)*/)",
        "SELECT set_config('app.x', $$, true)$$, false)",
        "SELECT pg_catalog.U&\"set\\005fconfig\"('app.x', '1', false)",
        "DO $$ BEGIN SET work_mem = '64kB'; END $$",
        "CREATE FUNCTION public.spelt_leak() RETURNS text LANGUAGE sql \
         AS 'SELECT set_config(''app.x'', ''1'', false)'",
        "CREATE FUNCTION public.spelt_leak() RETURNS void LANGUAGE sql AS $$ SET work_mem = '64kB' $$",
        "SELECT query_to_xml('SELECT set_config(''app.x'', ''1'', false)', true, false, '')",
    ];
    {
        let mut db = router.connection_for_schema(&s[0]).await.unwrap();
        for sql in attempts {
            let err = db.batch_execute(sql).await.expect_err(sql);
            assert!(
                matches!(err, Error::NotInTransactionMode { .. }),
                "{sql}: {err:?}"
            );
            let err = db.execute(sql, &[]).await.expect_err(sql);
            assert!(
                matches!(err, Error::NotInTransactionMode { .. }),
                "{sql}: {err:?}"
            );
            let tx = db.transaction().await.unwrap();
            let err = tx.batch_execute(sql).await.expect_err(sql);
            assert!(
                matches!(err, Error::NotInTransactionMode { .. }),
                "{sql}: {err:?}"
            );
            tx.commit().await.unwrap();
        }
        // Had a function been created, calling it would set what it sets.
        let _ = db.query("SELECT public.spelt_leak()", &[]).await;
        // What ends with the transaction is served.
        db.batch_execute(
            "SET LOCAL local.x = '2'; SET CONSTRAINTS ALL DEFERRED; \
             UPDATE notes SET body = body; \
             DO $$ BEGIN SET LOCAL app.x = '3'; END $$",
        )
        .await
        .unwrap();
    }
    let other = router.connection_for_schema(&s[1]).await.unwrap();
    let seen: String = other.query_one(setting, &[]).await.unwrap().get(0);
    assert_eq!(seen, default, "a setting outlived its tenant's transaction");
}
