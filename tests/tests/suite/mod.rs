//! The scenario every adapter must pass, over real HTTP on 127.0.0.1.
//!
//! Each adapter's test serves the same small app:
//! - `GET /` → `public site` for the public tenant, `tenant site <schema>` for the others
//!   (public and tenant routes kept apart the framework's way);
//! - `GET /notes` → the tenant's notes, one per line; `POST /notes` → adds the body as a note;
//! - `GET /stream` → a body streamed after the handler returned, each chunk naming
//!   `scope::current_schema()` at the time it is polled;
//! - `GET /spawned` → what a task started with `scope::spawn` sees.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use tenant_schemas::testing::{pool, TenantClient, TestCluster};
use tenant_schemas::{scope, Host, NewTenant, SchemaName, Tenancy, TenantMigrations};

pub struct Fixture {
    pub cluster: TestCluster,
    pub tenancy: Tenancy,
}

/// A cluster of the test's own (the outage step stops it), the public tenant on
/// `example.test`, and tenants `alpha` and `beta` on `<name>.example.test`.
pub async fn fixture() -> Fixture {
    let cluster = TestCluster::start().expect("cluster");
    let db = cluster.create_database().await.expect("database");
    let tenancy = Tenancy::builder(pool(db.config().clone(), 8).unwrap())
        .migrations(TenantMigrations::new().with(
            "notes",
            "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)",
        ))
        .build()
        .await
        .unwrap();
    tenancy
        .registry()
        .ensure_public_tenant(&Host::parse("example.test").unwrap())
        .await
        .unwrap();
    for name in ["alpha", "beta"] {
        tenancy
            .create_tenant(
                NewTenant::new(SchemaName::new(name).unwrap())
                    .domain(Host::parse(&format!("{name}.example.test")).unwrap()),
            )
            .await
            .unwrap();
    }
    Fixture { cluster, tenancy }
}

/// Three chunks, each produced on a later poll than the one before, naming the schema in
/// scope when it is produced.
pub fn schema_stream() -> impl Stream<Item = Result<Bytes, Infallible>> + Send + Sync + 'static {
    let mut step = 0u8;
    futures_util::stream::poll_fn(move |cx| {
        step += 1;
        if step > 6 {
            return Poll::Ready(None);
        }
        if step % 2 == 1 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let schema = scope::current_schema().map_or("none".to_owned(), |s| s.to_string());
        Poll::Ready(Some(Ok(Bytes::from(format!("{schema};")))))
    })
}

/// What `/spawned` answers: the schema a `scope::spawn`ed task sees.
pub async fn spawned_schema() -> String {
    scope::spawn(async { scope::current_schema().map_or("none".to_owned(), |s| s.to_string()) })
        .await
        .unwrap_or_else(|_| "join error".into())
}

fn client(addr: SocketAddr, host: &str) -> TenantClient {
    TenantClient::new(addr, host)
}

/// The scenario; `addr` serves the app.
pub async fn run(addr: SocketAddr) {
    let alpha = client(addr, "alpha.example.test");
    let beta = client(addr, "BETA.example.test:8080");

    // Each tenant sees only its own rows.
    let r = alpha
        .post("/notes", "text/plain", b"alpha's secret")
        .await
        .unwrap();
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let r = beta
        .post("/notes", "text/plain", b"beta's note")
        .await
        .unwrap();
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let a = alpha.get("/notes").await.unwrap();
    let b = beta.get("/notes").await.unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.text().trim(), "alpha's secret");
    assert_eq!(b.text().trim(), "beta's note");

    // Unknown host: 404. Malformed hosts: 400.
    let r = client(addr, "nobody.example.test")
        .get("/notes")
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.text().contains("nobody.example.test"), "{r:?}");
    for bad in [
        "bad..example.test",
        "-alpha.example.test",
        "alpha.example.test:99999",
        "a_b.test",
    ] {
        let r = client(addr, bad).get("/notes").await.unwrap();
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
    let r = TenantClient::raw(addr, b"GET /notes HTTP/1.1\r\nhost: alpha.example.test\r\nhost: beta.example.test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 400, "two Host headers: {r:?}");

    // Public site and tenant sites are routed apart.
    let r = client(addr, "example.test").get("/").await.unwrap();
    assert_eq!((r.status, r.text().trim()), (200, "public site"), "{r:?}");
    let r = alpha.get("/").await.unwrap();
    assert_eq!(
        (r.status, r.text().trim()),
        (200, "tenant site alpha"),
        "{r:?}"
    );

    // A streamed body sees the scope while it is polled.
    let r = beta.get("/stream").await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "beta;beta;beta;");

    // A task spawned with scope::spawn sees the tenant.
    let r = alpha.get("/spawned").await.unwrap();
    assert_eq!(r.text().trim(), "alpha");
}

/// The database goes away: 503 (not a hang), then the app recovers on its own.
pub async fn outage(addr: SocketAddr, cluster: &TestCluster) {
    let alpha = client(addr, "alpha.example.test");
    assert_eq!(alpha.get("/notes").await.unwrap().status, 200);
    cluster.stop().unwrap();
    let started = Instant::now();
    let r = alpha.get("/notes").await.unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        !r.text().contains("tokio"),
        "no internals in the body: {r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    cluster.restart().unwrap();
    let started = Instant::now();
    loop {
        let r = alpha.get("/notes").await.unwrap();
        if r.status == 200 {
            assert_eq!(r.text().trim(), "alpha's secret");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no recovery: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
