//! A database that goes away: errors say "unavailable" (503), and the router recovers.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tenant_schemas::testing::{pool, TestCluster};
use tenant_schemas::{scope, ErrorKind, NewTenant, SchemaName, Tenancy, TenantMigrations};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_database_answers_unavailable_then_recovers() {
    // A cluster of its own: stopping the shared one would disturb other tests.
    let cluster = TestCluster::start().expect("cluster");
    let db = cluster.create_database().await.expect("database");
    let small = pool(db.config().clone(), 2).unwrap();
    let tenancy = Tenancy::builder(small)
        .migrations(TenantMigrations::new().with("notes", "CREATE TABLE notes (body text)"))
        .build()
        .await
        .unwrap();
    let acme = tenancy
        .create_tenant(NewTenant::new(SchemaName::new("acme").unwrap()))
        .await
        .unwrap();
    let query = || {
        scope::run(acme.tenant(), async {
            let conn = tenancy.connection().await?;
            conn.query_one("SELECT count(*) FROM notes", &[])
                .await
                .map(drop)
        })
    };
    query().await.unwrap();

    // Mid-request: the backend is terminated while a statement runs.
    let victim = scope::run(acme.tenant(), async {
        let conn = tenancy.connection().await.unwrap();
        let killer = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let admin = tenancy.router().pool().get().await.unwrap();
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%SELECT pg_sleep(5)%' AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap();
        };
        let (result, ()) = tokio::join!(conn.query("SELECT pg_sleep(5)", &[]), killer);
        result
    })
    .await;
    let err = victim.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(err.status(), 503);
    query()
        .await
        .expect("a fresh connection replaces the dead one");

    // The whole server goes away.
    cluster.stop().unwrap();
    let err = query().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(err.status(), 503);
    let lookup = tenancy
        .resolve(&tenant_schemas::Host::parse("new.test").unwrap())
        .await;
    assert_eq!(lookup.unwrap_err().status(), 503);

    cluster.restart().unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        if query().await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the router serves again once the server is back");
}
