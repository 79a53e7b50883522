//! SeaORM on tenant-schemas: a SeaORM transaction bound to a tenant's schema, over the same
//! sqlx pool a [`SqlxRouter`](tenant_schemas_sqlx::SqlxRouter) uses.
//!
//! [`tenant_transaction`] begins a [`DatabaseTransaction`] and, in its first statement, sets
//! the search path with `set_config('search_path', '"<schema>", public', true)` (the same as
//! `SET LOCAL`: it ends with the transaction), checks that the schema exists (an error,
//! never a fall-through to `public`) and that the session holds no temporary objects (which
//! PostgreSQL searches before the path). Every SeaORM query run on it then reads and writes
//! the tenant's tables.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement,
    TransactionTrait,
};
use tenant_schemas::{scope, SchemaName};

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

/// What can go wrong beginning a tenant-bound SeaORM transaction.
#[derive(Debug)]
#[non_exhaustive]
pub enum TenantDbError {
    /// No tenant in scope ([`tenant_transaction_in_scope`]).
    NoTenantInScope,
    /// The schema does not exist: nothing ran.
    SchemaMissing(SchemaName),
    /// The pooled connection holds temporary objects an earlier user made, which would
    /// shadow the tenant's tables: refused (a [`SqlxRouter`](tenant_schemas_sqlx::SqlxRouter)
    /// checkout over the same pool closes such a connection).
    TemporaryObjects(SchemaName),
    /// SeaORM's error.
    Db(DbErr),
}

impl std::fmt::Display for TenantDbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoTenantInScope => f.write_str("no tenant in scope"),
            Self::SchemaMissing(s) => write!(f, "schema `{s}` does not exist on this database"),
            Self::TemporaryObjects(s) => write!(
                f,
                "refusing a connection for `{s}`: its session holds temporary objects"
            ),
            Self::Db(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for TenantDbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DbErr> for TenantDbError {
    fn from(e: DbErr) -> Self {
        Self::Db(e)
    }
}

/// A SeaORM transaction on `db` whose statements run on `schema`'s search path.
pub async fn tenant_transaction(
    db: &DatabaseConnection,
    schema: &SchemaName,
) -> Result<DatabaseTransaction, TenantDbError> {
    let txn = db.begin().await?;
    let path = if schema.is_public() {
        schema.quoted()
    } else {
        format!("{}, public", schema.quoted())
    };
    // One statement: the cast of a constant to regnamespace is folded when the statement is
    // planned, so a missing schema fails it before the path is set.
    let check = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_catalog.set_config('search_path', $1, true) AS path, \
                pg_catalog.to_regnamespace($2) IS NOT NULL AS present, \
                pg_catalog.pg_my_temp_schema() = 0 AS no_temp",
        [path.into(), schema.quoted().into()],
    );
    let row = txn
        .query_one(check)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("search path check".into()))?;
    if !row.try_get::<bool>("", "present")? {
        return Err(TenantDbError::SchemaMissing(schema.clone()));
    }
    if !row.try_get::<bool>("", "no_temp")? {
        return Err(TenantDbError::TemporaryObjects(schema.clone()));
    }
    Ok(txn)
}

/// [`tenant_transaction`] for the tenant in [`scope`].
pub async fn tenant_transaction_in_scope(
    db: &DatabaseConnection,
) -> Result<DatabaseTransaction, TenantDbError> {
    let schema = scope::current_schema().ok_or(TenantDbError::NoTenantInScope)?;
    tenant_transaction(db, &schema).await
}
