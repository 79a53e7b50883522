//! How `status` and `migrate --dry-run` word what the core reads
//! ([`Tenancy::migration_status`](tenant_schemas::Tenancy::migration_status),
//! [`Tenancy::migrate_dry_run`](tenant_schemas::Tenancy::migrate_dry_run)): the core's
//! sentence for each drift, with the option that helps where there is one.

use serde_json::{json, Value};
use tenant_schemas::Drift;

/// The drift in words, e.g. `schema missing on database default`.
pub(crate) fn words(drift: &Drift) -> String {
    match drift {
        Drift::UnknownShard { shard } => format!("{drift} (pass --shard {shard}=URL)"),
        _ => drift.to_string(),
    }
}

/// As JSON: `{"kind": …, "message": …}`.
pub(crate) fn json(drift: &Drift) -> Value {
    json!({"kind": drift.kind(), "message": words(drift)})
}

/// Every drift in words, `; `-separated.
pub(crate) fn all_words(drift: &[Drift]) -> String {
    drift.iter().map(words).collect::<Vec<_>>().join("; ")
}
