//! The actix-web adapter over real HTTP: the shared scenario, public site behind a guard.

use actix_web::{guard, web, App, HttpResponse, HttpServer};
use tenant_schemas_actix::{
    is_public_tenant, CurrentTenant, RequestResolver, TenantDb, TenantError, TenantMiddleware,
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
async fn actix_adapter() {
    let fx = suite::fixture().await;
    let resolver = RequestResolver::builder(fx.tenancy.clone())
        .strategies(suite::strategies())
        .credential_tenant(suite::session_tenant)
        .build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(TenantMiddleware::with_resolver(resolver.clone()))
            .route(
                "/",
                web::get()
                    .guard(guard::fn_guard(is_public_tenant))
                    .to(|| async { "public site" }),
            )
            .route(
                "/",
                web::get()
                    .to(|t: CurrentTenant| async move { format!("tenant site {}", t.0.schema()) }),
            )
            .route("/notes", web::get().to(list))
            .route("/notes", web::post().to(add))
            .route(
                "/stream",
                web::get().to(|| async { HttpResponse::Ok().streaming(suite::schema_stream()) }),
            )
            .route("/spawned", web::get().to(suite::spawned_schema))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    // actix-web runs its own single-threaded runtimes; give it a thread of its own.
    let thread = std::thread::spawn(move || actix_web::rt::System::new().block_on(server));
    suite::run(addr).await;
    suite::states(addr, &fx.tenancy).await;
    suite::credentials(addr).await;
    suite::busy(addr, &fx.tenancy).await;
    suite::hostile(addr, &fx.cluster).await;
    suite::outage(addr, &fx.cluster).await;
    handle.stop(true).await;
    thread.join().unwrap().unwrap();
}

/// One app, the public site under the public path token `/main`. A tenant's host must not
/// reach it, however the path is written (actix-web routes `/%6Dain` as `/main`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_hosts_do_not_reach_the_public_site_under_the_path_token() {
    let fx = suite::fixture().await;
    let resolver = tenant_schemas_actix::RequestResolver::builder(fx.tenancy.clone())
        .public_path_token("/main")
        .build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(TenantMiddleware::with_resolver(resolver.clone()))
            .route("/main", web::get().to(|| async { "public site" }))
            .route("/main/", web::get().to(|| async { "public site" }))
            .route(
                "/main/whoami",
                web::get().to(|| async {
                    tenant_schemas::scope::current_schema().map_or("none".into(), |s| s.to_string())
                }),
            )
            .route(
                "/",
                web::get()
                    .to(|t: CurrentTenant| async move { format!("tenant site {}", t.0.schema()) }),
            )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    let thread = std::thread::spawn(move || actix_web::rt::System::new().block_on(server));
    let r = tenant_schemas::testing::TenantClient::new(addr, "alpha.example.test")
        .get("/")
        .await
        .unwrap();
    assert_eq!(r.text().trim(), "tenant site alpha", "{r:?}");
    suite::tenant_hosts_do_not_reach_the_public_site_under_the_path_token(addr).await;
    handle.stop(true).await;
    thread.join().unwrap().unwrap();
}
