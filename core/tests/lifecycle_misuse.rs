//! Tenant lifecycle under misuse, against a real PostgreSQL: migrations that end or escape
//! the creating transaction, tenants named after roles, tenant tables shadowing `public`,
//! clones of identity and generated columns, unreadable migration file names, and
//! concurrent creations whose domains cross.

#![allow(clippy::unwrap_used)]

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{
    DropSchema, Error, ErrorKind, Finding, NewTenant, Outcome, RunOptions, SchemaName, Tenancy,
    TenantMigrations,
};

async fn current_user(db: &TestDatabase) -> String {
    let conn = db.pool().get().await.unwrap();
    conn.query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

// 1. Migrations cannot end the creating transaction, nor move later migrations elsewhere.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_cannot_end_the_creating_transaction() {
    let db = database().await;
    for (i, stray) in [
        "COMMIT",
        "ROLLBACK",
        "END",
        "ABORT",
        "BEGIN",
        "START TRANSACTION",
        "SAVEPOINT s",
        "COMMIT; BEGIN",
        "PREPARE TRANSACTION 'x'",
    ]
    .into_iter()
    .enumerate()
    {
        let sql =
            format!("CREATE TABLE early_{i} (x int);\n{stray};\nCREATE TABLE stray_{i} (x int)");
        // Built with the infallible `with`: refused before anything runs.
        let migrations = TenantMigrations::new()
            .with("notes", NOTES)
            .with("stray", sql.as_str())
            .with("later", format!("CREATE TABLE later_{i} (x int)"))
            .with("fails", "SELECT 1 / 0");
        // A Tenancy refuses the set when it is built…
        let built = Tenancy::builder(db.pool().clone())
            .migrations(migrations.clone())
            .build()
            .await
            .map(drop);
        assert!(
            matches!(&built, Err(Error::MigrationRefused { .. })),
            "{stray}: {built:?}"
        );
        // The registry's own create and migrate paths refuse it too before anything runs:
        // no public path reaches them with such a set any more, so that is tested inside the
        // crate (`registry::lifecycle::tests`).
        // Built from files: refused at once, naming the file.
        let err = TenantMigrations::from_files([("V1__notes.sql", NOTES), ("V2__stray.sql", &sql)])
            .map(|m| m.len());
        assert!(
            matches!(&err, Err(e) if e.to_string().contains("V2__stray.sql")),
            "{stray}: {err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_cannot_move_later_migrations_elsewhere() {
    let db = database().await;
    let plain = tenancy(&db, TenantMigrations::new().with("notes", NOTES)).await;
    plain
        .create_tenant(NewTenant::new(schema("victim")))
        .await
        .unwrap();
    for (i, escape) in [
        "SET search_path TO victim",
        "SET LOCAL search_path TO victim",
        "set search_path = public",
        "RESET search_path",
        "RESET ALL",
        "SELECT pg_catalog.set_config('search_path', 'victim', false)",
        "SELECT set_config('search_path', 'victim, public', true)",
        "DO $$ BEGIN PERFORM set_config('search_path', 'victim', false); END $$",
    ]
    .into_iter()
    .enumerate()
    {
        let migrations = TenantMigrations::new()
            .with("notes", NOTES)
            .with("escape", escape)
            .with("later", format!("CREATE TABLE later_{i} (x int)"));
        let t = tenancy(&db, migrations).await;
        let s = format!("moved_{i}");
        t.create_tenant(NewTenant::new(schema(&s)))
            .await
            .unwrap_or_else(|e| panic!("{escape}: {e}"));
        assert_eq!(
            schemas_holding(&db, &format!("later_{i}")).await,
            [s.as_str()],
            "{escape}"
        );
        // `migrate` runs them the same way.
        let next = TenantMigrations::new()
            .with("notes", NOTES)
            .with("escape", escape)
            .with("later", format!("CREATE TABLE later_{i} (x int)"))
            .with("escape_again", escape)
            .with("after", format!("CREATE TABLE after_{i} (x int)"));
        let t = tenancy(&db, next).await;
        let report = t
            .migrate(
                &RunOptions {
                    schemas: vec![schema(&s)],
                    ..RunOptions::default()
                },
                None,
            )
            .await
            .unwrap();
        assert!(report.is_success(), "{escape}: {report:?}");
        assert_eq!(
            schemas_holding(&db, &format!("after_{i}")).await,
            [s.as_str()],
            "{escape}"
        );
        // The next round's shorter set creates no tenant behind this one (that is refused:
        // `MigrationSetBehind`), so this one goes.
        t.delete_tenant(&schema(&s), DropSchema::Yes).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_cannot_leave_a_pooled_connection_on_another_schema() {
    let db = database().await;
    // One connection: the creations and the tenant's requests share it.
    let pool = db.new_pool(1).unwrap();
    let t = Tenancy::builder(pool)
        .migrations(
            TenantMigrations::new()
                .with("notes", NOTES)
                .with("escape", "SET search_path TO victim"),
        )
        .build()
        .await
        .unwrap();
    assert!(t.router().tracks_search_path());
    for s in ["victim", "home"] {
        t.create_tenant(NewTenant::new(schema(s))).await.unwrap();
    }
    let home = schema("home");
    let conn = t.router().connection_for_schema(&home).await.unwrap();
    conn.execute("INSERT INTO notes (body) VALUES ('home')", &[])
        .await
        .unwrap();
    drop(conn);
    // The migration's session-level SET must not survive on the pooled connection.
    t.create_tenant(NewTenant::new(schema("third")))
        .await
        .unwrap();
    // Not for a raw pool connection either (the pool's only one).
    let raw = t.router().pool().get().await.unwrap();
    let path: String = raw.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert_eq!(path, "\"$user\", public");
    drop(raw);
    let conn = t.router().connection_for_schema(&home).await.unwrap();
    let row = conn
        .query_one(
            "SELECT current_schema()::text, (SELECT count(*) FROM notes)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "home");
    assert_eq!(row.get::<_, i64>(1), 1);
    drop(conn);
    // Nor when `migrate` runs it.
    let next = Tenancy::builder(t.router().pool().clone())
        .migrations(
            TenantMigrations::new()
                .with("notes", NOTES)
                .with("escape", "SET search_path TO victim")
                .with(
                    "again",
                    "SELECT pg_catalog.set_config('search_path', 'victim', false)",
                ),
        )
        .build()
        .await
        .unwrap();
    let report = next.migrate(&RunOptions::default(), None).await.unwrap();
    assert!(report.is_success(), "{report:?}");
    let raw = t.router().pool().get().await.unwrap();
    let path: String = raw.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert_eq!(path, "\"$user\", public");
}

// 2. Schemas named after roles.

/// Importing an existing schema named after a role is refused as creating one is: nothing
/// registered, the schema left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_named_after_a_role_is_not_imported() {
    let db = database().await;
    let t = tenancy(&db, marker_and_notes()).await;
    let role = format!("ts_import_role_{}", std::process::id());
    let admin = db.pool().get().await.unwrap();
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} NOLOGIN; \
             CREATE SCHEMA {role}; CREATE TABLE {role}.notes (id int)"
        ))
        .await
        .unwrap();
    let err = t
        .import_tenants(&[NewTenant::new(schema(&role))], 0)
        .await
        .map(|r| r.len());
    assert!(
        matches!(&err, Err(Error::SchemaNamedAfterRole { schema }) if schema.as_str() == role),
        "{err:?}"
    );
    assert!(!is_registered(&db, &role).await);
    assert!(schema_exists(&db, &role).await);
    admin
        .batch_execute(&format!("DROP SCHEMA {role} CASCADE; DROP ROLE {role}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_be_named_after_a_role() {
    let db = database().await;
    let t = tenancy(&db, marker_and_notes()).await;
    let user = current_user(&db).await;
    let role = format!("ts_role_{}", std::process::id());
    let admin = db.pool().get().await.unwrap();
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} NOLOGIN"
        ))
        .await
        .unwrap();
    for name in [user.as_str(), role.as_str(), "postgres"] {
        let Ok(s) = SchemaName::new(name) else {
            continue;
        };
        let err = t
            .create_tenant(NewTenant::new(s.clone()).domain(host("role.test")))
            .await
            .map(|r| r.schema);
        let exists = admin
            .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&name])
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1;
        if !exists {
            continue;
        }
        match &err {
            Err(e @ Error::SchemaNamedAfterRole { schema }) => {
                assert_eq!(schema.as_str(), name);
                assert_eq!(e.kind(), ErrorKind::Conflict);
                assert_eq!(e.status().as_u16(), 409);
            }
            other => panic!("{name}: expected SchemaNamedAfterRole, got {other:?}"),
        }
        assert!(!schema_exists(&db, name).await, "{name}");
        assert!(!is_registered(&db, name).await, "{name}");
    }
    // Cloning to a role's name is refused too.
    let source = t
        .create_tenant(NewTenant::new(schema("role_src")))
        .await
        .unwrap();
    let err = t
        .clone_tenant(&source.schema, NewTenant::new(schema(&role)))
        .await
        .map(|r| r.schema);
    assert!(
        matches!(err, Err(Error::SchemaNamedAfterRole { .. })),
        "{err:?}"
    );
    assert!(!schema_exists(&db, &role).await);
    admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_is_not_captured_by_a_schema_named_after_the_role() {
    let db = database().await;
    let t = tenancy(&db, marker_and_notes()).await;
    t.create_tenant(NewTenant::new(schema("acme")).domain(host("acme.test")))
        .await
        .unwrap();
    // A rogue schema named like the connecting role, made by hand, with look-alike registry
    // tables: `"$user"` puts it first on every connection that was not switched.
    let user = current_user(&db).await;
    let admin = db.pool().get().await.unwrap();
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA \"{user}\";
             CREATE TABLE \"{user}\".tenant_schemas_tenants (LIKE public.tenant_schemas_tenants INCLUDING ALL);
             CREATE TABLE \"{user}\".tenant_schemas_domains (LIKE public.tenant_schemas_domains INCLUDING ALL);
             INSERT INTO \"{user}\".tenant_schemas_tenants (schema_name, name) VALUES ('rogue', 'rogue');
             INSERT INTO \"{user}\".tenant_schemas_domains (domain, tenant_id, is_primary)
                 SELECT 'acme.test', id, true FROM \"{user}\".tenant_schemas_tenants"
        ))
        .await
        .unwrap();
    // Fresh connections (default search path) and a fresh cache.
    let fresh = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let acme = fresh.registry().get(&schema("acme")).await.unwrap();
    assert_eq!(acme.domains, ["acme.test"]);
    let names: Vec<String> = fresh
        .registry()
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.schema.to_string())
        .collect();
    assert_eq!(names, ["acme"]);
    assert_eq!(
        fresh
            .resolve(&host("acme.test"))
            .await
            .unwrap()
            .schema()
            .as_str(),
        "acme"
    );
    fresh
        .create_tenant(NewTenant::new(schema("globex")).domain(host("globex.test")))
        .await
        .unwrap();
    assert!(is_registered(&db, "globex").await);
    let report = fresh.migrate(&RunOptions::default(), None).await.unwrap();
    assert!(report.is_success(), "{report:?}");
    fresh.registry().doctor().await.unwrap();
}

// 3. Tenant tables that also exist in `public`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_reports_a_tenant_table_also_in_public() {
    let db = database().await;
    let t = tenancy(&db, marker_and_notes()).await;
    let role = format!("shadowed_role_{}", std::process::id());
    let made = schema(&role);
    for s in [schema("shadowed"), made.clone()] {
        t.create_tenant(NewTenant::new(s)).await.unwrap();
    }
    let admin = db.pool().get().await.unwrap();
    admin
        .batch_execute("CREATE TABLE public.notes (x int)")
        .await
        .unwrap();
    let report = t.registry().doctor().await.unwrap();
    let shadowed = |s: &SchemaName| Finding::TableInPublic {
        schema: s.clone(),
        table: "notes".into(),
    };
    assert_eq!(
        report.findings,
        [shadowed(&schema("shadowed")), shadowed(&made)]
    );
    assert!(!report.findings[0].is_repairable());
    assert!(!report.is_healthy());
    // A role made after the tenant, named like its schema, is reported too.
    admin
        .batch_execute(&format!("CREATE ROLE {role} NOLOGIN"))
        .await
        .unwrap();
    let report = t.registry().doctor().await.unwrap();
    admin
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();
    assert!(
        report
            .findings
            .contains(&Finding::SchemaNamedAfterRole { schema: made }),
        "{:?}",
        report.findings
    );
    // Declared on purpose: not a finding.
    let declared = tenancy(&db, marker_and_notes().shared_name("notes")).await;
    let report = declared.registry().doctor().await.unwrap();
    assert!(
        !report
            .findings
            .iter()
            .any(|f| matches!(f, Finding::TableInPublic { .. })),
        "{:?}",
        report.findings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_a_tenant_table_also_in_public() {
    let db = database().await;
    let t = tenancy(&db, TenantMigrations::new().with("notes", NOTES)).await;
    t.create_tenant(NewTenant::new(schema("mig_a")))
        .await
        .unwrap();
    let admin = db.pool().get().await.unwrap();
    admin
        .batch_execute("CREATE TABLE public.users (id int)")
        .await
        .unwrap();
    let with_users = TenantMigrations::new()
        .with("notes", NOTES)
        .with("users", "CREATE TABLE users (id int, name text)");
    let t = tenancy(&db, with_users).await;
    let report = t.migrate(&RunOptions::default(), None).await.unwrap();
    let failed: Vec<_> = report.failures().collect();
    assert_eq!(failed.len(), 1, "{report:?}");
    assert!(
        matches!(&failed[0].outcome, Outcome::Failed { version: 1, error } if error.contains("`users`") && error.contains("shared_name")),
        "{report:?}"
    );
    assert_eq!(t.registry().get(&schema("mig_a")).await.unwrap().version, 1);
    assert_eq!(schemas_holding(&db, "users").await, ["public"]);
    // Creating a tenant with that set is refused too, and leaves nothing behind.
    let err = t.create_tenant(NewTenant::new(schema("mig_b"))).await;
    assert!(
        matches!(&err, Err(Error::TableInPublic { schema, table }) if schema.as_str() == "mig_b" && table == "users"),
        "{err:?}"
    );
    assert!(!schema_exists(&db, "mig_b").await);
    assert!(!is_registered(&db, "mig_b").await);
    // A shared migration adding a `public` table named like a tenant table is refused.
    let t = Tenancy::builder(db.pool().clone())
        .migrations(TenantMigrations::new().with("notes", NOTES))
        .shared_migrations(TenantMigrations::new().with("notes", "CREATE TABLE notes (x int)"))
        .build()
        .await
        .unwrap();
    let report = t.migrate(&RunOptions::default(), None).await.unwrap();
    let failed: Vec<_> = report.failures().collect();
    assert_eq!(failed.len(), 1, "{report:?}");
    assert!(failed[0].schema.is_public(), "{report:?}");
    assert!(
        matches!(&failed[0].outcome, Outcome::Failed { error, .. } if error.contains("`notes`")),
        "{report:?}"
    );
    assert_eq!(schemas_holding(&db, "notes").await, ["mig_a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_shared_table_name_is_allowed() {
    let db = database().await;
    // The main site's users in `public`, and each tenant's own users.
    let admin = db.pool().get().await.unwrap();
    admin
        .batch_execute("CREATE TABLE public.users (id int)")
        .await
        .unwrap();
    let t = tenancy(&db, TenantMigrations::new().with("notes", NOTES)).await;
    t.create_tenant(NewTenant::new(schema("mutual_a")))
        .await
        .unwrap();
    let with_users = TenantMigrations::new()
        .with("notes", NOTES)
        .with("users", "CREATE TABLE users (id int, name text)")
        .shared_name("users");
    let t = Tenancy::builder(db.pool().clone())
        .migrations(with_users)
        .shared_migrations(
            TenantMigrations::new()
                .with("plans", "CREATE TABLE plans (name text)")
                .shared_name("plans"),
        )
        .build()
        .await
        .unwrap();
    let report = t.migrate(&RunOptions::default(), None).await.unwrap();
    assert!(report.is_success(), "{report:?}");
    t.create_tenant(NewTenant::new(schema("mutual_b")))
        .await
        .unwrap();
    assert_eq!(
        schemas_holding(&db, "users").await,
        ["mutual_a", "mutual_b", "public"]
    );
    let report = t.registry().doctor().await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

// 4. Clones of identity and generated columns.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_copies_identity_and_generated_columns() {
    let db = database().await;
    let t = tenancy(
        &db,
        TenantMigrations::new().with(
            "items",
            "CREATE TABLE items (
                 id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 price int NOT NULL,
                 qty int NOT NULL,
                 total int GENERATED ALWAYS AS (price * qty) STORED);
             CREATE TABLE tags (
                 id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                 label text NOT NULL,
                 shout text GENERATED ALWAYS AS (upper(label)) STORED)",
        ),
    )
    .await;
    let source = schema("ident_src");
    t.create_tenant(NewTenant::new(source.clone()))
        .await
        .unwrap();
    let conn = t.router().connection_for_schema(&source).await.unwrap();
    conn.batch_execute(
        "INSERT INTO items (price, qty) VALUES (2, 3), (5, 7);
         INSERT INTO items (id, price, qty) OVERRIDING SYSTEM VALUE VALUES (100, 1, 1);
         INSERT INTO tags (label) VALUES ('a'), ('b');
         INSERT INTO tags (id, label) VALUES (50, 'c')",
    )
    .await
    .unwrap();
    drop(conn);
    let copy = t
        .clone_tenant(&source, NewTenant::new(schema("ident_copy")))
        .await
        .unwrap()
        .schema;
    let rows = |s: SchemaName| {
        let t = t.clone();
        async move {
            let conn = t.router().connection_for_schema(&s).await.unwrap();
            let items: Vec<(i64, i32, i32, i32)> = conn
                .query("SELECT id, price, qty, total FROM items ORDER BY id", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            let tags: Vec<(i32, String, String)> = conn
                .query("SELECT id, label, shout FROM tags ORDER BY id", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            (items, tags)
        }
    };
    let before = rows(source.clone()).await;
    assert_eq!(before.0.len(), 3);
    assert_eq!(rows(copy.clone()).await, before);
    // New rows in the clone get fresh ids past the copied ones, and computed columns.
    let conn = t.router().connection_for_schema(&copy).await.unwrap();
    let item = conn
        .query_one(
            "INSERT INTO items (price, qty) VALUES (4, 4) RETURNING id, total",
            &[],
        )
        .await
        .unwrap();
    assert!(item.get::<_, i64>(0) > 100);
    assert_eq!(item.get::<_, i32>(1), 16);
    let tag = conn
        .query_one(
            "INSERT INTO tags (label) VALUES ('d') RETURNING id, shout",
            &[],
        )
        .await
        .unwrap();
    assert!(tag.get::<_, i32>(0) > 50);
    assert_eq!(tag.get::<_, String>(1), "D");
}

// 5. Migration files whose names are not UTF-8.

#[test]
fn from_dir_refuses_a_file_name_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let dir = std::env::temp_dir().join(format!("ts-lifecycle-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("V1__ok.sql"), "SELECT 1").unwrap();
    let bad = dir.join(std::ffi::OsStr::from_bytes(b"V2__caf\xe9.sql"));
    std::fs::write(&bad, "SELECT 2").unwrap();
    let result = TenantMigrations::from_dir(&dir).map(|m| m.len());
    std::fs::remove_dir_all(&dir).unwrap();
    match result {
        Err(Error::MigrationSource { path, .. }) => assert_eq!(path, bad),
        other => panic!("expected an error naming {}, got {other:?}", bad.display()),
    }
}

// 6. Concurrent creations whose domain lists cross.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_domain_lists_give_one_winner_and_one_conflict() {
    let db = database().await;
    let t = tenancy(&db, TenantMigrations::new().with("notes", NOTES)).await;
    for round in 0..20 {
        let (x, y) = (
            host(&format!("x{round}.test")),
            host(&format!("y{round}.test")),
        );
        let a = NewTenant::new(schema(&format!("cross_a{round}")))
            .domain(x.clone())
            .domain(y.clone());
        let b = NewTenant::new(schema(&format!("cross_b{round}")))
            .domain(y)
            .domain(x);
        let (ra, rb) = tokio::join!(t.create_tenant(a), t.create_tenant(b));
        let results = [ra.map(|r| r.schema), rb.map(|r| r.schema)];
        let won = results.iter().filter(|r| r.is_ok()).count();
        let taken = results
            .iter()
            .filter(|r| matches!(r, Err(Error::DomainTaken { .. })))
            .count();
        assert_eq!((won, taken), (1, 1), "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert_eq!(e.kind(), ErrorKind::Conflict);
            }
        }
    }
}

/// A deletion while every pooled connection is held by a request for the tenant: the
/// requests wait at the closed schema while keeping their connections, so the deletion
/// must not need one of those. It takes its connections first and finishes at once; the
/// waiting requests then fail cleanly (never reading `public`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_does_not_wait_for_the_connections_its_requests_hold() {
    let (_db, tenancy, schemas, _pool) =
        marked_over_public("held_", 1, 3, tenant_schemas::SearchPathMode::Session).await;
    let router = tenancy.router().clone();
    let mut requests = Vec::new();
    for _ in 0..3 {
        let (router, schema) = (router.clone(), schemas[0].clone());
        requests.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..40 {
                let Ok(db) = router.connection_for_schema(&schema).await else {
                    continue;
                };
                // Two statements per checkout: the second may meet the closed gate.
                for _ in 0..2 {
                    match db.query_one("SELECT schema_name FROM marker", &[]).await {
                        Ok(row) => seen.push(row.get::<_, String>(0)),
                        Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{e}"),
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
            seen
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    tenancy
        .delete_tenant(&schemas[0], tenant_schemas::DropSchema::Yes)
        .await
        .unwrap();
    let took = started.elapsed();
    println!("deletion took {took:?}");
    for r in requests {
        let seen = r.await.unwrap();
        assert!(seen.iter().all(|s| s == "held_0"), "{seen:?}");
    }
    assert!(
        took < std::time::Duration::from_secs(5),
        "the deletion waited {took:?} for connections its own requests held"
    );
}
