//! Migrations for real operations: no-transaction steps (`CREATE INDEX CONCURRENTLY`) on
//! create and migrate, a failed concurrent build and the doctor's repair, lock timeouts
//! retried, and staged roll-outs (canaries, waves). Against a real PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{
    Error, Finding, NewTenant, Outcome, RunOptions, SchemaName, Tenancy, TenantEvent,
    TenantMigrations, HISTORY_TABLE,
};

async fn with(db: &TestDatabase, migrations: TenantMigrations) -> Tenancy {
    tenancy(db, migrations).await
}

/// Whether `schema` has a valid index `index` (`None`: no such index).
async fn index_valid(db: &TestDatabase, schema: &str, index: &str) -> Option<bool> {
    db.pool()
        .get()
        .await
        .unwrap()
        .query_opt(
            "SELECT i.indisvalid FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &index],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

async fn history(db: &TestDatabase, schema: &str) -> Vec<i32> {
    db.pool()
        .get()
        .await
        .unwrap()
        .query(
            &format!("SELECT version FROM \"{schema}\".{HISTORY_TABLE} ORDER BY 1"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The tenant outcomes of a run, `public` aside, by schema name.
fn outcomes(report: &tenant_schemas::MigrationReport) -> Vec<(String, Outcome)> {
    let mut out: Vec<(String, Outcome)> = report
        .schemas
        .iter()
        .filter(|r| !r.schema.is_public())
        .map(|r| (r.schema.to_string(), r.outcome.clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_index_applies_on_create_and_on_migrate() {
    let db = database().await;
    let old = with(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&old, "ci", 3).await;
    // From files: the marker on the first line; a transactional step after it.
    let set = TenantMigrations::from_files([
        ("V1__notes.sql", NOTES),
        ("V2__marker.sql", MARKER),
        (
            "V3__notes_body.sql",
            "-- tenant-schemas: no-transaction\nCREATE INDEX CONCURRENTLY notes_body ON notes (body)",
        ),
        ("V4__after.sql", "CREATE TABLE after_index (x int)"),
    ])
    .unwrap();
    assert!(set.get(3).unwrap().no_transaction && !set.get(4).unwrap().no_transaction);
    let t = with(&db, set).await;
    let report = t.migrate(&RunOptions::default(), None).await.unwrap();
    assert!(report.is_success(), "{report:?}");
    for (s, outcome) in outcomes(&report) {
        assert_eq!(outcome, Outcome::Migrated { from: 2, to: 4 }, "{s}");
    }
    for s in &schemas {
        assert_eq!(index_valid(&db, s.as_str(), "notes_body").await, Some(true));
        assert_eq!(history(&db, s.as_str()).await, [1, 2, 3, 4]);
        assert_eq!(t.registry().get(s).await.unwrap().version, 4);
        assert!(!schemas_holding(&db, "after_index").await.is_empty());
    }
    // A new tenant: committed at version 2, then the index, then V4.
    let record = t
        .create_tenant(NewTenant::new(schema("ci_new")).domain(host("ci-new.test")))
        .await
        .unwrap();
    assert_eq!(record.version, 4);
    assert_eq!(
        t.registry().get(&schema("ci_new")).await.unwrap().version,
        4
    );
    assert_eq!(index_valid(&db, "ci_new", "notes_body").await, Some(true));
    assert_eq!(history(&db, "ci_new").await, [1, 2, 3, 4]);
    assert_eq!(
        schemas_holding(&db, "after_index").await,
        ["ci0", "ci1", "ci2", "ci_new"]
    );
    assert!(t.doctor(false).await.unwrap().is_healthy());
    // A clone's copy would run before such steps could: refused, nothing made.
    let err = t
        .clone_tenant(&schemas[0], NewTenant::new(schema("ci_clone")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(!schema_exists(&db, "ci_clone").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_concurrent_build_stays_behind_and_the_doctor_repairs_it() {
    let db = database().await;
    let old = with(&db, marker_and_notes()).await;
    // fb2 has two notes 'x': a unique index over `body` cannot be built there.
    let schemas = marked_tenants(&old, "fb", 3).await;
    let set = marker_and_notes().with_no_transaction(
        "notes_body_unique",
        "CREATE UNIQUE INDEX CONCURRENTLY notes_body_unique ON notes (body)",
    );
    let t = with(&db, set).await;
    let report = t.migrate(&RunOptions::default(), None).await.unwrap();
    let got = outcomes(&report);
    assert_eq!(got[0].1, Outcome::Migrated { from: 2, to: 3 });
    assert_eq!(got[1].1, Outcome::Migrated { from: 2, to: 3 });
    let Outcome::Failed { version, error } = &got[2].1 else {
        panic!("{got:?}");
    };
    assert_eq!(*version, 2);
    assert!(
        error.contains("V3__notes_body_unique.sql") && error.contains("fb2"),
        "{error}"
    );
    assert_eq!(t.registry().get(&schemas[2]).await.unwrap().version, 2);
    assert_eq!(history(&db, "fb2").await, [1, 2]);
    assert_eq!(
        index_valid(&db, "fb2", "notes_body_unique").await,
        Some(false)
    );

    // The doctor reports the invalid index (and the tenant behind); it changes nothing.
    let report = t.doctor(false).await.unwrap();
    let invalid = Finding::InvalidIndex {
        schema: schemas[2].clone(),
        index: "notes_body_unique".into(),
    };
    assert!(report.findings.contains(&invalid), "{report:?}");
    assert!(report.findings.contains(&Finding::Behind {
        schema: schemas[2].clone(),
        version: 2,
        latest: 3
    }));
    assert!(!report.is_healthy());
    // Repairing before the data is fixed fails again, and says so.
    let report = t.doctor(true).await.unwrap();
    assert!(!report.is_healthy());
    assert!(!report.repair_failures.is_empty(), "{report:?}");
    assert_eq!(t.registry().get(&schemas[2]).await.unwrap().version, 2);

    // Once the duplicates are gone, the doctor drops the invalid index and the migration
    // builds it again.
    let conn = db.pool().get().await.unwrap();
    conn.batch_execute("DELETE FROM fb2.notes WHERE id <> (SELECT min(id) FROM fb2.notes)")
        .await
        .unwrap();
    let report = t.doctor(true).await.unwrap();
    assert!(report.is_healthy(), "{report:?}");
    assert!(report.repaired.contains(&invalid), "{report:?}");
    assert_eq!(
        index_valid(&db, "fb2", "notes_body_unique").await,
        Some(true)
    );
    assert_eq!(t.registry().get(&schemas[2]).await.unwrap().version, 3);
    assert_eq!(history(&db, "fb2").await, [1, 2, 3]);
    assert!(t.doctor(false).await.unwrap().findings.is_empty());

    // An invalid index in a tenant that is up to date is rebuilt in place.
    conn.batch_execute(
        "CREATE INDEX fb1_extra ON fb1.notes (id);
         UPDATE pg_catalog.pg_index SET indisvalid = false
         WHERE indexrelid = 'fb1.fb1_extra'::regclass",
    )
    .await
    .unwrap();
    let report = t.doctor(true).await.unwrap();
    assert!(report.is_healthy(), "{report:?}");
    assert_eq!(index_valid(&db, "fb1", "fb1_extra").await, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_on_create_leaves_the_tenant_behind() {
    let db = database().await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let heard = events.clone();
    let t = Tenancy::builder(db.pool().clone())
        .migrations(marker_and_notes().with_no_transaction(
            "bad_index",
            "CREATE INDEX CONCURRENTLY bad_index ON notes (no_such_column)",
        ))
        .on_event(move |e| {
            let heard = heard.clone();
            async move {
                if let TenantEvent::Created(r) = e {
                    heard
                        .lock()
                        .unwrap()
                        .push((r.schema.to_string(), r.version));
                }
            }
        })
        .build()
        .await
        .unwrap();
    let err = t
        .create_tenant(NewTenant::new(schema("cb")).domain(host("cb.test")))
        .await
        .unwrap_err();
    let Error::TenantCreatedBehind {
        schema: s, version, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!((s.as_str(), *version), ("cb", 2));
    assert!(err.to_string().contains("V3__bad_index.sql"), "{err}");
    assert!(err.to_string().contains("no_such_column"), "{err}");
    // It exists, is served and announced, at version 2.
    assert_eq!(
        t.resolve(&host("cb.test")).await.unwrap().schema().as_str(),
        "cb"
    );
    assert_eq!(t.registry().get(s).await.unwrap().version, 2);
    assert_eq!(history(&db, "cb").await, [1, 2]);
    assert_eq!(*events.lock().unwrap(), [("cb".to_owned(), 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_is_retried_then_waited_out_or_reported() {
    let db = database().await;
    let old = with(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&old, "lk", 2).await;
    let index = "CREATE INDEX CONCURRENTLY notes_id ON notes (id)";
    let patient = with(
        &db,
        marker_and_notes()
            .with_no_transaction("notes_id", index)
            .lock_timeout(Duration::from_millis(100))
            .lock_retries(5),
    )
    .await;
    // Another session holds a lock the build needs, then lets go.
    let holder = db.new_pool(1).unwrap();
    let held = holder.get().await.unwrap();
    held.batch_execute("BEGIN; LOCK TABLE lk0.notes IN SHARE UPDATE EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = Instant::now();
    let run = tokio::spawn({
        let patient = patient.clone();
        let only = RunOptions {
            schemas: vec![schemas[0].clone()],
            ..RunOptions::default()
        };
        async move { patient.migrate(&only, None).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    held.batch_execute("ROLLBACK").await.unwrap();
    let report = run.await.unwrap();
    assert_eq!(
        outcomes(&report),
        [("lk0".to_owned(), Outcome::Migrated { from: 2, to: 3 })]
    );
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!(index_valid(&db, "lk0", "notes_id").await, Some(true));

    // Held throughout: it gives up after its retries, at the version before, and leaves
    // no invalid index behind.
    let impatient = with(
        &db,
        marker_and_notes()
            .with_no_transaction("notes_id", index)
            .lock_timeout(Duration::from_millis(50))
            .lock_retries(1),
    )
    .await;
    held.batch_execute("BEGIN; LOCK TABLE lk1.notes IN SHARE UPDATE EXCLUSIVE MODE")
        .await
        .unwrap();
    let report = impatient
        .migrate(&RunOptions::default(), None)
        .await
        .unwrap();
    let got = outcomes(&report);
    let [(s, Outcome::Failed { version: 2, error })] = got.as_slice() else {
        panic!("{got:?}");
    };
    assert_eq!(s, "lk1");
    assert!(
        error.contains("could not get its locks within 50ms in 2 attempts")
            && error.contains("lock timeout"),
        "{error}"
    );
    assert_eq!(
        impatient.registry().get(&schemas[1]).await.unwrap().version,
        2
    );
    assert_eq!(index_valid(&db, "lk1", "notes_id").await, None);
    held.batch_execute("ROLLBACK").await.unwrap();
    let report = impatient
        .migrate(&RunOptions::default(), None)
        .await
        .unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(index_valid(&db, "lk1", "notes_id").await, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_and_canaries_migrate_some_tenants_in_a_stable_order() {
    let db = database().await;
    let old = with(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&old, "wv", 5).await;
    let t = with(
        &db,
        marker_and_notes().with("extra", "ALTER TABLE notes ADD COLUMN extra int"),
    )
    .await;
    let wave = RunOptions {
        wave: Some(2),
        ..RunOptions::default()
    };
    let migrated = |report: &tenant_schemas::MigrationReport| -> Vec<String> {
        outcomes(report)
            .into_iter()
            .filter(|(_, o)| matches!(o, Outcome::Migrated { .. }))
            .map(|(s, _)| s)
            .collect()
    };
    let first = t.migrate(&wave, None).await.unwrap();
    assert_eq!(migrated(&first), ["wv0", "wv1"]);
    assert_eq!(first.deferred, 3);
    let second = t.migrate(&wave, None).await.unwrap();
    assert_eq!(migrated(&second), ["wv2", "wv3"]);
    assert_eq!((second.deferred, second.up_to_date), (1, 2));
    let third = t.migrate(&wave, None).await.unwrap();
    assert_eq!(migrated(&third), ["wv4"]);
    assert_eq!(third.deferred, 0);

    // The next version: a canary first, alone; then canaries first within a wave.
    let t = with(
        &db,
        marker_and_notes()
            .with("extra", "ALTER TABLE notes ADD COLUMN extra int")
            .with("more", "ALTER TABLE notes ADD COLUMN more int"),
    )
    .await;
    let canary = RunOptions {
        canary: vec![schemas[3].clone()],
        ..RunOptions::default()
    };
    let report = t.migrate(&canary, None).await.unwrap();
    assert_eq!(migrated(&report), ["wv3"]);
    assert_eq!(report.deferred, 4);
    let report = t
        .migrate(
            &RunOptions {
                canary: vec![schemas[4].clone(), schemas[0].clone()],
                wave: Some(1),
                ..RunOptions::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(migrated(&report), ["wv4"]);
    assert_eq!(report.deferred, 3);
    let versions: Vec<i32> = t
        .registry()
        .list()
        .await
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, [3, 3, 3, 4, 4]);
    let _: Vec<SchemaName> = schemas;
}
