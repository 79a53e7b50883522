//! `delete`: a tenant's registry rows, and its schema with `--drop-schema`.

use serde_json::json;
use tenant_schemas::{DropSchema, Tenancy};

use crate::args::schema;
use crate::output::Output;
use crate::BoxError;

pub(crate) async fn run(
    tenancy: &Tenancy,
    out: Output,
    name: &str,
    drop_schema: bool,
) -> Result<(), BoxError> {
    let drop = if drop_schema {
        DropSchema::Yes
    } else {
        DropSchema::No
    };
    let r = tenancy.delete_tenant(&schema(name)?, drop).await?;
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
