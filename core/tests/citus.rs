//! Tenants as Citus distributed schemas, on a real Citus cluster (a coordinator and two
//! workers, `TestCitusCluster`): creation, isolation through the coordinator in both
//! search-path modes, migrations, `for_each_tenant`, the doctor, deletion, a move between
//! workers under a read/write load, and the rebalancer.
//!
//! Needs Citus installed (`../shared/citus/install.sh`, run by scripts/test when Citus is
//! missing); `TENANT_SCHEMAS_SKIP_CITUS=1` skips these tests where it is not.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::{TestCitusCluster, TestDatabase};
use tenant_schemas::tokio_postgres::NoTls;
use tenant_schemas::{
    CitusNode, DropSchema, Error, NewTenant, RunOptions, SchemaName, SearchPathMode, Tenancy,
    TransferMode,
};

/// A fresh database on the shared Citus cluster; `None` when the user opted out.
async fn citus_database() -> Option<(&'static TestCitusCluster, TestDatabase)> {
    if TestCitusCluster::skip_requested() {
        eprintln!("Citus tests skipped (TENANT_SCHEMAS_SKIP_CITUS is set)");
        return None;
    }
    let cluster = TestCitusCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let db = cluster.create_database().await.expect("citus database");
    Some((cluster, db))
}

/// The first column of `sql`'s rows, over a connection of its own (the pool's connections
/// are switched to tenants by the router).
async fn strings(db: &TestDatabase, sql: &str) -> Vec<String> {
    let (client, conn) = db.config().connect(NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    let rows = client.query(sql, &[]).await.unwrap();
    drop(client);
    let _ = task.await;
    rows.iter().map(|r| r.get(0)).collect()
}

async fn distributed_schemas(db: &TestDatabase) -> Vec<String> {
    strings(db, "SELECT schema_name::text FROM citus_schemas ORDER BY 1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_distributed_schemas_isolated_migrated_and_deleted() {
    let Some((_cluster, db)) = citus_database().await else {
        return;
    };
    let tenancy = tenancy(&db, marker_and_notes()).await;
    assert!(tenancy.registry().is_citus().await.unwrap());
    let schemas = marked_tenants(&tenancy, "t", 4).await;
    plant_public_marker(db.pool()).await;

    // Each tenant is a distributed schema; the registry stays a local table of the coordinator.
    assert_eq!(distributed_schemas(&db).await, ["t0", "t1", "t2", "t3"]);
    assert_eq!(
        strings(
            &db,
            "SELECT logicalrelid::text FROM pg_catalog.pg_dist_partition
             WHERE logicalrelid IN ('public.tenant_schemas_tenants'::regclass,
                                    'public.tenant_schemas_domains'::regclass)"
        )
        .await,
        Vec::<String>::new()
    );
    let placements = tenancy.registry().placements().await.unwrap();
    assert_eq!(placements.len(), 4);
    let nodes: BTreeSet<CitusNode> = placements.iter().filter_map(|p| p.node.clone()).collect();
    assert_eq!(
        nodes.len(),
        2,
        "tenants spread over both workers: {placements:?}"
    );

    // Isolation through the coordinator: session mode over a small pool (connections switch
    // between tenants), then transaction mode.
    for mode in [SearchPathMode::Session, SearchPathMode::Transaction] {
        let t = Tenancy::builder(db.new_pool(2).unwrap())
            .migrations(marker_and_notes())
            .search_path_mode(mode)
            .build()
            .await
            .unwrap();
        for round in 0..25 {
            let s = &schemas[round % schemas.len()];
            assert_eq!(seen_by(t.router(), s).await, s.as_str(), "{mode:?}");
            let mut conn = t.router().connection_for_schema(s).await.unwrap();
            let tx = conn.transaction().await.unwrap();
            tx.execute("INSERT INTO notes (body) VALUES ('tx')", &[])
                .await
                .unwrap();
            let marker: String = tx
                .query_one("SELECT schema_name FROM marker", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(marker, s.as_str(), "{mode:?} in a transaction");
            tx.commit().await.unwrap();
        }
        let public = t.router().public().await.unwrap();
        assert_eq!(marker_of(&public).await, "PUBLIC");
    }

    // for_each_tenant runs in each tenant, through the coordinator.
    let options = RunOptions {
        skip_public: true,
        ..RunOptions::default()
    };
    let counts = tenancy
        .for_each_tenant(&options, |_tenant| {
            let tenancy = tenancy.clone();
            async move {
                let db = tenancy.connection().await?;
                let row = db
                    .query_one("SELECT schema_name, (SELECT count(*) FROM notes WHERE body = 'x') FROM marker", &[])
                    .await?;
                Ok((row.get::<_, String>(0), row.get::<_, i64>(1)))
            }
        })
        .await
        .unwrap();
    for (i, (schema, result)) in counts.into_iter().enumerate() {
        let (marker, notes) = result.unwrap();
        assert_eq!(marker, schema.as_str());
        assert_eq!(notes, i as i64, "{schema}");
    }

    // Migrations: an ALTER TABLE propagated by Citus, and a new table, distributed with its
    // schema (co-located on the tenant's node).
    // (`marker` is in public too, on purpose: the isolation scenario's fall-through marker.)
    let newer = marker_and_notes()
        .shared_name("marker")
        .with("tag", "ALTER TABLE notes ADD COLUMN tag text")
        .with("extra", "CREATE TABLE extra (id int PRIMARY KEY)");
    let migrated = Tenancy::builder(db.pool().clone())
        .migrations(newer.clone())
        .build()
        .await
        .unwrap();
    let report = migrated
        .migrate(&RunOptions::default(), None)
        .await
        .unwrap();
    assert!(report.is_success(), "{report:?}");
    for s in &schemas {
        let conn = migrated.router().connection_for_schema(s).await.unwrap();
        conn.execute(
            "INSERT INTO notes (body, tag) VALUES ('tagged', 'new')",
            &[],
        )
        .await
        .unwrap();
        conn.execute("INSERT INTO extra VALUES (1)", &[])
            .await
            .unwrap();
        assert_eq!(migrated.registry().get(s).await.unwrap().version, 4);
    }
    let extra = strings(
        &db,
        "SELECT table_name::text FROM citus_tables
         WHERE table_name::text LIKE '%.extra' ORDER BY 1",
    )
    .await;
    assert_eq!(extra, ["t0.extra", "t1.extra", "t2.extra", "t3.extra"]);
    let report = migrated.doctor(false).await.unwrap();
    assert!(report.is_healthy(), "{report:?}");

    // A creation whose migration fails leaves nothing, on the coordinator nor in Citus.
    let failing = Tenancy::builder(db.pool().clone())
        .migrations(newer.clone().with("fails", "SELECT 1 / 0"))
        .build()
        .await
        .unwrap();
    let err = failing
        .create_tenant(NewTenant::new(schema("broken")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Migration { .. }), "{err:?}");
    assert!(!schema_exists(&db, "broken").await);
    assert!(!distributed_schemas(&db)
        .await
        .contains(&"broken".to_owned()));

    // Deletion drops the distributed schema through the coordinator.
    migrated
        .delete_tenant(&schemas[3], DropSchema::Yes)
        .await
        .unwrap();
    assert!(!schema_exists(&db, "t3").await);
    assert_eq!(distributed_schemas(&db).await, ["t0", "t1", "t2"]);
    assert!(strings(
        &db,
        "SELECT table_name::text FROM citus_shards WHERE table_name::text LIKE 't3.%'"
    )
    .await
    .is_empty());

    // Citus can be turned off in the builder: the schema is then an ordinary local one.
    let plain = Tenancy::builder(db.pool().clone())
        .migrations(newer)
        .citus(false)
        .build()
        .await
        .unwrap();
    plain
        .create_tenant(NewTenant::new(schema("local_one")))
        .await
        .unwrap();
    assert!(schema_exists(&db, "local_one").await);
    assert!(!distributed_schemas(&db)
        .await
        .contains(&"local_one".to_owned()));
}

/// What the load saw during the moves.
#[derive(Default)]
struct Load {
    acknowledged: Mutex<Vec<(SchemaName, String)>>,
    failed_writes: AtomicU64,
    reads: AtomicU64,
    failed_reads: AtomicU64,
    wrong: AtomicU64,
    longest_ms: AtomicU64,
}

impl Load {
    fn took(&self, started: Instant) {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.longest_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_moves_between_workers_under_load() {
    let Some((cluster, db)) = citus_database().await else {
        return;
    };
    let tenancy = Tenancy::builder(db.new_pool(24).unwrap())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let schemas = marked_tenants(&tenancy, "m", 2).await;
    plant_public_marker(db.pool()).await;
    let moving = schemas[0].clone();
    let home = tenancy
        .registry()
        .placement(&moving)
        .await
        .unwrap()
        .unwrap();
    let away = cluster
        .worker_nodes()
        .into_iter()
        .find(|n| *n != home)
        .unwrap();

    // `marker` has no primary key: the default (logical) mode refuses, saying why.
    let err = tenancy
        .move_tenant(&moving, &away, TransferMode::Auto)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("REPLICA IDENTITY"), "{err}");

    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (tenancy, load, stop) = (tenancy.clone(), load.clone(), stop.clone());
        let s = schemas[task % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if task < 4 {
                    let body = format!("w{task}-{n}");
                    n += 1;
                    let written = async {
                        let db = tenancy
                            .router()
                            .connection_for_schema(&s)
                            .await
                            .map_err(|e| e.to_string())?;
                        db.execute("INSERT INTO notes (body) VALUES ($1)", &[&body])
                            .await
                            .map_err(|e| e.to_string())
                    }
                    .await;
                    match written {
                        Ok(_) => load.acknowledged.lock().unwrap().push((s.clone(), body)),
                        Err(_) => {
                            load.failed_writes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                } else {
                    match try_seen_by(tenancy.router(), &s).await {
                        Ok(seen) if seen == s.as_str() => {}
                        Ok(_) => {
                            load.wrong.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            load.failed_reads.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    load.reads.fetch_add(1, Ordering::Relaxed);
                }
                load.took(started);
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    // Online, by logical replication (inserts and reads go on; `marker` is only read).
    let there = tenancy
        .move_tenant(&moving, &away, TransferMode::ForceLogical)
        .await
        .unwrap();
    assert!(there.moved);
    assert_eq!(
        tenancy.registry().placement(&moving).await.unwrap(),
        Some(away.clone())
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // And back, copying while the tenant's writes wait.
    let back = tenancy
        .move_tenant(&moving, &home, TransferMode::BlockWrites)
        .await
        .unwrap();
    assert!(back.moved);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        tenancy.registry().placement(&moving).await.unwrap(),
        Some(home.clone())
    );
    let again = tenancy
        .move_tenant(&moving, &home, TransferMode::Auto)
        .await
        .unwrap();
    assert!(!again.moved);

    // Every acknowledged write is there, in its own tenant, once.
    let acknowledged = std::mem::take(&mut *load.acknowledged.lock().unwrap());
    for s in &schemas {
        let conn = tenancy.router().connection_for_schema(s).await.unwrap();
        let bodies: Vec<String> = conn
            .query("SELECT body FROM notes WHERE body LIKE 'w%'", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let stored: HashSet<&str> = bodies.iter().map(String::as_str).collect();
        assert_eq!(stored.len(), bodies.len(), "{s}: a write stored twice");
        let mine: Vec<&str> = acknowledged
            .iter()
            .filter(|(t, _)| t == s)
            .map(|(_, b)| b.as_str())
            .collect();
        let lost = mine.iter().filter(|b| !stored.contains(*b)).count();
        assert_eq!(lost, 0, "{s}: {lost} acknowledged writes lost");
        assert_eq!(
            stored.len(),
            mine.len(),
            "{s}: writes stored but not acknowledged"
        );
    }
    let wrong = load.wrong.load(Ordering::Relaxed);
    eprintln!(
        "citus move under load: logical move {:?}, block_writes move {:?}; {} writes acknowledged, \
         {} failed, 0 lost; {} reads, {} failed, {wrong} wrong-tenant; longest request {} ms",
        there.took,
        back.took,
        acknowledged.len(),
        load.failed_writes.load(Ordering::Relaxed),
        load.reads.load(Ordering::Relaxed),
        load.failed_reads.load(Ordering::Relaxed),
        load.longest_ms.load(Ordering::Relaxed),
    );
    assert_eq!(wrong, 0);
    assert!(!acknowledged.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebalancer_spreads_tenants_over_the_workers() {
    let Some((cluster, db)) = citus_database().await else {
        return;
    };
    let migrations = tenant_schemas::TenantMigrations::new().with("notes", NOTES);
    let tenancy = tenancy(&db, migrations).await;
    let first = cluster.worker_nodes()[0].clone();
    for i in 0..4 {
        let s = schema(&format!("r{i}"));
        tenancy
            .create_tenant(NewTenant::new(s.clone()))
            .await
            .unwrap();
        tenancy
            .move_tenant(&s, &first, TransferMode::Auto)
            .await
            .unwrap();
    }
    let on = |placements: &[tenant_schemas::Placement]| -> BTreeSet<CitusNode> {
        placements.iter().filter_map(|p| p.node.clone()).collect()
    };
    assert_eq!(on(&tenancy.registry().placements().await.unwrap()).len(), 1);
    let report = tenancy.rebalance(TransferMode::Auto).await.unwrap();
    assert!(!report.moved.is_empty(), "{report:?}");
    let placements = tenancy.registry().placements().await.unwrap();
    assert_eq!(on(&placements).len(), 2, "{placements:?}");
    eprintln!(
        "citus rebalance: {} tenants moved in {:?}",
        report.moved.len(),
        report.took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citus_operations_on_plain_postgres_say_so() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    assert!(!tenancy.registry().is_citus().await.unwrap());
    let acme = schema("acme");
    tenancy
        .create_tenant(NewTenant::new(acme.clone()))
        .await
        .unwrap();
    let node: CitusNode = "127.0.0.1:5432".parse().unwrap();
    for err in [
        tenancy
            .move_tenant(&acme, &node, TransferMode::Auto)
            .await
            .unwrap_err(),
        tenancy.registry().placements().await.unwrap_err(),
        tenancy.rebalance(TransferMode::Auto).await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::Citus { .. }), "{err:?}");
        assert!(
            err.to_string().contains("needs a Citus coordinator"),
            "{err}"
        );
    }
}
