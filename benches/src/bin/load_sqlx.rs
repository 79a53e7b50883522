//! The sqlx driver under load: plain sqlx on one schema (the baseline, no tenancy) against
//! `tenant-schemas-sqlx` with 1 and 1,000 tenants, and two floors: what remembering each
//! connection's path could save at most (plain sqlx plus one `SELECT 1` round trip per
//! checkout), and what a checkout that changes a connection's schema costs at least (the same
//! plus the closing of sqlx's prepared statements, which are then prepared again); and
//! `SharedStatements`, the router with `shared_statements(true)` at 1,000 tenants, and `NoReset`,
//! the router with `reset_settings(false)` (no `RESET ALL` in its switch); and in transaction
//! mode (`begin_for`, the SELECT, `COMMIT`; over the same direct connections),
//! `Transaction` with the resets every transaction begins with by default and
//! `TransactionNoReset` without them; `States`, the router reading a `Tenancy`'s tenant states
//! at every checkout, as applications run it, and `Roles`, the same in role mode (each tenant
//! under its own role, set with every switch; a switch that changes tenant closes every
//! statement on the connection), and `RolesKept`, role mode keeping statements across tenants
//! (`TenantRoles::keep_statements_across_tenants`). The table
//! shape of `load`: `items(id int primary key, v text)` with 100 rows; N tasks (default 32)
//! share a pool of 16; each operation is a checkout and one primary-key SELECT of a random
//! row of a random tenant.
//!
//! `cargo run --release -p tenant-schemas-benches --bin load_sqlx -- --secs 4 --warmup 3`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rand::Rng;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, Executor};
use tenant_schemas::testing::TestCluster;
use tenant_schemas::{SchemaName, SearchPathMode, Tenancy, TenantMigrations, TenantRoles};
use tenant_schemas_benches::{baseline_schema, items_table, items_tenancy, RunLength, ROWS, SQL};
use tenant_schemas_sqlx::{connect_options, SqlxRouter};

const POOL: u32 = tenant_schemas_benches::POOL as u32;

#[derive(Parser)]
struct Args {
    /// Each measured run follows a warm-up of a fifth of it, at most 1 s.
    #[command(flatten)]
    run: RunLength,
    /// Tenants of the many-tenant row.
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Seconds of an unmeasured run of each row before the measured one, for a steady state
    /// (default: a fifth of `--secs`, at most 1 s).
    #[arg(long)]
    warmup: Option<f64>,
    /// Only these rows' variants, after the baseline (repeatable). Default: every row.
    #[arg(long = "only", value_enum)]
    only: Vec<Variant>,
}

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum Variant {
    /// Plain sqlx on the `base` schema: no tenancy.
    Baseline,
    /// Plain sqlx plus one `SELECT 1` per checkout: a round trip, no switch.
    RoundTripFloor,
    /// Plain sqlx plus one `SELECT 1` and the closing of the connection's prepared
    /// statements per checkout: what a checkout that changes schema costs at least (the
    /// query is prepared again after it).
    ClearFloor,
    /// `SqlxRouter::connection_for_schema`: switch and checks on every checkout.
    TenantSqlx,
    /// `TenantSqlx` with `shared_statements(true)`: statements kept across schemas.
    SharedStatements,
    /// `TenantSqlx` with `reset_settings(false)`: no `RESET ALL` in the switch.
    NoReset,
    /// Transaction mode: `begin_for`, the SELECT and `COMMIT`; each transaction begins with
    /// the resets (the default).
    Transaction,
    /// `Transaction` with `reset_settings(false)`.
    TransactionNoReset,
    /// `TenantSqlx` reading a `Tenancy`'s tenant states (`tenant_states`) at every checkout.
    States,
    /// `States` in role mode (`TenancyBuilder::tenant_roles`): each tenant under its role.
    Roles,
    /// `Roles` keeping statements across tenants (`TenantRoles::keep_statements_across_tenants`):
    /// the switch is the statement prepared once per connection again.
    RolesKept,
}

async fn one_op(
    variant: Variant,
    baseline: &PgPool,
    routers: &Routers,
    schemas: &[SchemaName],
    id: i32,
    pick: usize,
) {
    match variant {
        Variant::Baseline | Variant::RoundTripFloor | Variant::ClearFloor => {
            let mut conn = baseline.acquire().await.expect("acquire");
            if variant != Variant::Baseline {
                conn.execute("SELECT 1").await.expect("round trip");
            }
            if variant == Variant::ClearFloor {
                conn.clear_cached_statements().await.expect("clear");
            }
            let (_v,): (String,) = sqlx::query_as(SQL)
                .bind(id)
                .fetch_one(&mut *conn)
                .await
                .expect("select");
        }
        Variant::Transaction | Variant::TransactionNoReset => {
            let router = if variant == Variant::Transaction {
                &routers.transaction
            } else {
                &routers.transaction_no_reset
            };
            let mut tx = router
                .begin_for(&schemas[pick % schemas.len()])
                .await
                .expect("transaction");
            let (_v,): (String,) = sqlx::query_as(SQL)
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .expect("select");
            tx.commit().await.expect("commit");
        }
        Variant::TenantSqlx
        | Variant::SharedStatements
        | Variant::NoReset
        | Variant::States
        | Variant::Roles
        | Variant::RolesKept => {
            let router = match variant {
                Variant::TenantSqlx => &routers.default,
                Variant::SharedStatements => &routers.shared,
                Variant::States => &routers.states,
                Variant::Roles => &routers.roles,
                Variant::RolesKept => &routers.roles_kept,
                _ => &routers.no_reset,
            };
            let mut conn = router
                .connection_for_schema(&schemas[pick % schemas.len()])
                .await
                .expect("connection");
            let (_v,): (String,) = sqlx::query_as(SQL)
                .bind(id)
                .fetch_one(&mut *conn)
                .await
                .expect("select");
        }
    }
}

async fn measure(
    variant: Variant,
    baseline: &PgPool,
    routers: &Routers,
    schemas: &Arc<Vec<SchemaName>>,
    tasks: usize,
    length: Duration,
) -> Vec<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (baseline, routers, schemas, stop) = (
            baseline.clone(),
            routers.clone(),
            schemas.clone(),
            stop.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (id, pick) = {
                    let mut rng = rand::rng();
                    (rng.random_range(1..=ROWS), rng.random_range(0..usize::MAX))
                };
                let started = Instant::now();
                one_op(variant, &baseline, &routers, &schemas, id, pick).await;
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("task"));
    }
    all.sort();
    all
}

/// The routers of the variants, each over a pool of its own.
struct RouterSet {
    default: SqlxRouter,
    shared: SqlxRouter,
    no_reset: SqlxRouter,
    transaction: SqlxRouter,
    transaction_no_reset: SqlxRouter,
    states: SqlxRouter,
    roles: SqlxRouter,
    roles_kept: SqlxRouter,
}

type Routers = Arc<RouterSet>;

fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(POOL)
        .min_connections(POOL)
}

#[tokio::main]
async fn main() {
    let Args {
        run: RunLength { secs, tasks },
        tenants,
        warmup,
        only,
    } = Args::parse();
    let cluster = TestCluster::start().expect("cluster");
    let db = cluster.create_database().await.expect("database");
    let started = Instant::now();
    let (tenancy, schemas) = items_tenancy(db.pool().clone(), tenants, |_| None).await;
    baseline_schema(db.pool(), "").await;
    // The same tenants through a role-mode `Tenancy`, each given its role.
    let roles_tenancy = Tenancy::builder(db.pool().clone())
        .migrations(TenantMigrations::new().with("items", items_table()))
        .tenant_roles(TenantRoles::new())
        .build()
        .await
        .expect("a role-mode tenancy");
    roles_tenancy.sync_roles().await.expect("tenant roles");
    let roles_kept_tenancy = Tenancy::builder(db.pool().clone())
        .migrations(TenantMigrations::new().with("items", items_table()))
        .tenant_roles(TenantRoles::new().keep_statements_across_tenants(true))
        .build()
        .await
        .expect("a role-mode tenancy keeping statements");
    println!(
        "setup: {} tenants (each with its role) + baseline schema in {:.1} s",
        schemas.len(),
        started.elapsed().as_secs_f64()
    );
    let options = connect_options(db.config());
    let baseline = pool_options()
        .connect_with(options.clone().options([("search_path", "base")]))
        .await
        .expect("baseline pool");
    let router = SqlxRouter::new(
        pool_options()
            .connect_with(options.clone())
            .await
            .expect("pool"),
    );
    let shared = SqlxRouter::builder(
        pool_options()
            .connect_with(options.clone())
            .await
            .expect("pool"),
    )
    .shared_statements(true)
    .build();
    let no_reset = SqlxRouter::builder(
        pool_options()
            .connect_with(options.clone())
            .await
            .expect("pool"),
    )
    .reset_settings(false)
    .build();
    let transaction = SqlxRouter::builder(
        pool_options()
            .connect_with(options.clone())
            .await
            .expect("pool"),
    )
    .mode(SearchPathMode::Transaction)
    .build();
    let transaction_no_reset = SqlxRouter::builder(
        pool_options()
            .connect_with(options.clone())
            .await
            .expect("pool"),
    )
    .mode(SearchPathMode::Transaction)
    .reset_settings(false)
    .build();
    let states = SqlxRouter::builder(
        pool_options()
            .connect_with(options.clone())
            .await
            .expect("pool"),
    )
    .tenant_states(tenancy.tenant_states())
    .build();
    let roles = SqlxRouter::builder(
        pool_options()
            .connect_with(options.clone())
            .await
            .expect("pool"),
    )
    .tenant_states(roles_tenancy.tenant_states())
    .build();
    let roles_kept = SqlxRouter::builder(pool_options().connect_with(options).await.expect("pool"))
        .tenant_states(roles_kept_tenancy.tenant_states())
        .build();
    let routers: Routers = Arc::new(RouterSet {
        default: router,
        shared,
        no_reset,
        transaction,
        transaction_no_reset,
        states,
        roles,
        roles_kept,
    });

    println!(
        "\n{tasks} tasks, pool {POOL}, {secs} s per run; ratio = throughput / baseline (plain sqlx, one schema)"
    );
    println!("| T | variant | ops/s | p50 µs | p99 µs | ratio |");
    println!("|---|---|---|---|---|---|");
    let length = Duration::from_secs_f64(secs);
    let warmup = Duration::from_secs_f64(warmup.unwrap_or((secs / 5.0).min(1.0)));
    let mut baseline_rate = None;
    let rows = [
        (1, Variant::Baseline),
        (1, Variant::RoundTripFloor),
        (1, Variant::ClearFloor),
        (1, Variant::TenantSqlx),
        (1, Variant::NoReset),
        (schemas.len(), Variant::TenantSqlx),
        (schemas.len(), Variant::NoReset),
        (schemas.len(), Variant::SharedStatements),
        (1, Variant::States),
        (1, Variant::Roles),
        (schemas.len(), Variant::States),
        (schemas.len(), Variant::Roles),
        (1, Variant::RolesKept),
        (schemas.len(), Variant::RolesKept),
        (1, Variant::Transaction),
        (1, Variant::TransactionNoReset),
        (schemas.len(), Variant::Transaction),
        (schemas.len(), Variant::TransactionNoReset),
    ];
    let rows = rows
        .into_iter()
        .filter(|(_, v)| *v == Variant::Baseline || only.is_empty() || only.contains(v));
    for (t, variant) in rows {
        let subset = Arc::new(schemas[..t].to_vec());
        measure(variant, &baseline, &routers, &subset, tasks, warmup).await;
        let latencies = measure(variant, &baseline, &routers, &subset, tasks, length).await;
        let rate = latencies.len() as f64 / secs;
        let base = *baseline_rate.get_or_insert(rate);
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(0, |d| d.as_micros())
        };
        let t_label = if !matches!(
            variant,
            Variant::Baseline | Variant::RoundTripFloor | Variant::ClearFloor
        ) {
            t.to_string()
        } else {
            "–".into()
        };
        println!(
            "| {t_label} | {variant:?} | {rate:.0} | {} | {} | {:.2} |",
            at(0.5),
            at(0.99),
            rate / base
        );
    }
    println!("\nrouter: {:?}", routers.default.stats());
    println!("shared_statements router: {:?}", routers.shared.stats());
    println!("transaction-mode router: {:?}", routers.transaction.stats());
    println!("role-mode router: {:?}", routers.roles.stats());
}
