//! Extractors: [`CurrentTenant`], [`TenantDb`], [`PublicDb`], and [`DbRejection`] for the
//! library's errors.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tenant_schemas::request::Rejection;
use tenant_schemas::Tenant;

tenant_schemas::__connection_extractors!();

/// An error of the adapter as an axum response: the status of the error and a short text
/// ([`Rejection::into_http`]).
#[derive(Debug)]
pub struct DbRejection(pub tenant_schemas::Error);

impl From<tenant_schemas::Error> for DbRejection {
    fn from(err: tenant_schemas::Error) -> Self {
        Self(err)
    }
}

impl IntoResponse for DbRejection {
    fn into_response(self) -> Response {
        Rejection::from_error(&self.0)
            .into_http()
            .map(axum::body::Body::from)
    }
}

/// The request's tenant.
#[derive(Debug, Clone)]
pub struct CurrentTenant(pub Tenant);

impl<S: Send + Sync> FromRequestParts<S> for CurrentTenant {
    type Rejection = DbRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        tenant_schemas_tower::tenant_of(&parts.extensions)
            .cloned()
            .map(CurrentTenant)
            .ok_or(DbRejection(tenant_schemas::Error::NoTenantInScope))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TenantDb {
    type Rejection = DbRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            tenant_schemas_tower::tenant_connection(&parts.extensions).await?,
        ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PublicDb {
    type Rejection = DbRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            tenant_schemas_tower::public_connection(&parts.extensions).await?,
        ))
    }
}
