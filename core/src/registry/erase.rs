//! What an erasure removes: each table of a tenant's schema and its rows.

use super::export::schema_tables;
use crate::receipt::TableRows;
use crate::schema::SchemaName;

/// Every table of `schema` (plain and partitioned; the migration history included) with its
/// rows, by name, counted in `tx` on the schema's database after locking them all (ACCESS
/// EXCLUSIVE, held until `tx` ends): a transaction still writing commits before its rows
/// are counted, and nothing writes between the count and the drop that follows in `tx`.
pub(super) async fn count_rows_locked(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &SchemaName,
) -> std::result::Result<Vec<TableRows>, tokio_postgres::Error> {
    let tables = schema_tables(tx, schema, true).await?;
    let quoted: Vec<String> = tables
        .iter()
        .map(|t| format!("{}.\"{}\"", schema.quoted(), t.replace('"', "\"\"")))
        .collect();
    if !quoted.is_empty() {
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            quoted.join(", ")
        ))
        .await?;
    }
    let mut out = Vec::with_capacity(tables.len());
    for (table, quoted) in tables.into_iter().zip(quoted) {
        let sql = format!("SELECT pg_catalog.count(*) FROM {quoted}");
        let rows: i64 = tx.query_one(&sql, &[]).await?.get(0);
        out.push(TableRows { table, rows });
    }
    Ok(out)
}
