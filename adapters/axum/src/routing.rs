//! Routing with the tenant: [`with_tenancy`] puts the layer in front of routing, [`split`]
//! routes the public site and the tenant sites apart.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use tenant_schemas::Tenant;
use tower::util::Oneshot;
use tower::ServiceExt;

use crate::TenantLayer;

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
