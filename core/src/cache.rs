//! A moka cache in front of any resolver.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::future::Cache;
use moka::Expiry;

use crate::error::{Error, Result};
use crate::host::Host;
use crate::resolver::TenantResolver;
use crate::schema::SchemaName;
use crate::tenant::Tenant;

/// How a [`CachedResolver`] keeps its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// At most this many hosts are kept; the least useful are evicted first.
    pub max_capacity: u64,
    /// How long a found tenant stays cached.
    pub ttl: Duration,
    /// How long an unknown host stays cached, kept short so a new tenant is found soon even
    /// where its creation could not invalidate this cache (another process).
    pub negative_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_capacity: 100_000,
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(5),
        }
    }
}

/// Caches any resolver's answers by host.
///
/// Concurrent misses for one host are coalesced into a single lookup; unknown hosts are
/// cached too, for [`CacheConfig::negative_ttl`]; errors are not cached. The cache is
/// bounded by [`CacheConfig::max_capacity`].
///
/// ```
/// use tenant_schemas::{CachedResolver, Host, SchemaName, StaticResolver, Tenant, TenantResolver};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let acme = Host::parse("acme.example.com")?;
/// let cached = CachedResolver::new(
///     StaticResolver::new().with(acme.clone(), Tenant::new(SchemaName::new("acme")?)),
/// );
/// assert!(cached.resolve(&acme).await?.is_some()); // a miss, then cached
/// assert!(cached.resolve(&acme).await?.is_some()); // a hit
/// assert_eq!(cached.lookups(), 1);
/// cached.invalidate(&acme).await;
/// # Ok(()) }
/// ```
pub struct CachedResolver<R> {
    inner: Arc<R>,
    cache: Cache<Host, Option<Tenant>>,
    lookups: Arc<AtomicU64>,
}

impl<R> Clone for CachedResolver<R> {
    fn clone(&self) -> Self {
        CachedResolver {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            lookups: self.lookups.clone(),
        }
    }
}

impl<R> std::fmt::Debug for CachedResolver<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedResolver")
            .field("entries", &self.cache.entry_count())
            .field("lookups", &self.lookups.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct TwoTtls {
    ttl: Duration,
    negative_ttl: Duration,
}

impl TwoTtls {
    fn for_value(&self, value: &Option<Tenant>) -> Option<Duration> {
        Some(if value.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        })
    }
}

impl Expiry<Host, Option<Tenant>> for TwoTtls {
    fn expire_after_create(
        &self,
        _: &Host,
        value: &Option<Tenant>,
        _: Instant,
    ) -> Option<Duration> {
        self.for_value(value)
    }

    fn expire_after_update(
        &self,
        _: &Host,
        value: &Option<Tenant>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.for_value(value)
    }
}

impl<R: TenantResolver> CachedResolver<R> {
    /// Caches `inner` with the default [`CacheConfig`].
    pub fn new(inner: R) -> Self {
        Self::with_config(inner, CacheConfig::default())
    }

    /// Caches `inner` with `config`.
    pub fn with_config(inner: R, config: CacheConfig) -> Self {
        let cache = Cache::builder()
            .max_capacity(config.max_capacity)
            .expire_after(TwoTtls {
                ttl: config.ttl,
                negative_ttl: config.negative_ttl,
            })
            .build();
        CachedResolver {
            inner: Arc::new(inner),
            cache,
            lookups: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The resolver behind the cache.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Forgets `host`, so its next request asks the resolver again.
    pub async fn invalidate(&self, host: &Host) {
        self.cache.invalidate(host).await;
    }

    /// Forgets every host cached for the tenant in `schema`.
    pub async fn invalidate_tenant(&self, schema: &SchemaName) {
        let hosts: Vec<Arc<Host>> = self
            .cache
            .iter()
            .filter(|(_, tenant)| tenant.as_ref().is_some_and(|t| t.schema() == schema))
            .map(|(host, _)| host)
            .collect();
        for host in hosts {
            self.cache.invalidate(&*host).await;
        }
    }

    /// Forgets everything.
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// How many lookups reached the resolver behind the cache.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Applies pending evictions and expirations now (moka does it lazily, on later
    /// operations), e.g. before reading [`entry_count`](Self::entry_count) in a test.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// How many hosts are cached (approximate: moka counts lazily).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}

#[async_trait]
impl<R: TenantResolver> TenantResolver for CachedResolver<R> {
    async fn resolve(&self, host: &Host) -> Result<Option<Tenant>> {
        let inner = &self.inner;
        let lookups = &self.lookups;
        let entry = self
            .cache
            .entry_by_ref(host)
            .or_try_insert_with(async move {
                lookups.fetch_add(1, Ordering::Relaxed);
                inner.resolve(host).await
            })
            .await
            .map_err(|source: Arc<Error>| {
                tracing::warn!(host = %host, error = %source, "tenant lookup failed");
                Error::Lookup {
                    key: host.to_string(),
                    source,
                }
            })?;
        if tracing::enabled!(tracing::Level::TRACE) {
            let schema = entry.value().as_ref().map(|t| t.schema().to_string());
            tracing::trace!(host = %host, schema = ?schema, hit = !entry.is_fresh(), "tenant resolved");
        }
        Ok(entry.into_value())
    }
}
