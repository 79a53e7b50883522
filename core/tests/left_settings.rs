//! Settings a tenant's SQL gives its pooled session beyond those a switch sets (`SET work_mem
//! …`, `SET app.token …`, `set_config(…, false)`, a `SET` inside a transaction): kept for the
//! rest of the tenant's scope, and reset before anyone else's statement runs on the
//! connection — another tenant's, the same tenant's next checkout, the library's own work.

#![allow(clippy::unwrap_used)]

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{ConnectionScope, NewTenant, RunOptions, SchemaName, SchemaRouter, Tenancy};

/// `app.token`, `work_mem`, `lock_timeout`.
type Settings = (String, String, String);

/// What the settings under test read on `db`: `app.token` (empty when never set or reset),
/// `work_mem`, `lock_timeout`.
async fn settings(db: &ConnectionScope) -> Settings {
    let row = db
        .query_one(
            "SELECT coalesce(current_setting('app.token', true), ''), \
             current_setting('work_mem'), current_setting('lock_timeout')",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

async fn settings_of(router: &SchemaRouter, schema: &SchemaName) -> Settings {
    settings(&router.connection_for_schema(schema).await.unwrap()).await
}

/// The scope `conn` of tenant `a` keeps the settings `left` that it made; once it is dropped,
/// the next checkout, tenant `b`'s or `a`'s again, finds the session `clean`.
async fn kept_then_clean(
    conn: ConnectionScope,
    router: &SchemaRouter,
    (a, b): (&SchemaName, &SchemaName),
    (left, clean): (&Settings, &Settings),
    how: &str,
) {
    assert_eq!(&settings(&conn).await, left, "{how}: the own scope");
    drop(conn);
    assert_eq!(
        &settings_of(router, b).await,
        clean,
        "{how}: the next tenant"
    );
    assert_eq!(
        &settings_of(router, a).await,
        clean,
        "{how}: the same tenant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_a_tenant_leaves_do_not_reach_the_next_checkout() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    let (a, b) = (schema("left_a"), schema("left_b"));
    for s in [&a, &b] {
        tenancy
            .create_tenant(NewTenant::new(s.clone()))
            .await
            .unwrap();
    }
    let router = tenancy.router();
    // The reading statement cached for both tenants: the next switches travel with it.
    let clean = settings_of(router, &a).await;
    assert_eq!(settings_of(router, &b).await, clean);
    assert_eq!(clean.0, "");
    let left = ("a-secret".to_owned(), "1234kB".to_owned(), "1ms".to_owned());

    for how in ["batch", "set_config", "transaction", "prepared"] {
        let mut conn = router.connection_for_schema(&a).await.unwrap();
        match how {
            "batch" => conn
                .batch_execute(
                    "SET app.token = 'a-secret'; SET work_mem = '1234kB'; SET lock_timeout = '1ms'",
                )
                .await
                .unwrap(),
            "set_config" => {
                conn.query(
                    "SELECT set_config('app.token', 'a-secret', false), \
                     set_config('work_mem', '1234kB', false), \
                     set_config('lock_timeout', '1ms', false)",
                    &[],
                )
                .await
                .unwrap();
            }
            "transaction" => {
                let tx = conn.transaction().await.unwrap();
                tx.batch_execute(
                    "SET app.token = 'a-secret'; SET work_mem = '1234kB'; SET lock_timeout = '1ms'",
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
            _ => {
                let stmt = conn
                    .prepare("SELECT set_config('app.token', 'a-secret', false), set_config('work_mem', '1234kB', false), set_config('lock_timeout', '1ms', false)")
                    .await
                    .unwrap();
                conn.query(&stmt, &[]).await.unwrap();
            }
        }
        // The tenant's own scope keeps what it set; the next checkout, another tenant's or
        // the same one's, finds the session clean.
        kept_then_clean(conn, router, (&a, &b), (&left, &clean), how).await;
    }

    // The library's own work on the only connection: the settings are gone before it runs
    // (a 1 ms lock timeout could fail a migration).
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.batch_execute("SET lock_timeout = '1ms'; SET app.token = 'a-secret'")
        .await
        .unwrap();
    drop(conn);
    tenancy
        .create_tenant(NewTenant::new(schema("left_c")))
        .await
        .unwrap();
    let raw = tenancy.router().pool().get().await.unwrap();
    let row = raw
        .query_one(
            "SELECT coalesce(current_setting('app.token', true), ''), \
             current_setting('lock_timeout')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        (String::new(), "0".to_owned())
    );
}

/// Functions the reader cannot see into: `login_as` sets `app.token`, `work_mem` and
/// `lock_timeout` for the session (`set_config(…, false)`), and a trigger on `notes` does
/// the same when a note is written.
async fn functions_that_set_settings(tenancy: &Tenancy, tenants: &[&SchemaName]) {
    let raw = tenancy.router().pool().get().await.unwrap();
    raw.batch_execute(
        "CREATE FUNCTION public.login_as(who text) RETURNS text LANGUAGE sql AS $$ \
           SELECT set_config('app.token', who, false) \
               || set_config('work_mem', '1234kB', false) \
               || set_config('lock_timeout', '1ms', false) $$; \
         CREATE FUNCTION public.stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           PERFORM public.login_as(NEW.body); RETURN NEW; END $$",
    )
    .await
    .unwrap();
    for s in tenants {
        raw.batch_execute(&format!(
            "CREATE TRIGGER stamp BEFORE INSERT ON {}.notes \
             FOR EACH ROW EXECUTE FUNCTION public.stamp()",
            s.quoted()
        ))
        .await
        .unwrap();
    }
}

/// A tenancy over one connection with tenants `a` and `b` and the functions of
/// [`functions_that_set_settings`]; `reset` is [`TenancyBuilder::reset_settings`].
///
/// [`TenancyBuilder::reset_settings`]: tenant_schemas::TenancyBuilder::reset_settings
async fn one_connection(reset: bool, a: &SchemaName, b: &SchemaName) -> Tenancy {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .reset_settings(reset)
        .build()
        .await
        .unwrap();
    for s in [a, b] {
        tenancy
            .create_tenant(NewTenant::new(s.clone()))
            .await
            .unwrap();
    }
    functions_that_set_settings(&tenancy, &[a, b]).await;
    tenancy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reset_settings_not_even_a_function_leaves_a_setting_to_the_next_checkout() {
    let (a, b) = (schema("fn_a"), schema("fn_b"));
    let tenancy = one_connection(true, &a, &b).await;
    let router = tenancy.router();
    let clean = settings_of(router, &a).await;
    assert_eq!(settings_of(router, &b).await, clean);
    assert_eq!(clean.0, "");
    let left = ("a-secret".to_owned(), "1234kB".to_owned(), "1ms".to_owned());

    for how in ["function", "prepared", "transaction", "trigger"] {
        let conn = router.connection_for_schema(&a).await.unwrap();
        match how {
            "function" => {
                conn.query_one("SELECT login_as('a-secret')", &[])
                    .await
                    .unwrap();
            }
            "prepared" => {
                let stmt = conn.prepare("SELECT login_as($1)").await.unwrap();
                conn.query_one(&stmt, &[&"a-secret"]).await.unwrap();
            }
            "transaction" => {
                let mut conn = conn;
                let tx = conn.transaction().await.unwrap();
                tx.query_one("SELECT login_as('a-secret')", &[])
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                kept_then_clean(conn, router, (&a, &b), (&left, &clean), how).await;
                continue;
            }
            _ => {
                conn.execute("INSERT INTO notes (body) VALUES ('a-secret')", &[])
                    .await
                    .unwrap();
            }
        }
        // The tenant's own scope keeps what its function set; the next checkout, another
        // tenant's or the same one's, finds the session clean.
        kept_then_clean(conn, router, (&a, &b), (&left, &clean), how).await;
    }

    // A job run for a tenant goes through the same checkout.
    let conn = router.connection_for_schema(&b).await.unwrap();
    conn.query_one("SELECT login_as('b-secret')", &[])
        .await
        .unwrap();
    drop(conn);
    let options = RunOptions {
        schemas: vec![b.clone()],
        parallel: 1,
        ..RunOptions::default()
    };
    let seen = tenancy
        .for_each_tenant(&options, |_| {
            let tenancy = tenancy.clone();
            async move { Ok(settings(&tenancy.connection().await?).await) }
        })
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].1.as_ref().unwrap(),
        &clean,
        "a job of the same tenant"
    );

    // The library's own work: a 1 ms lock timeout left by a function must not reach it, nor
    // the raw pool connection after it.
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.query_one("SELECT login_as('a-secret')", &[])
        .await
        .unwrap();
    drop(conn);
    tenancy
        .create_tenant(NewTenant::new(schema("fn_c")))
        .await
        .unwrap();
    let raw = router.pool().get().await.unwrap();
    let row = raw
        .query_one(
            "SELECT coalesce(current_setting('app.token', true), ''), \
             current_setting('lock_timeout')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        (String::new(), "0".to_owned())
    );
}

/// Without [`reset_settings`](tenant_schemas::TenancyBuilder::reset_settings), the documented
/// limit: the reader does not see into a function, so what it sets stays on the session for
/// the next checkout of the connection (the README's "What is not guaranteed").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reset_settings_a_function_s_setting_reaches_the_next_checkout() {
    let (a, b) = (schema("fnleft_a"), schema("fnleft_b"));
    let tenancy = one_connection(false, &a, &b).await;
    let router = tenancy.router();
    let clean = settings_of(router, &b).await;
    let conn = router.connection_for_schema(&a).await.unwrap();
    conn.query_one("SELECT login_as('a-secret')", &[])
        .await
        .unwrap();
    drop(conn);
    assert_ne!(settings_of(router, &b).await, clean);
}
