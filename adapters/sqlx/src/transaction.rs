//! [`SqlxTransaction`]: a transaction bound to one schema.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Executor, PgConnection, Postgres};
use tenant_schemas::checkout::DriverCheckout;
use tenant_schemas::{SchemaName, TenantStatus};

use crate::error::{Error, Result};

/// A transaction on a pooled sqlx connection, bound to one schema, from
/// [`SqlxRouter::begin`](crate::SqlxRouter::begin).
///
/// It derefs to [`sqlx::PgConnection`]: run statements with `&mut *tx`. End it with
/// [`commit`](Self::commit) or [`rollback`](Self::rollback); dropped without either (an error
/// path, a cancelled request), it is rolled back on a spawned task before the connection
/// goes back to the pool, or the connection is closed (the server then rolls back) when no
/// tokio runtime is at hand or the rollback fails.
///
/// Do not send `COMMIT`, `ROLLBACK` or `BEGIN` through it yourself: in
/// [`SearchPathMode::Transaction`](tenant_schemas::SearchPathMode::Transaction) the
/// statements after them would run outside the tenant's transaction, on whatever server
/// connection the pooler picks. (In session mode the connection stays on the tenant's path.)
pub struct SqlxTransaction {
    /// `Some` until committed, rolled back or dropped.
    conn: Option<PoolConnection<Postgres>>,
    /// The core's checkout, held as long as the transaction (see
    /// [`SqlxConnection`](crate::SqlxConnection)).
    checkout: DriverCheckout,
}

impl SqlxTransaction {
    pub(crate) fn new(conn: PoolConnection<Postgres>, checkout: DriverCheckout) -> Self {
        Self {
            conn: Some(conn),
            checkout,
        }
    }

    /// The schema this transaction is bound to.
    #[must_use]
    pub fn schema(&self) -> &SchemaName {
        self.checkout.schema()
    }

    /// The state the tenant is served in ([`TenantStatus::Active`] or
    /// [`TenantStatus::ReadOnly`]: then the transaction is `READ ONLY`).
    #[must_use]
    pub fn status(&self) -> TenantStatus {
        self.checkout.status()
    }

    /// What a query of this transaction failed with, as this crate's
    /// [`Error`](crate::Error) (see [`SqlxConnection::error`](crate::SqlxConnection::error)).
    #[must_use]
    pub fn error(&self, source: sqlx::Error) -> Error {
        Error::query(self.schema(), source)
    }

    /// Commits the transaction.
    pub async fn commit(mut self) -> Result<()> {
        self.finish("COMMIT", "committing").await
    }

    /// Rolls the transaction back.
    pub async fn rollback(mut self) -> Result<()> {
        self.finish("ROLLBACK", "rolling back").await
    }

    async fn finish(&mut self, sql: &str, action: &'static str) -> Result<()> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        match conn.execute(sql).await {
            Ok(_) => Ok(()),
            Err(source) => {
                conn.close_on_drop();
                Err(Error::Database {
                    action,
                    schema: self.schema().clone(),
                    source,
                })
            }
        }
    }

    fn conn(&self) -> &PoolConnection<Postgres> {
        self.conn
            .as_ref()
            .expect("the connection is only taken out by commit, rollback and drop")
    }

    fn conn_mut(&mut self) -> &mut PoolConnection<Postgres> {
        self.conn
            .as_mut()
            .expect("the connection is only taken out by commit, rollback and drop")
    }
}

impl Drop for SqlxTransaction {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if conn.execute("ROLLBACK").await.is_err() {
                        conn.close_on_drop();
                    }
                });
            }
            Err(_) => conn.close_on_drop(),
        }
    }
}

impl std::fmt::Debug for SqlxTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlxTransaction")
            .field("schema", self.schema())
            .field("open", &self.conn.is_some())
            .finish()
    }
}

impl Deref for SqlxTransaction {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn()
    }
}

impl DerefMut for SqlxTransaction {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn_mut()
    }
}

impl AsMut<PgConnection> for SqlxTransaction {
    fn as_mut(&mut self) -> &mut PgConnection {
        self.conn_mut()
    }
}
