//! What the migrations of each schema look like, and what a migration run would do, read
//! and never written: the one health model that `status`, `migrate --dry-run` and
//! [`Tenancy::migrate`] share (see `migrate/status.rs`).

use super::Tenancy;
use crate::error::Result;
use crate::migrate::{DryRun, RunOptions, Runner, SchemaStatus};
use crate::schema::SchemaName;

impl Tenancy {
    /// Every registered tenant's schema among `schemas` (all when empty), by name, after
    /// `public` of each database (unless `skip_public` or `schemas` leaves it out) when it
    /// has shared migrations or a history: its registry version, the newest version its
    /// history holds, the migrations still to run, and where the registry, the history and
    /// the migration set disagree ([`Drift`](crate::Drift)). Only reads; the registry's
    /// tables must exist. Fails only when a database cannot be reached.
    ///
    /// ```no_run
    /// # async fn demo(tenancy: tenant_schemas::Tenancy) -> tenant_schemas::Result<()> {
    /// for s in tenancy.migration_status(&[], false).await? {
    ///     println!("{} at {:?} of {}, drift: {:?}", s.schema, s.applied, s.latest, s.drift);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn migration_status(
        &self,
        schemas: &[SchemaName],
        skip_public: bool,
    ) -> Result<Vec<SchemaStatus>> {
        let registry = self.registry();
        Runner {
            databases: registry.databases(),
            sets: registry.sets(),
        }
        .status(schemas, skip_public)
        .await
    }

    /// What [`migrate`](Self::migrate) with `options` would do, without doing it: the
    /// schemas it would open, chosen by the run's own selection (shared migrations in
    /// `public`, the tenants the registry says are behind, canaries and waves), each read as
    /// by [`migration_status`](Self::migration_status) and checked with the run's own checks;
    /// [`DryRun::failures`] are the schemas the run would fail on. Fails where the run fails
    /// before migrating any tenant (a refused migration set, an up-to-date tenant whose
    /// applied migrations changed). What a pending migration's own SQL does shows only when
    /// it runs. Only reads, takes no lock; the registry's tables must exist.
    ///
    /// ```no_run
    /// # async fn demo(tenancy: tenant_schemas::Tenancy) -> tenant_schemas::Result<()> {
    /// use tenant_schemas::RunOptions;
    /// let plan = tenancy.migrate_dry_run(&RunOptions::default()).await?;
    /// for s in plan.failures() {
    ///     println!("{} would fail: {:?}", s.schema, s.drift);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn migrate_dry_run(&self, options: &RunOptions) -> Result<DryRun> {
        let registry = self.registry();
        registry.sets().validate()?;
        Runner {
            databases: registry.databases(),
            sets: registry.sets(),
        }
        .dry_run(options)
        .await
    }
}
