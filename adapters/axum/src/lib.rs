//! [axum] adapter for [tenant-schemas](tenant_schemas): schema-per-tenant PostgreSQL for
//! axum apps.
//!
//! - [`TenantLayer`]: resolves each request's tenant (cached) and runs the handler — and a
//!   streamed response body — inside the tenant's scope. [`with_tenancy`] puts it in front
//!   of the whole router, so that path rewrites (path-prefix strategy, public path token)
//!   happen before routing; `Router::layer` also works when nothing is rewritten.
//! - Extractors: [`CurrentTenant`], [`TenantDb`] (a connection bound to the tenant's
//!   schema), [`PublicDb`] (a connection bound to `public`).
//! - [`split`]: one router for the public site, another for the tenant sites.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use tenant_schemas::Tenancy;
//! use tenant_schemas_axum::{with_tenancy, CurrentTenant, TenantDb, TenantLayer};
//!
//! async fn notes(CurrentTenant(tenant): CurrentTenant, db: TenantDb) -> Result<String, tenant_schemas_axum::TenantError> {
//!     let rows = db.query("SELECT body FROM notes", &[]).await?;
//!     Ok(format!("{} has {} notes", tenant.name(), rows.len()))
//! }
//!
//! # async fn demo(pool: tenant_schemas::deadpool_postgres::Pool) -> Result<(), Box<dyn std::error::Error>> {
//! let tenancy = Tenancy::builder(pool).build().await?;
//! let router = Router::new().route("/notes", get(notes));
//! let app = with_tenancy(router, TenantLayer::new(tenancy));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! [axum]: https://docs.rs/axum

mod extract;
mod routing;

pub use extract::{CurrentTenant, DbRejection, PublicDb, TenantDb, TenantError};
pub use routing::{split, with_tenancy};
pub use tenant_schemas::request::{strip_path_token, RequestResolver, Strategy, UnknownTenant};
/// Whom a request's credential was issued for: bind credentials to their tenant with
/// [`RequestResolver`]'s builder (`credential_tenant`), or check one in a handler with
/// [`tenant_schemas::scope::check_claim`].
pub use tenant_schemas::TenantClaim;
pub use tenant_schemas_tower::{TenantLayer, TenantService};

/// Test helpers (feature `testing`): the core's throwaway PostgreSQL and [`TenantClient`](tenant_schemas::testing::TenantClient).
#[cfg(feature = "testing")]
pub mod testing {
    pub use tenant_schemas::testing::*;
}
