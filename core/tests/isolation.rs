//! Every statement run through a ConnectionScope sees only its tenant's schema and `public`.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tenant_schemas::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::tokio_postgres::NoTls;
use tenant_schemas::{scope, Error, ErrorKind, SchemaName, SchemaRouter, Tenant};

async fn marker(router: &SchemaRouter, schema: &SchemaName) -> (String, i64) {
    let db = router
        .connection_for_schema(schema)
        .await
        .expect("connection");
    let row = db
        .query_one(
            "SELECT (SELECT schema_name FROM marker), (SELECT count(*) FROM notes)",
            &[],
        )
        .await
        .expect("marker query");
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_see_only_their_rows_and_shared_public_rows() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let public = tenancy.router().public().await.unwrap();
    public
        .batch_execute("CREATE TABLE plans (name text); INSERT INTO plans VALUES ('gold')")
        .await
        .unwrap();
    drop(public);
    let schemas = marked_tenants(&tenancy, "iso_", 2).await;

    for (i, s) in schemas.iter().enumerate() {
        let tenant = tenancy
            .resolve(&host(&format!("ISO-{i}.test:8080")))
            .await
            .unwrap();
        assert_eq!(tenant.schema(), s);
        let seen = scope::run(tenant, async {
            let conn = tenancy.connection().await.unwrap();
            conn.execute("INSERT INTO notes (body) VALUES ($1)", &[&s.as_str()])
                .await
                .unwrap();
            let bodies: Vec<String> = conn
                .query("SELECT body FROM notes WHERE body <> 'x'", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let plan: String = conn
                .query_one("SELECT name FROM plans", &[])
                .await
                .unwrap()
                .get(0);
            let path: String = conn
                .query_one("SHOW search_path", &[])
                .await
                .unwrap()
                .get(0);
            (bodies, plan, path)
        })
        .await;
        assert_eq!(
            seen.0,
            vec![s.to_string()],
            "tenant {s} sees only its own notes"
        );
        assert_eq!(seen.1, "gold", "shared rows in public are visible");
        assert_eq!(seen.2, format!("{s}, public"));
    }
    // Public does not see tenant tables.
    let public = tenancy.router().public().await.unwrap();
    let err = public.query("SELECT * FROM notes", &[]).await.unwrap_err();
    assert!(err.to_string().contains("notes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_a_scope_a_tenant_connection_is_an_error() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let err = tenancy.connection().await.unwrap_err();
    assert!(matches!(err, Error::NoTenantInScope));
    assert_eq!(err.kind(), ErrorKind::NoTenantInScope);
    // A task spawned with plain tokio::spawn has no scope either: it fails closed.
    let router = tenancy.router().clone();
    let plain = scope::run(Tenant::new(schema("x")), async move {
        tokio::spawn(async move { router.connection().await.map(drop) })
            .await
            .unwrap()
    })
    .await;
    assert!(matches!(plain, Err(Error::NoTenantInScope)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_tasks_and_blocking_closures_keep_the_tenant() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "spawn_", 2).await;
    let t = tenancy.clone();
    let (from_task, from_blocking) = scope::run(Tenant::new(schemas[1].clone()), async move {
        let task = scope::spawn(async move {
            let conn = t.connection().await.unwrap();
            let row = conn
                .query_one("SELECT schema_name FROM marker", &[])
                .await
                .unwrap();
            row.get::<_, String>(0)
        });
        let blocking = scope::spawn_blocking(|| scope::current_schema().unwrap().to_string());
        (task.await.unwrap(), blocking.await.unwrap())
    })
    .await;
    assert_eq!(from_task, "spawn_1");
    assert_eq!(from_blocking, "spawn_1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_tenants_forty_tasks_pool_of_eight_no_mismatch() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = Arc::new(marked_tenants(&tenancy, "load_", 50).await);
    let router = SchemaRouter::new(db.new_pool(8).unwrap());
    forty_tasks_no_mismatch(router, schemas).await;
}

/// The same with the connections split into groups: a request taken by another group when
/// its home group is busy still reads its own tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_groups_forty_tasks_no_mismatch() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = Arc::new(marked_tenants(&tenancy, "grp_", 50).await);
    let router = SchemaRouter::builder(db.new_pool(3).unwrap())
        .connection_groups([db.new_pool(3).unwrap(), db.new_pool(2).unwrap()])
        .build();
    forty_tasks_no_mismatch(router, schemas).await;
}

async fn forty_tasks_no_mismatch(router: SchemaRouter, schemas: Arc<Vec<SchemaName>>) {
    let checks = Arc::new(AtomicU64::new(0));
    let mismatches = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..40u64 {
        let (router, schemas) = (router.clone(), schemas.clone());
        let (checks, mismatches) = (checks.clone(), mismatches.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(task);
            for _ in 0..25 {
                let i = rng.random_range(0..schemas.len());
                let s = schemas[i].clone();
                let (name, count) = scope::run(Tenant::new(s.clone()), async {
                    let conn = router.connection().await.unwrap();
                    let row = conn
                        .query_one(
                            "SELECT (SELECT schema_name FROM marker), (SELECT count(*) FROM notes)",
                            &[],
                        )
                        .await
                        .unwrap();
                    (row.get::<_, String>(0), row.get::<_, i64>(1))
                })
                .await;
                checks.fetch_add(1, Ordering::Relaxed);
                if name != s.as_str() || count != i as i64 {
                    mismatches.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = router.stats();
    println!(
        "checks {} mismatches {} checkouts {} switches {}",
        checks.load(Ordering::Relaxed),
        mismatches.load(Ordering::Relaxed),
        stats.checkouts,
        stats.switches
    );
    assert_eq!(checks.load(Ordering::Relaxed), 1000);
    assert_eq!(mismatches.load(Ordering::Relaxed), 0);
    assert!(stats.switches <= stats.checkouts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundant_switches_are_skipped() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "skip_", 2).await;
    let router = SchemaRouter::new(db.new_pool(1).unwrap());
    assert!(router.tracks_search_path());
    for _ in 0..5 {
        assert_eq!(marker(&router, &schemas[0]).await.0, "skip_0");
    }
    assert_eq!(
        router.stats().switches,
        1,
        "same schema: one switch for five checkouts"
    );
    assert_eq!(marker(&router, &schemas[1]).await.0, "skip_1");
    assert_eq!(marker(&router, &schemas[0]).await.0, "skip_0");
    assert_eq!(router.stats().switches, 3);
    assert_eq!(router.stats().checkouts, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_access_makes_the_router_switch_again() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "raw_", 2).await;
    let router = SchemaRouter::new(db.new_pool(1).unwrap());
    {
        let conn = router.connection_for_schema(&schemas[0]).await.unwrap();
        let client = conn.client().await.unwrap();
        // Misuse through the raw client: point the session elsewhere.
        client
            .batch_execute("SET search_path TO raw_1")
            .await
            .unwrap();
    }
    assert_eq!(marker(&router, &schemas[0]).await.0, "raw_0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycling_that_resets_the_session_turns_tracking_off() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "clean_", 2).await;
    let manager = Manager::from_config(
        db.config().clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Clean,
        },
    );
    let pool = Pool::builder(manager).max_size(1).build().unwrap();
    let router = SchemaRouter::new(pool);
    assert!(!router.tracks_search_path());
    for _ in 0..3 {
        for (i, s) in schemas.iter().enumerate() {
            assert_eq!(marker(&router, s).await.0, format!("clean_{i}"));
        }
    }
    assert_eq!(router.stats().switches, router.stats().checkouts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_switches_and_queries_never_leak() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "cancel_", 10).await;
    let router = SchemaRouter::new(db.new_pool(4).unwrap());
    let mut rng = StdRng::seed_from_u64(7);
    let mut cancelled = 0;
    for round in 0..400 {
        let s = schemas[rng.random_range(0..schemas.len())].clone();
        let r = router.clone();
        let work = async move {
            let conn = r.connection_for_schema(&s).await?;
            if round % 3 == 0 {
                // A statement that takes a while, so drops land mid-query too.
                conn.query("SELECT pg_sleep(0.001), schema_name FROM marker", &[])
                    .await?;
            }
            conn.query_one("SELECT schema_name FROM marker", &[])
                .await
                .map(drop)
        };
        let limit = Duration::from_micros(rng.random_range(0..1500));
        if tokio::time::timeout(limit, work).await.is_err() {
            cancelled += 1;
        }
    }
    println!("cancelled {cancelled} of 400");
    assert!(
        cancelled > 40,
        "the test must actually cancel work ({cancelled})"
    );
    for i in 0..1000 {
        let expected = &schemas[(i * 7) % schemas.len()];
        let conn = router.connection_for_schema(expected).await.unwrap();
        let row = conn
            .query_one(
                "SELECT (SELECT schema_name FROM marker), current_setting('search_path')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), expected.as_str());
        assert_eq!(row.get::<_, String>(1), format!("{expected}, public"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_statement_does_not_disturb_the_path() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "fail_", 2).await;
    let router = SchemaRouter::new(db.new_pool(1).unwrap());
    let conn = router.connection_for_schema(&schemas[1]).await.unwrap();
    let err = conn
        .query("SELECT * FROM no_such_table", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert!(err.to_string().contains("fail_1"), "{err}");
    drop(conn);
    let mut conn = router.connection_for_schema(&schemas[0]).await.unwrap();
    {
        let tx = conn.transaction().await.unwrap();
        tx.execute("INSERT INTO notes (body) VALUES ('rolled back')", &[])
            .await
            .unwrap();
        // dropped: rolled back
    }
    let tx = conn.transaction().await.unwrap();
    let n: i64 = tx
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    assert_eq!(n, 0);
    drop(conn);
    assert_eq!(marker(&router, &schemas[1]).await.0, "fail_1");
    assert_eq!(marker(&router, &schemas[0]).await.0, "fail_0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_schemas_follow_public_on_the_path() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "extra_", 1).await;
    let public = tenancy.router().public().await.unwrap();
    public
        .batch_execute("CREATE SCHEMA shared_ext; CREATE FUNCTION shared_ext.answer() RETURNS int LANGUAGE sql AS 'SELECT 42'")
        .await
        .unwrap();
    drop(public);
    let router = SchemaRouter::builder(db.pool().clone())
        .extra_schemas([schema("shared_ext")])
        .build();
    let conn = router.connection_for_schema(&schemas[0]).await.unwrap();
    assert_eq!(conn.search_path(), "\"extra_0\", public, \"shared_ext\"");
    let answer: i32 = conn.query_one("SELECT answer()", &[]).await.unwrap().get(0);
    assert_eq!(answer, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_follow_the_schema() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "prep_", 2).await;
    let router = SchemaRouter::new(db.new_pool(1).unwrap());
    let a = router.connection_for_schema(&schemas[0]).await.unwrap();
    let stmt = a.prepare("SELECT schema_name FROM marker").await.unwrap();
    assert_eq!(
        a.query_one(&stmt, &[]).await.unwrap().get::<_, String>(0),
        "prep_0"
    );
    drop(a);
    // The same cached statement, planned under prep_0, re-planned under prep_1.
    let b = router.connection_for_schema(&schemas[1]).await.unwrap();
    assert_eq!(
        b.query_one(&stmt, &[]).await.unwrap().get::<_, String>(0),
        "prep_1"
    );
    assert_eq!(
        b.query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        "prep_1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_schemas_do_not_fail_cached_statements() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "div_", 2).await;
    let router = SchemaRouter::new(db.new_pool(1).unwrap());
    assert_eq!(marker(&router, &schemas[0]).await.0, "div_0");
    // A rolling migration reached div_1 only: `SELECT *` now has another result type there.
    let conn = router.connection_for_schema(&schemas[1]).await.unwrap();
    conn.batch_execute("ALTER TABLE marker ADD COLUMN extra int DEFAULT 1")
        .await
        .unwrap();
    drop(conn);
    for s in [&schemas[0], &schemas[1], &schemas[0]] {
        let conn = router.connection_for_schema(s).await.unwrap();
        let row = conn.query_one("SELECT * FROM marker", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), s.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_statement_of_a_fresh_connection_is_parsed_after_the_switch() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "fresh_", 2).await;
    for round in 0..3 {
        // A new pool: no cached switch statement, no cached query, default search path.
        let router = SchemaRouter::new(db.new_pool(1).unwrap());
        let s = &schemas[round % 2];
        let conn = router.connection_for_schema(s).await.unwrap();
        // `marker` exists only in tenant schemas: parsed before the switch, it would fail.
        let row = conn
            .query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), s.as_str());
    }
}

/// The statements a connection keeps prepared stay bounded (the server holds a plan for
/// each), also when they are prepared over many checkouts of the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_per_connection_stay_bounded() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "bound_", 1).await;
    let router = SchemaRouter::new(db.new_pool(1).unwrap());
    let count = "SELECT count(*) FROM pg_prepared_statements";
    let mut most = 0;
    // 3,000 distinct texts, ten per checkout of the pool's only connection.
    for batch in 0..300 {
        let c = router.connection_for_schema(&schemas[0]).await.unwrap();
        for i in 0..10 {
            let n = batch * 10 + i;
            let v: i32 = c
                .query_one(
                    &format!("SELECT {n}::int4 + 0 * (SELECT count(*)::int4 FROM notes)"),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(v, n);
        }
        let held: i64 = c.query_one(count, &[]).await.unwrap().get(0);
        most = most.max(held);
    }
    assert!(
        (2000..=2048 + 11).contains(&most),
        "the connection held at most {most} prepared statements"
    );
    // Still one connection: every checkout reused it (so the bound was carried across them).
    assert_eq!(router.stats().checkouts, 300);
}

/// A connection whose statement cache is full gives up the statements of the schema that
/// used it least recently, not those of the others (many tenants, few connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_statement_cache_gives_up_the_coldest_schemas_statements() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let s = marked_tenants(&tenancy, "lru_", 3).await;
    let (cold, warm, current) = (&s[0], &s[1], &s[2]);
    let router = SchemaRouter::new(db.new_pool(1).unwrap());
    let held = |schema: &SchemaName| {
        format!(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '/* {} */ %'",
            schema.as_str()
        )
    };
    // The coldest: 2,000 statements, long ago.
    {
        let c = router.connection_for_schema(cold).await.unwrap();
        for n in 0..2000 {
            let v: i32 = c
                .query_one(&format!("SELECT {n}::int4"), &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(v, n);
        }
    }
    // Then one statement of another tenant.
    {
        let c = router.connection_for_schema(warm).await.unwrap();
        let row = c
            .query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), warm.as_str());
    }
    // Then a third tenant fills the cache past its bound.
    let c = router.connection_for_schema(current).await.unwrap();
    for n in 0..100 {
        let v: i32 = c
            .query_one(&format!("SELECT {n}::int4 + 1"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, n + 1);
    }
    let count = |sql: String| {
        let c = &c;
        async move { c.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(
        count(held(cold)).await,
        0,
        "the coldest schema's statements"
    );
    assert_eq!(count(held(warm)).await, 1, "the warmer schema's statement");
    assert!(
        count(held(current)).await >= 100,
        "the current schema's statements"
    );
    assert_eq!(router.stats().checkouts, 3);
}

/// A schema seen to exist a moment ago is not checked again on the next switch to it, even
/// when no pooled connection was left on it in between (more tenants than connections):
/// the switch is then written in the same flush as the statement, without a round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_sightings_outlive_the_connections_that_made_them() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "seen_", 40).await;
    let router = SchemaRouter::new(db.new_pool(2).unwrap());
    for _ in 0..2 {
        for s in &schemas {
            assert_eq!(marker(&router, s).await.0, s.as_str());
        }
    }
    let stats = router.stats();
    assert_eq!(stats.switches, 80, "{stats:?}");
    // Each schema checked once (a slow machine may cross the one-second freshness).
    assert!(
        (40..60).contains(&stats.existence_checks),
        "second round re-checked schemas seen moments ago: {stats:?}"
    );
}

/// With connection groups each tenant is served by its home group while that has a
/// connection idle: a backend sees only its share of the tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_groups_keep_tenants_at_home() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "home_", 12).await;
    let router = SchemaRouter::builder(db.new_pool(1).unwrap())
        .connection_groups([db.new_pool(1).unwrap()])
        .build();
    let pid = "SELECT pg_backend_pid(), (SELECT schema_name FROM marker)";
    let mut backends = std::collections::BTreeMap::new();
    for _ in 0..3 {
        for s in &schemas {
            let c = router.connection_for_schema(s).await.unwrap();
            let row = c.query_one(pid, &[]).await.unwrap();
            assert_eq!(row.get::<_, String>(1), s.as_str());
            backends
                .entry(s.clone())
                .or_insert_with(std::collections::BTreeSet::new)
                .insert(row.get::<_, i32>(0));
        }
    }
    assert!(
        backends.values().all(|pids| pids.len() == 1),
        "a tenant moved between groups while its home had room: {backends:?}"
    );
    let used: std::collections::BTreeSet<i32> = backends.values().flatten().copied().collect();
    assert_eq!(used.len(), 2, "both groups serve a share: {backends:?}");
}

/// A tenant whose home group is busy waits for it rather than borrowing another group's
/// idle connection (which would then keep that tenant's catalog entries for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_home_group_is_waited_for() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "wait_", 2).await;
    let router = SchemaRouter::builder(db.new_pool(1).unwrap())
        .connection_groups([db.new_pool(1).unwrap()])
        .build();
    for s in &schemas {
        drop(marker(&router, s).await);
    }
    let held = router.connection_for_schema(&schemas[0]).await.unwrap();
    held.query_one("SELECT 1", &[]).await.unwrap();
    let router2 = router.clone();
    let first = schemas[0].clone();
    let waiting = tokio::spawn(async move { marker(&router2, &first).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "served by another group while its home group was busy"
    );
    drop(held);
    let served = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once its home group had a connection again")
        .unwrap();
    assert_eq!(served.0, schemas[0].as_str());
}
