//! `run`: SQL on every selected tenant, each in its schema, printing per schema what each
//! statement returned: a query's rows, or a command's affected-row count.

use std::path::PathBuf;

use serde_json::{json, Map, Value};
use tenant_schemas::tokio_postgres::SimpleQueryMessage;
use tenant_schemas::SchemaName;

use crate::args::Selection;
use crate::commands::known_tenants;
use crate::connect::Context;
use crate::error::{describe, CliError, CliResult};
use crate::output::{count, table, Output};

/// A query's rows: each cell as PostgreSQL's text, `None` for NULL.
type Cells = Vec<Vec<Option<String>>>;

/// What one statement returned.
#[derive(Debug, PartialEq, Eq)]
enum StatementResult {
    /// A query's columns and rows.
    Rows { columns: Vec<String>, rows: Cells },
    /// A command (INSERT, UPDATE, DELETE, DDL …) and the rows it affected.
    Command { affected: u64 },
}

pub(crate) async fn run(
    ctx: &Context,
    out: Output,
    sql: Option<String>,
    file: Option<PathBuf>,
    sel: &Selection,
) -> CliResult {
    let sql = match (sql, file) {
        (Some(sql), _) => sql,
        (None, Some(f)) => std::fs::read_to_string(&f)
            .map_err(|e| CliError::config(format!("cannot read {}: {e}", f.display())))?,
        (None, None) => return Err(CliError::config("pass --sql or --file")),
    };
    let tenants = known_tenants(ctx, &sel.schemas).await?;
    // The schemas `for_each_tenant` will visit: the tenants and public, as selected.
    let any = tenants
        .iter()
        .map(|t| &t.schema)
        .chain(std::iter::once(&SchemaName::public()))
        .any(|s| {
            !(sel.skip_public && s.is_public())
                && (sel.schemas.is_empty() || sel.schemas.contains(s))
        });
    if !any {
        return Err(CliError::failed(
            "no schema selected: --skip-public leaves public out, and no tenant is selected",
        ));
    }
    let bar = out.spinner();
    let tenancy = &ctx.tenancy;
    let results = tenancy
        .for_each_tenant(&sel.options(), |_tenant| {
            let (sql, bar) = (sql.as_str(), bar.clone());
            async move {
                let outcome = match tenancy.connection().await {
                    Ok(db) => db.simple_query(sql).await.map(|m| results(&m)),
                    Err(e) => Err(e),
                };
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
    if out.is_json() {
        let schemas: Vec<Value> = results
            .iter()
            .map(|(s, r)| match r {
                Ok(list) => json!({"schema": s.as_str(), "ok": true,
                                   "results": list.iter().map(result_json).collect::<Vec<_>>()}),
                Err(e) => json!({"schema": s.as_str(), "ok": false, "error": describe(e)}),
            })
            .collect();
        out.print("", &json!({"failed": failed, "schemas": schemas}));
    } else {
        let mut text: Vec<String> = results
            .iter()
            .map(|(s, r)| match r {
                Ok(list) => result_text(s, list),
                Err(e) => format!("FAILED {s}: {}", describe(e)),
            })
            .collect();
        text.push(format!(
            "{}, {failed} failed",
            count(results.len(), "schema")
        ));
        out.print(&text.join("\n"), &Value::Null);
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(CliError::Failed(None))
    }
}

/// The statements' results in `messages`, in order.
fn results(messages: &[SimpleQueryMessage]) -> Vec<StatementResult> {
    let mut out = Vec::new();
    let mut current: Option<(Vec<String>, Cells)> = None;
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(columns) => {
                current = Some((
                    columns.iter().map(|c| c.name().to_owned()).collect(),
                    Vec::new(),
                ));
            }
            SimpleQueryMessage::Row(row) => {
                let (_, rows) = current.get_or_insert_with(|| {
                    (
                        row.columns().iter().map(|c| c.name().to_owned()).collect(),
                        Vec::new(),
                    )
                });
                rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(affected) => out.push(match current.take() {
                Some((columns, rows)) => StatementResult::Rows { columns, rows },
                None => StatementResult::Command {
                    affected: *affected,
                },
            }),
            _ => {}
        }
    }
    if let Some((columns, rows)) = current {
        out.push(StatementResult::Rows { columns, rows });
    }
    out
}

/// One schema's results as text: `acme: 2 rows affected` when every statement was a
/// command, otherwise `acme:` and each result under it, a query's rows as a table.
fn result_text(schema: &SchemaName, results: &[StatementResult]) -> String {
    let affected = |n: u64| {
        format!(
            "{} affected",
            count(usize::try_from(n).unwrap_or(usize::MAX), "row")
        )
    };
    let commands: Option<Vec<String>> = results
        .iter()
        .map(|r| match r {
            StatementResult::Command { affected: n } => Some(affected(*n)),
            StatementResult::Rows { .. } => None,
        })
        .collect();
    match commands {
        Some(list) if list.is_empty() => format!("{schema}: ok (no statement)"),
        Some(list) => format!("{schema}: {}", list.join("; ")),
        None => {
            let mut lines = vec![format!("{schema}:")];
            for r in results {
                match r {
                    StatementResult::Command { affected: n } => {
                        lines.push(format!("  {}", affected(*n)));
                    }
                    StatementResult::Rows { columns, rows } => {
                        let cells: Vec<Vec<String>> = rows
                            .iter()
                            .map(|row| row.iter().map(|c| c.clone().unwrap_or_default()).collect())
                            .collect();
                        let headers: Vec<&str> = columns.iter().map(String::as_str).collect();
                        lines.extend(table(&headers, &cells).lines().map(|l| format!("  {l}")));
                        lines.push(format!("  ({})", count(rows.len(), "row")));
                    }
                }
            }
            lines.join("\n")
        }
    }
}

/// One statement's result as JSON: `{"columns": […], "rows": [{column: value}, …]}` for a
/// query (values as PostgreSQL's text, `null` for NULL), `{"rows_affected": n}` for a
/// command.
fn result_json(r: &StatementResult) -> Value {
    match r {
        StatementResult::Rows { columns, rows } => {
            let rows: Vec<Value> = rows
                .iter()
                .map(|row| {
                    let mut object = Map::new();
                    for (name, cell) in columns.iter().zip(row) {
                        object.insert(
                            name.clone(),
                            cell.clone().map_or(Value::Null, Value::String),
                        );
                    }
                    Value::Object(object)
                })
                .collect();
            json!({"columns": columns, "rows": rows, "row_count": rows.len()})
        }
        StatementResult::Command { affected } => json!({"rows_affected": affected}),
    }
}
