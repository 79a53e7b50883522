//! Citus' side of the registry: whether the registry's database is a Citus coordinator
//! ([`CitusMode`]), creating distributed schemas, and where each tenant lives
//! ([`Registry::placements`], [`Registry::citus_nodes`]). The value types are in
//! [`crate::citus`]; moving tenants is [`Tenancy::move_tenant`](crate::Tenancy::move_tenant).

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::OnceCell;
use tokio_postgres::types::Type;

use super::Registry;
use crate::citus::{CitusNode, Placement};
use crate::error::{Error, Result};
use crate::schema::SchemaName;

/// Whether the default database runs Citus, detected once or set by the builder.
#[derive(Debug, Clone, Default)]
pub(crate) struct CitusMode(Arc<OnceCell<bool>>);

impl CitusMode {
    /// Set up front (by [`TenancyBuilder::citus`](crate::TenancyBuilder::citus)).
    pub(crate) fn fixed(on: bool) -> Self {
        Self(Arc::new(OnceCell::new_with(Some(on))))
    }

    /// Whether Citus is on: the builder's setting, or whether the `citus` extension is
    /// installed in the database of `pool` (asked once).
    pub(crate) async fn get(&self, pool: &Pool) -> Result<bool> {
        self.0
            .get_or_try_init(|| async {
                let public = SchemaName::public();
                let conn = crate::databases::connect(pool, &public).await?;
                let row = conn
                    .query_typed_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus')",
                        &[],
                    )
                    .await
                    .map_err(|e| Error::db("looking for the citus extension", &public, e))?;
                Ok(row.get(0))
            })
            .await
            .copied()
    }
}

/// Makes the next `CREATE SCHEMA` in `tx` a distributed schema.
pub(crate) async fn distribute_new_schemas(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &SchemaName,
) -> Result<()> {
    tx.batch_execute("SET LOCAL citus.enable_schema_based_sharding = on")
        .await
        .map_err(|e| Error::db("creating a distributed schema", schema, e))
}

const PLACEMENTS: &str = "
SELECT DISTINCT n.nspname::text AS schema_name, nd.nodename::text, nd.nodeport
FROM pg_catalog.pg_dist_schema ds
JOIN pg_catalog.pg_namespace n ON n.oid = ds.schemaid
LEFT JOIN pg_catalog.pg_dist_partition p ON p.colocationid = ds.colocationid
LEFT JOIN pg_catalog.pg_dist_shard s ON s.logicalrelid = p.logicalrelid
LEFT JOIN pg_catalog.pg_dist_placement pl ON pl.shardid = s.shardid
LEFT JOIN pg_catalog.pg_dist_node nd ON nd.groupid = pl.groupid AND nd.noderole = 'primary'
ORDER BY 1, 2, 3";

impl Registry {
    /// Whether the registry's database is a Citus coordinator (see the [module](crate::citus)
    /// docs): as set with [`TenancyBuilder::citus`](crate::TenancyBuilder::citus), or
    /// whether the `citus` extension is installed there (looked up once).
    pub async fn is_citus(&self) -> Result<bool> {
        self.citus.get(self.databases().default()).await
    }

    pub(crate) async fn require_citus(&self, what: &'static str) -> Result<()> {
        if self.is_citus().await? {
            Ok(())
        } else {
            Err(Error::Citus {
                reason: format!(
                    "{what} needs a Citus coordinator, and this database has no citus extension"
                ),
            })
        }
    }

    /// Where each distributed schema of the coordinator lives, by schema name (from Citus'
    /// metadata on the coordinator, so it answers while a worker is down). Fails with
    /// [`Error::Citus`] when the database is not a Citus coordinator.
    pub async fn placements(&self) -> Result<Vec<Placement>> {
        self.require_citus("reading placements").await?;
        let public = SchemaName::public();
        let rows = self
            .conn()
            .await?
            .query_typed(PLACEMENTS, &[])
            .await
            .map_err(|e| Error::db("reading placements", &public, e))?;
        let mut out: Vec<Placement> = Vec::new();
        for row in rows {
            // Names Citus distributed that this library would not create are skipped.
            let Ok(schema) = SchemaName::from_registry(row.get(0)) else {
                continue;
            };
            let host: Option<String> = row.get(1);
            let port: Option<i32> = row.get(2);
            let node = host
                .zip(port.and_then(|p| u16::try_from(p).ok()))
                .map(|(h, p)| CitusNode::new(h, p));
            // A schema's tables are co-located: one node (the first if a move is half done).
            if out.last().is_some_and(|p| p.schema == schema) {
                continue;
            }
            out.push(Placement { schema, node });
        }
        Ok(out)
    }

    /// Where the tenant in `schema` lives; `None` when its schema has no tables yet.
    pub async fn placement(&self, schema: &SchemaName) -> Result<Option<CitusNode>> {
        Ok(self
            .placements()
            .await?
            .into_iter()
            .find(|p| &p.schema == schema)
            .and_then(|p| p.node))
    }

    /// A shard of the tenant in `schema` (its tables' shards are co-located: they share one
    /// placement and one metadata lock); [`Error::Citus`] when it has no tables.
    pub(crate) async fn anchor_shard(&self, schema: &SchemaName) -> Result<i64> {
        self.conn()
            .await?
            .query_typed_opt(
                "SELECT min(s.shardid) FROM pg_catalog.pg_dist_schema ds
                 JOIN pg_catalog.pg_dist_partition p ON p.colocationid = ds.colocationid
                 JOIN pg_catalog.pg_dist_shard s ON s.logicalrelid = p.logicalrelid
                 WHERE ds.schemaid = pg_catalog.to_regnamespace($1)
                 HAVING min(s.shardid) IS NOT NULL",
                &[(&schema.quoted(), Type::TEXT)],
            )
            .await
            .map_err(|e| Error::db("finding the tenant's shards", schema, e))?
            .map(|row| row.get(0))
            .ok_or_else(|| Error::Citus {
                reason: format!("tenant `{schema}` has no shards, so it cannot be moved"),
            })
    }

    /// The workers tenants can be placed on: the active primary nodes that take shards.
    pub async fn citus_nodes(&self) -> Result<Vec<CitusNode>> {
        self.require_citus("listing the nodes").await?;
        let public = SchemaName::public();
        let rows = self
            .conn()
            .await?
            .query_typed(
                "SELECT nodename::text, nodeport FROM pg_catalog.pg_dist_node
                 WHERE isactive AND noderole = 'primary' AND shouldhaveshards
                 ORDER BY nodename, nodeport",
                &[],
            )
            .await
            .map_err(|e| Error::db("listing the nodes", &public, e))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let port: i32 = r.get(1);
                Some(CitusNode::new(
                    r.get::<_, String>(0),
                    u16::try_from(port).ok()?,
                ))
            })
            .collect())
    }
}
