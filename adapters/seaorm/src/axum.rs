//! axum extractors: [`SeaOrmTenantDb`] and [`SeaOrmPublicDb`].
//!
//! The tenant comes from the request's extensions, where the adapter's `TenantLayer`
//! (`tenant-schemas-axum`) put it; the router from an [`Extension`](axum::Extension) layer
//! holding a [`SeaOrmRouter`] (or the [`SqlxRouter`] underneath: one layer then serves the
//! sqlx extractors too). Errors answer as tenant-schemas-sqlx's extractors answer, in the
//! core's words: 404 for a missing schema or an archived tenant, 403 for a suspended or
//! read-only one, 503 when the database is unreachable or the tenant in maintenance.
//!
//! ```no_run
//! use axum::{routing::get, Extension, Router};
//! use sea_orm::{ConnectionTrait, Statement};
//! use tenant_schemas_seaorm::axum::{SeaOrmRejection, SeaOrmTenantDb};
//! use tenant_schemas_seaorm::SeaOrmRouter;
//!
//! async fn count(db: SeaOrmTenantDb) -> Result<String, SeaOrmRejection> {
//!     let row = db
//!         .query_one(Statement::from_string(
//!             sea_orm::DbBackend::Postgres,
//!             "SELECT count(*) AS n FROM notes",
//!         ))
//!         .await?
//!         .ok_or_else(|| sea_orm::DbErr::RecordNotFound("count".into()))?;
//!     Ok(row.try_get::<i64>("", "n")?.to_string())
//! }
//!
//! # fn app(router: SeaOrmRouter) -> Router {
//! Router::new().route("/count", get(count)).layer(Extension(router))
//! // … then `with_tenancy(app, TenantLayer::new(tenancy))` from tenant-schemas-axum
//! # }
//! ```

use std::ops::{Deref, DerefMut};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement};
use tenant_schemas::{scope, SchemaName, Tenant};
use tenant_schemas_sqlx::SqlxRouter;

use crate::{Error, SeaOrmConnection, SeaOrmRouter};

/// A SeaORM connection bound to the request's tenant schema. It implements
/// [`ConnectionTrait`] (`Entity::find().all(&db)`) and derefs to [`SeaOrmConnection`]
/// (`db.begin()`).
#[derive(Debug)]
pub struct SeaOrmTenantDb(pub SeaOrmConnection);

/// A SeaORM connection bound to the shared `public` schema.
#[derive(Debug)]
pub struct SeaOrmPublicDb(pub SeaOrmConnection);

/// An error of the extractors (or of a handler's SeaORM call) as an axum response: as
/// tenant-schemas-sqlx's `SqlxRejection`, 404 for a missing schema, 503 when the database is
/// unreachable, 403 for a tenant's state (a read-only tenant's write included), 500
/// otherwise, with a short text.
#[derive(Debug)]
pub struct SeaOrmRejection(pub Error);

impl SeaOrmRejection {
    /// A failed SeaORM call of a handler, for the tenant in scope (see
    /// [`Error::from_db_err`]).
    #[must_use]
    pub fn query(err: DbErr) -> Self {
        let schema = scope::current_schema().unwrap_or_else(SchemaName::public);
        Self(Error::from_db_err(&schema, err))
    }
}

/// `?` on a SeaORM call in a handler: [`SeaOrmRejection::query`].
impl From<DbErr> for SeaOrmRejection {
    fn from(err: DbErr) -> Self {
        Self::query(err)
    }
}

impl From<Error> for SeaOrmRejection {
    fn from(err: Error) -> Self {
        Self(err)
    }
}

impl std::fmt::Display for SeaOrmRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl IntoResponse for SeaOrmRejection {
    fn into_response(self) -> Response {
        match self.0 {
            // The sqlx driver's answer, word for word.
            Error::Driver(e) => tenant_schemas_sqlx::axum::SqlxRejection(e).into_response(),
            err @ Error::Orm { .. } => {
                tracing::error!(error = %err, "request failed");
                tenant_schemas::request::Rejection::new(err.status(), "500 Internal Server Error\n")
                    .into_http()
                    .map(axum::body::Body::from)
            }
        }
    }
}

fn router(parts: &Parts) -> Result<SeaOrmRouter, SeaOrmRejection> {
    if let Some(router) = parts.extensions.get::<SeaOrmRouter>() {
        return Ok(router.clone());
    }
    if let Some(router) = parts.extensions.get::<SqlxRouter>() {
        return Ok(SeaOrmRouter::new(router.clone()));
    }
    tracing::error!(
        "no SeaOrmRouter (or SqlxRouter) in the request's extensions: add `.layer(Extension(router))`"
    );
    Err(SeaOrmRejection(Error::Driver(
        tenant_schemas_sqlx::Error::NoTenantInScope,
    )))
}

impl<S: Send + Sync> FromRequestParts<S> for SeaOrmTenantDb {
    type Rejection = SeaOrmRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let tenant = parts
            .extensions
            .get::<Tenant>()
            .ok_or(SeaOrmRejection(Error::Driver(
                tenant_schemas_sqlx::Error::NoTenantInScope,
            )))?;
        Ok(Self(router(parts)?.connection_for_tenant(tenant).await?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SeaOrmPublicDb {
    type Rejection = SeaOrmRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(router(parts)?.public().await?))
    }
}

macro_rules! connection {
    ($name:ident) => {
        impl Deref for $name {
            type Target = SeaOrmConnection;

            fn deref(&self) -> &SeaOrmConnection {
                &self.0
            }
        }

        impl DerefMut for $name {
            fn deref_mut(&mut self) -> &mut SeaOrmConnection {
                &mut self.0
            }
        }

        #[async_trait::async_trait]
        impl ConnectionTrait for $name {
            fn get_database_backend(&self) -> DbBackend {
                self.0.get_database_backend()
            }

            async fn execute(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
                self.0.execute(stmt).await
            }

            async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
                self.0.execute_unprepared(sql).await
            }

            async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
                self.0.query_one(stmt).await
            }

            async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
                self.0.query_all(stmt).await
            }
        }
    };
}

connection!(SeaOrmTenantDb);
connection!(SeaOrmPublicDb);
