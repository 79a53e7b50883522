//! Tenant states: read-only tenants cannot write (and their state never sticks to a pooled
//! connection another tenant gets next), tenants that are not served get no connection, the
//! state reaches other instances, the hooks hear it, and an older registry is upgraded.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{
    scope, Error, ErrorKind, SchemaName, SchemaRouter, SearchPathMode, Tenancy, Tenant,
    TenantEvent, TenantStatus,
};

/// A tenant as a request in its state would carry it.
fn in_state(schema: &SchemaName, status: TenantStatus) -> Tenant {
    Tenant::new(schema.clone()).with_status(status)
}

async fn write(router: &SchemaRouter, tenant: &Tenant) -> Result<u64, Error> {
    let db = router.connection_for_tenant(tenant).await?;
    db.execute("INSERT INTO notes (body) VALUES ('w')", &[])
        .await
}

async fn read_marker(router: &SchemaRouter, tenant: &Tenant) -> String {
    let db = router.connection_for_tenant(tenant).await.unwrap();
    marker_of(&db).await
}

async fn read_only_tenants_cannot_write(mode: SearchPathMode) {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "ro_", 2).await;
    // One connection: every checkout below reuses it.
    let router = SchemaRouter::builder(db.new_pool(1).unwrap())
        .mode(mode)
        .build();
    let (ro, other) = (
        in_state(&schemas[0], TenantStatus::ReadOnly),
        in_state(&schemas[1], TenantStatus::Active),
    );
    for _ in 0..3 {
        assert_eq!(read_marker(&router, &ro).await, "ro_0");
        let err = write(&router, &ro).await.unwrap_err();
        assert!(matches!(err, Error::TenantReadOnly { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::Forbidden);
        assert_eq!(err.status(), 403);
        // The next tenant on the same connection writes: read-only did not stick.
        assert_eq!(write(&router, &other).await.unwrap(), 1);
        // The same tenant made active again writes too.
        let active = in_state(&schemas[0], TenantStatus::Active);
        assert_eq!(write(&router, &active).await.unwrap(), 1);
    }
    // Through a transaction as well, even one whose first statement asks to write.
    let mut conn = router.connection_for_tenant(&ro).await.unwrap();
    let tx = conn.transaction().await.unwrap();
    let err = tx
        .batch_execute("SET TRANSACTION READ WRITE")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("read"), "{err}");
    drop(tx);
    drop(conn);
    let mut conn = router.connection_for_tenant(&ro).await.unwrap();
    let tx = conn.transaction().await.unwrap();
    let err = tx
        .execute("INSERT INTO notes (body) VALUES ('t')", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantReadOnly { .. }), "{err}");
    drop(tx);
    drop(conn);
    // Resetting the session through the scope does not make it writable either.
    let conn = router.connection_for_tenant(&ro).await.unwrap();
    if mode == SearchPathMode::Session {
        conn.batch_execute("RESET ALL").await.unwrap();
    }
    let err = conn
        .execute("INSERT INTO notes (body) VALUES ('r')", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantReadOnly { .. }), "{err}");
    drop(conn);
    let count = |s: &SchemaName| {
        let router = router.clone();
        let s = s.clone();
        async move {
            let db = router.connection_for_schema(&s).await.unwrap();
            db.query_one(
                "SELECT count(*) FROM notes WHERE body IN ('w', 't', 'r')",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    // Only the writes made while active landed.
    assert_eq!(count(&schemas[0]).await, 3);
    assert_eq!(count(&schemas[1]).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_tenants_cannot_write_in_session_mode() {
    read_only_tenants_cannot_write(SearchPathMode::Session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_tenants_cannot_write_in_transaction_mode() {
    read_only_tenants_cannot_write(SearchPathMode::Transaction).await;
}

/// Tenants in maintenance, suspended or archived get no connection, whatever code asks for
/// one in their scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_not_served_get_no_connection() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "ns_", 1).await;
    let router = tenancy.router();
    for (status, code) in [
        (TenantStatus::Maintenance, 503),
        (TenantStatus::Suspended, 403),
        (TenantStatus::Archived, 404),
    ] {
        let tenant = in_state(&schemas[0], status);
        let err = scope::run(tenant, async { router.connection().await })
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::TenantNotServed { status: s, .. } if s == status),
            "{err}"
        );
        assert_eq!(err.status(), code, "{status}");
    }
}

/// A state set through the one door: the registry keeps it, this instance resolves the
/// tenant's hosts with it at once, another instance within moments, and the hooks hear
/// each change (not a repeated one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_reach_every_instance_and_the_hooks() {
    let db = database().await;
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    let a = Tenancy::builder(db.new_pool(4).unwrap())
        .migrations(marker_and_notes())
        .listen_for_changes(db.config().clone())
        .on_event(move |event| {
            let log = log.clone();
            async move {
                if let TenantEvent::StatusChanged { schema, from, to } = event {
                    log.lock().unwrap().push((schema.to_string(), from, to));
                }
            }
        })
        .build()
        .await
        .unwrap();
    let b = Tenancy::builder(db.new_pool(4).unwrap())
        .listen_for_changes(db.config().clone())
        .build()
        .await
        .unwrap();
    let schemas = marked_tenants(&a, "st_", 1).await;
    let h = host("st-0.test");
    let started = Instant::now();
    while !(a.is_listening() && b.is_listening()) {
        assert!(started.elapsed() < Duration::from_secs(10), "listeners");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.resolve(&h).await.unwrap().status(), TenantStatus::Active);
    for status in [
        TenantStatus::ReadOnly,
        TenantStatus::Maintenance,
        TenantStatus::Maintenance,
        TenantStatus::Archived,
        TenantStatus::Active,
    ] {
        a.set_status(&schemas[0], status).await.unwrap();
        assert_eq!(a.resolve(&h).await.unwrap().status(), status);
        assert_eq!(a.registry().get(&schemas[0]).await.unwrap().status, status);
        let started = Instant::now();
        while b.resolve(&h).await.unwrap().status() != status {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "the other instance still sees the old state"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    use TenantStatus::{Active, Archived, Maintenance, ReadOnly};
    assert_eq!(
        *heard.lock().unwrap(),
        vec![
            ("st_0".to_string(), Active, ReadOnly),
            ("st_0".to_string(), ReadOnly, Maintenance),
            ("st_0".to_string(), Maintenance, Archived),
            ("st_0".to_string(), Archived, Active),
        ]
    );
    let missing = SchemaName::new("st_missing").unwrap();
    assert!(matches!(
        a.set_status(&missing, TenantStatus::Suspended).await,
        Err(Error::TenantNotFound { .. })
    ));
}

/// A registry installed by an earlier version (which allowed only `active` and
/// `suspended`) is upgraded by the next build, and reads as not installed until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_registry_is_upgraded_for_the_new_states() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let schemas = marked_tenants(&tenancy, "up_", 1).await;
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "ALTER TABLE tenant_schemas_tenants DROP CONSTRAINT tenant_schemas_tenants_states;
             ALTER TABLE tenant_schemas_tenants ADD CONSTRAINT tenant_schemas_tenants_status_check
                 CHECK (status IN ('active', 'suspended'))",
        )
        .await
        .unwrap();
    assert!(!tenancy.registry().is_installed().await.unwrap());
    let upgraded = tenant_schemas::testing::fixtures::tenancy(&db, marker_and_notes()).await;
    assert!(upgraded.registry().is_installed().await.unwrap());
    upgraded
        .set_status(&schemas[0], TenantStatus::ReadOnly)
        .await
        .unwrap();
    let err = db
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute("UPDATE tenant_schemas_tenants SET status = 'bogus'")
        .await
        .unwrap_err();
    assert_eq!(
        err.as_db_error().and_then(|e| e.constraint()),
        Some("tenant_schemas_tenants_states"),
        "{err:?}"
    );
}

#[test]
fn states_parse_as_typed_and_as_stored() {
    for status in TenantStatus::ALL {
        assert_eq!(status.as_str().parse::<TenantStatus>().unwrap(), status);
    }
    assert_eq!(
        "Read-Only".parse::<TenantStatus>().unwrap(),
        TenantStatus::ReadOnly
    );
    let err = "paused".parse::<TenantStatus>().unwrap_err();
    assert!(err.contains("maintenance"), "{err}");
    assert_eq!(format!("{:<12}|", TenantStatus::Active), "active      |");
}

/// A read-only tenant's session goes back to the pool the registry and the migrations use
/// too: their next write on that connection still works, and so does another router's
/// tenant (two routers over one pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_session_does_not_reach_the_registry_or_another_router() {
    let db = database().await;
    // One connection for everything below.
    let pool = db.new_pool(1).unwrap();
    let tenancy = Tenancy::builder(pool.clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let schemas = marked_tenants(&tenancy, "rr_", 2).await;
    tenancy
        .set_status(&schemas[0], TenantStatus::ReadOnly)
        .await
        .unwrap();
    let ro = tenancy.registry().get(&schemas[0]).await.unwrap().tenant();
    let err = write(tenancy.router(), &ro).await.unwrap_err();
    assert!(matches!(err, Error::TenantReadOnly { .. }), "{err}");
    // The registry writes on the same connection.
    tenancy
        .set_status(&schemas[0], TenantStatus::Active)
        .await
        .unwrap();
    tenancy
        .set_status(&schemas[0], TenantStatus::ReadOnly)
        .await
        .unwrap();
    let err = write(tenancy.router(), &ro).await.unwrap_err();
    assert!(matches!(err, Error::TenantReadOnly { .. }), "{err}");
    // A second router over the same pool, which never served a read-only tenant itself.
    let other = SchemaRouter::new(pool.clone());
    let active = in_state(&schemas[1], TenantStatus::Active);
    assert_eq!(write(&other, &active).await.unwrap(), 1);
    // And a tenant created (registry rows, schema, migrations) on that connection.
    let created = marked_tenants(&tenancy, "rr_new_", 1).await;
    assert_eq!(seen_by(tenancy.router(), &created[0]).await, "rr_new_0");
}
