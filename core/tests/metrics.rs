//! Per-tenant checkout metrics through the `metrics` facade: counted for every door, with
//! their outcome, and a bounded number of `tenant` labels.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tenant_schemas::checkout::DriverCheckout;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{Error, Tenancy, Tenant, TenantLimits, TenantStatus};

/// Every counter's total and every histogram's sample count, by name and sorted labels.
#[derive(Default)]
struct Seen {
    counters: Mutex<HashMap<String, Arc<Count>>>,
    histograms: Mutex<HashMap<String, Arc<Count>>>,
}

#[derive(Default)]
struct Count(AtomicU64);

impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl HistogramFn for Count {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn name(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

struct Capture(Arc<Seen>);

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let c = self
            .0
            .counters
            .lock()
            .unwrap()
            .entry(name(key))
            .or_default()
            .clone();
        Counter::from_arc(c)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let h = self
            .0
            .histograms
            .lock()
            .unwrap()
            .entry(name(key))
            .or_default()
            .clone();
        Histogram::from_arc(h)
    }
}

/// One global recorder per process, and `cargo test` runs a binary's tests in one process:
/// the scenarios run in order, in one test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_recorded_per_tenant() {
    let seen = Arc::new(Seen::default());
    metrics::set_global_recorder(Capture(seen.clone())).unwrap();
    checkouts_are_counted_per_tenant_with_their_outcome(&seen).await;
    a_retried_statement_is_counted_once_in_both_modes(&seen).await;
    made_up_schemas_take_no_labels(&seen).await;
}

/// Checkouts of schemas the registry has no tenant in (names a resolver made up from
/// hostile hosts) are counted under `other` and take no label: a tenant that exists, seen
/// after them, still gets its own.
async fn made_up_schemas_take_no_labels(seen: &Seen) {
    let db = database().await;
    let tenancy = Tenancy::builder(db.pool().clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    // Room for exactly one more label than the scenarios before took: every label taken
    // shows in a counter's key.
    let taken: std::collections::HashSet<String> = seen
        .counters
        .lock()
        .unwrap()
        .keys()
        .filter_map(|k| k.split("tenant=").nth(1))
        .map(|t| t.trim_end_matches('}').to_owned())
        .filter(|t| t != "other")
        .collect();
    tenant_schemas::metrics::set_max_tenant_labels(taken.len() + 1);
    let router = tenancy.router();
    for i in 0..20 {
        let made_up = tenant_schemas::SchemaName::new(&format!("made_up_{i}")).unwrap();
        assert!(matches!(
            router.connection_for_schema(&made_up).await.map(drop),
            Ok(()) | Err(Error::SchemaMissing { .. })
        ));
        if let Ok(conn) = router.connection_for_schema(&made_up).await {
            assert!(conn.batch_execute("SELECT 1").await.is_err());
        }
    }
    let real = marked_tenants(&tenancy, "labelled", 1).await;
    drop(router.connection_for_schema(&real[0]).await.unwrap());
    let counters = seen.counters.lock().unwrap();
    assert!(
        counters.keys().all(|k| !k.contains("made_up")),
        "{:?}",
        counters.keys()
    );
    assert!(
        counters
            .keys()
            .any(|k| k.contains("tenant_schemas_checkouts_total") && k.contains("tenant=labelled0")),
        "{:?}",
        counters.keys()
    );
}

async fn checkouts_are_counted_per_tenant_with_their_outcome(seen: &Seen) {
    tenant_schemas::metrics::set_max_tenant_labels(2);
    let db = database().await;
    let tenancy = Tenancy::builder(db.pool().clone())
        .migrations(marker_and_notes())
        .tenant_limits(TenantLimits::new().max_connections(1).max_waiting(0))
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "me", 3).await;
    let router = tenancy.router();
    // Setting up the tenants checked each out once; counted from here on.
    let before = |k: &str| {
        seen.counters
            .lock()
            .unwrap()
            .get(k)
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    };
    let (ok0, ok1) = (
        before("tenant_schemas_checkouts_total{outcome=ok,tenant=me0}"),
        before("tenant_schemas_checkouts_total{outcome=ok,tenant=me1}"),
    );
    let wait0 = seen
        .histograms
        .lock()
        .unwrap()
        .get("tenant_schemas_checkout_wait_seconds{tenant=me0}")
        .map_or(0, |c| c.0.load(Ordering::Relaxed));
    for _ in 0..3 {
        drop(router.connection_for_schema(&s[0]).await.unwrap());
    }
    // Another door: a driver's checkout.
    drop(
        DriverCheckout::begin(Some(&tenancy.tenant_states()), &Tenant::new(s[1].clone()))
            .await
            .unwrap(),
    );
    let held = router.connection_for_schema(&s[1]).await.unwrap();
    assert!(matches!(
        router.connection_for_schema(&s[1]).await,
        Err(Error::TenantBusy { .. })
    ));
    drop(held);
    tenancy
        .set_status(&s[2], TenantStatus::Suspended)
        .await
        .unwrap();
    assert!(router.connection_for_schema(&s[2]).await.is_err());
    // The shared schema asked for by name: its own label, outside the limit.
    let public_ok = before("tenant_schemas_checkouts_total{outcome=ok,tenant=public}");
    drop(router.public().await.unwrap());
    drop(
        router
            .connection_for_schema(&tenant_schemas::SchemaName::public())
            .await
            .unwrap(),
    );

    {
        let counters = seen.counters.lock().unwrap();
        let count = |k: &str| counters.get(k).map_or(0, |c| c.0.load(Ordering::Relaxed));
        assert_eq!(
            count("tenant_schemas_checkouts_total{outcome=ok,tenant=public}") - public_ok,
            2,
            "{:?}",
            counters.keys()
        );
        assert_eq!(
            count("tenant_schemas_checkouts_total{outcome=ok,tenant=me0}") - ok0,
            3,
            "{:?}",
            counters.keys()
        );
        assert_eq!(
            count("tenant_schemas_checkouts_total{outcome=ok,tenant=me1}") - ok1,
            2
        );
        assert_eq!(
            count("tenant_schemas_checkouts_total{outcome=busy,tenant=me1}"),
            1
        );
        // The third tenant is past the label limit: `other`.
        assert_eq!(
            count("tenant_schemas_checkouts_total{outcome=not_served,tenant=other}"),
            1
        );
        assert!(
            counters.keys().all(|k| !k.contains("tenant=me2")),
            "{:?}",
            counters.keys()
        );
        let histograms = seen.histograms.lock().unwrap();
        let samples = histograms["tenant_schemas_checkout_wait_seconds{tenant=me0}"]
            .0
            .load(Ordering::Relaxed);
        assert_eq!(samples - wait0, 3);
    }

    // Statements, per tenant and outcome, through a scope and a transaction.
    let statements = |outcome: &str| {
        before(&format!(
            "tenant_schemas_statements_total{{outcome={outcome},tenant=me0}}"
        ))
    };
    let latencies = || {
        seen.histograms
            .lock()
            .unwrap()
            .get("tenant_schemas_statement_seconds{tenant=me0}")
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    };
    let (ok, failed, cancelled, read_only, timed) = (
        statements("ok"),
        statements("error"),
        statements("cancelled"),
        statements("read_only"),
        latencies(),
    );
    tenancy
        .set_statement_timeout(&s[0], Some(std::time::Duration::from_millis(50)))
        .await
        .unwrap();
    {
        let mut conn = router.connection_for_schema(&s[0]).await.unwrap();
        conn.query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap();
        conn.batch_execute("SELECT 1").await.unwrap();
        assert!(conn
            .execute("SELECT * FROM no_such_table", &[])
            .await
            .is_err());
        assert!(conn.execute("SELECT pg_sleep(1)", &[]).await.is_err());
        let tx = conn.transaction().await.unwrap();
        tx.query("SELECT count(*) FROM notes", &[]).await.unwrap();
        tx.commit().await.unwrap();
    }
    tenancy
        .set_status(&s[0], TenantStatus::ReadOnly)
        .await
        .unwrap();
    let conn = router.connection_for_schema(&s[0]).await.unwrap();
    assert!(matches!(
        conn.execute("INSERT INTO notes (body) VALUES ('x')", &[])
            .await,
        Err(Error::TenantReadOnly { .. })
    ));
    drop(conn);
    assert_eq!(statements("ok") - ok, 3);
    assert_eq!(statements("error") - failed, 1);
    assert_eq!(statements("cancelled") - cancelled, 1);
    assert_eq!(statements("read_only") - read_only, 1);
    assert_eq!(latencies() - timed, 6);
}

/// A statement retried because its cached plan no longer fits (a column's type changed under
/// it; in transaction mode, parameter types learned under another shape) is counted once,
/// `ok`, under its own tenant; a statement cancelled by the tenant's timeout in transaction
/// mode is `cancelled`, a server-refused write of a read-only tenant `read_only`.
async fn a_retried_statement_is_counted_once_in_both_modes(seen: &Seen) {
    // Room for this scenario's tenants beside the first one's two.
    tenant_schemas::metrics::set_max_tenant_labels(100);
    let count = |k: String| {
        seen.counters
            .lock()
            .unwrap()
            .get(&k)
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    };
    let statements = |tenant: &str, outcome: &str| {
        count(format!(
            "tenant_schemas_statements_total{{outcome={outcome},tenant={tenant}}}"
        ))
    };
    for (mode, prefix) in [
        (tenant_schemas::SearchPathMode::Session, "mrs"),
        (tenant_schemas::SearchPathMode::Transaction, "mrt"),
    ] {
        let db = database().await;
        let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
            .migrations(marker_and_notes())
            .search_path_mode(mode)
            .build()
            .await
            .unwrap();
        let s = marked_tenants(&tenancy, prefix, 2).await;
        let (t0, t1) = (s[0].as_str(), s[1].as_str());
        let router = tenancy.router();
        let (ok0, ok1, err0) = (
            statements(t0, "ok"),
            statements(t1, "ok"),
            statements(t0, "error"),
        );
        let conn = router.connection_for_schema(&s[0]).await.unwrap();
        conn.query_one(
            "SELECT schema_name FROM marker WHERE schema_name = $1",
            &[&t0],
        )
        .await
        .unwrap();
        drop(conn);
        db.pool()
            .get()
            .await
            .unwrap()
            .batch_execute(&format!(
                "ALTER TABLE {t0}.marker ALTER COLUMN schema_name TYPE varchar(64)"
            ))
            .await
            .unwrap();
        let conn = router.connection_for_schema(&s[0]).await.unwrap();
        conn.query_one(
            "SELECT schema_name FROM marker WHERE schema_name = $1",
            &[&t0],
        )
        .await
        .unwrap();
        drop(conn);
        assert_eq!(statements(t0, "ok") - ok0, 2, "{mode:?}");
        assert_eq!(statements(t0, "error") - err0, 0, "{mode:?}");
        assert_eq!(statements(t1, "ok") - ok1, 0, "{mode:?}");

        let cancelled = statements(t1, "cancelled");
        tenancy
            .set_statement_timeout(&s[1], Some(std::time::Duration::from_millis(50)))
            .await
            .unwrap();
        let conn = router.connection_for_schema(&s[1]).await.unwrap();
        assert!(conn.execute("SELECT pg_sleep(1)", &[]).await.is_err());
        drop(conn);
        assert_eq!(statements(t1, "cancelled") - cancelled, 1, "{mode:?}");

        let read_only = statements(t1, "read_only");
        tenancy
            .set_status(&s[1], TenantStatus::ReadOnly)
            .await
            .unwrap();
        let conn = router.connection_for_schema(&s[1]).await.unwrap();
        let err = conn
            .query("SELECT nextval('notes_id_seq')", &[])
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::TenantReadOnly { .. }),
            "{mode:?}: {err:?}"
        );
        drop(conn);
        assert_eq!(statements(t1, "read_only") - read_only, 1, "{mode:?}");
    }
}
