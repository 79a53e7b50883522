//! Request resolution strategies, fallbacks and forwarded hosts, against the real registry.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use tenant_schemas::request::{Rejection, RequestResolver, Strategy, UnknownTenant};
use tenant_schemas::testing::{TestCluster, TestDatabase};
use tenant_schemas::{SchemaName, Tenancy, Tenant, TenantStatus};

use crate::suite;

fn req(uri: &str, headers: &[(&str, &str)]) -> (Uri, HeaderMap) {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    (uri.parse().unwrap(), map)
}

/// A fresh database on the shared cluster: the public tenant on `example.test`, tenants
/// `acme` and `beta` on `<name>.example.test`.
async fn setup() -> (TestDatabase, Tenancy) {
    let db = TestCluster::shared()
        .unwrap()
        .create_database()
        .await
        .unwrap();
    let tenancy = suite::tenancy(db.pool().clone(), &["acme", "beta"]).await;
    (db, tenancy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_prefix_header_and_chain() {
    let (_db, tenancy) = setup().await;
    let resolver = RequestResolver::builder(tenancy.clone())
        .strategies([
            Strategy::path_prefix("/t/"),
            Strategy::Header(http::HeaderName::from_static("x-tenant")),
            Strategy::Host,
        ])
        .build();

    // Path prefix wins, and is stripped.
    let (uri, h) = req("/t/beta/notes?page=2", &[("host", "acme.example.test")]);
    let r = resolver.resolve(&uri, &h).await.unwrap();
    assert_eq!(r.tenant.schema().as_str(), "beta");
    assert_eq!(r.path_and_query.as_deref(), Some("/notes?page=2"));
    assert_eq!(r.rewrite_uri(&uri).to_string(), "/notes?page=2");

    // An unknown or invalid prefix falls through to the header, then to the host.
    let (uri, h) = req(
        "/t/nobody/notes",
        &[("host", "acme.example.test"), ("x-tenant", "beta")],
    );
    let r = resolver.resolve(&uri, &h).await.unwrap();
    assert_eq!(r.tenant.schema().as_str(), "beta");
    assert_eq!(r.path_and_query, None);
    // Two tenant headers, or a list in one, are refused as two Host headers are: 400.
    for headers in [
        &[
            ("host", "acme.example.test"),
            ("x-tenant", "beta"),
            ("x-tenant", "acme"),
        ][..],
        &[("host", "acme.example.test"), ("x-tenant", "beta, acme")],
    ] {
        let (uri, h) = req("/t/nobody/notes", headers);
        let err = resolver.resolve(&uri, &h).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{headers:?}");
        assert!(
            err.body().contains("more than one x-tenant header"),
            "{err:?}"
        );
    }
    let (uri, h) = req(
        "/t/Bad-Name/notes",
        &[("host", "acme.example.test"), ("x-tenant", "pg_catalog")],
    );
    let r = resolver.resolve(&uri, &h).await.unwrap();
    assert_eq!(r.tenant.schema().as_str(), "acme");
    assert_eq!(r.host.unwrap().as_str(), "acme.example.test");

    // Suspended tenants are not served through the prefix either (after invalidation);
    // archived ones are not found.
    tenancy
        .set_status(&SchemaName::new("beta").unwrap(), TenantStatus::Suspended)
        .await
        .unwrap();
    let (uri, h) = req("/t/beta/notes", &[("host", "nobody.example.test")]);
    let err = resolver.resolve(&uri, &h).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::FORBIDDEN);
    let paying = RequestResolver::builder(tenancy.clone())
        .strategies([Strategy::path_prefix("/t/")])
        .suspended_status(StatusCode::PAYMENT_REQUIRED)
        .build();
    let err = paying.resolve(&uri, &h).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(err.body().starts_with("402 Payment Required"), "{err:?}");
    tenancy
        .set_status(&SchemaName::new("beta").unwrap(), TenantStatus::Archived)
        .await
        .unwrap();
    let err = resolver.resolve(&uri, &h).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::NOT_FOUND);

    // A malformed host is a 400 even when a later strategy could have matched.
    let (uri, h) = req("/notes", &[("host", "bad..host"), ("x-tenant", "acme")]);
    let host_first = RequestResolver::new(tenancy.clone());
    assert_eq!(
        host_first.resolve(&uri, &h).await.unwrap_err().status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tenant_policies_and_public_path_token() {
    let (_db, tenancy) = setup().await;
    let (uri, h) = req("/signup?x=1", &[("host", "unknown.example.test")]);

    let not_found = RequestResolver::new(tenancy.clone());
    let err = not_found.resolve(&uri, &h).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::NOT_FOUND);
    assert!(err.body().contains("unknown.example.test"));

    let to_public = RequestResolver::builder(tenancy.clone())
        .unknown_tenant(UnknownTenant::Serve(Tenant::public()))
        .public_path_token("main")
        .build();
    let r = to_public.resolve(&uri, &h).await.unwrap();
    assert!(r.tenant.is_public());
    assert_eq!(r.path_and_query.as_deref(), Some("/main/signup?x=1"));
    // The public tenant's own domain gets the token too; tenants do not.
    let (uri2, h2) = req("/", &[("host", "example.test")]);
    assert_eq!(
        to_public
            .resolve(&uri2, &h2)
            .await
            .unwrap()
            .path_and_query
            .as_deref(),
        Some("/main/")
    );
    let (uri3, h3) = req("/", &[("host", "acme.example.test")]);
    assert_eq!(
        to_public.resolve(&uri3, &h3).await.unwrap().path_and_query,
        None
    );
    assert_eq!(
        tenant_schemas::request::strip_path_token("/main", "/main/signup"),
        "/signup"
    );

    let custom = RequestResolver::builder(tenancy.clone())
        .unknown_tenant(UnknownTenant::Respond(Arc::new(|uri, _| {
            Rejection::new(StatusCode::GONE, format!("nothing at {}", uri.path()))
        })))
        .build();
    let err = custom.resolve(&uri, &h).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::GONE);
    assert_eq!(err.body(), "nothing at /signup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_hosts_only_when_trusted() {
    let (_db, tenancy) = setup().await;
    let (uri, h) = req(
        "/",
        &[
            ("host", "acme.example.test"),
            ("x-forwarded-host", "beta.example.test"),
        ],
    );
    let untrusted = RequestResolver::new(tenancy.clone());
    assert_eq!(
        untrusted
            .resolve(&uri, &h)
            .await
            .unwrap()
            .tenant
            .schema()
            .as_str(),
        "acme"
    );
    let trusted = RequestResolver::builder(tenancy.clone())
        .trust_forwarded_headers(true)
        .build();
    assert_eq!(
        trusted
            .resolve(&uri, &h)
            .await
            .unwrap()
            .tenant
            .schema()
            .as_str(),
        "beta"
    );
    let (uri, h) = req(
        "/",
        &[
            ("host", "proxy.internal"),
            (
                "forwarded",
                "for=10.0.0.1;host=ACME.example.test:443;proto=https",
            ),
            ("x-forwarded-host", "beta.example.test"),
        ],
    );
    assert_eq!(
        trusted
            .resolve(&uri, &h)
            .await
            .unwrap()
            .tenant
            .schema()
            .as_str(),
        "acme"
    );
    let (uri, h) = req(
        "/",
        &[
            ("host", "acme.example.test"),
            ("x-forwarded-host", "evil..host"),
        ],
    );
    assert_eq!(
        trusted.resolve(&uri, &h).await.unwrap_err().status(),
        StatusCode::BAD_REQUEST
    );
}
