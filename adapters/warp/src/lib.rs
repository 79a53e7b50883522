//! [warp] adapter for [tenant-schemas](tenant_schemas).
//!
//! warp filters cannot wrap the future of the filters after them, so the tenant scope comes
//! from the shared tower layer: [`serve`] turns the filter into a service with
//! `warp::service`, wraps it in [`TenantLayer`] and serves it with hyper (the tower crate's
//! `serve`). Inside, the filters [`tenant`], [`tenant_db`] and [`public_db`] extract what
//! the layer resolved; [`recover`] turns their rejections into 400/404/503 responses.
//!
//! ```no_run
//! use tenant_schemas::Tenant;
//! use tenant_schemas_warp::{tenant, tenant_db, TenantDb, TenantLayer};
//! use warp::Filter;
//!
//! # async fn demo(tenancy: tenant_schemas::Tenancy) -> std::io::Result<()> {
//! let notes = warp::path!("notes").and(tenant()).and(tenant_db()).then(
//!     |tenant: Tenant, db: TenantDb| async move {
//!         let rows = db.query("SELECT body FROM notes", &[]).await.map(|r| r.len()).unwrap_or(0);
//!         format!("{} has {rows} notes", tenant.name())
//!     },
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! tenant_schemas_warp::serve(listener, notes.recover(tenant_schemas_warp::recover), TenantLayer::new(tenancy)).await
//! # }
//! ```
//!
//! [warp]: https://docs.rs/warp

use std::convert::Infallible;

use tenant_schemas::request::{Rejection, RequestScope};
use tenant_schemas::{ConnectionScope, Tenant};
use tokio::net::TcpListener;
use tower_layer::Layer;
use warp::http::StatusCode;
use warp::Filter;

pub use tenant_schemas::request::{strip_path_token, RequestResolver, Strategy, UnknownTenant};
/// Whom a request's credential was issued for: bind credentials to their tenant with
/// [`RequestResolver`]'s builder (`credential_tenant`), or check one in a handler with
/// [`tenant_schemas::scope::check_claim`].
pub use tenant_schemas::TenantClaim;
pub use tenant_schemas_tower::TenantLayer;

/// Test helpers (feature `testing`): the core's throwaway PostgreSQL and [`TenantClient`](tenant_schemas::testing::TenantClient).
#[cfg(feature = "testing")]
pub mod testing {
    pub use tenant_schemas::testing::*;
}

tenant_schemas::__connection_extractors!();

/// Serves `filter` on `listener`, each request in its tenant's scope.
///
/// The filter must have recovered its rejections (`.recover(recover)`), so that library
/// errors answer 400/404/503.
pub async fn serve<F>(listener: TcpListener, filter: F, layer: TenantLayer) -> std::io::Result<()>
where
    F: Filter<Error = Infallible> + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    tenant_schemas_tower::serve::serve(listener, layer.layer(warp::service(filter))).await
}

/// A library error as a warp rejection; [`recover`] answers it.
#[derive(Debug)]
pub struct TenantError(pub tenant_schemas::Error);

impl warp::reject::Reject for TenantError {}

fn rejected(err: tenant_schemas::Error) -> warp::Rejection {
    warp::reject::custom(TenantError(err))
}

/// Extracts the request's [`Tenant`].
#[must_use]
pub fn tenant() -> impl Filter<Extract = (Tenant,), Error = warp::Rejection> + Clone {
    warp::ext::optional::<Tenant>().and_then(|t: Option<Tenant>| async move {
        t.ok_or_else(|| rejected(tenant_schemas::Error::NoTenantInScope))
    })
}

/// Extracts a [`TenantDb`].
pub fn tenant_db() -> impl Filter<Extract = (TenantDb,), Error = warp::Rejection> + Clone {
    connection(false).map(TenantDb)
}

/// Extracts a [`PublicDb`].
pub fn public_db() -> impl Filter<Extract = (PublicDb,), Error = warp::Rejection> + Clone {
    connection(true).map(PublicDb)
}

fn connection(
    public: bool,
) -> impl Filter<Extract = (ConnectionScope,), Error = warp::Rejection> + Clone {
    warp::ext::optional::<RequestScope>().and_then(move |scope: Option<RequestScope>| async move {
        let scope = scope.ok_or_else(|| rejected(tenant_schemas::Error::NoTenantInScope))?;
        let conn = if public {
            scope.public_connection().await
        } else {
            scope.connection().await
        };
        conn.map_err(rejected)
    })
}

/// Answers [`TenantError`] rejections with their status and a short text
/// ([`Rejection::into_http`]); other rejections get warp's usual status (404 for no matching
/// route, 405, …) and its reason as the text.
pub async fn recover(rejection: warp::Rejection) -> Result<warp::reply::Response, Infallible> {
    let answer = match rejection.find::<TenantError>() {
        Some(TenantError(err)) => Rejection::from_error(err),
        None => {
            let status = if rejection.is_not_found() {
                StatusCode::NOT_FOUND
            } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
                StatusCode::METHOD_NOT_ALLOWED
            } else {
                StatusCode::BAD_REQUEST
            };
            Rejection::new(status, status.canonical_reason().unwrap_or("error"))
        }
    };
    Ok(answer.into_http().map(|body| body.into_owned().into()))
}
