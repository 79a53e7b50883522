//! Transaction mode's two shapes of a statement outside `ConnectionScope::transaction`: in its
//! message's implicit transaction (`implicit_transactions(true)`, the default) and in `BEGIN`
//! … `COMMIT` (`false`). What a careless user could see differ between them, directly and
//! through PgBouncer in transaction pooling: a failure at commit, a call dropped mid-way,
//! settings that must end with the statement, and SQL that needs a transaction block.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tenant_schemas::deadpool_postgres::Pool;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::{TestCitusCluster, TestCluster, TestDatabase, TestPgBouncer};
use tenant_schemas::tokio_postgres::error::SqlState;
use tenant_schemas::{SchemaName, SearchPathMode, Tenancy};

/// Tables whose foreign key is checked at commit, with one parent row.
const DEFERRED: &str = "CREATE TABLE parent (id int PRIMARY KEY); \
     CREATE TABLE child (id serial PRIMARY KEY, \
         parent_id int REFERENCES parent DEFERRABLE INITIALLY DEFERRED); \
     INSERT INTO parent VALUES (1)";

/// A transaction-mode tenancy over `pool` in the shape `implicit` (the builder's default for
/// `None`), with marked tenants `names` (each `marker` row holds its schema name) and, with
/// `deferred`, the [`DEFERRED`] tables.
async fn tenancy_over(
    pool: Pool,
    implicit: Option<bool>,
    deferred: bool,
    names: &[&str],
) -> (Tenancy, Vec<SchemaName>) {
    let mut migrations = tenant_schemas::TenantMigrations::new().with("marker", MARKER);
    if deferred {
        migrations = migrations.with("deferred", DEFERRED);
    }
    let mut builder = Tenancy::builder(pool)
        .migrations(migrations)
        .search_path_mode(SearchPathMode::Transaction);
    if let Some(implicit) = implicit {
        builder = builder.implicit_transactions(implicit);
    }
    let tenancy = builder.build().await.unwrap();
    // Without a word from the builder: on over a Citus coordinator, off elsewhere.
    let citus = tenancy.registry().is_citus().await.unwrap();
    assert_eq!(
        tenancy.router().implicit_transactions(),
        implicit.unwrap_or(citus)
    );
    let mut schemas = Vec::new();
    for name in names {
        schemas.push(marked_tenant(&tenancy, name).await);
    }
    (tenancy, schemas)
}

/// The ways in: directly to PostgreSQL (a pool of one connection, so every statement
/// follows another's on the same session), through PgBouncer in transaction pooling (one
/// server connection) and, with `citus` unless Citus tests are skipped, through a Citus
/// coordinator (a pool of one connection; the database is kept alive by the returned value).
async fn ways_in(db: &TestDatabase, citus: bool) -> Vec<(&'static str, Pool, Option<Keep>)> {
    let cluster = TestCluster::shared().unwrap();
    let bouncer = TestPgBouncer::start(cluster, 1).unwrap();
    let through = tenant_schemas::testing::pool(bouncer.config(db.name()), 4).unwrap();
    let mut ways = vec![
        ("direct", db.new_pool(1).unwrap(), None),
        ("pgbouncer", through, Some(Keep::Bouncer(bouncer))),
    ];
    if citus && !TestCitusCluster::skip_requested() {
        let coordinator = TestCitusCluster::shared()
            .unwrap_or_else(|e| panic!("{e}"))
            .create_database()
            .await
            .unwrap();
        ways.push((
            "citus",
            coordinator.new_pool(1).unwrap(),
            Some(Keep::Database(Box::new(coordinator))),
        ));
    }
    ways
}

/// What a way in needs kept alive while it is used.
#[allow(dead_code)]
enum Keep {
    Bouncer(TestPgBouncer),
    Database(Box<TestDatabase>),
}

/// The path, `statement_timeout` and role a plain connection of `pool` has.
async fn settings(pool: &Pool) -> Vec<String> {
    let c = pool.get().await.unwrap();
    let row = c
        .query_one(
            "SELECT current_setting('search_path'), current_setting('statement_timeout'), \
             current_user::text, current_setting('transaction_read_only')",
            &[],
        )
        .await
        .unwrap();
    (0..4).map(|i| row.get(i)).collect()
}

fn code(err: &tenant_schemas::Error) -> Option<SqlState> {
    err.as_db_error().map(|e| e.code().clone())
}

/// A deferred foreign key fails at commit, after the statement itself completed: in both
/// shapes the call fails with the server's error and nothing is committed — the write is
/// not reported done and lost, and a valid write beside it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_commit_fails_the_statement_and_commits_nothing() {
    for implicit in [true, false] {
        let db = database().await;
        for (way, pool, _keep) in ways_in(&db, false).await {
            let prefix = if way == "direct" { "dc" } else { "bc" };
            let (tenancy, schemas) = tenancy_over(
                pool,
                Some(implicit),
                true,
                &[&format!("{prefix}_a"), &format!("{prefix}_b")],
            )
            .await;
            let router = tenancy.router();
            for s in &schemas {
                // Twice each: a text's first run learns its parameter types; the second is
                // the statement at hand, in the shape under test.
                for round in 0..3 {
                    let c = router.connection_for_schema(s).await.unwrap();
                    c.execute("INSERT INTO child (parent_id) VALUES ($1)", &[&1i32])
                        .await
                        .unwrap();
                    let err = c
                        .execute("INSERT INTO child (parent_id) VALUES ($1)", &[&99i32])
                        .await
                        .unwrap_err();
                    assert_eq!(
                        code(&err),
                        Some(SqlState::FOREIGN_KEY_VIOLATION),
                        "{way}, implicit {implicit}, round {round}: {err}"
                    );
                    let err = c
                        .query_one(
                            "INSERT INTO child (parent_id) VALUES ($1) RETURNING id",
                            &[&98i32],
                        )
                        .await
                        .unwrap_err();
                    assert_eq!(
                        code(&err),
                        Some(SqlState::FOREIGN_KEY_VIOLATION),
                        "{way}, implicit {implicit}, round {round}: {err}"
                    );
                }
                let c = router.connection_for_schema(s).await.unwrap();
                let row = c
                    .query_one(
                        "SELECT count(*) FILTER (WHERE parent_id = 1), \
                         count(*) FILTER (WHERE parent_id <> 1) FROM child",
                        &[],
                    )
                    .await
                    .unwrap();
                assert_eq!(
                    (row.get::<_, i64>(0), row.get::<_, i64>(1)),
                    (3, 0),
                    "{way}, implicit {implicit}: {s}"
                );
            }
        }
    }
}

/// Tenants take turns on one server connection, the first of each pair dropping its call
/// while the server still runs it (`pg_sleep` under a client-side timeout): the next
/// tenant's statement reads its own marker, sees its own path, and no setting of the
/// dropped call (the first tenant's `statement_timeout` of 100 ms would cancel the second's
/// `pg_sleep(0.2)`) — in both shapes, directly and through PgBouncer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_leaves_nothing_to_the_next_tenant() {
    for implicit in [Some(true), Some(false), None] {
        let db = database().await;
        for (way, pool, _keep) in ways_in(&db, true).await {
            let prefix = match way {
                "direct" => "dd",
                "pgbouncer" => "bd",
                _ => "cd",
            };
            let raw = pool.clone();
            let before = settings(&raw).await;
            let (tenancy, schemas) = tenancy_over(
                pool,
                implicit,
                false,
                &[&format!("{prefix}_a"), &format!("{prefix}_b")],
            )
            .await;
            let (slow, next) = (&schemas[0], &schemas[1]);
            tenancy
                .set_statement_timeout(slow, Some(Duration::from_millis(100)))
                .await
                .unwrap();
            let router = tenancy.router();
            for round in 0..4 {
                let c = router.connection_for_schema(slow).await.unwrap();
                // 0.05 s: within the tenant's timeout, so the server runs it to its end.
                let dropped = tokio::time::timeout(
                    Duration::from_millis(10),
                    c.query_one("SELECT pg_sleep(0.05), schema_name FROM marker", &[]),
                )
                .await;
                assert!(
                    dropped.is_err(),
                    "{way}, implicit {implicit:?}: not dropped"
                );
                drop(c);
                assert_eq!(
                    settings(&raw).await,
                    before,
                    "{way}, implicit {implicit:?}, round {round}: after the dropped call"
                );
                let c = router.connection_for_schema(next).await.unwrap();
                let row = c
                    .query_one("SELECT schema_name FROM marker", &[])
                    .await
                    .unwrap_or_else(|e| panic!("{way}, implicit {implicit:?}, round {round}: {e}"));
                assert_eq!(
                    row.get::<_, String>(0),
                    next.as_str(),
                    "{way}, implicit {implicit:?}, round {round}"
                );
                // Without a table: through a Citus coordinator a query on a distributed table
                // is pushed down whole to the worker, which computes its functions under its
                // own settings.
                let row = c
                    .query_one(
                        "SELECT current_schema(), pg_sleep(0.2)::text, \
                         current_setting('statement_timeout')",
                        &[],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{way}, implicit {implicit:?}, round {round}: {e}"));
                assert_eq!(
                    row.get::<_, String>(0),
                    next.as_str(),
                    "{way}, implicit {implicit:?}, round {round}"
                );
                assert_ne!(
                    row.get::<_, String>(2),
                    "100ms",
                    "{way}, implicit {implicit:?}, round {round}"
                );
                drop(c);
                // The server connection's next user outside the library: the settings it
                // started with.
                assert_eq!(
                    settings(&raw).await,
                    before,
                    "{way}, implicit {implicit:?}, round {round}"
                );
            }
        }
    }
}

/// SQL that needs a transaction block (`LOCK TABLE`) or may not run behind other statements
/// in one message keeps `BEGIN` in both shapes: it works outside a tenant transaction as it
/// did before, on every run of its text, and inside one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_that_needs_a_transaction_block_keeps_begin() {
    for implicit in [true, false] {
        let db = database().await;
        let (tenancy, schemas) =
            tenancy_over(db.new_pool(1).unwrap(), Some(implicit), false, &["lk_a"]).await;
        let router = tenancy.router();
        let s = &schemas[0];
        let c = router.connection_for_schema(s).await.unwrap();
        for round in 0..3 {
            c.execute("LOCK TABLE marker IN SHARE MODE", &[])
                .await
                .unwrap_or_else(|e| panic!("implicit {implicit}, round {round}: {e}"));
            c.execute("CREATE TABLE IF NOT EXISTS made_here (id int)", &[])
                .await
                .unwrap_or_else(|e| panic!("implicit {implicit}, round {round}: {e}"));
        }
        drop(c);
        let mut c = router.connection_for_schema(s).await.unwrap();
        let tx = c.transaction().await.unwrap();
        tx.execute("LOCK TABLE marker IN SHARE MODE", &[])
            .await
            .unwrap();
        let row = tx
            .query_one(
                "SELECT schema_name, to_regclass('made_here')::text FROM marker",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), s.as_str());
        assert_eq!(row.get::<_, String>(1), "made_here");
        tx.commit().await.unwrap();
    }
}

/// What a statement of `schema` runs under: its `statement_timeout` and its schema; run three
/// times, so that the last two go with the prelude a
/// text at hand is sent behind (the first learns the text's parameter types).
async fn settings_seen_by(tenancy: &Tenancy, schema: &SchemaName, way: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..3 {
        let c = tenancy
            .router()
            .connection_for_schema(schema)
            .await
            .unwrap();
        let row = c
            .query_one(
                "SELECT current_setting('statement_timeout'), current_schema()::text",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{way}: {e}"));
        seen = (0..2).map(|i| row.get(i)).collect();
    }
    seen
}

/// A tenant's settings changed between two of its statements (its `statement_timeout`, its
/// state: a read-only tenant's writes fail on the server) are what its next statement runs under, in both shapes and through every way in,
/// however often the statements before ran with the old ones (each schema's preludes are
/// encoded once and kept): never the old ones, never another tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_changed_settings_reach_its_next_statement() {
    use tenant_schemas::TenantStatus;
    for implicit in [true, false] {
        let db = database().await;
        for (way, pool, _keep) in ways_in(&db, true).await {
            let prefix = format!("{}{}", &way[..1], u8::from(implicit));
            let raw = pool.clone();
            let default = settings(&raw).await[1].clone();
            let (tenancy, schemas) = tenancy_over(
                pool,
                Some(implicit),
                false,
                &[&format!("ch{prefix}_a"), &format!("ch{prefix}_b")],
            )
            .await;
            let (a, b) = (&schemas[0], &schemas[1]);
            let way = format!("{way}, implicit {implicit}");
            let seen = |timeout: &str, schema: &SchemaName| {
                vec![timeout.to_owned(), schema.as_str().to_owned()]
            };
            assert_eq!(settings_seen_by(&tenancy, a, &way).await, seen(&default, a));
            tenancy
                .set_statement_timeout(a, Some(Duration::from_millis(1234)))
                .await
                .unwrap();
            assert_eq!(settings_seen_by(&tenancy, a, &way).await, seen("1234ms", a));
            assert_eq!(settings_seen_by(&tenancy, b, &way).await, seen(&default, b));
            tenancy.set_status(a, TenantStatus::ReadOnly).await.unwrap();
            assert_eq!(settings_seen_by(&tenancy, a, &way).await, seen("1234ms", a));
            let c = tenancy.router().connection_for_schema(a).await.unwrap();
            for _ in 0..2 {
                let refused = c
                    .execute("INSERT INTO marker VALUES ('written')", &[])
                    .await;
                assert!(refused.is_err(), "{way}: a read-only tenant wrote");
            }
            drop(c);
            assert_eq!(settings_seen_by(&tenancy, b, &way).await, seen(&default, b));
            tenancy.set_status(a, TenantStatus::Active).await.unwrap();
            tenancy.set_statement_timeout(a, None).await.unwrap();
            assert_eq!(settings_seen_by(&tenancy, a, &way).await, seen(&default, a));
            let c = tenancy.router().connection_for_schema(a).await.unwrap();
            for _ in 0..2 {
                c.execute("INSERT INTO marker VALUES ('written')", &[])
                    .await
                    .unwrap_or_else(|e| panic!("{way}: {e}"));
            }
        }
    }
}
