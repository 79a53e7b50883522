//! `domains add|remove|set-primary`: a tenant's domains.

use serde_json::json;
use tenant_schemas::{Host, Tenancy};

use crate::args::{schema, DomainCommand};
use crate::output::Output;
use crate::BoxError;

pub(crate) async fn run(
    tenancy: &Tenancy,
    out: Output,
    command: DomainCommand,
) -> Result<(), BoxError> {
    match command {
        DomainCommand::Add {
            schema: s,
            domain,
            primary,
        } => {
            tenancy
                .add_domain(&schema(&s)?, &Host::parse(&domain)?, primary)
                .await?;
            out.print(
                &format!("added {domain} to {s}"),
                &json!({"added": domain, "schema": s}),
            );
        }
        DomainCommand::Remove { schema: s, domain } => {
            tenancy
                .remove_domain(&schema(&s)?, &Host::parse(&domain)?)
                .await?;
            out.print(
                &format!("removed {domain} from {s}"),
                &json!({"removed": domain, "schema": s}),
            );
        }
        DomainCommand::SetPrimary { schema: s, domain } => {
            tenancy
                .set_primary_domain(&schema(&s)?, &Host::parse(&domain)?)
                .await?;
            out.print(
                &format!("{domain} is now the primary domain of {s}"),
                &json!({"primary": domain, "schema": s}),
            );
        }
    }
    Ok(())
}
