//! Tenants in background jobs, against a real PostgreSQL: a [`TenantRef`] queued by a
//! request and restored by a worker runs the job in its tenant's schema, and only while the
//! registry still has that tenant, in that schema, on that database, served.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tenant_schemas::testing::fixtures::{
    database, host, marked_tenants, marker_and_notes, marker_of, tenancy,
};
use tenant_schemas::{
    scope, DropSchema, Error, NewTenant, SchemaName, Tenancy, TenantRef, TenantStatus,
};
use tokio::sync::mpsc;
use tracing::Instrument;

/// What a job does: writes a note and reads the `marker` row of the schema it runs in.
async fn note_and_marker(tenancy: &Tenancy, body: &str) -> tenant_schemas::Result<String> {
    let db = tenancy.connection().await?;
    db.execute("INSERT INTO notes (body) VALUES ($1)", &[&body])
        .await?;
    Ok(marker_of(&db).await)
}

/// The reference a request for `host` would queue: the tenant its scope holds.
async fn queued_by_request(tenancy: &Tenancy, domain: &str) -> String {
    let tenant = tenancy.resolve(&host(domain)).await.unwrap();
    scope::run(tenant, async {
        let tenant = scope::require_tenant().unwrap();
        serde_json::to_string(&tenant.to_ref().unwrap()).unwrap()
    })
    .await
}

async fn notes(tenancy: &Tenancy, schema: &SchemaName) -> Vec<String> {
    let db = tenancy
        .router()
        .connection_for_schema(schema)
        .await
        .unwrap();
    db.query("SELECT body FROM notes ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_run_in_their_own_tenant_only() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "job", 3).await;

    // A worker task, spawned outside any scope, fed through a queue of JSON payloads.
    let (tx, mut rx) = mpsc::channel::<(String, String)>(16);
    let worker = {
        let tenancy = tenancy.clone();
        tokio::spawn(async move {
            // The worker itself has no tenant: nothing runs anywhere by default.
            assert!(matches!(
                tenancy.connection().await,
                Err(Error::NoTenantInScope)
            ));
            let mut done = Vec::new();
            while let Some((payload, body)) = rx.recv().await {
                let tenant: TenantRef = serde_json::from_str(&payload).unwrap();
                let seen = tenancy
                    .run_ref(&tenant, note_and_marker(&tenancy, &body))
                    .await
                    .unwrap()
                    .unwrap();
                done.push((tenant.schema().to_string(), seen));
            }
            done
        })
    };
    // Interleaved: job2, job0, job1, job2 …
    for round in 0..2 {
        for i in [2, 0, 1] {
            let payload = queued_by_request(&tenancy, &format!("job{i}.test")).await;
            assert!(
                payload.contains(&format!("\"schema\":\"job{i}\"")),
                "{payload}"
            );
            tx.send((payload, format!("job{i} round {round}")))
                .await
                .unwrap();
        }
    }
    drop(tx);
    let done = worker.await.unwrap();
    assert_eq!(done.len(), 6);
    for (schema, seen) in &done {
        assert_eq!(schema, seen, "a job ran in another tenant's schema");
    }
    for (i, schema) in schemas.iter().enumerate() {
        // `marked_tenants` gave tenant i i notes of its own ("x").
        let mut expected = vec!["x".to_owned(); i];
        expected.extend((0..2).map(|round| format!("job{i} round {round}")));
        assert_eq!(notes(&tenancy, schema).await, expected, "{schema}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tenant_is_gone_even_when_re_created_in_its_schema() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "gone", 2).await;
    let payload = queued_by_request(&tenancy, "gone0.test").await;
    let job: TenantRef = serde_json::from_str(&payload).unwrap();

    tenancy
        .delete_tenant(&schemas[0], DropSchema::Yes)
        .await
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let job_ran = ran.clone();
    let result = tenancy
        .run_ref(&job, async move { job_ran.store(true, Ordering::SeqCst) })
        .await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err, Error::TenantGone { id, schema } if *id == job.id() && schema == &schemas[0]),
        "{err}"
    );
    assert!(err.to_string().contains("`gone0`"), "{err}");

    // A new tenant in the same schema is another tenant: the old job must not write there.
    let new = tenancy
        .create_tenant(NewTenant::new(schemas[0].clone()).domain(host("gone0.test")))
        .await
        .unwrap();
    assert_ne!(new.id, job.id());
    let result = tenancy
        .run_ref(&job, async { ran.store(true, Ordering::SeqCst) })
        .await;
    assert!(
        matches!(result, Err(Error::TenantGone { .. })),
        "{result:?}"
    );
    assert!(!ran.load(Ordering::SeqCst), "the job ran");
    assert!(notes(&tenancy, &schemas[0]).await.is_empty());
    // A job queued for the new tenant runs.
    let fresh = TenantRef::from(&new);
    tenancy
        .run_ref(&fresh, async {
            let db = tenancy.connection().await?;
            db.execute("INSERT INTO notes (body) VALUES ('new')", &[])
                .await
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(notes(&tenancy, &schemas[0]).await, vec!["new".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_moved_to_another_schema_or_database_is_refused() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "moved", 1).await;
    let job: TenantRef =
        serde_json::from_str(&queued_by_request(&tenancy, "moved0.test").await).unwrap();
    let admin = db.pool().get().await.unwrap();

    // Renamed (as a schema rename would leave the registry).
    admin
        .batch_execute(
            "ALTER SCHEMA moved0 RENAME TO moved0_new;
             UPDATE public.tenant_schemas_tenants SET schema_name = 'moved0_new' WHERE schema_name = 'moved0'",
        )
        .await
        .unwrap();
    let err = tenancy.run_ref(&job, async {}).await.unwrap_err();
    assert!(
        matches!(&err, Error::TenantMoved { now_schema, .. } if now_schema.as_str() == "moved0_new"),
        "{err}"
    );
    assert!(
        err.to_string().contains("`moved0`") && err.to_string().contains("`moved0_new`"),
        "{err}"
    );
    assert_eq!(err.status(), 409);

    // Back in its schema, but on another database.
    admin
        .batch_execute(
            "ALTER SCHEMA moved0_new RENAME TO moved0;
             UPDATE public.tenant_schemas_tenants SET schema_name = 'moved0', shard = 'eu' WHERE schema_name = 'moved0_new'",
        )
        .await
        .unwrap();
    let err = tenancy.run_ref(&job, async {}).await.unwrap_err();
    assert!(
        matches!(&err, Error::TenantMoved { now_shard, .. } if now_shard.as_str() == "eu"),
        "{err}"
    );

    admin
        .batch_execute("UPDATE public.tenant_schemas_tenants SET shard = 'default'")
        .await
        .unwrap();
    let seen = tenancy
        .run_ref(&job, note_and_marker(&tenancy, "back"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, schemas[0].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_not_served_in_its_state_is_refused() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "state", 1).await;
    let job: TenantRef =
        serde_json::from_str(&queued_by_request(&tenancy, "state0.test").await).unwrap();

    for status in [
        TenantStatus::Maintenance,
        TenantStatus::Suspended,
        TenantStatus::Archived,
    ] {
        tenancy.set_status(&schemas[0], status).await.unwrap();
        let err = tenancy
            .run_ref(&job, note_and_marker(&tenancy, "refused"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::TenantNotServed { status: s, .. } if *s == status),
            "{status}: {err}"
        );
    }
    tenancy
        .set_status(&schemas[0], TenantStatus::Active)
        .await
        .unwrap();
    tenancy
        .run_ref(&job, note_and_marker(&tenancy, "active"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        notes(&tenancy, &schemas[0]).await,
        vec!["active".to_owned()]
    );
}

/// The span's name and whether it is the one `expected` is, as seen inside a task.
fn current_span_is(expected: &tracing::Span) -> (Option<&'static str>, bool) {
    let current = tracing::Span::current();
    (
        current.metadata().map(|m| m.name()),
        current.id().is_some() && current.id() == expected.id(),
    )
}

#[tokio::test]
async fn spawned_tasks_and_restored_jobs_keep_their_span() {
    // The global subscriber (a thread's own would race with the other tests' threads over
    // what each span's call site is interested in). Only this test sets it.
    tracing::subscriber::set_global_default(tracing_subscriber::registry()).unwrap();
    let acme = tenant_schemas::Tenant::new(SchemaName::new("acme").unwrap()).with_id(1);
    let span = tracing::info_span!("tenant_request", host = "acme.test", tenant = "acme");
    let (spawned, plain) = scope::run(
        acme,
        async {
            let expected = tracing::Span::current();
            let spawned =
                scope::spawn(async move { (current_span_is(&expected), scope::current_schema()) });
            let plain = tokio::spawn(async { tracing::Span::current().is_none() });
            (spawned.await.unwrap(), plain.await.unwrap())
        }
        .instrument(span),
    )
    .await;
    let ((name, same), schema) = spawned;
    assert_eq!(name, Some("tenant_request"));
    assert!(same, "scope::spawn ran the task in another span");
    assert_eq!(schema.unwrap().as_str(), "acme");
    // The control: tokio::spawn carries neither.
    assert!(plain, "tokio::spawn kept the span");

    // A job restored on a worker runs in a `tenant_job` span, which its own spawned tasks
    // keep too.
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    marked_tenants(&tenancy, "span", 1).await;
    let job: TenantRef =
        serde_json::from_str(&queued_by_request(&tenancy, "span0.test").await).unwrap();
    let (name, schema) = tenancy
        .run_ref(&job, async {
            let inner = scope::spawn(async {
                (
                    tracing::Span::current().metadata().map(|m| m.name()),
                    scope::current_schema(),
                )
            });
            inner.await.unwrap()
        })
        .await
        .unwrap();
    assert_eq!(name, Some("tenant_job"));
    assert_eq!(schema.unwrap().as_str(), "span0");
}
