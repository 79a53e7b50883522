//! `migrate --baseline V`: records the tenant migrations up to V as applied in schemas that
//! already hold them, and runs nothing.

use serde_json::{json, Value};

use crate::args::Selection;
use crate::commands::known_tenants;
use crate::connect::Context;
use crate::error::{CliError, CliResult};
use crate::output::{count, Output};

pub(crate) async fn run(ctx: &Context, out: Output, sel: &Selection, version: i32) -> CliResult {
    known_tenants(ctx, &sel.schemas).await?;
    // The public schema has no tenant migrations to record.
    let schemas: Vec<_> = sel
        .schemas
        .iter()
        .filter(|s| !s.is_public())
        .cloned()
        .collect();
    if !sel.schemas.is_empty() && schemas.is_empty() {
        return Err(CliError::failed(
            "nothing to baseline: public has no tenant migrations",
        ));
    }
    let done = ctx.tenancy.baseline(&schemas, version).await?;
    let mut lines = Vec::new();
    let mut rows: Vec<Value> = Vec::new();
    let mut recorded = 0;
    for b in &done {
        if b.from == b.to {
            lines.push(format!("{}: already at version {}", b.schema, b.to));
        } else {
            recorded += 1;
            lines.push(format!(
                "{}: recorded versions {} to {} as applied (nothing run)",
                b.schema,
                b.from + 1,
                b.to
            ));
        }
        rows.push(json!({"schema": b.schema.as_str(), "shard": b.shard.as_str(), "from": b.from, "to": b.to}));
    }
    lines.push(format!(
        "baseline {version}: {} recorded, {} already there; `tenant-schemas migrate` runs the migrations after it",
        count(recorded, "schema"),
        done.len() - recorded
    ));
    out.print(
        &lines.join("\n"),
        &json!({"baseline": version, "recorded": recorded, "schemas": rows}),
    );
    Ok(())
}
