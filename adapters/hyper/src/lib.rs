//! [hyper] adapter for [tenant-schemas](tenant_schemas).
//!
//! Wrap any tower service (a `service_fn` is enough) in [`TenantLayer`] and [`serve`] it:
//! each request runs in its tenant's scope. Inside, [`tenant`], [`tenant_db`] and
//! [`public_db`] read what the layer put in the request.
//!
//! ```no_run
//! use http_body_util::Full;
//! use hyper::body::{Bytes, Incoming};
//! use hyper::{Request, Response};
//! use tenant_schemas_hyper::{serve, tenant_db, TenantLayer};
//! use tower::{service_fn, Layer};
//!
//! async fn notes(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
//!     let res = match tenant_db(&req).await {
//!         Ok(db) => match db.query("SELECT body FROM notes", &[]).await {
//!             Ok(rows) => Response::new(Full::from(format!("{} notes", rows.len()))),
//!             Err(e) => tenant_schemas_hyper::error_response(&e),
//!         },
//!         Err(e) => tenant_schemas_hyper::error_response(&e),
//!     };
//!     Ok(res)
//! }
//!
//! # async fn demo(tenancy: tenant_schemas::Tenancy) -> std::io::Result<()> {
//! let app = TenantLayer::new(tenancy).layer(service_fn(notes));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! serve(listener, app).await
//! # }
//! ```
//!
//! [hyper]: https://docs.rs/hyper

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tenant_schemas::request::Rejection;
use tenant_schemas::{ConnectionScope, Tenant};
use tokio::net::TcpListener;
use tower_service::Service;

pub use tenant_schemas::request::{strip_path_token, RequestResolver, Strategy, UnknownTenant};
pub use tenant_schemas_tower::{ScopedBody, TenantLayer, TenantService};

/// Test helpers (feature `testing`): the core's throwaway PostgreSQL and [`TenantClient`](tenant_schemas::testing::TenantClient).
#[cfg(feature = "testing")]
pub mod testing {
    pub use tenant_schemas::testing::*;
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `service` on `listener` (HTTP/1 and HTTP/2) until an accept error that is not
/// transient; each connection runs on its own task.
pub async fn serve<S, B>(listener: TcpListener, service: S) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_with_shutdown(listener, service, std::future::pending()).await
}

/// Like [`serve`], but stops accepting connections once `shutdown` completes (connections
/// already accepted are served to their end).
pub async fn serve_with_shutdown<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return Ok(()),
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_transient(&e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// Errors after which accepting again may work (too many open files, a reset peer).
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e
        .raw_os_error()
        .is_some_and(|code| code == 24 || code == 23)
}

/// The request's tenant.
pub fn tenant<B>(req: &Request<B>) -> Option<&Tenant> {
    tenant_schemas_tower::tenant_of(req.extensions())
}

/// A connection bound to the request's tenant schema.
pub async fn tenant_db<B>(req: &Request<B>) -> tenant_schemas::Result<ConnectionScope> {
    tenant_schemas_tower::tenant_connection(req.extensions()).await
}

/// A connection bound to `public`.
pub async fn public_db<B>(req: &Request<B>) -> tenant_schemas::Result<ConnectionScope> {
    tenant_schemas_tower::public_connection(req.extensions()).await
}

/// The plain-text response for an error: its status and a short message without internals.
pub fn error_response(err: &tenant_schemas::Error) -> Response<Full<Bytes>> {
    let rejection = Rejection::from_error(err);
    let mut res = Response::new(Full::from(rejection.body().to_owned()));
    *res.status_mut() = rejection.status();
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
