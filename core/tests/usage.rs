//! What tenants' schemas hold, storage quotas, and quotas enforced: a tenant over its quota
//! becomes read-only, with an event.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{Error, Tenancy, TenantEvent, TenantStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_measured_and_quotas_make_tenants_read_only() {
    let db = database().await;
    let heard = Arc::new(Mutex::new(Vec::new()));
    let tenancy = {
        let heard = heard.clone();
        Tenancy::builder(db.pool().clone())
            .migrations(marker_and_notes())
            .on_event(move |e| {
                let heard = heard.clone();
                async move {
                    if matches!(
                        e,
                        TenantEvent::OverQuota { .. } | TenantEvent::StatusChanged { .. }
                    ) {
                        heard.lock().unwrap().push(format!("{e:?}"));
                    }
                }
            })
            .build()
            .await
            .unwrap()
    };
    let s = marked_tenants(&tenancy, "use", 2).await;
    let (big, small) = (&s[0], &s[1]);
    let write = |schema: &tenant_schemas::SchemaName, mb: usize| {
        let sql = format!(
            "INSERT INTO {}.notes (body) SELECT md5(g::text) || repeat(md5(random()::text), 30) FROM generate_series(1, {}) g",
            schema.quoted(),
            mb * 1000
        );
        let db = &db;
        async move {
            db.pool()
                .get()
                .await
                .unwrap()
                .batch_execute(&sql)
                .await
                .unwrap();
        }
    };
    write(big, 3).await;

    let usage = tenancy.usage(Duration::ZERO).await.unwrap();
    assert_eq!(usage.len(), 2, "{usage:?}");
    let of = |u: &[tenant_schemas::SchemaUsage], s: &tenant_schemas::SchemaName| {
        u.iter().find(|x| &x.schema == s).unwrap().clone()
    };
    let (b, m) = (of(&usage, big), of(&usage, small));
    assert!(b.bytes > 2_000_000, "{b:?}");
    assert!(b.bytes > m.bytes * 10, "{b:?} {m:?}");
    assert_eq!(b.tables, 3, "marker, notes and the history: {b:?}");
    assert!(!b.over_quota());
    // Within max_age: the same measurement.
    write(small, 1).await;
    let again = tenancy.usage(Duration::from_secs(600)).await.unwrap();
    assert!(Arc::ptr_eq(&usage, &again));

    tenancy
        .set_storage_quota(big, Some(1_000_000))
        .await
        .unwrap();
    tenancy
        .set_storage_quota(small, Some(1_000_000_000))
        .await
        .unwrap();
    assert_eq!(
        tenancy.registry().get(big).await.unwrap().storage_quota,
        Some(1_000_000)
    );
    let made = tenancy.enforce_quotas().await.unwrap();
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(&made[0].schema, big);
    assert_eq!(
        tenancy.registry().get(big).await.unwrap().status,
        TenantStatus::ReadOnly
    );
    assert_eq!(
        tenancy.registry().get(small).await.unwrap().status,
        TenantStatus::Active
    );
    let err = tenancy
        .router()
        .connection_for_schema(big)
        .await
        .unwrap()
        .execute("INSERT INTO notes (body) VALUES ('more')", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantReadOnly { .. }), "{err:?}");
    assert_eq!(
        seen_by(tenancy.router(), big).await,
        "use0",
        "reads are served"
    );
    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard.len(), 2, "{heard:?}");
    assert!(
        heard[0].starts_with("OverQuota") && heard[1].starts_with("StatusChanged"),
        "{heard:?}"
    );
    // Already read-only: nothing more to do.
    assert!(tenancy.enforce_quotas().await.unwrap().is_empty());
    let err = tenancy
        .set_storage_quota(&schema("nobody"), Some(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantNotFound { .. }), "{err:?}");
}
