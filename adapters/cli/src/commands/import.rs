//! `import`: registers schemas that exist already as tenants (from a query or from
//! django-tenants' tables), with their domains and a baseline; their data is not touched.

use serde_json::{json, Value};

use crate::args::ImportArgs;
use crate::connect::Context;
use crate::error::{describe, CliError, CliResult};
use crate::output::{count, record_json, Output};

pub(crate) async fn run(ctx: &Context, out: Output, args: &ImportArgs, baseline: i32) -> CliResult {
    if args.declare_django_tables {
        ctx.tenancy
            .declare_shared_names(super::shared_names::DJANGO_TABLES.iter().copied())
            .await?;
    }
    let records = ctx.tenancy.import_from(&args.source(), baseline).await?;
    let mut lines: Vec<String> = records
        .iter()
        .map(|r| {
            let domains = if r.domains.is_empty() {
                "no domain".to_owned()
            } else {
                r.domains.join(", ")
            };
            format!(
                "imported {} ({}): version {}, {domains}",
                r.schema, r.name, r.version
            )
        })
        .collect();
    lines.push(format!(
        "imported {} (baseline {baseline}); `tenant-schemas migrate` runs the migrations after it",
        count(records.len(), "tenant")
    ));
    let rows: Vec<Value> = records.iter().map(record_json).collect();
    out.print(
        &lines.join("\n"),
        &json!({"imported": rows, "baseline": baseline}),
    );
    Ok(())
}

/// `import --dry-run`: the tenants, and every problem at once (nothing is written).
pub(crate) async fn dry_run(
    ctx: &Context,
    out: Output,
    args: &ImportArgs,
    baseline: i32,
) -> CliResult {
    if args.declare_django_tables {
        return Err(CliError::failed(
            "--declare-django-tables writes the registry: run it without --dry-run, or check \
             with --shared-name for each table",
        ));
    }
    let run = ctx.tenancy.import_dry_run(&args.source(), baseline).await?;
    let mut lines: Vec<String> = run
        .tenants
        .iter()
        .map(|t| format!("would import {}", t.schema()))
        .collect();
    for (schema, problem) in &run.problems {
        lines.push(format!("PROBLEM {schema}: {}", describe(problem)));
    }
    lines.push(format!(
        "{} to import, {}",
        count(run.tenants.len(), "tenant"),
        count(run.problems.len(), "problem")
    ));
    out.print(
        &lines.join("\n"),
        &json!({
            "tenants": run.tenants.iter().map(|t| t.schema().as_str()).collect::<Vec<_>>(),
            "problems": run.problems.iter().map(|(schema, e)| json!({
                "schema": schema,
                "kind": format!("{:?}", e.kind()),
                "message": describe(e),
            })).collect::<Vec<Value>>(),
            "baseline": baseline,
        }),
    );
    if run.problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(None))
    }
}
