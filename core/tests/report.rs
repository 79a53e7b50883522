//! Cross-tenant read-only reports (`Tenancy::report`): one `UNION ALL` over the registry's
//! schemas, each row tagged with its tenant; writes, malformed queries and slow queries are
//! refused and change nothing. Against a real PostgreSQL (the Citus version is in
//! tests/citus.rs).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::tokio_postgres::error::SqlState;
use tenant_schemas::{Error, ErrorKind, NewTenant, ReportOptions, Tenancy};

/// Each tenant's (schema, notes) as a report sees them.
async fn note_counts(tenancy: &Tenancy) -> Vec<(String, i64)> {
    tenancy
        .report(
            "SELECT count(*) AS notes FROM {schema}.notes",
            &[],
            &ReportOptions::default(),
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("tenant_schema"), r.get("notes")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_reads_every_tenant_tagged_and_writes_nothing() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    // No tenant yet: an empty report, but a malformed query is refused all the same.
    assert!(note_counts(&tenancy).await.is_empty());
    let err = tenancy
        .report("SELECT 1", &[], &ReportOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ReportQuery { .. }), "{err:?}");

    let mut schemas = marked_tenants(&tenancy, "r", 3).await;
    // A schema named after an SQL keyword: the library quotes it.
    let order = schema("order");
    tenancy
        .create_tenant(NewTenant::new(order.clone()))
        .await
        .unwrap();
    tenancy
        .router()
        .connection_for_schema(&order)
        .await
        .unwrap()
        .execute("INSERT INTO marker VALUES ('order')", &[])
        .await
        .unwrap();
    schemas.insert(0, order);
    plant_public_marker(db.pool()).await;

    // Every tenant once, in schema order, tagged; each branch read its own schema.
    let rows = tenancy
        .report(
            "SELECT m.schema_name AS marker, (SELECT count(*) FROM {schema}.notes) AS notes
             FROM {schema}.marker AS m",
            &[],
            &ReportOptions::default(),
        )
        .await
        .unwrap();
    let seen: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get("marker"), r.get("notes")))
        .collect();
    assert_eq!(
        seen,
        [
            ("order".into(), "order".into(), 0),
            ("r0".into(), "r0".into(), 0),
            ("r1".into(), "r1".into(), 1),
            ("r2".into(), "r2".into(), 2),
        ]
    );
    assert_eq!(rows[0].columns()[0].name(), "tenant_schema");

    // Parameters, the same for every tenant; several rows per tenant keep their order.
    let rows = tenancy
        .report(
            "SELECT n.id FROM {schema}.notes AS n WHERE n.body = $1 ORDER BY n.id DESC",
            &[&"x"],
            &ReportOptions::default(),
        )
        .await
        .unwrap();
    let tags: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(tags, ["r1", "r2", "r2"]);
    let r2: Vec<i64> = rows[1..].iter().map(|r| r.get(1)).collect();
    assert!(r2[0] > r2[1], "{r2:?}");

    // Some tenants only.
    let rows = tenancy
        .report(
            "SELECT count(*) AS notes FROM {schema}.notes",
            &[],
            &ReportOptions::default().schemas([schema("r2")]),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>("notes"), 2);

    // Writes are refused by the read-only transaction (a writing CTE already by the
    // parser, the branches being subqueries), and change nothing.
    let before = note_counts(&tenancy).await;
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE FUNCTION public.wipe() RETURNS bigint LANGUAGE sql
             AS 'DELETE FROM r2.notes; SELECT 0::bigint'",
        )
        .await
        .unwrap();
    let err = tenancy
        .report(
            "WITH d AS (DELETE FROM {schema}.notes RETURNING 1) SELECT count(*) FROM d",
            &[],
            &ReportOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(err.as_db_error().is_some(), "{err:?}");
    for write in [
        "SELECT public.wipe() AS wiped FROM {schema}.marker",
        "SELECT nextval('{schema}.notes_id_seq') AS id",
        "SELECT n.id FROM {schema}.notes AS n FOR UPDATE",
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
    // Turning the transaction writable from inside is refused by the server too.
    let err = tenancy
        .report(
            "SELECT set_config('transaction_read_only', 'off', true) FROM {schema}.marker",
            &[],
            &ReportOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(err.as_db_error().is_some(), "{err:?}");
    // A second statement cannot ride along.
    let err = tenancy
        .report(
            "SELECT 1 FROM {schema}.marker; DELETE FROM public.marker",
            &[],
            &ReportOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ReportQuery { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(note_counts(&tenancy).await, before);
    assert_eq!(
        marker_of(&tenancy.router().public().await.unwrap()).await,
        "PUBLIC"
    );

    // The statement timeout stops a slow report.
    let started = Instant::now();
    let err = tenancy
        .report(
            "SELECT pg_sleep(5) AS slept FROM {schema}.marker",
            &[],
            &ReportOptions::default().statement_timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.as_db_error().map(|e| e.code().clone()),
        Some(SqlState::QUERY_CANCELED),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // The pool's connections are writable afterwards: the library's writes still work.
    tenancy
        .rename(&schema("r0"), "after a report")
        .await
        .unwrap();
    assert_eq!(
        tenancy.registry().get(&schema("r0")).await.unwrap().name,
        "after a report"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_spans_the_databases_of_the_shard_map() {
    let (a, b, tenancy) = two_databases().await;
    for (name, shard) in [("on_a", None), ("on_b", Some("b")), ("also_a", None)] {
        let s = schema(name);
        let new = NewTenant::new(s.clone());
        let record = tenancy
            .create_tenant(match shard {
                Some(shard) => new.shard(shard),
                None => new,
            })
            .await
            .unwrap();
        tenancy
            .router()
            .connection_for_tenant(&record.tenant())
            .await
            .unwrap()
            .execute("INSERT INTO marker VALUES ($1)", &[&name])
            .await
            .unwrap();
    }
    let rows = tenancy
        .report(
            "SELECT schema_name AS marker, current_database()::text AS db FROM {schema}.marker",
            &[],
            &ReportOptions::default(),
        )
        .await
        .unwrap();
    let seen: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get("marker"), r.get("db")))
        .collect();
    assert_eq!(
        seen,
        [
            ("also_a".into(), "also_a".into(), a.name().to_owned()),
            ("on_a".into(), "on_a".into(), a.name().to_owned()),
            ("on_b".into(), "on_b".into(), b.name().to_owned()),
        ]
    );
}

/// A report leaves nothing on a connection: a session-level advisory lock its query took
/// is gone once the report returns (its connection was closed, not pooled), and the pool
/// still serves. Another session takes the lock, waiting at most `lock_timeout` for the
/// closed connection's backend to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_leaves_no_session_state_on_a_pooled_connection() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    marked_tenants(&tenancy, "s", 2).await;
    for (sql, ok) in [
        // A success, and an error after the lock was taken (the second tenant's branch
        // divides by zero).
        (
            "SELECT pg_advisory_lock(4242)::text AS locked FROM {schema}.marker",
            true,
        ),
        (
            "SELECT pg_advisory_lock(4243)::text AS locked, \
             1 / (CASE WHEN m.schema_name = 's1' THEN 0 ELSE 1 END) AS x \
             FROM {schema}.marker AS m",
            false,
        ),
    ] {
        let result = tenancy.report(sql, &[], &ReportOptions::default()).await;
        assert_eq!(result.is_ok(), ok, "{sql}: {result:?}");
    }
    // Every pooled connection of the tenancy (the router's pool is the registry's) holds
    // no advisory lock.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tenancy.router().public().await.unwrap());
    }
    for conn in &held {
        let locks: i64 = conn
            .query_one(
                "SELECT count(*) FROM pg_locks \
                 WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(locks, 0);
    }
    drop(held);
    let other = db.new_pool(1).unwrap();
    let other = other.get().await.unwrap();
    other
        .batch_execute("SET lock_timeout = '20s'")
        .await
        .unwrap();
    for key in [4242_i64, 4243] {
        other
            .query_one("SELECT pg_advisory_lock($1)::text", &[&key])
            .await
            .unwrap_or_else(|e| panic!("lock {key} is still held: {e}"));
    }
}

/// PostgreSQL lets a `READ ONLY` transaction write large objects; a report refuses them as
/// any other write, and they change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_refuses_large_object_writers() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    marked_tenants(&tenancy, "l", 2).await;
    let admin = db.pool().get().await.unwrap();
    let oid: u32 = admin
        .query_one("SELECT lo_from_bytea(0, 'kept'::bytea)", &[])
        .await
        .unwrap()
        .get(0);
    let objects = "SELECT count(*) FROM pg_largeobject_metadata";
    let before: i64 = admin.query_one(objects, &[]).await.unwrap().get(0);
    for write in [
        "SELECT lo_from_bytea(0, 'x'::bytea)::text AS oid FROM {schema}.marker".to_owned(),
        "SELECT lo_create(0)::text AS oid FROM {schema}.marker".to_owned(),
        "SELECT lo_creat(-1)::text AS oid FROM {schema}.marker".to_owned(),
        "SELECT lo_import('PG_VERSION')::text AS oid FROM {schema}.marker".to_owned(),
        format!("SELECT lo_put({oid}, 0, 'y'::bytea)::text AS put FROM {{schema}}.marker"),
        format!("SELECT lowrite(lo_open({oid}, 131072), 'z'::bytea) AS n FROM {{schema}}.marker"),
        format!("SELECT lo_truncate(lo_open({oid}, 131072), 0) AS n FROM {{schema}}.marker"),
        // One tenant only: a second branch would find the object gone.
        format!("SELECT lo_unlink({oid}) AS n FROM {{schema}}.marker WHERE schema_name = 'l0'"),
    ] {
        let err = tenancy
            .report(&write, &[], &ReportOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::ReportWrites { .. }),
            "{write}: {err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::Forbidden);
        let shown = err.to_string();
        assert!(shown.contains("a report may not write"), "{shown}");
    }
    let after: i64 = admin.query_one(objects, &[]).await.unwrap().get(0);
    assert_eq!(after, before);
    let kept: Vec<u8> = admin
        .query_one("SELECT lo_get($1)", &[&oid])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, b"kept");
    // Reading large objects is fine.
    let rows = tenancy
        .report(
            &format!("SELECT length(lo_get({oid})) AS n FROM {{schema}}.marker"),
            &[],
            &ReportOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, i32>("n"), 4);
}
