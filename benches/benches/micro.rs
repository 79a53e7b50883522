//! Micro-benchmarks of the request path, with no database: a cached host resolve, entering
//! a scope and reading it, reading what a statement's SQL may do (a text seen before against
//! texts never seen), and the whole tower layer per request against the same service without
//! it. `cargo bench -p tenant-schemas-benches --bench micro`

#![allow(missing_docs, clippy::unwrap_used)]

use std::convert::Infallible;

use criterion::{criterion_group, criterion_main, Criterion};
use tenant_schemas::checkout::SqlEffects;
use tenant_schemas::testing::pool;
use tenant_schemas::{
    scope, CachedResolver, Host, SchemaName, StaticResolver, Tenancy, Tenant, TenantResolver,
};
use tenant_schemas_tower::TenantLayer;
use tower::{service_fn, Layer, Service, ServiceExt};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn hosts(n: usize) -> StaticResolver {
    (0..n).fold(StaticResolver::new(), |r, i| {
        r.with(
            Host::parse(&format!("t{i}.example.com")).unwrap(),
            Tenant::new(SchemaName::new(&format!("t{i}")).unwrap()),
        )
    })
}

fn resolve(c: &mut Criterion) {
    let rt = runtime();
    let cached = CachedResolver::new(hosts(1000));
    let host = Host::parse("t42.example.com").unwrap();
    rt.block_on(cached.resolve(&host)).unwrap();
    c.bench_function("cached resolve (hit)", |b| {
        b.to_async(&rt)
            .iter(|| async { cached.resolve(&host).await.unwrap() });
    });
    c.bench_function("host parse", |b| {
        b.iter(|| Host::parse("T42.Example.com:443").unwrap());
    });
}

fn scope_enter(c: &mut Criterion) {
    let rt = runtime();
    let tenant = Tenant::new(SchemaName::new("acme").unwrap());
    c.bench_function("scope::run + current_schema", |b| {
        b.to_async(&rt)
            .iter(|| scope::run(tenant.clone(), async { scope::current_schema().unwrap() }));
    });
    c.bench_function("current_schema (inside a scope)", |b| {
        scope::sync_run(tenant.clone(), || {
            b.iter(|| scope::current_schema().unwrap());
        });
    });
}

fn middleware(c: &mut Criterion) {
    let rt = runtime();
    // No statement runs: the registry is not installed and hosts come from a static map, so
    // the pool never connects.
    let tenancy = rt
        .block_on(async {
            let db = tenant_schemas::tokio_postgres::Config::new();
            Tenancy::builder(pool(db, 1).unwrap())
                .resolver(hosts(1000))
                .install_registry(false)
                .build()
                .await
        })
        .unwrap();
    let handler = service_fn(|_req: http::Request<String>| async {
        Ok::<_, Infallible>(http::Response::new(String::from("ok")))
    });
    let layered = TenantLayer::new(tenancy).layer(handler);
    let request = || {
        http::Request::builder()
            .uri("/notes")
            .header("host", "t42.example.com")
            .body(String::new())
            .unwrap()
    };
    rt.block_on(layered.clone().oneshot(request())).unwrap();
    let mut group = c.benchmark_group("per request, in-process");
    group.bench_function("without the tenant layer", |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = handler;
            async move { svc.call(request()).await.unwrap() }
        });
    });
    group.bench_function("with the tenant layer", |b| {
        b.to_async(&rt).iter(|| {
            let svc = layered.clone();
            async move { svc.oneshot(request()).await.unwrap() }
        });
    });
    group.finish();
}

/// A statement as applications write them: a join, a filter and an order, 600-odd bytes.
const REPORT_SQL: &str = "SELECT o.id, o.number, o.placed_at, o.status, o.total_cents, \
     c.id AS customer_id, c.name AS customer_name, c.email AS customer_email, \
     a.line1, a.line2, a.city, a.postal_code, a.country, \
     (SELECT count(*) FROM order_lines l WHERE l.order_id = o.id) AS lines, \
     (SELECT coalesce(sum(p.amount_cents), 0) FROM payments p \
        WHERE p.order_id = o.id AND p.state = 'captured') AS paid_cents \
     FROM orders o \
     JOIN customers c ON c.id = o.customer_id \
     LEFT JOIN addresses a ON a.id = o.shipping_address_id \
     WHERE o.placed_at >= $1 AND o.placed_at < $2 AND o.status = ANY($3) \
       AND ($4::text IS NULL OR c.email ILIKE '%' || $4 || '%') \
     ORDER BY o.placed_at DESC, o.id DESC \
     LIMIT $5 OFFSET $6";

/// What a statement may do, read by the router before every statement it runs from text
/// (`SqlEffects::of` reads it as the router does). "seen before": the same text each time,
/// as an application runs its statements; "never seen": a cycle of more distinct texts
/// than the per-thread memo keeps, so each one is read (and put in the memo) — what every
/// statement cost before the memo.
fn sql_effects(c: &mut Criterion) {
    for (name, sql) in [
        ("short SELECT", "SELECT v FROM items WHERE id = $1"),
        ("600-byte report", REPORT_SQL),
    ] {
        let unseen: Vec<String> = (0..5_000).map(|n| format!("{sql} -- {n}")).collect();
        let mut group = c.benchmark_group(format!("SqlEffects::of, {name}"));
        group.bench_function("seen before", |b| {
            b.iter(|| SqlEffects::of(std::hint::black_box(sql)));
        });
        let mut next = unseen.iter().cycle();
        group.bench_function("never seen", |b| {
            b.iter(|| SqlEffects::of(std::hint::black_box(next.next().unwrap())));
        });
        group.finish();
    }
}

criterion_group!(benches, resolve, scope_enter, sql_effects, middleware);
criterion_main!(benches);
