//! tenant-schemas on warp: each tenant's notes in its own schema.
//! `cargo run -p warp-basic`, then follow the printed curl lines.

use bytes::Bytes;
use demo_support::{demo_addr, demo_instructions, DemoDatabase};
use tenant_schemas::Tenant;
use tenant_schemas_warp::{recover, serve, tenant, tenant_db, TenantDb, TenantError, TenantLayer};
use warp::Filter;

async fn home(tenant: Tenant, db: TenantDb) -> Result<String, warp::Rejection> {
    let rows = db
        .query("SELECT body FROM notes ORDER BY id", &[])
        .await
        .map_err(|e| warp::reject::custom(TenantError(e)))?;
    let notes: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(format!(
        "{}: {} note(s) {notes:?}\n",
        tenant.schema(),
        notes.len()
    ))
}

async fn add(db: TenantDb, body: Bytes) -> Result<&'static str, warp::Rejection> {
    let note = String::from_utf8_lossy(&body).into_owned();
    db.execute("INSERT INTO notes (body) VALUES ($1)", &[&note])
        .await
        .map_err(|e| warp::reject::custom(TenantError(e)))?;
    Ok("added\n")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = DemoDatabase::from_env().await?;
    let tenancy = db.notes_tenancy().await?;
    let routes = warp::path::end()
        .and(warp::get())
        .and(tenant())
        .and(tenant_db())
        .and_then(home)
        .or(warp::path!("notes")
            .and(warp::post())
            .and(tenant_db())
            .and(warp::body::bytes())
            .and_then(add))
        .recover(recover);
    let addr = demo_addr();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("{}", demo_instructions(addr));
    tokio::select! {
        served = serve(listener, routes, TenantLayer::new(tenancy)) => served?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
