//! The error type of the SeaORM driver, and how its refusals travel inside SeaORM's
//! [`DbErr`].

use std::borrow::Cow;

use http::StatusCode;
use sea_orm::{DbErr, RuntimeErr};
use tenant_schemas::{ErrorKind, SchemaName};

/// A shorthand for `Result<T, tenant_schemas_seaorm::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with a tenant-bound SeaORM connection.
///
/// SeaORM's traits answer [`DbErr`]; [`Error::from_db_err`] (or
/// [`SeaOrmConnection::error`](crate::SeaOrmConnection::error)) turns one back into this
/// type, with the driver's refusals recovered exactly as they were made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// What the sqlx driver underneath reports: no tenant in scope, a missing schema, a
    /// tenant not served in its state or read-only, the database unreachable, a statement
    /// refused before it was sent, or the server's error for a statement.
    #[error(transparent)]
    Driver(tenant_schemas_sqlx::Error),

    /// SeaORM's own error, not the database's: a value that does not convert, a record not
    /// found, an attribute not set (→ 500).
    #[error("SeaORM error (schema `{schema}`): {source}")]
    Orm {
        /// The schema the connection was bound to.
        schema: SchemaName,
        /// What SeaORM said.
        #[source]
        source: DbErr,
    },
}

impl From<tenant_schemas_sqlx::Error> for Error {
    fn from(err: tenant_schemas_sqlx::Error) -> Self {
        Self::Driver(err)
    }
}

/// The error as SeaORM's, for code that answers [`DbErr`]: the driver's refusal carried
/// as a connection error ([`Error::from_db_err`] recovers it), SeaORM's own as it was.
impl From<Error> for DbErr {
    fn from(err: Error) -> Self {
        match err {
            Error::Driver(e) => Stage::Connect.refusal(e),
            Error::Orm { source, .. } => source,
        }
    }
}

impl Error {
    /// The coarse category of this error, shared with the core's
    /// [`tenant_schemas::Error::kind`].
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Driver(e) => e.kind(),
            Self::Orm { .. } => ErrorKind::Internal,
        }
    }

    /// The HTTP status this error maps to, as the sqlx driver's: 404 for a missing schema
    /// (or an archived tenant), 403 for a suspended or read-only one, 503 when the database
    /// is unreachable (or the tenant in maintenance), 500 otherwise.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Driver(e) => e.status(),
            Self::Orm { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether this is the driver's [`SchemaMissing`](tenant_schemas_sqlx::Error::SchemaMissing).
    #[must_use]
    pub fn is_schema_missing(&self) -> bool {
        matches!(self, Self::Driver(e) if e.is_schema_missing())
    }

    /// Whether a write was refused because the tenant is read-only: by the server
    /// (`read_only_sql_transaction`, 25006) or by the library before the SQL was sent.
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        match self {
            Self::Driver(tenant_schemas_sqlx::Error::TenantReadOnly { .. }) => true,
            Self::Driver(tenant_schemas_sqlx::Error::Checkout(e)) => {
                matches!(e, tenant_schemas::Error::TenantReadOnly { .. })
            }
            _ => false,
        }
    }

    /// What a SeaORM call on a connection bound to `schema` failed with, as this crate's
    /// error: the driver's refusal it carries, recovered as it was made; the server's refusal
    /// of a read-only tenant's write as
    /// [`TenantReadOnly`](tenant_schemas_sqlx::Error::TenantReadOnly); another database
    /// error as [`Database`](tenant_schemas_sqlx::Error::Database) (503 when the connection
    /// was lost); SeaORM's own errors as [`Error::Orm`].
    #[must_use]
    pub fn from_db_err(schema: &SchemaName, err: DbErr) -> Self {
        let source = match err {
            DbErr::Conn(RuntimeErr::SqlxError(e))
            | DbErr::Exec(RuntimeErr::SqlxError(e))
            | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
            other => {
                return Self::Orm {
                    schema: schema.clone(),
                    source: other,
                }
            }
        };
        let source = match source {
            sqlx::Error::Database(db) => match db.try_downcast::<Refusal>() {
                Ok(refusal) => return Self::Driver(refusal.0),
                Err(db) => sqlx::Error::Database(db),
            },
            other => other,
        };
        let read_only =
            matches!(&source, sqlx::Error::Database(db) if db.code().as_deref() == Some("25006"));
        Self::Driver(if read_only {
            tenant_schemas_sqlx::Error::TenantReadOnly {
                schema: schema.clone(),
                source,
            }
        } else {
            tenant_schemas_sqlx::Error::Database {
                action: "running a SeaORM statement",
                schema: schema.clone(),
                source,
            }
        })
    }
}

/// The driver's refusal of a statement (or of a checkout made again for one), carried to
/// SeaORM's caller inside a [`DbErr`] as a database error: with the SQLSTATE the server would
/// have used where there is one (`25006` for a read-only tenant's write, `3F000` for a
/// missing schema), so code that reads SQLSTATEs sees what it would see from the server, and
/// [`Error::from_db_err`] recovers the refusal itself.
#[derive(Debug)]
pub(crate) struct Refusal(pub(crate) tenant_schemas_sqlx::Error);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl sqlx::error::DatabaseError for Refusal {
    fn message(&self) -> &str {
        // The message is the error's Display; DatabaseError wants a `&str` it can lend.
        match &self.0 {
            tenant_schemas_sqlx::Error::Checkout(tenant_schemas::Error::TenantReadOnly {
                ..
            }) => "refused: the tenant is read-only",
            tenant_schemas_sqlx::Error::Checkout(tenant_schemas::Error::Refused {
                what, ..
            }) => what,
            tenant_schemas_sqlx::Error::SchemaMissing { .. } => "the tenant's schema is missing",
            tenant_schemas_sqlx::Error::TenantNotServed { .. } => "the tenant is not served",
            _ => "refused by tenant-schemas",
        }
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        match &self.0 {
            tenant_schemas_sqlx::Error::Checkout(tenant_schemas::Error::TenantReadOnly {
                ..
            })
            | tenant_schemas_sqlx::Error::TenantReadOnly { .. } => Some("25006".into()),
            tenant_schemas_sqlx::Error::SchemaMissing { .. } => Some("3F000".into()),
            _ => None,
        }
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

/// Where a refusal is reported: as SeaORM reports a failed connection, statement or query.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stage {
    Connect,
    Execute,
    Query,
}

impl Stage {
    /// `err` as SeaORM reports a sqlx error at this stage.
    pub(crate) fn sqlx(self, err: sqlx::Error) -> DbErr {
        match self {
            Self::Connect => DbErr::Conn(RuntimeErr::SqlxError(err)),
            Self::Execute => DbErr::Exec(RuntimeErr::SqlxError(err)),
            Self::Query => DbErr::Query(RuntimeErr::SqlxError(err)),
        }
    }

    /// The driver's refusal `err`, carried in a [`DbErr`] (see [`Refusal`]).
    pub(crate) fn refusal(self, err: tenant_schemas_sqlx::Error) -> DbErr {
        self.sqlx(sqlx::Error::Database(Box::new(Refusal(err))))
    }
}
