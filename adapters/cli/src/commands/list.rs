//! `list`: every tenant with its version, status, shard, name and domains. Only reads.

use serde_json::Value;

use crate::connect::Context;
use crate::error::CliResult;
use crate::output::{record_json, table, Output};

pub(crate) async fn run(ctx: &Context, out: Output) -> CliResult {
    let list = ctx.tenancy.registry().list().await?;
    let text = if list.is_empty() {
        "no tenants".to_owned()
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|r| {
                vec![
                    r.schema.to_string(),
                    r.version.to_string(),
                    r.status.as_str().to_owned(),
                    r.shard.as_str().to_owned(),
                    r.name.clone(),
                    r.domains.join(" "),
                ]
            })
            .collect();
        table(
            &["SCHEMA", "VERSION", "STATUS", "SHARD", "NAME", "DOMAINS"],
            &rows,
        )
    };
    out.print(&text, &Value::Array(list.iter().map(record_json).collect()));
    Ok(())
}
