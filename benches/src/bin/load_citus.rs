//! The `load` comparison's Citus pair: `baseline` and `session` through a Citus coordinator,
//! on a throwaway Citus cluster (`TestCitusCluster`: a coordinator and two workers on this
//! machine).
//!
//! N tasks (default 32) share a pool of 16 coordinator connections; each operation is a
//! checkout plus one primary-key `SELECT`:
//! - `baseline`: no tenancy, one distributed schema `base` (the pool's connections start on
//!   it), so every statement is routed by the coordinator to one worker;
//! - `session`: tenant-schemas, session search-path mode, a tenant picked uniformly from T
//!   distributed tenants (Citus spreads them over both workers);
//! - `transaction`: the same in transaction search-path mode (`BEGIN; SET LOCAL …`, the
//!   statement, `COMMIT` in one flush), as behind a transaction pooler;
//! - `transaction-implicit`: transaction mode with `implicit_transactions(true)` (what a
//!   `Tenancy` over a coordinator has by default): a plain query at hand goes in its
//!   message's implicit transaction, the settings made local with `set_config` ahead of it,
//!   no `BEGIN` or `COMMIT`.
//!
//! With `--profile`, six variants without the library split the gap between `baseline` and
//! `session` (on raw pooled connections, a tenant picked as for `session`):
//! - `qualified`: one cached statement per tenant naming its schema (`"t".items`), no `SET`:
//!   routing to the tenant's worker alone;
//! - `set-same-path`: `SET search_path TO base` (the path the connection already has) as a
//!   round trip of its own, then the baseline's statement: what a `SET` costs on the
//!   coordinator, no statement planned again;
//! - `set-tenant-path`: `SET search_path TO "t", public`, then a statement cached per tenant
//!   (its text marked with the schema, as the library keys them) and only run under that
//!   path: the switch with nothing planned again;
//! - `set-tenant-path-shared`: the same `SET`, then one statement per connection shared by
//!   every tenant, which the coordinator plans again whenever the path changed;
//! - `prelude-tenant-path`: the `SET` as the prelude of the statement's own message (the
//!   tenant's cached statement bound behind it, one `Sync`): the library's switch at its
//!   thinnest;
//! - `prelude-tenant-path-discard`: the same with `DISCARD TEMP` in the prelude too, as a
//!   checkout's first switch sends it.
//!
//! and three that split the gap between `baseline` and `transaction`:
//! - `baseline-block`: the baseline's statement inside `BEGIN` … `COMMIT` (one flush), no
//!   path change: what an explicit transaction block costs through the coordinator;
//! - `block-tenant-path`: `BEGIN; SET LOCAL search_path TO "t", public`, the tenant's cached
//!   statement, `COMMIT`, in one flush: the library's transaction mode without the library;
//! - `prelude-local-tenant-path`: `SELECT set_config('search_path', '"t", public', true)` as
//!   the prelude of the statement's own message (one `Sync`): the path local to the
//!   statement's implicit transaction, no transaction block;
//! - `prelude-local-tenant-path-shown`: the same with the path written as `SET` shows it
//!   (`quote_ident('t') || ', public'`), as the library writes it.
//!
//! The variants alternate (`--rounds`, default 3); ratio = variant / baseline of the same
//! round. `cargo run --release -p tenant-schemas-benches --bin load_citus -- --help`
//! lists the options. Needs Citus installed (see the README's "Citus" section).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tenant_schemas::deadpool_postgres::Pool;
use tenant_schemas::testing::TestCitusCluster;
use tenant_schemas::tokio_postgres::types::ToSql;
use tenant_schemas::tokio_postgres::Prelude;
use tenant_schemas::{SchemaName, SchemaRouter};
use tenant_schemas_benches::{
    baseline_schema, items_tenancy, make_pool, micros, pick_and_run, stats, transaction_router,
    Picker, RunLength, Stats, POOL, ROWS, SQL,
};

/// Baseline, session and transaction mode through a Citus coordinator.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    run: RunLength,
    /// Tenants (T).
    #[arg(long, default_value_t = 100)]
    tenants: usize,
    /// Alternating rounds of the variants.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Adds the variants without the library that split the gap (see the module's docs).
    #[arg(long)]
    profile: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Baseline,
    Session,
    Transaction,
    TransactionImplicit,
    Qualified,
    SetSamePath,
    SetTenantPath,
    SetTenantPathShared,
    PreludeTenantPath,
    PreludeTenantPathDiscard,
    BaselineBlock,
    BlockTenantPath,
    PreludeLocalTenantPath,
    PreludeLocalTenantPathShown,
}

struct Setup {
    schemas: Vec<SchemaName>,
    baseline: Pool,
    /// Plain pooled connections for the `--profile` variants that set a tenant's path.
    raw: Pool,
    session: SchemaRouter,
    transaction: SchemaRouter,
    transaction_implicit: SchemaRouter,
}

async fn op(setup: &Setup, variant: Variant, tenant: usize, id: i32) {
    match variant {
        Variant::Baseline => {
            let c = setup.baseline.get().await.unwrap();
            let stmt = c.prepare_cached(SQL).await.unwrap();
            c.query_one(&stmt, &[&id]).await.unwrap();
        }
        Variant::Qualified => {
            let c = setup.raw.get().await.unwrap();
            let sql = format!(
                "SELECT v FROM {}.items WHERE id = $1",
                setup.schemas[tenant].quoted()
            );
            let stmt = c.prepare_cached(&sql).await.unwrap();
            c.query_one(&stmt, &[&id]).await.unwrap();
        }
        Variant::SetSamePath => {
            let c = setup.baseline.get().await.unwrap();
            c.batch_execute("SET search_path TO base").await.unwrap();
            let stmt = c.prepare_cached(SQL).await.unwrap();
            c.query_one(&stmt, &[&id]).await.unwrap();
        }
        Variant::SetTenantPath | Variant::SetTenantPathShared => {
            let c = setup.raw.get().await.unwrap();
            let schema = &setup.schemas[tenant];
            c.batch_execute(&format!("SET search_path TO {}, public", schema.quoted()))
                .await
                .unwrap();
            let stmt = if variant == Variant::SetTenantPath {
                c.prepare_cached(&format!("/* {schema} */ {SQL}")).await
            } else {
                c.prepare_cached(SQL).await
            }
            .unwrap();
            c.query_one(&stmt, &[&id]).await.unwrap();
        }
        Variant::PreludeTenantPath | Variant::PreludeTenantPathDiscard => {
            let c = setup.raw.get().await.unwrap();
            let schema = &setup.schemas[tenant];
            let mut prelude = Prelude::new();
            prelude
                .push_text(&format!("SET search_path TO {}, public", schema.quoted()))
                .unwrap();
            if variant == Variant::PreludeTenantPathDiscard {
                prelude.push_text("DISCARD TEMP").unwrap();
            }
            let stmt = c
                .prepare_cached(&format!("/* {schema} */ {SQL}"))
                .await
                .unwrap();
            c.query_one_after(&prelude, &stmt, &[&id]).await.unwrap();
        }
        Variant::BaselineBlock => {
            let c = setup.baseline.get().await.unwrap();
            let stmt = c.prepare_cached(SQL).await.unwrap();
            let params: [&(dyn ToSql + Sync); 1] = [&id];
            let (begin, row, commit) = tokio::join!(
                c.batch_execute("BEGIN"),
                c.query_one(&stmt, &params),
                c.batch_execute("COMMIT")
            );
            begin.and(row.map(drop)).and(commit).unwrap();
        }
        Variant::BlockTenantPath => {
            let c = setup.raw.get().await.unwrap();
            let schema = &setup.schemas[tenant];
            let stmt = c
                .prepare_cached(&format!("/* {schema} */ {SQL}"))
                .await
                .unwrap();
            let switch = format!(
                "BEGIN; SET LOCAL search_path TO {}, public",
                schema.quoted()
            );
            let params: [&(dyn ToSql + Sync); 1] = [&id];
            let (begin, row, commit) = tokio::join!(
                c.batch_execute(&switch),
                c.query_one(&stmt, &params),
                c.batch_execute("COMMIT")
            );
            begin.and(row.map(drop)).and(commit).unwrap();
        }
        Variant::PreludeLocalTenantPath | Variant::PreludeLocalTenantPathShown => {
            let c = setup.raw.get().await.unwrap();
            let schema = &setup.schemas[tenant];
            let path = if variant == Variant::PreludeLocalTenantPath {
                format!("'{}, public'", schema.quoted())
            } else {
                format!("pg_catalog.quote_ident('{schema}') || ', public'")
            };
            let mut prelude = Prelude::new();
            prelude
                .push_text(&format!(
                    "SELECT pg_catalog.set_config('search_path', {path}, true)"
                ))
                .unwrap();
            let stmt = c
                .prepare_cached(&format!("/* {schema} */ {SQL}"))
                .await
                .unwrap();
            c.query_one_after(&prelude, &stmt, &[&id]).await.unwrap();
        }
        Variant::Session | Variant::Transaction | Variant::TransactionImplicit => {
            let router = match variant {
                Variant::Session => &setup.session,
                Variant::Transaction => &setup.transaction,
                _ => &setup.transaction_implicit,
            };
            let c = router
                .connection_for_schema(&setup.schemas[tenant])
                .await
                .unwrap();
            c.query_one(SQL, &[&id]).await.unwrap();
        }
    }
}

async fn run_for(
    setup: &Arc<Setup>,
    variant: Variant,
    picker: &Picker,
    tasks: usize,
    length: Duration,
) -> Stats {
    let started = Instant::now();
    let setup = setup.clone();
    let mut all = pick_and_run(tasks, picker, started, length, move |tenant, id| {
        let setup = setup.clone();
        async move { op(&setup, variant, tenant, id).await }
    })
    .await;
    stats(&mut all, started.elapsed())
}

#[tokio::main]
async fn main() {
    let Args {
        run: RunLength { secs, tasks },
        tenants,
        rounds,
        profile,
    } = Args::parse();
    let started = Instant::now();
    let cluster = TestCitusCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let db = cluster.create_database().await.unwrap();
    let config = db.config().clone();
    let (tenancy, schemas) =
        items_tenancy(make_pool(&config, "setup", None), tenants, |_| None).await;
    baseline_schema(
        &make_pool(&config, "admin", None),
        "SET citus.enable_schema_based_sharding = on;",
    )
    .await;
    let placements = tenancy.registry().placements().await.unwrap();
    let first = placements.first().and_then(|p| p.node.clone());
    let on_first = placements.iter().filter(|p| p.node == first).count();
    println!(
        "setup: Citus coordinator + 2 workers, {} distributed tenants ({on_first} on one \
         worker) + a distributed baseline schema, {ROWS} rows each, in {:.1} s",
        schemas.len(),
        started.elapsed().as_secs_f64()
    );

    let setup = Arc::new(Setup {
        schemas,
        baseline: make_pool(&config, "baseline", Some("-c search_path=base")),
        raw: make_pool(&config, "raw", None),
        session: SchemaRouter::new(make_pool(&config, "session", None)),
        transaction: transaction_router(&config, "transaction", false),
        transaction_implicit: transaction_router(&config, "transaction_implicit", true),
    });
    let picker = Picker::Uniform(setup.schemas.len());
    let length = Duration::from_secs_f64(secs);
    let warmup = Duration::from_secs_f64((secs / 3.0).min(1.0));
    println!(
        "\n{tasks} tasks, pool {POOL} (coordinator connections), {secs} s per run, T = {}, \
         uniform, 1 query per checkout; ratio = variant / baseline of the same round",
        setup.schemas.len()
    );
    println!("| round | variant | ops/s | p50 µs | p99 µs | ratio |");
    println!("|---|---|---|---|---|---|");
    for round in 1..=rounds {
        let mut base = 0.0;
        let profiled = [
            Variant::Qualified,
            Variant::SetSamePath,
            Variant::SetTenantPath,
            Variant::SetTenantPathShared,
            Variant::PreludeTenantPath,
            Variant::PreludeTenantPathDiscard,
            Variant::BaselineBlock,
            Variant::BlockTenantPath,
            Variant::PreludeLocalTenantPath,
            Variant::PreludeLocalTenantPathShown,
        ];
        let variants = [
            Variant::Baseline,
            Variant::Session,
            Variant::Transaction,
            Variant::TransactionImplicit,
        ]
        .into_iter()
        .chain(profiled.into_iter().filter(|_| profile));
        for variant in variants {
            run_for(&setup, variant, &picker, tasks, warmup).await;
            let s = run_for(&setup, variant, &picker, tasks, length).await;
            if variant == Variant::Baseline {
                base = s.per_sec;
            }
            println!(
                "| {round} | {variant:?} | {:.0} | {} | {} | {:.2} |",
                s.per_sec,
                micros(s.p50),
                micros(s.p99),
                s.per_sec / base
            );
        }
    }
}
