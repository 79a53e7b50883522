//! Errors say what went wrong underneath: the server's or the system's own message, not a
//! driver's or pool's summary of it ("db error").

#![allow(clippy::unwrap_used)]

use tenant_schemas::testing::{pool, TestCluster};
use tenant_schemas::tokio_postgres;
use tenant_schemas::{SchemaName, SchemaRouter};

fn schema() -> SchemaName {
    SchemaName::new("acme").unwrap()
}

/// A pool pointed at a database that does not exist (a typo in the URL): the error names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_errors_carry_the_servers_message() {
    let cluster = TestCluster::shared().unwrap();
    let missing = "tenant_schemas_no_such_database";
    let router = SchemaRouter::builder(pool(cluster.config(missing), 1).unwrap()).build();
    let err = router.connection_for_schema(&schema()).await.unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("does not exist"), "{shown}");
    assert!(shown.contains(missing), "{shown}");
    assert!(shown.contains("acme"), "{shown}");
}

/// Nothing listens where the pool connects: the error says the connection was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_errors_carry_the_systems_message() {
    // A port nobody listens on: bound but never listening, and held for the whole test so
    // no other test's server can take it in between (a bound-then-released port could be
    // reused by a test cluster or PgBouncer started in parallel).
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = held.local_addr().unwrap().port();
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("postgres");
    let router = SchemaRouter::builder(pool(config, 1).unwrap()).build();
    let err = router.connection_for_schema(&schema()).await.unwrap_err();
    let shown = err.to_string();
    assert!(shown.to_lowercase().contains("refused"), "{shown}");
    drop(held);
}
