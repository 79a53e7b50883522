//! More of Citus, on a real cluster (`TestCitusCluster`): cross-tenant reports through the
//! coordinator (a distributed query), a stopped worker (only its tenants are unavailable),
//! and a migration across 200 distributed tenants.
//!
//! Needs Citus installed (`../shared/citus/install.sh`, run by scripts/test when Citus is
//! missing); `TENANT_SCHEMAS_SKIP_CITUS=1` skips these tests where it is not.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::{TestCitusCluster, TestDatabase};
use tenant_schemas::{Error, ErrorKind, ReportOptions, SchemaName, Tenancy};

/// One test at a time: one of them starts a cluster of its own and stops and restarts a
/// worker, and a node started beside it (another test's shared cluster) could take the
/// stopped worker's port or find its coordinator's links broken mid-set-up.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh database on `cluster`, or on the shared Citus cluster; `None` when the user
/// opted out.
async fn citus_database(
    cluster: Option<&TestCitusCluster>,
) -> Option<(&TestCitusCluster, TestDatabase)> {
    if TestCitusCluster::skip_requested() {
        eprintln!("Citus tests skipped (TENANT_SCHEMAS_SKIP_CITUS is set)");
        return None;
    }
    let cluster = match cluster {
        Some(c) => c,
        None => TestCitusCluster::shared().unwrap_or_else(|e| panic!("{e}")),
    };
    let db = cluster.create_database().await.expect("citus database");
    Some((cluster, db))
}

async fn note_counts(tenancy: &Tenancy) -> Vec<(String, String, i64)> {
    tenancy
        .report(
            "SELECT m.schema_name AS marker, (SELECT count(*) FROM {schema}.notes) AS notes
             FROM {schema}.marker AS m",
            &[],
            &ReportOptions::default(),
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get("marker"), r.get("notes")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_runs_over_distributed_tenants_and_writes_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some((_cluster, db)) = citus_database(None).await else {
        return;
    };
    let tenancy = tenancy(&db, marker_and_notes()).await;
    assert!(tenancy.registry().is_citus().await.unwrap());
    let schemas = marked_tenants(&tenancy, "t", 4).await;
    let placements = tenancy.registry().placements().await.unwrap();
    let nodes: std::collections::BTreeSet<_> =
        placements.iter().filter_map(|p| p.node.clone()).collect();
    assert_eq!(nodes.len(), 2, "tenants on both workers: {placements:?}");

    let expected: Vec<(String, String, i64)> = schemas
        .iter()
        .enumerate()
        .map(|(i, s)| (s.to_string(), s.to_string(), i as i64))
        .collect();
    let started = Instant::now();
    assert_eq!(note_counts(&tenancy).await, expected);
    eprintln!("report over 4 distributed tenants: {:?}", started.elapsed());

    // Aggregates and parameters across workers.
    let rows = tenancy
        .report(
            "SELECT n.body, count(*) AS notes FROM {schema}.notes AS n
             WHERE n.body = $1 GROUP BY n.body",
            &[&"x"],
            &ReportOptions::default(),
        )
        .await
        .unwrap();
    let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get("notes"))).collect();
    assert_eq!(got, [("t1".into(), 1), ("t2".into(), 2), ("t3".into(), 3)]);

    // Writes through the coordinator are refused, and change nothing on the workers.
    for write in [
        "SELECT n.id FROM {schema}.notes AS n FOR UPDATE",
        "SELECT nextval('{schema}.notes_id_seq') AS id",
    ] {
        let err = tenancy
            .report(write, &[], &ReportOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::ReportWrites { .. }),
            "{write}: {err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::Forbidden);
    }
    let err = tenancy
        .report(
            "WITH d AS (DELETE FROM {schema}.notes RETURNING 1) SELECT count(*) FROM d",
            &[],
            &ReportOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(err.as_db_error().is_some(), "{err:?}");
    assert_eq!(note_counts(&tenancy).await, expected);

    // The statement timeout reaches the distributed query.
    let started = Instant::now();
    let err = tenancy
        .report(
            "SELECT pg_sleep(5) AS slept FROM {schema}.marker",
            &[],
            &ReportOptions::default().statement_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(err.as_db_error().is_some(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// What a request for `schema` gets: its marker, or the error.
async fn request(tenancy: &Tenancy, schema: &SchemaName) -> tenant_schemas::Result<String> {
    let tenant = tenancy
        .resolve(&host(&format!("{}.test", schema.as_str())))
        .await?;
    let db = tenancy.router().connection_for_tenant(&tenant).await?;
    let row = db.query_one("SELECT schema_name FROM marker", &[]).await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_makes_only_its_tenants_unavailable() {
    let _serial = ONE_AT_A_TIME.lock().await;
    if TestCitusCluster::skip_requested() {
        eprintln!("Citus tests skipped (TENANT_SCHEMAS_SKIP_CITUS is set)");
        return;
    }
    // A cluster of its own: the shared one serves the other tests meanwhile.
    let started = Instant::now();
    let own = TestCitusCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let Some((cluster, db)) = citus_database(Some(&own)).await else {
        return;
    };
    eprintln!("own Citus cluster and database: {:?}", started.elapsed());
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "w", 4).await;
    // The same in transaction mode (what runs behind PgBouncer).
    let transaction_mode = Tenancy::builder(db.new_pool(4).unwrap())
        .migrations(marker_and_notes())
        .search_path_mode(tenant_schemas::SearchPathMode::Transaction)
        .build()
        .await
        .unwrap();
    let placements = tenancy.registry().placements().await.unwrap();
    let stopped = cluster.worker_nodes()[0].clone();
    let (down, up): (Vec<_>, Vec<_>) = schemas.iter().cloned().partition(|s| {
        placements
            .iter()
            .any(|p| &p.schema == s && p.node.as_ref() == Some(&stopped))
    });
    assert!(!down.is_empty() && !up.is_empty(), "{placements:?}");
    for s in &schemas {
        assert_eq!(request(&tenancy, s).await.unwrap(), s.as_str());
    }

    cluster.workers()[0].stop().unwrap();
    let stopped_at = Instant::now();
    for round in 0..3 {
        for t in [&tenancy, &transaction_mode] {
            for s in &down {
                let started = Instant::now();
                let err = request(t, s).await.unwrap_err();
                eprintln!(
                    "{s} on the stopped worker, round {round}: {:?}: {err}",
                    started.elapsed()
                );
                assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
                assert_eq!(err.status().as_u16(), 503);
            }
            for s in &up {
                assert_eq!(request(t, s).await.unwrap(), s.as_str(), "round {round}");
            }
        }
    }
    // Placement still answers (it reads the coordinator's metadata).
    assert_eq!(tenancy.registry().placements().await.unwrap(), placements);
    eprintln!("worker down for {:?}", stopped_at.elapsed());

    cluster.workers()[0].restart().unwrap();
    let restarted = Instant::now();
    for (s, t) in schemas
        .iter()
        .flat_map(|s| [(s, &tenancy), (s, &transaction_mode)])
    {
        loop {
            match request(t, s).await {
                Ok(marker) => {
                    assert_eq!(marker, s.as_str());
                    break;
                }
                Err(e) if restarted.elapsed() < Duration::from_secs(15) => {
                    eprintln!("{s} after the restart: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{s} still failing after the restart: {e:?}"),
            }
        }
    }
    eprintln!(
        "all tenants served {:?} after the restart",
        restarted.elapsed()
    );
}

/// How many distributed tenants the migration test makes.
const MANY: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_reaches_200_distributed_tenants() {
    let _serial = ONE_AT_A_TIME.lock().await;
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    use tenant_schemas::{NewTenant, RunOptions, TenantMigrations};

    let Some((_cluster, db)) = citus_database(None).await else {
        return;
    };
    let migrations = TenantMigrations::new().with("notes", NOTES);
    let tenancy = Tenancy::builder(db.pool().clone())
        .migrations(migrations.clone())
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    let schemas: Vec<SchemaName> = stream::iter(0..MANY)
        .map(|i| {
            let tenancy = tenancy.clone();
            async move {
                let s = schema(&format!("m{i:03}"));
                tenancy.create_tenant(NewTenant::new(s.clone())).await?;
                Ok::<_, Error>(s)
            }
        })
        .buffer_unordered(4)
        .try_collect()
        .await
        .unwrap();
    let created = started.elapsed();
    let placements = tenancy.registry().placements().await.unwrap();
    assert_eq!(placements.len(), MANY);
    let on_first = placements
        .iter()
        .filter(|p| p.node == placements[0].node)
        .count();
    assert!(on_first < MANY, "all on one worker: {placements:?}");

    let newer = migrations.with("tag", "ALTER TABLE notes ADD COLUMN tag text");
    let migrating = Tenancy::builder(db.pool().clone())
        .migrations(newer)
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    let report = migrating
        .migrate(&RunOptions::default(), None)
        .await
        .unwrap();
    let migrated = started.elapsed();
    assert!(report.is_success(), "{report:?}");
    let records = migrating.registry().list().await.unwrap();
    let tenants: Vec<_> = records.iter().filter(|r| !r.schema.is_public()).collect();
    assert_eq!(tenants.len(), MANY);
    assert!(tenants.iter().all(|r| r.version == 2), "{tenants:?}");
    // The column is on every tenant's table, on both workers: one report says so.
    let started = Instant::now();
    let rows = migrating
        .report(
            "SELECT count(*) AS tagged FROM {schema}.notes WHERE tag IS NULL",
            &[],
            &ReportOptions::default(),
        )
        .await
        .unwrap();
    let reported = started.elapsed();
    assert_eq!(rows.len(), MANY);
    assert!(rows.iter().all(|r| r.get::<_, i64>("tagged") == 0));
    eprintln!(
        "{} distributed tenants ({on_first} on one worker): created in {created:?} (4 at \
         once), migrated in {migrated:?}, a report over all of them in {reported:?}",
        schemas.len()
    );
}
