//! A [tower] layer that runs each request in its tenant's scope.
//!
//! [`TenantLayer`] resolves the tenant of each request through the core's
//! [`RequestResolver`] (cached), then calls the inner service inside
//! [`scope::run`] and a `tenant_request` tracing span. The
//! response body is wrapped so that a body streamed after the handler returned still sees
//! the tenant. Malformed hosts get 400, unknown tenants 404, an unreachable database 503,
//! each with a short plain-text body.
//!
//! The request's extensions carry the [`Tenant`] and the [`Tenancy`], for extractors.
//!
//! axum, hyper and warp (through `warp::service`) all take this layer; their adapter
//! crates re-export it with extractors in each framework's idiom.
//!
//! ```
//! use tenant_schemas::{Host, SchemaName, StaticResolver, Tenant};
//! use tenant_schemas_tower::TenantLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! # let db = tenant_schemas::testing::TestCluster::shared()?.create_database().await?;
//! let tenancy = tenant_schemas::Tenancy::builder(db.pool().clone())
//!     .resolver(StaticResolver::new().with(Host::parse("acme.test")?, Tenant::new(SchemaName::new("acme")?)))
//!     .build()
//!     .await?;
//! let app = TenantLayer::new(tenancy).layer(service_fn(|_req: http::Request<String>| async {
//!     let schema = tenant_schemas::scope::current_schema().unwrap();
//!     Ok::<_, std::convert::Infallible>(http::Response::new(schema.to_string()))
//! }));
//! let req = http::Request::builder().header("host", "acme.test").body(String::new())?;
//! let res = app.clone().oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//! let req = http::Request::builder().header("host", "nobody.test").body(String::new())?;
//! assert_eq!(app.oneshot(req).await?.status(), 404);
//! # Ok(()) }
//! ```
//!
//! [tower]: https://docs.rs/tower

mod body;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tenant_schemas::request::{Rejection, RequestResolver};
use tenant_schemas::{scope, ConnectionScope, Tenancy, Tenant};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

pub use body::ScopedBody;

/// Runs each request in its tenant's scope (see the [crate docs](crate)).
#[derive(Clone, Debug)]
pub struct TenantLayer {
    resolver: RequestResolver,
}

impl TenantLayer {
    /// Resolves by host, answering 404 for unknown hosts.
    pub fn new(tenancy: Tenancy) -> Self {
        Self::with_resolver(RequestResolver::new(tenancy))
    }

    /// Uses a configured [`RequestResolver`] (strategies, fallbacks, path token).
    pub fn with_resolver(resolver: RequestResolver) -> Self {
        TenantLayer { resolver }
    }
}

impl<S> Layer<S> for TenantLayer {
    type Service = TenantService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantService {
            inner,
            resolver: self.resolver.clone(),
        }
    }
}

/// The service made by [`TenantLayer`].
#[derive(Clone, Debug)]
pub struct TenantService<S> {
    inner: S,
    resolver: RequestResolver,
}

/// The response future of [`TenantService`].
pub type ResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ScopedBody<B>>, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TenantService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
{
    type Response = Response<ScopedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The inner service was made ready by poll_ready: take it, leave a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let resolver = self.resolver.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let resolved = match resolver.resolve(&parts.uri, &parts.headers).await {
                Ok(resolved) => resolved,
                Err(rejection) => return Ok(rejection_response(rejection)),
            };
            if resolved.path_and_query.is_some() {
                parts.uri = resolved.rewrite_uri(&parts.uri);
            }
            let span = resolved.span();
            let tenant = resolved.tenant;
            parts.extensions.insert(tenant.clone());
            parts.extensions.insert(resolver.tenancy().clone());
            let req = Request::from_parts(parts, body);
            // `call` itself may run handler code before returning its future: scope it too.
            let future = span.in_scope(|| scope::sync_run(tenant.clone(), || inner.call(req)));
            let response = scope::run(tenant.clone(), future)
                .instrument(span.clone())
                .await?;
            Ok(response.map(|body| ScopedBody::scoped(body, tenant, span)))
        })
    }
}

/// A plain-text response for a rejected request.
pub fn rejection_response<B>(rejection: Rejection) -> Response<ScopedBody<B>> {
    let status = rejection.status();
    let mut res = Response::new(ScopedBody::rejected(rejection.into_body()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res.headers_mut().insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    res
}

/// The tenant of a request, from the extensions the layer filled.
pub fn tenant_of(extensions: &http::Extensions) -> Option<&Tenant> {
    extensions.get::<Tenant>()
}

/// A connection bound to the request's tenant, from the extensions the layer filled;
/// [`Error::NoTenantInScope`](tenant_schemas::Error::NoTenantInScope) when the layer did
/// not run.
pub async fn tenant_connection(
    extensions: &http::Extensions,
) -> Result<ConnectionScope, tenant_schemas::Error> {
    let tenant = extensions
        .get::<Tenant>()
        .ok_or(tenant_schemas::Error::NoTenantInScope)?;
    let tenancy = extensions
        .get::<Tenancy>()
        .ok_or(tenant_schemas::Error::NoTenantInScope)?;
    tenancy.router().connection_for_tenant(tenant).await
}

/// A connection bound to `public`, through the tenancy the layer put in the extensions.
pub async fn public_connection(
    extensions: &http::Extensions,
) -> Result<ConnectionScope, tenant_schemas::Error> {
    let tenancy = extensions
        .get::<Tenancy>()
        .ok_or(tenant_schemas::Error::NoTenantInScope)?;
    tenancy.router().public().await
}
