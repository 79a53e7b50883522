//! Database load comparison, all variants in one run against one throwaway PostgreSQL.
//!
//! N tasks (default 32) share a pool of 16 connections; each operation is a checkout plus
//! one (or five) primary-key SELECTs on a tenant picked from T tenants (1, 100, 1,000;
//! uniform and Zipf s=1.1). Variants, same table shape everywhere:
//! - `baseline`: no tenancy, one schema (the pool's connections start on it);
//! - `session`: tenant-schemas, session search-path mode;
//! - `transaction`: tenant-schemas, transaction mode (what runs behind PgBouncer);
//! - `naive`: `SET search_path` as its own round trip on every checkout;
//! - `qualified`: schema-qualified SQL, one cached statement per schema (the ceiling: what
//!   PostgreSQL does with T schemas and no switching at all);
//! - `session-no-affinity`: `session` without the schema-affine handoff;
//! - `session-groups`: `session` with the 16 connections in 4 groups, each tenant at home in
//!   one (`connection_groups`);
//! - `baseline-via-pg-bouncer`, `transaction-via-pg-bouncer`: `baseline` through a real
//!   PgBouncer in session pooling mode, `transaction` through one in transaction pooling;
//! - `baseline-via-transaction-pg-bouncer`: `baseline` through the transaction-pooling one,
//!   its statement named and kept by PgBouncer 1.21+;
//! - `transaction-named-via-pg-bouncer`: `transaction-via-pg-bouncer` with named statements
//!   that PgBouncer keeps (`pooler_prepared_statements`);
//! - `pipelined` (only when asked for): a plain pool writing `SET search_path` in the same
//!   flush as a statement cached per schema, with none of the library's bookkeeping;
//! - `session-reset` (only when asked for): `session` with `reset_settings(true)`;
//! - `raw-two-syncs`, `raw-one-sync` and their `-via-pg-bouncer` forms (only when asked
//!   for): transaction mode's shape by hand, its `COMMIT` after the statement's `Sync` or
//!   before it.
//!
//! `cargo run --release -p tenant-schemas-benches --bin load -- --help` lists the options
//! (`--tenants N`, `--secs`, `--warmup`, `--variant`, `--pick`, `--queries`, `--rounds`,
//! `--explain`, `--after-read-only` …). With `--rounds N` the variants alternate N times and each row is the
//! median run: compare those, since one run moves by ±10–20 % on a shared machine.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use tenant_schemas::deadpool_postgres::Pool;
use tenant_schemas::testing::{TestCluster, TestPgBouncer};
use tenant_schemas::{
    SchemaName, SchemaRouter, SearchPathMode, Tenancy, Tenant, TenantMigrations, TenantRoles,
    TenantStatus,
};
use tenant_schemas_benches::{
    baseline_schema, items_table, items_tenancy, make_pool, make_pool_of, micros, pick_and_run,
    stats, transaction_router, Picker, RunLength, Stats, POOL, ROWS, SQL,
};

const BASE_SQL: &str = "SELECT v FROM base.items WHERE id = $1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
enum Variant {
    Baseline,
    Session,
    Transaction,
    Naive,
    Qualified,
    SessionNoAffinity,
    /// `Session` with the pool's 16 connections in 4 groups, tenants spread over them.
    SessionGroups,
    /// `Baseline` through PgBouncer in session pooling mode.
    BaselineViaPgBouncer,
    /// `Baseline` through the transaction-pooling PgBouncer of the `Transaction*ViaPgBouncer`
    /// variants, its statement named and kept by PgBouncer (1.21+; unnamed before): what an
    /// application without tenants gets through transaction pooling.
    BaselineViaTransactionPgBouncer,
    /// `Transaction` through PgBouncer in transaction pooling mode.
    TransactionViaPgBouncer,
    /// `TransactionViaPgBouncer` with named, cached statements kept by PgBouncer
    /// (`pooler_prepared_statements`; needs PgBouncer 1.21+, unnamed otherwise).
    TransactionNamedViaPgBouncer,
    /// `TransactionViaPgBouncer` through Debian's PgBouncer 1.18 (`/usr/sbin/pgbouncer`, when
    /// installed and not the default one), for comparison.
    TransactionViaPgBouncer118,
    /// `Session` through the router of a `Tenancy`: the registry's tenant states read at
    /// every checkout (a cache hit), as applications run it.
    SessionTenancy,
    /// `SessionTenancy` in role mode (`TenancyBuilder::tenant_roles`): each tenant under its
    /// own role, set with every switch.
    Roles,
    /// `Roles` keeping prepared statements across tenants
    /// (`TenantRoles::keep_statements_across_tenants`).
    RolesKept,
    /// Not in the default set: `Transaction` with `implicit_transactions(true)`, where a
    /// plain query at hand runs in its message's implicit transaction, its settings made
    /// local with `set_config` (BENCHMARKS.md §27).
    TransactionImplicit,
    /// Not in the default set: `TransactionViaPgBouncer` with `implicit_transactions(true)`.
    TransactionImplicitViaPgBouncer,
    /// Not in the default set: `Session` with `reset_settings(true)` (every checkout switches,
    /// each switch begins with `RESET ALL; RESET SESSION AUTHORIZATION; RESET ROLE`). Built
    /// only when asked for: it makes the library's own work reset too, process-wide.
    SessionReset,
    /// Not in the default set: a plain pool, `SET search_path` written in the same flush as
    /// the execution of a statement cached per schema, no isolation bookkeeping at all (the
    /// floor of what a switch per checkout costs).
    Pipelined,
    /// Not in the default set: transaction mode's shape by hand on a plain pool, none of the
    /// library's work: `BEGIN`, the `SET LOCAL`s and the leftovers undone ahead of the
    /// statement (unnamed) up to its `Sync`, then `COMMIT` in a message of its own, written
    /// in the same flush (two `Sync`s, one round trip).
    RawTwoSyncs,
    /// Not in the default set: `RawTwoSyncs` with the `COMMIT` before the one `Sync` (the
    /// statement's value written into its text, its rows discarded).
    RawOneSync,
    /// Not in the default set: `RawTwoSyncs` through the transaction-pooling PgBouncer.
    RawTwoSyncsViaPgBouncer,
    /// Not in the default set: `RawOneSync` through the transaction-pooling PgBouncer.
    RawOneSyncViaPgBouncer,
}

const VARIANTS: [Variant; 15] = [
    Variant::Baseline,
    Variant::Session,
    Variant::SessionTenancy,
    Variant::Roles,
    Variant::RolesKept,
    Variant::SessionNoAffinity,
    Variant::SessionGroups,
    Variant::Transaction,
    Variant::Naive,
    Variant::Qualified,
    Variant::BaselineViaPgBouncer,
    Variant::BaselineViaTransactionPgBouncer,
    Variant::TransactionViaPgBouncer,
    Variant::TransactionNamedViaPgBouncer,
    Variant::TransactionViaPgBouncer118,
];

/// Debian's PgBouncer, for [`Variant::TransactionViaPgBouncer118`].
const DEBIAN_PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// Database load, every variant in one run.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    run: RunLength,
    /// Only T = 1 and 1,000.
    #[arg(long)]
    quick: bool,
    /// Only one client against one tenant, baseline and session alternating.
    #[arg(long)]
    single: bool,
    /// Schema-affine checkout on and off, alternating, at T = 1,000 (Zipf).
    #[arg(long)]
    affinity: bool,
    /// Only this many tenants (T), instead of the 1 / 100 / 1,000 sweep (0: the sweep).
    #[arg(long, default_value_t = 0)]
    tenants: usize,
    /// Seconds of an unmeasured run of each variant before the measured one, for a steady
    /// state (default: as long as `--secs`).
    #[arg(long)]
    warmup: Option<f64>,
    /// Only these variants (repeatable; the first is the ratios' baseline). Default: all.
    #[arg(long = "variant", value_enum)]
    variants: Vec<Variant>,
    /// Only uniform picks, or only Zipf (default: both).
    #[arg(long, value_enum)]
    pick: Option<Pick>,
    /// Only this many queries per checkout (default: 1 and 5).
    #[arg(long)]
    queries: Option<usize>,
    /// After each row, the server transactions and router switches per operation.
    #[arg(long)]
    explain: bool,
    /// Measured runs of each variant, alternating (after one warm-up each): each row shows
    /// the median run (ops/s, its p50 and p99) and the spread of the rounds' ops/s, and the
    /// ratio is of medians. A single run moves by ±10–20 % on a shared 2-core machine.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// PgBouncer's `max_prepared_statements` for the transaction-pooling PgBouncer (1.21+):
    /// named statements it keeps per server connection (200: its default since 1.24).
    #[arg(long, default_value_t = 200)]
    pgbouncer_prepared_statements: u32,
    /// Serve one read-only tenant (a session made read-only) before the runs. Process-wide:
    /// every session-mode switch then also sets `default_transaction_read_only`, and travels
    /// in a message of its own instead of the statement's.
    #[arg(long)]
    after_read_only: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Pick {
    Uniform,
    Zipf,
}

struct Setup {
    schemas: Vec<SchemaName>,
    qualified: Vec<String>,
    baseline: Pool,
    session: SchemaRouter,
    session_tenancy: SchemaRouter,
    roles: SchemaRouter,
    roles_kept: SchemaRouter,
    session_reset: Option<SchemaRouter>,
    no_affinity: SchemaRouter,
    groups: SchemaRouter,
    transaction: SchemaRouter,
    transaction_implicit: SchemaRouter,
    plain: Pool,
    qualified_pool: Pool,
    pipelined_pool: Pool,
    baseline_bouncer: Pool,
    baseline_transaction_bouncer: Pool,
    /// Whether the transaction-pooling PgBouncer keeps named statements (else
    /// `BaselineViaTransactionPgBouncer` runs its statement unnamed).
    transaction_bouncer_keeps: bool,
    transaction_bouncer: SchemaRouter,
    transaction_implicit_bouncer: SchemaRouter,
    transaction_named_bouncer: SchemaRouter,
    transaction_bouncer_118: Option<SchemaRouter>,
}

impl Setup {
    /// The router `variant` checks out through, if it has one.
    fn router(&self, variant: Variant) -> Option<&SchemaRouter> {
        Some(match variant {
            Variant::Session => &self.session,
            Variant::SessionTenancy => &self.session_tenancy,
            Variant::Roles => &self.roles,
            Variant::RolesKept => &self.roles_kept,
            Variant::SessionReset => self.session_reset.as_ref()?,
            Variant::SessionGroups => &self.groups,
            Variant::SessionNoAffinity => &self.no_affinity,
            Variant::Transaction => &self.transaction,
            Variant::TransactionImplicit => &self.transaction_implicit,
            Variant::TransactionViaPgBouncer => &self.transaction_bouncer,
            Variant::TransactionImplicitViaPgBouncer => &self.transaction_implicit_bouncer,
            Variant::TransactionNamedViaPgBouncer => &self.transaction_named_bouncer,
            Variant::TransactionViaPgBouncer118 => self.transaction_bouncer_118.as_ref()?,
            _ => return None,
        })
    }
}

/// The run of median throughput among `runs` (the lower middle one of an even count).
fn median_run(runs: &[Stats]) -> Stats {
    let mut sorted: Vec<&Stats> = runs.iter().collect();
    sorted.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    *sorted[(sorted.len() - 1) / 2]
}

async fn op(setup: &Setup, variant: Variant, tenant: usize, queries: usize, id: i32) {
    match variant {
        Variant::Baseline
        | Variant::BaselineViaPgBouncer
        | Variant::BaselineViaTransactionPgBouncer => {
            // PgBouncer drops the `options` that put the baseline pool on its schema.
            let (pool, sql) = match variant {
                Variant::Baseline => (&setup.baseline, SQL),
                Variant::BaselineViaPgBouncer => (&setup.baseline_bouncer, BASE_SQL),
                _ => (&setup.baseline_transaction_bouncer, BASE_SQL),
            };
            let c = pool.get().await.unwrap();
            if variant == Variant::BaselineViaTransactionPgBouncer
                && !setup.transaction_bouncer_keeps
            {
                use tenant_schemas::tokio_postgres::types::Type;
                for _ in 0..queries {
                    c.query_typed(sql, &[(&id, Type::INT4)]).await.unwrap();
                }
                return;
            }
            let stmt = c.prepare_cached(sql).await.unwrap();
            for _ in 0..queries {
                c.query_one(&stmt, &[&id]).await.unwrap();
            }
        }
        Variant::Session
        | Variant::SessionNoAffinity
        | Variant::SessionGroups
        | Variant::SessionTenancy
        | Variant::SessionReset
        | Variant::Roles
        | Variant::RolesKept => {
            let router = setup.router(variant).expect("a router variant");
            let c = router
                .connection_for_schema(&setup.schemas[tenant])
                .await
                .unwrap();
            for _ in 0..queries {
                c.query_one(SQL, &[&id]).await.unwrap();
            }
        }
        Variant::Transaction
        | Variant::TransactionImplicit
        | Variant::TransactionViaPgBouncer
        | Variant::TransactionImplicitViaPgBouncer
        | Variant::TransactionNamedViaPgBouncer
        | Variant::TransactionViaPgBouncer118 => {
            let router = setup.router(variant).expect("PgBouncer 1.18");
            let mut c = router
                .connection_for_schema(&setup.schemas[tenant])
                .await
                .unwrap();
            if queries == 1 {
                c.query_one(SQL, &[&id]).await.unwrap();
            } else {
                let tx = c.transaction().await.unwrap();
                let stmt = tx.prepare(SQL).await.unwrap();
                for _ in 0..queries {
                    tx.query_one(&stmt, &[&id]).await.unwrap();
                }
                drop(stmt);
                tx.commit().await.unwrap();
            }
        }
        Variant::Naive => {
            let c = setup.plain.get().await.unwrap();
            c.batch_execute(&format!(
                "SET search_path TO {}, public",
                setup.schemas[tenant].quoted()
            ))
            .await
            .unwrap();
            let stmt = c.prepare_cached(SQL).await.unwrap();
            for _ in 0..queries {
                c.query_one(&stmt, &[&id]).await.unwrap();
            }
        }
        Variant::RawTwoSyncs
        | Variant::RawOneSync
        | Variant::RawTwoSyncsViaPgBouncer
        | Variant::RawOneSyncViaPgBouncer => {
            use tenant_schemas::tokio_postgres::types::Type;
            use tenant_schemas::tokio_postgres::Prelude;
            let pool = match variant {
                Variant::RawTwoSyncs | Variant::RawOneSync => &setup.plain,
                _ => &setup.baseline_transaction_bouncer,
            };
            let one_sync = matches!(
                variant,
                Variant::RawOneSync | Variant::RawOneSyncViaPgBouncer
            );
            let c = pool.get().await.unwrap();
            let path = format!(
                "SET LOCAL search_path TO {}, public",
                setup.schemas[tenant].quoted()
            );
            for _ in 0..queries {
                let mut prelude = Prelude::new();
                for sql in [
                    "BEGIN",
                    "SET LOCAL statement_timeout TO DEFAULT",
                    "DISCARD TEMP",
                    "CLOSE ALL",
                    "DISCARD SEQUENCES",
                    &path,
                ] {
                    prelude.push_text(sql).unwrap();
                }
                if one_sync {
                    prelude
                        .push_text(&SQL.replace("$1", &id.to_string()))
                        .unwrap();
                    c.query_typed_after(&prelude, "COMMIT", &[]).await.unwrap();
                } else {
                    let (rows, ended) = futures_util::future::join(
                        c.query_typed_after(&prelude, SQL, &[(&id, Type::INT4)]),
                        c.batch_execute("COMMIT"),
                    )
                    .await;
                    assert_eq!(rows.unwrap().len(), 1);
                    ended.unwrap();
                }
            }
        }
        Variant::Pipelined => {
            let c = setup.pipelined_pool.get().await.unwrap();
            let schema = &setup.schemas[tenant];
            let keyed = format!("/* {} */ {SQL}", schema.as_str());
            let set = format!("SET search_path TO {}, public", schema.quoted());
            let (switched, stmt) = futures_util::future::join(c.batch_execute(&set), async {
                let stmt = c.prepare_cached(&keyed).await.unwrap();
                c.query_one(&stmt, &[&id]).await.unwrap();
                stmt
            })
            .await;
            switched.unwrap();
            for _ in 1..queries {
                c.query_one(&stmt, &[&id]).await.unwrap();
            }
        }
        Variant::Qualified => {
            let c = setup.qualified_pool.get().await.unwrap();
            let stmt = c.prepare_cached(&setup.qualified[tenant]).await.unwrap();
            for _ in 0..queries {
                c.query_one(&stmt, &[&id]).await.unwrap();
            }
        }
    }
}

async fn run(
    setup: &Arc<Setup>,
    variant: Variant,
    picker: &Picker,
    queries: usize,
    tasks: usize,
    secs: f64,
) -> Stats {
    // Warm up: every connection of the pool, a few operations each.
    let warm = Instant::now();
    run_for(
        setup,
        variant,
        picker,
        queries,
        tasks,
        Duration::from_secs_f64((secs / 5.0).min(1.0)),
        warm,
    )
    .await;
    let started = Instant::now();
    let mut latencies = run_for(
        setup,
        variant,
        picker,
        queries,
        tasks,
        Duration::from_secs_f64(secs),
        started,
    )
    .await;
    stats(&mut latencies, started.elapsed())
}

async fn run_for(
    setup: &Arc<Setup>,
    variant: Variant,
    picker: &Picker,
    queries: usize,
    tasks: usize,
    length: Duration,
    started: Instant,
) -> Vec<Duration> {
    let setup = setup.clone();
    pick_and_run(tasks, picker, started, length, move |tenant, id| {
        let setup = setup.clone();
        async move { op(&setup, variant, tenant, queries, id).await }
    })
    .await
}

/// Transactions committed or rolled back so far in `dbname` (statistics are flushed by
/// backends at most once a second, so a run's count is approximate).
async fn server_transactions(admin: &Pool, dbname: &str) -> i64 {
    let c = admin.get().await.unwrap();
    c.batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    c.query_one(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
        &[&dbname],
    )
    .await
    .unwrap()
    .get(0)
}

/// Per pool (application name): backends, summed RSS, largest RSS, summed private RSS
/// (`RssAnon`: what the backend allocated itself, without the shared buffers it mapped).
async fn backend_rss(admin: &Pool, dbname: &str) -> BTreeMap<String, (usize, u64, u64, u64)> {
    let c = admin.get().await.unwrap();
    let rows = c
        .query(
            "SELECT pid, application_name FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
            &[&dbname],
        )
        .await
        .unwrap();
    let mut out: BTreeMap<String, (usize, u64, u64, u64)> = BTreeMap::new();
    for row in rows {
        let pid: i32 = row.get(0);
        let app: String = row.get(1);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (rss, private) = (field("VmRSS:"), field("RssAnon:"));
        let e = out.entry(app).or_default();
        e.0 += 1;
        e.1 += rss;
        e.2 = e.2.max(rss);
        e.3 += private;
    }
    out
}

#[tokio::main]
async fn main() {
    let Args {
        run: RunLength { secs, tasks },
        quick,
        single: single_only,
        affinity,
        tenants: only_tenants,
        warmup,
        variants,
        pick,
        queries: only_queries,
        explain,
        pgbouncer_prepared_statements,
        rounds,
        after_read_only,
    } = Args::parse();
    let rounds = rounds.max(1);
    let warmup = warmup.unwrap_or(secs);
    let filtered = !variants.is_empty();
    let variants = if variants.is_empty() {
        VARIANTS.to_vec()
    } else {
        variants
    };
    // Without a second PgBouncer there is no 1.18 row.
    let has_118 = std::path::Path::new(DEBIAN_PGBOUNCER).is_file()
        && TestPgBouncer::default_binary().ok().as_deref()
            != Some(std::path::Path::new(DEBIAN_PGBOUNCER));
    let variants: Vec<Variant> = variants
        .into_iter()
        .filter(|v| *v != Variant::TransactionViaPgBouncer118 || has_118)
        .collect();

    let cluster = TestCluster::start().unwrap();
    let db = cluster.create_database().await.unwrap();
    let config = db.config().clone();
    let setup_started = Instant::now();
    let n_tenants = if only_tenants > 0 { only_tenants } else { 1000 };
    let (_tenancy, schemas) =
        items_tenancy(make_pool(&config, "setup", None), n_tenants, |_| None).await;
    let admin = make_pool(&config, "admin", None);
    baseline_schema(&admin, "").await;
    // The same tenants through a `Tenancy`, without and with role mode (each given its role).
    let migrations = TenantMigrations::new().with("items", items_table());
    let plain_tenancy = Tenancy::builder(make_pool(&config, "session_tenancy", None))
        .migrations(migrations.clone())
        .build()
        .await
        .unwrap();
    let roles_tenancy = Tenancy::builder(make_pool(&config, "roles", None))
        .migrations(migrations.clone())
        .tenant_roles(TenantRoles::new())
        .build()
        .await
        .unwrap();
    let roles_kept_tenancy = Tenancy::builder(make_pool(&config, "roles_kept", None))
        .migrations(migrations)
        .tenant_roles(TenantRoles::new().keep_statements_across_tenants(true))
        .build()
        .await
        .unwrap();
    // The roles only when the `Roles` row runs: making them grows faster than linearly in
    // the number of tenants (5.5 s for 1,000, 575 s for 10,000).
    if variants.contains(&Variant::Roles) || variants.contains(&Variant::RolesKept) {
        let roles_started = Instant::now();
        roles_tenancy.sync_roles().await.unwrap();
        println!(
            "role mode: {n_tenants} tenant roles made in {:.1} s",
            roles_started.elapsed().as_secs_f64()
        );
    }
    println!(
        "setup: {n_tenants} tenants + baseline schema, {ROWS} rows each, in {:.1} s",
        setup_started.elapsed().as_secs_f64()
    );

    // PgBouncer (the harness's default: 1.25.2 where installed, with its own default of 200
    // prepared statements, as deployed) with as many server connections as the other pools
    // have; Debian's 1.18 beside it when it is another one.
    let session_bouncer = TestPgBouncer::builder(&cluster)
        .pool_size(POOL)
        .session_pooling()
        .max_prepared_statements(200)
        .start()
        .unwrap();
    let transaction_bouncer = TestPgBouncer::builder(&cluster)
        .pool_size(POOL)
        .max_prepared_statements(pgbouncer_prepared_statements)
        .start()
        .unwrap();
    let debian = std::path::Path::new(DEBIAN_PGBOUNCER);
    let bouncer_118 = (debian.is_file() && transaction_bouncer.binary() != debian).then(|| {
        TestPgBouncer::builder(&cluster)
            .pool_size(POOL)
            .binary(debian)
            .start()
            .unwrap()
    });
    println!(
        "PgBouncer {:?} ({}, max_prepared_statements {pgbouncer_prepared_statements}){}",
        transaction_bouncer.version(),
        transaction_bouncer.binary().display(),
        bouncer_118.as_ref().map_or(String::new(), |b| format!(
            "; TransactionViaPgBouncer118: {:?}",
            b.version()
        )),
    );
    let setup = Arc::new(Setup {
        qualified: schemas
            .iter()
            .map(|s| format!("SELECT v FROM {}.items WHERE id = $1", s.quoted()))
            .collect(),
        schemas,
        baseline: make_pool(&config, "baseline", Some("-c search_path=base")),
        session: SchemaRouter::new(make_pool(&config, "session", None)),
        session_tenancy: plain_tenancy.router().clone(),
        roles: roles_tenancy.router().clone(),
        roles_kept: roles_kept_tenancy.router().clone(),
        session_reset: variants.contains(&Variant::SessionReset).then(|| {
            SchemaRouter::builder(make_pool(&config, "session_reset", None))
                .reset_settings(true)
                .build()
        }),
        no_affinity: SchemaRouter::builder(make_pool(&config, "session_no_affinity", None))
            .schema_affinity(false)
            .build(),
        groups: SchemaRouter::builder(make_pool_of(&config, "session_groups", None, POOL / 4))
            .connection_groups(
                (1..4).map(|_| make_pool_of(&config, "session_groups", None, POOL / 4)),
            )
            .build(),
        transaction: transaction_router(&config, "transaction", false),
        transaction_implicit: transaction_router(&config, "transaction_implicit", true),
        plain: make_pool(&config, "naive", None),
        qualified_pool: make_pool(&config, "qualified", None),
        pipelined_pool: make_pool(&config, "pipelined", None),
        baseline_bouncer: make_pool(
            &session_bouncer.config(db.name()),
            "baseline_pgbouncer",
            None,
        ),
        baseline_transaction_bouncer: make_pool(
            &transaction_bouncer.config(db.name()),
            "baseline_transaction_pgbouncer",
            None,
        ),
        transaction_bouncer_keeps: transaction_bouncer.keeps_prepared_statements(),
        transaction_bouncer: transaction_router(
            &transaction_bouncer.config(db.name()),
            "transaction_pgbouncer",
            false,
        ),
        transaction_implicit_bouncer: transaction_router(
            &transaction_bouncer.config(db.name()),
            "transaction_implicit_pgbouncer",
            true,
        ),
        transaction_named_bouncer: SchemaRouter::builder(make_pool(
            &transaction_bouncer.config(db.name()),
            "transaction_named_pgbouncer",
            None,
        ))
        .mode(SearchPathMode::Transaction)
        .pooler_prepared_statements(true)
        .build(),
        transaction_bouncer_118: bouncer_118
            .as_ref()
            .map(|b| transaction_router(&b.config(db.name()), "transaction_pgbouncer_118", false)),
    });

    if after_read_only {
        let read_only = Tenant::new(setup.schemas[0].clone()).with_status(TenantStatus::ReadOnly);
        let c = setup
            .session
            .connection_for_tenant(&read_only)
            .await
            .unwrap();
        c.query_one(SQL, &[&1]).await.unwrap();
        println!("a read-only tenant served: every session-mode switch sets the read-only default");
    }
    println!("\n{tasks} tasks, pool {POOL}, {secs} s per run; ratio = throughput / baseline of the same row");
    if rounds > 1 {
        println!("{rounds} alternating rounds: the median run of each variant, ratio of medians");
        println!("| T | pick | queries/checkout | variant | ops/s | p50 µs | p99 µs | ratio | rounds' ops/s |");
        println!("|---|---|---|---|---|---|---|---|---|");
    } else {
        println!("| T | pick | queries/checkout | variant | ops/s | p50 µs | p99 µs | ratio |");
        println!("|---|---|---|---|---|---|---|---|");
    }
    let mut configs = vec![];
    if affinity {
        // Schema-affine checkout on and off, alternating, where it should matter most.
        let zipf = Picker::zipf(1000, 1.1);
        for _ in 0..3 {
            for v in [Variant::SessionNoAffinity, Variant::Session] {
                let router = if v == Variant::Session {
                    &setup.session
                } else {
                    &setup.no_affinity
                };
                let before = router.stats();
                let s = run(&setup, v, &zipf, 1, tasks, secs).await;
                let after = router.stats();
                println!(
                    "| {v:?} | {:.0} | {} | {} | {:.2} |",
                    s.per_sec,
                    micros(s.p50),
                    micros(s.p99),
                    (after.switches - before.switches) as f64
                        / (after.checkouts - before.checkouts) as f64
                );
            }
        }
        return;
    }
    if single_only {
        let one = Picker::Uniform(1);
        for v in [
            Variant::Baseline,
            Variant::Session,
            Variant::Baseline,
            Variant::Session,
        ] {
            let s = run(&setup, v, &one, 1, 1, secs).await;
            println!(
                "single {v:?}: p50 {} p99 {} ops/s {:.0}",
                micros(s.p50),
                micros(s.p99),
                s.per_sec
            );
        }
        return;
    }
    let tenant_counts: Vec<usize> = if only_tenants > 0 {
        vec![only_tenants]
    } else if quick {
        vec![1, 1000]
    } else {
        vec![1, 100, 1000]
    };
    for t in tenant_counts {
        for zipf in [false, true] {
            if (t == 1 && zipf) || pick.is_some_and(|p| (p == Pick::Zipf) != zipf) {
                continue;
            }
            for queries in [1usize, 5] {
                if only_queries.is_some_and(|q| q != queries) {
                    continue;
                }
                configs.push((t, zipf, queries));
            }
        }
    }
    for (t, zipf, queries) in configs {
        let picker = if zipf {
            Picker::zipf(t, 1.1)
        } else {
            Picker::Uniform(t)
        };
        if warmup > 0.0 && rounds > 1 {
            for &variant in &variants {
                run(&setup, variant, &picker, queries, tasks, warmup).await;
            }
        }
        let mut measured: Vec<Vec<Stats>> = vec![Vec::new(); variants.len()];
        for (i, &variant) in (0..rounds).flat_map(|_| variants.iter().enumerate()) {
            if warmup > 0.0 && rounds == 1 {
                run(&setup, variant, &picker, queries, tasks, warmup).await;
            }
            let router = setup.router(variant);
            let before = (
                server_transactions(&admin, db.name()).await,
                router.map(SchemaRouter::stats).unwrap_or_default(),
            );
            let s = run(&setup, variant, &picker, queries, tasks, secs).await;
            if explain {
                // `run` warms up for a fifth of the run (at most 1 s) before measuring.
                let ops = s.per_sec * (secs + (secs / 5.0).min(1.0));
                let xacts = server_transactions(&admin, db.name()).await - before.0;
                let after = router.map(SchemaRouter::stats).unwrap_or_default();
                eprintln!(
                    "  {variant:?}: {:.2} server transactions, {:.2} switches, {:.2} existence checks per operation",
                    xacts as f64 / ops,
                    (after.switches - before.1.switches) as f64 / ops,
                    (after.existence_checks - before.1.existence_checks) as f64 / ops,
                );
            }
            measured[i].push(s);
        }
        let medians: Vec<Stats> = measured
            .iter()
            .map(|runs| median_run(runs.as_slice()))
            .collect();
        for ((variant, s), runs) in variants.iter().zip(&medians).zip(&measured) {
            let mut row = format!(
                "| {t} | {} | {queries} | {variant:?} | {:.0} | {} | {} | {:.2} |",
                if zipf { "zipf 1.1" } else { "uniform" },
                s.per_sec,
                micros(s.p50),
                micros(s.p99),
                s.per_sec / medians[0].per_sec
            );
            if rounds > 1 {
                let all: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.per_sec)).collect();
                row.push_str(&format!(" {} |", all.join(", ")));
            }
            println!("{row}");
        }
    }
    println!(
        "\nrouter stats: session {:?}, transaction {:?}, transaction named via PgBouncer {:?}, \
         session tenancy {:?}, roles {:?}, roles kept {:?}",
        setup.session.stats(),
        setup.transaction.stats(),
        setup.transaction_named_bouncer.stats(),
        setup.session_tenancy.stats(),
        setup.roles.stats(),
        setup.roles_kept.stats()
    );

    println!("\nbackend memory after the runs (RSS per backend, KiB):");
    println!("| pool | backends | average | max | average private |");
    println!("|---|---|---|---|---|");
    for (app, (n, total, max, private)) in backend_rss(&admin, db.name()).await {
        let n64 = n.max(1) as u64;
        println!(
            "| {app} | {n} | {} | {max} | {} |",
            total / n64,
            private / n64
        );
    }

    if filtered {
        return;
    }
    println!("\nsingle client (1 task), one query per checkout:");
    println!("| case | p50 µs | p99 µs | p50 vs baseline |");
    println!("|---|---|---|---|");
    let one = Picker::Uniform(1);
    let b = run(&setup, Variant::Baseline, &one, 1, 1, secs).await;
    let same = run(&setup, Variant::Session, &one, 1, 1, secs).await;
    let mut rows = vec![("baseline", b), ("session, same tenant", same)];
    // Two tenants at random need two tenants (`--tenants 1` has one).
    if setup.schemas.len() >= 2 {
        let two = Picker::Uniform(2);
        let alternating = run(&setup, Variant::Session, &two, 1, 1, secs).await;
        let naive = run(&setup, Variant::Naive, &two, 1, 1, secs).await;
        rows.push(("session, 2 tenants at random", alternating));
        rows.push(("naive, 2 tenants at random", naive));
    }
    for (name, s) in rows {
        println!(
            "| {name} | {} | {} | {:+.0}% |",
            micros(s.p50),
            micros(s.p99),
            (s.p50.as_secs_f64() / b.p50.as_secs_f64() - 1.0) * 100.0
        );
    }
}
