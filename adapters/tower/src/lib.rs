//! A [tower] layer that runs each request in its tenant's scope.
//!
//! [`TenantLayer`] resolves the tenant of each request through the core's
//! [`RequestResolver`](tenant_schemas::request::RequestResolver) (cached), then calls the
//! inner service inside [`scope::run`](tenant_schemas::scope::run) and a `tenant_request`
//! tracing span. The response body is wrapped so that a body streamed after the handler
//! returned still sees the tenant. Malformed hosts get 400, unknown tenants 404, an unreachable database 503,
//! each with a short plain-text body.
//!
//! The request's extensions carry the [`Tenant`](tenant_schemas::Tenant), the
//! [`Tenancy`](tenant_schemas::Tenancy) and the
//! [`RequestScope`](tenant_schemas::request::RequestScope), for extractors
//! ([`tenant_of`], [`tenant_connection`], [`public_connection`]).
//!
//! The request path is the core's: [`RequestResolver::request_scope`] turns the request
//! into a scope, [`Rejection::into_http`](tenant_schemas::request::Rejection::into_http)
//! answers a rejected one. This crate only adapts them to tower and `http-body`.
//!
//! axum, hyper and warp (through `warp::service`) all take this layer; their adapter
//! crates re-export it with extractors in each framework's idiom. With the feature `serve`,
//! [`serve::serve`] serves any such service over hyper.
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
//! let res = app.oneshot(req).await?;
//! assert_eq!(res.status(), 404);
//! assert_eq!(res.headers()["x-content-type-options"], "nosniff");
//! # Ok(()) }
//! ```
//!
//! [tower]: https://docs.rs/tower
//! [`RequestResolver::request_scope`]: tenant_schemas::request::RequestResolver::request_scope

mod body;
mod extensions;
mod layer;
#[cfg(feature = "serve")]
pub mod serve;

pub use body::ScopedBody;
pub use extensions::{public_connection, request_scope, tenant_connection, tenant_of};
pub use layer::{rejection_response, ResponseFuture, TenantLayer, TenantService};
