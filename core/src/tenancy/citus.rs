//! Moving tenants between Citus workers: [`Tenancy::move_tenant`] and
//! [`Tenancy::rebalance`]. Their value types are in [`crate::citus`]; the registry's side
//! (mode, placements, nodes) in `registry/citus.rs`.

use std::time::{Duration, Instant};

use tokio_postgres::types::{ToSql, Type};

use super::Tenancy;
use crate::citus::{CitusNode, MoveReport, RebalanceReport, TransferMode};
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::schema::SchemaName;

impl Tenancy {
    /// Moves the tenant in `schema` to the Citus worker `to` with `citus_schema_move`: with
    /// [`TransferMode::Auto`], online by logical replication (the tenant's requests keep
    /// working; its writes wait only during the cut-over). Returns at once, with
    /// [`MoveReport::moved`] `false`, when the tenant is already there.
    ///
    /// Fails with [`Error::Citus`] when the database is not a Citus coordinator, and with
    /// [`Error::TenantNotFound`] for a schema the registry does not have; Citus refuses a
    /// schema without tables ("it is empty") and an unknown node. Nothing is cached about
    /// placement: the coordinator routes every statement to where the tenant is.
    pub async fn move_tenant(
        &self,
        schema: &SchemaName,
        to: &CitusNode,
        mode: TransferMode,
    ) -> Result<MoveReport> {
        let registry = self.registry();
        registry.require_citus("moving a tenant").await?;
        let record = registry.get(schema).await?;
        if record.schema.is_public() || !record.shard.is_default() {
            return Err(Error::Citus {
                reason: format!(
                    "tenant `{schema}` is not a distributed schema of the coordinator, so Citus cannot move it"
                ),
            });
        }
        let from = registry
            .placement(schema)
            .await?
            .ok_or_else(|| Error::Citus {
                reason: format!(
                    "tenant `{schema}` has no tables yet, so it is on no node and cannot be moved"
                ),
            })?;
        if &from == to {
            return Ok(MoveReport {
                schema: schema.clone(),
                from,
                to: to.clone(),
                moved: false,
                took: Duration::ZERO,
                writes_held: Duration::ZERO,
            });
        }
        let started = Instant::now();
        let port = i32::from(to.port());
        let shard = registry.anchor_shard(schema).await?;
        let (quoted, host, mode_name) = (schema.quoted(), to.host(), mode.as_str());
        let params: [(&(dyn ToSql + Sync), Type); 4] = [
            (&quoted, Type::TEXT),
            (&host, Type::TEXT),
            (&port, Type::INT4),
            (&mode_name, Type::TEXT),
        ];
        let held = retry_after_leftovers(|| {
            transfer_fenced(
                registry,
                schema,
                shard,
                &from,
                "SELECT pg_catalog.citus_schema_move(pg_catalog.to_regnamespace($1), $2, $3,
                        $4::text::citus.shard_transfer_mode)",
                &params,
            )
        })
        .await?;
        let took = started.elapsed();
        tracing::info!(schema = %schema, from = %from, to = %to, ?took, ?held, "tenant moved");
        Ok(MoveReport {
            schema: schema.clone(),
            from,
            to: to.clone(),
            moved: true,
            took,
            writes_held: held,
        })
    }

    /// Rebalances the workers: asks Citus' rebalancer for its plan
    /// (`get_rebalance_table_shards_plan`, which moves distributed schemas between workers
    /// until each holds about as many) and runs its moves one after the other, each like
    /// [`move_tenant`](Self::move_tenant)'s (with `citus_move_shard_placement`, under the same
    /// cut-over fence, so no acknowledged write is lost); returns the tenants it moved. With
    /// [`TransferMode::Auto`] the moves are online.
    ///
    /// Citus' own background rebalancer (`citus_rebalance_start`) is not used: its moves run
    /// in background workers this library cannot fence (see the module docs).
    pub async fn rebalance(&self, mode: TransferMode) -> Result<RebalanceReport> {
        let registry = self.registry();
        registry.require_citus("rebalancing").await?;
        let public = SchemaName::public();
        let db = |e| Error::db("rebalancing", &public, e);
        let before = registry.placements().await?;
        let started = Instant::now();
        let steps = registry
            .conn()
            .await?
            .query_typed(
                "SELECT shardid, sourcename::text, sourceport, targetname::text, targetport
                 FROM pg_catalog.get_rebalance_table_shards_plan()",
                &[],
            )
            .await
            .map_err(db)?;
        for step in steps {
            let shard: i64 = step.get(0);
            let source_port: i32 = step.get(2);
            let target_port: i32 = step.get(4);
            let source = CitusNode::new(
                step.get::<_, String>(1),
                u16::try_from(source_port).unwrap_or_default(),
            );
            let target_host: String = step.get(3);
            let (source_host, mode_name) = (source.host(), mode.as_str());
            let params: [(&(dyn ToSql + Sync), Type); 6] = [
                (&shard, Type::INT8),
                (&source_host, Type::TEXT),
                (&source_port, Type::INT4),
                (&target_host, Type::TEXT),
                (&target_port, Type::INT4),
                (&mode_name, Type::TEXT),
            ];
            retry_after_leftovers(|| {
                transfer_fenced(
                    registry,
                    &public,
                    shard,
                    &source,
                    "SELECT pg_catalog.citus_move_shard_placement($1, $2, $3, $4, $5,
                            $6::text::citus.shard_transfer_mode)",
                    &params,
                )
            })
            .await?;
        }
        let took = started.elapsed();
        let after = registry.placements().await?;
        let moved = after
            .into_iter()
            .filter_map(|a| {
                let was = before.iter().find(|b| b.schema == a.schema)?.node.clone()?;
                let now = a.node?;
                (was != now).then_some((a.schema, was, now))
            })
            .collect();
        Ok(RebalanceReport { moved, took })
    }
}

/// How many times a move refused for a previous move's leftover is tried.
const LEFTOVER_ATTEMPTS: u32 = 3;

/// Runs `transfer` again (up to [`LEFTOVER_ATTEMPTS`] times, a second apart) while Citus
/// refuses it because the old placement of a previous move is still there: Citus drops it
/// before a move with a 1 s lock timeout, which its background cleaner dropping the same
/// placement at that moment can exceed ("the orphaned shard … could not be cleaned up").
/// Citus refuses before it copies anything, so trying again is safe.
async fn retry_after_leftovers<F, Fut>(transfer: F) -> Result<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Duration>>,
{
    let mut attempt = 1;
    loop {
        match transfer().await {
            Err(e)
                if attempt < LEFTOVER_ATTEMPTS
                    && e.to_string().contains("could not be cleaned up") =>
            {
                tracing::debug!(error = %e, attempt, "a previous move's leftover is in the way; trying again");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// How often the fence looks whether the move waits for it.
const FENCE_POLL: Duration = Duration::from_millis(10);

/// Whether the mover (`$1`) waits for the shard metadata lock this session holds, and no
/// other session holds it any more (the writes that took it before have ended).
const MOVER_WAITS: &str = "
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_locks f JOIN pg_catalog.pg_locks w
      ON (w.locktype, w.database, w.classid, w.objid, w.objsubid)
         IS NOT DISTINCT FROM (f.locktype, f.database, f.classid, f.objid, f.objsubid)
    WHERE f.pid = pg_catalog.pg_backend_pid() AND f.granted AND f.locktype = 'advisory'
      AND w.pid = $1 AND NOT w.granted)
AND NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_locks f JOIN pg_catalog.pg_locks o
      ON (o.locktype, o.database, o.classid, o.objid, o.objsubid)
         IS NOT DISTINCT FROM (f.locktype, f.database, f.classid, f.objid, f.objsubid)
    WHERE f.pid = pg_catalog.pg_backend_pid() AND f.granted AND f.locktype = 'advisory'
      AND o.pid <> f.pid AND o.granted)";

/// Makes the source worker write and flush its WAL up to now: a transaction that writes WAL
/// (a temporary table's catalog rows) committed with `synchronous_commit` on flushes every
/// earlier record, the commits of writes acknowledged with `synchronous_commit = off` too.
const FLUSH_WAL: &str = "DO $flush$ BEGIN
    PERFORM pg_catalog.set_config('synchronous_commit', 'on', true);
    CREATE TEMPORARY TABLE tenant_schemas_wal_flush () ON COMMIT DROP;
END $flush$";

/// Runs a Citus shard transfer (`sql`, a `citus_schema_move` or `citus_move_shard_placement`
/// of the shard group of `shard`, now on `source`) under the *cut-over fence*; returns how
/// long writes were held at the cut-over.
///
/// Why: Citus' logical-replication move blocks writes, then waits until the target has
/// replayed the source's WAL up to `pg_current_wal_lsn()` — the source's WAL *write*
/// position — and switches the placement. With `synchronous_commit = off` on the source
/// worker, a write is acknowledged before its commit record is written, so the last writes
/// before the block can lie beyond that position: they are never replicated, stay in the
/// old placement (dropped later) and are lost. See docs/scaling.md ("Citus").
///
/// The fence: before the move starts, a second session takes the shard group's metadata
/// lock in share mode (`lock_shard_metadata`, the lock every write through the coordinator
/// takes), so the move stops where it blocks writes (it asks for that lock exclusively);
/// from then on new writes queue behind the move. Once the writes that held the lock have
/// ended, the fence flushes the source worker's WAL and lets the move go on: every
/// acknowledged write is then within what the target replays. Reads are never held.
async fn transfer_fenced(
    registry: &Registry,
    label: &SchemaName,
    shard: i64,
    source: &CitusNode,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Duration> {
    let db = |action: &'static str| move |e| Error::db(action, label, e);
    let mut fence = registry.conn().await?;
    let mover = registry.conn().await?;
    let mover_pid: i32 = mover
        .query_typed_one("SELECT pg_catalog.pg_backend_pid()", &[])
        .await
        .map_err(db("moving a tenant"))?
        .get(0);
    let tx = fence
        .transaction()
        .await
        .map_err(db("fencing a tenant's cut-over"))?;
    tx.query_typed(
        "SELECT pg_catalog.lock_shard_metadata(5, ARRAY[$1::bigint])",
        &[(&shard, Type::INT8)],
    )
    .await
    .map_err(db("fencing a tenant's cut-over"))?;
    let moving = mover.execute_typed(sql, params);
    tokio::pin!(moving);
    let outcome = {
        let fenced = async {
            loop {
                tokio::time::sleep(FENCE_POLL).await;
                let waits: bool = tx
                    .query_typed_one(MOVER_WAITS, &[(&mover_pid, Type::INT4)])
                    .await
                    .map_err(db("fencing a tenant's cut-over"))?
                    .get(0);
                if waits {
                    break;
                }
            }
            let held = Instant::now();
            flush_wal(&tx, label, source).await?;
            Ok::<_, Error>(held)
        };
        tokio::pin!(fenced);
        tokio::select! {
            moved = &mut moving => Err(moved),
            fenced = &mut fenced => Ok(fenced),
        }
    };
    match outcome {
        // The move ended without asking for the lock: it failed (or did not need to cut over).
        Err(moved) => {
            drop(tx);
            moved.map_err(db("moving a tenant"))?;
            Ok(Duration::ZERO)
        }
        Ok(Ok(held)) => {
            tx.commit()
                .await
                .map_err(db("fencing a tenant's cut-over"))?;
            moving.await.map_err(db("moving a tenant"))?;
            Ok(held.elapsed())
        }
        Ok(Err(e)) => {
            // The move must not cut over unfenced: cancel it while the lock is still held.
            if let Ok(conn) = registry.conn().await {
                let _ = conn
                    .query_typed(
                        "SELECT pg_catalog.pg_cancel_backend($1)",
                        &[(&mover_pid, Type::INT4)],
                    )
                    .await;
            }
            let _ = moving.await;
            drop(tx);
            Err(e)
        }
    }
}

/// Flushes the WAL of `node` (see [`FLUSH_WAL`]), through the coordinator.
async fn flush_wal(
    tx: &tokio_postgres::Transaction<'_>,
    label: &SchemaName,
    node: &CitusNode,
) -> Result<()> {
    let port = i32::from(node.port());
    let row = tx
        .query_typed_one(
            "SELECT success, result FROM pg_catalog.master_run_on_worker(
                 ARRAY[$1::text], ARRAY[$2::int4], ARRAY[$3::text], false)",
            &[
                (&node.host(), Type::TEXT),
                (&port, Type::INT4),
                (&FLUSH_WAL, Type::TEXT),
            ],
        )
        .await
        .map_err(|e| Error::db("flushing the source worker's WAL", label, e))?;
    if row.get::<_, bool>(0) {
        Ok(())
    } else {
        Err(Error::Citus {
            reason: format!(
                "flushing the WAL of {node} before `{label}` cuts over failed: {}",
                row.get::<_, String>(1)
            ),
        })
    }
}
