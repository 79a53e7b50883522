//! [`TenantMiddleware`]: the core's request path as actix-web middleware.
//!
//! What differs from the tower layer is only actix-web's: its request and response types
//! (on `http` 0.2, where the core speaks `http` 1), its `MessageBody`, its local futures.

use std::borrow::Cow;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpResponse};
use bytes::Bytes;
use pin_project_lite::pin_project;
use tenant_schemas::request::{IncomingRequest, Rejection, RequestResolver, RequestScope};

tenant_schemas::__tenant_middleware!(
    /// Runs each request in its tenant's scope (see the [crate docs](crate)).
    TenantMiddleware
);

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

pub(crate) type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

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
            let resolved = resolver.request_scope(&mut ActixRequest(&mut req)).await;
            let scope = match resolved {
                Ok(scope) => scope,
                Err(rejection) => {
                    let res = rejection_response(rejection);
                    return Ok(req.into_response(res).map_into_right_body());
                }
            };
            let res = scope.run(|| service.call(req)).await?;
            Ok(res
                .map_body(|_, body| ScopedBody { body, scope })
                .map_into_left_body())
        })
    }
}

/// An actix-web request as the core's request path reads and changes it. actix-web is
/// built on `http` 0.2; the core speaks `http` 1: what resolution reads is copied over.
struct ActixRequest<'a>(&'a mut ServiceRequest);

impl IncomingRequest for ActixRequest<'_> {
    fn uri(&self) -> Cow<'_, http::Uri> {
        Cow::Owned(self.0.uri().to_string().parse().unwrap_or_default())
    }

    fn headers(&self) -> Cow<'_, http::HeaderMap> {
        let mut headers = http::HeaderMap::with_capacity(self.0.headers().len());
        for (name, value) in self.0.headers() {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_str().as_bytes()),
                http::HeaderValue::from_bytes(value.as_bytes()),
            ) {
                headers.append(name, value);
            }
        }
        Cow::Owned(headers)
    }

    fn set_path_and_query(&mut self, path_and_query: &str) {
        if let Ok(uri) = path_and_query.parse::<actix_web::http::Uri>() {
            // actix-web routes by the match info's path, not by the head's URI.
            self.0.match_info_mut().get_mut().update(&uri);
            self.0.head_mut().uri = uri;
        }
    }

    fn insert_extension<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.0.extensions_mut().insert(value);
    }
}

/// [`Rejection::into_http`] as an actix-web response (`http` 1 → 0.2).
pub(crate) fn rejection_response(rejection: Rejection) -> HttpResponse {
    let res = rejection.into_http();
    let status =
        StatusCode::from_u16(res.status().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = HttpResponse::build(status);
    for (name, value) in res.headers() {
        builder.append_header((name.as_str(), value.as_bytes()));
    }
    builder.body(res.into_body().into_owned())
}

pin_project! {
    /// A response body polled inside its request's tenant scope and span, so a streamed body
    /// still sees [`scope::current_schema`](tenant_schemas::scope::current_schema) after the
    /// handler returned.
    pub struct ScopedBody<B> {
        #[pin]
        body: B,
        scope: RequestScope,
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
        this.scope.in_scope(|| this.body.poll_next(cx))
    }
}
