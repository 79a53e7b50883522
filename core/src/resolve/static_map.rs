use std::collections::HashMap;

use async_trait::async_trait;

use super::TenantResolver;
use crate::error::Result;
use crate::host::Host;
use crate::tenant::Tenant;

/// A fixed host → tenant map, for tests, demos and deployments with few tenants.
///
/// ```
/// use tenant_schemas::{Host, SchemaName, StaticResolver, Tenant, TenantResolver};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let resolver = StaticResolver::new()
///     .with(Host::parse("example.com")?, Tenant::public())
///     .with(Host::parse("acme.example.com")?, Tenant::new(SchemaName::new("acme")?));
/// let tenant = resolver.resolve(&Host::parse("ACME.example.com:443")?).await?;
/// assert_eq!(tenant.unwrap().schema().as_str(), "acme");
/// assert!(resolver.resolve(&Host::parse("other.example.com")?).await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    hosts: HashMap<Host, Tenant>,
}

impl StaticResolver {
    /// An empty map.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `host` → `tenant`, replacing an earlier entry for the host.
    #[must_use]
    pub fn with(mut self, host: Host, tenant: Tenant) -> Self {
        self.insert(host, tenant);
        self
    }

    /// Adds `host` → `tenant`, returning the tenant the host had before.
    pub fn insert(&mut self, host: Host, tenant: Tenant) -> Option<Tenant> {
        self.hosts.insert(host, tenant)
    }

    /// Removes a host, returning its tenant.
    pub fn remove(&mut self, host: &Host) -> Option<Tenant> {
        self.hosts.remove(host)
    }
}

#[async_trait]
impl TenantResolver for StaticResolver {
    async fn resolve(&self, host: &Host) -> Result<Option<Tenant>> {
        Ok(self.hosts.get(host).cloned())
    }
}
