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

/// One test at a time: the moves of one would otherwise time (and load) another's, and one
/// of them starts a Citus cluster of its own beside the shared one.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _serial = ONE_AT_A_TIME.lock().await;
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
    let _serial = ONE_AT_A_TIME.lock().await;
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

/// The key pair of the advisory lock Citus waits for, in a session with
/// `citus.running_under_citus_test_suite` on, right before a logical-replication move
/// blocks writes for its cut-over (`ConflictWithIsolationTestingAfterCopy` in Citus'
/// multi_logical_replication.c): holding it pauses every move of the database there.
const BEFORE_CUT_OVER: (i32, i32) = (44000, 55152);

/// Runs `sql` on `node`'s database `db` over a connection of its own.
async fn on_node(node: &CitusNode, db: &str, sql: &str) {
    let (client, conn) = tenant_schemas::tokio_postgres::Config::new()
        .host(node.host())
        .port(node.port())
        .user("postgres")
        .dbname(db)
        .connect(NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap();
    drop(client);
    let _ = task.await;
}

/// Twenty acknowledged writes to the tenant in `s`, through the router; their bodies are
/// added to `bodies`.
async fn write_twenty(
    tenancy: &Tenancy,
    s: &SchemaName,
    mode: TransferMode,
    bodies: &mut Vec<String>,
) {
    let conn = tenancy.router().connection_for_schema(s).await.unwrap();
    for i in 0..20 {
        let body = format!("{mode:?}-{i}");
        let written = conn
            .execute("INSERT INTO notes (body) VALUES ($1)", &[&body])
            .await
            .unwrap();
        assert_eq!(written, 1);
        bodies.push(body);
    }
}

/// The dangerous interleaving of a logical-replication move, forced: writes acknowledged
/// right before the cut-over, on a source worker with `synchronous_commit = off` (as the
/// harness runs it) whose WAL writer is slow. Citus waits for the target to replay the
/// source's WAL up to its *write* position, which such writes' commit records may not have
/// reached yet: unfenced, they stay in the old placement and are lost (all of them, every
/// run, before the fence). `move_tenant`'s fence flushes the source's WAL once writes are
/// held, so every acknowledged write is there after the move, in every mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_acknowledged_just_before_the_cut_over_survive_the_move() {
    let _serial = ONE_AT_A_TIME.lock().await;
    if TestCitusCluster::skip_requested() {
        return;
    }
    // A cluster of its own: its workers' WAL writer is slowed down server-wide.
    let cluster = TestCitusCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let db = cluster.create_database().await.unwrap();
    for worker in cluster.worker_nodes() {
        on_node(
            &worker,
            db.name(),
            "ALTER SYSTEM SET wal_writer_delay = '10s'",
        )
        .await;
        on_node(&worker, db.name(), "SELECT pg_reload_conf()").await;
    }
    let coordinator = CitusNode::new("127.0.0.1", cluster.coordinator().port().unwrap());
    on_node(
        &coordinator,
        db.name(),
        &format!(
            "ALTER DATABASE \"{}\" SET citus.running_under_citus_test_suite = on",
            db.name()
        ),
    )
    .await;
    // Sessions made from now on have the pause point.
    let tenancy = Tenancy::builder(db.new_pool(8).unwrap())
        .migrations(tenant_schemas::TenantMigrations::new().with("notes", NOTES))
        .build()
        .await
        .unwrap();
    let s = schema("m0");
    tenancy
        .create_tenant(NewTenant::new(s.clone()))
        .await
        .unwrap();
    let (pause, conn) = db.config().connect(NoTls).await.unwrap();
    tokio::spawn(conn);

    let mut bodies = Vec::new();
    for (round, mode) in [
        TransferMode::Auto,
        TransferMode::ForceLogical,
        TransferMode::BlockWrites,
    ]
    .into_iter()
    .enumerate()
    {
        let home = tenancy.registry().placement(&s).await.unwrap().unwrap();
        let away = cluster
            .worker_nodes()
            .into_iter()
            .find(|n| *n != home)
            .unwrap();
        // A logical move is paused after its copy and catch-up, right before it blocks
        // writes for the cut-over, and the writes are made there. A block_writes move holds
        // writes from its start: they are made right before it.
        let logical = mode != TransferMode::BlockWrites;
        if logical {
            pause
                .execute(
                    "SELECT pg_advisory_lock($1, $2)",
                    &[&BEFORE_CUT_OVER.0, &BEFORE_CUT_OVER.1],
                )
                .await
                .unwrap();
        }
        let moving = {
            let (tenancy, s, away) = (tenancy.clone(), s.clone(), away.clone());
            async move { tenancy.move_tenant(&s, &away, mode).await }
        };
        let report = if logical {
            let mover = tokio::spawn(moving);
            loop {
                let waiting: bool = pause
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
                         AND classid = $1 AND objid = $2 AND objsubid = 2 AND NOT granted)",
                        &[
                            &u32::try_from(BEFORE_CUT_OVER.0).unwrap(),
                            &u32::try_from(BEFORE_CUT_OVER.1).unwrap(),
                        ],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if waiting {
                    break;
                }
                assert!(!mover.is_finished(), "the move did not pause");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            write_twenty(&tenancy, &s, mode, &mut bodies).await;
            pause
                .execute(
                    "SELECT pg_advisory_unlock($1, $2)",
                    &[&BEFORE_CUT_OVER.0, &BEFORE_CUT_OVER.1],
                )
                .await
                .unwrap();
            mover.await.unwrap().unwrap()
        } else {
            write_twenty(&tenancy, &s, mode, &mut bodies).await;
            moving.await.unwrap()
        };
        assert!(report.moved, "round {round}");
        assert_eq!(
            tenancy.registry().placement(&s).await.unwrap(),
            Some(away.clone())
        );

        let conn = tenancy.router().connection_for_schema(&s).await.unwrap();
        let stored: HashSet<String> = conn
            .query("SELECT body FROM notes", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let lost: Vec<&String> = bodies.iter().filter(|b| !stored.contains(*b)).collect();
        assert!(
            lost.is_empty(),
            "{mode:?}: {} of {} acknowledged writes lost: {lost:?}",
            lost.len(),
            bodies.len()
        );
        assert_eq!(stored.len(), bodies.len(), "{mode:?}");
        eprintln!(
            "{mode:?} move with writes just before the cut-over: took {:?}, 0 of {} lost",
            report.took,
            bodies.len()
        );
    }
}

/// The environment variable that sets how many rounds
/// `single_writer_rounds_across_the_modes_lose_nothing` runs (3 by default: one per mode;
/// docs/scaling.md reports a run of 60).
const ROUNDS_ENV: &str = "TENANT_SCHEMAS_CITUS_MOVE_ROUNDS";

/// The environment variable that fills the tenant of
/// `single_writer_rounds_across_the_modes_lose_nothing` with about this many MB before
/// its rounds (none by default), to measure the move of a bigger tenant under load.
const FILL_MB_ENV: &str = "TENANT_SCHEMAS_CITUS_MOVE_FILL_MB";

/// Rounds of one move each, the modes in turn, while one writer inserts every 5 ms through
/// the router (the load that lost writes before the fence) and one reader reads: every
/// acknowledged write is there after each move, once; the longest request is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_writer_rounds_across_the_modes_lose_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some((cluster, db)) = citus_database().await else {
        return;
    };
    let rounds: usize = std::env::var(ROUNDS_ENV)
        .ok()
        .map_or(3, |v| v.parse().expect(ROUNDS_ENV));
    let tenancy = Tenancy::builder(db.new_pool(8).unwrap())
        .migrations(tenant_schemas::TenantMigrations::new().with("notes", NOTES))
        .build()
        .await
        .unwrap();
    let s = schema("w0");
    tenancy
        .create_tenant(NewTenant::new(s.clone()))
        .await
        .unwrap();
    let fill_mb: u32 = std::env::var(FILL_MB_ENV)
        .ok()
        .map_or(0, |v| v.parse().expect(FILL_MB_ENV));
    if fill_mb > 0 {
        let conn = tenancy.router().connection_for_schema(&s).await.unwrap();
        fill_notes(&conn, fill_mb).await;
        let size: String = conn
            .query_one(
                "SELECT pg_size_pretty(sum(shard_size)) FROM citus_shards
                 WHERE table_name = 'notes'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        eprintln!("tenant filled: {size}");
    }
    let modes = [
        TransferMode::Auto,
        TransferMode::ForceLogical,
        TransferMode::BlockWrites,
    ];
    let (mut writes, mut reads, mut longest_write, mut longest_read) = (0, 0, 0, 0);
    let mut slowest_move = Duration::ZERO;
    let mut longest_held = Duration::ZERO;
    for round in 0..rounds {
        let mode = modes[round % modes.len()];
        let home = tenancy.registry().placement(&s).await.unwrap().unwrap();
        let away = cluster
            .worker_nodes()
            .into_iter()
            .find(|n| *n != home)
            .unwrap();
        let load = Arc::new(Load::default());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (tenancy, load, stop, s) = (tenancy.clone(), load.clone(), stop.clone(), s.clone());
            tokio::spawn(async move {
                let mut n = 0;
                let mut longest = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!("r{round}-{n}");
                    n += 1;
                    let started = Instant::now();
                    let written = async {
                        let db = tenancy.router().connection_for_schema(&s).await?;
                        db.execute("INSERT INTO notes (body) VALUES ($1)", &[&body])
                            .await
                    }
                    .await;
                    longest = longest.max(started.elapsed().as_millis());
                    match written {
                        Ok(1) => load.acknowledged.lock().unwrap().push((s.clone(), body)),
                        _ => {
                            load.failed_writes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                longest
            })
        };
        let reader = {
            let (tenancy, load, stop, s) = (tenancy.clone(), load.clone(), stop.clone(), s.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let read = async {
                        let db = tenancy.router().connection_for_schema(&s).await?;
                        db.query_one("SELECT count(*) FROM notes", &[]).await
                    }
                    .await;
                    load.took(started);
                    if read.is_err() {
                        load.failed_reads.fetch_add(1, Ordering::Relaxed);
                    }
                    load.reads.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = tenancy.move_tenant(&s, &away, mode).await.unwrap();
        assert!(report.moved, "round {round}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, Ordering::Relaxed);
        let round_longest = writer.await.unwrap();
        longest_write = longest_write.max(round_longest);
        reader.await.unwrap();
        longest_held = longest_held.max(report.writes_held);
        slowest_move = slowest_move.max(report.took);

        let conn = tenancy.router().connection_for_schema(&s).await.unwrap();
        let bodies: Vec<String> = conn
            .query(
                "SELECT body FROM notes WHERE body LIKE $1",
                &[&format!("r{round}-%")],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let stored: HashSet<&str> = bodies.iter().map(String::as_str).collect();
        assert_eq!(
            stored.len(),
            bodies.len(),
            "round {round}: a write stored twice"
        );
        let acknowledged = std::mem::take(&mut *load.acknowledged.lock().unwrap());
        let lost = acknowledged
            .iter()
            .filter(|(_, b)| !stored.contains(b.as_str()))
            .count();
        assert_eq!(
            lost,
            0,
            "round {round} ({mode:?}, move {:?}): {lost} of {} acknowledged writes lost",
            report.took,
            acknowledged.len()
        );
        assert_eq!(
            load.failed_writes.load(Ordering::Relaxed),
            0,
            "round {round}"
        );
        assert_eq!(
            load.failed_reads.load(Ordering::Relaxed),
            0,
            "round {round}"
        );
        assert!(!acknowledged.is_empty(), "round {round}");
        if fill_mb > 0 || rounds > modes.len() {
            eprintln!(
                "round {round} ({mode:?}): move {:?}, writes held {:?}, longest write \
                 {round_longest} ms, {} writes, 0 lost",
                report.took,
                report.writes_held,
                acknowledged.len()
            );
        }
        writes += acknowledged.len();
        reads += load.reads.load(Ordering::Relaxed);
        longest_read = longest_read.max(load.longest_ms.load(Ordering::Relaxed));
    }
    eprintln!(
        "single-writer moves: {rounds} rounds over auto/force_logical/block_writes, {writes} \
         writes acknowledged, 0 lost, 0 failed; {reads} reads, 0 failed; longest write \
         {longest_write} ms, longest read {longest_read} ms; writes held at a cut-over at \
         most {longest_held:?}; slowest move {slowest_move:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebalancer_spreads_tenants_over_the_workers() {
    let _serial = ONE_AT_A_TIME.lock().await;
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
