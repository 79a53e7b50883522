//! Each tenant sees only its notes through SeaORM; a missing schema is an error, and so is
//! asking outside any tenant scope.

#![allow(clippy::unwrap_used)]

use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use seaorm_notes::note;
use tenant_schemas::testing::fixtures::{database, schema, tenancy, NOTES};
use tenant_schemas::{scope, ConnectionSettings, Tenant, TenantMigrations};

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
    let settings = ConnectionSettings::new(db.config().clone());
    let orm = seaorm_notes::router(&settings, &tenancy).unwrap();

    for (name, n) in [("orm_a", 2), ("orm_b", 3)] {
        let db = orm.connection_for_schema(&schema(name)).await.unwrap();
        for i in 0..n {
            note::ActiveModel {
                body: Set(format!("{name} {i}")),
                ..Default::default()
            }
            .insert(&db)
            .await
            .unwrap();
        }
    }
    for _ in 0..4 {
        for (name, n) in [("orm_a", 2), ("orm_b", 3)] {
            let bodies = scope::run(Tenant::new(schema(name)), async {
                let db = orm.connection().await.unwrap();
                note::Entity::find().all(&db).await.unwrap()
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
        orm.connection().await,
        Err(tenant_schemas_seaorm::Error::Driver(
            tenant_schemas_sqlx::Error::NoTenantInScope
        ))
    ));

    // A dropped schema: an error, not public's rows.
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute("DROP SCHEMA orm_b CASCADE")
        .await
        .unwrap();
    for name in ["orm_b", "never_made"] {
        let err = orm.connection_for_schema(&schema(name)).await.unwrap_err();
        assert!(err.is_schema_missing(), "{name}: {err}");
    }
}
