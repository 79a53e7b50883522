//! tenant-schemas-seaorm's axum extractor over real HTTP on 127.0.0.1, on the core's
//! checkout: whatever tenant the layer's resolver hands it (a `StaticResolver`, which knows
//! no states), the connection is checked out in the registry's state, and every state (and
//! a deleted tenant) is answered exactly as tenant-schemas-sqlx's extractor answers it.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use axum::routing::{get, post};
use axum::{Extension, Router};
use common::{note, seen_marker};
use sea_orm::{ActiveModelTrait, Set};
use sqlx::postgres::PgPoolOptions;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TenantClient;
use tenant_schemas::{DropSchema, NewTenant, StaticResolver, Tenancy, Tenant, TenantStatus};
use tenant_schemas_axum::{with_tenancy, TenantLayer};
use tenant_schemas_seaorm::axum::{SeaOrmPublicDb, SeaOrmRejection, SeaOrmTenantDb};
use tenant_schemas_seaorm::SeaOrmRouter;
use tenant_schemas_sqlx::axum::{SqlxRejection, SqlxTenantDb};
use tenant_schemas_sqlx::{connect_options, SqlxRouter};

async fn orm_read(db: SeaOrmTenantDb) -> Result<String, SeaOrmRejection> {
    Ok(seen_marker(&db).await?)
}

async fn orm_public(db: SeaOrmPublicDb) -> Result<String, SeaOrmRejection> {
    Ok(seen_marker(&db).await?)
}

async fn orm_write(db: SeaOrmTenantDb) -> Result<&'static str, SeaOrmRejection> {
    note::ActiveModel {
        body: Set("http".into()),
        ..Default::default()
    }
    .insert(&db)
    .await?;
    Ok("written")
}

async fn sqlx_read(mut db: SqlxTenantDb) -> Result<String, SqlxRejection> {
    sqlx::query_scalar("SELECT schema_name FROM marker")
        .fetch_one(&mut **db)
        .await
        .map_err(SqlxRejection::query)
}

async fn sqlx_write(mut db: SqlxTenantDb) -> Result<&'static str, SqlxRejection> {
    sqlx::query("INSERT INTO notes (body) VALUES ('http')")
        .execute(&mut **db)
        .await
        .map_err(SqlxRejection::query)?;
    Ok("written")
}

/// `(status, body)` of `GET path` and `POST path` through both drivers' extractors, which
/// must agree; the SeaORM driver's answers.
async fn both(client: &TenantClient, read: bool) -> (u16, String) {
    let ask = |driver: &'static str| async move {
        let answer = if read {
            client.get(&format!("/{driver}/marker")).await.unwrap()
        } else {
            client
                .post(&format!("/{driver}/notes"), "text/plain", b"")
                .await
                .unwrap()
        };
        (answer.status, answer.text())
    };
    let orm = ask("orm").await;
    let sqlx = ask("sqlx").await;
    assert_eq!(
        orm, sqlx,
        "the SeaORM and sqlx extractors disagree (read: {read})"
    );
    orm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seaorm_extractor_answers_every_state_as_the_sqlx_one() {
    let db = database().await;
    let s = schema("orm_http");
    let tenancy = Tenancy::builder(db.new_pool(4).unwrap())
        .resolver(StaticResolver::new().with(host("orm-http.example.test"), Tenant::new(s.clone())))
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
        .execute("INSERT INTO marker VALUES ('orm_http')", &[])
        .await
        .unwrap();
    plant_public_marker(db.pool()).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(connect_options(db.config()))
        .await
        .unwrap();
    let sqlx = SqlxRouter::builder(pool)
        .tenant_states(tenancy.tenant_states())
        .build();
    let app = Router::new()
        .route("/orm/marker", get(orm_read))
        .route("/orm/notes", post(orm_write))
        .route("/orm/public", get(orm_public))
        .route("/sqlx/marker", get(sqlx_read))
        .route("/sqlx/notes", post(sqlx_write))
        .layer(Extension(SeaOrmRouter::new(sqlx.clone())))
        .layer(Extension(sqlx));
    let app = with_tenancy(app, TenantLayer::new(tenancy.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = TenantClient::new(addr, "orm-http.example.test");

    assert_eq!(both(&client, true).await, (200, "orm_http".to_owned()));
    assert_eq!(both(&client, false).await, (200, "written".to_owned()));
    let public = client.get("/orm/public").await.unwrap();
    assert_eq!((public.status, public.text()), (200, "PUBLIC".to_owned()));

    tenancy
        .set_status(&s, TenantStatus::ReadOnly)
        .await
        .unwrap();
    assert_eq!(both(&client, true).await, (200, "orm_http".to_owned()));
    assert_eq!(
        both(&client, false).await,
        (
            403,
            "403 Forbidden: this site is read-only for now\n".to_owned()
        )
    );

    for (status, code) in [
        (TenantStatus::Suspended, 403),
        (TenantStatus::Maintenance, 503),
        (TenantStatus::Archived, 404),
    ] {
        tenancy.set_status(&s, status).await.unwrap();
        for read in [true, false] {
            let (got, body) = both(&client, read).await;
            assert_eq!(got, code, "{status}: {body}");
        }
    }

    tenancy.set_status(&s, TenantStatus::Active).await.unwrap();
    let landed: i64 = tenancy
        .router()
        .connection_for_schema(&s)
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM notes WHERE body = 'http'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(landed, 2, "one write per driver, made while active");

    // Deleted, while the resolver still hands the tenant out: 404, never `public`.
    tenancy.delete_tenant(&s, DropSchema::Yes).await.unwrap();
    let (got, body) = both(&client, true).await;
    assert_eq!(got, 404, "{body}");
    assert!(!body.contains("PUBLIC"), "{body}");
}
