//! `move SCHEMA --to-shard NAME`: a tenant moved to another database by logical
//! replication of its schema (`Tenancy::move_to_shard`).

use serde_json::json;
use tenant_schemas::{SchemaName, ShardName};

use crate::connect::Context;
use crate::error::CliResult;
use crate::output::Output;

/// `move SCHEMA --to-shard NAME`.
pub(crate) async fn run(ctx: &Context, out: Output, schema: &SchemaName, to: &str) -> CliResult {
    let report = ctx
        .tenancy
        .move_to_shard(schema, &ShardName::new(to))
        .await?;
    let text = if report.moved {
        format!(
            "{schema}: shard {} -> {}, {} rows in {:.1} s (writes held {} ms)",
            report.from,
            report.to,
            report.total_rows(),
            report.took.as_secs_f64(),
            report.writes_held.as_millis()
        )
    } else {
        format!("{schema} is on shard {} already", report.to)
    };
    let tables: Vec<_> = report
        .rows
        .iter()
        .map(|t| json!({"table": t.table, "rows": t.rows}))
        .collect();
    out.print(
        &text,
        &json!({
            "schema": schema.as_str(),
            "from": report.from.as_str(),
            "to": report.to.as_str(),
            "moved": report.moved,
            "rows": report.total_rows(),
            "tables": tables,
            "seconds": report.took.as_secs_f64(),
            "writes_held_ms": report.writes_held.as_secs_f64() * 1000.0,
        }),
    );
    Ok(())
}
