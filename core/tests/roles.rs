//! Role mode (`TenancyBuilder::tenant_roles`): every tenant runs under its own role, so that
//! PostgreSQL itself refuses what a careless or hostile tenant statement names of another
//! tenant's schema (or of the registry), through every door of the core: a scope in session
//! and transaction mode, a `TenantTransaction`, a schema asked for by name, jobs; SQL that
//! could leave the role is refused before it is sent; the public tenant and the library's own
//! work run as the login role; the role lives and dies with the tenant.

#![allow(clippy::unwrap_used)]

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{
    ConnectionScope, DropSchema, Error, NewTenant, SchemaName, SearchPathMode, Tenancy, Tenant,
    TenantMigrations, TenantRoles,
};

/// PostgreSQL's `insufficient_privilege`.
const DENIED: &str = "42501";

async fn role_tenancy(db: &TestDatabase, pool_size: usize, mode: SearchPathMode) -> Tenancy {
    Tenancy::builder(db.new_pool(pool_size).unwrap())
        .migrations(marker_and_notes())
        .shared_migrations(
            TenantMigrations::new().with("plans", "CREATE TABLE public.plans (name text)"),
        )
        .search_path_mode(mode)
        .tenant_roles(TenantRoles::new().share("plans", &["select"]).unwrap())
        .build()
        .await
        .unwrap()
}

/// What a tenant's careless or hostile statements try on `other`'s schema and on the
/// registry: each must fail with `permission denied`.
fn attempts(other: &SchemaName) -> Vec<String> {
    let o = other.quoted();
    vec![
        format!("SELECT schema_name FROM {o}.marker"),
        format!("SELECT count(*) FROM {o}.notes"),
        format!("INSERT INTO {o}.notes (body) VALUES ('stolen')"),
        format!("UPDATE {o}.notes SET body = 'x'"),
        format!("DELETE FROM {o}.notes"),
        format!("TRUNCATE {o}.notes"),
        format!("CREATE TABLE {o}.planted (x int)"),
        format!("DROP TABLE {o}.notes"),
        format!("ALTER TABLE {o}.notes ADD COLUMN y int"),
        format!("CREATE VIEW peek AS SELECT * FROM {o}.notes"),
        format!("SELECT * FROM (SELECT schema_name FROM {o}.marker) AS m"),
        format!("WITH m AS (SELECT * FROM {o}.marker) SELECT * FROM m"),
        format!("COPY (SELECT * FROM {o}.marker) TO STDOUT"),
        "SELECT * FROM public.tenant_schemas_tenants".into(),
        "SELECT * FROM public.tenant_schemas_domains".into(),
        "UPDATE public.tenant_schemas_tenants SET status = 'active'".into(),
        "INSERT INTO public.plans VALUES ('free')".into(),
    ]
}

/// Every attempt fails with `permission denied` on `db` (a scope of `own`), and `own`'s data
/// is still reachable.
async fn denied_on_scope(db: &ConnectionScope, own: &SchemaName, other: &SchemaName) {
    for sql in attempts(other) {
        let err = db.batch_execute(&sql).await.unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some(DENIED), "{sql}: {err}");
        let err = db.query(&sql, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some(DENIED), "{sql}: {err}");
    }
    assert_eq!(marker_of(db).await, own.as_str());
    let shared: i64 = db
        .query_one("SELECT count(*) FROM plans", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(shared, 0, "the shared table is readable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_schema_is_denied_through_every_door_of_the_core() {
    for mode in [SearchPathMode::Session, SearchPathMode::Transaction] {
        let db = database().await;
        // One connection: every checkout reuses the last tenant's session.
        let tenancy = role_tenancy(&db, 1, mode).await;
        tenancy.migrate(&Default::default(), None).await.unwrap();
        let s = marked_tenants(&tenancy, "rl_", 2).await;
        let (a, b) = (&s[0], &s[1]);
        let router = tenancy.router();

        // By tenant, both ways round, alternating on the one connection.
        for (own, other) in [(a, b), (b, a), (a, b)] {
            let tenant = tenancy.registry().get(own).await.unwrap().tenant();
            let db = router.connection_for_tenant(&tenant).await.unwrap();
            denied_on_scope(&db, own, other).await;
        }
        // By name.
        let db = router.connection_for_schema(a).await.unwrap();
        denied_on_scope(&db, a, b).await;
        drop(db);
        // A value made by hand carries no role: the registry's is used.
        let db = router
            .connection_for_tenant(&Tenant::new(b.clone()))
            .await
            .unwrap();
        denied_on_scope(&db, b, a).await;
        drop(db);

        // A transaction.
        let mut db = router.connection_for_schema(a).await.unwrap();
        for sql in attempts(b) {
            let tx = db.transaction().await.unwrap();
            let err = tx.batch_execute(&sql).await.unwrap_err();
            assert_eq!(
                sqlstate(&err).as_deref(),
                Some(DENIED),
                "{mode:?} tx {sql}: {err}"
            );
            drop(tx);
        }
        let tx = db.transaction().await.unwrap();
        let seen: String = tx
            .query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(seen, a.as_str());
        tx.commit().await.unwrap();
        drop(db);

        // The tenant in scope (jobs and request handlers reach it this way).
        let job = tenant_schemas::scope::run_in_schema(b.clone(), async {
            let db = tenancy.router().connection().await?;
            db.query_one(&format!("SELECT * FROM {}.marker", a.quoted()), &[])
                .await
                .map(|_| ())
        })
        .await
        .unwrap_err();
        assert_eq!(
            sqlstate(&job).as_deref(),
            Some(DENIED),
            "{mode:?} job: {job}"
        );

        // The public schema by name and the library's own work run as the login role, on
        // the connection a tenant's role was set on.
        let public = router.public().await.unwrap();
        let (user, session): (String, String) = {
            let row = public
                .query_one("SELECT current_user::text, session_user::text", &[])
                .await
                .unwrap();
            (row.get(0), row.get(1))
        };
        assert_eq!(user, session, "{mode:?}: public runs as the login role");
        drop(public);
        tenancy
            .create_tenant(NewTenant::new(schema("rl_late")))
            .await
            .unwrap();
        assert_eq!(tenancy.registry().list().await.unwrap().len(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_that_could_leave_the_role_is_refused_before_it_is_sent() {
    let db = database().await;
    let tenancy = role_tenancy(&db, 1, SearchPathMode::Session).await;
    let s = marked_tenants(&tenancy, "rs_", 2).await;
    let (a, b) = (&s[0], &s[1]);
    let leave = [
        "RESET ROLE".to_owned(),
        "reset role".into(),
        "SET ROLE NONE".into(),
        "SET ROLE postgres".into(),
        "set local role none".into(),
        "SET SESSION ROLE NONE".into(),
        "SET role = 'none'".into(),
        "SET \"role\" TO none".into(),
        "SET U&\"rol\\0065\" TO none".into(),
        "SET SESSION AUTHORIZATION DEFAULT".into(),
        "RESET SESSION AUTHORIZATION".into(),
        "RESET ALL".into(),
        "DISCARD ALL".into(),
        "SELECT set_config('role', 'none', false)".into(),
        "SELECT pg_catalog.set_config('ro' || 'le', 'none', false)".into(),
        "SELECT \"set_config\"('role', 'none', false)".into(),
        "DO $$ BEGIN EXECUTE 'RESET ' || 'ROLE'; END $$".into(),
        "CALL anything()".into(),
        "CREATE FUNCTION leave() RETURNS void LANGUAGE sql AS 'RESET ROLE'".into(),
        "CREATE FUNCTION leave() RETURNS void LANGUAGE sql AS $f$ SET ROLE NONE $f$".into(),
        "CREATE PROCEDURE leave() LANGUAGE sql AS $$ RESET ROLE $$".into(),
        "ALTER FUNCTION anything() SET role = 'none'".into(),
        "PREPARE leave AS SELECT set_config('role', 'none', false)".into(),
        format!("SELECT 1; RESET ROLE; SELECT * FROM {}.marker", b.quoted()),
        format!(
            "/* */ SELECT 1 ; RESET ROLE ; SELECT * FROM {}.marker",
            b.quoted()
        ),
    ];
    let router = tenancy.router();
    let db = router.connection_for_schema(a).await.unwrap();
    let refused = |r: Result<(), Error>, how: &str, sql: &str| match r {
        Err(Error::LeavesTenantRole { .. }) => {}
        other => panic!("{how} {sql}: {other:?}"),
    };
    for sql in &leave {
        refused(db.batch_execute(sql).await, "batch", sql);
        refused(db.simple_query(sql).await.map(drop), "simple", sql);
        refused(db.query(sql.as_str(), &[]).await.map(drop), "query", sql);
        refused(
            db.execute(sql.as_str(), &[]).await.map(drop),
            "execute",
            sql,
        );
        refused(db.prepare(sql).await.map(drop), "prepare", sql);
    }
    let mut db = db;
    for sql in &leave {
        let tx = db.transaction().await.unwrap();
        refused(tx.batch_execute(sql).await, "transaction", sql);
        drop(tx);
    }
    // The raw client could run anything.
    assert!(matches!(
        db.client().await,
        Err(Error::LeavesTenantRole { .. })
    ));
    // Nothing left the role: the other tenant is still denied on this session.
    let err = db
        .query_one(&format!("SELECT * FROM {}.marker", b.quoted()), &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some(DENIED));
    // What merely looks alike is served.
    for fine in [
        "UPDATE notes SET body = 'SET ROLE NONE'",
        "SET statement_timeout TO 5000",
        "SET LOCAL search_path TO public",
        "SELECT 'role', 'RESET ALL' AS x",
        "DISCARD PLANS",
    ] {
        db.batch_execute(fine)
            .await
            .unwrap_or_else(|e| panic!("{fine}: {e}"));
    }
    assert_eq!(marker_of(&db).await, a.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_role_lives_and_dies_with_it() {
    let db = database().await;
    let tenancy = role_tenancy(&db, 2, SearchPathMode::Session).await;
    let roles = |schema: SchemaName| {
        let tenancy = tenancy.clone();
        async move { tenancy.registry().get(&schema).await.unwrap().role }
    };
    let role_exists = |role: String| {
        let pool = db.pool().clone();
        async move {
            pool.get()
                .await
                .unwrap()
                .query_one(
                    "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = $1",
                    &[&role],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 1
        }
    };
    let s = marked_tenants(&tenancy, "rlife_", 1).await;
    let a = &s[0];
    let role_a = roles(a.clone()).await.expect("a role");
    assert!(role_exists(role_a.clone()).await);

    // A clone gets its own role, and neither reaches the other.
    let clone = schema("rlife_clone");
    tenancy
        .clone_tenant(a, NewTenant::new(clone.clone()))
        .await
        .unwrap();
    let role_clone = roles(clone.clone()).await.expect("a role");
    assert_ne!(role_a, role_clone);
    let router = tenancy.router();
    let db = router.connection_for_schema(&clone).await.unwrap();
    assert_eq!(marker_of(&db).await, a.as_str(), "the clone's rows");
    let err = db
        .query_one(&format!("SELECT * FROM {}.marker", a.quoted()), &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some(DENIED));
    drop(db);

    // A rename keeps the role and its grants.
    let renamed = schema("rlife_renamed");
    tenancy.rename_schema(&clone, &renamed).await.unwrap();
    assert_eq!(roles(renamed.clone()).await, Some(role_clone.clone()));
    let db = router.connection_for_schema(&renamed).await.unwrap();
    assert_eq!(marker_of(&db).await, a.as_str());
    db.execute("INSERT INTO notes (body) VALUES ('after rename')", &[])
        .await
        .unwrap();
    drop(db);

    // A deletion drops the role.
    tenancy
        .delete_tenant(&renamed, DropSchema::Yes)
        .await
        .unwrap();
    assert!(!role_exists(role_clone).await, "the role is dropped");
    assert!(role_exists(role_a).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_from_before_role_mode_are_refused_until_synced() {
    let db = database().await;
    let before = tenancy(&db, marker_and_notes()).await;
    let s = marked_tenants(&before, "rsync_", 2).await;
    let (a, b) = (&s[0], &s[1]);
    // A schema made by hand, not a tenant.
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE SCHEMA rsync_stray; CREATE TABLE rsync_stray.marker (schema_name text)",
        )
        .await
        .unwrap();
    let tenancy = role_tenancy(&db, 2, SearchPathMode::Session).await;
    let router = tenancy.router();
    for schema in [a, b, &schema("rsync_stray")] {
        match router.connection_for_schema(schema).await {
            Err(Error::NoTenantRole { .. }) => {}
            other => panic!("{schema}: {other:?}"),
        }
    }
    let synced = tenancy.sync_roles().await.unwrap();
    assert_eq!(synced.len(), 2);
    assert!(synced.iter().all(|(_, _, new)| *new));
    // Again: nothing new.
    assert!(tenancy
        .sync_roles()
        .await
        .unwrap()
        .iter()
        .all(|(_, _, new)| !new));
    let db_a = router.connection_for_schema(a).await.unwrap();
    assert_eq!(marker_of(&db_a).await, a.as_str());
    let err = db_a
        .query_one(&format!("SELECT * FROM {}.marker", b.quoted()), &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some(DENIED));
    // A schema that is no tenant stays refused.
    assert!(matches!(
        router.connection_for_schema(&schema("rsync_stray")).await,
        Err(Error::NoTenantRole { .. })
    ));
    // Without role mode, syncing is refused with a clear error.
    assert!(matches!(
        before.sync_roles().await,
        Err(Error::InvalidRoleSetting { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_plant_objects_or_rewrite_its_history_unless_ddl_is_allowed() {
    let db = database().await;
    let tenancy = role_tenancy(&db, 2, SearchPathMode::Session).await;
    let s = marked_tenants(&tenancy, "rddl_", 1).await;
    let router = tenancy.router();
    let scope = router.connection_for_schema(&s[0]).await.unwrap();
    // A function is refused before it is sent (its body could leave the role).
    assert!(matches!(
        scope
            .batch_execute(
                "CREATE FUNCTION now() RETURNS timestamptz LANGUAGE sql AS 'SELECT NULL::timestamptz'"
            )
            .await,
        Err(Error::LeavesTenantRole { .. })
    ));
    for sql in [
        "CREATE TABLE planted (x int)",
        "CREATE VIEW planted AS SELECT 1",
        "DELETE FROM tenant_schemas_history",
        "UPDATE tenant_schemas_history SET checksum = 0",
        "TRUNCATE tenant_schemas_history",
        "INSERT INTO tenant_schemas_history SELECT * FROM tenant_schemas_history",
    ] {
        let err = scope.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some(DENIED), "{sql}: {err}");
    }
    // Its data is its own to change, the history readable.
    scope
        .batch_execute("INSERT INTO notes (body) VALUES ('mine'); DELETE FROM notes")
        .await
        .unwrap();
    scope
        .batch_execute("SELECT * FROM tenant_schemas_history")
        .await
        .unwrap();
    drop(scope);

    // With tenant DDL allowed, a tenant creates tables in its own schema (still not in
    // another's), after a sync grants it.
    let ddl = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(marker_and_notes())
        .tenant_roles(TenantRoles::new().tenant_ddl(true))
        .build()
        .await
        .unwrap();
    ddl.sync_roles().await.unwrap();
    let other = schema("rddl_other");
    ddl.create_tenant(NewTenant::new(other.clone()))
        .await
        .unwrap();
    let scope = ddl.router().connection_for_schema(&s[0]).await.unwrap();
    scope
        .batch_execute("CREATE TABLE own_table (x int); INSERT INTO own_table VALUES (1)")
        .await
        .unwrap();
    let err = scope
        .batch_execute(&format!("CREATE TABLE {}.planted (x int)", other.quoted()))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some(DENIED), "{err}");
}

/// Behind a real PgBouncer in transaction pooling, with one server connection shared by
/// every client: each tenant's transaction runs under its role (`SET LOCAL ROLE`), and the
/// shared `public` schema by name as the login role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_each_transaction_runs_under_its_tenants_role() {
    use tenant_schemas::testing::{pool, TestCluster, TestPgBouncer};
    let db = database().await;
    let cluster = TestCluster::shared().unwrap();
    let bouncer = TestPgBouncer::start(cluster, 1).unwrap();
    let through = pool(bouncer.config(db.name()), 4).unwrap();
    let tenancy = Tenancy::builder(through)
        .migrations(marker_and_notes())
        .search_path_mode(SearchPathMode::Transaction)
        .tenant_roles(TenantRoles::new())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "rpgb_", 2).await;
    let router = tenancy.router();
    for round in 0..3 {
        for (own, other) in [(&s[0], &s[1]), (&s[1], &s[0])] {
            let db = router.connection_for_schema(own).await.unwrap();
            assert_eq!(marker_of(&db).await, own.as_str(), "round {round}");
            let err = db
                .query_one(&format!("SELECT * FROM {}.marker", other.quoted()), &[])
                .await
                .unwrap_err();
            assert_eq!(
                sqlstate(&err).as_deref(),
                Some(DENIED),
                "round {round}: {err}"
            );
            let mut db = db;
            let tx = db.transaction().await.unwrap();
            let err = tx
                .batch_execute(&format!("DELETE FROM {}.notes", other.quoted()))
                .await
                .unwrap_err();
            assert_eq!(
                sqlstate(&err).as_deref(),
                Some(DENIED),
                "round {round}: {err}"
            );
        }
        let public = router.public().await.unwrap();
        let row = public
            .query_one("SELECT current_user::text, session_user::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), row.get::<_, String>(1));
    }
}

/// `doctor` reports a tenant without its role (role mode) and a recorded role that is gone
/// from the cluster; `doctor --fix` gives them back, and the tenant is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_finds_and_repairs_missing_roles() {
    let db = database().await;
    let before = tenancy(&db, marker_and_notes()).await;
    let old = marked_tenants(&before, "rdoc_old", 1).await.remove(0);
    let tenancy = role_tenancy(&db, 2, SearchPathMode::Session).await;
    let new = marked_tenants(&tenancy, "rdoc_new", 1).await.remove(0);
    let role = tenancy.registry().get(&new).await.unwrap().role.unwrap();
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\""))
        .await
        .unwrap();
    let router = tenancy.router();
    assert!(router
        .connection_for_schema(&new)
        .await
        .unwrap()
        .batch_execute("SELECT 1")
        .await
        .is_err());
    let report = tenancy.doctor(false).await.unwrap();
    let missing: Vec<_> = report
        .findings
        .iter()
        .filter_map(|f| match f {
            tenant_schemas::Finding::RoleMissing { schema, role } => {
                Some((schema.clone(), role.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        missing,
        vec![(new.clone(), Some(role.clone())), (old.clone(), None)],
        "{:?}",
        report.findings
    );
    let fixed = tenancy.doctor(true).await.unwrap();
    assert_eq!(fixed.repaired.len(), 2, "{fixed:?}");
    assert!(tenancy
        .doctor(false)
        .await
        .unwrap()
        .findings
        .iter()
        .all(|f| !matches!(f, tenant_schemas::Finding::RoleMissing { .. })));
    for schema in [&old, &new] {
        let conn = router.connection_for_schema(schema).await.unwrap();
        assert_eq!(marker_of(&conn).await, schema.as_str());
    }
}

/// Role mode: a table outside the tenant's schema owned by its role (an administrator's
/// `ALTER TABLE … OWNER TO` the tenant's role; found by a red-team review) is not destroyed
/// when the tenant is deleted: the role's `DROP OWNED` dropped it silently. The role is kept
/// while it still owns something in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_keeps_what_its_role_owns_outside_its_schema() {
    let db = database().await;
    let tenancy = role_tenancy(&db, 2, SearchPathMode::Session).await;
    let s = marked_tenants(&tenancy, "rown_", 1).await.remove(0);
    let role = tenancy.registry().get(&s).await.unwrap().role.unwrap();
    let admin = db.pool().get().await.unwrap();
    admin
        .batch_execute(&format!(
            "CREATE TABLE public.rown_reports (x int);
             INSERT INTO public.rown_reports VALUES (1), (2);
             ALTER TABLE public.rown_reports OWNER TO \"{role}\""
        ))
        .await
        .unwrap();
    tenancy.delete_tenant(&s, DropSchema::Yes).await.unwrap();
    let kept: i64 = admin
        .query_one("SELECT count(*) FROM public.rown_reports", &[])
        .await
        .expect("the table its role owned outside its schema was dropped")
        .get(0);
    assert_eq!(kept, 2);
}
