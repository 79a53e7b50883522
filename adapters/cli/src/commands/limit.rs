//! `limit`: a tenant's own connection limit and statement timeout, kept in the registry (see
//! `TenantLimits`).

use std::time::Duration;

use serde_json::json;
use tenant_schemas::SchemaName;

use crate::connect::Context;
use crate::error::CliResult;
use crate::output::Output;

/// Sets what is given: `connections` (`Some(None)` clears the limit) and `timeout_ms`
/// (`Some(None)` clears the timeout).
pub(crate) async fn run(
    ctx: &Context,
    out: Output,
    schema: &SchemaName,
    connections: Option<Option<u32>>,
    timeout_ms: Option<Option<u32>>,
) -> CliResult {
    let before = ctx.tenancy.registry().get(schema).await?;
    let words = |l: Option<u64>| l.map_or_else(|| "none".to_owned(), |n| n.to_string());
    let mut lines = Vec::new();
    let mut doc = json!({"schema": schema.as_str()});
    if let Some(limit) = connections {
        ctx.tenancy.set_max_connections(schema, limit).await?;
        lines.push(format!(
            "{schema}: max connections {} -> {}",
            words(before.max_connections.map(u64::from)),
            words(limit.map(u64::from))
        ));
        doc["from"] = json!(before.max_connections);
        doc["to"] = json!(limit);
    }
    if let Some(ms) = timeout_ms {
        let timeout = ms.map(|ms| Duration::from_millis(u64::from(ms)));
        ctx.tenancy.set_statement_timeout(schema, timeout).await?;
        let was = before
            .statement_timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        lines.push(format!(
            "{schema}: statement timeout (ms) {} -> {}",
            words(was),
            words(ms.map(u64::from))
        ));
        doc["statement_timeout_ms"] = json!({"from": was, "to": ms});
    }
    out.print(&lines.join("\n"), &doc);
    Ok(())
}
