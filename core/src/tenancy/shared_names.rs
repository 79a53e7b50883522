//! Shared names kept in the registry, declared once for every process and command.

use super::Tenancy;
use crate::error::Result;

impl Tenancy {
    /// The table names a tenant schema may share with `public` (see
    /// [`TenantMigrations::shared_name`](crate::TenantMigrations::shared_name)): those
    /// declared in code on either migration set and those kept in the registry, sorted.
    #[must_use]
    pub fn shared_names(&self) -> Vec<String> {
        self.inner.registry.sets().shared_names()
    }

    /// Keeps `names` as shared names in the registry, so every tenancy built on it — every
    /// instance once it starts, every `tenant-schemas` command — allows them without
    /// declaring them in code or repeating `--shared-name`; this tenancy follows at once.
    /// Returns the names the registry keeps now. Typical after adopting a django-tenants
    /// deployment, whose own tables (`django_migrations`, `django_content_type` …) are in
    /// `public` and in every tenant schema.
    pub async fn declare_shared_names<I, S>(&self, names: I) -> Result<Vec<String>>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        self.inner.registry.declare_shared_names(&names).await
    }

    /// Removes `name` from the registry's shared names (one declared in code stays);
    /// whether the registry had it.
    pub async fn forget_shared_name(&self, name: &str) -> Result<bool> {
        self.inner.registry.forget_shared_name(name).await
    }
}
