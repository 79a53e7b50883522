//! tenant-schemas on plain hyper: each tenant's notes in its own schema.
//! `cargo run -p hyper-basic`, then follow the printed curl lines.

use std::convert::Infallible;

use demo_support::{demo_addr, demo_instructions, DemoDatabase};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tenant_schemas_hyper::{error_response, serve_with_shutdown, tenant, tenant_db, TenantLayer};
use tower::{service_fn, Layer};

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let result = async {
        let db = tenant_db(&req).await?;
        let schema = tenant(&req)
            .map(|t| t.schema().to_string())
            .unwrap_or_default();
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/") => {
                let rows = db.query("SELECT body FROM notes ORDER BY id", &[]).await?;
                let notes: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                Ok(Response::new(Full::from(format!(
                    "{schema}: {} note(s) {notes:?}\n",
                    notes.len()
                ))))
            }
            (&Method::POST, "/notes") => {
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let note = String::from_utf8_lossy(&body).into_owned();
                db.execute("INSERT INTO notes (body) VALUES ($1)", &[&note])
                    .await?;
                Ok(Response::new(Full::from("added\n")))
            }
            _ => {
                let mut res = Response::new(Full::from("not found\n"));
                *res.status_mut() = StatusCode::NOT_FOUND;
                Ok(res)
            }
        }
    }
    .await;
    Ok(result.unwrap_or_else(|e: tenant_schemas::Error| error_response(&e)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = DemoDatabase::from_env().await?;
    let tenancy = db.notes_tenancy().await?;
    let service = TenantLayer::new(tenancy).layer(service_fn(handle));
    let addr = demo_addr();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("{}", demo_instructions(addr));
    serve_with_shutdown(listener, service, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
