//! Moving a tenant to another plain PostgreSQL database by logical replication
//! (`Tenancy::move_to_shard`): rows, sequences, registry and requests end up on the target,
//! no acknowledged write is lost under a write load, and every refusal leaves the tenant
//! where it was with nothing left behind.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tenant_schemas::testing::fixtures::{database, fill_notes, host, schema, schema_exists, NOTES};
use tenant_schemas::testing::{TestCluster, TestDatabase};
use tenant_schemas::{
    scope, Error, NewTenant, SchemaName, ShardName, Tenancy, TenantEvent, TenantMigrations,
    DEFAULT_SHARD,
};

/// One cluster with `wal_level = logical` for this test process, with room for the moves of
/// every test thread at once: each holds an apply worker, a replication slot and a WAL sender
/// until it is over, and needs table-sync workers to start. With the defaults (4 logical
/// replication workers) four moves at once held every worker, none could copy its tables,
/// and each waited for its catch-up limit (10 minutes).
fn logical_cluster() -> &'static TestCluster {
    static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        TestCluster::start_with_settings(&[
            "wal_level=logical",
            "max_worker_processes=64",
            "max_logical_replication_workers=32",
            "max_replication_slots=64",
            "max_wal_senders=64",
        ])
        .unwrap()
    })
}

/// The moves the hooks heard, as `schema: from -> to`.
static MOVES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// `notes` and a `marker` with a primary key (replication needs one for updates).
fn migrations() -> TenantMigrations {
    TenantMigrations::new().with("notes", NOTES).with(
        "marker",
        "CREATE TABLE marker (schema_name text PRIMARY KEY)",
    )
}

/// Two databases (`a` default, `b` the shard named `b`) and a tenancy over both.
async fn two_logical(
    a: Option<TestDatabase>,
    migrations: TenantMigrations,
) -> (TestDatabase, TestDatabase, Tenancy) {
    let a = match a {
        Some(a) => a,
        None => logical_cluster().create_database().await.unwrap(),
    };
    let b = logical_cluster().create_database().await.unwrap();
    let tenancy = Tenancy::builder(a.new_pool(8).unwrap())
        .shard("b", b.new_pool(8).unwrap())
        .migrations(migrations)
        .on_event(|event| async move {
            if let TenantEvent::MovedToShard { schema, from, to } = event {
                MOVES
                    .lock()
                    .unwrap()
                    .push(format!("{schema}: {from} -> {to}"));
            }
        })
        .build()
        .await
        .unwrap();
    (a, b, tenancy)
}

/// A tenant on the default database with its marker and `notes` notes.
async fn marked(tenancy: &Tenancy, name: &str, notes: usize) -> SchemaName {
    let s = schema(name);
    tenancy
        .create_tenant(
            NewTenant::new(s.clone())
                .domain(host(&format!("{name}.test")))
                .shard(DEFAULT_SHARD),
        )
        .await
        .unwrap();
    let db = tenancy.router().connection_for_schema(&s).await.unwrap();
    db.execute("INSERT INTO marker VALUES ($1)", &[&s.as_str()])
        .await
        .unwrap();
    for i in 0..notes {
        db.execute(
            "INSERT INTO notes (body) VALUES ($1)",
            &[&format!("{name}-{i}")],
        )
        .await
        .unwrap();
    }
    s
}

/// How many advisory locks sessions hold on `db` (the migration lock is one).
async fn advisory_locks(db: &TestDatabase) -> i64 {
    db.pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The publications, replication slots and subscriptions of database `db`.
async fn replication_objects(db: &TestDatabase) -> Vec<String> {
    let conn = db.pool().get().await.unwrap();
    conn.query(
        "SELECT 'publication ' || pubname FROM pg_publication
         UNION ALL SELECT 'slot ' || slot_name FROM pg_replication_slots
                   WHERE database = current_database()
         UNION ALL SELECT 'subscription ' || subname FROM pg_subscription
                   WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn notes_on(db: &TestDatabase, s: &SchemaName) -> Vec<(i64, String)> {
    let conn = db.pool().get().await.unwrap();
    conn.query(
        &format!("SELECT id, body FROM {}.notes ORDER BY id", s.quoted()),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tenant_has_its_rows_sequences_and_requests_on_the_target() {
    let (a, b, tenancy) = two_logical(None, migrations()).await;
    let mv = marked(&tenancy, "mv", 50).await;
    let other = marked(&tenancy, "other", 3).await;
    let before = notes_on(&a, &mv).await;

    let report = tenancy
        .move_to_shard(&mv, &ShardName::new("b"))
        .await
        .unwrap();
    eprintln!(
        "moved {} rows in {:?}, writes held {:?}",
        report.total_rows(),
        report.took,
        report.writes_held
    );
    assert!(report.moved);
    assert_eq!((report.from.as_str(), report.to.as_str()), ("default", "b"));
    let rows: BTreeMap<&str, i64> = report
        .rows
        .iter()
        .map(|t| (t.table.as_str(), t.rows))
        .collect();
    assert_eq!(rows.get("notes"), Some(&50));
    assert_eq!(rows.get("marker"), Some(&1));
    assert_eq!(
        rows.get(tenant_schemas::HISTORY_TABLE),
        Some(&2),
        "the history came along: {rows:?}"
    );

    // Rows identical, registry on b, source schema gone, nothing left behind.
    assert_eq!(notes_on(&b, &mv).await, before);
    assert_eq!(tenancy.registry().get(&mv).await.unwrap().shard, "b");
    assert!(
        !schema_exists(&a, "mv").await,
        "the source schema is dropped"
    );
    assert!(schema_exists(&b, "mv").await);
    assert!(schema_exists(&a, "other").await);
    assert_eq!(replication_objects(&a).await, Vec::<String>::new());
    assert_eq!(replication_objects(&b).await, Vec::<String>::new());
    let comment: Option<String> = b
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT obj_description('mv'::regnamespace, 'pg_namespace')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(comment, None, "the in-progress mark is gone");

    // Requests reach the target: by the registry's tenant, by host, in scope.
    let tenant = tenancy.tenant_by_schema(&mv).await.unwrap().unwrap();
    assert_eq!(tenant.shard().as_str(), "b");
    let db = tenancy
        .router()
        .connection_for_tenant(&tenant)
        .await
        .unwrap();
    let id: i64 = db
        .query_one(
            "INSERT INTO notes (body) VALUES ('after') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        id > before.last().unwrap().0,
        "the sequence continues: {id} after {:?}",
        before.last()
    );
    let marker: String = db
        .query_one("SELECT schema_name FROM marker", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(marker, "mv");
    let resolved = tenancy.resolve(&host("mv.test")).await.unwrap();
    assert_eq!(resolved.shard().as_str(), "b");
    let in_scope: String = scope::run(resolved, async {
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
    assert_eq!(in_scope, "mv");
    // A tenant named only by its schema is on the default database: there it is missing
    // now, not another tenant's data.
    let by_name = scope::run_in_schema(mv.clone(), async {
        tenancy
            .connection()
            .await?
            .query_one("SELECT schema_name FROM marker", &[])
            .await
    })
    .await;
    assert!(
        matches!(by_name, Err(Error::SchemaMissing { .. })),
        "{by_name:?}"
    );
    // The other tenant is untouched.
    let seen: String = tenancy
        .router()
        .connection_for_schema(&other)
        .await
        .unwrap()
        .query_one("SELECT schema_name FROM marker", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, "other");

    assert!(
        MOVES
            .lock()
            .unwrap()
            .contains(&"mv: default -> b".to_owned()),
        "the hooks heard it: {:?}",
        MOVES.lock().unwrap()
    );

    // Already there: nothing happens.
    let again = tenancy
        .move_to_shard(&mv, &ShardName::new("b"))
        .await
        .unwrap();
    assert!(!again.moved);
    // The migration lock is free as soon as a move returns, moved or not: the next move or
    // migration, started at once, is not refused as if one were in progress.
    assert_eq!(advisory_locks(&a).await, 0, "after a move to where it is");

    // And back to the default database.
    let back = tenancy
        .move_to_shard(&mv, &ShardName::DEFAULT)
        .await
        .unwrap();
    assert!(back.moved);
    assert_eq!(advisory_locks(&a).await, 0, "after a move");
    assert_eq!(back.total_rows(), report.total_rows() + 1);
    assert!(!schema_exists(&b, "mv").await);
    let tenant = tenancy.tenant_by_schema(&mv).await.unwrap().unwrap();
    assert!(tenant.shard().is_default());
    let db = tenancy
        .router()
        .connection_for_tenant(&tenant)
        .await
        .unwrap();
    let next: i64 = db
        .query_one("INSERT INTO notes (body) VALUES ('back') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    assert!(next > id);
    assert_eq!(replication_objects(&a).await, Vec::<String>::new());
}

/// The environment variable that fills the tenant of
/// `no_acknowledged_write_is_lost_during_a_move` with about this many MB before the load
/// starts (none by default), to measure the move of a bigger tenant under load.
const FILL_MB_ENV: &str = "TENANT_SCHEMAS_MOVE_FILL_MB";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_write_is_lost_during_a_move() {
    let (a, b, tenancy) = two_logical(None, migrations()).await;
    let mv = marked(&tenancy, "busy", 200).await;
    let _other = marked(&tenancy, "quiet", 1).await;
    let fill_mb: u32 = std::env::var(FILL_MB_ENV)
        .ok()
        .map_or(0, |v| v.parse().expect(FILL_MB_ENV));
    if fill_mb > 0 {
        let db = tenancy.router().connection_for_schema(&mv).await.unwrap();
        fill_notes(&db, fill_mb).await;
        let size: String = db
            .query_one(
                "SELECT pg_catalog.pg_size_pretty(pg_catalog.pg_total_relation_size('notes'))",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        eprintln!("the moving tenant's notes: {size}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(i64, String, bool)>::new()));
    let moved = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let foreign = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..3 {
        let (tenancy, mv, stop, acked, failed, moved) = (
            tenancy.clone(),
            mv.clone(),
            stop.clone(),
            acked.clone(),
            failed.clone(),
            moved.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut last = Instant::now();
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                i += 1;
                let body = format!("w{w}-{i}");
                let written = async {
                    let tenant = tenancy.tenant_by_schema(&mv).await?.unwrap();
                    let db = tenancy.router().connection_for_tenant(&tenant).await?;
                    let row = db
                        .query_one(
                            "INSERT INTO notes (body) VALUES ($1) RETURNING id",
                            &[&body],
                        )
                        .await?;
                    Ok::<i64, Error>(row.get(0))
                }
                .await;
                match written {
                    Ok(id) => {
                        let after = moved.load(Ordering::Acquire);
                        acked.lock().unwrap().push((id, body, after));
                        longest = longest.max(last.elapsed());
                        last = Instant::now();
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            longest
        }));
    }
    // Another process's writer (no gate of this process holds it back): straight to the
    // source database, and to the target once the source's schema is gone.
    let external = Arc::new(Mutex::new(Vec::<(i64, String)>::new()));
    let external_failed = Arc::new(AtomicUsize::new(0));
    {
        let (stop, external, external_failed) =
            (stop.clone(), external.clone(), external_failed.clone());
        let (source, target) = (a.new_pool(1).unwrap(), b.new_pool(1).unwrap());
        tasks.push(tokio::spawn(async move {
            let mut on_target = false;
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                i += 1;
                let body = format!("ext-{i}");
                let pool = if on_target { &target } else { &source };
                let written = async {
                    pool.get()
                        .await
                        .unwrap()
                        .query_one(
                            "INSERT INTO busy.notes (body) VALUES ($1) RETURNING id",
                            &[&body],
                        )
                        .await
                }
                .await;
                match written {
                    Ok(row) => external.lock().unwrap().push((row.get(0), body)),
                    Err(_) => {
                        external_failed.fetch_add(1, Ordering::Relaxed);
                        on_target = true;
                    }
                }
            }
            Duration::ZERO
        }));
    }
    for _ in 0..2 {
        let (tenancy, mv, stop, foreign, reads) = (
            tenancy.clone(),
            mv.clone(),
            stop.clone(),
            foreign.clone(),
            reads.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let read = async {
                    let tenant = tenancy.tenant_by_schema(&mv).await?.unwrap();
                    let db = tenancy.router().connection_for_tenant(&tenant).await?;
                    let rows = db.query("SELECT schema_name FROM marker", &[]).await?;
                    Ok::<Vec<String>, Error>(rows.iter().map(|r| r.get(0)).collect())
                }
                .await;
                if let Ok(markers) = read {
                    reads.fetch_add(1, Ordering::Relaxed);
                    if markers != ["busy"] {
                        foreign.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Duration::ZERO
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = tenancy
        .move_to_shard(&mv, &ShardName::new("b"))
        .await
        .unwrap();
    moved.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    let mut longest = Duration::ZERO;
    for task in tasks {
        longest = longest.max(task.await.unwrap());
    }

    let acked = acked.lock().unwrap().clone();
    let on_target: BTreeMap<i64, String> = notes_on(&b, &mv).await.into_iter().collect();
    let lost: Vec<&(i64, String, bool)> = acked
        .iter()
        .filter(|(id, body, _)| on_target.get(id) != Some(body))
        .collect();
    eprintln!(
        "move under load: {} writes acknowledged, {} failed, {} reads; took {:?}, writes held {:?}, longest write stall {:?}",
        acked.len(),
        failed.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed),
        report.took,
        report.writes_held,
        longest
    );
    assert!(acked.len() > 20, "the load wrote: {}", acked.len());
    // A generous bound (measured 10-25 ms here): the fence is short, not seconds.
    assert!(
        report.writes_held < Duration::from_secs(5),
        "{:?}",
        report.writes_held
    );
    assert_eq!(
        lost,
        Vec::<&(i64, String, bool)>::new(),
        "acknowledged writes lost"
    );
    let external = external.lock().unwrap().clone();
    let external_lost: Vec<&(i64, String)> = external
        .iter()
        .filter(|(id, body)| on_target.get(id) != Some(body))
        .collect();
    eprintln!(
        "another process's writer: {} acknowledged, {} failed",
        external.len(),
        external_failed.load(Ordering::Relaxed)
    );
    assert!(external.len() > 20, "the other writer wrote");
    assert_eq!(
        external_lost,
        Vec::<&(i64, String)>::new(),
        "another process's acknowledged writes lost"
    );
    assert_eq!(
        foreign.load(Ordering::Relaxed),
        0,
        "a read saw another tenant's rows"
    );
    assert!(reads.load(Ordering::Relaxed) > 0);
    // Writes went on after the move, on the target.
    assert!(
        acked.iter().any(|(_, _, after)| *after),
        "no write after the move"
    );
    let before = acked.iter().filter(|(_, _, after)| !*after).count();
    assert!(before > 0, "no write during the move");
    assert_eq!(tenancy.registry().get(&mv).await.unwrap().shard, "b");
}

/// Nothing of a refused move is left: the tenant on the default database with its rows,
/// no publication, slot or subscription, no schema on the target.
async fn left_as_it_was(a: &TestDatabase, b: &TestDatabase, tenancy: &Tenancy, s: &SchemaName) {
    assert!(tenancy.registry().get(s).await.unwrap().shard.is_default());
    assert!(schema_exists(a, s.as_str()).await);
    assert_eq!(replication_objects(a).await, Vec::<String>::new());
    assert_eq!(replication_objects(b).await, Vec::<String>::new());
    let tenant = tenancy.tenant_by_schema(s).await.unwrap().unwrap();
    let marker: String = tenancy
        .router()
        .connection_for_tenant(&tenant)
        .await
        .unwrap()
        .query_one("SELECT schema_name FROM marker", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(marker, s.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_leave_the_tenant_where_it_was() {
    let (a, b, tenancy) = two_logical(None, migrations()).await;
    let s = marked(&tenancy, "stay", 5).await;

    // The public schema.
    let err = tenancy
        .move_to_shard(&SchemaName::public(), &ShardName::new("b"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err:?}");
    // An unknown shard.
    let err = tenancy
        .move_to_shard(&s, &ShardName::new("nowhere"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownShard { .. }), "{err:?}");
    left_as_it_was(&a, &b, &tenancy, &s).await;
    // An unknown tenant.
    let err = tenancy
        .move_to_shard(&schema("ghost"), &ShardName::new("b"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantNotFound { .. }), "{err:?}");

    // A schema of that name on the target.
    b.pool()
        .get()
        .await
        .unwrap()
        .batch_execute("CREATE SCHEMA stay; CREATE TABLE stay.mine (x int)")
        .await
        .unwrap();
    let err = tenancy
        .move_to_shard(&s, &ShardName::new("b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ShardMove { reason, .. } if reason.contains("exists on the target")),
        "{err:?}"
    );
    assert!(
        schema_exists(&b, "stay").await,
        "the target's own schema is kept"
    );
    b.pool()
        .get()
        .await
        .unwrap()
        .batch_execute("DROP SCHEMA stay CASCADE")
        .await
        .unwrap();
    left_as_it_was(&a, &b, &tenancy, &s).await;

    // A migration run in progress (its lock held).
    let holder = a.pool().get().await.unwrap();
    holder
        .execute("SELECT pg_advisory_lock(x'74656e616e746d67'::bigint)", &[])
        .await
        .unwrap();
    let err = tenancy
        .move_to_shard(&s, &ShardName::new("b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ShardMove { reason, .. } if reason.contains("migration")),
        "{err:?}"
    );
    holder
        .execute(
            "SELECT pg_advisory_unlock(x'74656e616e746d67'::bigint)",
            &[],
        )
        .await
        .unwrap();
    left_as_it_was(&a, &b, &tenancy, &s).await;

    // And then it moves.
    assert!(
        tenancy
            .move_to_shard(&s, &ShardName::new("b"))
            .await
            .unwrap()
            .moved
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_primary_key_is_named_and_refused() {
    // The fixtures' `marker` has no primary key.
    let (a, b, tenancy) =
        two_logical(None, tenant_schemas::testing::fixtures::marker_and_notes()).await;
    let s = marked(&tenancy, "nokey", 2).await;
    let err = tenancy
        .move_to_shard(&s, &ShardName::new("b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ShardMove { reason, .. } if reason.contains("marker") && !reason.contains("notes")),
        "{err:?}"
    );
    left_as_it_was(&a, &b, &tenancy, &s).await;
    assert!(!schema_exists(&b, "nokey").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_without_logical_wal_is_refused() {
    // The shared cluster runs with the default wal_level (replica).
    let a = database().await;
    let b = database().await;
    let tenancy = Tenancy::builder(a.new_pool(4).unwrap())
        .shard("b", b.new_pool(4).unwrap())
        .migrations(migrations())
        .build()
        .await
        .unwrap();
    let s = marked(&tenancy, "walrep", 1).await;
    let err = tenancy
        .move_to_shard(&s, &ShardName::new("b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ShardMove { reason, .. } if reason.contains("wal_level")),
        "{err:?}"
    );
    assert!(err.to_string().contains("wal_level = logical"), "{err}");
    assert!(tenancy.registry().get(&s).await.unwrap().shard.is_default());
    assert!(!schema_exists(&b, "walrep").await);
    let conn = a.pool().get().await.unwrap();
    let left: i64 = conn
        .query_one(
            "SELECT (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_dead_move_are_removed_by_the_next_one() {
    let (a, b, tenancy) = two_logical(None, migrations()).await;
    let s = marked(&tenancy, "again", 4).await;
    // What a move that died after replicating leaves: the target schema with the mark, a
    // publication and slot on the source, a subscription on the target.
    let hash = {
        // The name prefix is FNV-1a of the schema name; found from a real move's objects
        // would need one to die, so the leftovers are made under the same prefix by hand.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in "again".bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("tsmove_{h:016x}_deadbeef")
    };
    let source = a.pool().get().await.unwrap();
    source
        .batch_execute(&format!(
            "CREATE PUBLICATION {hash} FOR TABLES IN SCHEMA again"
        ))
        .await
        .unwrap();
    source
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&hash],
        )
        .await
        .unwrap();
    let target = b.pool().get().await.unwrap();
    target
        .batch_execute(
            "CREATE SCHEMA again; COMMENT ON SCHEMA again IS 'tenant-schemas: a move in progress copies here'; \
             CREATE TABLE again.notes (id bigint)",
        )
        .await
        .unwrap();
    let conninfo = format!(
        "host={} port={} user=postgres dbname={}",
        source
            .query_one("SELECT current_setting('unix_socket_directories')", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
            .split(',')
            .next()
            .unwrap(),
        source
            .query_one("SELECT current_setting('port')", &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        a.name()
    );
    target
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION {hash} CONNECTION '{conninfo}' PUBLICATION {hash} \
             WITH (connect = false, slot_name = '{hash}')"
        ))
        .await
        .unwrap();
    // Running, as a dead process's subscription would be: its slot is in use.
    target
        .batch_execute(&format!("ALTER SUBSCRIPTION {hash} ENABLE"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !source
        .query_one(
            "SELECT coalesce((SELECT active FROM pg_replication_slots WHERE slot_name = $1), false)",
            &[&hash],
        )
        .await
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(Instant::now() < deadline, "the leftover subscription never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        replication_objects(&a).await.len(),
        2,
        "publication and slot left"
    );
    assert_eq!(replication_objects(&b).await.len(), 1, "subscription left");

    let report = tenancy
        .move_to_shard(&s, &ShardName::new("b"))
        .await
        .unwrap();
    assert!(report.moved);
    assert_eq!(replication_objects(&a).await, Vec::<String>::new());
    assert_eq!(replication_objects(&b).await, Vec::<String>::new());
    assert_eq!(notes_on(&b, &s).await.len(), 4);

    // A move that died after its switch: its publication and slot on the old database are
    // removed by the next call, even though the tenant is there already.
    source
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&hash],
        )
        .await
        .unwrap();
    source
        .batch_execute(&format!("CREATE PUBLICATION {hash}"))
        .await
        .unwrap();
    let report = tenancy
        .move_to_shard(&s, &ShardName::new("b"))
        .await
        .unwrap();
    assert!(!report.moved);
    assert_eq!(replication_objects(&a).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_given_up_half_way_leaves_nothing_behind() {
    let (a, b, tenancy) = two_logical(None, migrations()).await;
    let s = marked(&tenancy, "halfway", 1).await;
    // Enough rows that the copy is under way when the move is given up.
    a.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO halfway.notes (body) SELECT repeat('x', 200) FROM generate_series(1, 300000)",
        )
        .await
        .unwrap();
    let moving = {
        let (tenancy, s) = (tenancy.clone(), s.clone());
        tokio::spawn(async move { tenancy.move_to_shard(&s, &ShardName::new("b")).await })
    };
    // Until the subscription exists on the target, then give up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while replication_objects(&b).await.is_empty() {
        assert!(Instant::now() < deadline, "the move never subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    moving.abort();
    assert!(moving.await.unwrap_err().is_cancelled());
    // The cleanup runs in the background.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = (
            replication_objects(&a).await,
            replication_objects(&b).await,
            schema_exists(&b, "halfway").await,
        );
        if left == (vec![], vec![], false) {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    left_as_it_was(&a, &b, &tenancy, &s).await;
    // And the next move goes through.
    let report = tenancy
        .move_to_shard(&s, &ShardName::new("b"))
        .await
        .unwrap();
    eprintln!(
        "moved {} rows in {:?}, writes held {:?}",
        report.total_rows(),
        report.took,
        report.writes_held
    );
    assert_eq!(
        report
            .rows
            .iter()
            .find(|t| t.table == "notes")
            .unwrap()
            .rows,
        300_001
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialized_views_are_filled_and_unlogged_tables_refused() {
    let (_a, b, tenancy) = two_logical(
        None,
        migrations().with(
            "counts",
            "CREATE MATERIALIZED VIEW note_count AS SELECT count(*) AS n FROM notes",
        ),
    )
    .await;
    let s = marked(&tenancy, "viewed", 7).await;
    assert!(
        tenancy
            .move_to_shard(&s, &ShardName::new("b"))
            .await
            .unwrap()
            .moved
    );
    let n: i64 = b
        .pool()
        .get()
        .await
        .unwrap()
        .query_one("SELECT n FROM viewed.note_count", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 7, "the view is filled from the copied rows");

    let (a, b, tenancy) = two_logical(
        None,
        migrations().with("cache", "CREATE UNLOGGED TABLE cache (k text PRIMARY KEY)"),
    )
    .await;
    let s = marked(&tenancy, "fleeting", 1).await;
    let err = tenancy
        .move_to_shard(&s, &ShardName::new("b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ShardMove { reason, .. } if reason.contains("cache") && reason.contains("unlogged")),
        "{err:?}"
    );
    left_as_it_was(&a, &b, &tenancy, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_behind_the_migrations_is_refused() {
    let (a, b, old) = two_logical(None, migrations()).await;
    let s = marked(&old, "behind", 2).await;
    // This process's migrations are one ahead of the tenant.
    let newer = Tenancy::builder(a.new_pool(4).unwrap())
        .shard("b", b.new_pool(4).unwrap())
        .migrations(migrations().with("extra", "CREATE TABLE extra (id int PRIMARY KEY)"))
        .build()
        .await
        .unwrap();
    let err = newer
        .move_to_shard(&s, &ShardName::new("b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ShardMove { reason, .. } if reason.contains("migrate first")),
        "{err:?}"
    );
    left_as_it_was(&a, &b, &newer, &s).await;
    assert!(!schema_exists(&b, "behind").await);
}

/// Objects outside the tenant's schema that depend on it (a view in `public`, a foreign key
/// of a `public` table) could not be moved with it, and dropping the source schema would
/// destroy them: the move is refused before anything is made, naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_outside_dependents_is_not_moved() {
    let (a, b, tenancy) = two_logical(None, migrations()).await;
    let s = marked(&tenancy, "tied", 3).await;
    let outside = a.pool().get().await.unwrap();
    outside
        .batch_execute(
            "CREATE VIEW public.tied_notes AS SELECT * FROM tied.notes;
             CREATE TABLE public.tied_orders (note bigint REFERENCES tied.notes (id));
             INSERT INTO public.tied_orders SELECT id FROM tied.notes",
        )
        .await
        .unwrap();
    let err = tenancy
        .move_to_shard(&s, &ShardName::new("b"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, Error::OutsideDependents { dependents, .. } if dependents.len() == 2),
        "{err:?}"
    );
    assert!(
        text.contains("view public.tied_notes depends on table tied.notes")
            && text.contains("table constraint tied_orders_note_fkey on public.tied_orders")
            && text.contains("nothing was moved"),
        "{text}"
    );
    left_as_it_was(&a, &b, &tenancy, &s).await;
    assert!(!schema_exists(&b, "tied").await);
    let kept: i64 = outside
        .query_one(
            "SELECT (SELECT count(*) FROM public.tied_notes)
                  + (SELECT count(*) FROM pg_constraint WHERE conname = 'tied_orders_note_fkey')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 4, "the view (3 rows) and the foreign key are there");
    // Once they are gone, it moves.
    outside
        .batch_execute("DROP VIEW public.tied_notes; DROP TABLE public.tied_orders")
        .await
        .unwrap();
    assert!(
        tenancy
            .move_to_shard(&s, &ShardName::new("b"))
            .await
            .unwrap()
            .moved
    );
}

/// A view on the tenant's table committed while the move runs (after its first look found
/// nothing): the cut-over looks again once it holds the source's tables, and gives the move
/// up instead of dropping the view with the source schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_committed_during_the_move_gives_it_up() {
    let (a, b, tenancy) = two_logical(None, migrations()).await;
    let s = marked(&tenancy, "late", 3).await;
    let mut planter = a.pool().get().await.unwrap();
    let tx = planter.transaction().await.unwrap();
    tx.batch_execute("CREATE VIEW public.late_notes AS SELECT * FROM late.notes")
        .await
        .unwrap();
    let moving = {
        let (tenancy, s) = (tenancy.clone(), s.clone());
        tokio::spawn(async move { tenancy.move_to_shard(&s, &ShardName::new("b")).await })
    };
    // Until the move waits for the view's transaction (the replication slot's snapshot
    // waits for running transactions; the cut-over for the table's lock).
    let watcher = a.pool().get().await.unwrap();
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE NOT granted
                 AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 || moving.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tx.commit().await.unwrap();
    let err = moving.await.unwrap().unwrap_err();
    assert!(
        err.to_string()
            .contains("view public.late_notes depends on table late.notes"),
        "{err:?}"
    );
    left_as_it_was(&a, &b, &tenancy, &s).await;
    assert!(!schema_exists(&b, "late").await);
    let rows: i64 = watcher
        .query_one("SELECT count(*) FROM public.late_notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3);
}
