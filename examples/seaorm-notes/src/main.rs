//! SeaORM on tenant-schemas: two tenants, each writing and reading its own notes through a
//! tenant-bound SeaORM transaction. `cargo run -p seaorm-notes` (a throwaway PostgreSQL, or
//! `DATABASE_URL`).

use demo_support::DemoDatabase;
use sea_orm::{ActiveModelTrait, EntityTrait, Set, SqlxPostgresConnector};
use seaorm_notes::{note, tenant_transaction_in_scope};
use tenant_schemas::{scope, SchemaName};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Registry, migrations and tenants: the core's Tenancy, as for any driver.
    let db = DemoDatabase::from_env().await?;
    let tenancy = db.notes_tenancy().await?; // tenants `acme` and `globex`, table `notes`

    // Application queries: SeaORM over a sqlx pool to the same database.
    // The same URL, TLS and timeouts as the core's pool.
    let pool = tenant_schemas_sqlx::pool_options_from_settings(db.settings())
        .max_connections(4)
        .connect_with(tenant_schemas_sqlx::connect_options_from_settings(
            db.settings(),
        )?)
        .await?;
    let orm = SqlxPostgresConnector::from_sqlx_postgres_pool(pool);

    for (slug, body) in [
        ("acme", "Acme's first note"),
        ("globex", "Globex's first note"),
    ] {
        let tenant = tenancy
            .tenant_by_schema(&SchemaName::new(slug)?)
            .await?
            .ok_or("tenant missing")?;
        scope::run(tenant, async {
            let txn = tenant_transaction_in_scope(&orm).await?;
            note::ActiveModel {
                body: Set(body.to_owned()),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
            let notes = note::Entity::find().all(&txn).await?;
            txn.commit().await?;
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
