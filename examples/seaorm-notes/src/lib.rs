//! SeaORM on tenant-schemas: the `notes` entity, and the router that binds SeaORM
//! connections to a tenant's schema ([`tenant_schemas_seaorm`]).

use tenant_schemas::{ConnectionSettings, Tenancy};
use tenant_schemas_seaorm::SeaOrmRouter;
use tenant_schemas_sqlx::SqlxRouter;

/// The entity of the tenants' `notes` table.
#[allow(missing_docs, unreachable_pub, missing_debug_implementations)]
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

/// A SeaORM router over a sqlx pool made as the core makes its own (the same URL, TLS and
/// timeouts), serving tenants in the state `tenancy`'s registry has for them.
pub fn router(
    settings: &ConnectionSettings,
    tenancy: &Tenancy,
) -> tenant_schemas::Result<SeaOrmRouter> {
    let pool = tenant_schemas_sqlx::pool_from_settings(settings)?;
    Ok(SeaOrmRouter::new(
        SqlxRouter::builder(pool)
            .tenant_states(tenancy.tenant_states())
            .build(),
    ))
}
