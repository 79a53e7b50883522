//! The scenario every adapter must pass, over real HTTP on 127.0.0.1.
//!
//! Each adapter's test serves the same small app:
//! - `GET /` → `public site` for the public tenant, `tenant site <schema>` for the others
//!   (public and tenant routes kept apart the framework's way);
//! - `GET /notes` → the tenant's notes, one per line; `POST /notes` → adds the body as a note;
//! - `GET /stream` → a body streamed after the handler returned, each chunk naming
//!   `scope::current_schema()` at the time it is polled;
//! - `GET /spawned` → what a task started with `scope::spawn` sees.
//!
//! The tenant is found by the request's host, then by an `X-Tenant` header naming the
//! schema ([`strategies`]).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use tenant_schemas::deadpool_postgres::Pool;
use tenant_schemas::request::Strategy;
use tenant_schemas::testing::{pool, TenantClient, TestCluster, TestResponse};
use tenant_schemas::{
    scope, Host, NewTenant, SchemaName, Tenancy, TenantClaim, TenantMigrations, TenantStatus,
};

pub struct Fixture {
    pub cluster: TestCluster,
    pub tenancy: Tenancy,
}

/// A cluster of the test's own (the outage step stops it), the public tenant on
/// `example.test`, and tenants `alpha` and `beta` on `<name>.example.test`.
pub async fn fixture() -> Fixture {
    // Every statement is logged, so the hostile-input step can check what reached the server.
    let cluster = TestCluster::start_with_settings(&["log_statement=all"]).expect("cluster");
    let db = cluster.create_database().await.expect("database");
    let tenancy = tenancy(pool(db.config().clone(), 8).unwrap(), &["alpha", "beta"]).await;
    Fixture { cluster, tenancy }
}

/// How every adapter's app finds the tenant: the host first, then the `X-Tenant` header.
pub fn strategies() -> [Strategy; 2] {
    [
        Strategy::Host,
        Strategy::Header(http::HeaderName::from_static("x-tenant")),
    ]
}

/// The app's credential: a `session=<schema>` cookie naming the tenant its user signed in
/// to (a real app signs it; what the library checks is whom it names). Every adapter's app
/// binds credentials with it
/// ([`credential_tenant`](tenant_schemas::request::RequestResolverBuilder::credential_tenant)).
pub fn session_tenant(headers: &http::HeaderMap) -> Option<TenantClaim> {
    let cookies = headers.get(http::header::COOKIE)?.to_str().ok()?;
    let session = cookies
        .split(';')
        .find_map(|c| c.trim().strip_prefix("session="))?;
    Some(TenantClaim::Schema(SchemaName::new(session).ok()?))
}

/// A tenancy over `pool` with a `notes` table per tenant: the public tenant on
/// `example.test`, and `tenants` on `<name>.example.test`. No tenant has a connection limit
/// until one is set (see [`busy`]); a checkout over its limit does not wait.
pub async fn tenancy(pool: Pool, tenants: &[&str]) -> Tenancy {
    let tenancy = Tenancy::builder(pool)
        .migrations(TenantMigrations::new().with(
            "notes",
            "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)",
        ))
        .tenant_limits(tenant_schemas::TenantLimits::new().max_waiting(0))
        .build()
        .await
        .unwrap();
    tenancy
        .ensure_public_tenant(&Host::parse("example.test").unwrap())
        .await
        .unwrap();
    for name in tenants {
        tenancy
            .create_tenant(
                NewTenant::new(SchemaName::new(name).unwrap())
                    .domain(Host::parse(&format!("{name}.example.test")).unwrap()),
            )
            .await
            .unwrap();
    }
    tenancy
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

/// A rejection or a library error answered by the adapter: plain text the browser must not
/// sniff, the same way in every adapter.
fn assert_plain_text(r: &TestResponse) {
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{r:?}"
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{r:?}");
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
    assert_plain_text(&r);
    for bad in [
        "bad..example.test",
        "-alpha.example.test",
        "alpha.example.test:99999",
        "a_b.test",
    ] {
        let r = client(addr, bad).get("/notes").await.unwrap();
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert_plain_text(&r);
    }
    let r = TenantClient::raw(addr, b"GET /notes HTTP/1.1\r\nhost: alpha.example.test\r\nhost: beta.example.test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 400, "two Host headers: {r:?}");

    // The tenant header, reached when the host names no tenant: one names the tenant; two,
    // or a list in one, are refused as two Host headers are.
    let nobody = client(addr, "nobody.example.test");
    let r = nobody
        .send("GET", "/", &[("x-tenant", "beta")], b"")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.text().trim()),
        (200, "tenant site beta"),
        "{r:?}"
    );
    for headers in [
        &b"x-tenant: alpha\r\nx-tenant: beta\r\n"[..],
        b"x-tenant: beta\r\nx-tenant: beta\r\n",
        b"x-tenant: alpha, beta\r\n",
    ] {
        let request = [
            &b"GET / HTTP/1.1\r\nhost: nobody.example.test\r\n"[..],
            headers,
            b"connection: close\r\n\r\n",
        ]
        .concat();
        let r = TenantClient::raw(addr, &request).await.unwrap();
        assert_eq!(r.status, 400, "{}: {r:?}", String::from_utf8_lossy(headers));
        assert!(r.text().contains("more than one x-tenant header"), "{r:?}");
        assert_plain_text(&r);
    }

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

    tenant_hosts_do_not_reach_the_public_site_under_the_path_token(addr).await;
}

/// Tenant states, as every adapter must answer them: read-only tenants are served but
/// cannot write (403), maintenance is 503 with `Retry-After`, suspended 403, archived 404;
/// back to active, the tenant writes again (no pooled connection stayed read-only) and the
/// other tenant was never affected.
pub async fn states(addr: SocketAddr, tenancy: &Tenancy) {
    let alpha_schema = SchemaName::new("alpha").unwrap();
    let alpha = client(addr, "alpha.example.test");
    let beta = client(addr, "beta.example.test");
    let set = |status| {
        let tenancy = tenancy.clone();
        let schema = alpha_schema.clone();
        async move { tenancy.set_status(&schema, status).await.unwrap() }
    };

    set(TenantStatus::ReadOnly).await;
    let r = alpha.get("/notes").await.unwrap();
    assert_eq!(r.status, 200, "a read-only tenant is served: {r:?}");
    for _ in 0..3 {
        let r = alpha
            .post("/notes", "text/plain", b"written while read-only")
            .await
            .unwrap();
        assert_eq!(r.status, 403, "a read-only tenant's write: {r:?}");
        assert_plain_text(&r);
        // Another tenant, likely on the same pooled connections, still writes.
        let r = beta
            .post("/notes", "text/plain", b"beta while alpha is read-only")
            .await
            .unwrap();
        assert!(r.status == 200 || r.status == 201, "{r:?}");
    }

    set(TenantStatus::Maintenance).await;
    let r = alpha.get("/notes").await.unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("60"), "{r:?}");
    assert_plain_text(&r);

    set(TenantStatus::Suspended).await;
    let r = alpha.get("/").await.unwrap();
    assert_eq!(r.status, 403, "{r:?}");
    assert_plain_text(&r);

    set(TenantStatus::Archived).await;
    let r = alpha.get("/notes").await.unwrap();
    assert_eq!(r.status, 404, "{r:?}");

    set(TenantStatus::Active).await;
    for _ in 0..3 {
        let r = alpha
            .post("/notes", "text/plain", b"active again")
            .await
            .unwrap();
        assert!(r.status == 200 || r.status == 201, "{r:?}");
    }
    let notes = alpha.get("/notes").await.unwrap().text();
    assert!(!notes.contains("written while read-only"), "{notes}");
    assert!(!notes.contains("beta"), "{notes}");
    assert_eq!(notes.matches("active again").count(), 3, "{notes}");
    // Leave the tenants' notes as the later steps expect them.
    let router = tenancy.router();
    for (schema, body) in [
        ("alpha", "active again"),
        ("beta", "beta while alpha is read-only"),
    ] {
        let db = router
            .connection_for_schema(&SchemaName::new(schema).unwrap())
            .await
            .unwrap();
        db.execute("DELETE FROM notes WHERE body = $1", &[&body])
            .await
            .unwrap();
    }
}

/// Fair sharing: alpha limited to one connection, which the test holds: alpha's requests
/// are answered 503 with `Retry-After` at once, beta's are served; alpha is served again
/// once the connection is back.
pub async fn busy(addr: SocketAddr, tenancy: &Tenancy) {
    let (alpha_schema, alpha, beta) = (
        SchemaName::new("alpha").unwrap(),
        client(addr, "alpha.example.test"),
        client(addr, "beta.example.test"),
    );
    tenancy
        .set_max_connections(&alpha_schema, Some(1))
        .await
        .unwrap();
    let held = tenancy
        .router()
        .connection_for_schema(&alpha_schema)
        .await
        .unwrap();
    let r = alpha.get("/notes").await.unwrap();
    assert_eq!(r.status, 503, "alpha over its limit: {r:?}");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    assert!(r.text().contains("busy"), "{r:?}");
    assert_plain_text(&r);
    let r = beta.get("/notes").await.unwrap();
    assert_eq!(r.status, 200, "beta meanwhile: {r:?}");
    drop(held);
    let r = alpha.get("/notes").await.unwrap();
    assert_eq!(r.status, 200, "alpha with its connection back: {r:?}");
    tenancy
        .set_max_connections(&alpha_schema, None)
        .await
        .unwrap();
    timed_out(addr, tenancy).await;
}

/// A statement cancelled by the tenant's `statement_timeout` (alpha's notes locked by
/// another session, so its list waits past 100 ms) is answered 503 with `Retry-After`, not
/// 500; beta is served meanwhile, alpha again once the lock is gone.
async fn timed_out(addr: SocketAddr, tenancy: &Tenancy) {
    let (alpha_schema, alpha, beta) = (
        SchemaName::new("alpha").unwrap(),
        client(addr, "alpha.example.test"),
        client(addr, "beta.example.test"),
    );
    tenancy
        .set_statement_timeout(&alpha_schema, Some(std::time::Duration::from_millis(100)))
        .await
        .unwrap();
    let mut locker = tenancy.router().pool().get().await.unwrap();
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE alpha.notes IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let r = alpha.get("/notes").await.unwrap();
    assert_eq!(r.status, 503, "alpha's statement cancelled: {r:?}");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    assert!(r.text().contains("too long"), "{r:?}");
    assert_plain_text(&r);
    let r = beta.get("/notes").await.unwrap();
    assert_eq!(r.status, 200, "beta meanwhile: {r:?}");
    lock.rollback().await.unwrap();
    drop(locker);
    tenancy
        .set_statement_timeout(&alpha_schema, None)
        .await
        .unwrap();
    let r = alpha.get("/notes").await.unwrap();
    assert_eq!(r.status, 200, "alpha without the lock: {r:?}");
}

/// Credentials bound to their tenant: a session issued for beta reaches nothing of alpha
/// (read or write, by host or by the `X-Tenant` header), nor the public site; alpha's own
/// session and requests without one are served.
pub async fn credentials(addr: SocketAddr) {
    let alpha = client(addr, "alpha.example.test");
    let cookie = |schema: &str| format!("theme=dark; session={schema}");
    let with = |schema: &str| vec![("cookie".to_owned(), cookie(schema))];
    let send = |c: TenantClient,
                method: &'static str,
                path: &'static str,
                headers: Vec<(String, String)>,
                body: &'static [u8]| async move {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        c.send(method, path, &headers, body).await.unwrap()
    };

    let before = alpha.get("/notes").await.unwrap();
    assert_eq!(before.status, 200, "{before:?}");
    let r = send(alpha.clone(), "GET", "/notes", with("alpha"), b"").await;
    assert_eq!(r.status, 200, "alpha's own session: {r:?}");
    assert_eq!(r.text(), before.text());

    let r = send(alpha.clone(), "GET", "/notes", with("beta"), b"").await;
    assert_eq!(r.status, 403, "beta's session on alpha's host: {r:?}");
    assert_plain_text(&r);
    assert!(r.text().contains("another site"), "{r:?}");
    assert!(!r.text().contains("alpha's secret"), "{r:?}");
    let mut headers = with("beta");
    headers.push(("content-type".to_owned(), "text/plain".to_owned()));
    let r = send(
        alpha.clone(),
        "POST",
        "/notes",
        headers,
        b"written with beta's session",
    )
    .await;
    assert_eq!(
        r.status, 403,
        "a write with beta's session on alpha's host: {r:?}"
    );
    assert_eq!(
        alpha.get("/notes").await.unwrap().text(),
        before.text(),
        "alpha changed"
    );

    // Found by the header strategy instead of the host: the same.
    let mut headers = with("beta");
    headers.push(("x-tenant".to_owned(), "alpha".to_owned()));
    let r = send(
        client(addr, "elsewhere.test"),
        "GET",
        "/notes",
        headers,
        b"",
    )
    .await;
    assert_eq!(r.status, 403, "beta's session, X-Tenant: alpha: {r:?}");

    // The main site is a tenant too.
    let public = client(addr, "example.test");
    let r = send(public.clone(), "GET", "/", with("alpha"), b"").await;
    assert_eq!(r.status, 403, "alpha's session on the public site: {r:?}");
    let r = public.get("/").await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
}

/// Where the public site lives under the public path token `/main` (one router for both),
/// a tenant's host asking for `/main…` must not reach it (404): the public site's routes
/// would run in the tenant's scope. Apps without a token answer 404 there anyway.
pub async fn tenant_hosts_do_not_reach_the_public_site_under_the_path_token(addr: SocketAddr) {
    let alpha = client(addr, "alpha.example.test");
    for path in [
        "/main",
        "/main/",
        "/main?x=1",
        "/main/?x=1",
        "/main/whoami",
        "/%6Dain/",
        "/%6d%61%69%6e/whoami",
        "//main/",
    ] {
        let r = alpha.get(path).await.unwrap();
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert!(!r.text().contains("public site"), "{path}: {r:?}");
        assert!(!r.text().contains("alpha"), "{path}: {r:?}");
    }
    // The public host still gets its site.
    let r = client(addr, "example.test").get("/").await.unwrap();
    assert_eq!((r.status, r.text().trim()), (200, "public site"), "{r:?}");
}

/// The database goes away: 503 (not a hang), then the app recovers on its own.
pub async fn outage(addr: SocketAddr, cluster: &TestCluster) {
    let alpha = client(addr, "alpha.example.test");
    assert_eq!(alpha.get("/notes").await.unwrap().status, 200);
    cluster.stop().unwrap();
    let started = Instant::now();
    let r = alpha.get("/notes").await.unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_plain_text(&r);
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

/// Host values no client should send. None may answer anything but 400 or 404.
pub fn hostile_hosts() -> Vec<Vec<u8>> {
    let mut hosts: Vec<Vec<u8>> = [
        "x'; DROP SCHEMA public CASCADE; --.example.test",
        "alpha\".example.test",
        "alpha.example.test' OR '1'='1",
        "a%27b.example.test",
        "bücher.example.test",
        "ａｌｐｈａ.example.test",
        "alpha.example.test:0",
        "alpha.example.test:65536",
        "alpha.example.test:-1",
        "alpha.example.test:80:80",
        "alpha.example.test:",
        "[::1]",
        "[::1]:8080",
        "[::ffff:127.0.0.1]",
        "[fe80::1%eth0]",
        "[1:2:3:4:5:6:7:8:9]",
        "::1",
        "127.0.0.1",
        "999.999.999.999",
        "alpha..example.test",
        "..",
        ".alpha.example.test",
        "alpha.example.test..",
        "-alpha.example.test",
        "alpha-.example.test",
        "nobody.example.test.",
        "",
        " ",
        "alpha example.test",
        "alpha.example.test/../beta",
        "alpha.example.test\\beta",
        "user@alpha.example.test",
        "alpha.example.test#frag",
        "alpha.example.test?x=1",
        "*.example.test",
        "_alpha.example.test",
        "xn--80ak6aa92e.test",
        "public.example.test",
        "pg_catalog.example.test",
        "information-schema.example.test",
        "$user.example.test",
        "alpha.example.test;beta.example.test",
        "alpha.example.test,beta.example.test",
    ]
    .iter()
    .map(|h| h.as_bytes().to_vec())
    .collect();
    hosts.push(format!("{}.test", "a".repeat(64)).into_bytes());
    hosts.push(format!("{}test", "ab.".repeat(100)).into_bytes());
    hosts.push("a.".repeat(130).into_bytes());
    hosts.push(b"alpha.example.test\x00".to_vec());
    hosts.push(b"alpha\x01.example.test".to_vec());
    hosts.push(b"alpha\x7f.example.test".to_vec());
    hosts.push(b"alpha\xff\xfe.example.test".to_vec());
    hosts.push(b"alpha\t.example.test".to_vec());
    hosts
}

/// Sends every hostile host (plus two Host headers, a Host/URI mismatch, and no Host at
/// all): each answers 400 or 404, never 500; and no statement the server logged carries
/// any of it except as a bind parameter.
pub async fn hostile(addr: SocketAddr, cluster: &TestCluster) {
    let hosts = hostile_hosts();
    assert!(hosts.len() >= 40);
    let mut requests: Vec<Vec<u8>> = hosts
        .iter()
        .map(|h| {
            [
                b"GET /notes HTTP/1.1\r\nhost: ".as_slice(),
                h,
                b"\r\nconnection: close\r\n\r\n",
            ]
            .concat()
        })
        .collect();
    requests.push(b"GET /notes HTTP/1.1\r\nhost: alpha.example.test\r\nhost: beta.example.test\r\nconnection: close\r\n\r\n".to_vec());
    requests.push(b"GET http://beta.example.test/notes HTTP/1.1\r\nhost: alpha.example.test\r\nconnection: close\r\n\r\n".to_vec());
    requests.push(b"GET /notes HTTP/1.1\r\nconnection: close\r\n\r\n".to_vec());
    for request in &requests {
        let shown = String::from_utf8_lossy(request).escape_debug().to_string();
        let r = TenantClient::raw(addr, request)
            .await
            .unwrap_or_else(|e| panic!("{shown}: no answer ({e})"));
        assert!(
            r.status == 400 || r.status == 404,
            "{shown}: {} {}",
            r.status,
            r.text()
        );
    }
    let log = std::fs::read_to_string(cluster.log_file().unwrap()).unwrap();
    let markers = [
        "DROP SCHEMA public",
        "'1'='1",
        "bücher",
        "$user.example",
        "pg_catalog.example",
        "information-schema.example",
        "xn--80ak6aa92e",
        "public.example.test",
    ];
    let mut seen_as_parameter = 0;
    for line in log
        .lines()
        .filter(|l| markers.iter().any(|m| l.contains(m)))
    {
        assert!(
            line.contains("parameters: $1 = '"),
            "input reached SQL text: {line}"
        );
        seen_as_parameter += 1;
    }
    assert!(seen_as_parameter > 0, "the log check saw no lookup at all");
}
