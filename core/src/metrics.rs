//! Per-tenant checkout metrics through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`): install any exporter (Prometheus, OpenTelemetry, statsd …) and every
//! checkout of every door — the core's router, sqlx, SeaORM, jobs — is counted where the
//! one checkout admits it:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `tenant_schemas_checkouts_total` | counter | `tenant`, `outcome`: `ok`, `busy` ([`TenantBusy`](crate::Error::TenantBusy)), `not_served`, `missing` (schema or tenant gone), `error` |
//! | `tenant_schemas_checkout_wait_seconds` | histogram | `tenant`: the admission — the state read from the registry and the wait for a share of the pool under [`TenantLimits`](crate::TenantLimits) |
//! | `tenant_schemas_statements_total` | counter | `tenant`, `outcome`: `ok`, `cancelled` (`57014`: the tenant's `statement_timeout`, or a cancel), `read_only` (a write of a read-only tenant, refused by the server or the library), `refused` (not sent: SQL the mode does not allow), `error` |
//! | `tenant_schemas_statement_seconds` | histogram | `tenant`: a statement's latency as the application sees it (the switch included) |
//!
//! Statements are counted where the core's handles run them (`ConnectionScope`,
//! `TenantTransaction`, and so jobs and reports); a driver that hands out its own connection
//! (sqlx, SeaORM) runs its statements out of the library's sight: its checkouts are counted,
//! its statements are not.
//!
//! The number of series stays bounded at 10,000 tenants: the first
//! [`max_tenant_labels`](set_max_tenant_labels) tenants a process sees (100 by default) get a
//! `tenant` label of their own, every later one `tenant="other"`. A schema the registry has
//! no tenant in (a name a resolver made up from an attacker's host) never takes a label.
//! Statements of a schema with no label are counted under `other` too. `public` — the public
//! tenant (the main site) and the shared schema asked for by name
//! ([`SchemaRouter::public`](crate::SchemaRouter::public)) — always has the label `public`,
//! outside that limit.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use crate::error::Error;
use crate::schema::SchemaName;

static MAX_LABELS: AtomicUsize = AtomicUsize::new(100);
static LABELED: LazyLock<Mutex<HashSet<SchemaName>>> = LazyLock::new(Default::default);

/// How many tenants get a `tenant` label of their own in this process (the first ones
/// seen; the others are counted as `other`). Default 100; lowering it keeps the tenants
/// labelled already.
pub fn set_max_tenant_labels(n: usize) {
    MAX_LABELS.store(n, Ordering::Relaxed);
}

/// The `tenant` label of `schema`: its name, or `other` past the limit or (unless it may
/// `claim` one) when it has no label yet.
fn label(schema: &SchemaName, claim: bool) -> String {
    if schema.is_public() {
        // The public tenant and the shared schema asked for by name: one label, always.
        return "public".to_owned();
    }
    let mut labeled = LABELED.lock().unwrap_or_else(PoisonError::into_inner);
    if labeled.contains(schema) {
        return schema.to_string();
    }
    if claim && labeled.len() < MAX_LABELS.load(Ordering::Relaxed) {
        labeled.insert(schema.clone());
        return schema.to_string();
    }
    "other".to_owned()
}

/// Records one statement of `schema` that took `took` and ended as `outcome` says.
pub(crate) fn statement<T>(schema: &SchemaName, took: Duration, outcome: &Result<T, Error>) {
    let outcome = match outcome {
        Ok(_) => "ok",
        Err(Error::Database { source, .. })
            if source.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) =>
        {
            "cancelled"
        }
        Err(Error::TenantReadOnly { .. }) => "read_only",
        Err(
            Error::Refused { .. }
            | Error::NotInTransactionMode { .. }
            | Error::LeavesTenantRole { .. },
        ) => "refused",
        Err(_) => "error",
    };
    let tenant = label(schema, false);
    metrics::counter!("tenant_schemas_statements_total", "tenant" => tenant.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("tenant_schemas_statement_seconds", "tenant" => tenant)
        .record(took.as_secs_f64());
}

/// Records one admission of `schema` that took `waited` and ended as `outcome` says; it
/// gets a label of its own only when it may `claim` one (a registered tenant).
pub(crate) fn checkout<T>(
    schema: &SchemaName,
    waited: Duration,
    outcome: &Result<T, Error>,
    claim: bool,
) {
    let outcome = match outcome {
        Ok(_) => "ok",
        Err(Error::TenantBusy { .. }) => "busy",
        Err(Error::TenantNotServed { .. }) => "not_served",
        Err(Error::SchemaMissing { .. } | Error::TenantGone { .. }) => "missing",
        Err(_) => "error",
    };
    let tenant = label(schema, claim);
    metrics::counter!("tenant_schemas_checkouts_total", "tenant" => tenant.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("tenant_schemas_checkout_wait_seconds", "tenant" => tenant)
        .record(waited.as_secs_f64());
}
