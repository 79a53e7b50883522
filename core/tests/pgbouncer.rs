//! Transaction search-path mode through a real PgBouncer in transaction pooling mode.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tenant_schemas::testing::fixtures::*;

use tenant_schemas::{scope, Error, SchemaRouter, SearchPathMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_through_pgbouncer() {
    let db = database().await;
    // Everything, registry included, goes through the bouncer.
    let (_bouncer, tenancy) = bounced_tenancy(&db, 4, 16).await;
    let through = tenancy.router().pool().clone();
    let schemas = Arc::new(marked_tenants(&tenancy, "bounce_", 12).await);
    let router = tenancy.router().clone();
    assert_eq!(router.mode(), SearchPathMode::Transaction);
    assert!(!router.tracks_search_path());

    // 32 tasks over 16 client connections over 4 server connections.
    let mismatches = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..32u64 {
        let (router, schemas, mismatches) = (router.clone(), schemas.clone(), mismatches.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(task);
            for _ in 0..40 {
                let i = rng.random_range(0..schemas.len());
                let s = schemas[i].clone();
                let conn = router.connection_for_schema(&s).await.unwrap();
                let row = conn
                    .query_one(
                        "SELECT (SELECT schema_name FROM marker), (SELECT count(*) FROM notes)",
                        &[],
                    )
                    .await
                    .unwrap();
                if row.get::<_, String>(0) != s.as_str() || row.get::<_, i64>(1) != i as i64 {
                    mismatches.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(mismatches.load(Ordering::Relaxed), 0);

    // Writes, batches and explicit transactions.
    let mut conn = router.connection_for_schema(&schemas[3]).await.unwrap();
    assert_eq!(
        conn.execute("INSERT INTO notes (body) VALUES ($1)", &[&"bounced"])
            .await
            .unwrap(),
        1
    );
    conn.batch_execute("INSERT INTO notes (body) VALUES ('batched')")
        .await
        .unwrap();
    {
        let tx = conn.transaction().await.unwrap();
        let stmt = tx
            .prepare("SELECT count(*) FROM notes WHERE body = $1")
            .await
            .unwrap();
        let n: i64 = tx.query_one(&stmt, &[&"bounced"]).await.unwrap().get(0);
        assert_eq!(n, 1);
        tx.execute("INSERT INTO notes (body) VALUES ('in tx')", &[])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let n: i64 = conn
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3 + 3);
    // A failed statement rolls its own transaction back and leaves the connection usable.
    assert!(conn
        .query("SELECT * FROM no_such_table", &[])
        .await
        .is_err());
    assert_eq!(
        conn.query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        "bounce_3"
    );
    // What cannot work without session state says so.
    assert!(matches!(
        conn.prepare("SELECT 1").await,
        Err(Error::NotInTransactionMode { .. })
    ));
    assert!(matches!(
        conn.client().await,
        Err(Error::NotInTransactionMode { .. })
    ));
    drop(conn);

    // Outside a transaction, the server session keeps no tenant path: public is what it sees.
    let raw = through.get().await.unwrap();
    let path: String = raw
        .query_typed_one("SHOW search_path", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!path.contains("bounce_"), "{path}");

    // The registry and the cached resolver work through the bouncer too.
    let tenant = tenancy.resolve(&host("bounce-5.test")).await.unwrap();
    let name: String = scope::run(tenant, async {
        tenancy
            .connection()
            .await
            .unwrap()
            .query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap()
            .get(0)
    })
    .await;
    assert_eq!(name, "bounce_5");
    let _ = SchemaRouter::new(through);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_transaction_mode_statements_are_not_reused() {
    let db = database().await;
    let (_bouncer, tenancy) = bounced_tenancy(&db, 2, 4).await;
    let schemas = marked_tenants(&tenancy, "tcancel_", 4).await;
    let router = tenancy.router().clone();
    let mut rng = StdRng::seed_from_u64(11);
    for round in 0..300 {
        let s = schemas[round % schemas.len()].clone();
        let r = router.clone();
        let work = async move {
            let conn = r.connection_for_schema(&s).await?;
            conn.execute("INSERT INTO notes (body) VALUES ('maybe')", &[])
                .await?;
            conn.query_one("SELECT schema_name FROM marker", &[])
                .await
                .map(drop)
        };
        let limit = std::time::Duration::from_micros(rng.random_range(0..3000));
        let _ = tokio::time::timeout(limit, work).await;
    }
    for i in 0..200 {
        let s = &schemas[i % schemas.len()];
        let conn = router.connection_for_schema(s).await.unwrap();
        let name: String = conn
            .query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(name, s.as_str());
    }
}

/// The harness starts the PgBouncer deployments run (1.21 and later, installed as
/// `/usr/local/bin/pgbouncer` by `scripts/test`) when it is there, and Debian's 1.18 when
/// asked for; transaction mode serves the tenant's schema through either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_prefers_a_current_pgbouncer_and_starts_either() {
    use tenant_schemas::testing::{pool, TestCluster, TestPgBouncer, PGBOUNCER_ENV};

    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "versions_", 1).await;
    let cluster = TestCluster::shared().unwrap();
    let current = std::path::Path::new("/usr/local/bin/pgbouncer");
    let debian = std::path::Path::new("/usr/sbin/pgbouncer");
    if current.is_file() && std::env::var_os(PGBOUNCER_ENV).is_none() {
        assert_eq!(TestPgBouncer::default_binary().unwrap(), current);
    }
    let mut bouncers = vec![TestPgBouncer::start(cluster, 2).unwrap()];
    if debian.is_file() {
        bouncers.push(
            TestPgBouncer::builder(cluster)
                .pool_size(2)
                .binary(debian)
                .max_prepared_statements(200)
                .start()
                .unwrap(),
        );
    }
    if current.is_file() {
        bouncers.push(
            TestPgBouncer::builder(cluster)
                .pool_size(2)
                .binary(current)
                .max_prepared_statements(200)
                .start()
                .unwrap(),
        );
    }
    for bouncer in &bouncers {
        let version = bouncer.version();
        assert_eq!(
            TestPgBouncer::binary_version(bouncer.binary()).unwrap(),
            version
        );
        // 1.18 cannot keep prepared statements, whatever it is asked.
        if version < (1, 21, 0) {
            assert!(!bouncer.keeps_prepared_statements());
        }
        let router = SchemaRouter::builder(pool(bouncer.config(db.name()), 2).unwrap())
            .mode(SearchPathMode::Transaction)
            .build();
        let conn = router.connection_for_schema(&schemas[0]).await.unwrap();
        let marker: String = conn
            .query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(marker, schemas[0].as_str(), "through PgBouncer {version:?}");
    }
    if current.is_file() {
        let last = bouncers.last().unwrap();
        assert!(last.version() >= (1, 21, 0));
        assert!(last.keeps_prepared_statements());
    }
}

/// PgBouncer 1.21 and later, with `max_prepared_statements` on (its default since 1.24),
/// hand a named statement one client prepared to every client preparing the same text, on
/// the same server connection. Two routers (two application processes) over one server
/// connection, tenants whose `marker.schema_name` types differ: each router's statements are
/// analysed on its own tenant's path ("cached plan must not change result type" otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooler_that_keeps_prepared_statements_shares_none_across_tenants() {
    use tenant_schemas::testing::{pool, TestCluster, TestPgBouncer};

    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let s = marked_tenants(&tenancy, "shared_", 2).await;
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "ALTER TABLE {}.marker ALTER COLUMN schema_name TYPE varchar(40)",
            s[1].quoted()
        ))
        .await
        .unwrap();
    let bouncer = TestPgBouncer::builder(TestCluster::shared().unwrap())
        .pool_size(1)
        .max_prepared_statements(200)
        .start()
        .unwrap();
    for round in 0..2 {
        for schema in &s {
            // A router of its own for each: each learns the text's parameter types (a named
            // statement) itself.
            let router = SchemaRouter::builder(pool(bouncer.config(db.name()), 1).unwrap())
                .mode(SearchPathMode::Transaction)
                .build();
            let conn = router.connection_for_schema(schema).await.unwrap();
            let marker: String = conn
                .query_one("SELECT schema_name FROM marker", &[])
                .await
                .unwrap_or_else(|e| panic!("round {round}, {schema}: {e}"))
                .get(0);
            assert_eq!(marker, schema.as_str());
            // The same through a tenant transaction's own prepared statement.
            let mut conn = conn;
            let tx = conn.transaction().await.unwrap();
            let stmt = tx.prepare("SELECT schema_name FROM marker").await.unwrap();
            let marker: String = tx
                .query_one(&stmt, &[])
                .await
                .unwrap_or_else(|e| panic!("round {round}, {schema}, transaction: {e}"))
                .get(0);
            assert_eq!(marker, schema.as_str());
            drop(stmt);
            tx.commit().await.unwrap();
        }
    }
}
