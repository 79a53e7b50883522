//! A tenant's data as one file: written from one snapshot, read back into a new schema.
//!
//! The format (version 1, described in `docs/export-format.md`): UTF-8 lines.
//!
//! ```text
//! tenant-schemas export 1
//! tenant {"schema": "acme", "name": "Acme Inc.", "version": 3, "domains": [...], ...}
//! table {"name": "notes", "columns": ["id", "body"]}
//! <the table's rows in COPY's text format, one per line>
//! \.
//! sequence {"name": "notes_id_seq", "last_value": 5, "is_called": true}
//! end {"tables": 1, "rows": 2}
//! ```
//!
//! The metadata lines are JSON, written and read by the server (`json_build_object`,
//! `->>`), so names and text of any kind round-trip. The schema itself is not in the file:
//! a restore builds it with the tenant migrations up to the recorded version.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::types::Type;

use super::Registry;
use crate::error::{Error, Result};
use crate::migrate::HISTORY_TABLE;
use crate::receipt::TableRows;
use crate::schema::SchemaName;
use crate::tenant::TenantRecord;

/// The first line of every export file.
pub(crate) const MAGIC: &str = "tenant-schemas export 1";

/// The session settings every export and restore runs under, whatever the database, the
/// role or a pooled session's earlier user set: output that reads back as written (every
/// digit of a float, dates and intervals in a style no other setting reads differently).
const PORTABLE_TEXT: &str =
    "SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'postgres';
     SET LOCAL extra_float_digits = 3";

/// A catalog name (which can hold anything) quoted as an identifier.
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A read-only transaction on one snapshot (`REPEATABLE READ`): what an export or an
/// erasure's count reads.
pub(super) async fn snapshot(
    conn: &mut deadpool_postgres::Object,
) -> std::result::Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
    conn.build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}

/// The plain and partitioned tables of `schema` (not partitions: their rows come with
/// their parent), by name; the migration history only `with_history`.
pub(super) async fn schema_tables(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &SchemaName,
    with_history: bool,
) -> std::result::Result<Vec<String>, tokio_postgres::Error> {
    let rows = tx
        .query_typed(
            "SELECT c.relname::text FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
               AND ($3 OR c.relname::text <> $2)
             ORDER BY 1",
            &[
                (&schema.as_str(), Type::TEXT),
                (&HISTORY_TABLE, Type::TEXT),
                (&with_history, Type::BOOL),
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

impl Registry {
    /// Writes `tenant`'s rows and sequence positions to `out` from one snapshot, with its
    /// registry row; returns each table and its rows.
    pub(crate) async fn export<W>(
        &self,
        tenant: &TenantRecord,
        out: &mut W,
    ) -> Result<Vec<TableRows>>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let schema = &tenant.schema;
        let db = |e| Error::db("exporting a tenant", schema, e);
        let io = |e: std::io::Error| Error::TenantFile {
            action: "exporting",
            schema: schema.clone(),
            reason: e.to_string(),
        };
        let mut conn = self.databases.connect(&tenant.shard, schema).await?;
        let tx = snapshot(&mut conn).await.map_err(db)?;
        tx.batch_execute(PORTABLE_TEXT).await.map_err(db)?;
        let name = tenant.name.as_str();
        let header: String = tx
            .query_typed_one(
                "SELECT pg_catalog.json_build_object(
                    'schema', $1::text, 'name', $2::text, 'version', $3::int,
                    'domains', $4::text[], 'status', $5::text, 'shard', $6::text,
                    'exported_at', pg_catalog.now(),
                    'server_version', pg_catalog.current_setting('server_version_num')::int)::text",
                &[
                    (&schema.as_str(), Type::TEXT),
                    (&name, Type::TEXT),
                    (&tenant.version, Type::INT4),
                    (&tenant.domains, Type::TEXT_ARRAY),
                    (&tenant.status.as_str(), Type::TEXT),
                    (&tenant.shard.as_str(), Type::TEXT),
                ],
            )
            .await
            .map_err(db)?
            .get(0);
        out.write_all(format!("{MAGIC}\ntenant {header}\n").as_bytes())
            .await
            .map_err(io)?;
        // Plain and partitioned tables (a partition's rows come with its parent; a plain
        // table's inheritance children's do not, they are exported as their own), columns by
        // position without generated ones (computed again on restore), and the line for each.
        let tables = tx
            .query_typed(
                "SELECT c.relname::text,
                        ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                                AND a.attgenerated = ''
                              ORDER BY a.attnum),
                        pg_catalog.json_build_object('name', c.relname::text, 'columns',
                            ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                                  WHERE a.attrelid = c.oid AND a.attnum > 0
                                    AND NOT a.attisdropped AND a.attgenerated = ''
                                  ORDER BY a.attnum))::text,
                        c.relkind = 'r'
                 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                   AND c.relname::text <> $2
                 ORDER BY 1",
                &[(&schema.as_str(), Type::TEXT), (&HISTORY_TABLE, Type::TEXT)],
            )
            .await
            .map_err(db)?;
        let mut counts = Vec::with_capacity(tables.len());
        for row in tables {
            let (table, columns, line, plain): (String, Vec<String>, String, bool) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            out.write_all(format!("table {line}\n").as_bytes())
                .await
                .map_err(io)?;
            let columns: Vec<String> = columns.iter().map(|c| ident(c)).collect();
            let sql = format!(
                "COPY (SELECT {} FROM {}{}.{}) TO STDOUT",
                if columns.is_empty() {
                    "".to_owned()
                } else {
                    columns.join(", ")
                },
                if plain { "ONLY " } else { "" },
                schema.quoted(),
                ident(&table)
            );
            let stream = tx.copy_out(&sql).await.map_err(db)?;
            futures_util::pin_mut!(stream);
            let mut rows = 0i64;
            while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                let chunk = chunk.map_err(db)?;
                rows += chunk.iter().filter(|b| **b == b'\n').count() as i64;
                out.write_all(&chunk).await.map_err(io)?;
            }
            out.write_all(b"\\.\n").await.map_err(io)?;
            counts.push(TableRows { table, rows });
        }
        let sequences = tx
            .query_typed(
                "SELECT c.relname::text FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind = 'S' ORDER BY 1",
                &[(&schema.as_str(), Type::TEXT)],
            )
            .await
            .map_err(db)?;
        for row in sequences {
            let sequence: String = row.get(0);
            let line: String = tx
                .query_one(
                    &format!(
                        "SELECT pg_catalog.json_build_object('name', $1::text,
                            'last_value', last_value, 'is_called', is_called)::text
                         FROM {}.{}",
                        schema.quoted(),
                        ident(&sequence)
                    ),
                    &[&sequence],
                )
                .await
                .map_err(db)?
                .get(0);
            out.write_all(format!("sequence {line}\n").as_bytes())
                .await
                .map_err(io)?;
        }
        let rows: i64 = counts.iter().map(|c| c.rows).sum();
        out.write_all(
            format!("end {{\"tables\": {}, \"rows\": {rows}}}\n", counts.len()).as_bytes(),
        )
        .await
        .map_err(io)?;
        out.flush().await.map_err(io)?;
        tx.commit().await.map_err(db)?;
        Ok(counts)
    }

    /// Loads the rows and sequence positions of an export (read from `input`, after its
    /// `tenant` line) into `target`, a schema just built with the same migrations, in one
    /// transaction; checks every table's rows against the file's. Returns each table and
    /// its rows.
    pub(crate) async fn load<R>(
        &self,
        target: &TenantRecord,
        input: &mut R,
    ) -> Result<Vec<TableRows>>
    where
        R: AsyncBufRead + Unpin + Send,
    {
        let schema = &target.schema;
        let db = |e| Error::db("restoring a tenant", schema, e);
        let bad = |reason: String| Error::TenantFile {
            action: "restoring",
            schema: schema.clone(),
            reason,
        };
        if schema.is_public() {
            return Err(bad("the shared public schema is never restored into".into()));
        }
        let mut conn = self.databases.connect(&target.shard, schema).await?;
        let tx = conn.transaction().await.map_err(db)?;
        // Rows are loaded table by table: foreign keys and triggers wait (as for a clone).
        tx.batch_execute("SET LOCAL session_replication_role = replica")
            .await
            .map_err(db)?;
        tx.batch_execute(PORTABLE_TEXT).await.map_err(db)?;
        // The schema's tables, as the migrations built them: emptied first, so that each
        // holds the file's rows and nothing else (rows a migration or a creation hook seeded
        // are in the file as the tenant left them). Not CASCADE: a table outside the schema
        // that references one of these makes the restore fail, never loses rows.
        let here = schema_tables(&tx, schema, false).await.map_err(db)?;
        if !here.is_empty() {
            let tables: Vec<String> = here
                .iter()
                .map(|t| format!("{}.{}", schema.quoted(), ident(t)))
                .collect();
            tx.batch_execute(&format!("TRUNCATE TABLE {}", tables.join(", ")))
                .await
                .map_err(db)?;
        }
        let mut counts = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if input
                .read_line(&mut line)
                .await
                .map_err(|e| bad(e.to_string()))?
                == 0
            {
                return Err(bad(
                    "the file ends before its `end` line: it was cut short".into()
                ));
            }
            let text = line.trim_end_matches('\n');
            let (kind, json) = text.split_once(' ').unwrap_or((text, ""));
            match kind {
                "table" => {
                    let row = tx
                        .query_typed_one(
                            "SELECT j->>'name', ARRAY(SELECT pg_catalog.json_array_elements_text(j->'columns'))
                             FROM (SELECT $1::json AS j) s",
                            &[(&json, Type::TEXT)],
                        )
                        .await
                        .map_err(|e| bad(format!("a `table` line is not JSON: {e}")))?;
                    let (table, columns): (Option<String>, Vec<String>) = (row.get(0), row.get(1));
                    let table = table.ok_or_else(|| bad("a `table` line names no table".into()))?;
                    // The history is the restore's own (written by the migrations it ran).
                    if table == HISTORY_TABLE {
                        return Err(bad(format!(
                            "the file writes {HISTORY_TABLE}, the migration history, which a \
                             restore records itself"
                        )));
                    }
                    let columns: Vec<String> = columns.iter().map(|c| ident(c)).collect();
                    // A table without columns is copied without a column list.
                    let sql = format!(
                        "COPY {}.{}{} FROM STDIN",
                        schema.quoted(),
                        ident(&table),
                        if columns.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", columns.join(", "))
                        }
                    );
                    let sink = tx
                        .copy_in::<_, std::io::Cursor<Vec<u8>>>(&sql)
                        .await
                        .map_err(|e| {
                            bad(format!(
                                "table {table} does not fit the restored schema: {}",
                                crate::error::message(&e)
                            ))
                        })?;
                    futures_util::pin_mut!(sink);
                    let (mut rows, mut batch) = (0i64, Vec::with_capacity(64 * 1024));
                    loop {
                        line.clear();
                        if input
                            .read_line(&mut line)
                            .await
                            .map_err(|e| bad(e.to_string()))?
                            == 0
                        {
                            return Err(bad(format!("table {table}'s rows are cut short")));
                        }
                        if line == "\\.\n" {
                            break;
                        }
                        rows += 1;
                        batch.extend_from_slice(line.as_bytes());
                        if batch.len() >= 64 * 1024 {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(64 * 1024));
                            futures_util::SinkExt::send(&mut sink, std::io::Cursor::new(full))
                                .await
                                .map_err(db)?;
                        }
                    }
                    if !batch.is_empty() {
                        futures_util::SinkExt::send(&mut sink, std::io::Cursor::new(batch))
                            .await
                            .map_err(db)?;
                    }
                    let loaded = sink.finish().await.map_err(db)?;
                    if loaded != rows as u64 {
                        return Err(bad(format!(
                            "table {table}: {rows} rows in the file, {loaded} loaded"
                        )));
                    }
                    counts.push(TableRows { table, rows });
                }
                "sequence" => {
                    let row = tx
                        .query_typed_one(
                            "SELECT j->>'name', (j->>'last_value')::bigint, (j->>'is_called')::boolean
                             FROM (SELECT $1::json AS j) s",
                            &[(&json, Type::TEXT)],
                        )
                        .await
                        .map_err(|e| bad(format!("a `sequence` line is not JSON: {e}")))?;
                    let (sequence, value, called): (Option<String>, Option<i64>, Option<bool>) =
                        (row.get(0), row.get(1), row.get(2));
                    let (Some(sequence), Some(value), Some(called)) = (sequence, value, called)
                    else {
                        return Err(bad("a `sequence` line lacks its name or position".into()));
                    };
                    let qualified = format!("{}.{}", schema.quoted(), ident(&sequence));
                    tx.query_typed(
                        "SELECT pg_catalog.setval($1::regclass, $2, $3)",
                        &[
                            (&qualified, Type::TEXT),
                            (&value, Type::INT8),
                            (&called, Type::BOOL),
                        ],
                    )
                    .await
                    .map_err(|e| {
                        bad(format!(
                            "sequence {sequence} does not fit the restored schema: {}",
                            crate::error::message(&e)
                        ))
                    })?;
                }
                "end" => {
                    let row = tx
                        .query_typed_one(
                            "SELECT (j->>'tables')::int, (j->>'rows')::bigint FROM (SELECT $1::json AS j) s",
                            &[(&json, Type::TEXT)],
                        )
                        .await
                        .map_err(|e| bad(format!("the `end` line is not JSON: {e}")))?;
                    let (tables, rows): (Option<i32>, Option<i64>) = (row.get(0), row.get(1));
                    let total: i64 = counts.iter().map(|c| c.rows).sum();
                    if tables != i32::try_from(counts.len()).ok() || rows != Some(total) {
                        return Err(bad(format!(
                            "the file says {tables:?} tables and {rows:?} rows; it holds {} and {total}",
                            counts.len()
                        )));
                    }
                    break;
                }
                other => {
                    return Err(bad(format!(
                        "unexpected line `{}`",
                        other.chars().take(40).collect::<String>()
                    )))
                }
            }
        }
        // Every table of the schema that has rows in the file got them; one that the file
        // lacks (created outside the migrations at export, or by a newer one) is an error.
        for table in here {
            if !counts.iter().any(|c| c.table == table) {
                return Err(bad(format!(
                    "table {table} of the restored schema is not in the file"
                )));
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(counts)
    }
}

impl Registry {
    /// The migration version and the schema an export's `tenant` line records.
    pub(crate) async fn export_version(
        &self,
        json: &str,
        schema: &SchemaName,
    ) -> Result<(i32, String)> {
        let row = self
            .conn()
            .await?
            .query_typed_one(
                "SELECT (j->>'version')::int, j->>'schema' FROM (SELECT $1::json AS j) s",
                &[(&json, Type::TEXT)],
            )
            .await
            .map_err(|e| Error::TenantFile {
                action: "restoring",
                schema: schema.clone(),
                reason: format!(
                    "the `tenant` line is not JSON: {}",
                    crate::error::message(&e)
                ),
            })?;
        match (
            row.get::<_, Option<i32>>(0),
            row.get::<_, Option<String>>(1),
        ) {
            (Some(version), Some(from)) => Ok((version, from)),
            _ => Err(Error::TenantFile {
                action: "restoring",
                schema: schema.clone(),
                reason: "the `tenant` line lacks its schema or version".into(),
            }),
        }
    }
}

/// Reads an export's first two lines: the format, and the tenant as it was. Returns the
/// `tenant` line's JSON.
pub(crate) async fn read_header<R>(input: &mut R, schema: &SchemaName) -> Result<String>
where
    R: AsyncBufRead + Unpin + Send,
{
    let bad = |reason: String| Error::TenantFile {
        action: "restoring",
        schema: schema.clone(),
        reason,
    };
    let mut line = String::new();
    input
        .read_line(&mut line)
        .await
        .map_err(|e| bad(e.to_string()))?;
    if line.trim_end() != MAGIC {
        return Err(bad(format!(
            "not a tenant-schemas export of format 1 (its first line should be `{MAGIC}`)"
        )));
    }
    line.clear();
    input
        .read_line(&mut line)
        .await
        .map_err(|e| bad(e.to_string()))?;
    match line.trim_end().strip_prefix("tenant ") {
        Some(json) => Ok(json.to_owned()),
        None => Err(bad("its second line should be the `tenant` line".into())),
    }
}
