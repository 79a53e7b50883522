//! Second adversarial round over real HTTP (axum). Each test asserts the guarantee; a
//! failing test is a break.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use tenant_schemas::deadpool_postgres::Pool;
use tenant_schemas::request::{RequestResolver, Strategy};
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TenantClient;
use tenant_schemas::{NewTenant, SubdomainResolver, Tenancy};
use tenant_schemas_axum::{with_tenancy, TenantDb, TenantError, TenantLayer};

async fn plant_public_marker(pool: &Pool) {
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.marker (schema_name text NOT NULL);
             INSERT INTO public.marker VALUES ('PUBLIC')",
        )
        .await
        .unwrap();
}

async fn marker(db: TenantDb) -> Result<String, TenantError> {
    let row = db.query_one("SELECT schema_name FROM marker", &[]).await?;
    Ok(row.get::<_, String>(0))
}

async fn serve(layer: TenantLayer) -> SocketAddr {
    let router = Router::new()
        .route("/marker", get(marker))
        .route("/main/marker", get(marker));
    let app = with_tenancy(router, layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// BREAK: two apps in one process, each with its own database. App 1 serves tenant
/// `victim` from its registry; app 2 (same binary, other product) resolves subdomains with
/// `SubdomainResolver`, which invents tenants. A hostile client requests
/// `victim.apps.test` on app 2 right after anyone used `victim` on app 1: the process-wide
/// existence memory for the *name* `victim` lets app 2 skip the check on a database without
/// that schema, and the handler reads `public`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_of_another_app_in_the_process_does_not_vouch_for_an_invented_one() {
    let db1 = database().await;
    let app1 = tenancy(&db1, marker_and_notes()).await;
    app1.create_tenant(NewTenant::new(schema("victim")).domain(host("victim.one.test")))
        .await
        .unwrap();
    app1.router()
        .connection_for_schema(&schema("victim"))
        .await
        .unwrap()
        .execute("INSERT INTO marker VALUES ('victim')", &[])
        .await
        .unwrap();
    let db2 = database().await;
    plant_public_marker(db2.pool()).await;
    let app2 = Tenancy::builder(db2.pool().clone())
        .resolver(SubdomainResolver::new(host("apps.test")))
        .build()
        .await
        .unwrap();
    let addr1 = serve(TenantLayer::new(app1.clone())).await;
    let addr2 = serve(TenantLayer::new(app2.clone())).await;

    let legit = TenantClient::new(addr1, "victim.one.test")
        .get("/marker")
        .await
        .unwrap();
    assert_eq!((legit.status, legit.text()), (200, "victim".to_owned()));
    let hostile = TenantClient::new(addr2, "victim.apps.test")
        .get("/marker")
        .await
        .unwrap();
    assert_ne!(hostile.text(), "PUBLIC", "fell through to public");
    assert_eq!(hostile.status, 404, "{}", hostile.text());
}

/// Held (regression): path prefix + public path token. A tenant reached through `/t/<name>`
/// cannot reach the public site's routes under the token by any spelling axum routes, and a
/// header naming a tenant is ignored unless the header strategy is configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_prefix_cannot_reach_the_public_site_under_the_token() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    tenancy
        .ensure_public_tenant(&host("www.test"))
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "pp", 2).await;
    plant_public_marker(db.pool()).await;
    let resolver = RequestResolver::builder(tenancy.clone())
        .strategies([Strategy::path_prefix("t"), Strategy::Host])
        .public_path_token("/main")
        .build();
    let addr = serve(TenantLayer::with_resolver(resolver)).await;
    let public = TenantClient::new(addr, "www.test");
    for path in [
        format!("/t/{}/main/marker", s[0]),
        format!("/t/{}//main/marker", s[0]),
        format!("/t/{}/%6Dain/marker", s[0]),
        format!("/t/{}/main/marker?x=/t/{}/marker", s[0], s[1]),
    ] {
        let r = public.get(&path).await.unwrap();
        assert_ne!(r.text(), "PUBLIC", "{path}");
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    let ok = public.get(&format!("/t/{}/marker", s[0])).await.unwrap();
    assert_eq!(ok.text(), s[0].as_str());
    // The public site itself, under the token.
    let p = public.get("/marker").await.unwrap();
    assert_eq!(p.text(), "PUBLIC");
    // A header naming another tenant, and untrusted forwarded headers, change nothing.
    let t0 = TenantClient::new(addr, "pp0.test");
    let r = t0
        .send(
            "GET",
            "/marker",
            &[
                ("x-tenant", s[1].as_str()),
                ("x-forwarded-host", "pp1.test"),
                ("forwarded", "host=pp1.test"),
            ],
            b"",
        )
        .await
        .unwrap();
    assert_eq!(r.text(), s[0].as_str());
}
