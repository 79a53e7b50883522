//! [`TenantLayer`] and its [`TenantService`]: the core's request path as tower middleware.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tenant_schemas::request::{Rejection, RequestResolver};
use tower_layer::Layer;
use tower_service::Service;

use crate::ScopedBody;

tenant_schemas::__tenant_middleware!(
    /// Runs each request in its tenant's scope (see the [crate docs](crate)).
    TenantLayer
);

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
            let scope = match resolver.request_scope(&mut parts).await {
                Ok(scope) => scope,
                Err(rejection) => return Ok(rejection_response(rejection)),
            };
            let req = Request::from_parts(parts, body);
            let response = scope.run(|| inner.call(req)).await?;
            Ok(response.map(|body| ScopedBody::scoped(body, scope)))
        })
    }
}

/// The response for a rejected request: [`Rejection::into_http`] with a [`ScopedBody`].
pub fn rejection_response<B>(rejection: Rejection) -> Response<ScopedBody<B>> {
    rejection.into_http().map(ScopedBody::rejected)
}
