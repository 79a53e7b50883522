//! The hyper adapter over real HTTP: the shared scenario, public site behind the path token.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use tenant_schemas::request::RequestResolver;
use tenant_schemas_hyper::{error_response, serve, tenant, tenant_db, TenantLayer};
use tower::{service_fn, Layer};

use crate::suite;

type Res = Response<BoxBody<Bytes, Infallible>>;

fn text(s: impl Into<String>) -> Res {
    Response::new(Full::from(s.into()).boxed())
}

async fn app(req: Request<Incoming>) -> Result<Res, Infallible> {
    let res = match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/main/") => text("public site"),
        (Method::GET, "/") => text(format!("tenant site {}", tenant(&req).unwrap().schema())),
        (Method::GET, "/notes") => match tenant_db(&req).await {
            Ok(db) => match db.query("SELECT body FROM notes ORDER BY id", &[]).await {
                Ok(rows) => text(
                    rows.iter()
                        .map(|r| format!("{}\n", r.get::<_, String>(0)))
                        .collect::<String>(),
                ),
                Err(e) => error_response(&e).map(BodyExt::boxed),
            },
            Err(e) => error_response(&e).map(BodyExt::boxed),
        },
        (Method::POST, "/notes") => {
            let db = match tenant_db(&req).await {
                Ok(db) => db,
                Err(e) => return Ok(error_response(&e).map(BodyExt::boxed)),
            };
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let note = String::from_utf8_lossy(&body).into_owned();
            match db
                .execute("INSERT INTO notes (body) VALUES ($1)", &[&note])
                .await
            {
                Ok(_) => text("created"),
                Err(e) => error_response(&e).map(BodyExt::boxed),
            }
        }
        (Method::GET, "/stream") => {
            let frames = suite::schema_stream().map(|chunk| chunk.map(Frame::data));
            Response::new(BodyExt::boxed(StreamBody::new(frames)))
        }
        (Method::GET, "/spawned") => text(suite::spawned_schema().await),
        _ => {
            let mut res = text("not found");
            *res.status_mut() = hyper::StatusCode::NOT_FOUND;
            res
        }
    };
    Ok(res)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_adapter() {
    let fx = suite::fixture().await;
    let resolver = RequestResolver::builder(fx.tenancy.clone())
        .strategies(suite::strategies())
        .credential_tenant(suite::session_tenant)
        .public_path_token("/main")
        .build();
    let service = TenantLayer::with_resolver(resolver).layer(service_fn(app));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, service));
    suite::run(addr).await;
    suite::states(addr, &fx.tenancy).await;
    suite::credentials(addr).await;
    suite::busy(addr, &fx.tenancy).await;
    suite::hostile(addr, &fx.cluster).await;
    suite::outage(addr, &fx.cluster).await;
}
