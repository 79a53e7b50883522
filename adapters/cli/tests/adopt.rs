//! `import` and `migrate --baseline`, the `tenant-schemas` binary end to end, against a
//! throwaway PostgreSQL shaped like a django-tenants deployment.

#![allow(clippy::unwrap_used)]

mod common;

use common::{sql, Cli};
use tenant_schemas::testing::TestDatabase;

/// django-tenants' tables with the public tenant and two shops, each shop's schema holding
/// the `orders` table of the tenant migration V1, with one row.
const DJANGO: &str = "
CREATE TABLE customers_client (id serial PRIMARY KEY, schema_name varchar(63) UNIQUE NOT NULL, name varchar(100) NOT NULL);
CREATE TABLE customers_domain (id serial PRIMARY KEY, domain varchar(253) UNIQUE NOT NULL,
    tenant_id integer NOT NULL REFERENCES customers_client (id), is_primary boolean NOT NULL);
INSERT INTO customers_client (schema_name, name) VALUES ('public', 'Main site'), ('shop_a', 'Shop A'), ('shop_b', 'Shop B');
INSERT INTO customers_domain (domain, tenant_id, is_primary) VALUES
    ('example.test', 1, true), ('a.example.test', 2, true), ('www.a.example.test', 2, false), ('b.example.test', 3, true);
CREATE SCHEMA shop_a;
CREATE TABLE shop_a.orders (id serial PRIMARY KEY, item text NOT NULL);
INSERT INTO shop_a.orders (item) VALUES ('a-order');
CREATE SCHEMA shop_b;
CREATE TABLE shop_b.orders (id serial PRIMARY KEY, item text NOT NULL);
INSERT INTO shop_b.orders (item) VALUES ('b-order');
";

/// The binary on a database of its own, with tenant migrations V1 (`orders`) and V2.
async fn cli(name: &str) -> (Cli, TestDatabase) {
    Cli::with(
        name,
        &[
            (
                "tenant",
                "V1__orders.sql",
                "CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL)",
            ),
            (
                "tenant",
                "V2__quantity.sql",
                "ALTER TABLE orders ADD COLUMN quantity int NOT NULL DEFAULT 1",
            ),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_django_tenants_deployment_is_adopted() {
    let (cli, db) = cli("django").await;
    sql(&db, DJANGO).await;

    let out = cli.ok(&["import", "--from-django-tenants", "--baseline", "1"]);
    assert!(
        out.contains("imported shop_a (Shop A): version 1, a.example.test, www.a.example.test"),
        "{out}"
    );
    assert!(
        out.contains("imported public (Main site): version 0, example.test"),
        "{out}"
    );
    assert!(out.contains("imported 3 tenants (baseline 1)"), "{out}");
    let out = cli.ok(&["list", "--json"]);
    assert!(
        out.contains("\"schema\":\"shop_b\"") && out.contains("b.example.test"),
        "{out}"
    );

    // Only V2 runs; the shops keep their rows.
    let out = cli.ok(&["migrate", "--json"]);
    assert!(
        out.contains("\"migrated\":2") && out.contains("\"failed\":0"),
        "{out}"
    );
    let out = cli.ok(&[
        "run",
        "--sql",
        "SELECT item, quantity FROM orders",
        "--skip-public",
        "--json",
    ]);
    assert!(out.contains("a-order") && out.contains("b-order"), "{out}");
    cli.ok(&["doctor"]);

    // Again: registered already, nothing changes (exit 1).
    let (_, err) = cli.fails(1, &["import", "--from-django-tenants"]);
    assert!(err.contains("already exists"), "{err}");
    // Usage: a source is required, and only one.
    cli.fails(2, &["import"]);
    cli.fails(
        2,
        &["import", "--query", "SELECT 1", "--from-django-tenants"],
    );
    cli.fails(2, &["import", "--query", "SELECT 1", "--tenant-table", "x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_a_query_then_baseline() {
    let (cli, db) = cli("query").await;
    sql(&db, DJANGO).await;

    let (_, err) = cli.fails(
        1,
        &[
            "import",
            "--from-django-tenants",
            "--tenant-table",
            "shops_shop",
        ],
    );
    assert!(err.contains("no tenant table `shops_shop`"), "{err}");

    let out = cli.ok(&[
        "import",
        "--query",
        "SELECT schema_name, name, domain, is_primary FROM customers_client c
         JOIN customers_domain d ON d.tenant_id = c.id WHERE schema_name <> 'public'",
    ]);
    assert!(out.contains("imported 2 tenants (baseline 0)"), "{out}");

    let (_, err) = cli.fails(1, &["migrate", "--baseline", "3"]);
    assert!(
        err.contains("cannot baseline at version 3: the newest tenant migration is version 2"),
        "{err}"
    );
    let (_, err) = cli.fails(1, &["migrate", "--baseline", "1", "--schema", "nobody"]);
    assert!(err.contains("no such tenant: nobody"), "{err}");
    cli.fails(2, &["migrate", "--baseline", "1", "--dry-run"]);

    let out = cli.ok(&["migrate", "--baseline", "1", "--schema", "shop_a"]);
    assert!(
        out.contains("shop_a: recorded versions 1 to 1 as applied (nothing run)"),
        "{out}"
    );
    let out = cli.ok(&["migrate", "--baseline", "1"]);
    assert!(
        out.contains("shop_a: already at version 1") && out.contains("shop_b: recorded"),
        "{out}"
    );
    let out = cli.ok(&["migrate", "--dry-run"]);
    assert!(out.contains("shop_a: 1 pending: V2__quantity.sql"), "{out}");
    cli.ok(&["migrate"]);
    let out = cli.ok(&["status", "--json"]);
    assert!(!out.contains("\"pending\":[\"V"), "{out}");
}

/// A real django-tenants database has Django's own tables in `public` and in every tenant
/// schema: the import says which flag keeps them as shared names, keeps them with it, and
/// every later command works without --shared-name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn djangos_own_tables_are_declared_once() {
    let (cli, db) = cli("django-own").await;
    sql(&db, DJANGO).await;
    sql(
        &db,
        "CREATE TABLE public.django_migrations (id serial PRIMARY KEY, app text, name text);
         CREATE TABLE public.django_content_type (id serial PRIMARY KEY, app_label text, model text);
         CREATE TABLE shop_a.django_migrations (id serial PRIMARY KEY, app text, name text);
         CREATE TABLE shop_a.django_content_type (id serial PRIMARY KEY, app_label text, model text);
         CREATE TABLE shop_b.django_migrations (id serial PRIMARY KEY, app text, name text);",
    )
    .await;
    let (_, err) = cli.fails(1, &["import", "--from-django-tenants", "--baseline", "1"]);
    assert!(err.contains("--declare-django-tables"), "{err}");
    assert!(err.contains("shared-names add django_"), "{err}");

    cli.ok(&[
        "import",
        "--from-django-tenants",
        "--declare-django-tables",
        "--baseline",
        "1",
    ]);
    let out = cli.ok(&["shared-names", "list", "--json"]);
    assert!(out.contains("django_content_type"), "{out}");
    // No --shared-name on any later command.
    cli.ok(&["migrate"]);
    let out = cli.ok(&["status"]);
    assert!(out.contains("0 with drift"), "{out}");
    cli.ok(&["create", "shop_c"]);
    cli.ok(&["doctor"]);

    cli.ok(&["shared-names", "add", "orders_archive"]);
    cli.ok(&["shared-names", "remove", "orders_archive"]);
    cli.fails(1, &["shared-names", "remove", "orders_archive"]);
}

/// `import --dry-run` lists every problem at once, each with what resolves it, and writes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_lists_every_problem_at_once() {
    let (cli, db) = cli("django-dry").await;
    sql(&db, DJANGO).await;
    sql(
        &db,
        "CREATE TABLE public.django_migrations (id serial PRIMARY KEY, app text, name text);
         CREATE TABLE shop_a.django_migrations (id serial PRIMARY KEY, app text, name text);
         CREATE TABLE shop_b.django_migrations (id serial PRIMARY KEY, app text, name text);
         INSERT INTO customers_client (schema_name, name) VALUES ('ghost', 'No schema'), ('Bad-Name', 'Invalid');
         INSERT INTO customers_domain (domain, tenant_id, is_primary) VALUES ('bad..domain', 4, false);",
    )
    .await;
    cli.ok(&["migrate"]);
    let (out, _) = cli.fails(
        1,
        &[
            "import",
            "--from-django-tenants",
            "--baseline",
            "1",
            "--dry-run",
        ],
    );
    for expected in [
        "PROBLEM shop_a: table `django_migrations`",
        "PROBLEM shop_b: table `django_migrations`",
        "--declare-django-tables",
        "PROBLEM ghost:",
        "PROBLEM Bad-Name:",
        "bad..domain",
    ] {
        assert!(out.contains(expected), "{expected} missing in:\n{out}");
    }
    let (out, _) = cli.fails(
        1,
        &[
            "import",
            "--from-django-tenants",
            "--baseline",
            "1",
            "--dry-run",
            "--json",
        ],
    );
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(doc["problems"].as_array().unwrap().len() >= 5, "{out}");
    // Nothing was written: no tenant, no history in the schemas.
    let out = cli.ok(&["list", "--json"]);
    assert!(!out.contains("shop_a"), "{out}");
    let (code, _, _) = cli.raw(
        &["run", "--schema", "shop_a", "--sql", "SELECT 1"],
        &cli.dir,
    );
    assert_ne!(code, 0, "shop_a was registered");
    assert_eq!(
        db.pool()
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname IN ('shop_a', 'shop_b') AND c.relname = 'tenant_schemas_history'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0),
        0,
        "a history was written"
    );
}
