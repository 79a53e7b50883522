//! What tenants' schemas hold, and their storage quotas.

use tokio_postgres::types::Type;

use super::Registry;
use crate::error::{Error, Result};
use crate::receipt::SchemaUsage;
use crate::schema::SchemaName;

impl Registry {
    /// Every registered tenant's schema size (one catalog query per database), by schema.
    pub(crate) async fn usage(&self) -> Result<Vec<SchemaUsage>> {
        let tenants = self.list().await?;
        let mut out = Vec::with_capacity(tenants.len());
        for (shard, _) in self.databases.iter() {
            let here: Vec<_> = tenants
                .iter()
                .filter(|t| &t.shard == shard && !t.schema.is_public())
                .collect();
            if here.is_empty() {
                continue;
            }
            let names: Vec<&str> = here.iter().map(|t| t.schema.as_str()).collect();
            let public = SchemaName::public();
            let rows = self
                .databases
                .connect(shard, &public)
                .await?
                .query_typed(
                    "SELECT n.nspname::text,
                            coalesce(pg_catalog.sum(pg_catalog.pg_total_relation_size(c.oid))
                                     FILTER (WHERE c.relkind IN ('r', 'm')), 0)::bigint,
                            pg_catalog.count(c.oid) FILTER (WHERE c.relkind IN ('r', 'p')
                                                            AND NOT c.relispartition)
                     FROM pg_catalog.pg_namespace n
                     LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid
                     WHERE n.nspname = ANY ($1)
                     GROUP BY 1",
                    &[(&names, Type::TEXT_ARRAY)],
                )
                .await
                .map_err(|e| Error::db("measuring tenants' schemas", &public, e))?;
            for tenant in here {
                let row = rows
                    .iter()
                    .find(|r| r.get::<_, String>(0) == tenant.schema.as_str());
                let (bytes, tables) =
                    row.map_or((0, 0), |r| (r.get::<_, i64>(1), r.get::<_, i64>(2)));
                out.push(SchemaUsage {
                    schema: tenant.schema.clone(),
                    shard: tenant.shard.clone(),
                    status: tenant.status,
                    bytes: u64::try_from(bytes).unwrap_or(0),
                    tables: u64::try_from(tables).unwrap_or(0),
                    storage_quota: tenant.storage_quota,
                });
            }
        }
        out.sort_by(|a, b| a.schema.cmp(&b.schema));
        Ok(out)
    }

    /// Sets or clears (`None`) a tenant's storage quota.
    pub(crate) async fn set_storage_quota(
        &self,
        schema: &SchemaName,
        bytes: Option<u64>,
    ) -> Result<()> {
        let bytes = bytes.map(|b| i64::try_from(b.max(1)).unwrap_or(i64::MAX));
        let action = "changing a tenant's storage quota";
        self.set_field(schema, action, "storage_quota", &bytes, Type::INT8)
            .await
    }
}
