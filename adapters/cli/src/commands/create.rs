//! `create`: a tenant's schema, migrations and registry rows in one transaction.

use tenant_schemas::Tenancy;

use crate::args::new_tenant;
use crate::output::{record_json, Output};
use crate::BoxError;

pub(crate) async fn run(
    tenancy: &Tenancy,
    out: Output,
    schema: &str,
    name: Option<String>,
    domains: &[String],
) -> Result<(), BoxError> {
    let r = tenancy
        .create_tenant(new_tenant(schema, name, domains)?)
        .await?;
    out.print(
        &format!("created {} (version {})", r.schema, r.version),
        &record_json(&r),
    );
    Ok(())
}
