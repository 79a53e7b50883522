//! A baseline: recording a schema's migrations up to a version as applied, without running
//! them, for schemas that already hold what those migrations create (a deployment adopted
//! from another tool: Flyway's `baseline`, Django's `migrate --fake`).

use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use super::apply::{applied_sql, create_history_sql, record_history, HISTORY_TABLE};
use super::set::{Migration, TenantMigrations};
use crate::error::{Error, Result};
use crate::schema::SchemaName;
use crate::shard::ShardName;

/// What a baseline did to one schema: its version before and after. `from == to` when the
/// schema's history already covered the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baselined {
    /// The schema.
    pub schema: SchemaName,
    /// The database (shard) it lives on.
    pub shard: ShardName,
    /// Its version before.
    pub from: i32,
    /// Its version after: the newest migration at or below the baseline version, or the
    /// version its history had when that was newer.
    pub to: i32,
}

impl TenantMigrations {
    /// Fails with [`Error::BaselineVersion`] unless `version` is between 0 and the newest
    /// migration's.
    pub(crate) fn check_baseline(&self, version: i32) -> Result<()> {
        let latest = self.latest();
        if (0..=latest).contains(&version) {
            Ok(())
        } else {
            Err(Error::BaselineVersion { version, latest })
        }
    }

    /// Records every migration up to `version` that `schema`'s history lacks as applied,
    /// inside `tx`, without running it; the history table is created when missing, and what
    /// it holds is checked first as by a migration run (a changed or unknown migration is
    /// an error). Returns (version before, version after).
    ///
    /// The schema must exist ([`Error::SchemaMissing`]) and, when anything is recorded, hold
    /// a table ([`Error::BaselineRefused`]): an empty schema cannot have had its migrations
    /// applied.
    pub(crate) async fn baseline(
        &self,
        tx: &Transaction<'_>,
        schema: &SchemaName,
        version: i32,
    ) -> Result<(i32, i32)> {
        self.check_baseline(version)?;
        let db = |e| Error::db("recording a baseline", schema, e);
        let found = tx
            .query_typed_one(
                "SELECT n.oid IS NOT NULL,
                        (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c
                         WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
                           AND c.relname <> $2)
                 FROM (SELECT 1) one
                 LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = $1",
                &[(&schema.as_str(), Type::TEXT), (&HISTORY_TABLE, Type::TEXT)],
            )
            .await
            .map_err(db)?;
        let (exists, tables): (bool, i64) = (found.get(0), found.get(1));
        if !exists {
            return Err(Error::SchemaMissing {
                schema: schema.clone(),
            });
        }
        // The same table `apply` creates.
        tx.batch_execute(&create_history_sql(schema))
            .await
            .map_err(db)?;
        let applied = tx.query(&applied_sql(schema), &[]).await.map_err(db)?;
        let current = self.check_applied(schema, &applied)?;
        let recorded: Vec<i32> = applied.iter().map(|r| r.get(0)).collect();
        let missing: Vec<&Migration> = self
            .iter()
            .filter(|m| m.version <= version && !recorded.contains(&m.version))
            .collect();
        if missing.is_empty() {
            return Ok((current, current));
        }
        if tables == 0 {
            return Err(Error::BaselineRefused {
                schema: schema.clone(),
                version,
                reason: "it holds no table, so its migrations cannot have been applied \
                         (create the tenant instead, or baseline at 0)",
            });
        }
        record_history(tx, schema, &missing).await.map_err(db)?;
        let to = missing.iter().map(|m| m.version).fold(current, i32::max);
        tracing::info!(schema = %schema, from = current, to, "baseline recorded");
        Ok((current, to))
    }
}
