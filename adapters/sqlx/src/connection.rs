//! [`SqlxConnection`]: a pooled sqlx connection bound to one schema.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres};
use tenant_schemas::checkout::DriverCheckout;
use tenant_schemas::{SchemaName, TenantStatus};

/// A pooled sqlx connection bound to one schema, from [`SqlxRouter`](crate::SqlxRouter).
///
/// It derefs to [`sqlx::PgConnection`], so sqlx code runs on it unchanged:
/// `sqlx::query(…).fetch_one(&mut *conn)`, `query_as!`, `conn.begin()`.
///
/// When it is handed out, its search path is `"<schema>", public`, the schema exists, and
/// nothing an earlier user of the pooled connection did is left: no open transaction, no
/// temporary objects. What it does **not** do: read the SQL sent through it. SQL that changes
/// the session (`SET search_path`, `RESET ALL`, `DISCARD ALL`, `set_config(…)`) affects the
/// statements sent after it *on this connection*, never the next checkout's path, role or
/// timeout, which it switches again and checks afresh. Other settings made for the session
/// (`SET work_mem …`, `SET app.token …`) stay for this checkout; the next checkout's switch
/// resets them first (`RESET ALL`, in session mode, unless the router was built with
/// `reset_settings(false)`). Dropping it returns the connection to the pool
/// (sqlx first waits out a statement that was cancelled mid-flight).
///
/// It carries the core's checkout ([`tenant_schemas::checkout::DriverCheckout`]) for its
/// whole life: a read-only tenant's session is read-only (`default_transaction_read_only`),
/// and a deletion or rename of the schema through `Tenancy` waits for it to be dropped, for
/// at most its grace period, then terminates its backend, so that it can reach nothing
/// afterwards — neither the dropped schema's name nor `public`.
pub struct SqlxConnection {
    // Dropped first (fields drop in order): the checkout ends before the connection goes
    // back to the pool, so a deletion that gives up waiting can never terminate the backend
    // after another checkout took it.
    checkout: DriverCheckout,
    conn: PoolConnection<Postgres>,
}

impl SqlxConnection {
    pub(crate) fn new(conn: PoolConnection<Postgres>, checkout: DriverCheckout) -> Self {
        Self { conn, checkout }
    }

    /// The schema this connection is bound to.
    #[must_use]
    pub fn schema(&self) -> &SchemaName {
        self.checkout.schema()
    }

    /// The state the tenant is served in ([`TenantStatus::Active`] or
    /// [`TenantStatus::ReadOnly`]).
    #[must_use]
    pub fn status(&self) -> TenantStatus {
        self.checkout.status()
    }

    /// What a query of this connection failed with, as this crate's [`Error`](crate::Error):
    /// a write refused because the tenant is read-only is
    /// [`Error::TenantReadOnly`](crate::Error::TenantReadOnly) (403 in the extractors'
    /// rejections), anything else a database error.
    #[must_use]
    pub fn error(&self, source: sqlx::Error) -> crate::Error {
        crate::Error::query(self.schema(), source)
    }

    /// Closes the connection instead of returning it to the pool.
    pub async fn close(self) -> sqlx::Result<()> {
        self.conn.close().await
    }
}

impl std::fmt::Debug for SqlxConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlxConnection")
            .field("schema", self.schema())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Deref for SqlxConnection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for SqlxConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl AsMut<PgConnection> for SqlxConnection {
    fn as_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
