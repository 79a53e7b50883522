//! `list`: every tenant with its version, status, name and domains.

use serde_json::Value;
use tenant_schemas::Tenancy;

use crate::output::{record_json, Output};
use crate::BoxError;

pub(crate) async fn run(tenancy: &Tenancy, out: Output) -> Result<(), BoxError> {
    let list = tenancy.registry().list().await?;
    let text = list
        .iter()
        .map(|r| {
            format!(
                "{:<24} v{:<4} {:<10} {:<24} {}",
                r.schema,
                r.version,
                r.status.as_str(),
                r.name,
                r.domains.join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    out.print(&text, &Value::Array(list.iter().map(record_json).collect()));
    Ok(())
}
