//! The registry's tables.

use tokio_postgres::types::Type;

use super::Registry;
use crate::error::{Error, Result};
use crate::schema::SchemaName;

/// Serializes [`Registry::install`] across processes (an arbitrary constant: "tenantsc").
const INSTALL_LOCK: i64 = 0x7465_6e61_6e74_7363;

const INSTALL_SQL: &str = "
CREATE TABLE IF NOT EXISTS public.tenant_schemas_tenants (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schema_name text NOT NULL UNIQUE CHECK (schema_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    version     integer NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS public.tenant_schemas_domains (
    domain     text PRIMARY KEY CHECK (domain = pg_catalog.lower(domain) AND pg_catalog.length(domain) BETWEEN 1 AND 253),
    tenant_id  bigint NOT NULL REFERENCES public.tenant_schemas_tenants (id) ON DELETE CASCADE,
    is_primary boolean NOT NULL DEFAULT false
);
ALTER TABLE public.tenant_schemas_tenants
    ADD COLUMN IF NOT EXISTS shard text NOT NULL DEFAULT 'default';
ALTER TABLE public.tenant_schemas_tenants
    ADD COLUMN IF NOT EXISTS max_connections integer CHECK (max_connections > 0);
ALTER TABLE public.tenant_schemas_tenants
    ADD COLUMN IF NOT EXISTS storage_quota bigint CHECK (storage_quota > 0);
ALTER TABLE public.tenant_schemas_tenants
    ADD COLUMN IF NOT EXISTS statement_timeout_ms integer CHECK (statement_timeout_ms > 0);
ALTER TABLE public.tenant_schemas_tenants
    ADD COLUMN IF NOT EXISTS role text UNIQUE CHECK (role ~ '^ts_[0-9a-f]{16}$');
CREATE TABLE IF NOT EXISTS public.tenant_schemas_shared_names (
    name        text PRIMARY KEY CHECK (pg_catalog.length(name) BETWEEN 1 AND 63),
    declared_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX IF NOT EXISTS tenant_schemas_domains_tenant_idx
    ON public.tenant_schemas_domains (tenant_id);
CREATE UNIQUE INDEX IF NOT EXISTS tenant_schemas_domains_one_primary
    ON public.tenant_schemas_domains (tenant_id) WHERE is_primary;
DO $upgrade$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                   WHERE conname = 'tenant_schemas_tenants_states'
                     AND conrelid = 'public.tenant_schemas_tenants'::pg_catalog.regclass) THEN
        ALTER TABLE public.tenant_schemas_tenants
            DROP CONSTRAINT IF EXISTS tenant_schemas_tenants_status_check;
        ALTER TABLE public.tenant_schemas_tenants
            ADD CONSTRAINT tenant_schemas_tenants_states CHECK (status IN
                ('active', 'read_only', 'maintenance', 'suspended', 'archived'));
    END IF;
END
$upgrade$;
";

/// Whether the tables of [`INSTALL_SQL`] exist, with every column it adds.
const INSTALLED_SQL: &str = "
SELECT pg_catalog.to_regclass('public.tenant_schemas_tenants') IS NOT NULL
   AND pg_catalog.to_regclass('public.tenant_schemas_domains') IS NOT NULL
   AND pg_catalog.to_regclass('public.tenant_schemas_shared_names') IS NOT NULL
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
               WHERE attrelid = pg_catalog.to_regclass('public.tenant_schemas_tenants')
                 AND attname = 'shard' AND NOT attisdropped)
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
               WHERE attrelid = pg_catalog.to_regclass('public.tenant_schemas_tenants')
                 AND attname = 'max_connections' AND NOT attisdropped)
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
               WHERE attrelid = pg_catalog.to_regclass('public.tenant_schemas_tenants')
                 AND attname = 'storage_quota' AND NOT attisdropped)
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
               WHERE attrelid = pg_catalog.to_regclass('public.tenant_schemas_tenants')
                 AND attname = 'statement_timeout_ms' AND NOT attisdropped)
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
               WHERE attrelid = pg_catalog.to_regclass('public.tenant_schemas_tenants')
                 AND attname = 'role' AND NOT attisdropped)
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
               WHERE conname = 'tenant_schemas_tenants_states'
                 AND conrelid = pg_catalog.to_regclass('public.tenant_schemas_tenants'))";

impl Registry {
    /// Whether the registry's tables exist in `public` of the default database, as this
    /// version installs them; only reads. A tool that must not write (a listing, a status
    /// report) builds its [`Tenancy`](crate::Tenancy) with
    /// [`install_registry(false)`](crate::TenancyBuilder::install_registry) and asks this
    /// first, to tell an empty or wrong database from an empty registry. `false` too for a
    /// registry installed by an older version and not upgraded yet (by
    /// [`Tenancy::migrate`](crate::Tenancy::migrate) or a default
    /// [`build`](crate::TenancyBuilder::build)).
    pub async fn is_installed(&self) -> Result<bool> {
        let public = SchemaName::public();
        let row = self
            .conn()
            .await?
            .query_typed(INSTALLED_SQL, &[])
            .await
            .map_err(|e| Error::db("looking for the registry", &public, e))?;
        Ok(row.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// Creates the registry tables in `public` if they are missing.
    pub(crate) async fn install(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let public = SchemaName::public();
        let tx = conn
            .transaction()
            .await
            .map_err(|e| Error::db("installing the registry", &public, e))?;
        tx.execute_typed(
            "SELECT pg_catalog.pg_advisory_xact_lock($1)",
            &[(&INSTALL_LOCK, Type::INT8)],
        )
        .await
        .map_err(|e| Error::db("installing the registry", &public, e))?;
        tx.batch_execute(INSTALL_SQL)
            .await
            .map_err(|e| Error::db("installing the registry", &public, e))?;
        tx.commit()
            .await
            .map_err(|e| Error::db("installing the registry", &public, e))
    }
}
