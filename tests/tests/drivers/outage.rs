//! A stopped database, through both drivers: the core's router and `tenant-schemas-sqlx` with
//! the pool made from the same URL (`pool_from_settings`) answer 503 at once, well under the
//! core's connect timeout, not after sqlx's retries of the refused connection.

use std::time::{Duration, Instant};

use sqlx::Executor;
use tenant_schemas::testing::TestCluster;
use tenant_schemas::{ConnectionSettings, ErrorKind, SchemaName, SchemaRouter};
use tenant_schemas_sqlx::{pool_from_settings, SqlxRouter};

/// What a checkout may take with the database stopped. The core answers in milliseconds and
/// the sqlx driver after its 100 ms wait for the pool; this bound is many times that, and a
/// quarter of the core's 10 s connect timeout (sqlx alone retried for its 30 s).
const BOUND: Duration = Duration::from_millis(2500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_answers_unavailable_fast_through_both_drivers() {
    // A cluster of its own: stopping the shared one would disturb other tests.
    let cluster = TestCluster::start().unwrap();
    let db = cluster.create_database().await.unwrap();
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute("CREATE SCHEMA acme; CREATE TABLE acme.notes (body text)")
        .await
        .unwrap();
    // Over TCP, as a production URL: a stopped server refuses the connection (sqlx retries a
    // refusal until its acquire timeout).
    let settings = ConnectionSettings::from_url(&cluster.url(db.name()).unwrap())
        .unwrap()
        .pool_size(2);
    let core = SchemaRouter::new(settings.pool().unwrap());
    let pool = pool_from_settings(&settings).unwrap();
    assert_eq!(
        pool.options().get_acquire_timeout(),
        settings.get_wait_timeout()
    );
    assert_eq!(pool.options().get_max_connections(), 2);
    let sqlx = SqlxRouter::new(pool);
    let acme = SchemaName::new("acme").unwrap();

    let core_query = || async {
        let conn = core.connection_for_schema(&acme).await?;
        conn.query_one("SELECT count(*) FROM notes", &[])
            .await
            .map(drop)
    };
    let sqlx_query = || async {
        let mut conn = sqlx.connection_for_schema(&acme).await?;
        conn.execute("SELECT count(*) FROM notes")
            .await
            .map(drop)
            .map_err(|e| conn.error(e))
    };
    core_query().await.unwrap();
    sqlx_query().await.unwrap();

    cluster.stop().unwrap();
    for round in 0..3 {
        let started = Instant::now();
        let err = core_query().await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(
            err.kind(),
            ErrorKind::Unavailable,
            "core, round {round}: {err}"
        );
        assert_eq!(err.status(), 503);
        assert!(took < BOUND, "core, round {round}: 503 after {took:?}");

        let started = Instant::now();
        let err = sqlx_query().await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(
            err.kind(),
            ErrorKind::Unavailable,
            "sqlx, round {round}: {err}"
        );
        assert_eq!(err.status(), 503);
        // The refusal itself, not the pool's timeout.
        assert!(
            matches!(
                &err,
                tenant_schemas_sqlx::Error::Pool { source: sqlx::Error::Io(io), .. }
                    if io.kind() == std::io::ErrorKind::ConnectionRefused
            ),
            "sqlx, round {round}: {err:?}"
        );
        assert!(took < BOUND, "sqlx, round {round}: 503 after {took:?}");
    }

    cluster.restart().unwrap();
    let mut recovered = (false, false);
    for _ in 0..100 {
        recovered = (
            recovered.0 || core_query().await.is_ok(),
            recovered.1 || sqlx_query().await.is_ok(),
        );
        if recovered == (true, true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        recovered,
        (true, true),
        "both drivers serve again once the server is back"
    );
}
