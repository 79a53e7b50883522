//! actix-web extractors: [`SqlxTenantDb`] and [`SqlxPublicDb`].
//!
//! The tenant comes from the request, where the adapter's `TenantMiddleware`
//! (`tenant-schemas-actix`) put it; the router from `app_data` (a [`SqlxRouter`] or a
//! `web::Data<SqlxRouter>`):
//!
//! ```no_run
//! use actix_web::{web, App};
//! use tenant_schemas_sqlx::actix::{SqlxRejection, SqlxTenantDb};
//! use tenant_schemas_sqlx::SqlxRouter;
//!
//! async fn count(mut db: SqlxTenantDb) -> Result<String, SqlxRejection> {
//!     let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM notes")
//!         .fetch_one(&mut **db)
//!         .await
//!         .map_err(SqlxRejection::query)?;
//!     Ok(n.to_string())
//! }
//!
//! # fn app(router: SqlxRouter) {
//! let app = App::new().app_data(router).route("/count", web::get().to(count));
//! // … wrapped in `TenantMiddleware::new(tenancy)` from tenant-schemas-actix
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use tenant_schemas::Tenant;

use crate::{Error, SqlxRouter};

crate::extract::extractor_types!("an actix-web error");

impl ResponseError for SqlxRejection {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let rejection = self.0.rejection();
        HttpResponse::build(self.status_code())
            .content_type("text/plain; charset=utf-8")
            .body(rejection.into_body().into_owned())
    }
}

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

fn router(req: &HttpRequest) -> Result<SqlxRouter, SqlxRejection> {
    req.app_data::<SqlxRouter>()
        .cloned()
        .or_else(|| {
            req.app_data::<web::Data<SqlxRouter>>()
                .map(|d| d.get_ref().clone())
        })
        .ok_or_else(|| {
            tracing::error!("no SqlxRouter in the app data: add `.app_data(router)`");
            SqlxRejection(Error::NoTenantInScope)
        })
}

impl FromRequest for SqlxTenantDb {
    type Error = SqlxRejection;
    type Future = LocalBoxFuture<Result<Self, SqlxRejection>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let tenant = req.extensions().get::<Tenant>().cloned();
        let router = router(req);
        Box::pin(async move {
            let tenant = tenant.ok_or(SqlxRejection(Error::NoTenantInScope))?;
            Ok(Self(router?.connection_for_tenant(&tenant).await?))
        })
    }
}

impl FromRequest for SqlxPublicDb {
    type Error = SqlxRejection;
    type Future = LocalBoxFuture<Result<Self, SqlxRejection>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let router = router(req);
        Box::pin(async move { Ok(Self(router?.public().await?)) })
    }
}
