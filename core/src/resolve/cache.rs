//! A moka cache in front of any resolver, and the invalidation-safe cache it is built on.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::future::Cache;
use moka::ops::compute::Op;
use moka::Expiry;

use super::TenantResolver;
use crate::error::{Error, Result};
use crate::host::Host;
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
        Self {
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
/// An invalidation wins over a lookup it raced: the answer of a lookup that was in flight
/// while its host (or its tenant, or everything) was invalidated may have been read before
/// the change, so it is handed to the requests waiting for it but not kept.
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
    cache: CoherentCache<Host, Option<Tenant>>,
    lookups: Arc<AtomicU64>,
}

impl<R> Clone for CachedResolver<R> {
    fn clone(&self) -> Self {
        Self {
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

impl Expiry<Host, Slot<Option<Tenant>>> for TwoTtls {
    fn expire_after_create(
        &self,
        _: &Host,
        slot: &Slot<Option<Tenant>>,
        _: Instant,
    ) -> Option<Duration> {
        self.for_value(&slot.value)
    }

    fn expire_after_update(
        &self,
        _: &Host,
        slot: &Slot<Option<Tenant>>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.for_value(&slot.value)
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
        Self {
            inner: Arc::new(inner),
            cache: CoherentCache::new(cache),
            lookups: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The resolver behind the cache.
    #[must_use]
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Forgets `host`, so its next request asks the resolver again.
    pub async fn invalidate(&self, host: &Host) {
        self.cache.invalidate(host).await;
    }

    /// Forgets every host cached for the tenant in `schema` (and the answers of lookups in
    /// flight, whichever tenant they find: which one that is is not known yet).
    pub async fn invalidate_tenant(&self, schema: &SchemaName) {
        self.cache
            .invalidate_where(|tenant| tenant.as_ref().is_some_and(|t| t.schema() == schema))
            .await;
    }

    /// Forgets everything.
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// How many lookups reached the resolver behind the cache.
    #[must_use]
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Applies pending evictions and expirations now (moka does it lazily, on later
    /// operations), e.g. before reading [`entry_count`](Self::entry_count) in a test.
    pub async fn run_pending_tasks(&self) {
        self.cache.cache.run_pending_tasks().await;
    }

    /// How many hosts are cached (approximate: moka counts lazily).
    #[must_use]
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}

#[async_trait]
impl<R: TenantResolver> TenantResolver for CachedResolver<R> {
    async fn resolve(&self, host: &Host) -> Result<Option<Tenant>> {
        let inner = &self.inner;
        let lookups = &self.lookups;
        let (tenant, looked_up) = self
            .cache
            .get_or_try_insert_with(host, || async move {
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
            let schema = tenant.as_ref().map(|t| t.schema().to_string());
            tracing::trace!(host = %host, schema = ?schema, hit = !looked_up, "tenant resolved");
        }
        Ok(tenant)
    }
}

/// A cached value, with the flag an invalidation sets when it ran while the value was
/// being looked up: such a value may have been read before the change the invalidation
/// announced, so it is never served from the cache.
#[derive(Clone)]
pub(crate) struct Slot<V> {
    value: V,
    stale: Arc<AtomicBool>,
}

/// The stale flags of the lookups in flight, by key.
type InFlight<K> = Mutex<HashMap<K, Vec<Arc<AtomicBool>>>>;

/// A moka cache in which an invalidation wins over a lookup it raced.
///
/// moka lets a lookup that started before an invalidation insert its answer after it, and
/// that answer (read before the change, e.g. a tenant's deletion, committed) would then be
/// served until it expires. Here every lookup in flight is registered with a stale flag;
/// invalidating its key (or everything) sets the flag *before* removing the key, and a value
/// whose flag is set is removed as soon as it is seen (by the lookup itself once its value
/// is inserted, or by any later read) instead of being served from the cache. The requests
/// that waited on that very lookup still get its answer.
pub(crate) struct CoherentCache<K, V> {
    cache: Cache<K, Slot<V>>,
    in_flight: Arc<InFlight<K>>,
}

impl<K, V> Clone for CoherentCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            in_flight: self.in_flight.clone(),
        }
    }
}

/// A lookup's registration in [`CoherentCache::in_flight`], removed on drop (whether the
/// lookup finished, failed or was cancelled).
struct Ticket<'a, K: Hash + Eq> {
    in_flight: &'a InFlight<K>,
    key: K,
    stale: Arc<AtomicBool>,
}

impl<K: Hash + Eq> Drop for Ticket<'_, K> {
    fn drop(&mut self) {
        let mut in_flight = lock(self.in_flight);
        if let Some(flags) = in_flight.get_mut(&self.key) {
            flags.retain(|f| !Arc::ptr_eq(f, &self.stale));
            if flags.is_empty() {
                in_flight.remove(&self.key);
            }
        }
    }
}

/// The map, even if a thread panicked while holding it (its data stays consistent: every
/// critical section is a single insert, remove or flag store).
fn lock<K>(in_flight: &InFlight<K>) -> MutexGuard<'_, HashMap<K, Vec<Arc<AtomicBool>>>> {
    in_flight.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K, V> CoherentCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Wraps a moka cache (configured with its capacity and expiry).
    pub(crate) fn new(cache: Cache<K, Slot<V>>) -> Self {
        Self {
            cache,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The cached value of `key`, or the one `init` looks up (misses of one key coalesced;
    /// errors not cached), and whether this call looked it up.
    pub(crate) async fn get_or_try_insert_with<F, Fut>(
        &self,
        key: &K,
        init: F,
    ) -> std::result::Result<(V, bool), Arc<Error>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V>>,
    {
        // The common case first: a fresh entry, read without the entry API's insertion
        // machinery (what that path returns for an entry it finds, too).
        if let Some(slot) = self.cache.get(key).await {
            if !slot.stale.load(Ordering::SeqCst) {
                return Ok((slot.value, false));
            }
        }
        let mut first = true;
        loop {
            let mut ticket: Option<Ticket<'_, K>> = None;
            let registered = &mut ticket;
            let slot = self
                .cache
                .entry_by_ref(key)
                .or_try_insert_with(async {
                    let stale = Arc::new(AtomicBool::new(false));
                    lock(&self.in_flight)
                        .entry(key.clone())
                        .or_default()
                        .push(stale.clone());
                    *registered = Some(Ticket {
                        in_flight: &self.in_flight,
                        key: key.clone(),
                        stale: stale.clone(),
                    });
                    let value = init().await?;
                    Ok(Slot { value, stale })
                })
                .await?
                .into_value();
            let looked_up = ticket.is_some();
            // The ticket stays registered until here, after the insert: an invalidation
            // either set the flag or ran after the insert and removed the entry itself.
            if !slot.stale.load(Ordering::SeqCst) {
                return Ok((slot.value, looked_up));
            }
            self.remove_stale(key).await;
            drop(ticket);
            // This call's own lookup: its answer is what it read. A cached or shared stale
            // answer: look up again (once; under a storm of invalidations, serve it).
            if looked_up || !first {
                return Ok((slot.value, looked_up));
            }
            first = false;
        }
    }

    /// Removes `key`'s entry if it is stale (and only then: a fresh one stays).
    async fn remove_stale(&self, key: &K) {
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|entry| {
                let stale = entry.is_some_and(|e| e.value().stale.load(Ordering::SeqCst));
                std::future::ready(if stale { Op::Remove } else { Op::Nop })
            })
            .await;
    }

    /// Marks the lookups in flight for `key` (all of them when `None`) stale.
    fn mark_in_flight(&self, key: Option<&K>) {
        let in_flight = lock(&self.in_flight);
        let flags: Box<dyn Iterator<Item = &Arc<AtomicBool>>> = match key {
            Some(key) => Box::new(in_flight.get(key).into_iter().flatten()),
            None => Box::new(in_flight.values().flatten()),
        };
        for flag in flags {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Forgets `key`, including the answer of a lookup of it in flight.
    pub(crate) async fn invalidate(&self, key: &K) {
        self.mark_in_flight(Some(key));
        self.cache.invalidate(key).await;
    }

    /// Forgets every entry whose value matches, and the answers of all lookups in flight.
    pub(crate) async fn invalidate_where(&self, matches: impl Fn(&V) -> bool) {
        self.mark_in_flight(None);
        let keys: Vec<Arc<K>> = self
            .cache
            .iter()
            .filter(|(_, slot)| matches(&slot.value))
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            self.cache.invalidate(&*key).await;
        }
    }

    /// Forgets everything, including the answers of all lookups in flight.
    pub(crate) fn invalidate_all(&self) {
        self.mark_in_flight(None);
        self.cache.invalidate_all();
    }

    /// How many entries are cached (approximate: moka counts lazily).
    pub(crate) fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}
