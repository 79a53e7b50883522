//! `doctor`: the registry checked against the schemas (only reads); `--fix` repairs what is
//! safe.

use serde_json::{json, Value};
use tenant_schemas::Finding;

use crate::connect::Context;
use crate::error::{CliError, CliResult};
use crate::output::Output;

pub(crate) async fn run(ctx: &Context, out: Output, fix: bool) -> CliResult {
    let report = ctx.tenancy.doctor(fix).await?;
    let mut lines: Vec<String> = report
        .findings
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                if report.repaired.contains(f) {
                    "repaired"
                } else {
                    "found   "
                },
                describe(f)
            )
        })
        .collect();
    for (f, e) in &report.repair_failures {
        lines.push(format!("repair failed for {}: {e}", describe(f)));
    }
    if lines.is_empty() {
        lines.push("no problems found".into());
    }
    let findings: Vec<Value> = report
        .findings
        .iter()
        .map(|f| json!({"finding": describe(f), "repaired": report.repaired.contains(f)}))
        .collect();
    out.print(
        &lines.join("\n"),
        &json!({"healthy": report.is_healthy(), "findings": findings}),
    );
    if report.is_healthy() {
        Ok(())
    } else {
        Err(CliError::Failed(None))
    }
}

/// One finding in words.
fn describe(f: &Finding) -> String {
    match f {
        Finding::OrphanSchema { name } => {
            format!("schema {name} has no registry row (not repaired: it may hold data)")
        }
        Finding::MissingSchema { schema } => format!("tenant {schema} has no schema"),
        Finding::Behind {
            schema,
            version,
            latest,
        } => format!("tenant {schema} is at version {version} of {latest}"),
        Finding::Ahead {
            schema,
            version,
            latest,
        } => format!("tenant {schema} is at version {version}, ahead of {latest}"),
        Finding::InvalidName { name, reason } => {
            format!("registry name {name} is invalid: {reason}")
        }
        Finding::TableInPublic { schema, table } => format!(
            "tenant {schema} has a table {table} like public.{table} \
             (not repaired: rename one, or declare it shared)"
        ),
        Finding::SchemaNamedAfterRole { schema } => {
            format!("tenant {schema} is named like a database role (\"$user\" resolves to it)")
        }
        Finding::InvalidIndex { schema, index } => format!(
            "tenant {schema} has an invalid index {index} (a failed concurrent build; \
             --fix drops it and migrates a tenant behind, rebuilds it otherwise)"
        ),
        _ => format!("{f:?}"),
    }
}
