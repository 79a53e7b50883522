//! One module per command; each runs against a [`Context`] and
//! prints through [`Output`](crate::output::Output).

pub(crate) mod baseline;
pub(crate) mod citus;
pub(crate) mod clone;
pub(crate) mod create;
pub(crate) mod delete;
pub(crate) mod doctor;
pub(crate) mod domains;
pub(crate) mod erase;
pub(crate) mod export;
pub(crate) mod import;
pub(crate) mod limit;
pub(crate) mod list;
pub(crate) mod migrate;
pub(crate) mod rename_schema;
pub(crate) mod roles;
pub(crate) mod run;
pub(crate) mod shard_move;
pub(crate) mod shared_names;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod usage;

use tenant_schemas::{SchemaName, TenantRecord};

use crate::connect::Context;
use crate::error::{CliError, CliResult};

/// The registry's tenants, after checking that every schema `named` is one of them (or
/// `public`): a typo is an error naming it, not an empty run.
pub(crate) async fn known_tenants(
    ctx: &Context,
    named: &[SchemaName],
) -> CliResult<Vec<TenantRecord>> {
    let tenants = ctx.tenancy.registry().list().await?;
    let unknown: Vec<&str> = named
        .iter()
        .filter(|s| !s.is_public() && !tenants.iter().any(|t| &t.schema == *s))
        .map(SchemaName::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(CliError::failed(format!(
            "no such tenant: {} (`tenant-schemas list` shows the registered ones)",
            unknown.join(", ")
        )));
    }
    Ok(tenants)
}
