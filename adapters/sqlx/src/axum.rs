//! axum extractors: [`SqlxTenantDb`] and [`SqlxPublicDb`].
//!
//! The tenant comes from the request's extensions, where the adapter's `TenantLayer`
//! (`tenant-schemas-axum`) put it; the router from an [`Extension`](axum::Extension) layer:
//!
//! ```no_run
//! use axum::{routing::get, Extension, Router};
//! use tenant_schemas_sqlx::axum::{SqlxRejection, SqlxTenantDb};
//! use tenant_schemas_sqlx::SqlxRouter;
//!
//! async fn count(mut db: SqlxTenantDb) -> Result<String, SqlxRejection> {
//!     let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM notes")
//!         .fetch_one(&mut **db)
//!         .await
//!         .map_err(SqlxRejection::query)?;
//!     Ok(n.to_string())
//! }
//!
//! # fn app(router: SqlxRouter) -> Router {
//! Router::new().route("/count", get(count)).layer(Extension(router))
//! // … then `with_tenancy(app, TenantLayer::new(tenancy))` from tenant-schemas-axum
//! # }
//! ```

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tenant_schemas::Tenant;

use crate::{Error, SqlxRouter};

crate::extract::extractor_types!("an axum response");

impl IntoResponse for SqlxRejection {
    fn into_response(self) -> Response {
        self.0.rejection().into_http().map(axum::body::Body::from)
    }
}

fn router(parts: &Parts) -> Result<&SqlxRouter, SqlxRejection> {
    parts.extensions.get::<SqlxRouter>().ok_or_else(|| {
        tracing::error!(
            "no SqlxRouter in the request's extensions: add `.layer(Extension(router))`"
        );
        SqlxRejection(Error::NoTenantInScope)
    })
}

impl<S: Send + Sync> FromRequestParts<S> for SqlxTenantDb {
    type Rejection = SqlxRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let tenant = parts
            .extensions
            .get::<Tenant>()
            .ok_or(SqlxRejection(Error::NoTenantInScope))?;
        Ok(Self(router(parts)?.connection_for_tenant(tenant).await?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SqlxPublicDb {
    type Rejection = SqlxRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(router(parts)?.public().await?))
    }
}
