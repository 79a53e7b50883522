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

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tenant_schemas::request::Rejection;
use tenant_schemas::{ConnectionScope, Tenant};

pub use tenant_schemas::request::{strip_path_token, RequestResolver, Strategy, UnknownTenant};
/// Whom a request's credential was issued for: bind credentials to their tenant with
/// [`RequestResolver`]'s builder (`credential_tenant`), or check one in a handler with
/// [`tenant_schemas::scope::check_claim`].
pub use tenant_schemas::TenantClaim;
pub use tenant_schemas_tower::serve::{serve, serve_with_shutdown};
pub use tenant_schemas_tower::{ScopedBody, TenantLayer, TenantService};

/// Test helpers (feature `testing`): the core's throwaway PostgreSQL and [`TenantClient`](tenant_schemas::testing::TenantClient).
#[cfg(feature = "testing")]
pub mod testing {
    pub use tenant_schemas::testing::*;
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

/// The plain-text response for an error: its status and a short message without internals
/// ([`Rejection::into_http`]).
pub fn error_response(err: &tenant_schemas::Error) -> Response<Full<Bytes>> {
    Rejection::from_error(err).into_http().map(Full::from)
}
