//! Erasing a tenant: schema, rows, registry row and domains gone, and a receipt that says
//! what was removed.

#![allow(clippy::unwrap_used)]

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{Error, Tenancy, TenantStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_tenant_removes_everything_and_says_what() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.pool().clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let schemas = marked_tenants(&tenancy, "er", 3).await; // er2 has 2 notes
    let (gone, kept) = (&schemas[2], &schemas[1]);
    tenancy
        .set_status(gone, TenantStatus::ReadOnly)
        .await
        .unwrap();

    let receipt = tenancy
        .erase_tenant(gone, Some("sha256:0123".into()))
        .await
        .unwrap();
    assert_eq!(&receipt.tenant.schema, gone);
    assert_eq!(
        receipt.tenant.status,
        TenantStatus::ReadOnly,
        "the state it had"
    );
    assert_eq!(receipt.tenant.domains, ["er2.test"]);
    let rows = |table: &str| {
        receipt
            .tables
            .iter()
            .find(|t| t.table == table)
            .map(|t| t.rows)
    };
    assert_eq!(rows("notes"), Some(2));
    assert_eq!(rows("marker"), Some(1));
    assert_eq!(rows(tenant_schemas::HISTORY_TABLE), Some(2));
    assert_eq!(receipt.rows(), 5);
    assert_eq!(receipt.key_prefix, "t/er2/");
    assert_eq!(receipt.path_prefix, "tenants/er2/");
    assert_eq!(receipt.export_checksum.as_deref(), Some("sha256:0123"));

    assert!(!schema_exists(&db, "er2").await);
    assert!(!is_registered(&db, "er2").await);
    let err = tenancy.resolve(&host("er2.test")).await.unwrap_err();
    assert!(matches!(err, Error::UnknownHost { .. }), "{err:?}");
    // The others are untouched.
    assert_eq!(seen_by(tenancy.router(), kept).await, "er1");

    let err = tenancy.erase_tenant(gone, None).await.unwrap_err();
    assert!(matches!(err, Error::TenantNotFound { .. }), "{err:?}");
    let err = tenancy
        .erase_tenant(&tenant_schemas::SchemaName::public(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err:?}");
}
