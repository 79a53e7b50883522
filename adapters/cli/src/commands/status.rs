//! `status`: per schema, its version against the newest, the pending migrations, and drift.
//! Only reads.

use serde_json::json;
use tenant_schemas::{Drift, SchemaName};

use crate::connect::Context;
use crate::error::{CliError, CliResult};
use crate::inspect;
use crate::output::{count, table, Output};

pub(crate) async fn run(ctx: &Context, out: Output, schemas: &[SchemaName]) -> CliResult {
    crate::commands::known_tenants(ctx, schemas).await?;
    let states = ctx.tenancy.migration_status(schemas, false).await?;
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = states
        .iter()
        .map(|s| {
            vec![
                s.schema.to_string(),
                s.shard.to_string(),
                s.applied.map_or_else(dash, |v| v.to_string()),
                s.latest.to_string(),
                if s.applied.is_some() {
                    s.pending.len().to_string()
                } else {
                    dash()
                },
                inspect::all_words(&s.drift),
            ]
        })
        .collect();
    let behind = states
        .iter()
        .filter(|s| s.applied.is_some() && !s.pending.is_empty())
        .count();
    let drifting = states.iter().filter(|s| !s.drift.is_empty()).count();
    // Schemas newer code migrated: this binary's migrations are older than the registry's.
    let ahead: Vec<(i32, i32)> = states
        .iter()
        .filter(|s| !s.schema.is_public())
        .flat_map(|s| &s.drift)
        .filter_map(|d| match d {
            Drift::Ahead { version, latest } => Some((*version, *latest)),
            _ => None,
        })
        .collect();
    let mut text = if states.is_empty() {
        "no tenants, and no shared migrations".to_owned()
    } else {
        format!(
            "{}\n{}: {behind} behind, {drifting} with drift",
            table(
                &["SCHEMA", "SHARD", "VERSION", "LATEST", "PENDING", "DRIFT"],
                &rows
            ),
            count(states.len(), "schema"),
        )
    };
    if let Some(&(newest, latest)) = ahead.iter().max() {
        text.push_str(&format!(
            "\nthese tenant migrations end at version {latest}, but {} newer code \
             migrated (up to version {newest}): `create` is refused until it runs with the \
             newer migrations (--migrations DIR)",
            count(ahead.len(), "tenant"),
        ));
    }
    let json_rows: Vec<_> = states
        .iter()
        .map(|s| {
            json!({
                "schema": s.schema.as_str(),
                "shard": s.shard.as_str(),
                "version": s.applied,
                "registry_version": s.registry,
                "latest": s.latest,
                "pending": s.pending_files(),
                "drift": s.drift.iter().map(inspect::json).collect::<Vec<_>>(),
            })
        })
        .collect();
    out.print(
        &text,
        &json!({
            "behind": behind,
            "drift": drifting,
            "ahead": ahead.len(),
            "schemas": json_rows,
        }),
    );
    if drifting > 0 {
        Err(CliError::Failed(None))
    } else {
        Ok(())
    }
}
