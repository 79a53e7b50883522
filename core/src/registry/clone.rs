//! Copying a tenant's rows into its clone.

use tokio_postgres::types::Type;

use super::export::ident;
use crate::error::{Error, Result};
use crate::schema::SchemaName;

/// Copies every table's rows and every sequence's position from `source` into `target`
/// (same tables: both at the latest migration version), inside `tx`.
///
/// Columns are copied by name: generated columns (`GENERATED ALWAYS AS (…) STORED`) are left
/// out and computed again, identity columns (`GENERATED ALWAYS AS IDENTITY`) are copied with
/// `OVERRIDING SYSTEM VALUE`. Every sequence gets the source's position, and a sequence that
/// owns a column (identity, `serial`) is moved past the highest value copied into it, so the
/// next row inserted in the clone does not collide.
pub(super) async fn copy_rows(
    tx: &tokio_postgres::Transaction<'_>,
    source: &SchemaName,
    target: &SchemaName,
) -> Result<()> {
    let db = |e| Error::db("copying a tenant", target, e);
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .await
        .map_err(db)?;
    let relations = tx
        .query_typed(
            "SELECT c.relname::text, c.relkind::text,
                    ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                            AND a.attgenerated = ''
                          ORDER BY a.attnum)
             FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'S') AND c.relname::text <> $2
             ORDER BY c.relname",
            &[
                (&source.as_str(), Type::TEXT),
                (&crate::migrate::HISTORY_TABLE, Type::TEXT),
            ],
        )
        .await
        .map_err(db)?;
    for row in relations {
        let name: String = row.get(0);
        let (from, to) = (
            format!("{}.{}", source.quoted(), ident(&name)),
            format!("{}.{}", target.quoted(), ident(&name)),
        );
        if row.get::<_, String>(1) == "S" {
            tx.batch_execute(&format!(
                "SELECT pg_catalog.setval({to_lit}, last_value, is_called) FROM {from}",
                to_lit = literal(&to)
            ))
            .await
            .map_err(db)?;
        } else {
            let columns: Vec<String> = row.get(2);
            let columns: Vec<String> = columns.iter().map(|c| ident(c)).collect();
            let columns = columns.join(", ");
            // No column left (all generated, or none at all): every row is made of defaults.
            let sql = if columns.is_empty() {
                format!("INSERT INTO {to} SELECT FROM {from}")
            } else {
                format!(
                    "INSERT INTO {to} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} FROM {from}"
                )
            };
            tx.batch_execute(&sql).await.map_err(db)?;
        }
    }
    // Sequences owning an integer column (identity or serial) go past the highest value
    // copied: rows inserted in the source with an explicit id must not collide in the clone.
    let owned = tx
        .query_typed(
            "SELECT s.relname::text, t.relname::text, a.attname::text
             FROM pg_catalog.pg_depend d
             JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
             JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid AND q.seqincrement > 0
             JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
             JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace
             JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
             WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
               AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
               AND d.deptype IN ('a', 'i') AND n.nspname = $1
               AND a.atttypid IN ('pg_catalog.int2'::pg_catalog.regtype,
                                  'pg_catalog.int4'::pg_catalog.regtype,
                                  'pg_catalog.int8'::pg_catalog.regtype)
             ORDER BY 1",
            &[(&target.as_str(), Type::TEXT)],
        )
        .await
        .map_err(db)?;
    for row in owned {
        let (sequence, table, column): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        let sequence = format!("{}.{}", target.quoted(), ident(&sequence));
        let table = format!("{}.{}", target.quoted(), ident(&table));
        tx.batch_execute(&format!(
            "SELECT pg_catalog.setval({seq_lit}, m.top, true)
             FROM (SELECT pg_catalog.max({column})::bigint AS top FROM {table}) m, {sequence} s
             WHERE m.top IS NOT NULL
               AND m.top > CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END",
            seq_lit = literal(&sequence),
            column = ident(&column),
        ))
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Text quoted as a string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
