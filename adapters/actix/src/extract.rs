//! Extractors: [`CurrentTenant`], [`TenantDb`], [`PublicDb`], and [`TenantError`] for the
//! library's errors; [`is_public_tenant`] for guards.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use tenant_schemas::request::{Rejection, RequestScope};
use tenant_schemas::Tenant;

use crate::middleware::{rejection_response, LocalBoxFuture};

tenant_schemas::__connection_extractors!();

tenant_schemas::__tenant_error!(
    /// A library error as an actix-web error: its status and a short text without internals
    /// ([`Rejection::into_http`]).
);

impl ResponseError for TenantError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        rejection_response(Rejection::from_error(&self.0))
    }
}

/// The scope the middleware left in the request, or [`TenantError`] for
/// [`NoTenantInScope`](tenant_schemas::Error::NoTenantInScope) when it did not run.
fn request_scope(req: &HttpRequest) -> Result<RequestScope, TenantError> {
    req.extensions()
        .get::<RequestScope>()
        .cloned()
        .ok_or(TenantError(tenant_schemas::Error::NoTenantInScope))
}

/// Whether the request is served as the public tenant, for `guard::fn_guard`.
pub fn is_public_tenant(ctx: &actix_web::guard::GuardContext<'_>) -> bool {
    ctx.req_data()
        .get::<Tenant>()
        .is_some_and(Tenant::is_public)
}

/// The request's tenant.
#[derive(Debug, Clone)]
pub struct CurrentTenant(pub Tenant);

impl FromRequest for CurrentTenant {
    type Error = TenantError;
    type Future = Ready<Result<Self, TenantError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Tenant>()
                .cloned()
                .map(CurrentTenant)
                .ok_or(TenantError(tenant_schemas::Error::NoTenantInScope)),
        )
    }
}

impl FromRequest for TenantDb {
    type Error = TenantError;
    type Future = LocalBoxFuture<Result<Self, TenantError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let scope = request_scope(req);
        Box::pin(async move { Ok(Self(scope?.connection().await?)) })
    }
}

impl FromRequest for PublicDb {
    type Error = TenantError;
    type Future = LocalBoxFuture<Result<Self, TenantError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let scope = request_scope(req);
        Box::pin(async move { Ok(Self(scope?.public_connection().await?)) })
    }
}
