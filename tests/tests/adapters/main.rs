//! Every adapter over real HTTP on 127.0.0.1, in one test binary: the shared scenario
//! ([`suite`]) served by axum, actix-web, warp and hyper; the request path's strategies
//! against the real registry; the tenant in every log line of a request.

#![allow(clippy::unwrap_used)]

mod actix_app;
mod axum_app;
mod hyper_app;
mod strategies;
// The shared scenario lives beside the other cross-crate tests, which use it too.
#[path = "../suite/mod.rs"]
mod suite;
mod tracing_spans;
mod warp_app;
