//! `delete`: a tenant's registry rows, and its schema with `--drop-schema` (and the objects
//! outside it that depend on it with `--cascade`).

use serde_json::json;
use tenant_schemas::{DropSchema, SchemaName};

use crate::connect::Context;
use crate::error::{with_cascade, CliResult};
use crate::output::Output;

pub(crate) async fn run(
    ctx: &Context,
    out: Output,
    schema: &SchemaName,
    drop_schema: bool,
    cascade: bool,
) -> CliResult {
    let drop = match (drop_schema, cascade) {
        (true, true) => DropSchema::WithDependents,
        (true, false) => DropSchema::Yes,
        (false, _) => DropSchema::No,
    };
    let r = ctx
        .tenancy
        .delete_tenant(schema, drop)
        .await
        .map_err(with_cascade)?;
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
