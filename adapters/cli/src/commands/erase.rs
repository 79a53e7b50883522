//! `erase`: a tenant's schema, rows, registry row and domains, with a receipt.

use std::time::UNIX_EPOCH;

use serde_json::json;
use tenant_schemas::{EraseOptions, SchemaName};

use crate::connect::Context;
use crate::error::{with_cascade, CliResult};
use crate::output::{table, Output};

pub(crate) async fn run(
    ctx: &Context,
    out: Output,
    schema: &SchemaName,
    export_checksum: Option<String>,
    cascade: bool,
) -> CliResult {
    let mut options = EraseOptions::default().with_dependents(cascade);
    options.export_checksum = export_checksum;
    let r = ctx
        .tenancy
        .erase_tenant_with(schema, options)
        .await
        .map_err(with_cascade)?;
    let rows: Vec<Vec<String>> = r
        .tables
        .iter()
        .map(|t| vec![t.table.clone(), t.rows.to_string()])
        .collect();
    let erased_at = r
        .erased_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let text = format!(
        "erased {schema} (tenant id {id}, \"{name}\", domains: {domains}) in {ms} ms\n{}\n\
         {total} rows in {n} tables; export checksum: {checksum}\n\
         purge its keys under {key} and its files under {path} in the stores that hold them",
        table(&["TABLE", "ROWS"], &rows),
        id = r.tenant.id,
        name = r.tenant.name,
        domains = if r.tenant.domains.is_empty() {
            "none".to_owned()
        } else {
            r.tenant.domains.join(", ")
        },
        ms = r.took.as_millis(),
        total = r.rows(),
        n = r.tables.len(),
        checksum = r.export_checksum.as_deref().unwrap_or("none given"),
        key = r.key_prefix,
        path = r.path_prefix,
    );
    out.print(
        &text,
        &json!({
            "erased": schema.as_str(),
            "tenant_id": r.tenant.id,
            "name": r.tenant.name,
            "domains": r.tenant.domains,
            "shard": r.tenant.shard.as_str(),
            "tables": r.tables.iter().map(|t| json!({"table": t.table, "rows": t.rows})).collect::<Vec<_>>(),
            "rows": r.rows(),
            "key_prefix": r.key_prefix,
            "path_prefix": r.path_prefix,
            "erased_at_unix": erased_at,
            "took_ms": u64::try_from(r.took.as_millis()).unwrap_or(u64::MAX),
            "export_checksum": r.export_checksum,
        }),
    );
    Ok(())
}
