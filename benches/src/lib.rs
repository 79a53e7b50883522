//! Shared pieces of the benchmarks: latency statistics, a Zipf sampler, and the set-up the
//! load binaries share (pools, the run-length options, the `items` tenants and the
//! baseline schema, tasks measuring latencies).

use std::future::Future;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tenant_schemas::deadpool_postgres::Pool;
use tenant_schemas::tokio_postgres::Config;
use tenant_schemas::{
    Host, NewTenant, SchemaName, SchemaRouter, SearchPathMode, Tenancy, TenantMigrations,
};

/// Connections of each pool under load.
pub const POOL: usize = 16;
/// Rows of the `items` table of each tenant and of the baseline schema.
pub const ROWS: i32 = 100;
/// The query each operation runs.
pub const SQL: &str = "SELECT v FROM items WHERE id = $1";

/// How long each measured run lasts and how many tasks share the pool.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct RunLength {
    /// Seconds per measured run.
    #[arg(long, default_value_t = 3.0)]
    pub secs: f64,
    /// Tasks sharing the pool.
    #[arg(long, default_value_t = 32)]
    pub tasks: usize,
}

/// A pool of `size` connections to `config`'s database, named `app` (its
/// `application_name`), with the server `options` (e.g. `-c search_path=base`).
///
/// # Panics
/// When the pool cannot be built.
#[must_use]
pub fn make_pool_of(config: &Config, app: &str, options: Option<&str>, size: usize) -> Pool {
    let mut config = config.clone();
    config.application_name(app);
    if let Some(o) = options {
        config.options(o);
    }
    tenant_schemas::testing::pool(config, size).expect("a pool")
}

/// A pool of [`POOL`] connections (see [`make_pool_of`]).
#[must_use]
pub fn make_pool(config: &Config, app: &str, options: Option<&str>) -> Pool {
    make_pool_of(config, app, options, POOL)
}

/// A transaction-mode router over a pool of [`POOL`] connections to `config` (application
/// name `app`), its plain queries in their messages' implicit transactions with `implicit`
/// (`SchemaRouterBuilder::implicit_transactions`).
#[must_use]
pub fn transaction_router(config: &Config, app: &str, implicit: bool) -> SchemaRouter {
    SchemaRouter::builder(make_pool(config, app, None))
        .mode(SearchPathMode::Transaction)
        .implicit_transactions(implicit)
        .build()
}

/// The `items` table (`id int primary key, v text`) with [`ROWS`] rows: each tenant's one
/// migration and the baseline schema's content.
#[must_use]
pub fn items_table() -> String {
    format!(
        "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL); \
         INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g"
    )
}

/// A tenancy over `pool` whose tenants hold the `items` table, with `n` tenants `t0`,
/// `t1` … (at least one), tenant `i` with the primary domain `domain(i)` if any.
///
/// # Panics
/// When the tenancy or a tenant cannot be made.
pub async fn items_tenancy(
    pool: Pool,
    n: usize,
    domain: impl Fn(usize) -> Option<Host>,
) -> (Tenancy, Vec<SchemaName>) {
    let tenancy = Tenancy::builder(pool)
        .migrations(TenantMigrations::new().with("items", items_table()))
        .build()
        .await
        .expect("a tenancy");
    let mut schemas = Vec::new();
    for i in 0..n.max(1) {
        let schema = SchemaName::new(&format!("t{i}")).expect("a schema name");
        let mut tenant = NewTenant::new(schema.clone());
        if let Some(host) = domain(i) {
            tenant = tenant.domain(host);
        }
        tenancy.create_tenant(tenant).await.expect("a tenant");
        schemas.push(schema);
    }
    (tenancy, schemas)
}

/// Creates the baseline schema `base` holding the `items` table, analyzed, after running
/// `first` (e.g. a setting; may be empty).
///
/// # Panics
/// When the SQL fails.
pub async fn baseline_schema(pool: &Pool, first: &str) {
    pool.get()
        .await
        .expect("a connection")
        .batch_execute(&format!(
            "{first} CREATE SCHEMA base; SET search_path TO base; {}; ANALYZE",
            items_table()
        ))
        .await
        .expect("the baseline schema");
}

/// Runs `task(i)` for `i` in `0..tasks`, each on a tokio task of its own, and returns the
/// latencies they all measured.
///
/// # Panics
/// When a task panicked.
pub async fn on_tasks<F, Fut>(tasks: usize, mut task: F) -> Vec<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Vec<Duration>> + Send + 'static,
{
    let handles: Vec<_> = (0..tasks).map(|i| tokio::spawn(task(i))).collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("a load task"));
    }
    all
}

/// Throughput and latency of one run.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Operations per second.
    pub per_sec: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// Summarizes `latencies` (any order) measured over `elapsed`.
pub fn stats(latencies: &mut [Duration], elapsed: Duration) -> Stats {
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Stats {
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// Picks indexes `0..n` uniformly or with a Zipf distribution (`s`), rank 0 the most likely.
#[derive(Debug, Clone)]
pub enum Picker {
    /// Every index equally likely.
    Uniform(usize),
    /// Cumulative Zipf weights.
    Zipf(Vec<f64>),
}

impl Picker {
    /// A Zipf picker over `n` indexes with exponent `s`.
    #[must_use]
    pub fn zipf(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self::Zipf(cdf)
    }

    /// The next index.
    pub fn pick(&self, rng: &mut impl Rng) -> usize {
        match self {
            Self::Uniform(n) => rng.random_range(0..*n),
            Self::Zipf(cdf) => {
                let x: f64 = rng.random();
                cdf.partition_point(|c| *c < x).min(cdf.len() - 1)
            }
        }
    }
}

/// A duration as microseconds with one decimal.
#[must_use]
pub fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// Runs `tasks` tasks until `length` has passed since `started`. Each picks a tenant with
/// `picker` (from a random generator seeded with the task's number, so runs repeat) and
/// the next row id (1 to [`ROWS`] in turn), and times the future `op(tenant, id)` returns
/// (calling `op` is not timed). Returns every latency.
///
/// # Panics
/// When a task panicked.
pub async fn pick_and_run<F, Fut>(
    tasks: usize,
    picker: &Picker,
    started: Instant,
    length: Duration,
    op: F,
) -> Vec<Duration>
where
    F: Fn(usize, i32) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    on_tasks(tasks, |t| {
        let (picker, op) = (picker.clone(), op.clone());
        async move {
            let mut rng = StdRng::seed_from_u64(t as u64);
            let mut latencies = Vec::new();
            let mut id = 0i32;
            while started.elapsed() < length {
                let tenant = picker.pick(&mut rng);
                id = id % ROWS + 1;
                let next = op(tenant, id);
                let t0 = Instant::now();
                next.await;
                latencies.push(t0.elapsed());
            }
            latencies
        }
    })
    .await
}
