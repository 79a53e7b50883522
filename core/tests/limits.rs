//! Fair sharing of the pool: a tenant holds at most its `TenantLimits::max_connections`
//! through every door (core router by tenant and by name, a driver's `DriverCheckout`), its
//! further checkouts wait outside the pool in order of arrival or are refused with
//! `TenantBusy` (503, `Retry-After`), and other tenants are served meanwhile.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tenant_schemas::checkout::{DriverCheckout, TenantUsage};
use tenant_schemas::request::Rejection;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{Error, SchemaName, Tenancy, Tenant, TenantLimits};

async fn limited(limits: TenantLimits) -> (tenant_schemas::testing::TestDatabase, Tenancy) {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(8).unwrap())
        .migrations(marker_and_notes())
        .tenant_limits(limits)
        .build()
        .await
        .unwrap();
    marked_tenants(&tenancy, "fair", 2).await;
    (db, tenancy)
}

/// Waits (up to 10 s) until `schema`'s usage is `want`.
async fn until_usage(tenancy: &Tenancy, schema: &SchemaName, want: TenantUsage) {
    let states = tenancy.tenant_states();
    let deadline = Instant::now() + Duration::from_secs(10);
    while states.usage(schema) != Some(want) {
        assert!(
            Instant::now() < deadline,
            "usage of {schema}: {:?}, expected {want:?}",
            states.usage(schema)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How long a checkout of the first test waits for its tenant's connection: long enough for
/// the waiter to be served on a loaded machine, and to tell a refusal at once from a wait.
const MAX_WAIT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_holds_at_most_its_limit_through_every_door_and_others_are_served() {
    let (_db, tenancy) = limited(
        TenantLimits::new()
            .max_connections(2)
            .max_waiting(1)
            .max_wait(MAX_WAIT),
    )
    .await;
    let (a, b) = (schema("fair0"), schema("fair1"));
    let router = tenancy.router();
    let states = tenancy.tenant_states();
    let usage = |in_use, waiting| TenantUsage {
        limit: 2,
        in_use,
        waiting,
    };

    // Two doors take a's two connections: the core router by tenant, a driver's checkout.
    let first = router
        .connection_for_tenant(&Tenant::new(a.clone()))
        .await
        .unwrap();
    let driver = DriverCheckout::begin(Some(&states), &Tenant::new(a.clone()))
        .await
        .unwrap();
    assert_eq!(states.usage(&a), Some(usage(2, 0)));

    // A third checkout (by name) waits for one of them, outside the pool.
    let waiter = {
        let router = router.clone();
        let a = a.clone();
        tokio::spawn(async move {
            let db = router.connection_for_schema(&a).await?;
            Ok::<_, Error>(marker_of(&db).await)
        })
    };
    until_usage(&tenancy, &a, usage(2, 1)).await;

    // A fourth finds the queue full: refused at once, 503 with Retry-After.
    let started = Instant::now();
    let err = router.connection_for_schema(&a).await.unwrap_err();
    assert!(
        matches!(&err, Error::TenantBusy { schema, limit: 2 } if schema == &a),
        "{err:?}"
    );
    // Refused without waiting its `max_wait`.
    assert!(started.elapsed() < MAX_WAIT / 2, "it waited");
    let rejection = Rejection::from_error(&err);
    assert_eq!(rejection.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rejection.retry_after(), Some(1));
    assert!(rejection.body().contains("busy"), "{rejection:?}");

    // Meanwhile b is served, up to its own limit, on the same pool.
    let b1 = router.connection_for_schema(&b).await.unwrap();
    let b2 = router
        .connection_for_tenant(&Tenant::new(b.clone()))
        .await
        .unwrap();
    assert_eq!(marker_of(&b1).await, "fair1");
    assert_eq!(marker_of(&b2).await, "fair1");
    assert_eq!(states.usage(&b), Some(usage(2, 0)));
    // The shared public schema by name is not limited.
    let publics: Vec<_> = futures_util::future::join_all((0..3).map(|_| router.public()))
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(publics);

    // The driver's checkout ends: the waiter gets its connection, on a's path.
    drop(driver);
    assert_eq!(waiter.await.unwrap().unwrap(), "fair0");
    assert_eq!(states.usage(&a), Some(usage(1, 0)));

    // Full again, and nobody lets go: a checkout waits `max_wait`, then is refused.
    let second = router.connection_for_schema(&a).await.unwrap();
    let started = Instant::now();
    let err = router
        .connection_for_tenant(&Tenant::new(a.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantBusy { .. }), "{err:?}");
    assert!(started.elapsed() >= MAX_WAIT, "it did not wait");
    assert_eq!(
        states.usage(&a),
        Some(usage(2, 0)),
        "the waiter was not counted out"
    );
    drop((first, second, b1, b2));
    assert_eq!(states.usage(&a), Some(usage(0, 0)));
    assert_eq!(states.usage(&b), Some(usage(0, 0)));
}

/// Checkouts of one tenant beyond its limit are served in their order of arrival.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_checkouts_are_served_in_order() {
    let (_db, tenancy) = limited(TenantLimits::new().max_connections(1)).await;
    let a = schema("fair0");
    let router = tenancy.router();
    let held = router.connection_for_schema(&a).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..5u32 {
        let (router, mine, tx) = (router.clone(), a.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let db = router.connection_for_schema(&mine).await.unwrap();
            tx.send(i).unwrap();
            drop(db);
        }));
        // The next one arrives only once this one waits.
        until_usage(
            &tenancy,
            &a,
            TenantUsage {
                limit: 1,
                in_use: 1,
                waiting: i + 1,
            },
        )
        .await;
    }
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    drop(tx);
    let mut order = Vec::new();
    while let Some(i) = rx.recv().await {
        order.push(i);
    }
    assert_eq!(order, [0, 1, 2, 3, 4]);
}

/// A tenant's own limit, kept in the registry, applies without a default and over one; it
/// is followed at once, and cleared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_own_limit_from_the_registry() {
    let (_db, tenancy) = limited(TenantLimits::new().max_waiting(0)).await;
    let (a, b) = (schema("fair0"), schema("fair1"));
    let router = tenancy.router();
    tenancy.set_max_connections(&a, Some(1)).await.unwrap();
    assert_eq!(
        tenancy.registry().get(&a).await.unwrap().max_connections,
        Some(1)
    );

    let held = router.connection_for_schema(&a).await.unwrap();
    let err = router.connection_for_schema(&a).await.unwrap_err();
    assert!(matches!(err, Error::TenantBusy { limit: 1, .. }), "{err:?}");
    // No default: b has no limit.
    let bs: Vec<_> =
        futures_util::future::join_all((0..3).map(|_| router.connection_for_schema(&b)))
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
    assert_eq!(tenancy.tenant_states().usage(&b), None);
    drop(bs);

    // Raised: a second connection now.
    tenancy.set_max_connections(&a, Some(2)).await.unwrap();
    let second = router.connection_for_schema(&a).await.unwrap();
    assert_eq!(marker_of(&second).await, "fair0");
    // Cleared: no limit.
    tenancy.set_max_connections(&a, None).await.unwrap();
    let more: Vec<_> =
        futures_util::future::join_all((0..3).map(|_| router.connection_for_schema(&a)))
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
    drop((held, second, more));
    let err = tenancy
        .set_max_connections(&schema("nobody"), Some(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantNotFound { .. }), "{err:?}");
}

/// A limit changed while the tenant holds connections counts the ones held: raised from 2 to
/// 3 with 2 held, one more (not three); lowered from 3 to 1 with 3 held, none until only
/// one is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_limit_counts_the_connections_held() {
    let (_db, tenancy) = limited(TenantLimits::new().max_waiting(0)).await;
    let a = schema("fair0");
    let router = tenancy.router();
    let busy = |r: Result<_, Error>| matches!(r, Err(Error::TenantBusy { .. }));
    tenancy.set_max_connections(&a, Some(2)).await.unwrap();
    let mut held = vec![
        router.connection_for_schema(&a).await.unwrap(),
        router.connection_for_schema(&a).await.unwrap(),
    ];
    assert!(busy(router.connection_for_schema(&a).await));

    tenancy.set_max_connections(&a, Some(3)).await.unwrap();
    held.push(router.connection_for_schema(&a).await.unwrap());
    assert!(
        busy(router.connection_for_schema(&a).await),
        "a 4th under a limit of 3"
    );
    let usage = tenancy.tenant_states().usage(&a).unwrap();
    assert_eq!((usage.limit, usage.in_use), (3, 3));

    tenancy.set_max_connections(&a, Some(1)).await.unwrap();
    assert!(
        busy(router.connection_for_schema(&a).await),
        "a 4th under a limit of 1"
    );
    held.pop();
    assert!(
        busy(router.connection_for_schema(&a).await),
        "a 3rd under a limit of 1"
    );
    held.pop();
    assert!(
        busy(router.connection_for_schema(&a).await),
        "a 2nd under a limit of 1"
    );
    held.pop();
    let one = router.connection_for_schema(&a).await.unwrap();
    assert_eq!(marker_of(&one).await, "fair0");
    assert!(busy(router.connection_for_schema(&a).await));
    let usage = tenancy.tenant_states().usage(&a).unwrap();
    assert_eq!((usage.limit, usage.in_use), (1, 1));
}

/// A limit set while the tenant holds connections taken without one counts them: with no
/// limit, 3 held; limited to 2, none until only one is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_set_counts_the_connections_taken_without_one() {
    let (_db, tenancy) = limited(TenantLimits::new().max_waiting(0)).await;
    let a = schema("fair0");
    let router = tenancy.router();
    let busy = |r: Result<_, Error>| matches!(r, Err(Error::TenantBusy { .. }));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(router.connection_for_schema(&a).await.unwrap());
    }
    assert_eq!(tenancy.tenant_states().usage(&a), None);

    tenancy.set_max_connections(&a, Some(2)).await.unwrap();
    assert!(
        busy(router.connection_for_schema(&a).await),
        "a 4th under a limit of 2"
    );
    held.pop();
    assert!(
        busy(router.connection_for_schema(&a).await),
        "a 3rd under a limit of 2"
    );
    held.pop();
    held.push(router.connection_for_schema(&a).await.unwrap());
    assert!(busy(router.connection_for_schema(&a).await));
    let usage = tenancy.tenant_states().usage(&a).unwrap();
    assert_eq!((usage.limit, usage.in_use), (2, 2));

    // Cleared again: no limit, no usage shown; the connections are still counted.
    tenancy.set_max_connections(&a, None).await.unwrap();
    held.push(router.connection_for_schema(&a).await.unwrap());
    assert_eq!(tenancy.tenant_states().usage(&a), None);
    tenancy.set_max_connections(&a, Some(3)).await.unwrap();
    assert!(
        busy(router.connection_for_schema(&a).await),
        "a 4th under a limit of 3"
    );
}

/// The public tenant (the main site's requests) is a tenant like the others: it holds at
/// most the limit; the shared `public` schema asked for by name is not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_tenant_holds_at_most_the_limit() {
    let (_db, tenancy) = limited(TenantLimits::new().max_connections(2).max_waiting(0)).await;
    let router = tenancy.router();
    let public = Tenant::public();
    let held = [
        router.connection_for_tenant(&public).await.unwrap(),
        router.connection_for_tenant(&public).await.unwrap(),
    ];
    let err = router.connection_for_tenant(&public).await.unwrap_err();
    assert!(matches!(err, Error::TenantBusy { limit: 2, .. }), "{err:?}");
    let err = tenant_schemas::scope::run(public.clone(), async { tenancy.connection().await })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantBusy { .. }), "{err:?}");
    // By name: the library's and the applications' shared schema, not limited.
    let by_name = router
        .connection_for_schema(&SchemaName::public())
        .await
        .unwrap();
    drop((held, by_name));
    router.connection_for_tenant(&public).await.unwrap();
}

/// Whether `err` is the server cancelling a statement (`57014`, `query_canceled`).
fn cancelled(err: &Error) -> bool {
    matches!(err, Error::Database { source, .. }
        if source.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED))
}

/// A tenancy over one connection (every tenant shares it), in `mode`, on a database whose
/// own `statement_timeout` is 7 s (what a role or database setting gives the others).
async fn one_connection(
    mode: tenant_schemas::SearchPathMode,
    limits: TenantLimits,
) -> (
    tenant_schemas::testing::TestDatabase,
    Tenancy,
    Vec<SchemaName>,
) {
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
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .search_path_mode(mode)
        .tenant_limits(limits)
        .build()
        .await
        .unwrap();
    let schemas = marked_tenants(&tenancy, "slow", 2).await;
    (db, tenancy, schemas)
}

/// The setting `statement_timeout` as a connection for `schema` sees it, and whether
/// `pg_sleep(secs)` finished there (`false`: cancelled by the server).
async fn timeout_seen(tenancy: &Tenancy, schema: &SchemaName, secs: f64) -> (String, bool) {
    let conn = tenancy
        .router()
        .connection_for_schema(schema)
        .await
        .unwrap();
    let shown: String = conn
        .query_one("SELECT current_setting('statement_timeout')", &[])
        .await
        .unwrap()
        .get(0);
    let slept = match conn.execute("SELECT pg_sleep($1)", &[&secs]).await {
        Ok(_) => true,
        Err(e) if cancelled(&e) => false,
        Err(e) => panic!("{e:?}"),
    };
    (shown, slept)
}

/// A tenant's own `statement_timeout` cancels its long statement and no one else's: the
/// next tenant on the same (only) connection, the shared `public` schema and the library's
/// own work get the database's setting back, in both modes and in a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_statement_timeout_is_its_own_through_every_way_in() {
    for mode in [
        tenant_schemas::SearchPathMode::Session,
        tenant_schemas::SearchPathMode::Transaction,
    ] {
        let (_db, tenancy, schemas) = one_connection(mode, TenantLimits::new()).await;
        let (slow, other) = (&schemas[0], &schemas[1]);
        tenancy
            .set_statement_timeout(slow, Some(Duration::from_millis(150)))
            .await
            .unwrap();
        let record = tenancy.registry().get(slow).await.unwrap();
        assert_eq!(record.statement_timeout, Some(Duration::from_millis(150)));

        let (shown, slept) = timeout_seen(&tenancy, slow, 2.0).await;
        assert!(
            !slept,
            "{mode:?}: the slow tenant's 2 s sleep was not cancelled"
        );
        assert_eq!(shown, "150ms", "{mode:?}");
        // In a transaction of its own, too (scope in scope: `Tenant` by name).
        let mut conn = tenancy.router().connection_for_schema(slow).await.unwrap();
        let tx = conn.transaction().await.unwrap();
        let err = tx.execute("SELECT pg_sleep(2)", &[]).await.unwrap_err();
        assert!(cancelled(&err), "{mode:?}: {err:?}");
        // Answered 503 with Retry-After in every adapter, not 500.
        assert!(err.is_cancelled(), "{mode:?}");
        let rejection = tenant_schemas::request::Rejection::from_error(&err);
        assert_eq!(rejection.status(), 503, "{mode:?}");
        assert_eq!(rejection.retry_after(), Some(1), "{mode:?}");
        drop(tx);
        drop(conn);

        // The other tenant and `public`, on the same connection: the database's setting.
        let (shown, slept) = timeout_seen(&tenancy, other, 0.3).await;
        assert!(slept, "{mode:?}: another tenant's statement was cancelled");
        assert_eq!(shown, "7s", "{mode:?}");
        let (shown, _) = timeout_seen(&tenancy, &SchemaName::public(), 0.0).await;
        assert_eq!(shown, "7s", "{mode:?}");
        // The library's own work on that connection: a tenant created (migrations run).
        tenancy
            .create_tenant(tenant_schemas::NewTenant::new(
                SchemaName::new("slow_created").unwrap(),
            ))
            .await
            .unwrap();
        let shown: String = tenancy
            .router()
            .pool()
            .get()
            .await
            .unwrap()
            .query_one("SELECT current_setting('statement_timeout')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            shown, "7s",
            "{mode:?}: the library's work left a tenant's timeout"
        );

        // Cleared: the database's setting again.
        tenancy.set_statement_timeout(slow, None).await.unwrap();
        let (shown, slept) = timeout_seen(&tenancy, slow, 0.3).await;
        assert!(slept && shown == "7s", "{mode:?}: {shown}");
    }
}

/// The tenancy's default applies to every tenant without one of its own; a tenant's own
/// (longer) one wins over it; the shared `public` schema by name is not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_statement_timeout_and_a_tenants_own() {
    let limits = TenantLimits::new().statement_timeout(Duration::from_millis(150));
    assert_eq!(
        limits.get_statement_timeout(),
        Some(Duration::from_millis(150))
    );
    let (_db, tenancy, schemas) =
        one_connection(tenant_schemas::SearchPathMode::Session, limits).await;
    let (short, long) = (&schemas[0], &schemas[1]);
    tenancy
        .set_statement_timeout(long, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let (shown, slept) = timeout_seen(&tenancy, short, 1.0).await;
    assert!(!slept && shown == "150ms", "{shown}");
    let (shown, slept) = timeout_seen(&tenancy, long, 0.4).await;
    assert!(slept && shown == "5s", "{shown}");
    let (shown, slept) = timeout_seen(&tenancy, &SchemaName::public(), 0.4).await;
    assert!(slept && shown == "7s", "{shown}");
    // A driver's checkout says what to set.
    let checkout =
        DriverCheckout::begin(Some(&tenancy.tenant_states()), &Tenant::new(short.clone()))
            .await
            .unwrap();
    assert_eq!(
        checkout.statement_timeout(),
        Some(Duration::from_millis(150))
    );
    assert!(checkout
        .session_settings("x")
        .starts_with("RESET ALL; RESET SESSION AUTHORIZATION; SET statement_timeout TO 150; RESET ROLE; SET search_path TO x"));
}

/// The setting `statement_timeout` as the tenant in scope's connection sees it.
async fn timeout_in_scope(tenancy: &Tenancy, tenant: Tenant) -> String {
    tenant_schemas::scope::run(tenant, async {
        tenancy
            .router()
            .connection()
            .await
            .unwrap()
            .query_one("SELECT current_setting('statement_timeout')", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    })
    .await
}

/// A migration longer than a tenant's timeout, run right after that tenant's request on the
/// only connection (by another `Tenancy` over the same pool, with a migration more), is not
/// cancelled: the library's own work has the database's setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_migration_after_a_timed_request_on_the_only_connection_runs() {
    let (_db, tenancy, schemas) = one_connection(
        tenant_schemas::SearchPathMode::Session,
        TenantLimits::new().statement_timeout(Duration::from_millis(150)),
    )
    .await;
    let (shown, slept) = timeout_seen(&tenancy, &schemas[0], 1.0).await;
    assert!(!slept && shown == "150ms", "{shown}");
    let later = Tenancy::builder(tenancy.router().pool().clone())
        .migrations(marker_and_notes().with("slow", "SELECT pg_sleep(0.4)"))
        .tenant_limits(TenantLimits::new().statement_timeout(Duration::from_millis(150)))
        .build()
        .await
        .unwrap();
    let report = later
        .migrate(&tenant_schemas::RunOptions::default(), None)
        .await
        .unwrap();
    for s in &report.schemas {
        assert!(
            matches!(s.outcome, tenant_schemas::Outcome::Migrated { .. }),
            "{report:?}"
        );
    }
}

/// On one connection, a timed tenant's connection handed straight to a waiting request of
/// another tenant (the handoff, or the path memory) never keeps the timed tenant's timeout;
/// the public tenant in scope has the default, `public` by name the database's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_connection_does_not_keep_a_timed_tenants_timeout() {
    let (_db, tenancy, schemas) =
        one_connection(tenant_schemas::SearchPathMode::Session, TenantLimits::new()).await;
    let (slow, other) = (&schemas[0], &schemas[1]);
    tenancy
        .set_statement_timeout(slow, Some(Duration::from_millis(150)))
        .await
        .unwrap();
    for _ in 0..3 {
        let held = tenancy.router().connection_for_schema(slow).await.unwrap();
        held.query_one("SELECT 1", &[]).await.unwrap();
        let waiting = {
            let tenancy = tenancy.clone();
            let other = other.clone();
            tokio::spawn(async move { timeout_seen(&tenancy, &other, 0.3).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        let (shown, slept) = waiting.await.unwrap();
        assert!(slept && shown == "7s", "{shown}");
        // Back and forth through the path memory.
        let (shown, slept) = timeout_seen(&tenancy, slow, 0.3).await;
        assert!(!slept && shown == "150ms", "{shown}");
        let (shown, _) = timeout_seen(&tenancy, slow, 0.0).await;
        assert_eq!(shown, "150ms");
        let (shown, _) = timeout_seen(&tenancy, other, 0.0).await;
        assert_eq!(shown, "7s");
    }
    // Changed while the connection is remembered on the tenant's path.
    let (shown, _) = timeout_seen(&tenancy, slow, 0.0).await;
    assert_eq!(shown, "150ms");
    tenancy
        .set_statement_timeout(slow, Some(Duration::from_secs(3)))
        .await
        .unwrap();
    let (shown, _) = timeout_seen(&tenancy, slow, 0.0).await;
    assert_eq!(shown, "3s");
    tenancy.set_statement_timeout(slow, None).await.unwrap();
    let (shown, _) = timeout_seen(&tenancy, slow, 0.0).await;
    assert_eq!(shown, "7s");
}

/// With a default timeout: the public tenant in scope has it, `public` by name does not,
/// on the same connection one after the other (the path memory has one path for both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_tenant_and_public_by_name_on_one_connection() {
    let (_db, tenancy, _schemas) = one_connection(
        tenant_schemas::SearchPathMode::Session,
        TenantLimits::new().statement_timeout(Duration::from_millis(150)),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(timeout_in_scope(&tenancy, Tenant::public()).await, "150ms");
        let (shown, _) = timeout_seen(&tenancy, &SchemaName::public(), 0.0).await;
        assert_eq!(shown, "7s");
    }
}

/// Behind PgBouncer in transaction pooling with one server connection: a timed tenant's
/// statement is cancelled, the next tenant's on the same server connection is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_tenant_behind_pgbouncer_leaves_nothing_on_the_server_connection() {
    let db = database().await;
    let (_bouncer, tenancy) = bounced_tenancy(&db, 1, 2).await;
    let schemas = marked_tenants(&tenancy, "pb", 2).await;
    let (slow, other) = (&schemas[0], &schemas[1]);
    tenancy
        .set_statement_timeout(slow, Some(Duration::from_millis(150)))
        .await
        .unwrap();
    for _ in 0..2 {
        let (shown, slept) = timeout_seen(&tenancy, slow, 1.0).await;
        assert!(!slept && shown == "150ms", "{shown}");
        let (shown, slept) = timeout_seen(&tenancy, other, 0.3).await;
        assert!(slept && shown != "150ms", "{shown}");
        let conn = tenancy.router().connection_for_schema(slow).await.unwrap();
        let mut conn2 = conn;
        let tx = conn2.transaction().await.unwrap();
        let err = tx.execute("SELECT pg_sleep(1)", &[]).await.unwrap_err();
        assert!(cancelled(&err), "{err:?}");
        drop(tx);
        drop(conn2);
        let (shown, slept) = timeout_seen(&tenancy, other, 0.3).await;
        assert!(slept && shown != "150ms", "{shown}");
    }
}
