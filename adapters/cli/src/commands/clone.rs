//! `clone`: a new tenant as a copy of another, rows included.

use tenant_schemas::Tenancy;

use crate::args::{new_tenant, schema};
use crate::output::{record_json, Output};
use crate::BoxError;

pub(crate) async fn run(
    tenancy: &Tenancy,
    out: Output,
    source: &str,
    new_schema: &str,
    name: Option<String>,
    domains: &[String],
) -> Result<(), BoxError> {
    let new = new_tenant(new_schema, name, domains)?;
    let r = tenancy.clone_tenant(&schema(source)?, new).await?;
    out.print(
        &format!("cloned {source} into {}", r.schema),
        &record_json(&r),
    );
    Ok(())
}
