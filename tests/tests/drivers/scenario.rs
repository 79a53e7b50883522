//! One isolation scenario, written once against [`Driver`] and run for every driver.
//!
//! Two tenants and `public`, each with a `marker` table naming its schema (`PUBLIC` in
//! public, so a fall-through reads as a wrong answer, not an error). Then: plain reads;
//! session-changing SQL sent through a tenant's connection (`SET search_path`, `RESET ALL`,
//! `DISCARD ALL`, `set_config`, a `BEGIN` left open, a temporary `marker`), followed by
//! reads on the same pool; concurrent reads whose futures are dropped mid-query; and a
//! dropped schema, which must be an error, never `public`'s rows.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tenant_schemas::SchemaName;

/// What an error looks like to the scenario: whether it is the driver's "schema missing",
/// and its text.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) schema_missing: bool,
    #[allow(dead_code)] // shown by Debug in failures
    pub(crate) text: String,
}

pub(crate) type Answer = Result<String, Failure>;

/// A way of reaching a tenant's schema: the core's router, sqlx, …
pub(crate) trait Driver: Clone + Send + Sync + 'static {
    /// The `marker` row a fresh connection for `schema` reads.
    fn read_marker(&self, schema: &SchemaName) -> impl Future<Output = Answer> + Send;
    /// The same, inside a transaction bound to `schema`.
    fn read_marker_in_transaction(
        &self,
        schema: &SchemaName,
    ) -> impl Future<Output = Answer> + Send;
    /// A read that takes a few milliseconds on the server (`pg_sleep`), to be cancelled.
    fn slow_read_marker(&self, schema: &SchemaName) -> impl Future<Output = Answer> + Send;
    /// Sends `sql` through a connection bound to `schema` (ignoring its result), then reads
    /// the marker on that same connection; returns nothing about that read, since SQL that
    /// changes the session may move the rest of its own connection. The connection is then
    /// given back.
    fn misuse(&self, schema: &SchemaName, sql: &str) -> impl Future<Output = ()> + Send;
}

/// The SQL a careless handler sends through its connection, pointing at `other`.
pub(crate) fn misuses(other: &SchemaName) -> Vec<String> {
    vec![
        format!("SET search_path TO {}, public", other.quoted()),
        "RESET search_path".into(),
        "RESET ALL".into(),
        "DISCARD ALL".into(),
        format!(
            "SELECT set_config('search_path', '{}', false)",
            other.quoted()
        ),
        "SET search_path TO public".into(),
        "BEGIN".into(),
        "BEGIN; SET LOCAL search_path TO public".into(),
        "BEGIN; SELECT 1/0".into(),
        "CREATE TEMP TABLE marker AS SELECT 'TEMP'::text AS schema_name".into(),
    ]
}

fn expect(label: &str, answer: Answer, want: &str) {
    match answer {
        Ok(got) => assert_eq!(got, want, "{label}: wrong marker"),
        Err(e) => panic!("{label}: {e:?}"),
    }
}

/// Runs the scenario: `a` and `b` are tenants with their markers, `public` holds `PUBLIC`;
/// `drop_schema` drops `b`'s schema (behind the driver's back where it checks every time). The pool
/// under `driver` should be small (a few connections), so connections are reused.
pub(crate) async fn run<D: Driver, F: Future<Output = ()>>(
    driver: D,
    a: &SchemaName,
    b: &SchemaName,
    drop_schema: impl FnOnce() -> F,
) {
    let public = SchemaName::public();
    // Plain reads.
    for _ in 0..3 {
        expect("read a", driver.read_marker(a).await, a.as_str());
        expect("read b", driver.read_marker(b).await, b.as_str());
        expect("read public", driver.read_marker(&public).await, "PUBLIC");
        expect(
            "transaction a",
            driver.read_marker_in_transaction(a).await,
            a.as_str(),
        );
    }

    // Session-changing SQL through a's connection cannot move the next checkouts.
    for sql in misuses(b) {
        driver.misuse(a, &sql).await;
        for round in 0..6 {
            expect(
                &format!("after `{sql}`, read a ({round})"),
                driver.read_marker(a).await,
                a.as_str(),
            );
            expect(
                &format!("after `{sql}`, read b ({round})"),
                driver.read_marker(b).await,
                b.as_str(),
            );
            expect(
                &format!("after `{sql}`, transaction a ({round})"),
                driver.read_marker_in_transaction(a).await,
                a.as_str(),
            );
        }
    }

    // Concurrent reads, a third of them cancelled mid-flight.
    let wrong = Arc::new(AtomicU64::new(0));
    let cancelled = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let (driver, a, b, wrong, cancelled) = (
            driver.clone(),
            a.clone(),
            b.clone(),
            wrong.clone(),
            cancelled.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(t);
            for _ in 0..40 {
                let schema = if rng.random_bool(0.5) { &a } else { &b };
                let kind = rng.random_range(0..4);
                let work = async {
                    match kind {
                        0 => driver.slow_read_marker(schema).await,
                        1 => driver.read_marker_in_transaction(schema).await,
                        _ => driver.read_marker(schema).await,
                    }
                };
                let limit = Duration::from_micros(rng.random_range(0..3000));
                let answer = if rng.random_bool(0.33) {
                    match tokio::time::timeout(limit, work).await {
                        Ok(answer) => answer,
                        Err(_) => {
                            cancelled.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                } else {
                    work.await
                };
                match answer {
                    Ok(got) if got == schema.as_str() => {}
                    other => {
                        eprintln!("asked {schema}, got {other:?}");
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(wrong.load(Ordering::Relaxed), 0, "wrong or failed answers");
    assert!(
        cancelled.load(Ordering::Relaxed) > 0,
        "nothing was cancelled"
    );
    // And afterwards, every connection still answers for its own tenant.
    for _ in 0..6 {
        expect(
            "read a after cancellations",
            driver.read_marker(a).await,
            a.as_str(),
        );
        expect(
            "read b after cancellations",
            driver.read_marker(b).await,
            b.as_str(),
        );
    }

    // A schema dropped behind the library's back: an error, never public's rows.
    drop_schema().await;
    for _ in 0..6 {
        for answer in [
            driver.read_marker(b).await,
            driver.read_marker_in_transaction(b).await,
        ] {
            match answer {
                Err(e) if e.schema_missing => {}
                other => panic!("a dropped schema must be SchemaMissing, got {other:?}"),
            }
        }
        expect(
            "read a beside a dropped schema",
            driver.read_marker(a).await,
            a.as_str(),
        );
    }
}
