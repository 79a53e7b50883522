//! Adopting an existing deployment, against a real PostgreSQL shaped like a django-tenants
//! one: its tenants imported (registry rows, domains, a baseline) without touching their
//! data, then served by the library, and `migrate` running only what comes after the
//! baseline.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use tenant_schemas::testing::fixtures::{database, host, schema};
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{
    scope, DropSchema, Error, ImportSource, NewTenant, Outcome, RunOptions, Tenancy, TenantEvent,
    TenantMigrations,
};

/// django-tenants' tables (its docs' `customers` app) with the public tenant and two shops,
/// each shop's schema holding an `orders` table with one row.
const DJANGO: &str = "
CREATE TABLE customers_client (id serial PRIMARY KEY, schema_name varchar(63) UNIQUE NOT NULL, name varchar(100) NOT NULL);
CREATE TABLE customers_domain (id serial PRIMARY KEY, domain varchar(253) UNIQUE NOT NULL,
    tenant_id integer NOT NULL REFERENCES customers_client (id), is_primary boolean NOT NULL);
INSERT INTO customers_client (schema_name, name) VALUES ('public', 'Main site'), ('shop_a', 'Shop A'), ('shop_b', 'Shop B');
INSERT INTO customers_domain (domain, tenant_id, is_primary) VALUES
    ('example.test', 1, true), ('www.a.example.test', 2, false), ('a.example.test', 2, true), ('b.example.test', 3, true);
CREATE SCHEMA shop_a;
CREATE TABLE shop_a.orders (id serial PRIMARY KEY, item text NOT NULL);
INSERT INTO shop_a.orders (item) VALUES ('a-order');
CREATE SCHEMA shop_b;
CREATE TABLE shop_b.orders (id serial PRIMARY KEY, item text NOT NULL);
INSERT INTO shop_b.orders (item) VALUES ('b-order');
";

/// V1 is what the shops hold already; V2 comes after.
fn migrations() -> TenantMigrations {
    TenantMigrations::new()
        .with(
            "orders",
            "CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)",
        )
        .with(
            "quantity",
            "ALTER TABLE orders ADD COLUMN quantity int NOT NULL DEFAULT 1",
        )
}

async fn django_database() -> TestDatabase {
    let db = database().await;
    sql(&db, DJANGO).await;
    db
}

async fn sql(db: &TestDatabase, sql: &str) {
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap();
}

async fn tenancy_hearing(db: &TestDatabase) -> (Tenancy, Arc<Mutex<Vec<String>>>) {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    let tenancy = Tenancy::builder(db.pool().clone())
        .migrations(migrations())
        .on_event(move |event| {
            let log = log.clone();
            async move {
                let line = match event {
                    TenantEvent::Imported(r) => format!("imported {} at {}", r.schema, r.version),
                    TenantEvent::Baselined { schema, from, to } => {
                        format!("baselined {schema} {from}->{to}")
                    }
                    TenantEvent::Migrated { schema, from, to } => {
                        format!("migrated {schema} {from}->{to}")
                    }
                    other => format!("{other:?}"),
                };
                log.lock().unwrap().push(line);
            }
        })
        .build()
        .await
        .unwrap();
    (tenancy, heard)
}

async fn rows(tenancy: &Tenancy, domain: &str, sql: &str) -> Vec<String> {
    let tenant = tenancy.resolve(&host(domain)).await.unwrap();
    scope::run(tenant, async {
        let db = tenancy.connection().await.unwrap();
        db.query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    })
    .await
}

async fn registered(tenancy: &Tenancy) -> Vec<String> {
    let list = tenancy.registry().list().await.unwrap();
    list.iter().map(|r| r.schema.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_django_tenants_database_is_imported_and_served() {
    let db = django_database().await;
    let (tenancy, heard) = tenancy_hearing(&db).await;

    let source = ImportSource::django_tenants();
    let read = tenancy.registry().read_import(&source).await.unwrap();
    assert_eq!(read.len(), 3);
    assert!(registered(&tenancy).await.is_empty(), "reading registered");

    let imported = tenancy.import_from(&source, 1).await.unwrap();
    let summary: Vec<(String, String, i32, Vec<String>)> = imported
        .iter()
        .map(|r| {
            (
                r.schema.to_string(),
                r.name.clone(),
                r.version,
                r.domains.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "public".into(),
                "Main site".into(),
                0,
                vec!["example.test".into()]
            ),
            (
                "shop_a".into(),
                "Shop A".into(),
                1,
                vec!["a.example.test".into(), "www.a.example.test".into()]
            ),
            (
                "shop_b".into(),
                "Shop B".into(),
                1,
                vec!["b.example.test".into()]
            ),
        ]
    );
    assert_eq!(
        *heard.lock().unwrap(),
        [
            "imported public at 0",
            "imported shop_a at 1",
            "imported shop_b at 1"
        ]
    );

    // Served: every domain resolves, and each tenant's queries see its own rows only.
    assert!(tenancy
        .resolve(&host("example.test"))
        .await
        .unwrap()
        .is_public());
    for (domain, item) in [
        ("a.example.test", "a-order"),
        ("www.a.example.test", "a-order"),
        ("b.example.test", "b-order"),
    ] {
        assert_eq!(
            rows(&tenancy, domain, "SELECT item FROM orders").await,
            [item]
        );
    }

    // `migrate` runs V2 only (V1 would fail: the table exists).
    let report = tenancy.migrate(&RunOptions::default(), None).await.unwrap();
    assert!(report.is_success(), "{report:?}");
    // Migrated in parallel: in any order.
    let mut migrated: Vec<_> = report
        .schemas
        .iter()
        .map(|r| (r.schema.to_string(), r.outcome.clone()))
        .collect();
    migrated.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        migrated,
        [
            ("shop_a".into(), Outcome::Migrated { from: 1, to: 2 }),
            ("shop_b".into(), Outcome::Migrated { from: 1, to: 2 }),
        ]
    );
    assert_eq!(
        rows(
            &tenancy,
            "a.example.test",
            "SELECT item || ' x' || quantity FROM orders"
        )
        .await,
        ["a-order x1"]
    );
    assert_eq!(
        rows(
            &tenancy,
            "b.example.test",
            "SELECT name FROM tenant_schemas_history ORDER BY version"
        )
        .await,
        ["orders", "quantity"]
    );
    // A second import finds them registered: nothing changes.
    let err = tenancy.import_from(&source, 1).await.unwrap_err();
    assert!(matches!(err, Error::TenantExists { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_is_all_or_nothing() {
    let db = django_database().await;
    let (tenancy, _) = tenancy_hearing(&db).await;

    // A tenant row whose schema does not exist: nothing is imported.
    sql(
        &db,
        "INSERT INTO customers_client (schema_name, name) VALUES ('ghost', 'Ghost')",
    )
    .await;
    let err = tenancy
        .import_from(&ImportSource::django_tenants(), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::SchemaMissing { schema } if schema.as_str() == "ghost"),
        "{err}"
    );
    assert!(registered(&tenancy).await.is_empty());

    // A schema without any table cannot have its migrations applied.
    sql(&db, "CREATE SCHEMA ghost").await;
    let err = tenancy
        .import_from(&ImportSource::django_tenants(), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::BaselineRefused { schema, .. } if schema.as_str() == "ghost"),
        "{err}"
    );
    assert!(registered(&tenancy).await.is_empty());

    // Tables and queries that are not there, columns missing, bad names: said.
    let err = tenancy
        .import_from(
            &ImportSource::django_tenants_tables("shops", "customers_domain"),
            1,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no tenant table `shops`"), "{err}");
    let err = tenancy
        .import_from(&ImportSource::query("SELECT 'x' AS schema"), 0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no `schema_name` column"), "{err}");
    let err = tenancy
        .import_from(&ImportSource::query("SELECT 'Bad-Name' AS schema_name"), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSchemaName(_)), "{err}");
    let err = tenancy
        .import_from(&ImportSource::django_tenants(), 3)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::BaselineVersion {
                version: 3,
                latest: 2
            }
        ),
        "{err}"
    );
    // The query runs read-only.
    let err = tenancy
        .import_from(
            &ImportSource::query("DELETE FROM customers_client WHERE false RETURNING schema_name"),
            0,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    assert!(registered(&tenancy).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_query_and_baselined_later() {
    let db = django_database().await;
    let (tenancy, heard) = tenancy_hearing(&db).await;

    // Imported without a baseline (0): registered at version 0, nothing recorded.
    let imported = tenancy
        .import_from(
            &ImportSource::query(
                "SELECT schema_name, domain FROM customers_client c
                 JOIN customers_domain d ON d.tenant_id = c.id
                 WHERE schema_name LIKE 'shop%' AND is_primary",
            ),
            0,
        )
        .await
        .unwrap();
    assert_eq!(imported.len(), 2);
    assert!(imported
        .iter()
        .all(|r| r.version == 0 && r.name == r.schema.as_str()));

    // The baseline records V1 as applied; a second one changes nothing.
    let done = tenancy.baseline(&[schema("shop_a")], 1).await.unwrap();
    assert_eq!((done.len(), done[0].from, done[0].to), (1, 0, 1));
    let done = tenancy.baseline(&[], 1).await.unwrap();
    let moved: Vec<_> = done
        .iter()
        .map(|b| (b.schema.to_string(), b.from, b.to))
        .collect();
    assert_eq!(moved, [("shop_a".into(), 1, 1), ("shop_b".into(), 0, 1)]);
    let err = tenancy.baseline(&[schema("nobody")], 1).await.unwrap_err();
    assert!(matches!(err, Error::TenantNotFound { .. }), "{err}");

    let report = tenancy.migrate(&RunOptions::default(), None).await.unwrap();
    assert!(report.is_success(), "{report:?}");
    let mut heard = heard.lock().unwrap().clone();
    heard[4..].sort();
    assert_eq!(
        heard,
        [
            "imported shop_a at 0",
            "imported shop_b at 0",
            "baselined shop_a 0->1",
            "baselined shop_b 0->1",
            "migrated shop_a 1->2",
            "migrated shop_b 1->2",
        ]
    );
    assert_eq!(
        rows(
            &tenancy,
            "b.example.test",
            "SELECT item || quantity FROM orders"
        )
        .await,
        ["b-order1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_kept_at_deletion_is_imported_at_its_version() {
    let db = database().await;
    let (tenancy, _) = tenancy_hearing(&db).await;
    tenancy
        .create_tenant(NewTenant::new(schema("kept")).domain(host("kept.test")))
        .await
        .unwrap();
    tenancy
        .delete_tenant(&schema("kept"), DropSchema::No)
        .await
        .unwrap();
    let records = tenancy
        .import_tenants(
            &[NewTenant::new(schema("kept")).domain(host("kept.test"))],
            0,
        )
        .await
        .unwrap();
    assert_eq!(records[0].version, 2, "its history says 2");
    assert!(tenancy.resolve(&host("kept.test")).await.is_ok());
}

/// A dry run writes nothing: not even the registry's ids, which a tenant registered in its
/// rolled-back transaction would take from the sequence; the next tenant created gets the
/// id it would have got without the dry run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_takes_no_registry_id() {
    let db = django_database().await;
    let (tenancy, _) = tenancy_hearing(&db).await;
    let first = tenancy
        .create_tenant(NewTenant::new(schema("before")))
        .await
        .unwrap();
    let run = tenancy
        .import_dry_run(
            &ImportSource::query(
                "SELECT schema_name, domain FROM customers_client c
                 JOIN customers_domain d ON d.tenant_id = c.id
                 WHERE schema_name LIKE 'shop%'",
            ),
            1,
        )
        .await
        .unwrap();
    assert_eq!(
        (run.tenants.len(), run.problems.len()),
        (2, 0),
        "{:?}",
        run.problems
    );
    assert_eq!(registered(&tenancy).await, ["before"]);
    let next = tenancy
        .create_tenant(NewTenant::new(schema("after")))
        .await
        .unwrap();
    assert_eq!(next.id, first.id + 1);
    // Nothing recorded in the schemas either.
    let history: i64 = db
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname IN ('shop_a', 'shop_b')
             AND tablename = 'tenant_schemas_history'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(history, 0);
}
