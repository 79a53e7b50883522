//! `usage` and `quota`: what tenants' schemas hold, and their storage quotas.

use std::time::Duration;

use serde_json::json;
use tenant_schemas::SchemaName;

use crate::connect::Context;
use crate::error::CliResult;
use crate::output::{count, table, Output};

pub(crate) async fn run(ctx: &Context, out: Output, enforce: bool) -> CliResult {
    let made = if enforce {
        ctx.tenancy.enforce_quotas().await?
    } else {
        Vec::new()
    };
    let usage = ctx.tenancy.usage(Duration::ZERO).await?;
    let rows: Vec<Vec<String>> = usage
        .iter()
        .map(|u| {
            vec![
                u.schema.to_string(),
                u.shard.to_string(),
                u.status.to_string(),
                u.bytes.to_string(),
                u.tables.to_string(),
                u.storage_quota
                    .map_or_else(|| "-".to_owned(), |q| q.to_string()),
                if u.over_quota() { "OVER" } else { "" }.to_owned(),
            ]
        })
        .collect();
    let total: u64 = usage.iter().map(|u| u.bytes).sum();
    let over = usage.iter().filter(|u| u.over_quota()).count();
    let mut text = format!(
        "{}\n{}: {total} bytes, {over} over quota",
        table(
            &["SCHEMA", "SHARD", "STATE", "BYTES", "TABLES", "QUOTA", ""],
            &rows
        ),
        count(usage.len(), "tenant"),
    );
    for u in &made {
        text.push_str(&format!(
            "\nmade {} read-only: {} bytes over a quota of {}",
            u.schema,
            u.bytes,
            u.storage_quota.unwrap_or(0)
        ));
    }
    out.print(
        &text,
        &json!({
            "tenants": usage.iter().map(|u| json!({
                "schema": u.schema.as_str(),
                "shard": u.shard.as_str(),
                "status": u.status.as_str(),
                "bytes": u.bytes,
                "tables": u.tables,
                "storage_quota": u.storage_quota,
                "over_quota": u.over_quota(),
            })).collect::<Vec<_>>(),
            "bytes": total,
            "over_quota": over,
            "made_read_only": made.iter().map(|u| u.schema.as_str()).collect::<Vec<_>>(),
        }),
    );
    Ok(())
}

pub(crate) async fn quota(
    ctx: &Context,
    out: Output,
    schema: &SchemaName,
    bytes: Option<u64>,
) -> CliResult {
    let before = ctx.tenancy.registry().get(schema).await?.storage_quota;
    ctx.tenancy.set_storage_quota(schema, bytes).await?;
    let words = |q: Option<u64>| q.map_or_else(|| "none".to_owned(), |b| format!("{b} bytes"));
    out.print(
        &format!(
            "{schema}: storage quota {} -> {}",
            words(before),
            words(bytes)
        ),
        &json!({"schema": schema.as_str(), "from": before, "to": bytes}),
    );
    Ok(())
}
