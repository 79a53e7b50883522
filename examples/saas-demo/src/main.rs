//! The tenant-schemas demo: a tiny SaaS on axum.
//!
//! With no `DATABASE_URL` it starts a throwaway PostgreSQL (removed on exit; on a machine
//! without PostgreSQL it installs it first when run as root), installs the registry, creates
//! the public tenant on `localhost` and two tenants, `acme` and `globex`, on
//! `<name>.localhost`, and serves on 127.0.0.1:3000 (`PORT` to change). The public site lists
//! tenants, signs new ones up (schema created and migrated at once) and shows an operator
//! view; each tenant has notes, as an HTML page and a JSON API.

use std::net::SocketAddr;

use demo_support::{demo_addr, DemoDatabase};
use saas_demo::BoxError;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt().with_target(false).init();
    // The message, with its cause (a `Result` from `main` would print the `Debug` form).
    match start().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn start() -> Result<(), BoxError> {
    // A throwaway database lives as long as `db`: it is removed when this returns.
    let db = DemoDatabase::from_env().await?;
    run(&db, demo_addr()).await
}

async fn run(db: &DemoDatabase, addr: SocketAddr) -> Result<(), BoxError> {
    let tenancy = saas_demo::tenancy(db).await?;
    let port = addr.port();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e} (set PORT to use another port)"))?;
    let app = saas_demo::app(tenancy, port);
    println!(
        "\nServing on http://{addr} — try:\n\
         \n  curl -H 'Host: localhost' http://{addr}/api/tenants\
         \n  curl -H 'Host: acme.localhost' http://{addr}/api/notes\
         \n  curl -H 'Host: acme.localhost' -H 'content-type: application/json' -d '{{\"body\":\"hello from acme\"}}' http://{addr}/api/notes\
         \n  curl -H 'Host: globex.localhost' http://{addr}/api/notes      # globex sees none of acme's notes\
         \n  curl -H 'Host: localhost' -H 'content-type: application/json' -d '{{\"slug\":\"initech\",\"name\":\"Initech\"}}' http://{addr}/api/tenants\
         \n  curl -H 'Host: initech.localhost' http://{addr}/api/notes\
         \n  curl -i -H 'Host: nobody.localhost' http://{addr}/api/notes   # 404\
         \n  curl -i -H 'Host: bad..host' http://{addr}/                   # 400\
         \n  curl -H 'Host: acme.localhost' -X POST http://{addr}/api/token  # an API token for acme\
         \n  curl -i -H 'Host: globex.localhost' -H 'authorization: Bearer <acme token>' http://{addr}/api/notes  # 403\
         \n\nIn a browser: http://localhost:{port}/ and http://acme.localhost:{port}/ (*.localhost resolves to 127.0.0.1).\
         \nCtrl-C stops the server and removes the throwaway database.\n"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            println!("\nShutting down.");
        })
        .await?;
    Ok(())
}
