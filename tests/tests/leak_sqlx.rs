//! The leak test for `tenant-schemas-sqlx`, at CI size: 50 tenants, 4,000 requests from 32
//! tasks over a pool of 8, each reading a random tenant's marker through a `SqlxConnection`
//! (three in four) or a `SqlxTransaction`; 5% cancelled mid-flight, 3% first sending
//! session-changing SQL through their connection (`SET search_path` to another tenant,
//! `RESET ALL`, `DISCARD ALL`, `set_config`, a `BEGIN` left open, a temporary `marker`), and
//! random backends killed every 200 ms, while `public` holds a `marker` of its own. Zero
//! wrong-tenant answers. A second run deletes tenants and changes their states mid-run
//! (see its doc comment).

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPoolOptions;
use sqlx::Executor;
use tenant_schemas::testing::fixtures::marked_over_public;
use tenant_schemas::{SchemaName, SearchPathMode};
use tenant_schemas_sqlx::{connect_options, SqlxRouter};

const REQUESTS: u64 = 4000;

fn misuse(rng: &mut StdRng, other: &SchemaName) -> String {
    match rng.random_range(0..7) {
        0 => format!("SET search_path TO {}, public", other.quoted()),
        1 => "RESET ALL".into(),
        2 => "DISCARD ALL".into(),
        3 => format!(
            "SELECT set_config('search_path', '{}', false)",
            other.quoted()
        ),
        4 => "BEGIN".into(),
        5 => "CREATE TEMP TABLE IF NOT EXISTS marker AS SELECT 'TEMP'::text AS schema_name".into(),
        _ => "SET search_path TO public".into(),
    }
}

async fn read(
    router: &SqlxRouter,
    schema: &SchemaName,
    in_tx: bool,
    misuse: Option<String>,
) -> Option<String> {
    if in_tx {
        let mut tx = router.begin_for(schema).await.ok()?;
        let (m,): (String,) = sqlx::query_as("SELECT schema_name FROM marker")
            .fetch_one(&mut *tx)
            .await
            .ok()?;
        tx.commit().await.ok()?;
        return Some(m);
    }
    let mut conn = router.connection_for_schema(schema).await.ok()?;
    if let Some(sql) = misuse {
        // What it does to this connection is its own business; the next checkout must not see it.
        let _ = conn.execute(sql.as_str()).await;
        return None;
    }
    let (m,): (String,) = sqlx::query_as("SELECT schema_name FROM marker")
        .fetch_one(&mut *conn)
        .await
        .ok()?;
    Some(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sqlx_request_ever_sees_another_tenant() {
    leak_run("lk", false).await;
}

/// The same with `shared_statements(true)`: statements kept across schemas, analysed again
/// by the server under each tenant's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sqlx_request_sees_another_tenant_with_shared_statements() {
    leak_run("lks", true).await;
}

async fn leak_run(prefix: &str, shared_statements: bool) {
    let (db, _tenancy, schemas, admin) =
        marked_over_public(prefix, 50, 4, SearchPathMode::Session).await;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(connect_options(db.config()))
        .await
        .unwrap();
    let router = SqlxRouter::builder(pool)
        .shared_statements(shared_statements)
        .build();
    let schemas = Arc::new(schemas);
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (stop, dbname) = (stop.clone(), db.name().to_owned());
        tokio::spawn(async move {
            let mut killed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Ok(conn) = admin.get().await {
                    if let Ok(rows) = conn
                        .query(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                             WHERE datname = $1 AND backend_type = 'client backend'
                               AND pid <> pg_backend_pid()
                             ORDER BY random() LIMIT 1",
                            &[&dbname],
                        )
                        .await
                    {
                        killed += rows.len() as u64;
                    }
                }
            }
            killed
        })
    };
    let (issued, ok, wrong, cancelled) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = Vec::new();
    for w in 0..32u64 {
        let (router, schemas, issued, ok, wrong, cancelled) = (
            router.clone(),
            schemas.clone(),
            issued.clone(),
            ok.clone(),
            wrong.clone(),
            cancelled.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(w);
            while issued.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                let schema = &schemas[rng.random_range(0..schemas.len())];
                let other = &schemas[rng.random_range(0..schemas.len())];
                let in_tx = rng.random_bool(0.25);
                let bad = (!in_tx && rng.random_bool(0.03)).then(|| misuse(&mut rng, other));
                let work = read(&router, schema, in_tx, bad);
                let answer = if rng.random_bool(0.05) {
                    let limit = Duration::from_micros(rng.random_range(0..2000));
                    match tokio::time::timeout(limit, work).await {
                        Ok(a) => a,
                        Err(_) => {
                            cancelled.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                } else {
                    work.await
                };
                match answer {
                    Some(m) if m == schema.as_str() => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(m) => {
                        eprintln!("WRONG TENANT: asked {schema}, got {m}");
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {}
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let killed = killer.await.unwrap();
    let (ok, wrong, cancelled) = (
        ok.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed),
        cancelled.load(Ordering::Relaxed),
    );
    println!(
        "sqlx leak (shared statements: {shared_statements}): ok {ok}, WRONG TENANT {wrong}, cancelled {cancelled}, backends killed {killed}; {:?}",
        router.stats()
    );
    assert_eq!(wrong, 0, "wrong-tenant answers");
    assert!(cancelled > 0, "nothing was cancelled");
    assert!(ok > REQUESTS / 2, "too few successful requests: {ok}");
    assert!(
        router.stats().discarded > 0,
        "misuse left nothing to discard"
    );
}

/// What happened to a tenant mid-run, and when the library said it was done.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Change {
    Deleted,
    ReadOnly,
    NotServed,
}

/// Counters of the churn test; each request adds to one or two.
#[derive(Default)]
struct Churn {
    issued: AtomicU64,
    ok_reads: AtomicU64,
    wrong: AtomicU64,
    refused: AtomicU64,
    /// Reads or writes a changed tenant got from a checkout started after the change.
    served_after_change: AtomicU64,
    /// Writes a read-only tenant committed from a checkout started after it became read-only.
    read_only_writes: AtomicU64,
    held_across_change: AtomicU64,
}

/// One request of the churn test: a read (sometimes with a write, a transaction or DDL) of
/// `schemas[i]`, through the schema's name or a `Tenant` value made before the run (which
/// says `Active` whatever the registry says now), the connection held for a while between
/// checkout and statement. Returns whether a write committed.
async fn churn_request(
    router: &SqlxRouter,
    schema: &SchemaName,
    changed: &std::sync::OnceLock<(Change, std::time::Instant)>,
    rng: &mut StdRng,
    churn: &Churn,
) -> bool {
    let start = std::time::Instant::now();
    let changed_before = || {
        changed
            .get()
            .filter(|(_, at)| *at <= start)
            .map(|(c, _)| *c)
    };
    let stale = tenant_schemas::Tenant::new(schema.clone());
    let hold = if rng.random_bool(0.1) {
        Duration::from_millis(rng.random_range(0..400))
    } else {
        Duration::from_millis(rng.random_range(0..20))
    };
    let write = rng.random_bool(0.3);
    let ddl = rng.random_bool(0.02);
    let by_value = rng.random_bool(0.5);
    let outcome: Result<(String, bool), ()> = async {
        if rng.random_bool(0.25) {
            let mut tx = if by_value {
                router.begin_for_tenant(&stale).await
            } else {
                router.begin_for(schema).await
            }
            .map_err(|_| ())?;
            let was = changed.get().map(|(c, _)| *c);
            tokio::time::sleep(hold).await;
            if changed.get().map(|(c, _)| *c) != was {
                churn.held_across_change.fetch_add(1, Ordering::Relaxed);
            }
            let (m,): (String,) = sqlx::query_as("SELECT schema_name FROM marker")
                .fetch_one(&mut *tx)
                .await
                .map_err(|_| ())?;
            if write {
                sqlx::query("INSERT INTO notes (body) VALUES ($1)")
                    .bind(schema.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(|_| ())?;
            }
            tx.commit().await.map_err(|_| ())?;
            return Ok((m, write));
        }
        let mut conn = if by_value {
            router.connection_for_tenant(&stale).await
        } else {
            router.connection_for_schema(schema).await
        }
        .map_err(|_| ())?;
        let was = changed.get().map(|(c, _)| *c);
        tokio::time::sleep(hold).await;
        if changed.get().map(|(c, _)| *c) != was {
            churn.held_across_change.fetch_add(1, Ordering::Relaxed);
        }
        if ddl {
            // Unqualified: lands in the tenant's schema, or nowhere; never in `public`.
            let _ = conn
                .execute("CREATE TABLE IF NOT EXISTS stray (x int)")
                .await;
        }
        let mut wrote = false;
        if write {
            wrote = sqlx::query("INSERT INTO notes (body) VALUES ($1)")
                .bind(schema.as_str())
                .execute(&mut *conn)
                .await
                .is_ok();
        }
        let (m,): (String,) = sqlx::query_as("SELECT schema_name FROM marker")
            .fetch_one(&mut *conn)
            .await
            .map_err(|_| ())?;
        Ok((m, wrote))
    }
    .await;
    let after = changed_before();
    match outcome {
        Err(()) => {
            churn.refused.fetch_add(1, Ordering::Relaxed);
            false
        }
        Ok((m, wrote)) => {
            if m != schema.as_str() {
                eprintln!("WRONG TENANT: asked {schema}, got {m}");
                churn.wrong.fetch_add(1, Ordering::Relaxed);
            } else {
                churn.ok_reads.fetch_add(1, Ordering::Relaxed);
            }
            match after {
                Some(Change::ReadOnly) if wrote => {
                    eprintln!("READ-ONLY WRITE: {schema}");
                    churn.read_only_writes.fetch_add(1, Ordering::Relaxed);
                }
                Some(Change::Deleted | Change::NotServed) => {
                    eprintln!("SERVED AFTER CHANGE: {schema} ({after:?})");
                    churn.served_after_change.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            wrote
        }
    }
}

/// The leak test with the registry moving under it: 40 tenants read (and written, and sent
/// unqualified DDL) by 16 tasks through a `SqlxRouter` with the registry's states, while 8
/// tenants are deleted, 8 become read-only and 8 are put in maintenance, suspended or
/// archived, one of each every 100 ms; connections are held up to 400 ms across the changes
/// (the deletion's grace is 200 ms, so some are cut off). Half the requests name the tenant
/// by a `Tenant` value made before the run, which still says `Active`. Zero wrong-tenant
/// answers, zero rows or tables in `public`, zero writes into read-only tenants and zero
/// answers for deleted or unserved tenants from checkouts made after the change; every
/// write the client saw commit is in its tenant's table, and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sqlx_request_crosses_tenants_while_tenants_are_deleted_and_change_state() {
    use std::sync::OnceLock;
    use tenant_schemas::testing::fixtures::{
        database, marked_tenants, marker_and_notes, plant_public_marker,
    };
    use tenant_schemas::{DropSchema, Tenancy, TenantStatus};

    const N: usize = 40;
    const MIN_REQUESTS: u64 = 2500;
    let db = database().await;
    let admin = db.new_pool(4).unwrap();
    let tenancy = Tenancy::builder(admin.clone())
        .migrations(marker_and_notes())
        .held_connection_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let schemas = Arc::new(marked_tenants(&tenancy, "ch", N).await);
    plant_public_marker(&admin).await;
    admin
        .get()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE public.notes (id bigserial PRIMARY KEY, body text NOT NULL)")
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(connect_options(db.config()))
        .await
        .unwrap();
    let router = SqlxRouter::builder(pool)
        .tenant_states(tenancy.tenant_states())
        .build();
    // Tenants 0..8 are deleted, 8..16 become read-only, 16..24 stop being served.
    let changes: Arc<Vec<OnceLock<(Change, std::time::Instant)>>> =
        Arc::new((0..N).map(|_| OnceLock::new()).collect());
    let committed: Arc<Vec<AtomicU64>> = Arc::new((0..N).map(|_| AtomicU64::new(0)).collect());
    let churn = Arc::new(Churn::default());
    let chaos_done = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (tenancy, schemas, changes, done) = (
            tenancy.clone(),
            schemas.clone(),
            changes.clone(),
            chaos_done.clone(),
        );
        tokio::spawn(async move {
            let unserved = [
                TenantStatus::Maintenance,
                TenantStatus::Suspended,
                TenantStatus::Archived,
            ];
            for i in 0..8 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tenancy
                    .delete_tenant(&schemas[i], DropSchema::Yes)
                    .await
                    .unwrap();
                changes[i]
                    .set((Change::Deleted, std::time::Instant::now()))
                    .unwrap();
                tenancy
                    .set_status(&schemas[8 + i], TenantStatus::ReadOnly)
                    .await
                    .unwrap();
                changes[8 + i]
                    .set((Change::ReadOnly, std::time::Instant::now()))
                    .unwrap();
                tenancy
                    .set_status(&schemas[16 + i], unserved[i % 3])
                    .await
                    .unwrap();
                changes[16 + i]
                    .set((Change::NotServed, std::time::Instant::now()))
                    .unwrap();
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let (router, schemas, changes, committed, churn, done) = (
            router.clone(),
            schemas.clone(),
            changes.clone(),
            committed.clone(),
            churn.clone(),
            chaos_done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(1000 + w);
            while churn.issued.fetch_add(1, Ordering::Relaxed) < MIN_REQUESTS
                || !done.load(Ordering::Relaxed)
            {
                let i = rng.random_range(0..N);
                if churn_request(&router, &schemas[i], &changes[i], &mut rng, &churn).await {
                    committed[i].fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    chaos.await.unwrap();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "sqlx churn: issued {}, ok {}, refused {}, WRONG TENANT {}, SERVED AFTER CHANGE {}, \
         READ-ONLY WRITES {}, held across a change {}; {:?}",
        load(&churn.issued),
        load(&churn.ok_reads),
        load(&churn.refused),
        load(&churn.wrong),
        load(&churn.served_after_change),
        load(&churn.read_only_writes),
        load(&churn.held_across_change),
        router.stats()
    );
    assert_eq!(load(&churn.wrong), 0, "wrong-tenant answers");
    assert_eq!(
        load(&churn.served_after_change),
        0,
        "answers for deleted or unserved tenants"
    );
    assert_eq!(
        load(&churn.read_only_writes),
        0,
        "writes into read-only tenants"
    );
    let client = admin.get().await.unwrap();
    let public_rows: i64 = client
        .query_one("SELECT count(*) FROM public.notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(public_rows, 0, "rows written into public");
    let stray: bool = client
        .query_one("SELECT to_regclass('public.stray') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!stray, "an unqualified CREATE TABLE landed in public");
    // Every surviving tenant holds exactly the writes its clients saw commit, and only its own.
    for (i, schema) in schemas.iter().enumerate().skip(8) {
        // `marked_tenants` wrote `i` notes with the body 'x'.
        let sql = format!(
            "SELECT count(*) FILTER (WHERE body = $1), count(*) FILTER (WHERE body NOT IN ($1, 'x'))
             FROM {}.notes",
            schema.quoted()
        );
        let row = client.query_one(&sql, &[&schema.as_str()]).await.unwrap();
        let (own, foreign): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(
            own as u64,
            load(&committed[i]),
            "{schema}: rows in its table vs. writes its clients saw commit"
        );
        assert_eq!(foreign, 0, "{schema}: another tenant's rows");
    }
    // The run did what it claims: refusals happened, and most requests were served.
    assert!(load(&churn.refused) > 0, "nothing was refused");
    assert!(
        load(&churn.ok_reads) > MIN_REQUESTS / 3,
        "too few answers: {}",
        load(&churn.ok_reads)
    );
}
