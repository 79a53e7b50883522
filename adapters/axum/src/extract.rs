//! Extractors: [`CurrentTenant`], [`TenantDb`], [`PublicDb`], and [`TenantError`] for the
//! library's errors (the same name as in the actix-web adapter).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tenant_schemas::request::Rejection;
use tenant_schemas::Tenant;

tenant_schemas::__connection_extractors!();

tenant_schemas::__tenant_error!(
    /// A library error as an axum response: the status of the error and a short text
    /// ([`Rejection::into_http`]). `?` converts any `tenant_schemas::Error` into it, also those
    /// of a [`TenantTransaction`](tenant_schemas::TenantTransaction). `Display` shows the
    /// error with its cause (for logs); the response shows no internals.
);

/// The former name of [`TenantError`].
pub type DbRejection = TenantError;

impl IntoResponse for TenantError {
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
    type Rejection = TenantError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        tenant_schemas_tower::tenant_of(&parts.extensions)
            .cloned()
            .map(CurrentTenant)
            .ok_or(TenantError(tenant_schemas::Error::NoTenantInScope))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TenantDb {
    type Rejection = TenantError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            tenant_schemas_tower::tenant_connection(&parts.extensions).await?,
        ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PublicDb {
    type Rejection = TenantError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            tenant_schemas_tower::public_connection(&parts.extensions).await?,
        ))
    }
}
