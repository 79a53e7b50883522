//! The switch sent in the statement's own message (one implicit transaction, one `Sync`):
//! what a careless user could see differ from a switch of its own, in both search-path modes,
//! on a pool of one connection so that every statement follows another tenant's.

#![allow(clippy::unwrap_used)]

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{SchemaName, SearchPathMode, Tenancy};

/// A tenancy in `mode` over a pool of one connection to a fresh database, with
/// [`marker_and_notes`], and marked tenants named `names`.
async fn one_connection(
    mode: SearchPathMode,
    names: &[&str],
) -> (TestDatabase, Tenancy, Vec<SchemaName>) {
    one_connection_implicit(mode, false, names).await
}

/// [`one_connection`], in transaction mode with `implicit_transactions(implicit)`.
async fn one_connection_implicit(
    mode: SearchPathMode,
    implicit: bool,
    names: &[&str],
) -> (TestDatabase, Tenancy, Vec<SchemaName>) {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .search_path_mode(mode)
        .implicit_transactions(implicit)
        .build()
        .await
        .unwrap();
    let mut schemas = Vec::new();
    for name in names {
        schemas.push(marked_tenant(&tenancy, name).await);
    }
    (db, tenancy, schemas)
}

/// What `SHOW search_path` reads after `SET search_path TO <path>` on a plain connection.
async fn shown_after_set(db: &TestDatabase, path: &str) -> String {
    let raw = db.pool().get().await.unwrap();
    raw.batch_execute(&format!("SET search_path TO {path}"))
        .await
        .unwrap();
    let shown = raw
        .simple_query("SHOW search_path")
        .await
        .unwrap()
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap();
    raw.batch_execute("RESET search_path").await.unwrap();
    shown
}

/// Tenants take turns on the one connection, each statement already prepared (or its
/// parameter types learned), so the switch travels with it: each sees its own schema, and
/// `current_setting('search_path')` reads what `SET search_path` would show — also for a
/// schema named after an SQL keyword, reserved (quoted) or not (as it is), and in transaction
/// mode's implicit transactions. In transaction mode nothing the switch set outlives the
/// statement: the next user of the server connection sees the database's settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_in_the_statements_message_shows_the_path_as_set_and_leaves_nothing() {
    for (mode, implicit) in [
        (SearchPathMode::Session, false),
        (SearchPathMode::Transaction, false),
        (SearchPathMode::Transaction, true),
    ] {
        let (db, tenancy, schemas) = one_connection_implicit(
            mode,
            implicit,
            &[
                "acme_isw",
                "user",
                "order",
                "abort",
                "_isw1",
                "current_user",
            ],
        )
        .await;
        let router = tenancy.router();
        for round in 0..4 {
            for s in &schemas {
                let conn = router.connection_for_schema(s).await.unwrap();
                let row = conn
                    .query_one(
                        "SELECT (SELECT schema_name FROM marker), current_schema(), \
                         current_setting('search_path')",
                        &[],
                    )
                    .await
                    .unwrap();
                assert_eq!(
                    row.get::<_, String>(0),
                    s.as_str(),
                    "{mode:?} round {round}"
                );
                assert_eq!(
                    row.get::<_, String>(1),
                    s.as_str(),
                    "{mode:?} round {round}"
                );
                let expected = shown_after_set(&db, conn.search_path()).await;
                assert_eq!(
                    row.get::<_, String>(2),
                    expected,
                    "{mode:?} round {round}: the path as shown"
                );
                // `execute` and `query_opt` take the same way in.
                assert_eq!(
                    conn.execute("UPDATE marker SET schema_name = schema_name", &[])
                        .await
                        .unwrap(),
                    1
                );
                let opt = conn
                    .query_opt("SELECT schema_name FROM marker WHERE $1", &[&true])
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(opt.get::<_, String>(0), s.as_str(), "{mode:?}");
            }
        }
        if mode == SearchPathMode::Transaction {
            let raw = tenancy.router().pool().get().await.unwrap();
            let row = raw
                .query_one(
                    "SELECT current_setting('search_path'), current_user = session_user, \
                     current_setting('statement_timeout')",
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), "\"$user\", public");
            assert!(row.get::<_, bool>(1));
            assert_eq!(row.get::<_, String>(2), "0");
        }
    }
}

/// A statement that fails behind the switch takes the switch with it: the error is the
/// statement's (not a failed switch), what it wrote is rolled back, and the next statements
/// on the connection, another tenant's and then the same tenant's, run on their own paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_failing_behind_the_switch_takes_the_switch_with_it() {
    for mode in [SearchPathMode::Session, SearchPathMode::Transaction] {
        let (_db, tenancy, schemas) = one_connection(mode, &["fail_a", "fail_b"]).await;
        let router = tenancy.router();
        let insert = "INSERT INTO notes (body) VALUES ((1 / $1::int)::text)";
        // Prepared (session) or typed (transaction) for both tenants.
        for s in &schemas {
            let conn = router.connection_for_schema(s).await.unwrap();
            assert_eq!(conn.execute(insert, &[&1i32]).await.unwrap(), 1);
        }
        for round in 0..3 {
            let (a, b) = (&schemas[0], &schemas[1]);
            let err = router
                .connection_for_schema(a)
                .await
                .unwrap()
                .execute(insert, &[&0i32])
                .await
                .unwrap_err();
            assert_eq!(
                sqlstate(&err).as_deref(),
                Some("22012"),
                "{mode:?} round {round}: {err}"
            );
            assert_eq!(seen_by(router, b).await, b.as_str(), "{mode:?}");
            assert_eq!(seen_by(router, a).await, a.as_str(), "{mode:?}");
            let conn = router.connection_for_schema(a).await.unwrap();
            let notes: i64 = conn
                .query_one("SELECT count(*) FROM notes", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(notes, 1, "{mode:?}: the failed insert was rolled back");
        }
    }
}
