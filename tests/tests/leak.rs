//! The leak test: many tenants, concurrent requests, faults; zero wrong-tenant answers.
//!
//! Three deployments: direct to PostgreSQL in session mode, through a real PgBouncer
//! (transaction pooling) in transaction mode, and (a test of its own, 200 tenants) through a
//! Citus coordinator with the tenants as distributed schemas. Requests pick a random
//! tenant and read its marker row and note count, through a `ConnectionScope` and (one in
//! four) through the axum adapter over HTTP. Meanwhile: 5% of requests are cancelled
//! mid-flight, random backends are killed with `pg_terminate_backend`, some requests hit a
//! statement timeout, and a rolling migration adds a column in random tenants (so cached
//! plans of `SELECT *` change result type). Misuse on top: 3% of requests first send SQL that
//! changes the session through their scope (`SET search_path` to another tenant, `RESET`,
//! `DISCARD ALL`, `set_config`), half of the direct requests go through a second router over
//! the same pool, and tenants are deleted mid-run while `public` holds a `marker` and `notes`
//! of its own, so a fall-through would show as a wrong answer.
//!
//! CI size by default; `TENANT_SCHEMAS_LEAK_FULL=1` runs the full size (1,000 tenants,
//! 100,000 requests per deployment):
//! `TENANT_SCHEMAS_LEAK_FULL=1 cargo test --release -p tenant-schemas-tests --test leak -- --nocapture`

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::{pool, TenantClient, TestCitusCluster, TestCluster, TestPgBouncer};
use tenant_schemas::{scope, SchemaName, SchemaRouter, SearchPathMode, Tenancy, Tenant};
use tenant_schemas_axum::{with_tenancy, TenantDb, TenantError, TenantLayer};

struct Size {
    tenants: usize,
    requests: u64,
}

fn size() -> Size {
    if std::env::var("TENANT_SCHEMAS_LEAK_FULL").is_ok_and(|v| v == "1") {
        Size {
            tenants: 1000,
            requests: 100_000,
        }
    } else {
        Size {
            tenants: 1000,
            requests: 20_000,
        }
    }
}

const CONCURRENCY: u64 = 64;
const POOL: usize = 16;

/// Tenant `i` has a marker row with its schema name and `i % 7` notes.
fn expected_notes(i: usize) -> i64 {
    (i % 7) as i64
}

async fn create_tenants(tenancy: &Tenancy, n: usize) -> Vec<SchemaName> {
    let started = Instant::now();
    let names: Vec<SchemaName> = (0..n).map(|i| schema(&format!("leak_{i}"))).collect();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (tenancy, names, next) = (tenancy.clone(), names.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(s) = names.get(i) else { break };
                let domain = host(&format!("leak-{i}.test"));
                tenancy
                    .create_tenant(tenant_schemas::NewTenant::new(s.clone()).domain(domain))
                    .await
                    .unwrap();
                let conn = tenancy.router().connection_for_schema(s).await.unwrap();
                conn.batch_execute(&format!(
                    "INSERT INTO marker VALUES ('{s}'); \
                     INSERT INTO notes (body) SELECT 'x' FROM generate_series(1, {})",
                    expected_notes(i)
                ))
                .await
                .unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    println!(
        "created {n} tenants in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    names
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    ok: AtomicU64,
    wrong_tenant: AtomicU64,
    cancelled: AtomicU64,
    http: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn error(&self, kind: impl Into<String>) {
        *self.errors.lock().unwrap().entry(kind.into()).or_default() += 1;
    }
}

enum Answer {
    Checked { marker: String, notes: i64 },
    Failed(String),
}

/// One request through a ConnectionScope: marker and count, with `SELECT *` so a column
/// added mid-run changes the cached plan's result type.
async fn direct(
    router: &SchemaRouter,
    tenant: Tenant,
    timeout_some: bool,
    misuse: Option<String>,
) -> Answer {
    let result = scope::run(tenant, async {
        let mut conn = router.connection().await.map_err(|e| classify(&e))?;
        if let Some(sql) = misuse {
            // Whatever it does, the statements below must still see this tenant.
            let _ = conn.batch_execute(&sql).await;
        }
        if timeout_some {
            let tx = conn.transaction().await.map_err(|e| classify(&e))?;
            let timed = async {
                tx.batch_execute("SET LOCAL statement_timeout = '5ms'")
                    .await?;
                tx.query("SELECT pg_sleep(0.05)", &[]).await
            };
            return match timed.await {
                Err(e)
                    if e.as_db_error().map(|d| d.code())
                        == Some(
                            &tenant_schemas::tokio_postgres::error::SqlState::QUERY_CANCELED,
                        ) =>
                {
                    Err("statement timeout".to_owned())
                }
                Err(e)
                    if e.kind() == tenant_schemas::ErrorKind::Unavailable
                        || e.as_db_error()
                            .is_some_and(|d| d.code().code().starts_with("57P")) =>
                {
                    Err("Unavailable".to_owned())
                }
                Err(e) => Err(format!("timeout request: {e}")),
                Ok(_) => Err("statement timeout not hit".to_owned()),
            };
        }
        let marker = conn
            .query_one("SELECT * FROM marker", &[])
            .await
            .map_err(|e| classify(&e))?;
        let notes = conn
            .query_one("SELECT count(*) FROM notes", &[])
            .await
            .map_err(|e| classify(&e))?;
        Ok::<_, String>((marker.get::<_, String>(0), notes.get::<_, i64>(0)))
    })
    .await;
    match result {
        Ok((marker, notes)) => Answer::Checked { marker, notes },
        Err(kind) => Answer::Failed(kind),
    }
}

fn classify(e: &tenant_schemas::Error) -> String {
    let text = e.to_string();
    if text.contains("cached plan must not change result type") {
        return "STALE PLAN".into();
    }
    if text.contains("statement timeout") {
        return "statement timeout".into();
    }
    format!("{:?}", e.kind())
}

async fn over_http(addr: SocketAddr, i: usize) -> Answer {
    match TenantClient::new(addr, format!("leak-{i}.test"))
        .get("/check")
        .await
    {
        Ok(r) if r.status == 200 => {
            let text = r.text();
            let (marker, notes) = text.split_once(' ').unwrap_or(("", ""));
            Answer::Checked {
                marker: marker.to_owned(),
                notes: notes.trim().parse().unwrap_or(-1),
            }
        }
        Ok(r) => Answer::Failed(format!("HTTP {}", r.status)),
        Err(e) => Answer::Failed(format!("HTTP client: {}", e.kind())),
    }
}

async fn check(db: TenantDb) -> Result<String, TenantError> {
    let marker = db.query_one("SELECT * FROM marker", &[]).await?;
    let notes = db.query_one("SELECT count(*) FROM notes", &[]).await?;
    Ok(format!(
        "{} {}",
        marker.get::<_, String>(0),
        notes.get::<_, i64>(0)
    ))
}

/// Kills random client backends of `dbname` every 300 ms until `stop`.
async fn backend_killer(
    cluster: &'static TestCluster,
    dbname: String,
    stop: Arc<AtomicBool>,
) -> u64 {
    let admin = pool(cluster.config("postgres"), 1).unwrap();
    let mut killed = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Ok(conn) = admin.get().await {
            if let Ok(rows) = conn
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()
                     ORDER BY random() LIMIT 2",
                    &[&dbname],
                )
                .await
            {
                killed += rows.len() as u64;
            }
        }
    }
    killed
}

/// Adds a column to the marker table of random tenants until `stop`: a rolling migration.
async fn rolling_migration(
    router: SchemaRouter,
    schemas: Arc<Vec<SchemaName>>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut rng = StdRng::seed_from_u64(99);
    let mut altered = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = &schemas[rng.random_range(0..schemas.len())];
        if let Ok(conn) = router.connection_for_schema(s).await {
            if conn
                .batch_execute("ALTER TABLE marker ADD COLUMN IF NOT EXISTS extra int DEFAULT 1")
                .await
                .is_ok()
            {
                altered += 1;
            }
        }
    }
    altered
}

/// The SQL a careless handler sends through its scope, pointing at tenant `other`.
fn misuse_sql(rng: &mut StdRng, other: &SchemaName) -> String {
    match rng.random_range(0..5) {
        0 => format!("SET search_path TO {other}, public"),
        1 => "RESET search_path".into(),
        2 => "RESET ALL".into(),
        3 => "DISCARD ALL".into(),
        _ => format!("SELECT set_config('search_path', '{other}', false)"),
    }
}

/// Deletes the tenants `doomed` one by one, every 100 ms, while requests run.
async fn deleter(tenancy: Tenancy, doomed: Vec<SchemaName>, deleted: Arc<AtomicU64>) {
    for s in doomed {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The backend killer may kill the deleting connection: try again.
        for attempt in 1.. {
            match tenancy
                .delete_tenant(&s, tenant_schemas::DropSchema::Yes)
                .await
            {
                Ok(_) => break,
                Err(e) if attempt < 5 => eprintln!("deleting {s} (attempt {attempt}): {e}"),
                Err(e) => panic!("deleting {s}: {e}"),
            }
        }
        deleted.fetch_add(1, Ordering::Relaxed);
    }
}

async fn run_deployment(
    label: &str,
    cluster: &'static TestCluster,
    dbname: &str,
    tenancy: Tenancy,
    schemas: Arc<Vec<SchemaName>>,
    doomed: Vec<SchemaName>,
    requests: u64,
) {
    let router = tenancy.router().clone();
    // A second router over the same pool, as a background worker would build it.
    let second = SchemaRouter::builder(router.pool().clone())
        .mode(router.mode())
        .build();
    let deleted = Arc::new(AtomicU64::new(0));
    let deletions = tokio::spawn(deleter(tenancy.clone(), doomed, deleted.clone()));
    let app = with_tenancy(
        Router::new().route("/check", get(check)),
        TenantLayer::new(tenancy.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let stop = Arc::new(AtomicBool::new(false));
    let killer = tokio::spawn(backend_killer(cluster, dbname.to_owned(), stop.clone()));
    let migrator = tokio::spawn(rolling_migration(
        router.clone(),
        schemas.clone(),
        stop.clone(),
    ));
    let tally = Arc::new(Tally::default());
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let (router, second, schemas, tally, issued) = (
            router.clone(),
            second.clone(),
            schemas.clone(),
            tally.clone(),
            issued.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(w);
            while issued.fetch_add(1, Ordering::Relaxed) < requests {
                let i = rng.random_range(0..schemas.len());
                let tenant = Tenant::new(schemas[i].clone());
                let via_http = rng.random_bool(0.25);
                let cancel = rng.random_bool(0.05);
                let timeout_some = !via_http && rng.random_bool(0.01);
                let other = schemas[rng.random_range(0..schemas.len())].clone();
                let misuse = rng.random_bool(0.03).then(|| misuse_sql(&mut rng, &other));
                let router = if rng.random_bool(0.5) {
                    &router
                } else {
                    &second
                };
                let work = async {
                    if via_http {
                        over_http(addr, i).await
                    } else {
                        direct(router, tenant, timeout_some, misuse).await
                    }
                };
                tally.requests.fetch_add(1, Ordering::Relaxed);
                if via_http {
                    tally.http.fetch_add(1, Ordering::Relaxed);
                }
                let answer = if cancel {
                    let limit = Duration::from_micros(rng.random_range(0..2000));
                    match tokio::time::timeout(limit, work).await {
                        Ok(answer) => answer,
                        Err(_) => {
                            tally.cancelled.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                } else {
                    work.await
                };
                match answer {
                    Answer::Checked { marker, notes } => {
                        if marker != schemas[i].as_str() || notes != expected_notes(i) {
                            tally.wrong_tenant.fetch_add(1, Ordering::Relaxed);
                            eprintln!("WRONG TENANT: asked {} got {marker} / {notes}", schemas[i]);
                        } else {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Answer::Failed(kind) => tally.error(kind),
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let killed = killer.await.unwrap();
    deletions.await.unwrap();
    let altered = migrator.await.unwrap();
    server.abort();
    let errors = tally.errors.lock().unwrap().clone();
    let n = tally.requests.load(Ordering::Relaxed);
    println!(
        "[{label}] requests {n} (http {}) in {:.1} s ({:.0}/s): ok {}, WRONG TENANT {}, cancelled {}, \
         errors {errors:?}; backends killed {killed}, tenants migrated mid-run {altered}, \
         deleted mid-run {}; router {:?}",
        tally.http.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        tally.ok.load(Ordering::Relaxed),
        tally.wrong_tenant.load(Ordering::Relaxed),
        tally.cancelled.load(Ordering::Relaxed),
        deleted.load(Ordering::Relaxed),
        router.stats(),
    );
    assert_eq!(
        tally.wrong_tenant.load(Ordering::Relaxed),
        0,
        "[{label}] wrong-tenant answers"
    );
    assert!(n >= requests, "[{label}] ran {n} requests");
    assert!(
        !errors.contains_key("STALE PLAN"),
        "[{label}] cached plans failed requests: {errors:?}"
    );
    assert!(
        tally.cancelled.load(Ordering::Relaxed) > 0,
        "[{label}] nothing was cancelled"
    );
    assert!(killed > 0, "[{label}] no backend was killed");
    assert!(
        errors.get("statement timeout").copied().unwrap_or(0) > 0,
        "[{label}] no statement timed out: {errors:?}"
    );
    assert!(
        tally.ok.load(Ordering::Relaxed) > n / 2,
        "[{label}] too few successful requests"
    );
}

/// `size.tenants` tenants in `db`, and `public` tables of the same names that a
/// fall-through to `public` would read.
async fn tenants_over_public(
    db: &tenant_schemas::testing::TestDatabase,
    size: &Size,
) -> Arc<Vec<SchemaName>> {
    let setup = Tenancy::builder(db.new_pool(8).unwrap())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let schemas = Arc::new(create_tenants(&setup, size.tenants).await);
    // What a fall-through to public would read.
    setup
        .router()
        .public()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.marker (schema_name text NOT NULL);
             INSERT INTO public.marker VALUES ('PUBLIC');
             CREATE TABLE public.notes (id bigserial, body text);",
        )
        .await
        .unwrap();
    schemas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_ever_sees_another_tenant() {
    let size = size();
    let cluster = TestCluster::shared().unwrap();
    let db = cluster.create_database().await.unwrap();
    let schemas = tenants_over_public(&db, &size).await;
    let n = schemas.len();
    let doomed = |range: std::ops::Range<usize>| schemas[range].to_vec();

    let direct = Tenancy::builder(pool(db.config().clone(), POOL).unwrap())
        .build()
        .await
        .unwrap();
    run_deployment(
        "session, direct",
        cluster,
        db.name(),
        direct,
        schemas.clone(),
        doomed(n - 40..n - 20),
        size.requests,
    )
    .await;

    let bouncer = TestPgBouncer::start(cluster, POOL).unwrap();
    let bounced = Tenancy::builder(pool(bouncer.config(db.name()), POOL).unwrap())
        .search_path_mode(SearchPathMode::Transaction)
        .build()
        .await
        .unwrap();
    run_deployment(
        "transaction, pgbouncer",
        cluster,
        db.name(),
        bounced,
        schemas.clone(),
        doomed(n - 20..n),
        size.requests,
    )
    .await;
}

/// The PgBouncer deployment with named statements that PgBouncer keeps
/// (`pooler_prepared_statements`, `max_prepared_statements = 200`, its default since 1.24):
/// the same load, backend kills, rolling migration, deletions and misuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_ever_sees_another_tenant_with_named_statements_through_pgbouncer() {
    let size = size();
    let cluster = TestCluster::shared().unwrap();
    let db = cluster.create_database().await.unwrap();
    let schemas = tenants_over_public(&db, &size).await;
    let n = schemas.len();
    let bouncer = TestPgBouncer::builder(cluster)
        .pool_size(POOL)
        .max_prepared_statements(200)
        .start()
        .unwrap();
    let bounced = Tenancy::builder(pool(bouncer.config(db.name()), POOL).unwrap())
        .search_path_mode(SearchPathMode::Transaction)
        .pooler_prepared_statements(true)
        .build()
        .await
        .unwrap();
    let router = bounced.router().clone();
    run_deployment(
        "transaction, pgbouncer, named statements",
        cluster,
        db.name(),
        bounced,
        schemas.clone(),
        schemas[n - 20..n].to_vec(),
        size.requests,
    )
    .await;
    let stats = router.stats();
    if bouncer.keeps_prepared_statements() {
        assert!(stats.named_statements > 0, "{stats:?}");
        assert_eq!(stats.pooler_probes_unsupported, 0, "{stats:?}");
    } else {
        assert_eq!(stats.named_statements, 0, "{stats:?}");
    }
}

/// The same through a Citus coordinator, tenants as distributed schemas spread over two
/// workers: backends on the coordinator killed, tenants migrated and deleted mid-run.
/// Fewer tenants than the direct run (each is a distributed schema: creation costs ~35 ms),
/// the same number of requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_ever_sees_another_tenant_through_a_citus_coordinator() {
    if TestCitusCluster::skip_requested() {
        eprintln!("Citus leak test skipped (TENANT_SCHEMAS_SKIP_CITUS is set)");
        return;
    }
    let size = size();
    let citus = TestCitusCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let db = citus.create_database().await.unwrap();
    let setup = Tenancy::builder(db.new_pool(8).unwrap())
        .migrations(marker_and_notes())
        .citus(true)
        .build()
        .await
        .unwrap();
    let schemas = Arc::new(create_tenants(&setup, 200).await);
    setup
        .router()
        .public()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.marker (schema_name text NOT NULL);
             INSERT INTO public.marker VALUES ('PUBLIC');
             CREATE TABLE public.notes (id bigserial, body text);",
        )
        .await
        .unwrap();
    let n = schemas.len();
    let tenancy = Tenancy::builder(pool(citus.coordinator_config(db.name()), POOL).unwrap())
        .citus(true)
        .build()
        .await
        .unwrap();
    run_deployment(
        "session, citus coordinator",
        citus.coordinator(),
        db.name(),
        tenancy,
        schemas.clone(),
        schemas[n - 20..n].to_vec(),
        size.requests,
    )
    .await;
}
