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

mod extract;
mod middleware;

pub use extract::{is_public_tenant, CurrentTenant, PublicDb, TenantDb, TenantError};
pub use middleware::{ScopedBody, TenantMiddleware, TenantMiddlewareService};
pub use tenant_schemas::request::{strip_path_token, RequestResolver, Strategy, UnknownTenant};
/// Whom a request's credential was issued for: bind credentials to their tenant with
/// [`RequestResolver`]'s builder (`credential_tenant`), or check one in a handler with
/// [`tenant_schemas::scope::check_claim`].
pub use tenant_schemas::TenantClaim;

/// Test helpers (feature `testing`): the core's throwaway PostgreSQL and [`TenantClient`](tenant_schemas::testing::TenantClient).
#[cfg(feature = "testing")]
pub mod testing {
    pub use tenant_schemas::testing::*;
}
