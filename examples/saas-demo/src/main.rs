//! The tenant-schemas demo: starts a throwaway PostgreSQL (or uses `DATABASE_URL`),
//! creates the public tenant and two tenants, and shows that each sees only its own notes.

use tenant_schemas::testing::{pool, TestCluster};
use tenant_schemas::tokio_postgres::Config;
use tenant_schemas::{scope, Host, NewTenant, SchemaName, Tenancy, TenantMigrations};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Keep the cluster alive until the end of main; dropping it stops and removes it.
    let (_cluster, config) = match std::env::var("DATABASE_URL") {
        Ok(url) => (None, url.parse::<Config>()?),
        Err(_) => {
            println!("starting a throwaway PostgreSQL ...");
            let cluster = TestCluster::start()?;
            let db = cluster.create_database().await?;
            let config = db.config().clone();
            (Some(cluster), config)
        }
    };
    let tenancy = Tenancy::builder(pool(config, 8)?)
        .migrations(TenantMigrations::new().with(
            "create_notes",
            "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)",
        ))
        .build()
        .await?;
    tenancy
        .registry()
        .ensure_public_tenant(&Host::parse("localhost")?)
        .await?;
    for (schema, name) in [("acme", "Acme Inc."), ("globex", "Globex Corp.")] {
        let schema = SchemaName::new(schema)?;
        if tenancy.registry().get(&schema).await.is_err() {
            let host = Host::parse(&format!("{schema}.localhost"))?;
            tenancy
                .create_tenant(NewTenant::new(schema).name(name).domain(host))
                .await?;
        }
    }

    for host in ["acme.localhost", "globex.localhost", "acme.localhost"] {
        let tenant = tenancy.resolve(&Host::parse(host)?).await?;
        let notes = scope::run(tenant, async {
            let db = tenancy.connection().await?;
            let body = format!("a note written through {host}");
            db.execute("INSERT INTO notes (body) VALUES ($1)", &[&body])
                .await?;
            let rows = db.query("SELECT body FROM notes ORDER BY id", &[]).await?;
            Ok::<_, tenant_schemas::Error>(
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>(),
            )
        })
        .await?;
        println!("{host} sees {} note(s):", notes.len());
        for note in notes {
            println!("  - {note}");
        }
    }
    match tenancy.resolve(&Host::parse("unknown.localhost")?).await {
        Err(e) => println!("unknown.localhost: {e} (HTTP {})", e.status()),
        Ok(t) => println!("unknown.localhost unexpectedly resolved to {t}"),
    }
    Ok(())
}
