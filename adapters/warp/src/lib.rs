//! [warp] adapter for [tenant-schemas](tenant_schemas).
//!
//! warp filters cannot wrap the future of the filters after them, so the tenant scope comes
//! from the shared tower layer: [`serve`] turns the filter into a service with
//! `warp::service`, wraps it in [`TenantLayer`] and serves it with hyper. Inside, the
//! filters [`tenant`], [`tenant_db`] and [`public_db`] extract what the layer resolved;
//! [`recover`] turns their rejections into 400/404/503 responses.
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
use std::ops::Deref;

use tenant_schemas::request::Rejection;
use tenant_schemas::{ConnectionScope, Tenancy, Tenant};
use tokio::net::TcpListener;
use tower_layer::Layer;
use warp::http::StatusCode;
use warp::reply::Reply;
use warp::Filter;

pub use tenant_schemas::request::{strip_path_token, RequestResolver, Strategy, UnknownTenant};
pub use tenant_schemas_tower::TenantLayer;

/// Test helpers (feature `testing`): the core's throwaway PostgreSQL and [`TenantClient`](tenant_schemas::testing::TenantClient).
#[cfg(feature = "testing")]
pub mod testing {
    pub use tenant_schemas::testing::*;
}

/// Serves `filter` on `listener`, each request in its tenant's scope.
///
/// The filter must have recovered its rejections (`.recover(recover)`), so that library
/// errors answer 400/404/503.
pub async fn serve<F>(listener: TcpListener, filter: F, layer: TenantLayer) -> std::io::Result<()>
where
    F: Filter<Error = Infallible> + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    tenant_schemas_hyper::serve(listener, layer.layer(warp::service(filter))).await
}

/// A library error as a warp rejection; [`recover`] answers it.
#[derive(Debug)]
pub struct TenantError(pub tenant_schemas::Error);

impl warp::reject::Reject for TenantError {}

/// A pooled connection bound to the request's tenant schema.
#[derive(Debug)]
pub struct TenantDb(pub ConnectionScope);

impl Deref for TenantDb {
    type Target = ConnectionScope;

    fn deref(&self) -> &ConnectionScope {
        &self.0
    }
}

/// A pooled connection bound to `public`.
#[derive(Debug)]
pub struct PublicDb(pub ConnectionScope);

impl Deref for PublicDb {
    type Target = ConnectionScope;

    fn deref(&self) -> &ConnectionScope {
        &self.0
    }
}

fn missing_layer() -> warp::Rejection {
    warp::reject::custom(TenantError(tenant_schemas::Error::NoTenantInScope))
}

/// Extracts the request's [`Tenant`].
pub fn tenant() -> impl Filter<Extract = (Tenant,), Error = warp::Rejection> + Clone {
    warp::ext::optional::<Tenant>()
        .and_then(|t: Option<Tenant>| async move { t.ok_or_else(missing_layer) })
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
    warp::ext::optional::<Tenant>()
        .and(warp::ext::optional::<Tenancy>())
        .and_then(
            move |tenant: Option<Tenant>, tenancy: Option<Tenancy>| async move {
                let (Some(tenant), Some(tenancy)) = (tenant, tenancy) else {
                    return Err(missing_layer());
                };
                let router = tenancy.router();
                let conn = if public {
                    router.public().await
                } else {
                    router.connection_for_tenant(&tenant).await
                };
                conn.map_err(|e| warp::reject::custom(TenantError(e)))
            },
        )
}

/// Answers [`TenantError`] rejections with their status and a short text; other rejections
/// get warp's usual status (404 for no matching route, 405, …).
pub async fn recover(rejection: warp::Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(TenantError(err)) = rejection.find::<TenantError>() {
        let r = Rejection::from_error(err);
        return Ok(warp::reply::with_status(r.body().to_owned(), r.status()).into_response());
    }
    let status = if rejection.is_not_found() {
        StatusCode::NOT_FOUND
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(warp::reply::with_status(
        status.canonical_reason().unwrap_or("error").to_owned(),
        status,
    )
    .into_response())
}
