use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio_postgres::types::Type;

use super::TenantResolver;
use crate::databases;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::schema::SchemaName;
use crate::tenant::{Tenant, TenantStatus};

const LOOKUP_SQL: &str = "
SELECT t.id, t.schema_name, t.name, t.shard, t.status
FROM public.tenant_schemas_domains d
JOIN public.tenant_schemas_tenants t ON t.id = d.tenant_id
WHERE d.domain = $1";

/// Looks hosts up in the [registry](crate::Registry) tables in `public`: any of a tenant's
/// domains resolves to it, with its [state](crate::TenantStatus); the request path decides
/// how a tenant that is not active is answered.
///
/// Each lookup is one indexed query; wrap the resolver in a
/// [`CachedResolver`](crate::CachedResolver) so that most requests need none.
#[derive(Debug, Clone)]
pub struct RegistryResolver {
    pool: Pool,
}

impl RegistryResolver {
    /// A resolver reading the registry through `pool`.
    #[must_use]
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl TenantResolver for RegistryResolver {
    async fn resolve(&self, host: &Host) -> Result<Option<Tenant>> {
        let public = SchemaName::public();
        let conn = databases::connect(&self.pool, &public).await?;
        // The statement names its tables with their schema, so the connection's search path
        // does not matter here. It is unnamed and sent with its parameter type in one round
        // trip, which also works through PgBouncer in transaction pooling mode.
        let row = conn
            .query_typed_opt(LOOKUP_SQL, &[(&host.as_str(), Type::TEXT)])
            .await
            .map_err(|e| Error::db("looking up a host", &public, e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(
            Tenant::new(SchemaName::from_registry(row.get(1))?)
                .with_name(row.get::<_, &str>(2))
                .with_id(row.get(0))
                .with_shard(row.get::<_, &str>(3))
                .with_status(TenantStatus::from_db(row.get(4))),
        ))
    }
}
