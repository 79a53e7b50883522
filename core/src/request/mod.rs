//! From an HTTP request to a tenant's scope, and from a failure to a response: the one
//! request path every adapter takes.
//!
//! A [`RequestResolver`] reads the request's host (or, with other [`Strategy`]s, a path
//! prefix or a header), finds the tenant through the [`Tenancy`](crate::Tenancy) (cached),
//! and says how the request continues: served in a tenant's scope, maybe with a rewritten
//! path, or rejected with a status and a short plain-text message ([`Rejection`]).
//!
//! Adapters only translate between their framework and `http`:
//! 1. [`RequestResolver::request_scope`] turns a request ([`IncomingRequest`]: `http`'s
//!    request parts, or an adapter's view of its framework's request) into a
//!    [`RequestScope`]: it resolves the tenant, rewrites the path, and puts the
//!    [`Tenant`](crate::Tenant), the [`Tenancy`](crate::Tenancy) and the scope itself in the
//!    request's extensions for extractors;
//! 2. [`RequestScope::run`] runs the handler in the tenant's scope and tracing span, and
//!    [`RequestScope::in_scope`] polls the response body there;
//! 3. [`Rejection::into_http`] is the response to a rejected request, and
//!    [`Rejection::from_error`] the rejection for a library error met in a handler or an
//!    extractor: its status, a short `text/plain` body, `x-content-type-options: nosniff`.
//!
//! ```no_run
//! use tenant_schemas::request::{RequestResolver, Strategy, UnknownTenant};
//! use tenant_schemas::{Tenancy, Tenant};
//!
//! # async fn demo(tenancy: Tenancy, req: http::Request<String>) -> http::Response<String> {
//! let resolver = RequestResolver::builder(tenancy)
//!     .strategies([Strategy::Host, Strategy::path_prefix("/t/")])
//!     .unknown_tenant(UnknownTenant::Serve(Tenant::public()))
//!     .public_path_token("/main")
//!     .build();
//!
//! // What an adapter does with each request:
//! let (mut parts, body) = req.into_parts();
//! let scope = match resolver.request_scope(&mut parts).await {
//!     Ok(scope) => scope,
//!     Err(rejection) => return rejection.into_http().map(String::from),
//! };
//! let req = http::Request::from_parts(parts, body);
//! scope
//!     .run(|| async move {
//!         let schema = tenant_schemas::scope::current_schema().unwrap();
//!         http::Response::new(format!("{schema} got {}", req.uri()))
//!     })
//!     .await
//! # }
//! ```

mod extract;
mod incoming;
mod path_token;
mod rejection;
mod request_scope;
mod resolver;
mod strategy;

pub use incoming::IncomingRequest;
pub use path_token::strip_path_token;
pub use rejection::Rejection;
pub use request_scope::RequestScope;
pub use resolver::{RequestResolver, RequestResolverBuilder, ResolvedRequest};
pub use strategy::{RespondFn, Strategy, UnknownTenant};
