//! Tenants on two PostgreSQL servers: placement, routing, migrations, doctor, and a server
//! going down taking only its own tenants with it.

#![allow(clippy::unwrap_used)]

use axum::routing::get;
use axum::Router;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::{TenantClient, TestCluster, TestDatabase};
use tenant_schemas::{DropSchema, NewTenant, RunOptions, Tenancy, TenantMigrations, DEFAULT_SHARD};
use tenant_schemas_axum::{with_tenancy, TenantDb, TenantError, TenantLayer};

async fn schemas_on(db: &TestDatabase) -> Vec<String> {
    let c = db.pool().get().await.unwrap();
    c.query(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'sh\\_%' ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn marker(db: TenantDb) -> Result<String, TenantError> {
    Ok(db
        .query_one("SELECT schema_name FROM marker", &[])
        .await?
        .get(0))
}

fn tenancy_over(
    a: &TestDatabase,
    b: &TestDatabase,
    migrations: TenantMigrations,
) -> tenant_schemas::TenancyBuilder {
    Tenancy::builder(a.new_pool(8).unwrap())
        .shard("b", b.new_pool(8).unwrap())
        .migrations(migrations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_on_two_servers() {
    let a = database().await;
    let second = TestCluster::start().unwrap();
    let b = second.create_database().await.unwrap();
    let tenancy = tenancy_over(&a, &b, marker_and_notes())
        .build()
        .await
        .unwrap();

    // Placement: the server with the fewest tenants.
    let mut records = Vec::new();
    for i in 0..6 {
        let r = tenancy
            .create_tenant(
                NewTenant::new(schema(&format!("sh_{i}"))).domain(host(&format!("sh{i}.test"))),
            )
            .await
            .unwrap();
        let conn = tenancy
            .router()
            .connection_for_tenant(&r.tenant())
            .await
            .unwrap();
        conn.execute("INSERT INTO marker VALUES ($1)", &[&r.schema.as_str()])
            .await
            .unwrap();
        records.push(r);
    }
    let on_b: Vec<String> = records
        .iter()
        .filter(|r| r.shard == "b")
        .map(|r| r.schema.to_string())
        .collect();
    let on_a: Vec<String> = records
        .iter()
        .filter(|r| r.shard == DEFAULT_SHARD)
        .map(|r| r.schema.to_string())
        .collect();
    assert_eq!((on_a.len(), on_b.len()), (3, 3), "{records:?}");
    assert_eq!(schemas_on(&a).await, on_a);
    assert_eq!(schemas_on(&b).await, on_b);

    // Requests are routed to the right server.
    let app = with_tenancy(
        Router::new().route("/m", get(marker)),
        TenantLayer::new(tenancy.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    for (i, r) in records.iter().enumerate() {
        let res = TenantClient::new(addr, format!("sh{i}.test"))
            .get("/m")
            .await
            .unwrap();
        assert_eq!((res.status, res.text()), (200, r.schema.to_string()));
    }

    // Migrations reach both servers.
    let v3 = marker_and_notes().with("extra", "ALTER TABLE notes ADD COLUMN extra int");
    let newer = tenancy_over(&a, &b, v3).build().await.unwrap();
    let report = newer.migrate(&RunOptions::default(), None).await.unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.schemas.iter().filter(|r| r.shard == "b").count(), 3);
    let doctor = newer.registry().doctor().await.unwrap();
    assert!(doctor.findings.is_empty(), "{:?}", doctor.findings);

    // One server down: only its tenants answer 503.
    second.stop().unwrap();
    for (i, r) in records.iter().enumerate() {
        let res = TenantClient::new(addr, format!("sh{i}.test"))
            .get("/m")
            .await
            .unwrap();
        let want = if r.shard == "b" { 503 } else { 200 };
        assert_eq!(res.status, want, "{}: {}", r.schema, res.text());
    }
    second.restart().unwrap();

    // Deleting a tenant of the second server drops its schema there.
    let gone = records.iter().find(|r| r.shard == "b").unwrap();
    let mut dropped = false;
    for _ in 0..50 {
        if tenancy
            .delete_tenant(&gone.schema, DropSchema::Yes)
            .await
            .is_ok()
        {
            dropped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(dropped);
    assert!(!schemas_on(&b).await.contains(&gone.schema.to_string()));
    let doctor = newer.registry().doctor().await.unwrap();
    assert!(doctor.findings.is_empty(), "{:?}", doctor.findings);
}
