//! The warp adapter over real HTTP: the shared scenario, public site behind the path token.

use bytes::Bytes;
use tenant_schemas::request::RequestResolver;
use tenant_schemas::Tenant;
use tenant_schemas_warp::{recover, serve, tenant, tenant_db, TenantDb, TenantError, TenantLayer};
use warp::Filter;

use crate::suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warp_adapter() {
    let fx = suite::fixture().await;
    let public = warp::path!("main").and(warp::get()).map(|| "public site");
    let home = warp::path::end()
        .and(warp::get())
        .and(tenant())
        .map(|t: Tenant| format!("tenant site {}", t.schema()));
    let list = warp::path!("notes")
        .and(warp::get())
        .and(tenant_db())
        .and_then(|db: TenantDb| async move {
            let rows = db
                .query("SELECT body FROM notes ORDER BY id", &[])
                .await
                .map_err(|e| warp::reject::custom(TenantError(e)))?;
            Ok::<_, warp::Rejection>(
                rows.iter()
                    .map(|r| format!("{}\n", r.get::<_, String>(0)))
                    .collect::<String>(),
            )
        });
    let add = warp::path!("notes")
        .and(warp::post())
        .and(tenant_db())
        .and(warp::body::bytes())
        .and_then(|db: TenantDb, body: Bytes| async move {
            let note = String::from_utf8_lossy(&body).into_owned();
            db.execute("INSERT INTO notes (body) VALUES ($1)", &[&note])
                .await
                .map_err(|e| warp::reject::custom(TenantError(e)))?;
            Ok::<_, warp::Rejection>("created")
        });
    let stream = warp::path!("stream").map(|| warp::reply::stream(suite::schema_stream()));
    let spawned = warp::path!("spawned").then(suite::spawned_schema);
    let routes = public
        .or(home)
        .or(list)
        .or(add)
        .or(stream)
        .or(spawned)
        .recover(recover);
    let resolver = RequestResolver::builder(fx.tenancy.clone())
        .strategies(suite::strategies())
        .credential_tenant(suite::session_tenant)
        .public_path_token("/main")
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        routes,
        TenantLayer::with_resolver(resolver),
    ));
    suite::run(addr).await;
    suite::states(addr, &fx.tenancy).await;
    suite::credentials(addr).await;
    suite::busy(addr, &fx.tenancy).await;
    suite::hostile(addr, &fx.cluster).await;
    suite::outage(addr, &fx.cluster).await;
}
