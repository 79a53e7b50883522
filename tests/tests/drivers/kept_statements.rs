//! Role mode with `TenantRoles::keep_statements_across_tenants(true)`: connections keep their
//! prepared statements when they change tenant, through every door — and the roles still
//! keep tenants apart. Each test runs the same scenario with the option off (the default,
//! where a switch to another tenant drops the session's statements) and on, so that an
//! option that changed nothing, or one that changed the default, fails.

use sqlx::Row as _;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::{TestCluster, TestPgBouncer};
use tenant_schemas::{SchemaName, SearchPathMode, Tenancy, TenantRoles};

use super::doors::{checkout, sqlx_over_one_connection};

/// What PostgreSQL answers a tenant's role that reads another tenant's table.
const PERMISSION_DENIED: &str = "42501";

/// Tenants `<prefix>0..2` in role mode over `pool`, keeping statements across tenants when
/// `keep`.
async fn tenancy(
    pool: tenant_schemas::deadpool_postgres::Pool,
    mode: SearchPathMode,
    keep: bool,
    prefix: &str,
) -> (Tenancy, Vec<SchemaName>) {
    let tenancy = Tenancy::builder(pool)
        .migrations(marker_and_notes())
        .search_path_mode(mode)
        .pooler_prepared_statements(mode == SearchPathMode::Transaction)
        .tenant_roles(TenantRoles::new().keep_statements_across_tenants(keep))
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, prefix, 2).await;
    (tenancy, s)
}

/// The core in session mode over ONE connection: tenant a's statement, then tenant b's
/// checkout. a's statement is still prepared on the session only when kept; b reads its own
/// marker, and a's table is refused to b's role either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_keeps_statements_across_tenants_only_when_asked_and_roles_still_hold() {
    let db = database().await;
    for keep in [false, true] {
        let prefix = if keep { "ksc_on" } else { "ksc_off" };
        let (tenancy, s) = tenancy(
            db.new_pool(1).unwrap(),
            SearchPathMode::Session,
            keep,
            prefix,
        )
        .await;
        let (a, b) = (&s[0], &s[1]);
        for _ in 0..2 {
            checkout(&tenancy, a)
                .await
                .query_one("SELECT count(*) FROM notes", &[])
                .await
                .unwrap();
        }
        let conn = checkout(&tenancy, b).await;
        let marker: String = conn
            .query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(marker, b.as_str(), "keep {keep}: b read another marker");
        let a_statements: i64 = conn
            .query_one(
                "SELECT count(*) FROM pg_catalog.pg_prepared_statements \
                 WHERE statement LIKE '/* ' || $1::text || ' */%'",
                &[&a.as_str()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            a_statements > 0,
            keep,
            "keep {keep}: tenant {a}'s statements left on the session after tenant {b}'s \
             switch: {a_statements}"
        );
        let denied = conn
            .query_one(&format!("SELECT count(*) FROM {a}.notes"), &[])
            .await
            .unwrap_err();
        assert!(
            denied.to_string().contains(PERMISSION_DENIED)
                || denied.to_string().contains("permission denied"),
            "keep {keep}: tenant {b}'s role read tenant {a}'s notes: {denied}"
        );
    }
}

/// sqlx over ONE connection: its switch is a statement prepared once per connection when
/// statements are kept, parsed at each checkout otherwise; a's table is refused to b's role
/// either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_keeps_its_switch_statement_only_when_asked_and_roles_still_hold() {
    let db = database().await;
    for keep in [false, true] {
        let prefix = if keep { "ksx_on" } else { "ksx_off" };
        let (tenancy, s) = tenancy(
            db.new_pool(1).unwrap(),
            SearchPathMode::Session,
            keep,
            prefix,
        )
        .await;
        let router = sqlx_over_one_connection(&db, &tenancy).await;
        let (a, b) = (&s[0], &s[1]);
        drop(router.connection_for_schema(a).await.unwrap());
        let mut conn = router.connection_for_schema(b).await.unwrap();
        let row = sqlx::query(
            "SELECT (SELECT schema_name FROM marker), \
             (SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql)",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        let (marker, by_sql): (String, i64) = (row.get(0), row.get(1));
        assert_eq!(marker, b.as_str(), "keep {keep}: b read another marker");
        assert_eq!(
            by_sql > 0,
            keep,
            "keep {keep}: statements prepared by SQL (the router's switch) on the session: \
             {by_sql}"
        );
        let denied = sqlx::query(&format!("SELECT count(*) FROM {a}.notes"))
            .fetch_one(&mut *conn)
            .await
            .unwrap_err();
        assert!(
            denied.to_string().contains("permission denied"),
            "keep {keep}: tenant {b}'s role read tenant {a}'s notes: {denied}"
        );
    }
}

/// The core in transaction mode behind a real PgBouncer 1.25 that keeps named statements
/// (`pooler_prepared_statements`): named statements only when kept, unnamed otherwise; a's
/// table is refused to b's role either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooler_statements_are_named_in_role_mode_only_when_kept() {
    let db = database().await;
    let bouncer = TestPgBouncer::builder(TestCluster::shared().unwrap())
        .pool_size(1)
        .max_prepared_statements(200)
        .start()
        .unwrap();
    for keep in [false, true] {
        let prefix = if keep { "ksb_on" } else { "ksb_off" };
        let through = tenant_schemas::testing::pool(bouncer.config(db.name()), 1).unwrap();
        let (tenancy, s) = tenancy(through, SearchPathMode::Transaction, keep, prefix).await;
        let (a, b) = (&s[0], &s[1]);
        for schema in [a, b, a, b] {
            let marker: String = checkout(&tenancy, schema)
                .await
                .query_one("SELECT schema_name FROM marker", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(marker, schema.as_str(), "keep {keep}: another marker");
        }
        let named = tenancy.router().stats().named_statements;
        assert_eq!(
            named > 0,
            keep,
            "keep {keep}: named statements the pooler keeps: {named}"
        );
        let denied = checkout(&tenancy, b)
            .await
            .query_one(&format!("SELECT count(*) FROM {a}.notes"), &[])
            .await
            .unwrap_err();
        assert!(
            denied.to_string().contains("permission denied"),
            "keep {keep}: tenant {b}'s role read tenant {a}'s notes: {denied}"
        );
    }
}
