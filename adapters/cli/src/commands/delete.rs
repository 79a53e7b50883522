//! `delete`: a tenant's registry rows, and its schema with `--drop-schema`.

use serde_json::json;
use tenant_schemas::{DropSchema, SchemaName};

use crate::connect::Context;
use crate::error::CliResult;
use crate::output::Output;

pub(crate) async fn run(
    ctx: &Context,
    out: Output,
    schema: &SchemaName,
    drop_schema: bool,
) -> CliResult {
    let drop = if drop_schema {
        DropSchema::Yes
    } else {
        DropSchema::No
    };
    let r = ctx.tenancy.delete_tenant(schema, drop).await?;
    out.print(
        &format!(
            "deleted {}{}",
            r.schema,
            if drop_schema { " and its schema" } else { "" }
        ),
        &json!({"deleted": r.schema.as_str(), "schema_dropped": drop_schema}),
    );
    Ok(())
}
