//! The noisy neighbour: one tenant floods slow queries (`pg_sleep`) while 99 others run the
//! primary-key SELECT of `load`, all through one `Tenancy`'s router over one pool of 16.
//! Each row is one run; the quiet tenants' p99 is compared with their p99 in the first run,
//! without the flood, in the same process:
//!
//! 1. no flood (the quiet tenants' own baseline);
//! 2. the flood, no limits (first come, first served: the flood takes the pool);
//! 3. the flood, with `TenantLimits::max_connections(4)` (the flooding tenant holds at most
//!    four connections and its backlog waits outside the pool's queue);
//! 4. no flood, with the same limits (what the limits cost the quiet tenants).
//!
//! `cargo run --release -p tenant-schemas-benches --bin noisy -- --secs 5`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tenant_schemas::testing::TestCluster;
use tenant_schemas::{Error, SchemaName, Tenancy, TenantLimits, TenantMigrations};
use tenant_schemas_benches::{
    items_table, items_tenancy, make_pool, micros, on_tasks, stats, RunLength, ROWS, SQL,
};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    run: RunLength,
    /// Tasks of the flooding tenant.
    #[arg(long, default_value_t = 32)]
    flood_tasks: usize,
    /// How long each of the flood's queries sleeps, in milliseconds.
    #[arg(long, default_value_t = 50)]
    flood_ms: u64,
    /// The connection limit of the third and fourth runs.
    #[arg(long, default_value_t = 4)]
    limit: u32,
}

/// What one run measured.
struct Run {
    quiet: Vec<Duration>,
    flood_ops: u64,
    flood_busy: u64,
}

/// The quiet tenants (`schemas[1..]`) on `tasks` tasks, and with `flood` the first tenant on
/// `flood_tasks` tasks sleeping `flood_ms` per query, for `length`.
async fn run(
    tenancy: &Tenancy,
    schemas: &Arc<Vec<SchemaName>>,
    args: &Args,
    flood: bool,
    length: Duration,
) -> Run {
    let started = Instant::now();
    let (flood_ops, flood_busy) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flooding = flood.then(|| {
        let sql = format!("SELECT pg_sleep({})", args.flood_ms as f64 / 1000.0);
        let noisy = schemas[0].clone();
        let (router, ops, busy) = (
            tenancy.router().clone(),
            flood_ops.clone(),
            flood_busy.clone(),
        );
        tokio::spawn(on_tasks(args.flood_tasks, move |_| {
            let (router, sql, noisy) = (router.clone(), sql.clone(), noisy.clone());
            let (ops, busy) = (ops.clone(), busy.clone());
            async move {
                while started.elapsed() < length {
                    match router.connection_for_schema(&noisy).await {
                        Ok(db) => {
                            db.batch_execute(&sql).await.expect("the flood's query");
                            ops.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(Error::TenantBusy { .. }) => {
                            busy.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(e) => panic!("the flood's checkout: {e}"),
                    }
                }
                Vec::new()
            }
        }))
    });
    let router = tenancy.router().clone();
    let quiet = {
        let schemas = schemas.clone();
        on_tasks(args.run.tasks, move |t| {
            let (router, schemas) = (router.clone(), schemas.clone());
            async move {
                let mut latencies = Vec::new();
                let (mut id, mut pick) = (0i32, t);
                while started.elapsed() < length {
                    id = id % ROWS + 1;
                    pick = (pick * 31 + 7) % (schemas.len() - 1);
                    let t0 = Instant::now();
                    let db = router
                        .connection_for_schema(&schemas[1 + pick])
                        .await
                        .expect("a quiet tenant's checkout");
                    db.query_one(SQL, &[&id]).await.expect("select");
                    drop(db);
                    latencies.push(t0.elapsed());
                }
                latencies
            }
        })
        .await
    };
    if let Some(f) = flooding {
        f.await.expect("the flood");
    }
    Run {
        quiet,
        flood_ops: flood_ops.load(Ordering::Relaxed),
        flood_busy: flood_busy.load(Ordering::Relaxed),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let cluster = TestCluster::start().expect("cluster");
    let db = cluster.create_database().await.expect("database");
    let (_created, schemas) = items_tenancy(db.pool().clone(), 100, |_| None).await;
    let schemas = Arc::new(schemas);
    // Two tenancies over the same tenants, each with a pool of 16 of its own.
    let tenancy = |app: &str, limits: TenantLimits| {
        Tenancy::builder(make_pool(db.config(), app, None))
            .migrations(TenantMigrations::new().with("items", items_table()))
            .tenant_limits(limits)
            .build()
    };
    let open = tenancy("noisy-open", TenantLimits::new())
        .await
        .expect("the tenancy without limits");
    let limited = tenancy(
        "noisy-limited",
        TenantLimits::new().max_connections(args.limit),
    )
    .await
    .expect("the tenancy with limits");
    let secs = args.run.secs;
    let length = Duration::from_secs_f64(secs);
    let warmup = Duration::from_secs_f64((secs / 5.0).min(1.0));
    println!(
        "{} quiet tasks over 99 tenants, 1 tenant flooding `pg_sleep({} ms)` from {} tasks, \
         pool 16, {secs} s per run; ratio = the quiet tenants' p99 / their p99 without the flood",
        args.run.tasks, args.flood_ms, args.flood_tasks
    );
    println!("| run | quiet ops/s | quiet p50 µs | quiet p99 µs | p99 ratio | flood ops/s | flood busy |");
    println!("|---|---|---|---|---|---|---|");
    let runs: [(&str, &Tenancy, bool); 4] = [
        ("no flood", &open, false),
        ("flood, no limits", &open, true),
        ("flood, max_connections({limit})", &limited, true),
        ("no flood, max_connections({limit})", &limited, false),
    ];
    let mut base_p99 = None;
    for (name, tenancy, flood) in runs {
        run(tenancy, &schemas, &args, flood, warmup).await;
        let Run {
            mut quiet,
            flood_ops,
            flood_busy,
        } = run(tenancy, &schemas, &args, flood, length).await;
        let s = stats(&mut quiet, length);
        let base = *base_p99.get_or_insert(s.p99);
        println!(
            "| {} | {:.0} | {} | {} | {:.2} | {:.0} | {flood_busy} |",
            name.replace("{limit}", &args.limit.to_string()),
            s.per_sec,
            micros(s.p50),
            micros(s.p99),
            s.p99.as_secs_f64() / base.as_secs_f64(),
            flood_ops as f64 / secs,
        );
    }
}
