//! [`SeaOrmRouter`]: tenant-bound SeaORM connections and transactions over a
//! [`SqlxRouter`].

use std::future::Future;
use std::pin::Pin;

use sea_orm::TransactionError;
use tenant_schemas::{scope, SchemaName, SearchPathMode, Tenant};
use tenant_schemas_sqlx::SqlxRouter;

use crate::connection::{Door, SeaOrmConnection};
use crate::error::Result;
use crate::transaction::{SeaOrmTransaction, TxConn};

/// Hands out SeaORM connections and transactions bound to a tenant's schema.
///
/// A thin layer over tenant-schemas-sqlx's [`SqlxRouter`] (build it with
/// [`SqlxRouterBuilder::tenant_states`](tenant_schemas_sqlx::SqlxRouterBuilder::tenant_states)
/// so that tenants are served in the registry's state): every connection is one of its
/// checkouts, with every guarantee it keeps. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SeaOrmRouter {
    sqlx: SqlxRouter,
}

impl From<SqlxRouter> for SeaOrmRouter {
    fn from(sqlx: SqlxRouter) -> Self {
        Self::new(sqlx)
    }
}

impl SeaOrmRouter {
    /// A router over `sqlx`'s checkouts.
    #[must_use]
    pub fn new(sqlx: SqlxRouter) -> Self {
        Self { sqlx }
    }

    /// The sqlx router underneath (for sqlx queries beside SeaORM's).
    #[must_use]
    pub fn sqlx(&self) -> &SqlxRouter {
        &self.sqlx
    }

    /// A connection for the tenant in [scope](tenant_schemas::scope);
    /// [`NoTenantInScope`](tenant_schemas_sqlx::Error::NoTenantInScope) outside any scope.
    pub async fn connection(&self) -> Result<SeaOrmConnection> {
        self.connection_for_tenant(&current_tenant()?).await
    }

    /// A connection bound to `tenant`'s schema, in the state the registry has for it
    /// ([`SqlxRouter::connection_for_tenant`]).
    pub async fn connection_for_tenant(&self, tenant: &Tenant) -> Result<SeaOrmConnection> {
        self.open(Door::Tenant(tenant.clone())).await
    }

    /// A connection bound to `schema` by name ([`SqlxRouter::connection_for_schema`]).
    pub async fn connection_for_schema(&self, schema: &SchemaName) -> Result<SeaOrmConnection> {
        self.open(Door::Schema(schema.clone())).await
    }

    /// A connection bound to the shared `public` schema (read and write).
    pub async fn public(&self) -> Result<SeaOrmConnection> {
        self.connection_for_schema(&SchemaName::public()).await
    }

    async fn open(&self, door: Door) -> Result<SeaOrmConnection> {
        let conn = door.checkout(&self.sqlx).await?;
        Ok(SeaOrmConnection::new(self.sqlx.clone(), door, conn))
    }

    /// A transaction for the tenant in scope, on a connection of its own
    /// ([`SqlxRouter::begin`]); works in both search-path modes, and behind PgBouncer in
    /// transaction pooling it is the only way in (statements then run unnamed).
    pub async fn begin(&self) -> Result<SeaOrmTransaction<'static>> {
        self.begin_for_tenant(&current_tenant()?).await
    }

    /// A transaction bound to `tenant`'s schema ([`SqlxRouter::begin_for_tenant`]).
    pub async fn begin_for_tenant(&self, tenant: &Tenant) -> Result<SeaOrmTransaction<'static>> {
        let tx = self.sqlx.begin_for_tenant(tenant).await?;
        Ok(self.wrap(tx))
    }

    /// A transaction bound to `schema` by name ([`SqlxRouter::begin_for`]).
    pub async fn begin_for(&self, schema: &SchemaName) -> Result<SeaOrmTransaction<'static>> {
        let tx = self.sqlx.begin_for(schema).await?;
        Ok(self.wrap(tx))
    }

    fn wrap(&self, tx: tenant_schemas_sqlx::SqlxTransaction) -> SeaOrmTransaction<'static> {
        let (schema, status) = (tx.schema().clone(), tx.status());
        // Behind a transaction pooler, nothing named may outlive the transaction.
        let persistent = self.sqlx.mode() == SearchPathMode::Session;
        SeaOrmTransaction::new(TxConn::Owned(tx), schema, status, persistent)
    }

    /// Runs `callback` in a transaction for the tenant in scope ([`begin`](Self::begin)),
    /// committed if it returns `Ok`, rolled back if it returns `Err`.
    pub async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'t, 'c> FnOnce(
                &'t SeaOrmTransaction<'c>,
            )
                -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 't>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let tx = self
            .begin()
            .await
            .map_err(|e| TransactionError::Connection(e.into()))?;
        tx.run(callback).await
    }
}

fn current_tenant() -> Result<Tenant> {
    scope::current_tenant().ok_or_else(|| tenant_schemas_sqlx::Error::NoTenantInScope.into())
}
