//! The error type of the sqlx driver.

use http::StatusCode;
use tenant_schemas::{ErrorKind, SchemaName, TenantStatus};

/// A shorthand for `Result<T, tenant_schemas_sqlx::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong handing out a tenant-bound sqlx connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tenant connection was asked for outside any tenant scope (a programming error).
    /// The router fails closed: it never falls back to `public`.
    #[error("no tenant in scope: run this code inside `scope::run` or a tenant-aware handler")]
    NoTenantInScope,

    /// The schema does not exist on this database: the tenant was deleted, never created,
    /// or lives on another database. Nothing ran: a search path whose first schema is missing
    /// would let every unqualified name fall through to `public`.
    #[error("schema `{schema}` does not exist on this database (deleted, never created, or on another shard)")]
    SchemaMissing {
        /// The missing schema.
        schema: SchemaName,
    },

    /// No connection could be had from the pool, or none that could be made safe for the
    /// schema (the database is down, the pool is exhausted).
    #[error("no database connection for schema `{schema}`: {source}")]
    Pool {
        /// The schema the connection was for.
        schema: SchemaName,
        /// What sqlx said.
        #[source]
        source: sqlx::Error,
    },

    /// A statement of the library failed.
    #[error("database error while {action} (schema `{schema}`): {source}")]
    Database {
        /// What the library was doing, e.g. "switching search_path".
        action: &'static str,
        /// The schema it was done for.
        schema: SchemaName,
        /// What sqlx said.
        #[source]
        source: sqlx::Error,
    },

    /// The tenant is registered but not served in its state (→ 503 in maintenance, 403
    /// suspended, 404 archived), as the core's checkout decided (see
    /// [`tenant_schemas::checkout`]).
    #[error("tenant `{schema}` is not served: it is {status}")]
    TenantNotServed {
        /// The tenant's schema.
        schema: SchemaName,
        /// Its state.
        status: TenantStatus,
    },

    /// A statement tried to write for a read-only tenant (→ 403): the server refused it
    /// (`read_only_sql_transaction`, 25006). See
    /// [`SqlxConnection::error`](crate::SqlxConnection::error).
    #[error("tenant `{schema}` is read-only: {source}")]
    TenantReadOnly {
        /// The tenant's schema.
        schema: SchemaName,
        /// The server's refusal.
        #[source]
        source: sqlx::Error,
    },

    /// The core's checkout refused the tenant for another reason: the registry could not
    /// be read, or the tenant the value names was deleted (see [`tenant_schemas::checkout`]).
    #[error(transparent)]
    Checkout(tenant_schemas::Error),

    /// The operation is not available in transaction search-path mode (a programming
    /// error): behind PgBouncer in transaction pooling a session-level `SET` would stay on a
    /// server connection other clients get next.
    #[error("{what} is not available in transaction search-path mode: {instead}")]
    NotInTransactionMode {
        /// The operation.
        what: &'static str,
        /// What to do instead.
        instead: &'static str,
    },
}

impl Error {
    /// The coarse category of this error, shared with the core's
    /// [`tenant_schemas::Error::kind`].
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NoTenantInScope => ErrorKind::NoTenantInScope,
            Self::SchemaMissing { .. } => ErrorKind::NotFound,
            Self::Pool { .. } => ErrorKind::Unavailable,
            Self::Database { source, .. }
                if is_connection_error(source) || is_cancelled(source) =>
            {
                ErrorKind::Unavailable
            }
            Self::Database { .. } | Self::NotInTransactionMode { .. } => ErrorKind::Internal,
            Self::TenantNotServed { status, .. } => match status {
                TenantStatus::Maintenance => ErrorKind::Unavailable,
                TenantStatus::Archived => ErrorKind::NotFound,
                _ => ErrorKind::Forbidden,
            },
            Self::TenantReadOnly { .. } => ErrorKind::Forbidden,
            Self::Checkout(e) => e.kind(),
        }
    }

    /// The core's refusal, in this crate's terms.
    pub(crate) fn from_core(err: tenant_schemas::Error) -> Self {
        match err {
            tenant_schemas::Error::SchemaMissing { schema } => Self::SchemaMissing { schema },
            tenant_schemas::Error::TenantNotServed { schema, status } => {
                Self::TenantNotServed { schema, status }
            }
            tenant_schemas::Error::NoTenantInScope => Self::NoTenantInScope,
            other => Self::Checkout(other),
        }
    }

    /// A query's failure for `schema`: [`Error::TenantReadOnly`] when the server refused a
    /// write of a read-only tenant, a database error otherwise.
    pub(crate) fn query(schema: &SchemaName, source: sqlx::Error) -> Self {
        if matches!(&source, sqlx::Error::Database(db) if db.code().as_deref() == Some("25006")) {
            return Self::TenantReadOnly {
                schema: schema.clone(),
                source,
            };
        }
        Self::Database {
            action: "running a query",
            schema: schema.clone(),
            source,
        }
    }

    /// The HTTP status this error maps to in the adapters: 404 for a missing schema (or an
    /// archived tenant), 403 for a suspended or read-only one, 503 when the database is
    /// unreachable (or the tenant in maintenance), 500 otherwise.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether this is [`Error::SchemaMissing`].
    #[must_use]
    pub fn is_schema_missing(&self) -> bool {
        matches!(self, Self::SchemaMissing { .. })
    }
}

/// Whether the server cancelled the statement (`57014`): the tenant's `statement_timeout`.
fn is_cancelled(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

fn is_connection_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("57P")),
        _ => false,
    }
}

#[cfg(any(feature = "axum", feature = "actix"))]
impl Error {
    /// The response the adapters answer with: the status and a short text without internals
    /// (the details go to the log), worded as the core's adapters word theirs.
    pub(crate) fn rejection(&self) -> tenant_schemas::request::Rejection {
        use std::borrow::Cow;
        use tenant_schemas::request::Rejection;
        // The core's refusals, answered in the core's words.
        match self {
            Self::TenantNotServed { schema, status } => {
                return Rejection::from_error(&tenant_schemas::Error::TenantNotServed {
                    schema: schema.clone(),
                    status: *status,
                });
            }
            Self::TenantReadOnly { .. } => {
                return Rejection::new(
                    self.status(),
                    "403 Forbidden: this site is read-only for now\n",
                );
            }
            Self::Checkout(err) => return Rejection::from_error(err),
            Self::Database { source, .. } if is_cancelled(source) => {
                tracing::warn!(error = %self, "statement cancelled (the tenant's statement_timeout)");
                return Rejection::new(
                    self.status(),
                    "503 Service Unavailable: this request took too long, try again in a moment\n",
                )
                .with_retry_after(1);
            }
            _ => {}
        }
        let body: Cow<'static, str> = match self.kind() {
            ErrorKind::NotFound => "404 Not Found: unknown tenant\n".into(),
            ErrorKind::Forbidden => "403 Forbidden\n".into(),
            ErrorKind::Unavailable => {
                tracing::warn!(error = %self, "database unavailable");
                "503 Service Unavailable: the database cannot be reached, try again later\n".into()
            }
            _ => {
                tracing::error!(error = %self, "request failed");
                "500 Internal Server Error\n".into()
            }
        };
        tenant_schemas::request::Rejection::new(self.status(), body)
    }
}
