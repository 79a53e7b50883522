//! Moving tenants between Citus workers: [`Tenancy::move_tenant`] and
//! [`Tenancy::rebalance`]. Their value types are in [`crate::citus`]; the registry's side
//! (mode, placements, nodes) in `registry/citus.rs`.

use std::time::{Duration, Instant};

use tokio_postgres::types::Type;

use super::Tenancy;
use crate::citus::{CitusNode, MoveReport, RebalanceReport, TransferMode};
use crate::error::{Error, Result};
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
            });
        }
        let started = Instant::now();
        let port = i32::from(to.port());
        registry
            .conn()
            .await?
            .execute_typed(
                "SELECT pg_catalog.citus_schema_move(pg_catalog.to_regnamespace($1), $2, $3,
                        $4::text::citus.shard_transfer_mode)",
                &[
                    (&schema.quoted(), Type::TEXT),
                    (&to.host(), Type::TEXT),
                    (&port, Type::INT4),
                    (&mode.as_str(), Type::TEXT),
                ],
            )
            .await
            .map_err(|e| Error::db("moving a tenant", schema, e))?;
        let took = started.elapsed();
        tracing::info!(schema = %schema, from = %from, to = %to, ?took, "tenant moved");
        Ok(MoveReport {
            schema: schema.clone(),
            from,
            to: to.clone(),
            moved: true,
            took,
        })
    }

    /// Runs Citus' rebalancer (`citus_rebalance_start`, then waits for it with
    /// `citus_rebalance_wait`), which moves distributed schemas between workers until each
    /// holds about as many; returns the tenants it moved. With [`TransferMode::Auto`] the
    /// moves are online, like [`move_tenant`](Self::move_tenant)'s.
    pub async fn rebalance(&self, mode: TransferMode) -> Result<RebalanceReport> {
        let registry = self.registry();
        registry.require_citus("rebalancing").await?;
        let public = SchemaName::public();
        let db = |e| Error::db("rebalancing", &public, e);
        let before = registry.placements().await?;
        let started = Instant::now();
        let conn = registry.conn().await?;
        let job: Option<i64> = conn
            .query_typed_one(
                "SELECT pg_catalog.citus_rebalance_start(
                        shard_transfer_mode => $1::text::citus.shard_transfer_mode)",
                &[(&mode.as_str(), Type::TEXT)],
            )
            .await
            .map_err(db)?
            .get(0);
        if job.is_some() {
            conn.batch_execute("SELECT pg_catalog.citus_rebalance_wait()")
                .await
                .map_err(db)?;
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
