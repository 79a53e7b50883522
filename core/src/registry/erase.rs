//! What an erasure removes: each table of a tenant's schema and its rows.

use tokio_postgres::types::Type;

use crate::receipt::TableRows;
use crate::schema::SchemaName;

/// The tables an erasure of `schema` drops, each with the relations whose rows it counts:
/// every table of the schema (plain and partitioned; the migration history included) and
/// materialized view, but the partitions of one of its own partitioned tables, which their
/// parent counts. A table counts its own rows (`ONLY`) and those of its partitions and
/// inheritance children that are not listed themselves — those outside the schema too,
/// which `DROP SCHEMA … CASCADE` drops with it — each relation under one table only. Rows:
/// the table, whether it is a materialized view, and one relation it counts (quoted,
/// schema-qualified) per row, or none for a partitioned table without partitions or a
/// materialized view never populated (no rows).
const ERASED_TABLES: &str = "
WITH RECURSIVE listed AS (
    SELECT c.oid, c.relname::text AS name, c.relkind
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'm')
      AND NOT (c.relispartition AND EXISTS (
          SELECT 1 FROM pg_catalog.pg_inherits i
          JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
          WHERE i.inhrelid = c.oid AND p.relnamespace = c.relnamespace))
), counted(owner, rel) AS (
    SELECT oid, oid FROM listed
    UNION
    SELECT o.owner, i.inhrelid
    FROM counted o
    JOIN pg_catalog.pg_inherits i ON i.inhparent = o.rel
    WHERE i.inhrelid NOT IN (SELECT oid FROM listed)
), once AS (
    SELECT DISTINCT ON (rel) owner, rel FROM counted ORDER BY rel, owner
)
SELECT l.name, l.relkind = 'm' AS materialized,
       pg_catalog.quote_ident(rn.nspname) || '.' || pg_catalog.quote_ident(r.relname) AS rel
FROM listed l
LEFT JOIN once o ON o.owner = l.oid
LEFT JOIN pg_catalog.pg_class r ON r.oid = o.rel
    AND (r.relkind = 'r' OR (r.relkind = 'm' AND r.relispopulated))
LEFT JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
ORDER BY l.name";

/// Every table of `schema` (plain and partitioned; the migration history included) and
/// materialized view with its rows, by name, counted in `tx` on the schema's database after
/// locking the tables (ACCESS EXCLUSIVE, held until `tx` ends; a materialized view cannot
/// be locked, but its refresh reads tables that are): a transaction still writing commits
/// before its rows are counted, and nothing writes between the count and the drop that
/// follows in `tx`. Each row the drop removes is counted once (see [`ERASED_TABLES`]): a table's rows are
/// its own, its partitions' and those of inheritance children not listed themselves.
///
/// Tables another transaction created in the schema and has not committed yet are not
/// visible, but the drop waits for that transaction and drops them: the count waits first
/// for the transactions creating objects in the schema (they hold a lock on it) to end, and
/// counts again should one have begun while it counted. It waits holding no lock of its
/// own in `tx` (call it before anything else in `tx` takes locks): such a transaction may
/// be waiting for one of them (a migration updating the registry, or the tables counted,
/// which a count given up releases), and PostgreSQL would not see that deadlock.
pub(super) async fn count_rows_locked(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &SchemaName,
) -> std::result::Result<Vec<TableRows>, tokio_postgres::Error> {
    loop {
        while creating_in(tx, schema).await? {
            tokio::time::sleep(CREATORS_POLL).await;
        }
        tx.batch_execute("SAVEPOINT tenant_schemas_erase_count")
            .await?;
        let counted = count_once(tx, schema).await?;
        if !creating_in(tx, schema).await? {
            tx.batch_execute("RELEASE SAVEPOINT tenant_schemas_erase_count")
                .await?;
            return Ok(counted);
        }
        // The tables' locks are released (rolling back to a savepoint releases the locks
        // taken after it) while the new transaction is waited for.
        tx.batch_execute("ROLLBACK TO SAVEPOINT tenant_schemas_erase_count")
            .await?;
    }
}

/// How often [`count_rows_locked`] looks whether the transactions creating objects in the
/// schema have ended.
const CREATORS_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Whether another transaction holds a lock on `schema` itself: PostgreSQL takes one (`ACCESS
/// SHARE`, until the transaction ends) for every object created in a schema, so that the
/// schema cannot be dropped under it.
async fn creating_in(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &SchemaName,
) -> std::result::Result<bool, tokio_postgres::Error> {
    let row = tx
        .query_typed_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                 JOIN pg_catalog.pg_namespace n ON n.oid = l.objid
                 WHERE l.locktype = 'object'
                   AND l.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                   AND l.database = (SELECT oid FROM pg_catalog.pg_database
                                     WHERE datname = pg_catalog.current_database())
                   AND n.nspname = $1
                   AND l.pid <> pg_catalog.pg_backend_pid())",
            &[(&schema.as_str(), Type::TEXT)],
        )
        .await?;
    Ok(row.get(0))
}

/// One listing, locking and count of [`count_rows_locked`].
async fn count_once(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &SchemaName,
) -> std::result::Result<Vec<TableRows>, tokio_postgres::Error> {
    let listed = tx
        .query_typed(ERASED_TABLES, &[(&schema.as_str(), Type::TEXT)])
        .await?;
    // Each table with the relations it counts, in the order of the names; and whether it is
    // a materialized view.
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    let mut locked = Vec::new();
    let quoted = |t: &str| format!("{}.\"{}\"", schema.quoted(), t.replace('"', "\"\""));
    for row in &listed {
        let table: String = row.get(0);
        let materialized: bool = row.get(1);
        let rel: Option<String> = row.get(2);
        if tables.last().is_none_or(|(last, _)| *last != table) {
            if !materialized {
                locked.push(quoted(&table));
            }
            tables.push((table, Vec::new()));
        }
        if let (Some(rel), Some((_, rels))) = (rel, tables.last_mut()) {
            rels.push(rel);
        }
    }
    if !locked.is_empty() {
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            locked.join(", ")
        ))
        .await?;
    }
    let mut out = Vec::with_capacity(tables.len());
    for (table, rels) in tables {
        let rows: i64 = if rels.is_empty() {
            0
        } else {
            let sum: Vec<String> = rels
                .iter()
                .map(|rel| format!("(SELECT pg_catalog.count(*) FROM ONLY {rel})"))
                .collect();
            let sql = format!("SELECT ({})::int8", sum.join(" + "));
            tx.query_one(&sql, &[]).await?.get(0)
        };
        out.push(TableRows { table, rows });
    }
    Ok(out)
}
