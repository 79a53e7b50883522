//! Tenant lifecycle at scale: creating tenants with a 20-table schema, migrating 10,000
//! tenants with one migration (ADD COLUMN + CREATE INDEX), and a no-op migrate over them.
//!
//! `cargo run --release -p tenant-schemas-benches --bin lifecycle -- [--create 1000] [--tenants 10000]`

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use tenant_schemas::testing::{pool, TestCluster};
use tenant_schemas::{NewTenant, RunOptions, SchemaName, Tenancy, TenantMigrations};

fn twenty_tables() -> String {
    (0..20)
        .map(|i| {
            format!(
                "CREATE TABLE t{i} (id bigserial PRIMARY KEY, owner_id bigint, name text NOT NULL \
                 CHECK (length(name) < 200), created_at timestamptz NOT NULL DEFAULT now()); \
                 CREATE INDEX t{i}_name ON t{i} (name);"
            )
        })
        .collect()
}

/// Tenant lifecycle at scale.
#[derive(Parser)]
struct Args {
    /// Tenants created per creation run.
    #[arg(long, default_value_t = 1000)]
    create: usize,
    /// Tenants to migrate at the end.
    #[arg(long, default_value_t = 10_000)]
    tenants: usize,
}

async fn create_many(
    tenancy: &Tenancy,
    prefix: &str,
    n: usize,
    workers: usize,
) -> (Vec<Duration>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (tenancy, next, prefix) = (tenancy.clone(), next.clone(), prefix.to_owned());
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let schema = SchemaName::new(&format!("{prefix}{i}")).unwrap();
                let t0 = Instant::now();
                tenancy.create_tenant(NewTenant::new(schema)).await.unwrap();
                latencies.push(t0.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    (all, started.elapsed())
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let Args {
        create,
        tenants: total,
    } = Args::parse();
    let cluster = TestCluster::start().unwrap();
    let db = cluster.create_database().await.unwrap();
    let v1 = TenantMigrations::new().with("twenty_tables", twenty_tables());
    let tenancy = Tenancy::builder(pool(db.config().clone(), 16).unwrap())
        .migrations(v1.clone())
        .build()
        .await
        .unwrap();

    println!("| creation | tenants | creators | p50 ms | p95 ms | tenants/s |");
    println!("|---|---|---|---|---|---|");
    for workers in [1, 4] {
        let (mut lat, elapsed) =
            create_many(&tenancy, &format!("c{workers}_"), create, workers).await;
        lat.sort();
        println!(
            "| migrations, pipelined in one transaction | {create} | {workers} | {:.1} | {:.1} | {:.0} |",
            percentile(&lat, 0.5),
            percentile(&lat, 0.95),
            create as f64 / elapsed.as_secs_f64()
        );
    }
    // Clone of a template tenant kept at the latest version (no rows): the same migrations
    // plus a catalog scan and a copy per table.
    tenancy
        .create_tenant(NewTenant::new(SchemaName::new("template").unwrap()))
        .await
        .unwrap();
    let template = SchemaName::new("template").unwrap();
    let mut lat = Vec::new();
    let started = Instant::now();
    let clones = create.min(300);
    for i in 0..clones {
        let t0 = Instant::now();
        tenancy
            .clone_tenant(
                &template,
                NewTenant::new(SchemaName::new(&format!("k{i}")).unwrap()),
            )
            .await
            .unwrap();
        lat.push(t0.elapsed());
    }
    lat.sort();
    println!(
        "| clone of a template tenant | {clones} | 1 | {:.1} | {:.1} | {:.0} |",
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        clones as f64 / started.elapsed().as_secs_f64()
    );

    // Grow to `total` tenants, then migrate them all.
    let have = 2 * create + 1 + clones;
    let started = Instant::now();
    if total > have {
        create_many(&tenancy, "m_", total - have, 4).await;
    }
    println!(
        "\ncreated the rest up to {total} tenants in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let v2 = v1.with(
        "add_column_and_index",
        "ALTER TABLE t0 ADD COLUMN note text; CREATE INDEX t0_note ON t0 (note);",
    );
    let migrator = Tenancy::builder(pool(db.config().clone(), 16).unwrap())
        .migrations(v2)
        .build()
        .await
        .unwrap();
    let report = migrator
        .migrate(&RunOptions::default(), None)
        .await
        .unwrap();
    let migrated = report.schemas.len();
    println!("\n| migrate run | tenants | migrated | failed | seconds |");
    println!("|---|---|---|---|---|");
    println!(
        "| one migration (ADD COLUMN + CREATE INDEX) | {total} | {migrated} | {} | {:.1} |",
        report.failures().count(),
        report.elapsed.as_secs_f64()
    );
    let noop = migrator
        .migrate(&RunOptions::default(), None)
        .await
        .unwrap();
    println!(
        "| no-op (everything up to date) | {total} | {} | {} | {:.3} |",
        noop.schemas.len(),
        noop.failures().count(),
        noop.elapsed.as_secs_f64()
    );
}
