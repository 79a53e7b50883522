//! Applying a migration set to one schema, inside the caller's transaction, and the checks
//! around it: the schema's history against the set, and tenant tables named like tables in
//! `public`.

use futures_util::future::join_all;
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use super::set::{HistoryRow, Migration, TenantMigrations};
use crate::error::{Error, Result};
use crate::leftovers::DROP_LEFT_TEMPORARY;
use crate::schema::{search_path, SchemaName};

/// The history table each migrated schema holds.
pub const HISTORY_TABLE: &str = "tenant_schemas_history";

impl TenantMigrations {
    /// Applies the pending migrations of `schema` in `tx`: creates the history table if
    /// needed, checks what was applied against the list (a changed or unknown applied
    /// migration is an error), then sends every pending migration up to the first
    /// [no-transaction step](Migration::no_transaction) and their history rows in one
    /// pipelined batch, each migration preceded by `SET LOCAL search_path` so that a
    /// migration changing the search path cannot move the next one elsewhere. Returns
    /// (version before, version after): below the latest when a no-transaction step is
    /// next (see `no_transaction.rs`).
    ///
    /// A migration may change session state that outlives `tx` (see
    /// [`may_change_session_after`](Self::may_change_session_after)): the caller then closes
    /// the connection instead of returning it to the pool.
    pub(crate) async fn apply(
        &self,
        tx: &Transaction<'_>,
        schema: &SchemaName,
    ) -> Result<(i32, i32)> {
        self.validate()?;
        let db = |e| Error::db("migrating", schema, e);
        let set_path = format!("SET LOCAL search_path TO {}", search_path(schema, &[]));
        // Temporary tables left on the connection (a tenant's function made one; behind a
        // pooler, another client) would stand in for the schema's tables of the same name in
        // unqualified migration SQL: `pg_temp` is searched first.
        tx.batch_execute(&format!(
            "{DROP_LEFT_TEMPORARY}; {set_path}; {}",
            create_history_sql(schema)
        ))
        .await
        .map_err(db)?;
        let applied = tx.query(&applied_sql(schema), &[]).await.map_err(db)?;
        let current = self.check_applied(schema, &applied)?;
        // Up to the first no-transaction step: it runs once this transaction committed.
        let pending: Vec<&Migration> = self
            .iter()
            .filter(|m| m.version > current)
            .take_while(|m| !m.no_transaction)
            .collect();
        if pending.is_empty() {
            return Ok((current, current));
        }
        // All pending migrations go out at once, each after the schema's search path is set
        // again (a migration's `SET search_path`, `RESET ALL` or `set_config` must not move the
        // next one); the server runs them in order, and after a failure the rest fail too
        // ("transaction is aborted"): report the first failure.
        // The path is set once more after the last one, for what the transaction runs next.
        let set_path = set_path.as_str();
        let sends = pending
            .iter()
            .flat_map(|m| [None, Some(*m)])
            .chain([None])
            .map(|m| async move {
                let sql = m.map_or(set_path, |m| m.sql.as_str());
                (m, tx.batch_execute(sql).await)
            });
        let results = join_all(sends).await;
        for (m, result) in results {
            result.map_err(|source| match m {
                Some(m) => Error::Migration {
                    schema: schema.clone(),
                    migration: m.file_name(),
                    source,
                },
                None => db(source),
            })?;
        }
        record_history(tx, schema, &pending).await.map_err(db)?;
        Ok((current, pending.last().map_or(current, |m| m.version)))
    }

    /// Checks a schema's history rows `(version, checksum)` against the list and returns the
    /// highest applied version.
    pub(crate) fn check_applied(
        &self,
        schema: &SchemaName,
        applied: &[tokio_postgres::Row],
    ) -> Result<i32> {
        let mut current = 0;
        for row in applied {
            let (version, sum): (i32, i64) = (row.get(0), row.get(1));
            match self.check_row(version, sum) {
                HistoryRow::Applied => current = current.max(version),
                HistoryRow::Changed(m) => {
                    return Err(Error::MigrationChanged {
                        schema: schema.clone(),
                        file: m.file_name(),
                    })
                }
                HistoryRow::Unknown => {
                    return Err(Error::UnknownMigration {
                        schema: schema.clone(),
                        version,
                    })
                }
            }
        }
        Ok(current)
    }

    /// Reads `schema`'s history and checks it (see [`check_applied`](Self::check_applied)).
    pub(crate) async fn verify(
        &self,
        client: &tokio_postgres::Client,
        schema: &SchemaName,
    ) -> Result<i32> {
        let rows = client
            .query_typed(&applied_sql(schema), &[])
            .await
            .map_err(|e| Error::db("reading the migration history", schema, e))?;
        self.check_applied(schema, &rows)
    }
}

/// Relation kinds compared by name between tenant schemas and `public`: tables, partitioned
/// tables, views, materialized views and foreign tables.
const NAMED_RELKINDS: &str = "('r', 'p', 'v', 'm', 'f')";

/// Tenant relations whose name is also a relation in `public`, as (schema, name), ordered:
/// those of `schema`, or with `None` those of every schema holding a migration history
/// (`public` aside). Names in `allowed` are left out, and so is the history table (always
/// schema-qualified by this crate).
pub(crate) async fn shadowed_tables(
    client: &tokio_postgres::Client,
    schema: Option<&SchemaName>,
    allowed: &[String],
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN {NAMED_RELKINDS}
           AND n.nspname <> 'public'
           AND c.relname::text <> $2
           AND NOT (c.relname::text = ANY ($3))
           AND CASE WHEN $1::text IS NULL
                    THEN EXISTS (SELECT 1 FROM pg_catalog.pg_class h
                                 WHERE h.relnamespace = n.oid AND h.relname::text = $2
                                   AND h.relkind = 'r')
                    ELSE n.nspname::text = $1 END
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_class p
                       JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
                       WHERE pn.nspname = 'public' AND p.relname = c.relname
                         AND p.relkind IN {NAMED_RELKINDS})
         ORDER BY 1, 2"
    );
    let schema = schema.map(SchemaName::as_str);
    let rows = client
        .query_typed(
            &sql,
            &[
                (&schema, Type::TEXT),
                (&HISTORY_TABLE, Type::TEXT),
                (&allowed, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Fails with [`Error::TableInPublic`] when a table of `schema` (a tenant schema) has the
/// name of a table in `public`, or, for `public`, when a table of `public` has the name of
/// a table in any tenant schema on this database; names declared with
/// [`TenantMigrations::shared_name`](crate::TenantMigrations::shared_name) on either
/// migration set (`allowed`) are allowed. Run inside the migrating transaction, after the migrations.
pub(crate) async fn refuse_shadowing(
    client: &tokio_postgres::Client,
    schema: &SchemaName,
    allowed: &[String],
) -> Result<()> {
    let target = (!schema.is_public()).then_some(schema);
    let found = shadowed_tables(client, target, allowed)
        .await
        .map_err(|e| Error::db("comparing table names with public", schema, e))?;
    // Schemas whose names would not pass validation are not tenants (doctor reports
    // registered ones).
    let first = found.into_iter().find_map(|(name, table)| {
        SchemaName::from_registry(&name)
            .ok()
            .map(|schema| (schema, table))
    });
    match first {
        Some((schema, table)) => Err(Error::TableInPublic { schema, table }),
        None => Ok(()),
    }
}

/// Records `migrations` as applied in `schema`'s history, in one statement (a migration
/// run and a baseline alike).
pub(super) async fn record_history(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    migrations: &[&Migration],
) -> Result<u64, tokio_postgres::Error> {
    let versions: Vec<i32> = migrations.iter().map(|m| m.version).collect();
    let names: Vec<&str> = migrations.iter().map(|m| m.name.as_str()).collect();
    let sums: Vec<i64> = migrations.iter().map(|m| m.checksum).collect();
    // Multi-argument `unnest` is FROM-clause syntax that only works unqualified; it still
    // resolves in `pg_catalog`, which is searched before any schema on the path.
    tx.execute_typed(
        &format!(
            "INSERT INTO {}.{HISTORY_TABLE} (version, name, checksum)
             SELECT * FROM unnest($1::int4[], $2::text[], $3::int8[])",
            schema.quoted()
        ),
        &[
            (&versions, Type::INT4_ARRAY),
            (&names, Type::TEXT_ARRAY),
            (&sums, Type::INT8_ARRAY),
        ],
    )
    .await
}

/// Creates `schema`'s migration history table if it is missing (shared with the baseline).
pub(super) fn create_history_sql(schema: &SchemaName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {s}.{HISTORY_TABLE} (
             version integer PRIMARY KEY,
             name text NOT NULL,
             checksum bigint NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
        s = schema.quoted(),
    )
}

/// The versions and checksums applied in `schema`, oldest first.
pub(super) fn applied_sql(schema: &SchemaName) -> String {
    format!(
        "SELECT version, checksum FROM {}.{HISTORY_TABLE} ORDER BY version",
        schema.quoted()
    )
}
