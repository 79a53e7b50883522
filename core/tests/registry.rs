//! The tenant registry against a real PostgreSQL: atomic creation, domains, deletion.

#![allow(clippy::unwrap_used)]

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{
    scope, DropSchema, Error, ErrorKind, NewTenant, Tenant, TenantMigrations, TenantStatus,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_migration_leaves_no_schema_and_no_row() {
    let db = database().await;
    let migrations = TenantMigrations::new().with("notes", NOTES).with(
        "broken",
        "CREATE TABLE broken (id int REFERENCES nowhere (id))",
    );
    let tenancy = tenancy(&db, migrations).await;
    let new = NewTenant::new(schema("doomed")).domain(host("doomed.test"));
    let err = tenancy.create_tenant(new).await.unwrap_err();
    match &err {
        Error::Migration {
            schema, migration, ..
        } => {
            assert_eq!(schema.as_str(), "doomed");
            assert_eq!(migration, "V2__broken.sql");
        }
        other => panic!("expected a migration error, got {other:?}"),
    }
    assert!(err.to_string().contains("nowhere"), "{err}");
    assert!(!schema_exists(&db, "doomed").await);
    assert!(tenancy.registry().list().await.unwrap().is_empty());
    assert!(matches!(
        tenancy.resolve(&host("doomed.test")).await,
        Err(Error::UnknownHost { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_domain_or_schema_leaves_nothing_behind() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    tenancy
        .create_tenant(NewTenant::new(schema("first")).domain(host("shared.test")))
        .await
        .unwrap();
    let err = tenancy
        .create_tenant(NewTenant::new(schema("second")).domain(host("SHARED.test")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DomainTaken { domain } if domain == "shared.test"),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(!schema_exists(&db, "second").await);
    let err = tenancy
        .create_tenant(NewTenant::new(schema("first")).domain(host("other.test")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantExists { .. }), "{err:?}");
    // A schema that exists outside the registry is refused too, and kept intact.
    let conn = tenancy.router().public().await.unwrap();
    conn.batch_execute("CREATE SCHEMA squatter; CREATE TABLE squatter.keep (x int)")
        .await
        .unwrap();
    let err = tenancy
        .create_tenant(NewTenant::new(schema("squatter")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantExists { .. }), "{err:?}");
    conn.query("SELECT * FROM squatter.keep", &[])
        .await
        .unwrap();
    let list = tenancy.registry().list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].schema.as_str(), "first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_domains_and_delete() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let public = tenancy
        .ensure_public_tenant(&host("example.test"))
        .await
        .unwrap();
    assert!(public.schema.is_public());
    // Idempotent.
    let again = tenancy
        .ensure_public_tenant(&host("example.test"))
        .await
        .unwrap();
    assert_eq!(public.id, again.id);

    let acme = tenancy
        .create_tenant(
            NewTenant::new(schema("acme"))
                .name("Acme Inc.")
                .domain(host("acme.example.test"))
                .domain(host("acme.test")),
        )
        .await
        .unwrap();
    assert_eq!(acme.version, 2);
    assert_eq!(acme.primary_domain(), Some("acme.example.test"));
    assert!(tenancy
        .resolve(&host("example.test"))
        .await
        .unwrap()
        .is_public());
    assert_eq!(
        tenancy.resolve(&host("acme.test")).await.unwrap().name(),
        "Acme Inc."
    );

    // A negative entry is cached, then a new domain resolves at once.
    assert!(tenancy.resolve(&host("www.acme.test")).await.is_err());
    tenancy
        .add_domain(&acme.schema, &host("www.acme.test"), true)
        .await
        .unwrap();
    assert_eq!(
        tenancy
            .resolve(&host("www.acme.test"))
            .await
            .unwrap()
            .schema()
            .as_str(),
        "acme"
    );
    let record = tenancy.registry().get(&acme.schema).await.unwrap();
    assert_eq!(record.primary_domain(), Some("www.acme.test"));
    assert_eq!(record.domains.len(), 3);

    tenancy
        .remove_domain(&acme.schema, &host("acme.test"))
        .await
        .unwrap();
    assert!(matches!(
        tenancy.resolve(&host("acme.test")).await,
        Err(Error::UnknownHost { .. })
    ));
    let err = tenancy
        .remove_domain(&acme.schema, &host("acme.test"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DomainNotFound { .. }));

    // Suspended tenants resolve with their state (the request path answers 403, and the
    // router gives them no connection).
    tenancy
        .set_status(&acme.schema, TenantStatus::Suspended)
        .await
        .unwrap();
    let suspended = tenancy.resolve(&host("www.acme.test")).await.unwrap();
    assert_eq!(suspended.status(), TenantStatus::Suspended);
    assert!(
        scope::run(suspended, async { tenancy.router().connection().await })
            .await
            .is_err()
    );
    tenancy
        .set_status(&acme.schema, TenantStatus::Active)
        .await
        .unwrap();
    assert!(tenancy.resolve(&host("www.acme.test")).await.is_ok());

    let names: Vec<String> = tenancy
        .registry()
        .list()
        .await
        .unwrap()
        .iter()
        .map(|r| r.schema.to_string())
        .collect();
    assert_eq!(names, ["acme", "public"]);

    // Delete, keeping the schema.
    tenancy
        .delete_tenant(&acme.schema, DropSchema::No)
        .await
        .unwrap();
    assert!(schema_exists(&db, "acme").await);
    assert!(tenancy.resolve(&host("www.acme.test")).await.is_err());
    assert!(matches!(
        tenancy.registry().get(&acme.schema).await,
        Err(Error::TenantNotFound { .. })
    ));

    // Delete, dropping the schema.
    let beta = tenancy
        .create_tenant(NewTenant::new(schema("beta")).domain(host("beta.test")))
        .await
        .unwrap();
    scope::run(beta.tenant(), async {
        let conn = tenancy.connection().await.unwrap();
        conn.execute("INSERT INTO notes (body) VALUES ('bye')", &[])
            .await
            .unwrap();
    })
    .await;
    tenancy
        .delete_tenant(&beta.schema, DropSchema::Yes)
        .await
        .unwrap();
    assert!(!schema_exists(&db, "beta").await);
    let err = tenancy
        .delete_tenant(&beta.schema, DropSchema::Yes)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // The public schema is never dropped.
    tenancy
        .delete_tenant(&public.schema, DropSchema::Yes)
        .await
        .unwrap();
    assert!(schema_exists(&db, "public").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_installs_and_creations_are_safe() {
    let db = database().await;
    let t = tenancy(&db, marker_and_notes()).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let pool = db.pool().clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            // Building a Tenancy installs the registry tables.
            tenant_schemas::Tenancy::builder(pool)
                .build()
                .await
                .unwrap();
            t.create_tenant(NewTenant::new(schema(&format!("c{}", i % 4))))
                .await
                .map(drop)
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => created += 1,
            Err(Error::TenantExists { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 4);
    assert_eq!(t.registry().list().await.unwrap().len(), 4);
    let _ = Tenant::public();
}
