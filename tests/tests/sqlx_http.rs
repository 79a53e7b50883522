//! tenant-schemas-sqlx's axum extractors over real HTTP, on the core's checkout: whatever
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
use tenant_schemas::testing::TenantClient;
use tenant_schemas::{NewTenant, StaticResolver, Tenancy, Tenant, TenantStatus};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_extractors_serve_the_registrys_state_over_http() {
    let db = database().await;
    let s = schema("http_0");
    let h = host("http.example.test");
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
        .execute("INSERT INTO marker VALUES ('http_0')", &[])
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
    let app = Router::new()
        .route("/marker", get(read))
        .route("/notes", post(write))
        .route("/plain", get(|| async { "no database" }))
        .layer(Extension(router));
    let app = with_tenancy(app, TenantLayer::new(tenancy.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = TenantClient::new(addr, "http.example.test");

    let answer = client.post("/notes", "text/plain", b"").await.unwrap();
    assert_eq!((answer.status, answer.text()), (200, "written".to_owned()));

    tenancy
        .set_status(&s, TenantStatus::ReadOnly)
        .await
        .unwrap();
    let answer = client.get("/marker").await.unwrap();
    assert_eq!((answer.status, answer.text()), (200, "http_0".to_owned()));
    let answer = client.post("/notes", "text/plain", b"").await.unwrap();
    assert_eq!(
        (answer.status, answer.text()),
        (
            403,
            "403 Forbidden: this site is read-only for now\n".to_owned()
        )
    );

    tenancy
        .set_status(&s, TenantStatus::Suspended)
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

    tenancy.set_status(&s, TenantStatus::Active).await.unwrap();
    let notes: i64 = tenancy
        .router()
        .connection_for_schema(&s)
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM notes WHERE body = 'http'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(notes, 1, "only the write made while active landed");
}
