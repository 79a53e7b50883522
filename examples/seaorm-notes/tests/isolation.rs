//! Each tenant sees only its notes through SeaORM; a missing schema is an error.

#![allow(clippy::unwrap_used)]

use sea_orm::{ActiveModelTrait, EntityTrait, Set, SqlxPostgresConnector};
use seaorm_notes::{note, tenant_transaction, tenant_transaction_in_scope, TenantDbError};
use tenant_schemas::testing::fixtures::{database, schema, tenancy, NOTES};
use tenant_schemas::{scope, Tenant, TenantMigrations};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_sees_only_its_notes() {
    let db = database().await;
    let tenancy = tenancy(&db, TenantMigrations::new().with("notes", NOTES)).await;
    for name in ["orm_a", "orm_b"] {
        tenancy
            .create_tenant(tenant_schemas::NewTenant::new(schema(name)))
            .await
            .unwrap();
    }
    // A same-named table in public, holding a row: a fall-through would show.
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.notes (id bigserial PRIMARY KEY, body text NOT NULL);
             INSERT INTO public.notes (body) VALUES ('PUBLIC')",
        )
        .await
        .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(tenant_schemas_sqlx::connect_options(db.config()))
        .await
        .unwrap();
    let orm = SqlxPostgresConnector::from_sqlx_postgres_pool(pool);

    for (name, n) in [("orm_a", 2), ("orm_b", 3)] {
        let txn = tenant_transaction(&orm, &schema(name)).await.unwrap();
        for i in 0..n {
            note::ActiveModel {
                body: Set(format!("{name} {i}")),
                ..Default::default()
            }
            .insert(&txn)
            .await
            .unwrap();
        }
        txn.commit().await.unwrap();
    }
    for _ in 0..4 {
        for (name, n) in [("orm_a", 2), ("orm_b", 3)] {
            let bodies = scope::run(Tenant::new(schema(name)), async {
                let txn = tenant_transaction_in_scope(&orm).await.unwrap();
                note::Entity::find().all(&txn).await.unwrap()
            })
            .await;
            assert_eq!(bodies.len(), n, "{name}: {bodies:?}");
            assert!(
                bodies.iter().all(|b| b.body.starts_with(name)),
                "{name}: {bodies:?}"
            );
        }
    }
    assert!(matches!(
        tenant_transaction_in_scope(&orm).await,
        Err(TenantDbError::NoTenantInScope)
    ));

    // A dropped schema: an error, not public's rows.
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute("DROP SCHEMA orm_b CASCADE")
        .await
        .unwrap();
    assert!(matches!(
        tenant_transaction(&orm, &schema("orm_b")).await,
        Err(TenantDbError::SchemaMissing(_))
    ));
    assert!(matches!(
        tenant_transaction(&orm, &schema("never_made")).await,
        Err(TenantDbError::SchemaMissing(_))
    ));
}
