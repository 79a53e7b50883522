//! `rename-schema`: a tenant moved to another schema name, through the one door (hooks,
//! caches, other instances).

use serde_json::json;
use tenant_schemas::SchemaName;

use crate::connect::Context;
use crate::error::CliResult;
use crate::output::Output;

pub(crate) async fn run(
    ctx: &Context,
    out: Output,
    old: &SchemaName,
    new: &SchemaName,
) -> CliResult {
    let record = ctx.tenancy.rename_schema(old, new).await?;
    out.print(
        &format!(
            "renamed schema {old} to {new} (tenant {}, domains: {})",
            record.name,
            if record.domains.is_empty() {
                "none".to_owned()
            } else {
                record.domains.join(", ")
            }
        ),
        &json!({"from": old.as_str(), "to": new.as_str(), "name": record.name, "domains": record.domains}),
    );
    Ok(())
}
