//! `limit`: a tenant's own connection limit, kept in the registry (see `TenantLimits`).

use serde_json::json;
use tenant_schemas::SchemaName;

use crate::connect::Context;
use crate::error::CliResult;
use crate::output::Output;

pub(crate) async fn run(
    ctx: &Context,
    out: Output,
    schema: &SchemaName,
    limit: Option<u32>,
) -> CliResult {
    let before = ctx.tenancy.registry().get(schema).await?.max_connections;
    ctx.tenancy.set_max_connections(schema, limit).await?;
    let words = |l: Option<u32>| l.map_or_else(|| "none".to_owned(), |n| n.to_string());
    out.print(
        &format!(
            "{schema}: max connections {} -> {}",
            words(before),
            words(limit)
        ),
        &json!({"schema": schema.as_str(), "from": before, "to": limit}),
    );
    Ok(())
}
