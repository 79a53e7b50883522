//! Shared names kept in the registry: table names a tenant schema may share with `public`,
//! declared once for every process and command (see
//! [`TenantMigrations::shared_name`](crate::TenantMigrations::shared_name) for what they
//! allow).

use tokio_postgres::types::Type;

use super::Registry;
use crate::error::{Error, Result};
use crate::schema::SchemaName;

impl Registry {
    /// The names kept in the registry (none when its table does not exist yet).
    pub(crate) async fn declared_shared_names(&self) -> Result<Vec<String>> {
        let public = SchemaName::public();
        let rows = self
            .conn()
            .await?
            .query_typed(
                "SELECT name FROM public.tenant_schemas_shared_names ORDER BY name",
                &[],
            )
            .await;
        match rows {
            Ok(rows) => Ok(rows.iter().map(|r| r.get(0)).collect()),
            // An older registry without the table: none yet.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                Ok(Vec::new())
            }
            Err(e) => Err(Error::db("reading the shared names", &public, e)),
        }
    }

    /// Reads the names kept in the registry into the migration sets.
    pub(crate) async fn load_shared_names(&self) -> Result<()> {
        let names = self.declared_shared_names().await?;
        self.sets.set_declared(names);
        Ok(())
    }

    /// Keeps `names` in the registry (those kept already stay) and follows them; returns
    /// the names kept now.
    pub(crate) async fn declare_shared_names(&self, names: &[String]) -> Result<Vec<String>> {
        let public = SchemaName::public();
        for name in names {
            if name.is_empty() || name.len() > 63 || name.contains('\0') {
                return Err(Error::Refused {
                    what: "a shared name that cannot be a table's name (1 to 63 bytes)",
                    instead: "name the table as PostgreSQL shows it",
                });
            }
        }
        self.conn()
            .await?
            .execute_typed(
                "INSERT INTO public.tenant_schemas_shared_names (name)
                 SELECT pg_catalog.unnest($1::text[]) ON CONFLICT DO NOTHING",
                &[(&names, Type::TEXT_ARRAY)],
            )
            .await
            .map_err(|e| Error::db("keeping shared names", &public, e))?;
        self.load_shared_names().await?;
        self.declared_shared_names().await
    }

    /// Removes `name` from the registry's shared names; whether it was there.
    pub(crate) async fn forget_shared_name(&self, name: &str) -> Result<bool> {
        let public = SchemaName::public();
        let removed = self
            .conn()
            .await?
            .execute_typed(
                "DELETE FROM public.tenant_schemas_shared_names WHERE name = $1",
                &[(&name, Type::TEXT)],
            )
            .await
            .map_err(|e| Error::db("forgetting a shared name", &public, e))?;
        self.load_shared_names().await?;
        Ok(removed > 0)
    }
}
