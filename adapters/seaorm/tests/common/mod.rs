//! What the SeaORM driver's tests share: the entities of the fixtures' tables and the set-up.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    missing_debug_implementations
)]

use std::time::Duration;

use sea_orm::{ConnectionTrait, DbErr, EntityTrait};
use sqlx::postgres::PgPoolOptions;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{SchemaName, Tenancy};
use tenant_schemas_seaorm::SeaOrmRouter;
use tenant_schemas_sqlx::{connect_options, SqlxRouter};

/// The tenants' `notes` table (`marker_and_notes`).
pub mod note {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `marker` table: one row naming the schema (`PUBLIC` in `public`).
pub mod marker {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "marker")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub schema_name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A database with tenants `<prefix>0..n` (marker and notes) and `public.marker` planted (a
/// fall-through reads `PUBLIC`), a `Tenancy` with a short grace for held connections, and a
/// SeaORM router over a sqlx pool of `size` connections with the `Tenancy`'s states.
pub async fn setup(
    prefix: &str,
    n: usize,
    size: u32,
) -> (TestDatabase, Tenancy, Vec<SchemaName>, SeaOrmRouter) {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(4).unwrap())
        .migrations(marker_and_notes())
        .held_connection_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let schemas = marked_tenants(&tenancy, prefix, n).await;
    plant_public_marker(db.pool()).await;
    let pool = PgPoolOptions::new()
        .max_connections(size)
        .connect_with(connect_options(db.config()))
        .await
        .unwrap();
    let router = SqlxRouter::builder(pool)
        .tenant_states(tenancy.tenant_states())
        .build();
    (db, tenancy, schemas, SeaOrmRouter::new(router))
}

/// The marker `db` reads through the entity: the schema its statements run in.
pub async fn seen_marker(db: &impl ConnectionTrait) -> Result<String, DbErr> {
    Ok(marker::Entity::find()
        .one(db)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("marker".into()))?
        .schema_name)
}

/// The notes of `schema` with `body`, counted by the core over its own connection.
pub async fn notes_in(db: &TestDatabase, schema: &SchemaName, body: &str) -> i64 {
    tenant_schemas::testing::fixtures::notes_with_body(db, schema, body).await
}

/// The rows of `public.marker`: only `PUBLIC` while nothing fell through.
pub async fn public_markers(db: &TestDatabase) -> Vec<String> {
    db.pool()
        .get()
        .await
        .unwrap()
        .query("SELECT schema_name FROM public.marker ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}
