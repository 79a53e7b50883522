//! `run`: SQL on every selected tenant, each in its schema.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};
use tenant_schemas::tokio_postgres::SimpleQueryMessage;
use tenant_schemas::Tenancy;

use crate::args::Selection;
use crate::output::{exit_code, Output};
use crate::BoxError;

pub(crate) async fn run(
    tenancy: &Tenancy,
    out: Output,
    sql: Option<String>,
    file: Option<PathBuf>,
    sel: &Selection,
) -> Result<ExitCode, BoxError> {
    let sql = match (sql, file) {
        (Some(sql), _) => sql,
        (None, Some(f)) => {
            std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?
        }
        (None, None) => return Err("pass --sql or --file".into()),
    };
    let bar = out.spinner();
    let results = tenancy
        .for_each_tenant(&sel.options()?, |_tenant| {
            let (tenancy, sql, bar) = (tenancy.clone(), sql.clone(), bar.clone());
            async move {
                let db = tenancy.connection().await?;
                let outcome = db.simple_query(&sql).await.map(|messages| {
                    messages
                        .iter()
                        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
                        .count()
                });
                if let Some(bar) = bar {
                    bar.inc(1);
                }
                outcome
            }
        })
        .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    let text = results
        .iter()
        .map(|(s, r)| match r {
            Ok(rows) => format!("ok     {s} ({rows} rows)"),
            Err(e) => format!("FAILED {s}: {e}"),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let rows: Vec<Value> = results
        .iter()
        .map(|(s, r)| match r {
            Ok(rows) => json!({"schema": s.as_str(), "ok": true, "rows": rows}),
            Err(e) => json!({"schema": s.as_str(), "ok": false, "error": e.to_string()}),
        })
        .collect();
    out.print(
        &format!("{text}\n{} schemas, {failed} failed", results.len()),
        &json!({"failed": failed, "schemas": rows}),
    );
    Ok(exit_code(failed == 0))
}
