//! Objects outside a tenant's schema that depend on objects in it — a view in `public` or in
//! another tenant's schema, a foreign key of a `public` table, a table of another tenant
//! inheriting from the tenant's table — are never destroyed by deleting or erasing the
//! tenant unless asked: the deletion is refused naming them, and nothing is deleted; with
//! `DropSchema::WithDependents` / `EraseOptions::with_dependents` they go with the schema as
//! `DROP SCHEMA … CASCADE` drops them.

#![allow(clippy::unwrap_used)]

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::{TempTenant, TestDatabase};
use tenant_schemas::{
    DropSchema, EraseOptions, Error, ErrorKind, NewTenant, SchemaName, Tenancy, TenantStatus,
};

/// One kind of outside dependent, planted by a careless user.
struct Outside {
    kind: &'static str,
    /// Creates it (and rows of its own where it has any).
    plant: String,
    /// What the refusal must say (`<dependent> depends on <object>`).
    named: String,
    /// A count that is 1 while it is there, 0 once it is gone.
    probe: String,
    /// Rows of its own (a count, and what it gives while it is there), if it has any.
    rows: Option<(String, i64)>,
}

/// Each kind of outside dependent of tenant `s`'s objects, `o` being another tenant.
fn outside_kinds(s: &SchemaName, o: &SchemaName) -> Vec<Outside> {
    vec![
        Outside {
            kind: "a view in public",
            plant: format!("CREATE VIEW public.{s}_all_notes AS SELECT * FROM {s}.notes"),
            named: format!("view public.{s}_all_notes depends on table {s}.notes"),
            probe: format!("SELECT count(*) FROM pg_views WHERE viewname = '{s}_all_notes'"),
            rows: None,
        },
        Outside {
            kind: "a view in another tenant's schema",
            plant: format!("CREATE VIEW {o}.peek AS SELECT id FROM {s}.notes"),
            named: format!("view {o}.peek depends on table {s}.notes"),
            probe: format!(
                "SELECT count(*) FROM pg_views WHERE schemaname = '{o}' AND viewname = 'peek'"
            ),
            rows: None,
        },
        Outside {
            kind: "a foreign key of a public table",
            plant: format!(
                "CREATE TABLE public.{s}_orders (note bigint REFERENCES {s}.notes (id));
                 INSERT INTO public.{s}_orders SELECT id FROM {s}.notes"
            ),
            named: format!("table constraint {s}_orders_note_fkey on public.{s}_orders depends on"),
            probe: format!(
                "SELECT count(*) FROM pg_constraint WHERE conname = '{s}_orders_note_fkey'"
            ),
            rows: Some((format!("SELECT count(*) FROM public.{s}_orders"), 3)),
        },
        Outside {
            kind: "another tenant's table inheriting from the tenant's table",
            plant: format!(
                "CREATE TABLE {s}.base (x int);
                 CREATE TABLE {o}.heir () INHERITS ({s}.base);
                 INSERT INTO {s}.base VALUES (1);
                 INSERT INTO {o}.heir VALUES (2), (3)"
            ),
            named: format!("table {o}.heir depends on table {s}.base"),
            probe: format!(
                "SELECT count(*) FROM pg_tables WHERE schemaname = '{o}' AND tablename = 'heir'"
            ),
            rows: Some((format!("SELECT count(*) FROM ONLY {o}.heir"), 2)),
        },
        // Found by a red-team review: the look covered only the schema's relations, types,
        // functions and constraints, and `DROP SCHEMA … CASCADE` dropped these silently.
        Outside {
            kind: "a public table's column with the tenant's collation",
            plant: format!(
                "CREATE COLLATION {s}.c (locale = 'C');
                 CREATE TABLE public.{s}_coll (x text COLLATE {s}.c);
                 INSERT INTO public.{s}_coll VALUES ('a'), ('b')"
            ),
            named: format!("table column public.{s}_coll.x depends on collation {s}.c"),
            probe: format!(
                "SELECT count(*) FROM pg_attribute \
                 WHERE attrelid = 'public.{s}_coll'::regclass AND attname = 'x'"
            ),
            rows: Some((format!("SELECT count(*) FROM public.{s}_coll"), 2)),
        },
        Outside {
            kind: "a view in public using the tenant's operator",
            plant: format!(
                "CREATE FUNCTION {s}.same(int, int) RETURNS bool LANGUAGE sql IMMUTABLE
                     AS 'SELECT $1 = $2';
                 CREATE OPERATOR {s}.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = {s}.same);
                 CREATE VIEW public.{s}_opv AS SELECT 1 OPERATOR({s}.===) 1 AS same"
            ),
            named: format!("view public.{s}_opv depends on operator {s}.===(integer,integer)"),
            probe: format!("SELECT count(*) FROM pg_views WHERE viewname = '{s}_opv'"),
            rows: None,
        },
        Outside {
            kind: "an index in public on the tenant's text search configuration",
            plant: format!(
                "CREATE TEXT SEARCH CONFIGURATION {s}.cfg (COPY = pg_catalog.english);
                 CREATE TABLE public.{s}_docs (body text);
                 CREATE INDEX {s}_docs_fts ON public.{s}_docs
                     USING gin (to_tsvector('{s}.cfg'::regconfig, body))"
            ),
            named: format!(
                "index public.{s}_docs_fts depends on text search configuration {s}.cfg"
            ),
            probe: format!("SELECT count(*) FROM pg_indexes WHERE indexname = '{s}_docs_fts'"),
            rows: None,
        },
        Outside {
            kind: "an extension installed into the tenant's schema",
            plant: format!("CREATE EXTENSION hstore SCHEMA {s}"),
            named: format!("extension hstore depends on schema {s}"),
            probe: "SELECT count(*) FROM pg_extension WHERE extname = 'hstore'".into(),
            rows: None,
        },
    ]
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    db.pool()
        .get()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

async fn exec(db: &TestDatabase, sql: &str) {
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap();
}

/// Two tenants `<prefix>0` (the other) and `<prefix>1` (the one deleted, with 3 notes), the
/// latter read-only (a state the refusal must leave as it was), and `outside` planted.
async fn planted(db: &TestDatabase, tenancy: &Tenancy, prefix: &str, outside: usize) -> Planted {
    let schemas = marked_tenants(tenancy, prefix, 2).await;
    let (o, s) = (schemas[0].clone(), schemas[1].clone());
    exec(
        db,
        &format!("INSERT INTO {s}.notes (body) VALUES ('y'), ('z')"),
    )
    .await;
    tenancy
        .set_status(&s, TenantStatus::ReadOnly)
        .await
        .unwrap();
    let kind = outside_kinds(&s, &o).remove(outside);
    exec(db, &kind.plant).await;
    Planted { s, kind }
}

struct Planted {
    s: SchemaName,
    kind: Outside,
}

impl Planted {
    /// The refusal names the dependent and says nothing was `done`; nothing was.
    async fn refused(&self, db: &TestDatabase, tenancy: &Tenancy, result: Error, done: &str) {
        let (s, kind) = (&self.s, &self.kind.kind);
        assert!(
            matches!(&result, Error::OutsideDependents { schema, dependents, .. }
                if schema == s && !dependents.is_empty()),
            "{kind}: {result:?}"
        );
        assert_eq!(result.kind(), ErrorKind::Conflict, "{kind}");
        assert_eq!(result.status().as_u16(), 409, "{kind}");
        let text = result.to_string();
        assert!(text.contains(&self.kind.named), "{kind}: {text}");
        assert!(
            text.contains(&format!("nothing was {done}")),
            "{kind}: {text}"
        );
        self.untouched(db, tenancy).await;
    }

    /// The tenant, its state, its rows and the outside object are all still there.
    async fn untouched(&self, db: &TestDatabase, tenancy: &Tenancy) {
        let (s, kind) = (&self.s, &self.kind.kind);
        assert!(
            is_registered(db, s.as_str()).await,
            "{kind}: registry row gone"
        );
        assert!(schema_exists(db, s.as_str()).await, "{kind}: schema gone");
        let record = tenancy.registry().get(s).await.unwrap();
        assert_eq!(
            record.status,
            TenantStatus::ReadOnly,
            "{kind}: state changed"
        );
        assert_eq!(
            count(db, &format!("SELECT count(*) FROM {s}.notes")).await,
            3,
            "{kind}: rows gone"
        );
        assert_eq!(
            count(db, &self.kind.probe).await,
            1,
            "{kind}: the outside object was destroyed"
        );
        if let Some((rows, n)) = &self.kind.rows {
            assert_eq!(count(db, rows).await, *n, "{kind}: its rows");
        }
    }

    /// With the opt-in, the outside object went with the schema (the old behaviour).
    async fn dropped_with_it(&self, db: &TestDatabase) {
        let (s, kind) = (&self.s, &self.kind.kind);
        assert!(!is_registered(db, s.as_str()).await, "{kind}");
        assert!(!schema_exists(db, s.as_str()).await, "{kind}");
        assert_eq!(count(db, &self.kind.probe).await, 0, "{kind}");
    }
}

async fn new_tenancy(db: &TestDatabase) -> Tenancy {
    Tenancy::builder(db.pool().clone())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap()
}

/// `delete_tenant` with `DropSchema::Yes` refuses each kind; `WithDependents` drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_refuses_to_destroy_outside_dependents() {
    let db = database().await;
    let tenancy = new_tenancy(&db).await;
    for i in 0..outside_kinds(&schema("x"), &schema("y")).len() {
        let p = planted(&db, &tenancy, &format!("dd{i}_"), i).await;
        let err = tenancy
            .delete_tenant(&p.s, DropSchema::Yes)
            .await
            .unwrap_err();
        p.refused(&db, &tenancy, err, "deleted").await;
        // Asked for: the old behaviour.
        tenancy
            .delete_tenant(&p.s, DropSchema::WithDependents)
            .await
            .unwrap();
        p.dropped_with_it(&db).await;
    }
}

/// Keeping the schema (`DropSchema::No`) destroys nothing, so nothing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_but_keeping_its_schema_is_not_refused() {
    let db = database().await;
    let tenancy = new_tenancy(&db).await;
    let p = planted(&db, &tenancy, "dk", 0).await;
    tenancy.delete_tenant(&p.s, DropSchema::No).await.unwrap();
    assert!(!is_registered(&db, p.s.as_str()).await);
    assert!(schema_exists(&db, p.s.as_str()).await);
    assert_eq!(count(&db, &p.kind.probe).await, 1);
}

/// `erase_tenant` refuses each kind before the tenant is put in maintenance (its state is
/// as it was); `EraseOptions::with_dependents` erases as before, the receipt counting the
/// rows of an outside inheritance child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_tenant_refuses_to_destroy_outside_dependents() {
    let db = database().await;
    let tenancy = new_tenancy(&db).await;
    for i in 0..outside_kinds(&schema("x"), &schema("y")).len() {
        let p = planted(&db, &tenancy, &format!("ed{i}_"), i).await;
        let err = tenancy
            .erase_tenant(&p.s, Some("sha256:1".into()))
            .await
            .unwrap_err();
        p.refused(&db, &tenancy, err, "erased").await;
        let err = tenancy
            .erase_tenant_with(&p.s, EraseOptions::default())
            .await
            .unwrap_err();
        p.refused(&db, &tenancy, err, "erased").await;
        let receipt = tenancy
            .erase_tenant_with(
                &p.s,
                EraseOptions::default()
                    .export_checksum("sha256:2")
                    .with_dependents(true),
            )
            .await
            .unwrap();
        assert_eq!(receipt.export_checksum.as_deref(), Some("sha256:2"));
        assert_eq!(receipt.tenant.status, TenantStatus::ReadOnly);
        let rows = |t: &str| receipt.tables.iter().find(|r| r.table == t).map(|r| r.rows);
        assert_eq!(rows("notes"), Some(3), "{:?}", receipt.tables);
        if p.kind.kind.contains("inheriting") {
            // Its own row and the outside child's two, as before.
            assert_eq!(rows("base"), Some(3), "{:?}", receipt.tables);
        }
        p.dropped_with_it(&db).await;
    }
}

/// `TempTenant::delete` (the testing helper) drops the schema: refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temp_tenant_with_outside_dependents_is_not_deleted() {
    let db = database().await;
    let tenancy = new_tenancy(&db).await;
    let temp = TempTenant::create(&tenancy).await.unwrap();
    let s = temp.schema().clone();
    exec(
        &db,
        &format!("CREATE VIEW public.{s}_peek AS SELECT * FROM {s}.notes"),
    )
    .await;
    let err = temp.delete().await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("view public.{s}_peek depends on table {s}.notes")),
        "{err}"
    );
    assert!(is_registered(&db, s.as_str()).await);
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM pg_views WHERE viewname = '{s}_peek'")
        )
        .await,
        1
    );
}

/// A refusal names every dependent, and a tenant's own objects depending on one another,
/// on `public` or on the tenant's partition of a `public` table are no reason to refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_objects_outside_the_schema_are_named() {
    let db = database().await;
    let tenancy = new_tenancy(&db).await;
    let schemas = marked_tenants(&tenancy, "dn", 2).await;
    let (o, s) = (&schemas[0], &schemas[1]);
    exec(
        &db,
        &format!(
            "CREATE VIEW {s}.own AS SELECT * FROM {s}.notes;
             CREATE TABLE {s}.child () INHERITS ({s}.notes);
             CREATE TABLE public.dn_plans (id int PRIMARY KEY);
             CREATE TABLE {s}.subscriptions (plan int REFERENCES public.dn_plans (id));
             CREATE TABLE public.dn_events (tenant text) PARTITION BY LIST (tenant);
             CREATE TABLE {s}.events PARTITION OF public.dn_events FOR VALUES IN ('{s}');
             CREATE TYPE {s}.mood AS ENUM ('ok');
             CREATE FUNCTION {s}.f(int) RETURNS int LANGUAGE sql AS 'SELECT $1';
             CREATE TABLE {s}.uses (m {s}.mood, d int DEFAULT {s}.f(1));"
        ),
    )
    .await;
    // Nothing outside depends on o: it goes.
    tenancy.delete_tenant(o, DropSchema::Yes).await.unwrap();
    exec(
        &db,
        &format!(
            "CREATE VIEW public.dn_v1 AS SELECT * FROM {s}.own;
             CREATE TABLE public.dn_t (m {s}.mood, d int DEFAULT {s}.f(2))"
        ),
    )
    .await;
    let err = tenancy.delete_tenant(s, DropSchema::Yes).await.unwrap_err();
    let Error::OutsideDependents { dependents, .. } = &err else {
        panic!("{err:?}");
    };
    let mut want = vec![
        format!("default value for public.dn_t.d depends on function {s}.f(integer)"),
        format!("table column public.dn_t.m depends on type {s}.mood"),
        format!("view public.dn_v1 depends on view {s}.own"),
    ];
    want.sort();
    assert_eq!(dependents, &want, "{err}");
    exec(&db, "DROP VIEW public.dn_v1; DROP TABLE public.dn_t").await;
    tenancy.delete_tenant(s, DropSchema::Yes).await.unwrap();
    assert!(!schema_exists(&db, s.as_str()).await);
    assert_eq!(count(&db, "SELECT count(*) FROM public.dn_plans").await, 0);
}

/// A view `public.<s>_<name>` on `<s>.<from>` (a `kind`), made by a transaction that commits
/// while the deletion, then the erasure, of tenant `s` waits for it (after a first look found
/// nothing): refused, naming the view, the tenant kept and served, the view kept. The wait is
/// seen in `pg_locks`, not slept for.
async fn a_late_view_is_refused(prefix: &str, from: &str, kind: &str, name: &str) {
    let db = database().await;
    let tenancy = new_tenancy(&db).await;
    for (i, erase) in [false, true].into_iter().enumerate() {
        let s = marked_tenants(&tenancy, &format!("{prefix}{i}_"), 2)
            .await
            .remove(1);
        if from != "notes" {
            exec(
                &db,
                &format!("CREATE VIEW {s}.{from} AS SELECT * FROM {s}.notes"),
            )
            .await;
        }
        let mut planter = db.pool().get().await.unwrap();
        let tx = planter.transaction().await.unwrap();
        tx.batch_execute(&format!(
            "CREATE VIEW public.{s}_{name} AS SELECT * FROM {s}.{from}"
        ))
        .await
        .unwrap();
        let deleting = {
            let (tenancy, s) = (tenancy.clone(), s.clone());
            tokio::spawn(async move {
                if erase {
                    tenancy.erase_tenant(&s, None).await.map(drop)
                } else {
                    tenancy.delete_tenant(&s, DropSchema::Yes).await.map(drop)
                }
            })
        };
        // Until the deletion waits for the view's transaction (its lock on `from`).
        until_counted(
            &db,
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE NOT l.granted AND n.nspname = $1",
            &[&s.as_str()],
        )
        .await;
        tx.commit().await.unwrap();
        let err = deleting
            .await
            .unwrap()
            .expect_err("the deletion destroyed a view committed while it waited");
        assert!(
            err.to_string().contains(&format!(
                "view public.{s}_{name} depends on {kind} {s}.{from}"
            )),
            "erase {erase}: {err}"
        );
        assert!(is_registered(&db, s.as_str()).await);
        assert_eq!(
            tenancy.registry().get(&s).await.unwrap().status,
            TenantStatus::Active,
            "erase {erase}: put back"
        );
        assert_eq!(
            count(
                &db,
                &format!("SELECT count(*) FROM pg_views WHERE viewname = '{s}_{name}'")
            )
            .await,
            1
        );
    }
}

/// A dependent created by a transaction that commits while the deletion waits for the
/// tenant's tables (after a first look found none): the deletion looks again under its
/// locks, in the transaction that drops, and refuses instead of destroying it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_committed_while_the_deletion_waits_is_not_destroyed() {
    a_late_view_is_refused("dl", "notes", "table", "late").await;
}

/// A tenant on another database: a view in that database's `public` on its table is
/// refused there, and dropped with `WithDependents`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_on_another_database_is_checked_there() {
    let (a, b, tenancy) = two_databases().await;
    let s = SchemaName::new("far_dep").unwrap();
    tenancy
        .create_tenant(NewTenant::new(s.clone()).shard("b"))
        .await
        .unwrap();
    exec(
        &b,
        "CREATE VIEW public.far_view AS SELECT * FROM far_dep.notes",
    )
    .await;
    let err = tenancy
        .delete_tenant(&s, DropSchema::Yes)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("view public.far_view depends on table far_dep.notes"),
        "{err}"
    );
    assert!(is_registered(&a, "far_dep").await);
    assert!(schema_exists(&b, "far_dep").await);
    let err = tenancy.erase_tenant(&s, None).await.unwrap_err();
    assert!(matches!(err, Error::OutsideDependents { .. }), "{err}");
    assert_eq!(
        tenancy.registry().get(&s).await.unwrap().status,
        TenantStatus::Active
    );
    tenancy
        .delete_tenant(&s, DropSchema::WithDependents)
        .await
        .unwrap();
    assert!(!is_registered(&a, "far_dep").await);
    assert!(!schema_exists(&b, "far_dep").await);
    assert_eq!(
        count(
            &b,
            "SELECT count(*) FROM pg_views WHERE viewname = 'far_view'"
        )
        .await,
        0
    );
}

/// The same with a view on the tenant's view (found by a red-team review): creating it locks
/// the tenant's view only, not its tables, so the deletion's look under the tables' locks did
/// not wait for it, and `DROP SCHEMA … CASCADE`, waiting for the view's lock, then dropped the
/// committed view with the schema. The deletion locks the schema's views too, and refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_on_a_view_committed_while_the_deletion_waits_is_not_destroyed() {
    a_late_view_is_refused("dv", "own", "view", "peek").await;
}
