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
        tokio::time::sleep(self.delay).await;
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
