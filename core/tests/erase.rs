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

/// The receipt counts the rows erased, also those of a transaction that was writing when the
/// erasure began: here one of another process (a plain connection, outside this process's
/// gates) that inserted a row, its table locked, and commits while the count waits for the
/// lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_counts_rows_committed_while_counting() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.pool().clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "ec", 1).await.remove(0);
    let mut writer = db.pool().get().await.unwrap();
    let tx = writer.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "LOCK TABLE {s}.notes IN ACCESS EXCLUSIVE MODE; INSERT INTO {s}.notes (body) VALUES ('late')"
    ))
    .await
    .unwrap();
    let erasing = {
        let (tenancy, s) = (tenancy.clone(), s.clone());
        tokio::spawn(async move { tenancy.erase_tenant(&s, None).await })
    };
    // Until the erasure waits for the table's lock.
    let watcher = db.pool().get().await.unwrap();
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE NOT l.granted AND c.relname = 'notes' AND n.nspname = $1",
                &[&s.as_str()],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tx.commit().await.unwrap();
    let receipt = erasing.await.unwrap().unwrap();
    let notes = receipt.tables.iter().find(|t| t.table == "notes").unwrap();
    assert_eq!(notes.rows, 1, "{:?}", receipt.tables);
}

/// A transaction of this process open on the tenant when the erasure begins: the erasure
/// waits for it (as a deletion does), and its rows are on the receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_counts_rows_of_a_transaction_open_in_this_process() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.pool().clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "eo", 1).await.remove(0);
    let mut writer = tenancy.router().connection_for_schema(&s).await.unwrap();
    let tx = writer.transaction().await.unwrap();
    tx.batch_execute("INSERT INTO notes (body) VALUES ('first')")
        .await
        .unwrap();
    let erasing = {
        let (tenancy, s) = (tenancy.clone(), s.clone());
        tokio::spawn(async move { tenancy.erase_tenant(&s, None).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !erasing.is_finished(),
        "the erasure did not wait for the open transaction"
    );
    tx.batch_execute("INSERT INTO notes (body) VALUES ('second')")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drop(writer);
    let receipt = erasing.await.unwrap().unwrap();
    let notes = receipt.tables.iter().find(|t| t.table == "notes").unwrap();
    assert_eq!(notes.rows, 2, "{:?}", receipt.tables);
    assert!(tenancy.registry().get(&s).await.is_err());
}

/// A tenant on another database: its rows are counted there, with a writer of another
/// process committing while the count waits, and its schema and registry row are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_tenant_on_another_database_counts_and_drops_it_there() {
    let (_a, b, tenancy) = two_databases().await;
    let s = tenant_schemas::SchemaName::new("far_erased").unwrap();
    tenancy
        .create_tenant(tenant_schemas::NewTenant::new(s.clone()).shard("b"))
        .await
        .unwrap();
    let mut writer = b.pool().get().await.unwrap();
    let tx = writer.transaction().await.unwrap();
    tx.batch_execute(
        "LOCK TABLE far_erased.notes IN ACCESS EXCLUSIVE MODE;
         INSERT INTO far_erased.notes (body) VALUES ('one'), ('two')",
    )
    .await
    .unwrap();
    let erasing = {
        let (tenancy, s) = (tenancy.clone(), s.clone());
        tokio::spawn(async move { tenancy.erase_tenant(&s, None).await })
    };
    let watcher = b.pool().get().await.unwrap();
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                 WHERE NOT l.granted AND c.oid = 'far_erased.notes'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tx.commit().await.unwrap();
    let receipt = erasing.await.unwrap().unwrap();
    let notes = receipt.tables.iter().find(|t| t.table == "notes").unwrap();
    assert_eq!(notes.rows, 2, "{:?}", receipt.tables);
    let left: i64 = watcher
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'far_erased'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    assert!(tenancy.registry().get(&s).await.is_err());
}
