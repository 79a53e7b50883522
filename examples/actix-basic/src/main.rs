//! tenant-schemas on actix-web: each tenant's notes in its own schema.
//! `cargo run -p actix-basic`, then follow the printed curl lines.

use actix_web::{web, App, HttpServer};
use demo_support::{demo_addr, demo_instructions, DemoDatabase};
use tenant_schemas_actix::{CurrentTenant, TenantDb, TenantError, TenantMiddleware};

async fn home(tenant: CurrentTenant, db: TenantDb) -> Result<String, TenantError> {
    let rows = db.query("SELECT body FROM notes ORDER BY id", &[]).await?;
    let notes: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(format!(
        "{}: {} note(s) {notes:?}\n",
        tenant.0.schema(),
        notes.len()
    ))
}

async fn add(db: TenantDb, body: String) -> Result<&'static str, TenantError> {
    db.execute("INSERT INTO notes (body) VALUES ($1)", &[&body])
        .await?;
    Ok("added\n")
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = DemoDatabase::from_env().await?;
    let tenancy = db.notes_tenancy().await?;
    let addr = demo_addr();
    println!("{}", demo_instructions(addr));
    HttpServer::new(move || {
        App::new()
            .wrap(TenantMiddleware::new(tenancy.clone()))
            .route("/", web::get().to(home))
            .route("/notes", web::post().to(add))
    })
    .bind(addr)?
    .run()
    .await?;
    Ok(())
}
