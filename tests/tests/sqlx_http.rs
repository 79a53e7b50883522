//! tenant-schemas-sqlx's axum and actix-web extractors over real HTTP, on the core's checkout: whatever
//! tenant the application's resolver hands the layer (here a `StaticResolver`, which knows
//! no states), the extractor's connection is checked out in the registry's state: a
//! read-only tenant's write is answered 403 and lands nowhere, a suspended tenant gets no
//! connection (403), and an active one is served.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use axum::routing::{get, post};
use axum::{Extension, Router};
use sqlx::postgres::PgPoolOptions;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::{TenantClient, TestDatabase};
use tenant_schemas::{NewTenant, SchemaName, StaticResolver, Tenancy, Tenant, TenantStatus};
use tenant_schemas_axum::{with_tenancy, TenantLayer};
use tenant_schemas_sqlx::axum::{SqlxRejection, SqlxTenantDb};
use tenant_schemas_sqlx::{connect_options, SqlxRouter};

async fn read(mut db: SqlxTenantDb) -> Result<String, SqlxRejection> {
    sqlx::query_scalar("SELECT schema_name FROM marker")
        .fetch_one(&mut **db)
        .await
        .map_err(SqlxRejection::query)
}

async fn write(mut db: SqlxTenantDb) -> Result<&'static str, SqlxRejection> {
    sqlx::query("INSERT INTO notes (body) VALUES ('http')")
        .execute(&mut **db)
        .await
        .map_err(SqlxRejection::query)?;
    Ok("written")
}

/// A database with one tenant, `<name>` (its marker row planted), served for `<name>.example.test`
/// (`_` written `-`)
/// by a `StaticResolver` (which knows no states), and a sqlx router with the registry's
/// states.
async fn setup(name: &str) -> (TestDatabase, Tenancy, SchemaName, SqlxRouter) {
    let db = database().await;
    let s = schema(name);
    let h = host(&format!("{}.example.test", name.replace('_', "-")));
    let tenancy = Tenancy::builder(db.new_pool(4).unwrap())
        .resolver(StaticResolver::new().with(h.clone(), Tenant::new(s.clone())))
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    tenancy
        .create_tenant(NewTenant::new(s.clone()))
        .await
        .unwrap();
    tenancy
        .router()
        .connection_for_schema(&s)
        .await
        .unwrap()
        .execute(&format!("INSERT INTO marker VALUES ('{name}')"), &[])
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(connect_options(db.config()))
        .await
        .unwrap();
    let router = SqlxRouter::builder(pool)
        .tenant_states(tenancy.tenant_states())
        .build();
    (db, tenancy, s, router)
}

/// The scenario, against an app serving `GET /marker` and `POST /notes` through the sqlx
/// extractor and `GET /plain` without it.
async fn scenario(client: &TenantClient, tenancy: &Tenancy, s: &SchemaName) {
    let answer = client.post("/notes", "text/plain", b"").await.unwrap();
    assert_eq!((answer.status, answer.text()), (200, "written".to_owned()));

    tenancy.set_status(s, TenantStatus::ReadOnly).await.unwrap();
    let answer = client.get("/marker").await.unwrap();
    assert_eq!((answer.status, answer.text()), (200, s.as_str().to_owned()));
    let answer = client.post("/notes", "text/plain", b"").await.unwrap();
    assert_eq!(
        (answer.status, answer.text()),
        (
            403,
            "403 Forbidden: this site is read-only for now\n".to_owned()
        )
    );

    tenancy
        .set_status(s, TenantStatus::Suspended)
        .await
        .unwrap();
    // The layer's resolver says active (a route without the extractor is served) …
    let answer = client.get("/plain").await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    // … the extractor's checkout reads the registry.
    for answer in [
        client.get("/marker").await.unwrap(),
        client.post("/notes", "text/plain", b"").await.unwrap(),
    ] {
        assert_eq!(
            (answer.status, answer.text()),
            (403, "403 Forbidden: this site is suspended\n".to_owned())
        );
    }

    tenancy.set_status(s, TenantStatus::Active).await.unwrap();
    let notes: i64 = tenancy
        .router()
        .connection_for_schema(s)
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM notes WHERE body = 'http'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(notes, 1, "only the write made while active landed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_extractors_serve_the_registrys_state_over_http() {
    let (_db, tenancy, s, router) = setup("http_0").await;
    let app = Router::new()
        .route("/marker", get(read))
        .route("/notes", post(write))
        .route("/plain", get(|| async { "no database" }))
        .layer(Extension(router));
    let app = with_tenancy(app, TenantLayer::new(tenancy.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = TenantClient::new(addr, "http-0.example.test");
    scenario(&client, &tenancy, &s).await;
}

async fn actix_read(
    mut db: tenant_schemas_sqlx::actix::SqlxTenantDb,
) -> Result<String, tenant_schemas_sqlx::actix::SqlxRejection> {
    sqlx::query_scalar("SELECT schema_name FROM marker")
        .fetch_one(&mut **db)
        .await
        .map_err(tenant_schemas_sqlx::actix::SqlxRejection::query)
}

async fn actix_write(
    mut db: tenant_schemas_sqlx::actix::SqlxTenantDb,
) -> Result<&'static str, tenant_schemas_sqlx::actix::SqlxRejection> {
    sqlx::query("INSERT INTO notes (body) VALUES ('http')")
        .execute(&mut **db)
        .await
        .map_err(tenant_schemas_sqlx::actix::SqlxRejection::query)?;
    Ok("written")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_sqlx_extractors_serve_the_registrys_state_over_http() {
    use actix_web::{web, App, HttpServer};

    let (_db, tenancy, s, router) = setup("http_1").await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let middleware_tenancy = tenancy.clone();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(tenant_schemas_actix::TenantMiddleware::new(
                middleware_tenancy.clone(),
            ))
            .app_data(router.clone())
            .route("/marker", web::get().to(actix_read))
            .route("/notes", web::post().to(actix_write))
            .route("/plain", web::get().to(|| async { "no database" }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    // actix-web runs its own single-threaded runtimes; give it a thread of its own.
    let thread = std::thread::spawn(move || actix_web::rt::System::new().block_on(server));
    let client = TenantClient::new(addr, "http-1.example.test");
    scenario(&client, &tenancy, &s).await;
    handle.stop(true).await;
    thread.join().unwrap().unwrap();
}

/// The database stopped: the axum extractor's route answers 503 about as fast as the core
/// (sqlx alone retried the refused connection for its whole acquire timeout), while a route
/// without the database is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_answers_503_through_the_sqlx_extractor_fast() {
    // A cluster of its own: stopping the shared one would disturb other tests.
    let cluster = tenant_schemas::testing::TestCluster::start().unwrap();
    let db = cluster.create_database().await.unwrap();
    let s = schema("http_2");
    let tenancy = Tenancy::builder(db.new_pool(2).unwrap())
        .resolver(StaticResolver::new().with(host("http-2.example.test"), Tenant::new(s.clone())))
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    tenancy
        .create_tenant(NewTenant::new(s.clone()))
        .await
        .unwrap();
    tenancy
        .router()
        .connection_for_schema(&s)
        .await
        .unwrap()
        .execute("INSERT INTO marker VALUES ('http_2')", &[])
        .await
        .unwrap();
    // The pool as users build it from the URL (over TCP: a stopped server refuses).
    let settings = tenant_schemas::ConnectionSettings::from_url(&cluster.url(db.name()).unwrap())
        .unwrap()
        .pool_size(2);
    let router = SqlxRouter::new(tenant_schemas_sqlx::pool_from_settings(&settings).unwrap());
    let app = Router::new()
        .route("/marker", get(read))
        .route("/plain", get(|| async { "no database" }))
        .layer(Extension(router));
    let app = with_tenancy(app, TenantLayer::new(tenancy.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = TenantClient::new(addr, "http-2.example.test");
    let answer = client.get("/marker").await.unwrap();
    assert_eq!((answer.status, answer.text()), (200, "http_2".to_owned()));

    cluster.stop().unwrap();
    for round in 0..3 {
        let started = std::time::Instant::now();
        let answer = client.get("/marker").await.unwrap();
        let took = started.elapsed();
        assert_eq!(answer.status, 503, "round {round}: {}", answer.text());
        // The sqlx driver answers after its 100 ms wait for the pool; many times that, and a
        // quarter of the core's 10 s connect timeout.
        assert!(
            took < std::time::Duration::from_millis(2500),
            "round {round}: 503 after {took:?}: {}",
            answer.text()
        );
    }
    let answer = client.get("/plain").await.unwrap();
    assert_eq!(
        (answer.status, answer.text()),
        (200, "no database".to_owned())
    );
}
