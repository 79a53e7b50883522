//! Steps that cannot run in a transaction ([`Migration::no_transaction`]), typically
//! `CREATE INDEX CONCURRENTLY`: run on a connection of their own, after the transactional
//! migrations before them committed, under `SET lock_timeout`, retried on lock timeouts,
//! and recorded only once they succeeded.
//!
//! A concurrent build that fails leaves an invalid index behind (`pg_index.indisvalid =
//! false`). After a lock timeout the step drops the invalid indexes its attempt left before
//! trying again; after any other failure they stay, for the doctor to report and repair
//! ([`invalid_indexes`]). Steps hold a shared advisory lock ([`STEP_LOCK`]) on their database
//! while they run, the doctor's repair an exclusive one: it never drops an index a build is
//! still making.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::set::{LockSettings, Migration};
use crate::error::{Error, Result};
use crate::schema::{search_path, SchemaName};

/// Held shared by running no-transaction steps, exclusively by the doctor's index repair.
pub(crate) const STEP_LOCK: i64 = 0x7465_6e61_6e74_6978;

/// The invalid indexes of `schema` (all schemas with `None`), as (schema, index, oid),
/// ordered.
pub(crate) async fn invalid_indexes(
    client: &Client,
    schema: Option<&SchemaName>,
) -> Result<Vec<(String, String, u32)>, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            "SELECT n.nspname::text, c.relname::text, c.oid
             FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE NOT i.indisvalid AND ($1::text IS NULL OR n.nspname::text = $1)
             ORDER BY 1, 2",
            &[(&schema.map(SchemaName::as_str), Type::TEXT)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Runs the no-transaction `step` in `schema` over `client`, a connection nobody else uses
/// and that is closed afterwards (its session keeps the search path, the lock timeout and
/// the shared [`STEP_LOCK`]). Does not record it.
pub(crate) async fn run_step(
    client: &Client,
    schema: &SchemaName,
    step: &Migration,
    locks: LockSettings,
) -> Result<()> {
    let db = |e| Error::db("running a no-transaction migration", schema, e);
    client
        .query_typed(
            "SELECT pg_catalog.pg_advisory_lock_shared($1)",
            &[(&STEP_LOCK, Type::INT8)],
        )
        .await
        .map_err(db)?;
    client
        .batch_execute(&format!(
            "SET search_path TO {}; SET lock_timeout = {}",
            search_path(schema, &[]),
            locks.timeout.as_millis().max(1)
        ))
        .await
        .map_err(db)?;
    let mut backoff = Duration::from_millis(250);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = invalid_indexes(client, Some(schema)).await.map_err(db)?;
        let source = match client.batch_execute(&step.sql).await {
            Ok(()) => break,
            Err(e) => e,
        };
        if source.code() != Some(&SqlState::LOCK_NOT_AVAILABLE) {
            // Its invalid index (if any) stays, for the doctor.
            return Err(Error::Migration {
                schema: schema.clone(),
                migration: step.file_name(),
                source,
            });
        }
        // A build that timed out after its index was made leaves it invalid: dropped, or
        // the next attempt would find the name taken.
        for (s, index, oid) in invalid_indexes(client, Some(schema)).await.map_err(db)? {
            if !before.iter().any(|b| b.2 == oid) {
                let _ = client
                    .batch_execute(&format!(
                        "DROP INDEX CONCURRENTLY IF EXISTS {}.{}",
                        quote(&s),
                        quote(&index)
                    ))
                    .await;
            }
        }
        if attempt > locks.retries {
            return Err(Error::MigrationLockTimeout {
                schema: schema.clone(),
                migration: step.file_name(),
                attempts: attempt,
                timeout: locks.timeout,
                source,
            });
        }
        tracing::info!(schema = %schema, migration = %step.file_name(), attempt, "lock timeout, retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    // `CREATE INDEX CONCURRENTLY IF NOT EXISTS` succeeds over an invalid index of that name:
    // not a success to record.
    let left = invalid_indexes(client, Some(schema)).await.map_err(db)?;
    if let Some((_, index, _)) = left.first() {
        return Err(Error::InvalidIndex {
            schema: schema.clone(),
            migration: step.file_name(),
            index: index.clone(),
        });
    }
    Ok(())
}

/// `name` as a quoted identifier.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
