//! The axum adapter over real HTTP: the shared scenario, with `split` routers.

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use tenant_schemas::scope;
use tenant_schemas_axum::{
    split, with_tenancy, CurrentTenant, RequestResolver, TenantDb, TenantError, TenantLayer,
};

use crate::suite;

async fn list(db: TenantDb) -> Result<String, TenantError> {
    let rows = db.query("SELECT body FROM notes ORDER BY id", &[]).await?;
    Ok(rows
        .iter()
        .map(|r| format!("{}\n", r.get::<_, String>(0)))
        .collect())
}

async fn add(db: TenantDb, body: String) -> Result<&'static str, TenantError> {
    db.execute("INSERT INTO notes (body) VALUES ($1)", &[&body])
        .await?;
    Ok("created")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_adapter() {
    let fx = suite::fixture().await;
    let public = Router::new().route("/", get(|| async { "public site" }));
    let tenants =
        Router::new()
            .route(
                "/",
                get(|CurrentTenant(t): CurrentTenant| async move {
                    format!("tenant site {}", t.schema())
                }),
            )
            .route("/notes", get(list).post(add))
            .route(
                "/stream",
                get(|| async { Body::from_stream(suite::schema_stream()) }),
            )
            .route("/spawned", get(suite::spawned_schema))
            .route(
                "/whoami",
                get(|| async { scope::current_schema().unwrap().to_string() }),
            );
    let resolver = RequestResolver::builder(fx.tenancy.clone())
        .strategies(suite::strategies())
        .credential_tenant(suite::session_tenant)
        .build();
    let app = with_tenancy(split(public, tenants), TenantLayer::with_resolver(resolver));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    suite::run(addr).await;
    suite::states(addr, &fx.tenancy).await;
    suite::credentials(addr).await;
    suite::busy(addr, &fx.tenancy).await;
    suite::hostile(addr, &fx.cluster).await;
    suite::outage(addr, &fx.cluster).await;
}

/// The django way: one router, the public site under the public path token `/main`. A
/// tenant's host must not reach it: `/main/whoami` would run the public site's handler in
/// the tenant's scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_hosts_do_not_reach_the_public_site_under_the_path_token() {
    let fx = suite::fixture().await;
    let whoami = || async { scope::current_schema().map_or("none".into(), |s| s.to_string()) };
    let app =
        Router::new()
            .route("/main", get(|| async { "public site" }))
            .route("/main/", get(|| async { "public site" }))
            .route("/main/whoami", get(whoami))
            .route(
                "/",
                get(|CurrentTenant(t): CurrentTenant| async move {
                    format!("tenant site {}", t.schema())
                }),
            );
    let resolver = tenant_schemas_axum::RequestResolver::builder(fx.tenancy.clone())
        .public_path_token("/main")
        .build();
    let app = with_tenancy(app, TenantLayer::with_resolver(resolver));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let r = tenant_schemas::testing::TenantClient::new(addr, "alpha.example.test")
        .get("/")
        .await
        .unwrap();
    assert_eq!(r.text().trim(), "tenant site alpha", "{r:?}");
    suite::tenant_hosts_do_not_reach_the_public_site_under_the_path_token(addr).await;
}
