//! Transaction mode with named, cached statements through a real PgBouncer that keeps them
//! (1.21 and later with `max_prepared_statements` > 0), and its fallback to unnamed statements
//! where the pooler keeps none (PgBouncer 1.18, `max_prepared_statements = 0`, no pooler).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::{pool, TestCluster, TestDatabase, TestPgBouncer};
use tenant_schemas::tokio_postgres::SimpleQueryMessage;
use tenant_schemas::{NewTenant, SchemaName, SchemaRouter, SearchPathMode, TenantMigrations};

/// The PgBouncer that keeps prepared statements in transaction pooling, as `scripts/test`
/// installs it; `None` when it is not there (then only the fallback is tested).
fn current_pgbouncer() -> Option<&'static Path> {
    let path = Path::new("/usr/local/bin/pgbouncer");
    (path.is_file() && TestPgBouncer::binary_version(path).unwrap() >= (1, 21, 0)).then_some(path)
}

/// A PgBouncer in transaction pooling with `servers` server connections to the shared cluster.
fn bouncer(binary: &Path, servers: usize, max_prepared_statements: u32) -> TestPgBouncer {
    TestPgBouncer::builder(TestCluster::shared().unwrap())
        .binary(binary)
        .pool_size(servers)
        .max_prepared_statements(max_prepared_statements)
        .start()
        .unwrap()
}

/// A transaction-mode router with named statements on, over `clients` connections through
/// `bouncer`: one application process.
fn named_router(bouncer: &TestPgBouncer, db: &TestDatabase, clients: usize) -> SchemaRouter {
    SchemaRouter::builder(pool(bouncer.config(db.name()), clients).unwrap())
        .mode(SearchPathMode::Transaction)
        .pooler_prepared_statements(true)
        .build()
}

/// Every prepared statement on every one of `servers` server connections behind `bouncer`,
/// as `(name, statement)`: as many clients, each inside a transaction (so each holds its own
/// server connection), read `pg_prepared_statements`.
async fn server_statements(
    bouncer: &TestPgBouncer,
    db: &TestDatabase,
    servers: usize,
) -> Vec<(String, String)> {
    let probe = pool(bouncer.config(db.name()), servers).unwrap();
    let mut clients = Vec::new();
    for _ in 0..servers {
        clients.push(probe.get().await.unwrap());
    }
    let (mut pids, mut out) = (BTreeSet::new(), Vec::new());
    for client in &clients {
        client.batch_execute("BEGIN").await.unwrap();
        for m in client
            .simple_query(
                "SELECT pg_backend_pid()::text, NULL UNION ALL \
                 SELECT name, statement FROM pg_prepared_statements",
            )
            .await
            .unwrap()
        {
            if let SimpleQueryMessage::Row(row) = m {
                match row.get(1) {
                    None => {
                        pids.insert(row.get(0).unwrap().to_owned());
                    }
                    Some(statement) => {
                        out.push((row.get(0).unwrap().to_owned(), statement.to_owned()));
                    }
                }
            }
        }
    }
    assert_eq!(
        pids.len(),
        servers,
        "each client on a server connection of its own"
    );
    for client in &clients {
        client.batch_execute("COMMIT").await.unwrap();
    }
    out
}

/// Two tenants with tables of the same names and different rows: `<prefix>0` with notes
/// `<prefix>0-<k>` for k < 3, `<prefix>1` with five.
async fn two_tenants(db: &TestDatabase, prefix: &str) -> Vec<SchemaName> {
    let tenancy = tenancy(db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, prefix, 2).await;
    for (i, s) in schemas.iter().enumerate() {
        let conn = tenancy.router().connection_for_schema(s).await.unwrap();
        conn.execute("DELETE FROM notes", &[]).await.unwrap();
        for k in 0..(3 + 2 * i) {
            conn.execute(
                "INSERT INTO notes (body) VALUES ($1)",
                &[&format!("{s}-{k}")],
            )
            .await
            .unwrap();
        }
    }
    schemas
}

/// Many requests alternating between two tenants through two routers (two processes), over
/// two server connections that PgBouncer shares among all their clients: each sees only its
/// tenant's rows; the statements ran named (the pooler's `PGBOUNCER_<n>` statements of each
/// schema's texts are on the server connections, prepared once each, not per request), and
/// nothing the clients named is left on a server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_through_pgbouncer_keep_tenants_apart() {
    let Some(binary) = current_pgbouncer() else {
        eprintln!("no PgBouncer 1.21+ at /usr/local/bin/pgbouncer: only the fallback is tested");
        return;
    };
    let db = database().await;
    let schemas = Arc::new(two_tenants(&db, "pnamed_").await);
    let bouncer = bouncer(binary, 2, 200);
    let routers = [
        named_router(&bouncer, &db, 3),
        named_router(&bouncer, &db, 3),
    ];
    let mut tasks = Vec::new();
    for task in 0..6usize {
        let (router, schemas) = (routers[task % 2].clone(), schemas.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..60usize {
                let i = (round + task) % 2;
                let s = &schemas[i];
                let conn = router.connection_for_schema(s).await.unwrap();
                let bodies: Vec<String> = conn
                    .query("SELECT body FROM notes WHERE id > $1 ORDER BY id", &[&0i64])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let expected: Vec<String> = (0..(3 + 2 * i)).map(|k| format!("{s}-{k}")).collect();
                assert_eq!(bodies, expected, "task {task}, round {round}");
                let marker: String = conn
                    .query_one("SELECT schema_name FROM marker", &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(marker, s.as_str(), "task {task}, round {round}");
                if round % 10 == 0 {
                    let n = conn
                        .execute(
                            "UPDATE notes SET body = body WHERE body LIKE $1",
                            &[&format!("{s}-%")],
                        )
                        .await
                        .unwrap();
                    assert_eq!(n, (3 + 2 * i) as u64);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for router in &routers {
        let stats = router.stats();
        assert!(stats.pooler_probes >= 1, "{stats:?}");
        assert_eq!(stats.pooler_probes_unsupported, 0, "{stats:?}");
        // 3 tasks × 60 rounds × (2 queries + an update every tenth round)
        assert_eq!(stats.named_statements, 3 * 60 * 2 + 3 * 6, "{stats:?}");
    }

    let statements = server_statements(&bouncer, &db, 2).await;
    let foreign: Vec<_> = statements
        .iter()
        .filter(|(name, _)| !name.starts_with("PGBOUNCER_"))
        .collect();
    assert!(foreign.is_empty(), "named by a client: {foreign:?}");
    for s in schemas.iter() {
        let marked = format!("/* {s} */ ");
        let texts: Vec<&String> = statements
            .iter()
            .map(|(_, statement)| statement)
            .filter(|statement| statement.starts_with(&marked))
            .collect();
        // Each of the schema's three texts on at least one server connection, and at most
        // once on each: prepared once per server connection, not per request.
        let distinct: BTreeSet<&&String> = texts.iter().collect();
        assert_eq!(distinct.len(), 3, "{s}: {texts:?}");
        assert!(texts.len() <= 3 * 2, "{s}: {texts:?}");
    }
    // No statement learned its parameter types the unnamed way.
    assert!(
        !statements
            .iter()
            .any(|(_, statement)| statement.starts_with("/* tenant-schemas ")),
        "{statements:?}"
    );
}

/// Tenants `<prefix>_int` (`items.code` int, row 7) and `<prefix>_text` (`items.code` text,
/// row 'a7').
async fn diverged(db: &TestDatabase, prefix: &str) -> (SchemaName, SchemaName) {
    let tenancy = tenancy(
        db,
        TenantMigrations::new().with("items", "CREATE TABLE items (code int, name text)"),
    )
    .await;
    let ints = SchemaName::new(&format!("{prefix}_int")).unwrap();
    let texts = SchemaName::new(&format!("{prefix}_text")).unwrap();
    for s in [&ints, &texts] {
        tenancy
            .create_tenant(NewTenant::new(s.clone()))
            .await
            .unwrap();
    }
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "INSERT INTO {ints}.items VALUES (7, 'int row');
             ALTER TABLE {texts}.items ALTER COLUMN code TYPE text;
             INSERT INTO {texts}.items VALUES ('a7', 'text row')",
            ints = ints.quoted(),
            texts = texts.quoted(),
        ))
        .await
        .unwrap();
    (ints, texts)
}

/// Tenants whose column types differ, the same SQL for both, alternating through two routers
/// over one server connection: each tenant's own result and parameter types. Then one
/// tenant's column changes type (a migration) while its statements are cached by both
/// routers and kept by PgBouncer on the server connection: its next statements are prepared
/// again (under a text of their own: the kept statement of the old text fails on its
/// description as well) and return the new type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_with_diverged_column_types() {
    let Some(binary) = current_pgbouncer() else {
        eprintln!("no PgBouncer 1.21+ at /usr/local/bin/pgbouncer: only the fallback is tested");
        return;
    };
    let db = database().await;
    let (ints, texts) = diverged(&db, "pdiv").await;
    let bouncer = bouncer(binary, 1, 200);
    let routers = [
        named_router(&bouncer, &db, 2),
        named_router(&bouncer, &db, 2),
    ];
    const RESULT: &str = "SELECT code FROM items ORDER BY code LIMIT 1";
    const PARAMETER: &str = "SELECT name FROM items WHERE code = $1";
    for round in 0..10 {
        for router in &routers {
            let conn = router.connection_for_schema(&ints).await.unwrap();
            let code: i32 = conn.query_one(RESULT, &[]).await.unwrap().get(0);
            assert_eq!(code, 7, "round {round}");
            let name: String = conn.query_one(PARAMETER, &[&7i32]).await.unwrap().get(0);
            assert_eq!(name, "int row");
            drop(conn);
            let conn = router.connection_for_schema(&texts).await.unwrap();
            let code: String = conn.query_one(RESULT, &[]).await.unwrap().get(0);
            assert_eq!(code, "a7", "round {round}");
            let name: String = conn.query_one(PARAMETER, &[&"a7"]).await.unwrap().get(0);
            assert_eq!(name, "text row");
        }
    }
    // Both client connections of each router hold the statement.
    for router in &routers {
        let (a, b) = (
            router.connection_for_schema(&ints).await.unwrap(),
            router.connection_for_schema(&ints).await.unwrap(),
        );
        for conn in [&a, &b] {
            let code: i32 = conn.query_one(RESULT, &[]).await.unwrap().get(0);
            assert_eq!(code, 7);
        }
    }
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "ALTER TABLE {}.items ALTER COLUMN code TYPE bigint",
            ints.quoted()
        ))
        .await
        .unwrap();
    for router in &routers {
        let (a, b) = (
            router.connection_for_schema(&ints).await.unwrap(),
            router.connection_for_schema(&ints).await.unwrap(),
        );
        for conn in [&a, &b, &a, &b] {
            let code: i64 = conn.query_one(RESULT, &[]).await.unwrap().get(0);
            assert_eq!(code, 7);
        }
    }
    for round in 0..5 {
        for router in &routers {
            let conn = router.connection_for_schema(&ints).await.unwrap();
            let code: i64 = conn
                .query_one(RESULT, &[])
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"))
                .get(0);
            assert_eq!(code, 7, "round {round}");
            let name: String = conn
                .query_one(PARAMETER, &[&7i64])
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"))
                .get(0);
            assert_eq!(name, "int row");
            drop(conn);
            let conn = router.connection_for_schema(&texts).await.unwrap();
            let code: String = conn.query_one(RESULT, &[]).await.unwrap().get(0);
            assert_eq!(code, "a7", "round {round}");
        }
    }
    for router in &routers {
        let stats = router.stats();
        assert_eq!(stats.pooler_probes_unsupported, 0, "{stats:?}");
        assert!(
            stats.named_statements >= 10 * 4 + 2 + 4 + 5 * 3,
            "{stats:?}"
        );
    }
}

/// Where the pooler keeps no named statements — PgBouncer 1.25 with
/// `max_prepared_statements = 0`, Debian's 1.18 when installed, or no pooler at all — the
/// option falls back to unnamed statements, found once per connection: the tenants' rows as
/// ever, nothing named left on a server connection that another client could run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooler_statements_fall_back_where_the_pooler_keeps_none() {
    let db = database().await;
    let schemas = two_tenants(&db, "pnone_").await;
    let mut bouncers = Vec::new();
    if let Some(binary) = current_pgbouncer() {
        bouncers.push(bouncer(binary, 2, 0));
    }
    let debian = Path::new("/usr/sbin/pgbouncer");
    if debian.is_file() {
        bouncers.push(bouncer(debian, 2, 200));
    }
    assert!(
        !bouncers.is_empty(),
        "no PgBouncer installed (scripts/test installs it)"
    );
    for bouncer in &bouncers {
        let version = bouncer.version();
        let routers = [named_router(bouncer, &db, 3), named_router(bouncer, &db, 3)];
        for round in 0..40usize {
            for (r, router) in routers.iter().enumerate() {
                let i = (round + r) % 2;
                let s = &schemas[i];
                let conn = router.connection_for_schema(s).await.unwrap();
                let bodies: Vec<String> = conn
                    .query("SELECT body FROM notes WHERE id > $1 ORDER BY id", &[&0i64])
                    .await
                    .unwrap_or_else(|e| panic!("{version:?}, round {round}: {e}"))
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let expected: Vec<String> = (0..(3 + 2 * i)).map(|k| format!("{s}-{k}")).collect();
                assert_eq!(bodies, expected, "{version:?}, round {round}");
            }
        }
        for router in &routers {
            let stats = router.stats();
            assert!(stats.pooler_probes >= 1, "{version:?}: {stats:?}");
            assert_eq!(
                stats.pooler_probes_unsupported, stats.pooler_probes,
                "{version:?}: {stats:?}"
            );
            assert_eq!(stats.named_statements, 0, "{version:?}: {stats:?}");
        }
        let statements = server_statements(bouncer, &db, 2).await;
        let named: Vec<_> = statements
            .iter()
            .filter(|(name, _)| !name.starts_with("PGBOUNCER_"))
            .collect();
        assert!(named.is_empty(), "{version:?}: left named: {named:?}");
    }

    // No pooler: a direct connection shows the client's own name.
    let router = SchemaRouter::builder(db.new_pool(2).unwrap())
        .mode(SearchPathMode::Transaction)
        .pooler_prepared_statements(true)
        .build();
    assert_eq!(seen_by(&router, &schemas[1]).await, schemas[1].as_str());
    let stats = router.stats();
    assert_eq!(stats.pooler_probes, 1, "{stats:?}");
    assert_eq!(stats.pooler_probes_unsupported, 1, "{stats:?}");
    assert_eq!(stats.named_statements, 0, "{stats:?}");
}

/// Requests cancelled at random points (asking the pooler, preparing, running, committing)
/// through a PgBouncer that keeps named statements: a connection left inside a transaction
/// is closed, none serves another tenant afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_named_statements_are_not_reused() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    let Some(binary) = current_pgbouncer() else {
        eprintln!("no PgBouncer 1.21+ at /usr/local/bin/pgbouncer: only the fallback is tested");
        return;
    };
    let db = database().await;
    let schemas = two_tenants(&db, "pcancel_").await;
    let bouncer = bouncer(binary, 2, 200);
    let router = named_router(&bouncer, &db, 4);
    let mut rng = StdRng::seed_from_u64(21);
    for round in 0..300 {
        let s = schemas[round % 2].clone();
        let r = router.clone();
        let work = async move {
            let conn = r.connection_for_schema(&s).await?;
            conn.execute("UPDATE notes SET body = body WHERE id < $1", &[&0i64])
                .await?;
            conn.query_one("SELECT schema_name FROM marker", &[])
                .await
                .map(drop)
        };
        let limit = std::time::Duration::from_micros(rng.random_range(0..3000));
        let _ = tokio::time::timeout(limit, work).await;
    }
    for i in 0..100 {
        let s = &schemas[i % 2];
        let conn = router.connection_for_schema(s).await.unwrap();
        let name: String = conn
            .query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(name, s.as_str());
    }
    let stats = router.stats();
    assert_eq!(stats.pooler_probes_unsupported, 0, "{stats:?}");
    assert!(stats.named_statements >= 100, "{stats:?}");
}

/// `DEALLOCATE ALL` sent through a scope with named statements on: PgBouncer forgets the
/// client's statements (and would close the connection at the next `Bind` of one), so the
/// scope drops its cached ones too; the tenant's rows as before, on the same scope and on
/// later ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_through_a_scope_with_named_statements() {
    let Some(binary) = current_pgbouncer() else {
        eprintln!("no PgBouncer 1.21+ at /usr/local/bin/pgbouncer: only the fallback is tested");
        return;
    };
    let db = database().await;
    let schemas = two_tenants(&db, "pdealloc_").await;
    let bouncer = bouncer(binary, 1, 200);
    let router = named_router(&bouncer, &db, 1);
    const SQL: &str = "SELECT count(*) FROM notes WHERE id > $1";
    for round in 0..4 {
        for (i, s) in schemas.iter().enumerate() {
            let conn = router.connection_for_schema(s).await.unwrap();
            let n: i64 = conn.query_one(SQL, &[&0i64]).await.unwrap().get(0);
            assert_eq!(n, (3 + 2 * i) as i64, "round {round}");
            if round % 2 == 1 {
                conn.batch_execute("DEALLOCATE ALL").await.unwrap();
                conn.execute("DEALLOCATE ALL", &[]).await.unwrap();
            }
            let n: i64 = conn
                .query_one(SQL, &[&0i64])
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"))
                .get(0);
            assert_eq!(n, (3 + 2 * i) as i64, "round {round}");
        }
    }
    assert!(router.stats().named_statements >= 16);
}

/// A statement PgBouncer believes is on its server connection but is not (deallocated there
/// behind its back): the `Bind` fails with `26000` before anything ran; the statement runs
/// unnamed instead, the connection asks the pooler again and names its statements after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_the_pooler_lost_runs_unnamed_and_the_pooler_is_asked_again() {
    let Some(binary) = current_pgbouncer() else {
        eprintln!("no PgBouncer 1.21+ at /usr/local/bin/pgbouncer: only the fallback is tested");
        return;
    };
    let db = database().await;
    let schemas = two_tenants(&db, "plost_").await;
    let bouncer = bouncer(binary, 1, 200);
    let router = named_router(&bouncer, &db, 1);
    const SQL: &str = "SELECT count(*) FROM notes WHERE id > $1";
    let count = |s: &SchemaName| {
        let router = router.clone();
        let s = s.clone();
        async move {
            let conn = router.connection_for_schema(&s).await.unwrap();
            conn.query_one(SQL, &[&0i64])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(count(&schemas[1]).await, 5);
    let before = router.stats();
    assert_eq!(before.pooler_probes, 1, "{before:?}");
    // Behind PgBouncer's back, on its only server connection.
    let raw = pool(bouncer.config(db.name()), 1).unwrap();
    let raw = raw.get().await.unwrap();
    raw.batch_execute("BEGIN").await.unwrap();
    let names: Vec<String> = raw
        .simple_query(&format!(
            "SELECT name FROM pg_prepared_statements WHERE statement LIKE '/* {} */ %'",
            schemas[1]
        ))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    raw.batch_execute(&format!("DEALLOCATE \"{}\"; COMMIT", names[0]))
        .await
        .unwrap();
    drop(raw);

    assert_eq!(count(&schemas[1]).await, 5);
    let after = router.stats();
    assert_eq!(
        after.named_statements,
        before.named_statements + 1,
        "{after:?}"
    );
    assert_eq!(
        after.pooler_probes, 1,
        "asked again only at the next statement"
    );
    assert_eq!(count(&schemas[0]).await, 3);
    assert_eq!(count(&schemas[1]).await, 5);
    let last = router.stats();
    assert_eq!(last.pooler_probes, 2, "{last:?}");
    assert_eq!(last.pooler_probes_unsupported, 0, "{last:?}");
    assert_eq!(
        last.named_statements,
        after.named_statements + 2,
        "{last:?}"
    );
}
