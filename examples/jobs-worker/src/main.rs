//! Background jobs that keep their tenant: a request handler queues jobs carrying a
//! [`TenantRef`], a worker task restores each job's tenant with [`Tenancy::run_ref`] and
//! writes in its schema; a job whose tenant is no longer served is refused, not run
//! elsewhere. `cargo run -p jobs-worker` (a throwaway PostgreSQL, or `DATABASE_URL`).

use demo_support::{tenant_host, DemoDatabase};
use serde::{Deserialize, Serialize};
use tenant_schemas::keys::tenant_key;
use tenant_schemas::{scope, SchemaName, Tenancy, TenantRef, TenantStatus};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A job as it travels through the queue (here a channel of JSON strings; in production a
/// table, Redis, SQS …): what to do, and for which tenant.
#[derive(Debug, Serialize, Deserialize)]
struct AddNote {
    tenant: TenantRef,
    body: String,
}

/// What a request handler does: the tenant is in scope (an adapter put it there from the
/// host); the job it queues carries it.
async fn handle_request(
    tenancy: &Tenancy,
    queue: &mpsc::Sender<String>,
    slug: &str,
    body: &str,
) -> Result<(), BoxError> {
    let tenant = tenancy.resolve(&tenant_host(slug)?).await?;
    scope::run(tenant, async {
        let job = AddNote {
            tenant: scope::require_tenant()?.to_ref()?,
            body: body.to_owned(),
        };
        let payload = serde_json::to_string(&job)?;
        println!("request  {slug}.localhost: queued {payload}");
        queue.send(payload).await?;
        Ok(())
    })
    .await
}

/// The worker: outside any tenant scope, it restores each job's tenant and runs the job in
/// it.
async fn worker(tenancy: Tenancy, mut queue: mpsc::Receiver<String>) -> Result<(), BoxError> {
    while let Some(payload) = queue.recv().await {
        let job: AddNote = serde_json::from_str(&payload)?;
        let ran = tenancy
            .run_ref(&job.tenant, async {
                let db = tenancy.connection().await?; // the job's tenant's schema
                db.execute("INSERT INTO notes (body) VALUES ($1)", &[&job.body])
                    .await?;
                let notes: i64 = db
                    .query_one("SELECT count(*) FROM notes", &[])
                    .await?
                    .get(0);
                // Where a cache entry for it would go: under the tenant's own prefix.
                Ok::<_, tenant_schemas::Error>((notes, tenant_key("notes:count")?))
            })
            .await;
        match ran {
            Ok(Ok((notes, key))) => println!(
                "worker   {}: added {:?}; {notes} note(s) now (cache key {key})",
                job.tenant, job.body
            ),
            Ok(Err(e)) | Err(e) => println!("worker   {}: not run: {e}", job.tenant),
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let db = DemoDatabase::from_env().await?;
    let tenancy = db.notes_tenancy().await?; // tenants acme and globex, with notes
    let (queue, jobs) = mpsc::channel(16);

    handle_request(&tenancy, &queue, "acme", "invoice #1 sent").await?;
    handle_request(&tenancy, &queue, "globex", "welcome mail sent").await?;
    handle_request(&tenancy, &queue, "acme", "invoice #2 sent").await?;
    // globex is suspended before the worker gets to its job: the job is refused.
    let globex = SchemaName::new("globex")?;
    tenancy.set_status(&globex, TenantStatus::Suspended).await?;
    println!("admin    globex suspended");
    drop(queue);

    tokio::spawn(worker(tenancy.clone(), jobs)).await??;
    tenancy.set_status(&globex, TenantStatus::Active).await?;

    for slug in ["acme", "globex"] {
        let conn = tenancy
            .router()
            .connection_for_schema(&SchemaName::new(slug)?)
            .await?;
        let notes: Vec<String> = conn
            .query("SELECT body FROM notes ORDER BY id", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        println!("{slug} has {notes:?}");
    }
    Ok(())
}
