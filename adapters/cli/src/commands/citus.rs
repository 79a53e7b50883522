//! `move` and `rebalance`: where tenants live on a Citus cluster, changed with
//! `citus_schema_move` under the library's cut-over fence (`rebalance` runs the moves of
//! Citus' rebalance plan that way); and the node column of `list`.

use serde_json::json;
use tenant_schemas::{CitusNode, Placement, SchemaName, TransferMode};

use crate::connect::Context;
use crate::error::CliResult;
use crate::output::{table, Output};

/// `move SCHEMA --to HOST:PORT`.
pub(crate) async fn move_tenant(
    ctx: &Context,
    out: Output,
    schema: &SchemaName,
    to: &CitusNode,
    mode: TransferMode,
) -> CliResult {
    let report = ctx.tenancy.move_tenant(schema, to, mode).await?;
    let text = if report.moved {
        format!(
            "{schema}: {} -> {} in {:.1} s",
            report.from,
            report.to,
            report.took.as_secs_f64()
        )
    } else {
        format!("{schema} is on {} already", report.to)
    };
    out.print(
        &text,
        &json!({
            "schema": schema.as_str(),
            "from": report.from.to_string(),
            "to": report.to.to_string(),
            "moved": report.moved,
            "seconds": report.took.as_secs_f64(),
        }),
    );
    Ok(())
}

/// `rebalance`.
pub(crate) async fn rebalance(ctx: &Context, out: Output, mode: TransferMode) -> CliResult {
    let report = ctx.tenancy.rebalance(mode).await?;
    let text = if report.moved.is_empty() {
        "balanced already: nothing moved".to_owned()
    } else {
        let rows: Vec<Vec<String>> = report
            .moved
            .iter()
            .map(|(s, from, to)| vec![s.to_string(), from.to_string(), to.to_string()])
            .collect();
        format!(
            "{}\n{} moved in {:.1} s",
            table(&["SCHEMA", "FROM", "TO"], &rows),
            report.moved.len(),
            report.took.as_secs_f64()
        )
    };
    let moved: Vec<_> = report
        .moved
        .iter()
        .map(|(s, from, to)| {
            json!({"schema": s.as_str(), "from": from.to_string(), "to": to.to_string()})
        })
        .collect();
    out.print(
        &text,
        &json!({"moved": moved, "seconds": report.took.as_secs_f64()}),
    );
    Ok(())
}

/// Where each tenant lives, when the registry's database is a Citus coordinator; `None`
/// on plain PostgreSQL.
pub(crate) async fn placements(ctx: &Context) -> CliResult<Option<Vec<Placement>>> {
    let registry = ctx.tenancy.registry();
    if !registry.is_citus().await? {
        return Ok(None);
    }
    Ok(Some(registry.placements().await?))
}

/// The node column's cell for `schema`: `host:port`, `-` for a tenant on no node (no
/// tables, or not distributed).
pub(crate) fn node_of(placements: &[Placement], schema: &SchemaName) -> Option<String> {
    placements
        .iter()
        .find(|p| &p.schema == schema)
        .and_then(|p| p.node.as_ref())
        .map(ToString::to_string)
}
