//! A tenant's domains: any of them resolves to it, one is its primary domain.

use tokio_postgres::types::Type;

use super::lifecycle::conflict;
use super::notify::announce;
use super::Registry;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::schema::SchemaName;

impl Registry {
    /// Adds `domain` to the tenant in `schema`; with `primary`, it replaces the primary domain.
    pub(crate) async fn add_domain(
        &self,
        schema: &SchemaName,
        domain: &Host,
        primary: bool,
    ) -> Result<()> {
        let db = |e| Error::db("adding a domain", schema, e);
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db)?;
        let id = tenant_id(&tx, schema).await?;
        if primary {
            tx.execute_typed(
                "UPDATE public.tenant_schemas_domains SET is_primary = false
                 WHERE tenant_id = $1 AND is_primary",
                &[(&id, Type::INT8)],
            )
            .await
            .map_err(db)?;
        }
        tx.execute_typed(
            "INSERT INTO public.tenant_schemas_domains (domain, tenant_id, is_primary)
             VALUES ($1, $2, $3)",
            &[
                (&domain.as_str(), Type::TEXT),
                (&id, Type::INT8),
                (&primary, Type::BOOL),
            ],
        )
        .await
        .map_err(|e| conflict(e, schema, std::slice::from_ref(domain)))?;
        announce(&tx, schema, &[domain.as_str()])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// Removes `domain` from the tenant in `schema`.
    pub(crate) async fn remove_domain(&self, schema: &SchemaName, domain: &Host) -> Result<()> {
        let removed = self
            .change(
                schema,
                "removing a domain",
                &[domain.as_str()],
                "DELETE FROM public.tenant_schemas_domains d
                 USING public.tenant_schemas_tenants t
                 WHERE d.tenant_id = t.id AND t.schema_name = $1 AND d.domain = $2",
                &[
                    (&schema.as_str(), Type::TEXT),
                    (&domain.as_str(), Type::TEXT),
                ],
            )
            .await?;
        if removed == 0 {
            return Err(Error::domain_not_found(domain, schema));
        }
        Ok(())
    }

    /// Makes `domain`, already one of the tenant's domains, its primary domain.
    pub(crate) async fn set_primary_domain(
        &self,
        schema: &SchemaName,
        domain: &Host,
    ) -> Result<()> {
        let db = |e| Error::db("changing the primary domain", schema, e);
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db)?;
        let id = tenant_id(&tx, schema).await?;
        tx.execute_typed(
            "UPDATE public.tenant_schemas_domains SET is_primary = false WHERE tenant_id = $1 AND is_primary",
            &[(&id, Type::INT8)],
        )
        .await
        .map_err(db)?;
        let changed = tx
            .execute_typed(
                "UPDATE public.tenant_schemas_domains SET is_primary = true WHERE tenant_id = $1 AND domain = $2",
                &[(&id, Type::INT8), (&domain.as_str(), Type::TEXT)],
            )
            .await
            .map_err(db)?;
        if changed == 0 {
            return Err(Error::domain_not_found(domain, schema));
        }
        announce(&tx, schema, &[]).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }
}

async fn tenant_id(tx: &tokio_postgres::Transaction<'_>, schema: &SchemaName) -> Result<i64> {
    let row = tx
        .query_typed_opt(
            "SELECT id FROM public.tenant_schemas_tenants WHERE schema_name = $1 FOR UPDATE",
            &[(&schema.as_str(), Type::TEXT)],
        )
        .await
        .map_err(|e| Error::db("reading the registry", schema, e))?;
    row.map(|r| r.get(0))
        .ok_or_else(|| Error::tenant_not_found(schema))
}
