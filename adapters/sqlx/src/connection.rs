//! [`SqlxConnection`]: a pooled sqlx connection bound to one schema.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres};
use tenant_schemas::SchemaName;

/// A pooled sqlx connection bound to one schema, from [`SqlxRouter`](crate::SqlxRouter).
///
/// It derefs to [`sqlx::PgConnection`], so sqlx code runs on it unchanged:
/// `sqlx::query(…).fetch_one(&mut *conn)`, `query_as!`, `conn.begin()`.
///
/// When it is handed out, its search path is `"<schema>", public`, the schema exists, and
/// nothing an earlier user of the pooled connection did is left: no open transaction, no
/// temporary objects. What it does **not** do: read the SQL sent through it. SQL that changes
/// the session (`SET search_path`, `RESET ALL`, `DISCARD ALL`, `set_config(…)`) affects the
/// statements sent after it *on this connection*, never the next checkout, which switches
/// again and checks the session afresh. Dropping it returns the connection to the pool
/// (sqlx first waits out a statement that was cancelled mid-flight).
pub struct SqlxConnection {
    conn: PoolConnection<Postgres>,
    schema: SchemaName,
}

impl SqlxConnection {
    pub(crate) fn new(conn: PoolConnection<Postgres>, schema: SchemaName) -> Self {
        Self { conn, schema }
    }

    /// The schema this connection is bound to.
    #[must_use]
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// Closes the connection instead of returning it to the pool.
    pub async fn close(self) -> sqlx::Result<()> {
        self.conn.close().await
    }
}

impl std::fmt::Debug for SqlxConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlxConnection")
            .field("schema", &self.schema)
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
