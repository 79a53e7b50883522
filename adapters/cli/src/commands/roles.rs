//! `roles`: role mode's tenant roles — `sync` gives every tenant without one its own and
//! makes every role's grants whole again; `list` shows each tenant's role.

use serde_json::json;

use crate::args::RolesCommand;
use crate::connect::Context;
use crate::error::CliResult;
use crate::output::{table, Output};

pub(crate) async fn run(ctx: &Context, out: Output, cmd: RolesCommand) -> CliResult {
    match cmd {
        RolesCommand::Sync => {
            let synced = ctx.tenancy.sync_roles().await?;
            let new = synced.iter().filter(|(_, _, new)| *new).count();
            let rows: Vec<Vec<String>> = synced
                .iter()
                .map(|(schema, role, new)| {
                    vec![
                        schema.to_string(),
                        role.clone(),
                        if *new { "new" } else { "granted" }.to_owned(),
                    ]
                })
                .collect();
            let text = format!(
                "{}\n{new} of {} tenants given a role; every tenant role's grants made whole",
                table(&["schema", "role", ""], &rows),
                synced.len()
            );
            let json: Vec<_> = synced
                .iter()
                .map(|(schema, role, new)| json!({"schema": schema.as_str(), "role": role, "new": new}))
                .collect();
            out.print(&text, &json!({"tenants": json, "new": new}));
        }
        RolesCommand::List => {
            let list = ctx.tenancy.registry().list().await?;
            let rows: Vec<Vec<String>> = list
                .iter()
                .filter(|r| !r.schema.is_public())
                .map(|r| {
                    vec![
                        r.schema.to_string(),
                        r.role.clone().unwrap_or_else(|| "-".to_owned()),
                    ]
                })
                .collect();
            let json: Vec<_> = list
                .iter()
                .filter(|r| !r.schema.is_public())
                .map(|r| json!({"schema": r.schema.as_str(), "role": r.role}))
                .collect();
            let without = list
                .iter()
                .filter(|r| !r.schema.is_public() && r.role.is_none())
                .count();
            let mut text = table(&["schema", "role"], &rows);
            if without > 0 {
                text.push_str(&format!(
                    "\n{without} tenants have no role: `tenant-schemas roles sync` gives them one"
                ));
            }
            out.print(&text, &json!({"tenants": json, "without_role": without}));
        }
    }
    Ok(())
}
