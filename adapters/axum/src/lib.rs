//! [axum] adapter for [tenant-schemas](tenant_schemas): schema-per-tenant PostgreSQL for
//! axum apps.
//!
//! - [`TenantLayer`]: resolves each request's tenant (cached) and runs the handler — and a
//!   streamed response body — inside the tenant's scope. [`with_tenancy`] puts it in front
//!   of the whole router, so that path rewrites (path-prefix strategy, public path token)
//!   happen before routing; `Router::layer` also works when nothing is rewritten.
//! - Extractors: [`CurrentTenant`], [`TenantDb`] (a connection bound to the tenant's
//!   schema), [`PublicDb`] (a connection bound to `public`).
//! - [`split`]: one router for the public site, another for the tenant sites.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use tenant_schemas::Tenancy;
//! use tenant_schemas_axum::{with_tenancy, CurrentTenant, TenantDb, TenantLayer};
//!
//! async fn notes(CurrentTenant(tenant): CurrentTenant, db: TenantDb) -> Result<String, tenant_schemas_axum::DbRejection> {
//!     let rows = db.query("SELECT body FROM notes", &[]).await?;
//!     Ok(format!("{} has {} notes", tenant.name(), rows.len()))
//! }
//!
//! # async fn demo(pool: tenant_schemas::deadpool_postgres::Pool) -> Result<(), Box<dyn std::error::Error>> {
//! let tenancy = Tenancy::builder(pool).build().await?;
//! let router = Router::new().route("/notes", get(notes));
//! let app = with_tenancy(router, TenantLayer::new(tenancy));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! [axum]: https://docs.rs/axum

use std::convert::Infallible;
use std::ops::Deref;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tenant_schemas::request::Rejection;
use tenant_schemas::{ConnectionScope, Tenant};
use tower::util::Oneshot;
use tower::ServiceExt;

pub use tenant_schemas::request::{strip_path_token, RequestResolver, Strategy, UnknownTenant};
pub use tenant_schemas_tower::{TenantLayer, TenantService};

/// Test helpers (feature `testing`): the core's throwaway PostgreSQL and [`TenantClient`](tenant_schemas::testing::TenantClient).
#[cfg(feature = "testing")]
pub mod testing {
    pub use tenant_schemas::testing::*;
}

/// An error of the adapter as an axum response: the status of the error and a short text.
#[derive(Debug)]
pub struct DbRejection(pub tenant_schemas::Error);

impl From<tenant_schemas::Error> for DbRejection {
    fn from(err: tenant_schemas::Error) -> Self {
        DbRejection(err)
    }
}

impl IntoResponse for DbRejection {
    fn into_response(self) -> Response {
        let rejection = Rejection::from_error(&self.0);
        (rejection.status(), rejection.into_body().into_owned()).into_response()
    }
}

fn missing_layer() -> DbRejection {
    DbRejection(tenant_schemas::Error::NoTenantInScope)
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
            .ok_or_else(missing_layer)
    }
}

/// A pooled connection bound to the request's tenant schema.
#[derive(Debug)]
pub struct TenantDb(pub ConnectionScope);

impl Deref for TenantDb {
    type Target = ConnectionScope;

    fn deref(&self) -> &ConnectionScope {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TenantDb {
    type Rejection = DbRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(TenantDb(
            tenant_schemas_tower::tenant_connection(&parts.extensions).await?,
        ))
    }
}

/// A pooled connection bound to the shared `public` schema.
#[derive(Debug)]
pub struct PublicDb(pub ConnectionScope);

impl Deref for PublicDb {
    type Target = ConnectionScope;

    fn deref(&self) -> &ConnectionScope {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PublicDb {
    type Rejection = DbRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PublicDb(
            tenant_schemas_tower::public_connection(&parts.extensions).await?,
        ))
    }
}

/// Wraps the whole `router` in `layer`: the tenant is resolved (and paths rewritten, for the
/// path-prefix strategy or the public path token) before `router` routes the request.
///
/// ```no_run
/// # async fn demo(tenancy: tenant_schemas::Tenancy) -> std::io::Result<()> {
/// use axum::{routing::get, Router};
/// use tenant_schemas_axum::{with_tenancy, TenantLayer};
///
/// let router = Router::new().route("/", get(|| async { "hello" }));
/// let app = with_tenancy(router, TenantLayer::new(tenancy));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
pub fn with_tenancy(router: Router, layer: TenantLayer) -> Router {
    // `Router::layer` wraps each route after routing; a router whose only route is the
    // fallback puts the layer in front of all of `router`'s routing.
    Router::new().fallback_service(router).layer(layer)
}

/// One router for the public tenant's site, another for every other tenant: the request
/// goes to `public` when the [`TenantLayer`] served it as the public tenant.
///
/// ```
/// use axum::{routing::get, Router};
///
/// let public = Router::new().route("/", get(|| async { "sign up here" }));
/// let tenants = Router::new().route("/", get(|| async { "your notes" }));
/// let app: Router = tenant_schemas_axum::split(public, tenants);
/// ```
pub fn split(public: Router, tenants: Router) -> Router {
    Router::new().fallback_service(Split { public, tenants })
}

#[derive(Clone)]
struct Split {
    public: Router,
    tenants: Router,
}

impl tower::Service<Request> for Split {
    type Response = Response;
    type Error = Infallible;
    type Future = Oneshot<Router, Request>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let public = req
            .extensions()
            .get::<Tenant>()
            .is_some_and(Tenant::is_public);
        let router = if public { &self.public } else { &self.tenants };
        router.clone().oneshot(req)
    }
}
