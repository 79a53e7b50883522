//! Host caches of separate processes stay coherent through LISTEN/NOTIFY.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{ErrorKind, Host, NewTenant, Tenancy};

async fn instance(db: &TestDatabase) -> Tenancy {
    // Separate pools and caches, as two app processes would have.
    Tenancy::builder(db.new_pool(4).unwrap())
        .migrations(marker_and_notes())
        .listen_for_changes(db.config().clone())
        .build()
        .await
        .unwrap()
}

async fn wait_listening(t: &Tenancy) {
    let started = Instant::now();
    while !t.is_listening() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "listener never connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `b` until `host` resolves as `want` (true: a tenant; false: 404); returns how long.
async fn converge(b: &Tenancy, host: &Host, want: bool, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let found = match b.resolve(host).await {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => panic!("{e}"),
        };
        if found == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{host} still {found} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_instance_reaches_the_other() {
    let db = database().await;
    let a = instance(&db).await;
    let b = instance(&db).await;
    wait_listening(&a).await;
    wait_listening(&b).await;

    let acme = host("acme.test");
    a.create_tenant(NewTenant::new(schema("acme")).domain(acme.clone()))
        .await
        .unwrap();
    converge(&b, &acme, true, Duration::from_secs(1)).await;
    // b now caches acme.test; a removes it.
    a.remove_domain(&schema("acme"), &acme).await.unwrap();
    let took = converge(&b, &acme, false, Duration::from_secs(1)).await;
    println!("domain removal reached the other instance's cache in {took:?}");

    // A negative entry in b is dropped when a adds the domain.
    let www = host("www.acme.test");
    assert!(b.resolve(&www).await.is_err());
    a.add_domain(&schema("acme"), &www, true).await.unwrap();
    converge(&b, &www, true, Duration::from_secs(1)).await;

    // Kill b's listener: it reconnects, forgets everything, and still converges.
    let admin = db.pool().get().await.unwrap();
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1);
    a.delete_tenant(&schema("acme"), tenant_schemas::DropSchema::Yes)
        .await
        .unwrap();
    let took = converge(&b, &www, false, Duration::from_secs(5)).await;
    println!("after killing the listener, converged in {took:?}");
    wait_listening(&b).await;
}
