//! SeaORM on tenant-schemas: two tenants, each writing and reading its own notes through a
//! tenant-bound SeaORM connection. `cargo run -p seaorm-notes` (a throwaway PostgreSQL, or
//! `DATABASE_URL`).

use demo_support::DemoDatabase;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use seaorm_notes::note;
use tenant_schemas::{scope, SchemaName};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Registry, migrations and tenants: the core's Tenancy, as for any driver.
    let db = DemoDatabase::from_env().await?;
    let tenancy = db.notes_tenancy().await?; // tenants `acme` and `globex`, table `notes`
    let orm = seaorm_notes::router(db.settings(), &tenancy)?;

    for (slug, body) in [
        ("acme", "Acme's first note"),
        ("globex", "Globex's first note"),
    ] {
        let tenant = tenancy
            .tenant_by_schema(&SchemaName::new(slug)?)
            .await?
            .ok_or("tenant missing")?;
        scope::run(tenant, async {
            let db = orm.connection().await?; // the tenant in scope
            note::ActiveModel {
                body: Set(body.to_owned()),
                ..Default::default()
            }
            .insert(&db)
            .await?;
            let notes = note::Entity::find().all(&db).await?;
            println!("{slug}: {} note(s)", notes.len());
            for n in notes {
                println!("  #{} {}", n.id, n.body);
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        })
        .await?;
    }
    Ok(())
}
