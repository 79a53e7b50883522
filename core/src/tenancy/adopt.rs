//! Adopting an existing deployment through the one door: registering schemas that exist
//! already, and recording the migrations they hold as applied.

use super::{Tenancy, TenantEvent};
use crate::error::{Error, Result};
use crate::migrate::Baselined;
use crate::registry::{ImportSource, NewTenant};
use crate::schema::SchemaName;
use crate::tenant::TenantRecord;

impl Tenancy {
    /// Records the tenant migrations up to `version` as applied, without running them, in
    /// the schemas of the registered tenants `schemas` (every tenant but the public one when
    /// empty), and moves their registry version along: for schemas that already hold what
    /// those migrations create (Flyway's `baseline`, Django's `migrate --fake`).
    /// [`migrate`](Self::migrate) then runs only the migrations after it.
    ///
    /// Each schema is recorded in its own transaction; what its history holds already is
    /// checked as by a migration run and kept (a schema already past `version` is left as it
    /// is: `from == to`). [`Error::BaselineVersion`](crate::Error::BaselineVersion) for a
    /// version beyond the newest migration, [`Error::BaselineRefused`](crate::Error::BaselineRefused)
    /// for a schema without any table, [`Error::TenantNotFound`](crate::Error::TenantNotFound)
    /// for a schema the registry does not have. Waits for a migration run in progress. The
    /// hooks hear [`TenantEvent::Baselined`] for each schema whose version moved.
    ///
    /// ```no_run
    /// # async fn demo(tenancy: tenant_schemas::Tenancy) -> tenant_schemas::Result<()> {
    /// use tenant_schemas::RunOptions;
    /// // The tenants' schemas were made by another tool and match migrations V1 to V3.
    /// tenancy.baseline(&[], 3).await?;
    /// tenancy.migrate(&RunOptions::default(), None).await?; // runs V4 and later only
    /// # Ok(()) }
    /// ```
    pub async fn baseline(&self, schemas: &[SchemaName], version: i32) -> Result<Vec<Baselined>> {
        let done = self.inner.registry.baseline(schemas, version).await?;
        for b in done.iter().filter(|b| b.from != b.to) {
            self.emit(TenantEvent::Baselined {
                schema: b.schema.clone(),
                from: b.from,
                to: b.to,
            })
            .await;
        }
        Ok(done)
    }

    /// Registers schemas that exist already as tenants, with their domains, without
    /// touching their data: for adopting a deployment made by another tool. In each schema
    /// the tenant migrations up to `baseline` are recorded as applied (see
    /// [`baseline`](Self::baseline); 0 records none, and a history the schema has already is
    /// kept), and its registry version is what its history then says. `public` registers the
    /// public tenant (its schema is not touched).
    ///
    /// All of them or none: on the first failure nothing is registered. A schema that does
    /// not exist is [`Error::SchemaMissing`](crate::Error::SchemaMissing), one registered
    /// already [`Error::TenantExists`](crate::Error::TenantExists), a domain taken
    /// [`Error::DomainTaken`](crate::Error::DomainTaken), a tenant table with the name of a
    /// table in `public` [`Error::TableInPublic`](crate::Error::TableInPublic), as for a
    /// created tenant. Their domains resolve at once; the hooks hear
    /// [`TenantEvent::Imported`] for each.
    pub async fn import_tenants(
        &self,
        tenants: &[NewTenant],
        baseline: i32,
    ) -> Result<Vec<TenantRecord>> {
        let mut records = self.inner.registry.import(tenants, baseline).await?;
        // Role mode: each imported tenant gets its role before it is served.
        if self.inner.registry.roles().is_some() {
            let synced = self.inner.registry.sync_roles().await?;
            for record in &mut records {
                if let Some((_, role, _)) = synced.iter().find(|(s, _, _)| *s == record.schema) {
                    record.role = Some(role.clone());
                }
            }
        }
        for record in &records {
            self.forget(record).await;
            self.emit(TenantEvent::Imported(record.clone())).await;
        }
        Ok(records)
    }

    /// Reads the tenants of `source` ([`Registry::read_import`](crate::Registry::read_import))
    /// and [imports](Self::import_tenants) them.
    ///
    /// ```no_run
    /// # async fn demo(tenancy: tenant_schemas::Tenancy) -> tenant_schemas::Result<()> {
    /// use tenant_schemas::ImportSource;
    /// // A django-tenants database whose tenant schemas match migrations V1 and V2.
    /// let imported = tenancy.import_from(&ImportSource::django_tenants(), 2).await?;
    /// # Ok(()) }
    /// ```
    pub async fn import_from(
        &self,
        source: &ImportSource,
        baseline: i32,
    ) -> Result<Vec<TenantRecord>> {
        let tenants = self.inner.registry.read_import(source).await?;
        self.import_tenants(&tenants, baseline).await
    }
}

impl Tenancy {
    /// What [`import_from`](Self::import_from) would do, without writing anything: the
    /// tenants `source` lists, and every problem that would refuse the import — rows with an
    /// invalid schema name or domain, schemas missing, registered already, named like a
    /// role, holding a table named like one of `public`, domains taken — all of them, each
    /// with the schema it concerns, instead of the first one per run.
    pub async fn import_dry_run(
        &self,
        source: &ImportSource,
        baseline: i32,
    ) -> Result<ImportDryRun> {
        let registry = &self.inner.registry;
        let (tenants, mut problems) = registry.read_import_all(source).await?;
        problems.extend(registry.import_problems(&tenants, baseline).await?);
        Ok(ImportDryRun { tenants, problems })
    }
}

/// The outcome of [`Tenancy::import_dry_run`].
#[derive(Debug)]
#[non_exhaustive]
pub struct ImportDryRun {
    /// The tenants the source lists, as they would be imported.
    pub tenants: Vec<NewTenant>,
    /// Each problem, by the schema it concerns (as the source row names it).
    pub problems: Vec<(String, Error)>,
}
