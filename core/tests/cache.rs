//! The moka hostname cache in front of a resolver.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tenant_schemas::{
    async_trait, CacheConfig, CachedResolver, Error, Host, Result, SchemaName, Tenant,
    TenantResolver,
};

/// A slow resolver that counts its calls: `<name>.test` is tenant `<name>` unless the name
/// starts with `missing`; `fail.test` fails.
struct Counting {
    calls: AtomicU64,
    delay: Duration,
}

#[async_trait]
impl TenantResolver for Counting {
    async fn resolve(&self, host: &Host) -> Result<Option<Tenant>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let name = host.as_str().trim_end_matches(".test");
        if name == "fail" {
            return Err(Error::Resolver("backend down".into()));
        }
        if name.starts_with("missing") {
            return Ok(None);
        }
        Ok(Some(Tenant::new(SchemaName::new(name)?)))
    }
}

fn counting(delay_ms: u64, config: CacheConfig) -> (Arc<Counting>, CachedResolver<Arc<Counting>>) {
    let inner = Arc::new(Counting {
        calls: AtomicU64::new(0),
        delay: Duration::from_millis(delay_ms),
    });
    (inner.clone(), CachedResolver::with_config(inner, config))
}

fn host(s: &str) -> Host {
    Host::parse(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_host_coalesce() {
    let (inner, cached) = counting(50, CacheConfig::default());
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let cached = cached.clone();
        tasks.push(tokio::spawn(async move {
            cached.resolve(&host("acme.test")).await.unwrap().unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().schema().as_str(), "acme");
    }
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    assert_eq!(cached.lookups(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosts_are_cached_briefly() {
    let config = CacheConfig {
        negative_ttl: Duration::from_millis(300),
        ..CacheConfig::default()
    };
    let (inner, cached) = counting(0, config);
    assert!(cached
        .resolve(&host("missing.test"))
        .await
        .unwrap()
        .is_none());
    assert!(cached
        .resolve(&host("missing.test"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        inner.calls.load(Ordering::SeqCst),
        1,
        "negative entry served from cache"
    );
    assert!(cached.resolve(&host("acme.test")).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(cached
        .resolve(&host("missing.test"))
        .await
        .unwrap()
        .is_none());
    assert!(cached.resolve(&host("acme.test")).await.unwrap().is_some());
    assert_eq!(
        inner.calls.load(Ordering::SeqCst),
        3,
        "the negative entry expired, the positive one did not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_by_host_tenant_and_all() {
    let (inner, cached) = counting(0, CacheConfig::default());
    let calls = || inner.calls.load(Ordering::SeqCst);
    for h in ["acme.test", "beta.test"] {
        cached.resolve(&host(h)).await.unwrap();
    }
    assert_eq!(calls(), 2);
    cached.invalidate(&host("acme.test")).await;
    cached.resolve(&host("acme.test")).await.unwrap();
    cached.resolve(&host("beta.test")).await.unwrap();
    assert_eq!(calls(), 3);
    cached
        .invalidate_tenant(&SchemaName::new("beta").unwrap())
        .await;
    cached.resolve(&host("beta.test")).await.unwrap();
    cached.resolve(&host("acme.test")).await.unwrap();
    assert_eq!(calls(), 4);
    cached.invalidate_all();
    cached.resolve(&host("beta.test")).await.unwrap();
    cached.resolve(&host("acme.test")).await.unwrap();
    assert_eq!(calls(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_shared_but_not_cached() {
    let (inner, cached) = counting(20, CacheConfig::default());
    let fail = host("fail.test");
    let (a, b) = tokio::join!(cached.resolve(&fail), cached.resolve(&fail));
    for r in [a, b] {
        let err = r.unwrap_err();
        assert!(matches!(err, Error::Lookup { ref key, .. } if key == "fail.test"));
        assert!(err.to_string().contains("backend down"), "{err}");
    }
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    assert!(cached.resolve(&host("fail.test")).await.is_err());
    assert_eq!(
        inner.calls.load(Ordering::SeqCst),
        2,
        "a failed lookup is retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_is_bounded() {
    let config = CacheConfig {
        max_capacity: 100,
        ..CacheConfig::default()
    };
    let (_, cached) = counting(0, config);
    for i in 0..2_000 {
        cached
            .resolve(&host(&format!("missing{i}.test")))
            .await
            .unwrap();
    }
    // moka evicts in the background of later operations; give it a moment.
    for _ in 0..50 {
        if cached.entry_count() <= 100 {
            break;
        }
        cached.resolve(&host("missing0.test")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        cached.entry_count() <= 100,
        "{} entries",
        cached.entry_count()
    );
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A flood of random unknown hosts (an attacker's Host headers) keeps the cache at its
/// capacity and memory bounded; concurrent requests for the same host still coalesce.
/// CI size 200,000 hosts; `TENANT_SCHEMAS_LEAK_FULL=1` sends 1,000,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_unknown_hosts_keep_memory_bounded() {
    let total: u64 = if std::env::var("TENANT_SCHEMAS_LEAK_FULL").is_ok_and(|v| v == "1") {
        1_000_000
    } else {
        200_000
    };
    let config = CacheConfig {
        max_capacity: 10_000,
        ..CacheConfig::default()
    };
    let (inner, cached) = counting(0, config);
    let rss_before = status_kib("VmRSS:");
    let started = std::time::Instant::now();
    // Two workers; each host is asked for by four concurrent requests at once.
    let tasks: Vec<_> = (0..2u64)
        .map(|worker| {
            let cached = cached.clone();
            tokio::spawn(async move {
                use rand::{Rng, SeedableRng};
                let mut rng = rand::rngs::StdRng::seed_from_u64(worker);
                for _ in 0..total / 8 {
                    let h = host(&format!(
                        "missing{:016x}.attacker.test",
                        rng.random::<u64>()
                    ));
                    let (a, b, c, d) = tokio::join!(
                        cached.resolve(&h),
                        cached.resolve(&h),
                        cached.resolve(&h),
                        cached.resolve(&h)
                    );
                    assert!(a.unwrap().is_none() && b.unwrap().is_none());
                    assert!(c.unwrap().is_none() && d.unwrap().is_none());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    cached.run_pending_tasks().await;
    let lookups = inner.calls.load(Ordering::SeqCst);
    let rss_after = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    println!(
        "{total} resolves of {} distinct unknown hosts in {:.1} s: {lookups} lookups, {} entries, RSS {} -> {} KiB, peak {} KiB",
        total / 4,
        started.elapsed().as_secs_f64(),
        cached.entry_count(),
        rss_before,
        rss_after,
        peak
    );
    assert!(
        cached.entry_count() <= 10_000,
        "{} entries",
        cached.entry_count()
    );
    // About one lookup per distinct host, not four: requests in flight together share one
    // lookup. (A few percent more: at capacity, moka's TinyLFU admission may decline to keep a
    // one-off host, and a request arriving after the lookup finished asks again.)
    assert!(
        lookups >= total / 4 && lookups < total / 4 * 11 / 10,
        "{lookups} lookups"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 150 * 1024,
        "memory grew by {} KiB",
        rss_after - rss_before
    );
}

/// A resolver over a one-tenant "registry" that reads its answer, says so on `read`, then
/// holds it back until the test adds a permit to `release`: the test decides exactly when a
/// lookup has read the registry and when it finishes.
struct Gated {
    calls: AtomicU64,
    deleted: std::sync::atomic::AtomicBool,
    read: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

#[async_trait]
impl TenantResolver for Gated {
    async fn resolve(&self, _host: &Host) -> Result<Option<Tenant>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = if self.deleted.load(Ordering::SeqCst) {
            None
        } else {
            Some(Tenant::new(SchemaName::new("acme")?))
        };
        self.read.notify_one();
        self.release.acquire().await.unwrap().forget();
        Ok(answer)
    }
}

/// A lookup reads the registry, the tenant is deleted and the cache invalidated (by host, by
/// tenant, or everything), then the lookup finishes: its stale answer must not stay cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_raced_an_invalidation_is_not_cached() {
    for how in ["host", "tenant", "all"] {
        let gated = Arc::new(Gated {
            calls: AtomicU64::new(0),
            deleted: false.into(),
            read: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        });
        let cached = CachedResolver::new(gated.clone());
        let acme = host("acme.test");
        let lookup = tokio::spawn({
            let (cached, acme) = (cached.clone(), acme.clone());
            async move { cached.resolve(&acme).await }
        });
        gated.read.notified().await; // the lookup has read "acme exists"
        gated.deleted.store(true, Ordering::SeqCst); // the delete commits…
        match how {
            "host" => cached.invalidate(&acme).await, // …and invalidates
            "tenant" => {
                cached
                    .invalidate_tenant(&SchemaName::new("acme").unwrap())
                    .await;
            }
            _ => cached.invalidate_all(),
        }
        // A request arriving now may share the lookup in flight; it may get the old answer.
        let joined = tokio::spawn({
            let (cached, acme) = (cached.clone(), acme.clone());
            async move { cached.resolve(&acme).await }
        });
        gated.release.add_permits(1); // the lookup finishes with what it read
        assert!(lookup.await.unwrap().unwrap().is_some(), "{how}");
        gated.release.add_permits(1); // in case the late request looked up on its own
        joined.await.unwrap().unwrap();
        gated.release.add_permits(1);
        assert!(
            cached.resolve(&acme).await.unwrap().is_none(),
            "{how}: the deleted tenant is still served from the cache"
        );
        assert!(gated.calls.load(Ordering::SeqCst) >= 2, "{how}");
    }
}
