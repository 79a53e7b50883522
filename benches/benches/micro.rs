//! Micro-benchmarks of the request path, with no database: a cached host resolve, entering
//! a scope and reading it, and the whole tower layer per request against the same service
//! without it. `cargo bench -p tenant-schemas-benches --bench micro`

#![allow(missing_docs, clippy::unwrap_used)]

use std::convert::Infallible;

use criterion::{criterion_group, criterion_main, Criterion};
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

criterion_group!(benches, resolve, scope_enter, middleware);
criterion_main!(benches);
