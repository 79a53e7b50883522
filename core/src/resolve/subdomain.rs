use async_trait::async_trait;

use super::TenantResolver;
use crate::error::Result;
use crate::host::Host;
use crate::schema::SchemaName;
use crate::tenant::Tenant;

/// Maps `<name>.<base domain>` to the tenant in schema `<name>`, with no database lookup.
///
/// Only one label in front of the base domain is accepted, and it must be a valid schema
/// name: `acme.example.com` → `acme`; `a.b.example.com`, `my-shop.example.com` (a `-` is not
/// allowed in schema names) and IP literals resolve to no tenant. The base domain itself
/// resolves to the tenant given with [`SubdomainResolver::apex`], usually the public one.
///
/// The resolver does not check that the schema exists: use it when every valid subdomain
/// has a schema, or chain it in front of a check of your own.
///
/// ```
/// use tenant_schemas::{Host, SubdomainResolver, Tenant, TenantResolver};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let resolver = SubdomainResolver::new(Host::parse("example.com")?).apex(Tenant::public());
/// let acme = resolver.resolve(&Host::parse("acme.example.com")?).await?.unwrap();
/// assert_eq!(acme.schema().as_str(), "acme");
/// assert!(resolver.resolve(&Host::parse("example.com")?).await?.unwrap().is_public());
/// assert!(resolver.resolve(&Host::parse("a.b.example.com")?).await?.is_none());
/// assert!(resolver.resolve(&Host::parse("public.example.com")?).await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SubdomainResolver {
    base: Host,
    apex: Option<Tenant>,
}

impl SubdomainResolver {
    /// Resolves subdomains of `base`.
    #[must_use]
    pub fn new(base: Host) -> Self {
        Self { base, apex: None }
    }

    /// The tenant served on the base domain itself.
    #[must_use]
    pub fn apex(mut self, tenant: Tenant) -> Self {
        self.apex = Some(tenant);
        self
    }
}

#[async_trait]
impl TenantResolver for SubdomainResolver {
    async fn resolve(&self, host: &Host) -> Result<Option<Tenant>> {
        if *host == self.base {
            return Ok(self.apex.clone());
        }
        let Some(label) = host.subdomain_of(&self.base) else {
            return Ok(None);
        };
        if label.contains('.') {
            return Ok(None);
        }
        Ok(SchemaName::new(label).ok().map(Tenant::new))
    }
}
