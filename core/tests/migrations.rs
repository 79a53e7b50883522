//! The migration engine against a real PostgreSQL: per-schema history, failures that stay
//! put, concurrent migrators, changed migrations, shared migrations, hooks, doctor.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{
    Drift, DropSchema, Error, Finding, NewTenant, Outcome, RunOptions, SchemaName, Tenancy,
    TenantEvent, TenantMigrations,
};

fn v1() -> TenantMigrations {
    TenantMigrations::from_files([("V1__notes.sql", NOTES), ("V2__marker.sql", MARKER)]).unwrap()
}

fn v3(sql: &str) -> TenantMigrations {
    TenantMigrations::from_files([
        ("V1__notes.sql", NOTES),
        ("V2__marker.sql", MARKER),
        ("V3__next.sql", sql),
    ])
    .unwrap()
}

async fn with(db: &tenant_schemas::testing::TestDatabase, migrations: TenantMigrations) -> Tenancy {
    Tenancy::builder(db.pool().clone())
        .migrations(migrations)
        .build()
        .await
        .unwrap()
}

async fn tenants(t: &Tenancy, prefix: &str, n: usize) -> Vec<SchemaName> {
    let mut out = Vec::new();
    for i in 0..n {
        let s = schema(&format!("{prefix}{i}"));
        t.create_tenant(NewTenant::new(s.clone())).await.unwrap();
        out.push(s);
    }
    out
}

async fn column_exists(t: &Tenancy, s: &SchemaName, column: &str) -> bool {
    let c = t.router().pool().get().await.unwrap();
    c.query_one(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'notes' AND column_name = $2",
        &[&s.as_str(), &column],
    )
    .await
    .unwrap()
    .get::<_, i64>(0)
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_schema_stays_put_and_the_others_migrate() {
    let db = database().await;
    let old = with(&db, v1()).await;
    let schemas = tenants(&old, "mig_", 20).await;
    assert_eq!(old.registry().get(&schemas[0]).await.unwrap().version, 2);
    // V3 fails in mig_7 only.
    let new = with(
        &db,
        v3("ALTER TABLE notes ADD COLUMN extra int; \
            SELECT 1 / (CASE WHEN current_schema() = 'mig_7' THEN 0 ELSE 1 END);"),
    )
    .await;
    let report = new.migrate(&RunOptions::default(), None).await.unwrap();
    let failed: Vec<_> = report.failures().collect();
    assert_eq!(failed.len(), 1, "{report:?}");
    assert_eq!(failed[0].schema.as_str(), "mig_7");
    assert!(
        matches!(&failed[0].outcome, Outcome::Failed { version: 2, error } if error.contains("V3__next.sql") && error.contains("division by zero"))
    );
    let migrated = report
        .schemas
        .iter()
        .filter(|r| r.outcome == Outcome::Migrated { from: 2, to: 3 })
        .count();
    assert_eq!(migrated, 19);
    for s in &schemas {
        let record = new.registry().get(s).await.unwrap();
        let moved = s.as_str() != "mig_7";
        assert_eq!(record.version, if moved { 3 } else { 2 }, "{s}");
        assert_eq!(column_exists(&new, s, "extra").await, moved, "{s}");
    }
    // A second run only looks at the one still behind.
    let again = new.migrate(&RunOptions::default(), None).await.unwrap();
    assert_eq!(again.up_to_date, 19);
    assert_eq!(again.schemas.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_migrators_apply_each_migration_once() {
    let db = database().await;
    let old = with(&db, v1()).await;
    let schemas = tenants(&old, "twice_", 20).await;
    let a = with(&db, v3("ALTER TABLE notes ADD COLUMN extra int")).await;
    let b = with(&db, v3("ALTER TABLE notes ADD COLUMN extra int")).await;
    let options = RunOptions {
        parallel: 3,
        ..RunOptions::default()
    };
    let (ra, rb) = tokio::join!(a.migrate(&options, None), b.migrate(&options, None));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra.is_success() && rb.is_success());
    let migrated = |r: &tenant_schemas::MigrationReport| {
        r.schemas
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Migrated { .. }))
            .count()
    };
    assert_eq!(migrated(&ra) + migrated(&rb), 20, "{ra:?} {rb:?}");
    let c = db.pool().get().await.unwrap();
    for s in &schemas {
        let n: i64 = c
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}.tenant_schemas_history WHERE version = 3",
                    s.quoted()
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_applied_migration_is_an_error_naming_its_file() {
    let db = database().await;
    let old = with(&db, v1()).await;
    tenants(&old, "chg_", 3).await;
    let edited = TenantMigrations::from_files([
        (
            "V1__notes.sql",
            "CREATE TABLE notes (id bigserial PRIMARY KEY, body text)",
        ),
        ("V2__marker.sql", MARKER),
    ])
    .unwrap();
    // Nothing is pending, and the edit is still noticed.
    let err = with(&db, edited.clone())
        .await
        .migrate(&RunOptions::default(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::MigrationChanged { file, .. } if file == "V1__notes.sql"),
        "{err}"
    );
    // With something pending, each schema refuses to move.
    let edited_v3 = TenantMigrations::from_files([
        (
            "V1__notes.sql",
            "CREATE TABLE notes (id bigserial PRIMARY KEY, body text)",
        ),
        ("V2__marker.sql", MARKER),
        ("V3__x.sql", "SELECT 1"),
    ])
    .unwrap();
    let report = with(&db, edited_v3)
        .await
        .migrate(&RunOptions::default(), None)
        .await
        .unwrap();
    assert_eq!(report.failures().count(), 3);
    assert!(report.failures().all(
        |r| matches!(&r.outcome, Outcome::Failed { error, .. } if error.contains("V1__notes.sql"))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_shared_migrations_hooks_and_each_tenant() {
    let db = database().await;
    let old = with(&db, v1()).await;
    let schemas = tenants(&old, "sel_", 4).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let t = Tenancy::builder(db.pool().clone())
        .migrations(v3("ALTER TABLE notes ADD COLUMN extra int"))
        .shared_migrations(TenantMigrations::new().with("plans", "CREATE TABLE plans (name text)"))
        .on_event(move |e| {
            let seen = seen.clone();
            async move {
                let line = match e {
                    TenantEvent::Created(r) => format!("created {}", r.schema),
                    TenantEvent::Migrated { schema, from, to } => {
                        format!("migrated {schema} {from}->{to}")
                    }
                    TenantEvent::Deleted(r) => format!("deleted {}", r.schema),
                    _ => "other".into(),
                };
                seen.lock().unwrap().push(line);
            }
        })
        .build()
        .await
        .unwrap();
    let only = RunOptions {
        schemas: vec![schemas[1].clone(), schemas[2].clone()],
        skip_public: true,
        ..RunOptions::default()
    };
    let report = t.migrate(&only, None).await.unwrap();
    assert_eq!(report.schemas.len(), 2);
    assert!(report
        .schemas
        .iter()
        .all(|r| r.schema != SchemaName::public()));
    assert!(column_exists(&t, &schemas[1], "extra").await);
    assert!(!column_exists(&t, &schemas[0], "extra").await);
    let progress = Arc::new(Mutex::new(Vec::new()));
    let p = progress.clone();
    let report = t
        .migrate(
            &RunOptions::default(),
            Some(Arc::new(move |done, total| {
                p.lock().unwrap().push((done, total));
            })),
        )
        .await
        .unwrap();
    assert_eq!(report.schemas[0].schema, SchemaName::public());
    assert_eq!(
        report.schemas[0].outcome,
        Outcome::Migrated { from: 0, to: 1 }
    );
    assert_eq!(*progress.lock().unwrap(), vec![(1, 2), (2, 2)]);
    t.router()
        .public()
        .await
        .unwrap()
        .query("SELECT * FROM plans", &[])
        .await
        .unwrap();

    t.create_tenant(NewTenant::new(schema("sel_new")))
        .await
        .unwrap();
    t.delete_tenant(&schema("sel_new"), DropSchema::Yes)
        .await
        .unwrap();
    let log = events.lock().unwrap().clone();
    assert!(log.contains(&"migrated sel_1 2->3".to_owned()), "{log:?}");
    assert!(
        log.contains(&"created sel_new".to_owned()) && log.contains(&"deleted sel_new".to_owned()),
        "{log:?}"
    );

    let counts = t
        .for_each_tenant(
            &RunOptions {
                skip_public: true,
                parallel: 2,
                ..RunOptions::default()
            },
            |tenant| {
                let t = t.clone();
                async move {
                    assert_eq!(
                        tenant_schemas::scope::current_schema().as_ref(),
                        Some(tenant.schema())
                    );
                    let db = t.connection().await?;
                    if tenant.schema().as_str() == "sel_3" {
                        db.execute("SELECT * FROM no_such_table", &[]).await?;
                    }
                    db.execute("INSERT INTO notes (body) VALUES ('hi')", &[])
                        .await
                }
            },
        )
        .await
        .unwrap();
    assert_eq!(counts.len(), 4);
    assert_eq!(counts.iter().filter(|(_, r)| r.is_ok()).count(), 3);
    assert!(counts[3].1.is_err() && counts[3].0.as_str() == "sel_3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_finds_each_kind_of_damage_and_fixes_what_is_safe() {
    let db = database().await;
    let old = with(&db, v1()).await;
    tenants(&old, "doc_", 4).await;
    let t = with(&db, v3("ALTER TABLE notes ADD COLUMN extra int")).await;
    let admin = db.pool().get().await.unwrap();
    // An orphan schema (registry row gone), a row without its schema, a tenant ahead, an
    // invalid name.
    t.delete_tenant(&schema("doc_0"), DropSchema::No)
        .await
        .unwrap();
    admin
        .batch_execute("DROP SCHEMA doc_1 CASCADE")
        .await
        .unwrap();
    admin
        .batch_execute(
            "UPDATE public.tenant_schemas_tenants SET version = 9 WHERE schema_name = 'doc_2';
             INSERT INTO public.tenant_schemas_tenants (schema_name, name) VALUES ('pg_sneaky', 'x')",
        )
        .await
        .unwrap();
    let report = t.registry().doctor().await.unwrap();
    let f = &report.findings;
    assert!(
        f.contains(&Finding::OrphanSchema {
            name: "doc_0".into()
        }),
        "{f:?}"
    );
    assert!(
        f.contains(&Finding::MissingSchema {
            schema: schema("doc_1")
        }),
        "{f:?}"
    );
    assert!(
        f.contains(&Finding::Ahead {
            schema: schema("doc_2"),
            version: 9,
            latest: 3
        }),
        "{f:?}"
    );
    assert!(
        f.contains(&Finding::Behind {
            schema: schema("doc_3"),
            version: 2,
            latest: 3
        }),
        "{f:?}"
    );
    assert!(
        f.iter()
            .any(|x| matches!(x, Finding::InvalidName { name, .. } if name == "pg_sneaky")),
        "{f:?}"
    );
    assert!(report.repaired.is_empty());

    // The repair goes through the one door: the hooks hear the migration.
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let hooked = Tenancy::builder(db.pool().clone())
        .migrations(v3("ALTER TABLE notes ADD COLUMN extra int"))
        .on_event(move |e| {
            let seen = seen.clone();
            async move {
                if let TenantEvent::Migrated { schema, from, to } = e {
                    seen.lock().unwrap().push(format!("{schema} {from}->{to}"));
                }
            }
        })
        .build()
        .await
        .unwrap();
    let fixed = hooked.doctor(true).await.unwrap();
    assert_eq!(*events.lock().unwrap(), vec!["doc_3 2->3".to_owned()]);
    assert_eq!(
        fixed.repaired,
        vec![Finding::Behind {
            schema: schema("doc_3"),
            version: 2,
            latest: 3
        }]
    );
    assert!(column_exists(&t, &schema("doc_3"), "extra").await);
    let after = t.registry().doctor().await.unwrap();
    assert!(!after
        .findings
        .iter()
        .any(|x| matches!(x, Finding::Behind { .. })));
    assert_eq!(after.findings.len(), 4, "{:?}", after.findings);
}

async fn catalog(t: &Tenancy, s: &SchemaName) -> Vec<String> {
    let c = t.router().pool().get().await.unwrap();
    let mut out: Vec<String> = c
        .query(
            "SELECT table_name || '.' || column_name || ':' || data_type || ':' || coalesce(column_default, '')
             FROM information_schema.columns WHERE table_schema = $1
             UNION ALL
             SELECT replace(indexdef, $1 || '.', '') FROM pg_indexes WHERE schemaname = $1",
            &[&s.as_str()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0).replace(&format!("{s}."), ""))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_has_the_same_catalog_and_the_rows() {
    let db = database().await;
    let t = with(&db, v1()).await;
    let made = tenants(&t, "orig_", 1).await.remove(0);
    let conn = t.router().connection_for_schema(&made).await.unwrap();
    conn.batch_execute(
        "INSERT INTO notes (body) VALUES ('one'), ('two'); INSERT INTO marker VALUES ('orig_0')",
    )
    .await
    .unwrap();
    drop(conn);
    let copy = t
        .clone_tenant(
            &made,
            NewTenant::new(schema("copy_0")).domain(host("copy.test")),
        )
        .await
        .unwrap();
    assert_eq!(copy.version, 2);
    assert_eq!(catalog(&t, &made).await, catalog(&t, &copy.schema).await);
    assert!(!catalog(&t, &made).await.is_empty());
    let conn = t
        .router()
        .connection_for_schema(&copy.schema)
        .await
        .unwrap();
    let n: i64 = conn
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // The sequence moved on with the rows: the next id does not collide.
    let id: i64 = conn
        .query_one(
            "INSERT INTO notes (body) VALUES ('three') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 3);
    // A tenant behind the migration set cannot be cloned.
    let newer = with(&db, v3("SELECT 1")).await;
    let err = newer
        .clone_tenant(&made, NewTenant::new(schema("copy_1")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CloneVersion { .. }), "{err}");
}

/// One health model: the status, the dry run and the doctor read what the run then does.
/// Each tenant below is damaged in one way the run refuses (or healthy): the schemas the
/// dry run says would fail are exactly those the run fails, each for the drift the status
/// names, and the healthy ones migrate as predicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_and_the_status_agree_with_the_run() {
    let db = database().await;
    let old = with(&db, v1()).await;
    let s = tenants(&old, "agree_", 6).await;
    let pool = old.router().pool().clone();
    let c = pool.get().await.unwrap();
    c.batch_execute(
        "DROP SCHEMA agree_1 CASCADE;
         UPDATE agree_2.tenant_schemas_history SET checksum = checksum + 1 WHERE version = 1;
         CREATE TABLE agree_3.plans (id int); CREATE TABLE public.plans (id int);
         INSERT INTO agree_4.tenant_schemas_history (version, name, checksum) VALUES (7, 'newer', 0);",
    )
    .await
    .unwrap();
    drop(c);
    let new = with(&db, v3("ALTER TABLE notes ADD COLUMN extra int")).await;
    let options = RunOptions {
        skip_public: true,
        ..RunOptions::default()
    };

    let status = new.migration_status(&[], true).await.unwrap();
    let kinds: Vec<(&str, Vec<&str>)> = status
        .iter()
        .map(|st| {
            (
                st.schema.as_str(),
                st.drift.iter().map(Drift::kind).collect(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("agree_0", vec![]),
            ("agree_1", vec!["missing_schema"]),
            ("agree_2", vec!["changed_migration"]),
            ("agree_3", vec!["table_in_public"]),
            ("agree_4", vec!["registry_mismatch", "ahead"]),
            ("agree_5", vec![]),
        ]
    );
    assert_eq!(status[0].applied, Some(2));
    assert_eq!(status[0].pending_files(), ["V3__next.sql"]);

    let dry = new.migrate_dry_run(&options).await.unwrap();
    assert_eq!(dry.schemas.len(), 6);
    assert_eq!((dry.up_to_date, dry.deferred), (0, 0));
    let predicted: Vec<&str> = dry.failures().map(|st| st.schema.as_str()).collect();
    assert_eq!(predicted, ["agree_1", "agree_2", "agree_3", "agree_4"]);
    // The doctor names the same hazards where it looks for them.
    let doctor = new.registry().doctor().await.unwrap();
    assert!(doctor.findings.contains(&Finding::MissingSchema {
        schema: s[1].clone()
    }));
    assert!(doctor.findings.contains(&Finding::TableInPublic {
        schema: s[3].clone(),
        table: "plans".into()
    }));

    let report = new.migrate(&options, None).await.unwrap();
    let mut failed: Vec<&str> = report.failures().map(|r| r.schema.as_str()).collect();
    failed.sort_unstable();
    assert_eq!(failed, predicted, "{report:?}");
    let fail_of = |name: &str| {
        report
            .schemas
            .iter()
            .find(|r| r.schema.as_str() == name)
            .map(|r| format!("{:?}", r.outcome))
            .unwrap()
    };
    assert!(fail_of("agree_2").contains("V1__notes.sql"), "{report:?}");
    assert!(fail_of("agree_3").contains("plans"), "{report:?}");
    for healthy in [&s[0], &s[5]] {
        assert!(column_exists(&new, healthy, "extra").await);
    }

    // Afterwards the status and the dry run see what the run did.
    let after = new.migrate_dry_run(&options).await.unwrap();
    assert_eq!(after.up_to_date, 2);
    let left: Vec<&str> = after.schemas.iter().map(|st| st.schema.as_str()).collect();
    assert_eq!(left, ["agree_1", "agree_2", "agree_3", "agree_4"]);
    let status = new.migration_status(&[s[0].clone()], true).await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!((status[0].applied, status[0].drift.len()), (Some(3), 0));
    assert!(status[0].pending.is_empty());
}

/// An instance still running the older migration set (a rolling deploy) does not create a
/// tenant one version behind the others without a word: the creation is refused with both
/// versions, nothing is left behind, the status it reads shows the newer tenants as ahead,
/// and the newer set creates the tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_migration_set_does_not_create_tenants_behind() {
    let db = database().await;
    let newer = with(&db, v3("ALTER TABLE notes ADD COLUMN tag text")).await;
    let existing = tenants(&newer, "ahead", 1).await;
    let older = with(&db, v1()).await;
    let late = schema("late");
    let err = older
        .create_tenant(NewTenant::new(late.clone()))
        .await
        .unwrap_err();
    match &err {
        Error::MigrationSetBehind {
            schema,
            latest,
            registry,
        } => assert_eq!((schema, *latest, *registry), (&late, 2, 3)),
        other => panic!("expected MigrationSetBehind, got {other:?}"),
    }
    assert_eq!(err.status(), http::StatusCode::CONFLICT);
    let message = err.to_string();
    assert!(
        message.contains("version 2") && message.contains("version 3"),
        "{message}"
    );
    assert!(
        !schema_exists(&db, "late").await,
        "a schema was left behind"
    );
    assert!(
        !is_registered(&db, "late").await,
        "a registry row was left behind"
    );
    let status = older.migration_status(&existing, false).await.unwrap();
    assert!(
        status[0].drift.iter().any(|d| matches!(
            d,
            Drift::Ahead {
                version: 3,
                latest: 2
            }
        )),
        "{:?}",
        status[0].drift
    );
    let record = newer
        .create_tenant(NewTenant::new(late.clone()))
        .await
        .unwrap();
    assert_eq!(record.version, 3);
    assert!(column_exists(&newer, &late, "tag").await);
}

/// Shared names kept in the registry: declared once, they let a tenant table share its name
/// with `public` in this tenancy at once and in every tenancy built later, without
/// declaring them in code; forgotten, the table is refused again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_names_kept_in_the_registry() {
    let db = database().await;
    let set = || {
        TenantMigrations::from_files([("V1__plans.sql", "CREATE TABLE plans (name text)")]).unwrap()
    };
    let t = with(&db, set()).await;
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE public.plans (name text)")
        .await
        .unwrap();
    let err = t
        .create_tenant(NewTenant::new(schema("refused")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TableInPublic { .. }), "{err:?}");

    let kept = t
        .declare_shared_names(["plans", "django_migrations"])
        .await
        .unwrap();
    assert_eq!(kept, ["django_migrations", "plans"]);
    assert!(t.shared_names().contains(&"plans".to_owned()));
    t.create_tenant(NewTenant::new(schema("allowed")))
        .await
        .unwrap();
    // A tenancy built later (another instance, a command) reads them.
    let later = with(&db, set()).await;
    later
        .create_tenant(NewTenant::new(schema("later")))
        .await
        .unwrap();
    let status = later.migration_status(&[], false).await.unwrap();
    assert!(status.iter().all(|s| s.drift.is_empty()), "{status:?}");

    assert!(later.forget_shared_name("plans").await.unwrap());
    assert!(!later.forget_shared_name("plans").await.unwrap());
    let err = later
        .create_tenant(NewTenant::new(schema("again")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TableInPublic { .. }), "{err:?}");
    let err = t.declare_shared_names([""]).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err:?}");
}

/// A temporary table a tenant's function left on a pooled connection (`CREATE TEMP TABLE IF
/// NOT EXISTS` in a PL/pgSQL body, unseen by the SQL reader) does not take the migration meant
/// for the tenant's table of the same name: `pg_temp` is searched before the schema's path,
/// and the migration's `ALTER TABLE notes` would alter the temporary table while the history
/// recorded it applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_table_a_function_left_does_not_take_a_migration() {
    let db = database().await;
    let pool = db.new_pool(2).unwrap();
    let old = Tenancy::builder(pool.clone())
        .migrations(v1())
        .build()
        .await
        .unwrap();
    let a = tenants(&old, "migtmp_", 1).await.remove(0);
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE FUNCTION public.plant() RETURNS text LANGUAGE plpgsql AS $$ BEGIN \
               CREATE TEMP TABLE IF NOT EXISTS notes (id bigint, body text); RETURN 'ok'; END $$",
        )
        .await
        .unwrap();
    // On both pooled connections at once.
    let (one, two) = (
        old.router().connection_for_schema(&a).await.unwrap(),
        old.router().connection_for_schema(&a).await.unwrap(),
    );
    for conn in [&one, &two] {
        conn.query_one("SELECT public.plant()", &[]).await.unwrap();
    }
    drop((one, two));

    let new = Tenancy::builder(pool)
        .migrations(v3("ALTER TABLE notes ADD COLUMN extra int"))
        .build()
        .await
        .unwrap();
    let report = new.migrate(&RunOptions::default(), None).await.unwrap();
    assert_eq!(report.failures().count(), 0, "{report:?}");
    assert_eq!(new.registry().get(&a).await.unwrap().version, 3);
    assert!(
        column_exists(&new, &a, "extra").await,
        "the migration altered the temporary table, and the history says it was applied"
    );
}
