//! Finding the tenant for a host.
//!
//! [`TenantResolver`] is the one trait to implement for a custom lookup. The crate ships a
//! [`RegistryResolver`] over the tenant tables in `public`, a [`StaticResolver`] for a fixed
//! map, and a [`SubdomainResolver`] for `<tenant>.example.com`; wrap any of them in a
//! [`CachedResolver`] (a moka cache: coalesced misses, TTL, short negative TTL,
//! invalidation that wins over a lookup it raced).
//!
//! A custom resolver, e.g. over a config file loaded at start-up:
//!
//! ```
//! use std::collections::HashMap;
//! use tenant_schemas::{async_trait, Host, Result, SchemaName, Tenant, TenantResolver};
//!
//! struct FromConfig(HashMap<String, String>); // host -> schema
//!
//! #[async_trait]
//! impl TenantResolver for FromConfig {
//!     async fn resolve(&self, host: &Host) -> Result<Option<Tenant>> {
//!         match self.0.get(host.as_str()) {
//!             Some(schema) => Ok(Some(Tenant::new(SchemaName::new(schema)?))),
//!             None => Ok(None),
//!         }
//!     }
//! }
//! ```

mod cache;
mod registry;
mod static_map;
mod subdomain;

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::host::Host;
use crate::tenant::Tenant;

pub(crate) use cache::CoherentCache;
pub use cache::{CacheConfig, CachedResolver};
pub use registry::RegistryResolver;
pub use static_map::StaticResolver;
pub use subdomain::SubdomainResolver;

/// Finds the tenant a normalized host belongs to.
///
/// `Ok(None)` means "no such tenant" (the adapters answer 404); `Err` means the lookup
/// itself failed (503 when the database is unreachable).
#[async_trait]
pub trait TenantResolver: Send + Sync + 'static {
    /// The tenant for `host`, or `None`.
    async fn resolve(&self, host: &Host) -> Result<Option<Tenant>>;
}

impl std::fmt::Debug for dyn TenantResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn TenantResolver")
    }
}

#[async_trait]
impl<R: TenantResolver + ?Sized> TenantResolver for Arc<R> {
    async fn resolve(&self, host: &Host) -> Result<Option<Tenant>> {
        (**self).resolve(host).await
    }
}

#[async_trait]
impl<R: TenantResolver + ?Sized> TenantResolver for Box<R> {
    async fn resolve(&self, host: &Host) -> Result<Option<Tenant>> {
        (**self).resolve(host).await
    }
}
