//! Erasing a tenant: schema, rows, registry row and domains gone, and a receipt that says
//! what was removed.

#![allow(clippy::unwrap_used)]

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{EraseOptions, Error, Tenancy, TenantStatus};

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
    until_counted(
        &db,
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE NOT l.granted AND c.relname = 'notes' AND n.nspname = $1",
        &[&s.as_str()],
    )
    .await;
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
    until_counted(
        &b,
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
         WHERE NOT l.granted AND c.oid = 'far_erased.notes'::regclass",
        &[],
    )
    .await;
    let watcher = b.pool().get().await.unwrap();
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

/// The rows on the receipt of a schema whose tables inherit from one another are the rows
/// erased: a child's rows are counted once (under the child), not again under its parent
/// (`count(*)` of a parent includes its children's rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_counts_inherited_rows_once() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.pool().clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "ei", 1).await.remove(0);
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE {s}.parent (x int);
             CREATE TABLE {s}.child () INHERITS ({s}.parent);
             INSERT INTO {s}.parent VALUES (1);
             INSERT INTO {s}.child VALUES (2), (3);"
        ))
        .await
        .unwrap();
    let receipt = tenancy.erase_tenant(&s, None).await.unwrap();
    let rows = |table: &str| {
        receipt
            .tables
            .iter()
            .find(|t| t.table == table)
            .map(|t| t.rows)
    };
    assert_eq!(rows("parent"), Some(1), "{:?}", receipt.tables);
    assert_eq!(rows("child"), Some(2), "{:?}", receipt.tables);
    // notes (0), marker (1), history (2), parent (1), child (2).
    assert_eq!(receipt.rows(), 6, "{:?}", receipt.tables);
}

/// A table of the tenant's schema that is a partition of a table elsewhere (here `public`)
/// is dropped with the schema, and its rows with it: they are on the receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_counts_a_partition_of_a_table_outside_the_schema() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.pool().clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "ep", 1).await.remove(0);
    let conn = db.pool().get().await.unwrap();
    conn.batch_execute(&format!(
        "CREATE TABLE public.events (tenant text, v int) PARTITION BY LIST (tenant);
         CREATE TABLE {s}.events_mine PARTITION OF public.events FOR VALUES IN ('{s}');
         INSERT INTO public.events VALUES ('{s}', 1), ('{s}', 2);"
    ))
    .await
    .unwrap();
    let receipt = tenancy.erase_tenant(&s, None).await.unwrap();
    let left: i64 = conn
        .query_one("SELECT count(*) FROM public.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the partition's rows were erased with the schema");
    let mine = receipt.tables.iter().find(|t| t.table == "events_mine");
    assert_eq!(mine.map(|t| t.rows), Some(2), "{:?}", receipt.tables);
    assert_eq!(receipt.rows(), 5, "{:?}", receipt.tables);
}

/// A tenant's partitioned table: listed once, with the rows of all its partitions (which
/// are not listed on their own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_counts_a_partitioned_table_once() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.pool().clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "eq", 1).await.remove(0);
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE {s}.log (k int, v int) PARTITION BY RANGE (k);
             CREATE TABLE {s}.log_low PARTITION OF {s}.log FOR VALUES FROM (0) TO (10)
               PARTITION BY RANGE (v);
             CREATE TABLE {s}.log_low_a PARTITION OF {s}.log_low FOR VALUES FROM (0) TO (100);
             CREATE TABLE {s}.log_high PARTITION OF {s}.log FOR VALUES FROM (10) TO (20);
             INSERT INTO {s}.log VALUES (1, 1), (2, 2), (15, 3);"
        ))
        .await
        .unwrap();
    let receipt = tenancy.erase_tenant(&s, None).await.unwrap();
    let log = receipt.tables.iter().find(|t| t.table == "log");
    assert_eq!(log.map(|t| t.rows), Some(3), "{:?}", receipt.tables);
    assert!(
        !receipt.tables.iter().any(|t| t.table.starts_with("log_")),
        "{:?}",
        receipt.tables
    );
    assert_eq!(receipt.rows(), 6, "{:?}", receipt.tables);
}

/// An inheritance child of a tenant's table outside its schema (here in `public`) is
/// dropped with the schema when asked (`EraseOptions::with_dependents`, `CASCADE`): its
/// rows are counted, under the tenant's table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_counts_a_child_outside_the_schema_under_its_parent() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.pool().clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "ek", 1).await.remove(0);
    let conn = db.pool().get().await.unwrap();
    conn.batch_execute(&format!(
        "CREATE TABLE {s}.base (x int);
         CREATE TABLE public.outside () INHERITS ({s}.base);
         INSERT INTO {s}.base VALUES (1);
         INSERT INTO public.outside VALUES (2), (3);"
    ))
    .await
    .unwrap();
    // Without the opt-in the erasure is refused (the child is outside the schema).
    let err = tenancy.erase_tenant(&s, None).await.unwrap_err();
    assert!(matches!(err, Error::OutsideDependents { .. }), "{err:?}");
    let receipt = tenancy
        .erase_tenant_with(&s, EraseOptions::default().with_dependents(true))
        .await
        .unwrap();
    let gone: i64 = conn
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'outside'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gone, 0, "the child was dropped with its parent");
    let base = receipt.tables.iter().find(|t| t.table == "base");
    assert_eq!(base.map(|t| t.rows), Some(3), "{:?}", receipt.tables);
    assert_eq!(receipt.rows(), 6, "{:?}", receipt.tables);
}

/// An unlogged table's rows and a materialized view's are dropped with the schema: they
/// are on the receipt (one never populated with none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_counts_unlogged_tables_and_materialized_views() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.pool().clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "em", 1).await.remove(0);
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE UNLOGGED TABLE {s}.scratch (x int);
             INSERT INTO {s}.scratch VALUES (1), (2);
             CREATE MATERIALIZED VIEW {s}.copied AS SELECT x FROM {s}.scratch;
             CREATE MATERIALIZED VIEW {s}.empty AS SELECT x FROM {s}.scratch WITH NO DATA;"
        ))
        .await
        .unwrap();
    let receipt = tenancy.erase_tenant(&s, None).await.unwrap();
    let rows = |table: &str| {
        receipt
            .tables
            .iter()
            .find(|t| t.table == table)
            .map(|t| t.rows)
    };
    assert_eq!(rows("scratch"), Some(2), "{:?}", receipt.tables);
    assert_eq!(rows("copied"), Some(2), "{:?}", receipt.tables);
    assert_eq!(rows("empty"), Some(0), "{:?}", receipt.tables);
    assert_eq!(receipt.rows(), 7, "{:?}", receipt.tables);
}

/// An erasure that races a rename of the tenant's schema (the rename waiting for a driver's
/// connection held for the tenant when the erasure begins) fails, the tenant being gone from
/// its old name: the tenant, under its new name, is put back in its state, not left in
/// maintenance (served to no one) by the failed erasure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_losing_a_race_with_a_rename_puts_the_tenant_back() {
    use std::time::Duration;
    use tenant_schemas::checkout::DriverCheckout;
    use tenant_schemas::{SchemaName, Tenant};
    let db = database().await;
    let tenancy = Tenancy::builder(db.pool().clone())
        .migrations(marker_and_notes())
        .held_connection_grace(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "eren", 1).await.remove(0);
    let new = SchemaName::new("eren_new").unwrap();
    let held = DriverCheckout::begin(Some(&tenancy.tenant_states()), &Tenant::new(s.clone()))
        .await
        .unwrap();
    let renaming = {
        let (tenancy, s, new) = (tenancy.clone(), s.clone(), new.clone());
        tokio::spawn(async move { tenancy.rename_schema(&s, &new).await })
    };
    // Until the rename holds the schema's gate closed (waiting for the held checkout): a
    // checkout of the schema then waits at the gate instead of being made.
    loop {
        let probe = tokio::time::timeout(
            Duration::from_secs(1),
            DriverCheckout::begin(Some(&tenancy.tenant_states()), &Tenant::new(s.clone())),
        )
        .await;
        if probe.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let erasing = {
        let (tenancy, s) = (tenancy.clone(), s.clone());
        tokio::spawn(async move { tenancy.erase_tenant(&s, None).await })
    };
    // Until the erasure has put the tenant in maintenance (and waits behind the rename).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tenancy.registry().get(&s).await.unwrap().status != TenantStatus::Maintenance {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(held);
    let renamed = renaming.await.unwrap();
    let erased = erasing.await.unwrap();
    match (renamed, erased) {
        (Ok(_), Err(e)) => {
            assert!(matches!(e, Error::TenantNotFound { .. }), "{e:?}");
            let record = tenancy.registry().get(&new).await.unwrap();
            assert_eq!(
                record.status,
                TenantStatus::Active,
                "the renamed tenant was left as the failed erasure put it"
            );
        }
        (renamed, erased) => panic!("{renamed:?} / {erased:?}"),
    }
}

/// A transaction of another process (a migration, say) that created a table in the tenant's
/// schema and wrote rows into it, committing while the erasure runs: the table is dropped
/// with the schema (the drop waits for that transaction), so it and its rows are on the
/// receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_counts_a_table_created_by_a_transaction_open_when_the_erasure_began() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.pool().clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "ecr", 1).await.remove(0);
    let mut writer = db.pool().get().await.unwrap();
    let tx = writer.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "CREATE TABLE {s}.created (x int); INSERT INTO {s}.created VALUES (1), (2)"
    ))
    .await
    .unwrap();
    let erasing = {
        let (tenancy, s) = (tenancy.clone(), s.clone());
        tokio::spawn(async move { tenancy.erase_tenant(&s, None).await })
    };
    // The erasure waits for the writer (the drop would, for the lock the writer holds on
    // the schema).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !erasing.is_finished(),
        "the erasure did not wait for the writer"
    );
    // The writer (a migration, say) then records its work in the registry: the erasure,
    // waiting for it, holds nothing it would wait for.
    let recorded = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tx.execute(
            "UPDATE public.tenant_schemas_tenants SET version = version WHERE schema_name = $1",
            &[&s.as_str()],
        ),
    )
    .await;
    assert!(matches!(recorded, Ok(Ok(1))), "{recorded:?}");
    tx.commit().await.unwrap();
    let receipt = erasing.await.unwrap().unwrap();
    assert!(!schema_exists(&db, s.as_str()).await);
    let created = receipt.tables.iter().find(|t| t.table == "created");
    assert_eq!(created.map(|t| t.rows), Some(2), "{:?}", receipt.tables);
}
