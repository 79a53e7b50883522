//! `list`: every tenant with its version, status, shard, name and domains, and on a Citus
//! coordinator the node it lives on. Only reads.

use serde_json::Value;

use crate::commands::citus::{node_of, placements};
use crate::connect::Context;
use crate::error::CliResult;
use crate::output::{record_json, table, Output};

pub(crate) async fn run(ctx: &Context, out: Output) -> CliResult {
    let list = ctx.tenancy.registry().list().await?;
    let placements = placements(ctx).await?;
    let text = if list.is_empty() {
        "no tenants".to_owned()
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|r| {
                let mut row = vec![
                    r.schema.to_string(),
                    r.version.to_string(),
                    r.status.as_str().to_owned(),
                    r.shard.as_str().to_owned(),
                ];
                if let Some(placements) = &placements {
                    row.push(node_of(placements, &r.schema).unwrap_or_else(|| "-".to_owned()));
                }
                row.extend([r.name.clone(), r.domains.join(" ")]);
                row
            })
            .collect();
        let mut headers = vec!["SCHEMA", "VERSION", "STATUS", "SHARD"];
        if placements.is_some() {
            headers.push("NODE");
        }
        headers.extend(["NAME", "DOMAINS"]);
        table(&headers, &rows)
    };
    let json = list
        .iter()
        .map(|r| {
            let mut value = record_json(r);
            if let (Some(placements), Value::Object(map)) = (&placements, &mut value) {
                map.insert(
                    "node".to_owned(),
                    node_of(placements, &r.schema).map_or(Value::Null, Value::String),
                );
            }
            value
        })
        .collect();
    out.print(&text, &Value::Array(json));
    Ok(())
}
