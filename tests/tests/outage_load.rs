//! PostgreSQL stops under load: requests answer 503 within the pool's wait timeout (no
//! hang), and once it is back the service recovers without a restart of its own.

#![allow(clippy::unwrap_used)]

mod suite;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use tenant_schemas::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tenant_schemas::testing::TenantClient;
use tenant_schemas::tokio_postgres::NoTls;
use tenant_schemas::Tenancy;
use tenant_schemas_axum::{with_tenancy, TenantDb, TenantError, TenantLayer};

const WAIT_TIMEOUT: Duration = Duration::from_secs(2);

async fn count(db: TenantDb) -> Result<String, TenantError> {
    let row = db.query_one("SELECT count(*) FROM notes", &[]).await?;
    Ok(row.get::<_, i64>(0).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_under_load_answers_503_then_recovers() {
    let fx = suite::fixture().await;
    // The app's own pool, with short timeouts: a request waits at most WAIT_TIMEOUT.
    let manager = Manager::from_config(
        fx.cluster.config(&current_db(&fx.tenancy).await),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(8)
        .wait_timeout(Some(WAIT_TIMEOUT))
        .create_timeout(Some(WAIT_TIMEOUT))
        .runtime(Runtime::Tokio1)
        .build()
        .unwrap();
    let tenancy = Tenancy::builder(pool).build().await.unwrap();
    let app = with_tenancy(
        Router::new().route("/count", get(count)),
        TenantLayer::new(tenancy),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let start = Instant::now();
    let log: Arc<Mutex<Vec<(Duration, u16, Duration)>>> = Arc::default();
    let mut clients = Vec::new();
    for i in 0..16 {
        let log = log.clone();
        clients.push(tokio::spawn(async move {
            let host = if i % 2 == 0 {
                "alpha.example.test"
            } else {
                "beta.example.test"
            };
            let client = TenantClient::new(addr, host);
            while start.elapsed() < Duration::from_secs(9) {
                let sent = Instant::now();
                let status = client.get("/count").await.map_or(0, |r| r.status);
                log.lock()
                    .unwrap()
                    .push((sent - start, status, sent.elapsed()));
                if status != 200 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped_at = start.elapsed();
    fx.cluster.stop().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted_at = start.elapsed();
    fx.cluster.restart().unwrap();
    for c in clients {
        c.await.unwrap();
    }

    let log = log.lock().unwrap().clone();
    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    for (_, status, _) in &log {
        *by_status.entry(*status).or_default() += 1;
    }
    let slowest = log.iter().map(|(_, _, latency)| *latency).max().unwrap();
    let recovered = log
        .iter()
        .filter(|(sent, status, _)| *sent >= restarted_at && *status == 200)
        .map(|(sent, _, latency)| *sent + *latency)
        .min()
        .expect("no successful request after the restart");
    let during: Vec<_> = log
        .iter()
        .filter(|(sent, _, latency)| {
            *sent > stopped_at + Duration::from_millis(100) && *sent + *latency < restarted_at
        })
        .collect();
    println!(
        "requests {} by status {by_status:?}; slowest {:?}; down {:.1} s; recovered {:.0} ms after the restart",
        log.len(),
        slowest,
        (restarted_at - stopped_at).as_secs_f64(),
        (recovered - restarted_at).as_millis()
    );
    assert!(!during.is_empty());
    assert!(
        during.iter().all(|(_, status, _)| *status == 503),
        "while down: {during:?}"
    );
    assert!(!by_status.contains_key(&500), "{by_status:?}");
    assert!(
        !by_status.contains_key(&0),
        "a request got no answer: {by_status:?}"
    );
    assert!(slowest < WAIT_TIMEOUT * 2, "a request hung for {slowest:?}");
    assert!(recovered - restarted_at < Duration::from_secs(5));
    let last_second: Vec<_> = log
        .iter()
        .filter(|(sent, _, _)| *sent > Duration::from_secs(8))
        .collect();
    assert!(
        !last_second.is_empty() && last_second.iter().all(|(_, s, _)| *s == 200),
        "{last_second:?}"
    );
}

async fn current_db(tenancy: &Tenancy) -> String {
    let conn = tenancy.router().pool().get().await.unwrap();
    conn.query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0)
}
