//! Every log line of a request names its tenant: the adapter's span carries host and tenant.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use tenant_schemas::scope;
use tenant_schemas::testing::TenantClient;
use tenant_schemas_axum::{with_tenancy, TenantLayer};

use crate::suite;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log of every test in this binary (one global subscriber per process): each test
/// looks for lines only its own handler writes.
fn captured() -> Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .init();
            captured
        })
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_of_a_request_name_host_and_tenant() {
    let captured = captured();
    let fx = suite::fixture().await;
    let router = Router::new().route(
        "/",
        get(|| async {
            tracing::info!("handling the request");
            "ok"
        }),
    );
    let app = with_tenancy(router, TenantLayer::new(fx.tenancy.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let r = TenantClient::new(addr, "beta.example.test:8080")
        .get("/")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("handling the request"))
        .unwrap_or_else(|| panic!("no log line in {log}"));
    assert!(
        line.contains("tenant_request{host=beta.example.test tenant=beta}"),
        "{line}"
    );
}

/// What `scope::spawn`, `scope::spawn_blocking` and a `scope::bind`-ed future run is part of
/// the request: their log lines are inside its `tenant_request` span, like the handler's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_of_spawned_tasks_name_host_and_tenant() {
    let captured = captured();
    let fx = suite::fixture().await;
    let router = Router::new().route(
        "/",
        get(|| async {
            scope::spawn(async { tracing::info!("in a task from scope::spawn") })
                .await
                .unwrap();
            scope::spawn_blocking(|| tracing::info!("in a task from scope::spawn_blocking"))
                .await
                .unwrap();
            tokio::spawn(scope::bind(async {
                tracing::info!("in a future from scope::bind");
            }))
            .await
            .unwrap();
            "ok"
        }),
    );
    let app = with_tenancy(router, TenantLayer::new(fx.tenancy.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let r = TenantClient::new(addr, "alpha.example.test")
        .get("/")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for message in [
        "in a task from scope::spawn",
        "in a task from scope::spawn_blocking",
        "in a future from scope::bind",
    ] {
        let line = log
            .lines()
            .find(|l| l.ends_with(message))
            .unwrap_or_else(|| panic!("no line {message:?} in {log}"));
        assert!(
            line.contains("tenant_request{host=alpha.example.test tenant=alpha}"),
            "{line}"
        );
    }
}
