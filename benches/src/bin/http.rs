//! HTTP end to end: the same axum app with and without the tenant layer, under load from
//! keep-alive clients on 127.0.0.1, ratios printed against the app without it.
//!
//! `cargo run --release -p tenant-schemas-benches --bin http -- [--secs 5] [--conns 32]`

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use tenant_schemas::deadpool_postgres::Pool;
use tenant_schemas::testing::TestCluster;
use tenant_schemas::tokio_postgres::Config;
use tenant_schemas::{Host, NewTenant, SchemaName, Tenancy, TenantMigrations};
use tenant_schemas_axum::{with_tenancy, TenantDb, TenantError, TenantLayer};
use tenant_schemas_benches::{micros, stats, Stats};

const TENANTS: usize = 100;

/// HTTP end to end, with and without the tenant layer.
#[derive(Parser)]
struct Args {
    /// Seconds per measured run.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Keep-alive client connections.
    #[arg(long, default_value_t = 32)]
    conns: usize,
}

fn make_pool(config: &Config, options: Option<&str>) -> Pool {
    let mut config = config.clone();
    if let Some(o) = options {
        config.options(o);
    }
    tenant_schemas::testing::pool(config, 16).unwrap()
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn item_plain(State(pool): State<Pool>) -> String {
    let c = pool.get().await.unwrap();
    let stmt = c
        .prepare_cached("SELECT v FROM items WHERE id = $1")
        .await
        .unwrap();
    c.query_one(&stmt, &[&7]).await.unwrap().get(0)
}

async fn item_tenant(db: TenantDb) -> Result<String, TenantError> {
    Ok(db
        .query_one("SELECT v FROM items WHERE id = $1", &[&7])
        .await?
        .get(0))
}

/// `conns` keep-alive connections send GETs for `secs`, cycling through `hosts`.
async fn load(
    addr: SocketAddr,
    path: &'static str,
    hosts: &[String],
    conns: usize,
    secs: f64,
) -> Stats {
    let started = Instant::now();
    let length = Duration::from_secs_f64(secs);
    let mut handles = Vec::new();
    for c in 0..conns {
        let hosts = hosts.to_vec();
        handles.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            let mut i = c;
            while started.elapsed() < length {
                i = (i + 7) % hosts.len();
                let req = http::Request::get(path)
                    .header("host", &hosts[i])
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let t0 = Instant::now();
                let res = sender.send_request(req).await.unwrap();
                assert!(res.status().is_success(), "{}", res.status());
                res.into_body().collect().await.unwrap();
                latencies.push(t0.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    stats(&mut all, started.elapsed())
}

#[tokio::main]
async fn main() {
    let Args { secs, conns } = Args::parse();
    let cluster = TestCluster::start().unwrap();
    let db = cluster.create_database().await.unwrap();
    let config = db.config().clone();
    let table = "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL); \
                 INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 100) g";
    let tenancy = Tenancy::builder(make_pool(&config, None))
        .migrations(TenantMigrations::new().with("items", table))
        .build()
        .await
        .unwrap();
    let mut hosts = Vec::new();
    for i in 0..TENANTS {
        let host = format!("t{i}.bench.test");
        tenancy
            .create_tenant(
                NewTenant::new(SchemaName::new(&format!("t{i}")).unwrap())
                    .domain(Host::parse(&host).unwrap()),
            )
            .await
            .unwrap();
        hosts.push(host);
    }
    let admin = make_pool(&config, None);
    admin
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE SCHEMA base; SET search_path TO base; {table}"
        ))
        .await
        .unwrap();

    let plain = Router::new()
        .route("/item", get(item_plain))
        .route("/hello", get(|| async { "hello" }))
        .with_state(make_pool(&config, Some("-c search_path=base")));
    let tenant_app = with_tenancy(
        Router::new()
            .route("/item", get(item_tenant))
            .route("/hello", get(|| async { "hello" })),
        TenantLayer::new(tenancy.clone()),
    );
    let plain_addr = serve(plain).await;
    let tenant_addr = serve(tenant_app).await;
    let one_host = vec!["t0.bench.test".to_owned()];

    println!("{conns} keep-alive connections, {secs} s per run, {TENANTS} tenants picked in turn");
    println!("| route | app | req/s | p50 µs | p99 µs | ratio |");
    println!("|---|---|---|---|---|---|");
    for (path, label) in [("/hello", "no database"), ("/item", "one PK SELECT")] {
        // Warm-up of both apps.
        load(plain_addr, path, &hosts, conns, 0.5).await;
        load(tenant_addr, path, &hosts, conns, 0.5).await;
        let base = load(plain_addr, path, &hosts, conns, secs).await;
        let one = load(tenant_addr, path, &one_host, conns, secs).await;
        let many = load(tenant_addr, path, &hosts, conns, secs).await;
        for (app, s) in [
            ("without the layer", base),
            ("with the layer, 1 tenant", one),
            ("with the layer, 100 tenants", many),
        ] {
            println!(
                "| {path} ({label}) | {app} | {:.0} | {} | {} | {:.2} |",
                s.per_sec,
                micros(s.p50),
                micros(s.p99),
                s.per_sec / base.per_sec
            );
        }
    }
}
