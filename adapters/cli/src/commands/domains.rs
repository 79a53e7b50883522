//! `domains add|remove|set-primary`: a tenant's domains.

use serde_json::json;

use crate::args::DomainCommand;
use crate::connect::Context;
use crate::error::CliResult;
use crate::output::Output;

pub(crate) async fn run(ctx: &Context, out: Output, command: DomainCommand) -> CliResult {
    let tenancy = &ctx.tenancy;
    match command {
        DomainCommand::Add {
            schema,
            domain,
            primary,
        } => {
            tenancy.add_domain(&schema, &domain, primary).await?;
            out.print(
                &format!("added {domain} to {schema}"),
                &json!({"added": domain.as_str(), "schema": schema.as_str()}),
            );
        }
        DomainCommand::Remove { schema, domain } => {
            tenancy.remove_domain(&schema, &domain).await?;
            out.print(
                &format!("removed {domain} from {schema}"),
                &json!({"removed": domain.as_str(), "schema": schema.as_str()}),
            );
        }
        DomainCommand::SetPrimary { schema, domain } => {
            tenancy.set_primary_domain(&schema, &domain).await?;
            out.print(
                &format!("{domain} is now the primary domain of {schema}"),
                &json!({"primary": domain.as_str(), "schema": schema.as_str()}),
            );
        }
    }
    Ok(())
}
