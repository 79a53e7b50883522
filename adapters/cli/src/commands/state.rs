//! `state`: a tenant's state, changed through the one door (hooks, caches, other instances).

use serde_json::json;
use tenant_schemas::{SchemaName, TenantStatus};

use crate::connect::Context;
use crate::error::CliResult;
use crate::output::Output;

pub(crate) async fn run(
    ctx: &Context,
    out: Output,
    schema: &SchemaName,
    state: TenantStatus,
) -> CliResult {
    let before = ctx.tenancy.registry().get(schema).await?.status;
    ctx.tenancy.set_status(schema, state).await?;
    out.print(
        &if before == state {
            format!("{schema} was {state} already")
        } else {
            format!("{schema}: {before} -> {state}")
        },
        &json!({"schema": schema.as_str(), "from": before.as_str(), "to": state.as_str()}),
    );
    Ok(())
}
