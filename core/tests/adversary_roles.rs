//! An adversary's attempts on role mode (`TenancyBuilder::tenant_roles`) through the public
//! API: SQL that leaves the tenant's role without naming it (server functions that run SQL
//! text, a function of the tenant's own in `pg_temp`), and session state a tenant leaves on
//! a pooled connection for the next one (temporary tables shadowing the next tenant's, a
//! cursor held open).

#![allow(clippy::unwrap_used)]

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{Error, SchemaName, SearchPathMode, Tenancy, TenantRoles};

/// PostgreSQL's `insufficient_privilege`.
const DENIED: &str = "42501";

async fn role_tenancy(db: &TestDatabase, mode: SearchPathMode, roles: TenantRoles) -> Tenancy {
    // One connection: every checkout reuses the last one's session.
    Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .search_path_mode(mode)
        .tenant_roles(roles)
        .build()
        .await
        .unwrap()
}

/// `own`'s scope still runs under its role: `other`'s marker is denied.
async fn still_denied(tenancy: &Tenancy, own: &SchemaName, other: &SchemaName, what: &str) {
    let db = tenancy.router().connection_for_schema(own).await.unwrap();
    let err = db
        .query_one(&format!("SELECT * FROM {}.marker", other.quoted()), &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some(DENIED), "{what}: {err}");
}

/// PostgreSQL runs SQL text given to some of its own functions (`query_to_xml` and its
/// kin, `ts_stat`, `ts_rewrite`): a role change spelt in pieces inside it is invisible to
/// any reading of the text. Such calls are refused in role mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_functions_that_run_sql_text_cannot_leave_the_role() {
    let leave = "'SELECT set_' || 'config(''ro' || 'le'', ''none'', false)'";
    let attempts = [
        format!("SELECT query_to_xml({leave}, true, false, '')"),
        format!("SELECT pg_catalog.query_to_xmlschema({leave}, true, false, '')"),
        format!("SELECT \"query_to_xml_and_xmlschema\"({leave}, true, false, '')"),
        format!("SELECT * FROM ts_stat({leave} || '::tsvector')"),
        format!("SELECT ts_rewrite('a'::tsquery, {leave} || '::tsquery, ''b''::tsquery')"),
    ];
    for mode in [SearchPathMode::Session, SearchPathMode::Transaction] {
        let db = database().await;
        let tenancy = role_tenancy(&db, mode, TenantRoles::new()).await;
        let s = marked_tenants(&tenancy, "advq_", 2).await;
        let (a, b) = (&s[0], &s[1]);
        for sql in &attempts {
            let scope = tenancy.router().connection_for_schema(a).await.unwrap();
            let stolen = format!("{sql}; SELECT * FROM {}.marker", b.quoted());
            match scope.batch_execute(&stolen).await {
                Err(Error::LeavesTenantRole { .. }) => {}
                other => panic!("{mode:?} {sql}: {other:?}"),
            }
            match scope.query(sql.as_str(), &[]).await {
                Err(Error::LeavesTenantRole { .. }) => {}
                other => panic!("{mode:?} {sql}: {other:?}"),
            }
            drop(scope);
            still_denied(&tenancy, a, b, sql).await;
        }
    }
}

/// `SET LOCAL SESSION AUTHORIZATION DEFAULT` (the qualifier twice) makes the login role the
/// current user for the rest of the transaction — of a batch's implicit one, of the
/// statement's own in transaction mode, of a `TenantTransaction`. Any user may run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_authorization_with_a_doubled_qualifier_cannot_leave_the_role() {
    for mode in [SearchPathMode::Session, SearchPathMode::Transaction] {
        let db = database().await;
        let tenancy = role_tenancy(&db, mode, TenantRoles::new()).await;
        let s = marked_tenants(&tenancy, "advsa_", 2).await;
        let (a, b) = (&s[0], &s[1]);
        for leave in [
            "SET LOCAL SESSION AUTHORIZATION DEFAULT",
            "set session /* */ session authorization default",
        ] {
            let sql = format!("{leave}; SELECT schema_name FROM {}.marker", b.quoted());
            let mut scope = tenancy.router().connection_for_schema(a).await.unwrap();
            match scope.simple_query(&sql).await {
                Err(Error::LeavesTenantRole { .. }) => {}
                other => panic!("{mode:?} {leave}: {other:?}"),
            }
            let tx = scope.transaction().await.unwrap();
            match tx.batch_execute(leave).await {
                Err(Error::LeavesTenantRole { .. }) => {}
                other => panic!("{mode:?} transaction {leave}: {other:?}"),
            }
            drop(tx);
            drop(scope);
            still_denied(&tenancy, a, b, leave).await;
        }
    }
}

/// A function a tenant creates for itself (in `pg_temp`, which needs no privilege on any
/// schema, or in its own schema when tenant DDL is allowed) runs whatever SQL it builds at
/// run time: its creation is refused in role mode, however its body is spelt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_create_a_function_that_leaves_its_role() {
    let db = database().await;
    for ddl in [false, true] {
        let tenancy = role_tenancy(
            &db,
            SearchPathMode::Session,
            TenantRoles::new().tenant_ddl(ddl),
        )
        .await;
        tenancy.sync_roles().await.unwrap();
        let s = marked_tenants(&tenancy, &format!("advf{}_", u8::from(ddl)), 2).await;
        let (a, b) = (&s[0], &s[1]);
        for (create, call) in [
            (
                "CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE plpgsql AS \
                 $$ BEGIN EXECUTE 'RE' || 'SET RO' || 'LE'; END $$",
                "SELECT pg_temp.f()",
            ),
            (
                "CREATE OR REPLACE FUNCTION f() RETURNS void LANGUAGE plpgsql AS \
                 $$ BEGIN EXECUTE 'RE' || 'SET RO' || 'LE'; END $$",
                "SELECT f()",
            ),
            (
                "CREATE PROCEDURE pg_temp.p() LANGUAGE plpgsql AS \
                 $$ BEGIN EXECUTE 'RE' || 'SET RO' || 'LE'; END $$",
                "SELECT 1",
            ),
        ] {
            let scope = tenancy.router().connection_for_schema(a).await.unwrap();
            match scope.batch_execute(create).await {
                Err(Error::LeavesTenantRole { .. }) => {}
                other => panic!("ddl {ddl} {create}: {other:?}"),
            }
            let _ = scope.batch_execute(call).await;
            let err = scope
                .query_one(&format!("SELECT * FROM {}.marker", b.quoted()), &[])
                .await
                .unwrap_err();
            assert_eq!(sqlstate(&err).as_deref(), Some(DENIED), "{create}: {err}");
        }
    }
}

/// Temporary objects live as long as the session and PostgreSQL searches them before the
/// search path: a table a tenant leaves there (granted to everyone) would take the next
/// tenant's reads and writes on the pooled connection. However it is made — in a
/// transaction, a quoted `"pg_temp"`, `CREATE OR REPLACE TEMP VIEW` — it must not reach the
/// next tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_objects_a_tenant_makes_do_not_reach_the_next_tenant() {
    let plants = [
        "CREATE TEMP TABLE marker (schema_name text); \
         INSERT INTO marker VALUES ('planted'); GRANT ALL ON marker TO PUBLIC",
        "CREATE TABLE \"pg_temp\".marker (schema_name text); \
         INSERT INTO marker VALUES ('planted'); GRANT ALL ON marker TO PUBLIC",
        "CREATE OR REPLACE TEMP VIEW marker AS SELECT 'planted'::text AS schema_name; \
         GRANT ALL ON marker TO PUBLIC",
    ];
    for mode in [SearchPathMode::Session, SearchPathMode::Transaction] {
        for (n, plant) in plants.iter().enumerate() {
            for in_transaction in [false, true] {
                let db = database().await;
                let tenancy = role_tenancy(&db, mode, TenantRoles::new()).await;
                let s = marked_tenants(&tenancy, "advt_", 2).await;
                let (a, b) = (&s[0], &s[1]);
                let router = tenancy.router();
                let mut scope = router.connection_for_schema(a).await.unwrap();
                // Refused, or run: either way the next tenant must not see it.
                let planted = if in_transaction {
                    match scope.transaction().await {
                        Ok(tx) => match tx.batch_execute(plant).await {
                            Ok(()) => tx.commit().await.is_ok(),
                            Err(_) => false,
                        },
                        Err(e) => panic!("{e}"),
                    }
                } else {
                    scope.batch_execute(plant).await.is_ok()
                };
                drop(scope);
                let what =
                    format!("{mode:?} plant {n} in transaction {in_transaction} (ran: {planted})");
                let scope = router.connection_for_schema(b).await.unwrap();
                assert_eq!(marker_of(&scope).await, b.as_str(), "{what}");
                drop(scope);
                let scope = router.connection_for_schema(b).await.unwrap();
                let _ = scope
                    .batch_execute("INSERT INTO marker VALUES ('b secret')")
                    .await;
                drop(scope);
                let scope = router.connection_for_schema(a).await.unwrap();
                let seen: Vec<String> =
                    match scope.query("SELECT schema_name FROM marker", &[]).await {
                        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
                        Err(e) => panic!("{what}: {e}"),
                    };
                assert_eq!(seen, vec![a.as_str().to_owned()], "{what}");
            }
        }
    }
}

/// A cursor declared `WITH HOLD` outlives its transaction: left on a pooled connection by
/// one tenant, another could fetch the rows it read under the first tenant's role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_held_open_does_not_reach_the_next_tenant() {
    for mode in [SearchPathMode::Session, SearchPathMode::Transaction] {
        for in_transaction in [false, true] {
            let db = database().await;
            let tenancy = role_tenancy(&db, mode, TenantRoles::new()).await;
            let s = marked_tenants(&tenancy, "advc_", 2).await;
            let (a, b) = (&s[0], &s[1]);
            let router = tenancy.router();
            let declare = "DECLARE held CURSOR WITH HOLD FOR SELECT schema_name FROM marker";
            let mut scope = router.connection_for_schema(b).await.unwrap();
            if in_transaction {
                let tx = scope.transaction().await.unwrap();
                if tx.batch_execute(declare).await.is_ok() {
                    let _ = tx.commit().await;
                }
            } else {
                let _ = scope.batch_execute(declare).await;
            }
            drop(scope);
            let mut scope = router.connection_for_schema(a).await.unwrap();
            let what = format!("{mode:?} in transaction {in_transaction}");
            if let Ok(rows) = scope.simple_query("FETCH ALL FROM held").await {
                let leaked = rows.iter().any(|m| {
                    matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some(b.as_str()))
                });
                assert!(!leaked, "{what}: {a} fetched {b}'s rows");
            }
            let tx = scope.transaction().await.unwrap();
            if let Ok(rows) = tx.simple_query("FETCH ALL FROM held").await {
                let leaked = rows.iter().any(|m| {
                    matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some(b.as_str()))
                });
                assert!(!leaked, "{what}: {a} fetched {b}'s rows in a transaction");
            }
        }
    }
}

/// A switch to a tenant whose role cannot be set (dropped by another process deleting the
/// tenant, or by hand; the login role no longer a member) fails. The statement written
/// behind the switch in the same flush (the schema was seen to exist a moment ago) must not
/// run under what the session was before — the login role, after the public site used the
/// connection: a write to another tenant's schema would be committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_behind_a_failed_role_switch_does_not_run_as_the_login_role() {
    for mode in [SearchPathMode::Session, SearchPathMode::Transaction] {
        behind_a_failed_role_switch(mode).await;
    }
}

async fn behind_a_failed_role_switch(mode: SearchPathMode) {
    let db = database().await;
    let tenancy = role_tenancy(&db, mode, TenantRoles::new()).await;
    let s = marked_tenants(&tenancy, "advp_", 2).await;
    let (a, b) = (&s[0], &s[1]);
    let role_a = tenancy.registry().get(a).await.unwrap().role.unwrap();
    let router = tenancy.router();
    let stolen = format!(
        "INSERT INTO {}.notes (body) VALUES ('written by a')",
        b.quoted()
    );
    // The schema seen a moment ago, then the connection used as the login role.
    let scope = router.connection_for_schema(a).await.unwrap();
    assert_eq!(marker_of(&scope).await, a.as_str());
    drop(scope);
    let public = router.public().await.unwrap();
    public.batch_execute("SELECT 1").await.unwrap();
    drop(public);
    // Another process deletes the tenant (or someone drops its role).
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "DROP OWNED BY \"{role_a}\"; DROP ROLE \"{role_a}\""
        ))
        .await
        .unwrap();
    let scope = router.connection_for_schema(a).await.unwrap();
    let ran = scope.execute(stolen.as_str(), &[]).await;
    assert!(ran.is_err(), "{mode:?}: {ran:?}");
    drop(scope);
    let written: i64 = db
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.notes WHERE body = 'written by a'",
                b.quoted()
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        written, 0,
        "{a}'s statement wrote into {b} as the login role"
    );
}

/// Documented limits (README, *Role mode*): a router that does not have the role-mode
/// tenancy's states (`SchemaRouter::new` over the pool, a sqlx router without
/// `tenant_states`) knows no roles, and its tenants run as the login role; a connection
/// taken from the pool directly runs under whatever role and path the last checkout left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_without_the_tenancys_states_and_raw_pool_connections_know_no_roles() {
    let db = database().await;
    let tenancy = role_tenancy(&db, SearchPathMode::Session, TenantRoles::new()).await;
    let s = marked_tenants(&tenancy, "advl_", 2).await;
    let (a, b) = (&s[0], &s[1]);
    let who = "SELECT current_user::text = session_user::text";

    // Without the states: the login role, which reads every tenant.
    let bare = tenant_schemas::SchemaRouter::new(db.new_pool(1).unwrap());
    let scope = bare.connection_for_schema(a).await.unwrap();
    assert!(scope.query_one(who, &[]).await.unwrap().get::<_, bool>(0));
    let other: String = scope
        .query_one(
            &format!("SELECT schema_name FROM {}.marker", b.quoted()),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(other, b.as_str());
    drop(scope);

    // The raw pool after a tenant's checkout: the tenant's role is still set.
    let router = tenancy.router();
    let scope = router.connection_for_schema(a).await.unwrap();
    assert_eq!(marker_of(&scope).await, a.as_str());
    drop(scope);
    let raw = router.pool().get().await.unwrap();
    let as_login: bool = raw.query_one(who, &[]).await.unwrap().get(0);
    assert!(!as_login, "the last tenant's role");
    // The library's public scope resets it.
    drop(raw);
    let public = router.public().await.unwrap();
    assert!(public.query_one(who, &[]).await.unwrap().get::<_, bool>(0));
}

/// `TRIGGER` on its tables would let a tenant (without tenant DDL) attach a trigger with a
/// function that exists to its own tables — the migration history among them — which the
/// library's own writes there then run as the login role (or fail on: the history's insert,
/// so the tenant's migrations never complete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_attach_triggers_to_its_tables() {
    let db = database().await;
    let tenancy = role_tenancy(&db, SearchPathMode::Session, TenantRoles::new()).await;
    let s = marked_tenants(&tenancy, "advtr_", 1).await;
    let scope = tenancy.router().connection_for_schema(&s[0]).await.unwrap();
    for table in ["tenant_schemas_history", "notes"] {
        let sql = format!(
            "CREATE TRIGGER planted BEFORE INSERT ON {table} FOR EACH ROW \
             EXECUTE FUNCTION suppress_redundant_updates_trigger()"
        );
        let err = scope.batch_execute(&sql).await.unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some(DENIED), "{table}: {err}");
    }
    // Its data is still its own.
    scope
        .batch_execute("INSERT INTO notes (body) VALUES ('mine'); DELETE FROM notes")
        .await
        .unwrap();
    drop(scope);
    // A tenant's migrations still complete.
    let more = marker_and_notes().with("more", "CREATE TABLE more (x int)");
    let later = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(more)
        .tenant_roles(TenantRoles::new())
        .build()
        .await
        .unwrap();
    later.migrate(&Default::default(), None).await.unwrap();
    let scope = later.router().connection_for_schema(&s[0]).await.unwrap();
    scope
        .batch_execute("INSERT INTO more VALUES (1)")
        .await
        .unwrap();
    let err = scope
        .batch_execute(
            "CREATE TRIGGER planted BEFORE INSERT ON more FOR EACH ROW \
             EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some(DENIED), "{err}");
}

/// Every tenant role is made a member of the group role, inheriting what it holds: a group
/// that owns the tenants' objects (an application's owner role, which the login role is a
/// member of), or that can log in, is a superuser or the login role, would hand every
/// tenant those privileges — other tenants' schemas. Such a group is refused when the
/// tenancy is built (and by `sync_roles`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_role_that_holds_privileges_is_refused() {
    let db = database().await;
    let plain = tenancy(&db, marker_and_notes()).await;
    let s = marked_tenants(&plain, "advg_", 2).await;
    let (a, b) = (&s[0], &s[1]);
    let admin = db.pool().get().await.unwrap();
    let login: String = admin
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    // The application's owner role owns b's schema and tables.
    admin
        .batch_execute(&format!(
            "CREATE ROLE advg_owner NOLOGIN; GRANT advg_owner TO \"{login}\"; \
             ALTER SCHEMA {b} OWNER TO advg_owner; \
             ALTER TABLE {b}.marker OWNER TO advg_owner",
            b = b.quoted()
        ))
        .await
        .unwrap();
    for group in ["advg_owner", login.as_str()] {
        let built = Tenancy::builder(db.new_pool(2).unwrap())
            .migrations(marker_and_notes())
            .tenant_roles(TenantRoles::new().group(group).unwrap())
            .build()
            .await;
        let tenancy = match built {
            Err(Error::InvalidRoleSetting { .. }) => continue,
            Err(other) => panic!("{group}: {other}"),
            Ok(tenancy) => tenancy,
        };
        // Built: then the tenants must still be kept apart.
        tenancy.sync_roles().await.unwrap();
        still_denied(&tenancy, a, b, group).await;
    }
}

/// `sync_roles` over a pool of one connection (the smallest a tenancy accepts) gives the
/// tenants from before role mode their roles instead of waiting for a second connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_synced_over_a_pool_of_one_connection() {
    let db = database().await;
    let plain = tenancy(&db, marker_and_notes()).await;
    let s = marked_tenants(&plain, "advs1_", 2).await;
    let tenancy = role_tenancy(&db, SearchPathMode::Session, TenantRoles::new()).await;
    let synced = tenancy.sync_roles().await.unwrap();
    assert_eq!(synced.len(), 2);
    still_denied(&tenancy, &s[0], &s[1], "synced").await;
}

/// A shared table (`TenantRoles::share`) is written by every tenant and the public site: a
/// trigger one tenant attached to it would run in all their writes (the public site's as
/// the login role) or fail them. `TRIGGER` cannot be shared, and `ALL` does not include it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_attach_triggers_to_a_shared_table() {
    assert!(matches!(
        TenantRoles::new().share("plans", &["TRIGGER"]),
        Err(Error::InvalidRoleSetting { .. })
    ));
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(marker_and_notes())
        .shared_migrations(
            tenant_schemas::TenantMigrations::new()
                .with("plans", "CREATE TABLE public.plans (name text)"),
        )
        .tenant_roles(TenantRoles::new().share("plans", &["all"]).unwrap())
        .build()
        .await
        .unwrap();
    tenancy.migrate(&Default::default(), None).await.unwrap();
    let s = marked_tenants(&tenancy, "advsh_", 1).await;
    let scope = tenancy.router().connection_for_schema(&s[0]).await.unwrap();
    scope
        .batch_execute("INSERT INTO plans VALUES ('free'); UPDATE plans SET name = 'pro'")
        .await
        .unwrap();
    let err = scope
        .batch_execute(
            "CREATE TRIGGER planted BEFORE INSERT ON public.plans FOR EACH ROW \
             EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some(DENIED), "{err}");
    drop(scope);
    // The public site still writes it.
    let public = tenancy.router().public().await.unwrap();
    public
        .batch_execute("INSERT INTO public.plans VALUES ('team')")
        .await
        .unwrap();
}

/// A setting a tenant's SQL gives the session (`SET app.token = …`) other than those a switch
/// sets does not reach the next tenant on the pooled connection (in role mode, the reset
/// travels with the role's switch); nor does `SET LOCAL` in a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_a_tenant_sets_do_not_reach_the_next_checkout() {
    let db = database().await;
    let tenancy = role_tenancy(&db, SearchPathMode::Session, TenantRoles::new()).await;
    let s = marked_tenants(&tenancy, "advgu_", 2).await;
    let router = tenancy.router();
    let read = "SELECT coalesce(current_setting('app.token', true), '')";
    let mut scope = router.connection_for_schema(&s[1]).await.unwrap();
    let tx = scope.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL app.token = 'local'")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drop(scope);
    let scope = router.connection_for_schema(&s[0]).await.unwrap();
    let seen: String = scope.query_one(read, &[]).await.unwrap().get(0);
    assert_eq!(seen, "");
    drop(scope);
    let scope = router.connection_for_schema(&s[1]).await.unwrap();
    scope
        .batch_execute("SET app.token = 'b-secret'")
        .await
        .unwrap();
    drop(scope);
    let scope = router.connection_for_schema(&s[0]).await.unwrap();
    let seen: String = scope.query_one(read, &[]).await.unwrap().get(0);
    assert_eq!(seen, "", "b's setting reached a");
}

/// The same after another tenant used the connection: a statement behind a switch that
/// failed (its role dropped) must not run under the previous tenant's role, where it would
/// write into that tenant's schema named in it. It runs under the tenants' group role, which
/// reaches no tenant's schema, and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_behind_a_failed_role_switch_does_not_run_as_the_previous_tenant() {
    let db = database().await;
    let tenancy = role_tenancy(&db, SearchPathMode::Session, TenantRoles::new()).await;
    let s = marked_tenants(&tenancy, "advq_", 2).await;
    let (a, b) = (&s[0], &s[1]);
    let role_a = tenancy.registry().get(a).await.unwrap().role.unwrap();
    let router = tenancy.router();
    // a seen a moment ago (its next switch is written with a statement behind it), then
    // the only connection used by b.
    let scope = router.connection_for_schema(a).await.unwrap();
    assert_eq!(marker_of(&scope).await, a.as_str());
    drop(scope);
    let scope = router.connection_for_schema(b).await.unwrap();
    assert_eq!(marker_of(&scope).await, b.as_str());
    drop(scope);
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "DROP OWNED BY \"{role_a}\"; DROP ROLE \"{role_a}\""
        ))
        .await
        .unwrap();
    let scope = router.connection_for_schema(a).await.unwrap();
    let wrote = scope
        .execute(
            &format!(
                "INSERT INTO {}.notes (body) VALUES ('written by a')",
                b.quoted()
            ),
            &[],
        )
        .await;
    assert!(wrote.is_err(), "{wrote:?}");
    drop(scope);
    let written: i64 = db
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.notes WHERE body = 'written by a'",
                b.quoted()
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        written, 0,
        "{a}'s statement wrote into {b} under {b}'s role"
    );
}
