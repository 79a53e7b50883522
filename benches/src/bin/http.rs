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
use tenant_schemas::Host;
use tenant_schemas_axum::{with_tenancy, TenantDb, TenantError, TenantLayer};
use tenant_schemas_benches::{
    baseline_schema, items_tenancy, make_pool, micros, on_tasks, stats, Stats,
};

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
    let mut all = on_tasks(conns, |c| {
        let hosts = hosts.to_vec();
        async move {
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
        }
    })
    .await;
    stats(&mut all, started.elapsed())
}

#[tokio::main]
async fn main() {
    let Args { secs, conns } = Args::parse();
    let cluster = TestCluster::start().unwrap();
    let db = cluster.create_database().await.unwrap();
    let config = db.config().clone();
    let host = |i: usize| format!("t{i}.bench.test");
    let (tenancy, _) = items_tenancy(make_pool(&config, "setup", None), TENANTS, |i| {
        Some(Host::parse(&host(i)).unwrap())
    })
    .await;
    let hosts: Vec<String> = (0..TENANTS).map(host).collect();
    baseline_schema(&make_pool(&config, "admin", None), "").await;

    let plain = Router::new()
        .route("/item", get(item_plain))
        .route("/hello", get(|| async { "hello" }))
        .with_state(make_pool(&config, "plain", Some("-c search_path=base")));
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
