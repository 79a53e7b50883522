//! tenant-schemas-sqlx on the core's checkout: tenant states read from the registry at
//! every checkout, whatever `Tenant` value is in scope, and a connection held across a
//! deletion or rename of its schema cut off so that it reaches nothing afterwards.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{scope, DropSchema, SchemaName, Tenancy, Tenant, TenantStatus};
use tenant_schemas_sqlx::{connect_options, Error, SqlxConnection, SqlxRouter};

const NOT_SERVED: [TenantStatus; 3] = [
    TenantStatus::Maintenance,
    TenantStatus::Suspended,
    TenantStatus::Archived,
];

/// A database with tenants `<prefix>0..n` and `public.marker` planted (a fall-through reads
/// `PUBLIC`), a `Tenancy` with a short grace for held connections, and a sqlx router over
/// its own pool with the `Tenancy`'s states.
async fn setup(prefix: &str, n: usize) -> (TestDatabase, Tenancy, Vec<SchemaName>, SqlxRouter) {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(4).unwrap())
        .migrations(marker_and_notes())
        .held_connection_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let schemas = marked_tenants(&tenancy, prefix, n).await;
    plant_public_marker(db.pool()).await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(connect_options(db.config()))
        .await
        .unwrap();
    let router = SqlxRouter::builder(pool)
        .tenant_states(tenancy.tenant_states())
        .build();
    (db, tenancy, schemas, router)
}

/// A sqlx router with the `Tenancy`'s states over a pool of one connection, so that every
/// checkout reuses it.
async fn one_connection(db: &TestDatabase, tenancy: &Tenancy) -> SqlxRouter {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(connect_options(db.config()))
        .await
        .unwrap();
    SqlxRouter::builder(pool)
        .tenant_states(tenancy.tenant_states())
        .build()
}

async fn marker(conn: &mut SqlxConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT schema_name FROM marker")
        .fetch_one(&mut **conn)
        .await
}

/// Not served: no connection and no transaction, through the scope (`run_in_schema`), a
/// `Tenant::new` value, or the schema's name; served again once active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_not_served_gets_no_sqlx_connection() {
    let (_db, tenancy, s, router) = setup("sx_ns_", 1).await;
    let s = &s[0];
    for status in NOT_SERVED {
        tenancy.set_status(s, status).await.unwrap();
        let in_scope = scope::run_in_schema(s.clone(), async {
            (router.connection().await.err(), router.begin().await.err())
        })
        .await;
        let by_value = router
            .connection_for_tenant(&Tenant::new(s.clone()))
            .await
            .err();
        let by_name = router.begin_for(s).await.err();
        for (door, err) in [
            ("connection()", in_scope.0),
            ("begin()", in_scope.1),
            ("connection_for_tenant", by_value),
            ("begin_for", by_name),
        ] {
            let err = err.unwrap_or_else(|| panic!("{status}: {door} served"));
            assert!(
                matches!(err, Error::TenantNotServed { status: got, .. } if got == status),
                "{status} through {door}: {err}"
            );
            let expected = match status {
                TenantStatus::Maintenance => 503,
                TenantStatus::Archived => 404,
                _ => 403,
            };
            assert_eq!(err.status(), expected, "{status}");
        }
    }
    tenancy.set_status(s, TenantStatus::Active).await.unwrap();
    let mut conn = router.connection_for_schema(s).await.unwrap();
    assert_eq!(marker(&mut conn).await.unwrap(), "sx_ns_0");
}

/// A read-only tenant's sqlx connection and transaction cannot write (the server refuses,
/// `conn.error(e)` is `TenantReadOnly`, 403), the next tenant on the same pooled connection
/// writes, and nothing the read-only tenant tried landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_tenant_cannot_write_through_sqlx() {
    let (_db, tenancy, s, router) = setup("sx_ro_", 2).await;
    tenancy
        .set_status(&s[0], TenantStatus::ReadOnly)
        .await
        .unwrap();
    let insert = "INSERT INTO notes (body) VALUES ('sqlx')";
    for _ in 0..3 {
        let mut conn = scope::run_in_schema(s[0].clone(), router.connection())
            .await
            .unwrap();
        assert_eq!(conn.status(), TenantStatus::ReadOnly);
        assert_eq!(marker(&mut conn).await.unwrap(), "sx_ro_0");
        let err = sqlx::query(insert).execute(&mut *conn).await.unwrap_err();
        let err = conn.error(err);
        assert!(matches!(err, Error::TenantReadOnly { .. }), "{err}");
        assert_eq!(err.status(), 403);
        drop(conn);
        let mut tx = router
            .begin_for_tenant(&Tenant::new(s[0].clone()))
            .await
            .unwrap();
        let err = sqlx::query(insert).execute(&mut *tx).await.unwrap_err();
        assert!(
            matches!(tx.error(err), Error::TenantReadOnly { .. }),
            "transaction"
        );
        drop(tx);
        // Read-only did not stick to the pooled connection.
        let mut other = router.connection_for_schema(&s[1]).await.unwrap();
        sqlx::query(insert).execute(&mut *other).await.unwrap();
    }
    let count = |schema: SchemaName| {
        let router = router.clone();
        async move {
            let mut conn = router.connection_for_schema(&schema).await.unwrap();
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM notes WHERE body = 'sqlx'")
                .fetch_one(&mut *conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(s[0].clone()).await, 0);
    assert_eq!(count(s[1].clone()).await, 3);
}

/// What a connection cut off by a deletion or rename can still do: nothing. Its read, its
/// write and an unqualified `CREATE TABLE` fail, and `public` holds nothing new.
async fn reaches_nothing(db: &TestDatabase, conn: &mut SqlxConnection) {
    assert!(marker(conn).await.is_err(), "a read ran");
    assert!(
        sqlx::query("INSERT INTO marker VALUES ('stray')")
            .execute(&mut **conn)
            .await
            .is_err(),
        "a write ran"
    );
    assert!(
        sqlx::query("CREATE TABLE stray (x int)")
            .execute(&mut **conn)
            .await
            .is_err(),
        "DDL ran"
    );
    assert!(schemas_holding(db, "stray").await.is_empty());
    let public: Vec<String> = db
        .pool()
        .get()
        .await
        .unwrap()
        .query("SELECT schema_name FROM public.marker", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(public, ["PUBLIC"]);
}

/// A sqlx connection held across `delete_tenant` is cut off after the grace period: the
/// deletion does not wait for it forever, and it cannot reach `public` afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_held_across_a_deletion_reaches_nothing() {
    let (db, tenancy, s, router) = setup("sx_del_", 1).await;
    let mut held = router.connection_for_schema(&s[0]).await.unwrap();
    assert_eq!(marker(&mut held).await.unwrap(), "sx_del_0");
    tenancy.delete_tenant(&s[0], DropSchema::Yes).await.unwrap();
    assert!(!schema_exists(&db, "sx_del_0").await);
    reaches_nothing(&db, &mut held).await;
    drop(held);
    // A new checkout fails closed.
    let err = router.connection_for_schema(&s[0]).await.unwrap_err();
    assert!(err.is_schema_missing(), "{err}");
}

/// The same for a transaction held across the deletion, and for a deletion that keeps the
/// schema: the held connection cannot go on using the deleted tenant's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_held_across_a_deletion_commits_nothing() {
    let (db, tenancy, s, router) = setup("sx_delt_", 1).await;
    let mut tx = router.begin_for(&s[0]).await.unwrap();
    sqlx::query("INSERT INTO notes (body) VALUES ('held')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tenancy.delete_tenant(&s[0], DropSchema::No).await.unwrap();
    assert!(schema_exists(&db, "sx_delt_0").await);
    assert!(sqlx::query("INSERT INTO notes (body) VALUES ('after')")
        .execute(&mut *tx)
        .await
        .is_err());
    assert!(tx.commit().await.is_err());
    let conn = db.pool().get().await.unwrap();
    let landed: i64 = conn
        .query_one("SELECT count(*) FROM sx_delt_0.notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(landed, 0);
}

/// A sqlx connection held across `rename_schema` reaches nothing afterwards (its path names
/// a schema that no longer exists: unqualified names would fall through to `public`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_held_across_a_rename_reaches_nothing() {
    let (db, tenancy, s, router) = setup("sx_ren_", 1).await;
    let mut held = router.connection_for_schema(&s[0]).await.unwrap();
    assert_eq!(marker(&mut held).await.unwrap(), "sx_ren_0");
    let new = schema("sx_ren_new");
    tenancy.rename_schema(&s[0], &new).await.unwrap();
    reaches_nothing(&db, &mut held).await;
    drop(held);
    let mut conn = router.connection_for_schema(&new).await.unwrap();
    assert_eq!(marker(&mut conn).await.unwrap(), "sx_ren_0");
    let err = router.connection_for_schema(&s[0]).await.unwrap_err();
    assert!(err.is_schema_missing(), "{err}");
}

/// A connection returned before the deletion is not cut off, and the deletion waits for
/// none: it terminates nothing (the pool's connection lives on for other tenants).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_given_back_is_not_terminated() {
    let (db, tenancy, s, router) = setup("sx_back_", 2).await;
    let mut conn = router.connection_for_schema(&s[0]).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    tenancy.delete_tenant(&s[0], DropSchema::Yes).await.unwrap();
    let alive: i64 = db
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(alive, 1, "the pooled connection was terminated");
    let mut conn = router.connection_for_schema(&s[1]).await.unwrap();
    assert_eq!(marker(&mut conn).await.unwrap(), "sx_back_1");
}

/// The public *tenant* in scope (the main site's requests) is checked like any other, in
/// both drivers; the shared `public` schema asked for by name stays served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_tenant_in_scope_is_checked_like_any_other() {
    let (_db, tenancy, _s, router) = setup("sx_pub_", 1).await;
    tenancy
        .create_tenant(tenant_schemas::NewTenant::new(SchemaName::public()))
        .await
        .unwrap();
    tenancy
        .set_status(&SchemaName::public(), TenantStatus::Maintenance)
        .await
        .unwrap();
    let core = scope::run(Tenant::public(), async {
        tenancy.connection().await.map(|_| ())
    })
    .await;
    assert!(
        matches!(core, Err(tenant_schemas::Error::TenantNotServed { .. })),
        "{core:?}"
    );
    let sqlx = scope::run(Tenant::public(), async {
        (
            router.connection().await.map(|_| ()),
            router.begin().await.map(|_| ()),
        )
    })
    .await;
    assert!(
        matches!(sqlx.0, Err(Error::TenantNotServed { .. })),
        "{:?}",
        sqlx.0
    );
    assert!(
        matches!(sqlx.1, Err(Error::TenantNotServed { .. })),
        "{:?}",
        sqlx.1
    );
    // By name, the shared schema is served read and write through both drivers.
    let mut public = router.public().await.unwrap();
    assert_eq!(marker(&mut public).await.unwrap(), "PUBLIC");
    drop(public);
    router
        .begin_for(&SchemaName::public())
        .await
        .unwrap()
        .rollback()
        .await
        .unwrap();
    tenancy.router().public().await.unwrap();
}

/// The tenancy's `TenantLimits` count sqlx checkouts with the core's: a tenant at its limit
/// gets `TenantBusy` (503) from either driver, another tenant is served,
/// and the limit frees when the sqlx connection is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_limits_count_sqlx_checkouts_with_the_cores() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(4).unwrap())
        .migrations(marker_and_notes())
        .tenant_limits(
            tenant_schemas::TenantLimits::new()
                .max_connections(2)
                .max_waiting(0),
        )
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "sx_lim_", 2).await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(connect_options(db.config()))
        .await
        .unwrap();
    let router = SqlxRouter::builder(pool)
        .tenant_states(tenancy.tenant_states())
        .build();
    let mut held = router.connection_for_schema(&s[0]).await.unwrap();
    let tx = router.begin_for(&s[0]).await.unwrap();
    let busy = router.connection_for_schema(&s[0]).await.unwrap_err();
    assert!(
        matches!(
            &busy,
            Error::Checkout(tenant_schemas::Error::TenantBusy { limit: 2, .. })
        ),
        "{busy:?}"
    );
    assert_eq!(busy.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    let core = tenancy
        .router()
        .connection_for_schema(&s[0])
        .await
        .unwrap_err();
    assert!(
        matches!(core, tenant_schemas::Error::TenantBusy { .. }),
        "{core:?}"
    );
    let mut other = router.connection_for_schema(&s[1]).await.unwrap();
    assert_eq!(marker(&mut other).await.unwrap(), "sx_lim_1");
    assert_eq!(marker(&mut held).await.unwrap(), "sx_lim_0");
    drop(tx);
    let mut again = router.connection_for_schema(&s[0]).await.unwrap();
    assert_eq!(marker(&mut again).await.unwrap(), "sx_lim_0");
}

/// What `statement_timeout` a sqlx query sees, and whether `pg_sleep(secs)` finished
/// (`false`: the server cancelled it, `57014`).
async fn sleeps(conn: &mut sqlx::PgConnection, secs: f64) -> (String, bool) {
    let shown: String = sqlx::query_scalar("SELECT current_setting('statement_timeout')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let slept = match sqlx::query("SELECT pg_sleep($1)")
        .bind(secs)
        .execute(&mut *conn)
        .await
    {
        Ok(_) => true,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("57014") => false,
        Err(e) => panic!("{e:?}"),
    };
    (shown, slept)
}

/// A tenant's own `statement_timeout` reaches its sqlx connections and transactions (both
/// modes) and no other tenant's or `public`'s on the same pooled connection, which get the
/// database's setting back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_statement_timeout_reaches_sqlx_and_stays_its_own() {
    let db = database().await;
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET statement_timeout = '7s'",
            db.name()
        ))
        .await
        .unwrap();
    let tenancy = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "sx_to_", 2).await;
    let (slow, other) = (&s[0], &s[1]);
    tenancy
        .set_statement_timeout(slow, Some(Duration::from_millis(150)))
        .await
        .unwrap();
    for mode in [
        tenant_schemas::SearchPathMode::Session,
        tenant_schemas::SearchPathMode::Transaction,
    ] {
        // One connection: every checkout reuses it.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(connect_options(db.config()))
            .await
            .unwrap();
        let router = SqlxRouter::builder(pool)
            .tenant_states(tenancy.tenant_states())
            .mode(mode)
            .build();
        if mode == tenant_schemas::SearchPathMode::Session {
            let mut conn = router.connection_for_schema(slow).await.unwrap();
            assert_eq!(sleeps(&mut conn, 2.0).await, ("150ms".into(), false));
            drop(conn);
            let mut conn = router.connection_for_schema(other).await.unwrap();
            assert_eq!(sleeps(&mut conn, 0.3).await, ("7s".into(), true));
            drop(conn);
        }
        let mut tx = router.begin_for(slow).await.unwrap();
        assert_eq!(
            sleeps(&mut tx, 2.0).await,
            ("150ms".into(), false),
            "{mode:?}"
        );
        drop(tx);
        // The cancellation is a 503 (the tenant over its share for now), not a 500.
        let mut tx = router.begin_for(slow).await.unwrap();
        let err = sqlx::query("SELECT pg_sleep(2)")
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert_eq!(tx.error(err).status(), 503, "{mode:?}");
        drop(tx);
        let mut tx = router.begin_for(other).await.unwrap();
        assert_eq!(sleeps(&mut tx, 0.3).await, ("7s".into(), true), "{mode:?}");
        tx.commit().await.unwrap();
        let mut tx = router.begin_for(&SchemaName::public()).await.unwrap();
        assert_eq!(sleeps(&mut tx, 0.0).await.0, "7s", "{mode:?}");
        tx.commit().await.unwrap();
    }
}

/// A tenant with the shortest timeout (1 ms asked, 10 ms given) before another on the only
/// connection: the next tenant's checkout never fails because of the first tenant's timeout
/// (its switch's first statement, a `SET` of the next tenant's timeout, is the only one
/// that runs under it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_tenants_switch_does_not_run_under_a_tiny_timeout() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "sx_tiny_", 2).await;
    let (tiny, other) = (&s[0], &s[1]);
    tenancy
        .set_statement_timeout(tiny, Some(Duration::from_millis(1)))
        .await
        .unwrap();
    assert_eq!(
        tenancy
            .registry()
            .get(tiny)
            .await
            .unwrap()
            .statement_timeout,
        Some(Duration::from_millis(10))
    );
    let router = one_connection(&db, &tenancy).await;
    let mut failed = Vec::new();
    for round in 0..300 {
        if let Ok(mut conn) = router.connection_for_schema(tiny).await {
            let _ = sqlx::query("SELECT 1").execute(&mut *conn).await;
        }
        match router.connection_for_schema(other).await {
            Ok(mut conn) => {
                if let Err(e) = sqlx::query("SELECT 1").execute(&mut *conn).await {
                    failed.push(format!("round {round}: statement: {e}"));
                }
            }
            Err(e) => failed.push(format!("round {round}: checkout: {e}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

/// What the settings under test read on `conn`: `app.token` (empty when never set or reset),
/// `work_mem`, `lock_timeout`.
async fn settings(conn: &mut sqlx::PgConnection) -> (String, String, String) {
    sqlx::query_as(
        "SELECT coalesce(current_setting('app.token', true), ''), \
         current_setting('work_mem'), current_setting('lock_timeout')",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

/// Settings a tenant's SQL gives its sqlx session (`SET work_mem …`, `SET app.token …`,
/// `set_config(…, false)`, a `SET` inside a committed transaction) stay for the rest of that
/// checkout and never reach the next one on the same pooled connection: another tenant's,
/// the same tenant's, `public`'s, or a transaction's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_a_tenant_leaves_do_not_reach_the_next_sqlx_checkout() {
    let (db, tenancy, s, _) = setup("sx_left_", 2).await;
    let (a, b) = (&s[0], &s[1]);
    let router = one_connection(&db, &tenancy).await;
    let clean = settings(&mut router.connection_for_schema(b).await.unwrap()).await;
    assert_eq!(clean.0, "");
    let left = ("a-secret".to_owned(), "1234kB".to_owned(), "1ms".to_owned());
    let set = "SET app.token = 'a-secret'; SET work_mem = '1234kB'; SET lock_timeout = '1ms'";
    for how in ["batch", "set_config", "transaction"] {
        let own = if how == "transaction" {
            let mut tx = router.begin_for(a).await.unwrap();
            sqlx::raw_sql(set).execute(&mut *tx).await.unwrap();
            let own = settings(&mut tx).await;
            tx.commit().await.unwrap();
            own
        } else {
            let mut conn = router.connection_for_schema(a).await.unwrap();
            if how == "batch" {
                sqlx::raw_sql(set).execute(&mut *conn).await.unwrap();
            } else {
                sqlx::query(
                    "SELECT set_config('app.token', 'a-secret', false), \
                     set_config('work_mem', '1234kB', false), \
                     set_config('lock_timeout', '1ms', false)",
                )
                .execute(&mut *conn)
                .await
                .unwrap();
            }
            settings(&mut conn).await
        };
        // The checkout's own statements keep what it set.
        assert_eq!(own, left, "{how}: the own checkout");
        for (door, schema) in [("another tenant", b), ("the same tenant", a)] {
            let mut conn = router.connection_for_schema(schema).await.unwrap();
            assert_eq!(settings(&mut conn).await, clean, "{how}: {door}");
        }
        let mut conn = router.connection_for_schema(a).await.unwrap();
        sqlx::raw_sql(set).execute(&mut *conn).await.unwrap();
        drop(conn);
        let mut tx = router.begin_for(&SchemaName::public()).await.unwrap();
        assert_eq!(
            settings(&mut tx).await,
            clean,
            "{how}: public's transaction"
        );
        tx.commit().await.unwrap();
    }
}
