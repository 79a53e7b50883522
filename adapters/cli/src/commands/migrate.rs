//! `migrate`: shared migrations in public, then every tenant to the latest version.

use std::process::ExitCode;

use serde_json::{json, Value};
use tenant_schemas::{Outcome, Tenancy};

use crate::args::Selection;
use crate::output::{exit_code, Output};
use crate::BoxError;

pub(crate) async fn run(
    tenancy: &Tenancy,
    out: Output,
    sel: &Selection,
) -> Result<ExitCode, BoxError> {
    let (progress, bar) = out.progress_bar();
    let report = tenancy.migrate(&sel.options()?, progress).await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let failed: Vec<_> = report.failures().collect();
    let migrated = report
        .schemas
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Migrated { .. }))
        .count();
    let rows: Vec<Value> = report
        .schemas
        .iter()
        .map(|r| match &r.outcome {
            Outcome::Migrated { from, to } => json!({"schema": r.schema.as_str(), "outcome": "migrated", "from": from, "to": to}),
            Outcome::UpToDate { version } => json!({"schema": r.schema.as_str(), "outcome": "up_to_date", "version": version}),
            Outcome::Failed { version, error } => json!({"schema": r.schema.as_str(), "outcome": "failed", "version": version, "error": error}),
            _ => json!({"schema": r.schema.as_str(), "outcome": "other"}),
        })
        .collect();
    let mut text = format!(
        "migrated {migrated}, up to date {}, failed {} in {:.2} s",
        report.up_to_date + report.schemas.len() - migrated - failed.len(),
        failed.len(),
        report.elapsed.as_secs_f64()
    );
    for f in &failed {
        if let Outcome::Failed { version, error } = &f.outcome {
            text.push_str(&format!(
                "\nFAILED {} (stays at version {version}): {error}",
                f.schema
            ));
        }
    }
    out.print(
        &text,
        &json!({"migrated": migrated, "up_to_date": report.up_to_date, "failed": failed.len(),
               "elapsed_ms": report.elapsed.as_millis() as u64, "schemas": rows}),
    );
    Ok(exit_code(failed.is_empty()))
}
