//! [actix-web] adapter for [tenant-schemas](tenant_schemas).
//!
//! - [`TenantMiddleware`]: `App::new().wrap(TenantMiddleware::new(tenancy))` resolves each
//!   request's tenant (cached) before routing, runs the handler — and a streamed response
//!   body — inside the tenant's scope, and answers 400/404/503 with a short text.
//! - Extractors: [`CurrentTenant`], [`TenantDb`], [`PublicDb`].
//! - For the public site and the tenant sites as separate routes, use the public path
//!   token ([`RequestResolver`]'s `public_path_token`), or an
//!   `actix_web::guard::fn_guard` on [`is_public_tenant`].
//!
//! ```no_run
//! use actix_web::{get, App, HttpServer, Responder};
//! use tenant_schemas_actix::{CurrentTenant, TenantDb, TenantError, TenantMiddleware};
//!
//! #[get("/notes")]
//! async fn notes(tenant: CurrentTenant, db: TenantDb) -> Result<String, TenantError> {
//!     let rows = db.query("SELECT body FROM notes", &[]).await?;
//!     Ok(format!("{} has {} notes", tenant.0.name(), rows.len()))
//! }
//!
//! # async fn demo(tenancy: tenant_schemas::Tenancy) -> std::io::Result<()> {
//! HttpServer::new(move || App::new().wrap(TenantMiddleware::new(tenancy.clone())).service(notes))
//!     .bind(("127.0.0.1", 3000))?
//!     .run()
//!     .await
//! # }
//! ```
//!
//! [actix-web]: https://docs.rs/actix-web

use std::future::{ready, Future, Ready};
use std::ops::Deref;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;
use pin_project_lite::pin_project;
use tenant_schemas::request::Rejection;
use tenant_schemas::{scope, ConnectionScope, Tenancy, Tenant};
use tracing::Instrument;

pub use tenant_schemas::request::{strip_path_token, RequestResolver, Strategy, UnknownTenant};

/// Test helpers (feature `testing`): the core's throwaway PostgreSQL and [`TenantClient`](tenant_schemas::testing::TenantClient).
#[cfg(feature = "testing")]
pub mod testing {
    pub use tenant_schemas::testing::*;
}

/// Runs each request in its tenant's scope (see the [crate docs](crate)).
#[derive(Clone, Debug)]
pub struct TenantMiddleware {
    resolver: RequestResolver,
}

impl TenantMiddleware {
    /// Resolves by host, answering 404 for unknown hosts.
    pub fn new(tenancy: Tenancy) -> Self {
        Self::with_resolver(RequestResolver::new(tenancy))
    }

    /// Uses a configured [`RequestResolver`] (strategies, fallbacks, path token).
    pub fn with_resolver(resolver: RequestResolver) -> Self {
        TenantMiddleware { resolver }
    }
}

impl<S, B> Transform<S, ServiceRequest> for TenantMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<ScopedBody<B>>>;
    type Error = actix_web::Error;
    type Transform = TenantMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(TenantMiddlewareService {
            service: Rc::new(service),
            resolver: self.resolver.clone(),
        }))
    }
}

/// The service made by [`TenantMiddleware`].
#[derive(Debug)]
pub struct TenantMiddlewareService<S> {
    service: Rc<S>,
    resolver: RequestResolver,
}

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

impl<S, B> Service<ServiceRequest> for TenantMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<ScopedBody<B>>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let service = self.service.clone();
        let resolver = self.resolver.clone();
        Box::pin(async move {
            let (uri, headers) = http_head(&req);
            let resolved = match resolver.resolve(&uri, &headers).await {
                Ok(resolved) => resolved,
                Err(rejection) => {
                    let res = rejection_response(&rejection);
                    return Ok(req.into_response(res).map_into_right_body());
                }
            };
            if let Some(pq) = &resolved.path_and_query {
                if let Ok(new_uri) = pq.parse::<actix_web::http::Uri>() {
                    req.match_info_mut().get_mut().update(&new_uri);
                    req.head_mut().uri = new_uri;
                }
            }
            let span = resolved.span();
            let tenant = resolved.tenant;
            req.extensions_mut().insert(tenant.clone());
            req.extensions_mut().insert(resolver.tenancy().clone());
            let future = span.in_scope(|| scope::sync_run(tenant.clone(), || service.call(req)));
            let res = scope::run(tenant.clone(), future)
                .instrument(span.clone())
                .await?;
            Ok(res
                .map_body(|_, body| ScopedBody { body, tenant, span })
                .map_into_left_body())
        })
    }
}

/// actix-web is built on `http` 0.2; the core speaks `http` 1. Copy what resolution reads.
fn http_head(req: &ServiceRequest) -> (http::Uri, http::HeaderMap) {
    let uri = req.uri().to_string().parse().unwrap_or_default();
    let mut headers = http::HeaderMap::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_str().as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    (uri, headers)
}

fn rejection_response(rejection: &Rejection) -> HttpResponse {
    let status = StatusCode::from_u16(rejection.status().as_u16())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .insert_header(("x-content-type-options", "nosniff"))
        .body(rejection.body().to_owned())
}

pin_project! {
    /// A response body polled inside its request's tenant scope and span, so a streamed body
    /// still sees [`scope::current_schema`] after the handler returned.
    pub struct ScopedBody<B> {
        #[pin]
        body: B,
        tenant: Tenant,
        span: tracing::Span,
    }
}

impl<B: MessageBody> MessageBody for ScopedBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let _entered = this.span.enter();
        scope::sync_run(this.tenant.clone(), || this.body.poll_next(cx))
    }
}

/// A library error as an actix-web error: its status and a short text without internals.
#[derive(Debug)]
pub struct TenantError(pub tenant_schemas::Error);

impl std::fmt::Display for TenantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl From<tenant_schemas::Error> for TenantError {
    fn from(err: tenant_schemas::Error) -> Self {
        TenantError(err)
    }
}

impl ResponseError for TenantError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        rejection_response(&Rejection::from_error(&self.0))
    }
}

fn missing_middleware() -> TenantError {
    TenantError(tenant_schemas::Error::NoTenantInScope)
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
                .ok_or_else(missing_middleware),
        )
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

impl FromRequest for TenantDb {
    type Error = TenantError;
    type Future = LocalBoxFuture<Result<Self, TenantError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ext = req.extensions();
        let found = (ext.get::<Tenant>().cloned(), ext.get::<Tenancy>().cloned());
        Box::pin(async move {
            let (Some(tenant), Some(tenancy)) = found else {
                return Err(missing_middleware());
            };
            Ok(TenantDb(
                tenancy.router().connection_for_tenant(&tenant).await?,
            ))
        })
    }
}

/// A pooled connection bound to `public`.
#[derive(Debug)]
pub struct PublicDb(pub ConnectionScope);

impl Deref for PublicDb {
    type Target = ConnectionScope;

    fn deref(&self) -> &ConnectionScope {
        &self.0
    }
}

impl FromRequest for PublicDb {
    type Error = TenantError;
    type Future = LocalBoxFuture<Result<Self, TenantError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let tenancy = req.extensions().get::<Tenancy>().cloned();
        Box::pin(async move {
            let tenancy = tenancy.ok_or_else(missing_middleware)?;
            Ok(PublicDb(tenancy.router().public().await?))
        })
    }
}
