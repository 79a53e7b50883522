//! `create`: a tenant's schema, migrations and registry rows in one transaction.

use tenant_schemas::{Host, SchemaName};

use crate::args::new_tenant;
use crate::connect::Context;
use crate::error::CliResult;
use crate::output::{record_json, Output};

pub(crate) async fn run(
    ctx: &Context,
    out: Output,
    schema: &SchemaName,
    name: Option<String>,
    domains: &[Host],
    shard: Option<&str>,
) -> CliResult {
    let r = ctx
        .tenancy
        .create_tenant(new_tenant(schema, name, domains, shard))
        .await?;
    out.print(
        &format!(
            "created {} (version {}, shard {})",
            r.schema, r.version, r.shard
        ),
        &record_json(&r),
    );
    Ok(())
}
