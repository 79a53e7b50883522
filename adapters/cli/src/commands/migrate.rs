//! `migrate`: shared migrations in public, then every tenant to the latest version;
//! `--dry-run` lists what that would run, and writes nothing.

use serde_json::{json, Value};
use tenant_schemas::{Outcome, SchemaName};

use crate::args::{Rollout, Selection};
use crate::commands::known_tenants;
use crate::connect::Context;
use crate::error::{CliError, CliResult};
use crate::inspect;
use crate::output::{count, Output};

pub(crate) async fn run(
    ctx: &Context,
    out: Output,
    sel: &Selection,
    rollout: &Rollout,
) -> CliResult {
    check_selection(ctx, sel).await?;
    known_tenants(ctx, &rollout.canary).await?;
    let (progress, bar) = out.progress_bar();
    let report = ctx
        .tenancy
        .migrate(&rollout.apply(sel.options()), progress)
        .await?;
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
        .map(|r| {
            let (schema, shard) = (r.schema.as_str(), r.shard.as_str());
            match &r.outcome {
                Outcome::Migrated { from, to } => json!({"schema": schema, "shard": shard, "outcome": "migrated", "from": from, "to": to}),
                Outcome::UpToDate { version } => json!({"schema": schema, "shard": shard, "outcome": "up_to_date", "version": version}),
                Outcome::Failed { version, error } => json!({"schema": schema, "shard": shard, "outcome": "failed", "version": version, "error": error}),
                _ => json!({"schema": schema, "shard": shard, "outcome": "other"}),
            }
        })
        .collect();
    let mut text = format!(
        "migrated {migrated}, up to date {}, failed {} in {:.2} s",
        report.up_to_date + report.schemas.len() - migrated - failed.len(),
        failed.len(),
        report.elapsed.as_secs_f64()
    );
    if report.deferred > 0 {
        text.push_str(&format!(
            "; {} behind left for a later run",
            count(report.deferred, "tenant")
        ));
    }
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
               "deferred": report.deferred,
               "elapsed_ms": report.elapsed.as_millis() as u64, "schemas": rows}),
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(None))
    }
}

/// Lists, per schema, the migrations `migrate` would run: the shared ones in `public` of
/// each database, and for each tenant the registry says is behind, those its history lacks.
/// Only reads.
pub(crate) async fn dry_run(ctx: &Context, out: Output, sel: &Selection) -> CliResult {
    check_selection(ctx, sel).await?;
    let plan = ctx.tenancy.migrate_dry_run(&sel.options()).await?;
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    let (mut schemas, mut migrations, mut blocked) = (0, 0, 0);
    let mut up_to_date = plan.up_to_date;
    for s in &plan.schemas {
        let pending = s.pending_files();
        let problems = inspect::all_words(&s.drift);
        let fails = s.would_fail();
        let label = if s.schema.is_public() {
            format!("public ({})", s.shard)
        } else {
            s.schema.to_string()
        };
        if fails {
            blocked += 1;
            lines.push(format!("{label}: would fail: {problems}"));
        } else if pending.is_empty() {
            up_to_date += 1;
            if !problems.is_empty() {
                lines.push(format!(
                    "{label}: nothing to run, but {problems} (see `status`)"
                ));
            }
        } else {
            schemas += 1;
            migrations += pending.len();
            lines.push(format!(
                "{label}: {} pending: {}",
                pending.len(),
                pending.join(", ")
            ));
        }
        rows.push(json!({
            "schema": s.schema.as_str(),
            "shard": s.shard.as_str(),
            "registry_version": s.registry,
            "version": s.applied,
            "latest": s.latest,
            "pending": pending,
            "would_fail": fails,
            "drift": s.drift.iter().map(inspect::json).collect::<Vec<_>>(),
        }));
    }
    lines.push(format!(
        "would run {} in {}; {} up to date{}; nothing was written (dry run)",
        count(migrations, "migration"),
        count(schemas, "schema"),
        up_to_date,
        if blocked > 0 {
            format!("; {blocked} would fail")
        } else {
            String::new()
        }
    ));
    out.print(
        &lines.join("\n"),
        &json!({"dry_run": true, "pending_migrations": migrations, "schemas_to_migrate": schemas,
                "up_to_date": up_to_date, "would_fail": blocked, "schemas": rows}),
    );
    if blocked > 0 {
        Err(CliError::Failed(None))
    } else {
        Ok(())
    }
}

/// Refuses a `--schema` the registry does not have, and a selection of nothing.
async fn check_selection(ctx: &Context, sel: &Selection) -> CliResult {
    let tenants = known_tenants(ctx, &sel.schemas).await?;
    let any_tenant = tenants.iter().any(|t| {
        !t.schema.is_public() && (sel.schemas.is_empty() || sel.schemas.contains(&t.schema))
    });
    let public =
        !sel.skip_public && (sel.schemas.is_empty() || sel.schemas.contains(&SchemaName::public()));
    if !any_tenant && !public {
        return Err(CliError::failed(if sel.schemas.is_empty() {
            "nothing to migrate: the registry has no tenants, and --skip-public leaves public out"
                .to_owned()
        } else {
            "nothing to migrate: --skip-public leaves out the only schema selected (public)"
                .to_owned()
        }));
    }
    Ok(())
}
