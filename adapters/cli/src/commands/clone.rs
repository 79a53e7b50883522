//! `clone`: a new tenant as a copy of another, rows included.

use tenant_schemas::{Host, SchemaName};

use crate::args::new_tenant;
use crate::connect::Context;
use crate::error::CliResult;
use crate::output::{record_json, Output};

pub(crate) async fn run(
    ctx: &Context,
    out: Output,
    source: &SchemaName,
    new_schema: &SchemaName,
    name: Option<String>,
    domains: &[Host],
) -> CliResult {
    let new = new_tenant(new_schema, name, domains, None);
    let r = ctx.tenancy.clone_tenant(source, new).await?;
    out.print(
        &format!("cloned {source} into {} (shard {})", r.schema, r.shard),
        &record_json(&r),
    );
    Ok(())
}
