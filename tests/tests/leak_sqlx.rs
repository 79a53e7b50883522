//! The leak test for `tenant-schemas-sqlx`, at CI size: 50 tenants, 4,000 requests from 32
//! tasks over a pool of 8, each reading a random tenant's marker through a `SqlxConnection`
//! (three in four) or a `SqlxTransaction`; 5% cancelled mid-flight, 3% first sending
//! session-changing SQL through their connection (`SET search_path` to another tenant,
//! `RESET ALL`, `DISCARD ALL`, `set_config`, a `BEGIN` left open, a temporary `marker`), and
//! random backends killed every 200 ms, while `public` holds a `marker` of its own. Zero
//! wrong-tenant answers. (Tenants are not deleted mid-run here: see the crate's docs.)

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPoolOptions;
use sqlx::Executor;
use tenant_schemas::testing::fixtures::marked_over_public;
use tenant_schemas::{SchemaName, SearchPathMode};
use tenant_schemas_sqlx::{connect_options, SqlxRouter};

const REQUESTS: u64 = 4000;

fn misuse(rng: &mut StdRng, other: &SchemaName) -> String {
    match rng.random_range(0..7) {
        0 => format!("SET search_path TO {}, public", other.quoted()),
        1 => "RESET ALL".into(),
        2 => "DISCARD ALL".into(),
        3 => format!(
            "SELECT set_config('search_path', '{}', false)",
            other.quoted()
        ),
        4 => "BEGIN".into(),
        5 => "CREATE TEMP TABLE IF NOT EXISTS marker AS SELECT 'TEMP'::text AS schema_name".into(),
        _ => "SET search_path TO public".into(),
    }
}

async fn read(
    router: &SqlxRouter,
    schema: &SchemaName,
    in_tx: bool,
    misuse: Option<String>,
) -> Option<String> {
    if in_tx {
        let mut tx = router.begin_for(schema).await.ok()?;
        let (m,): (String,) = sqlx::query_as("SELECT schema_name FROM marker")
            .fetch_one(&mut *tx)
            .await
            .ok()?;
        tx.commit().await.ok()?;
        return Some(m);
    }
    let mut conn = router.connection_for_schema(schema).await.ok()?;
    if let Some(sql) = misuse {
        // What it does to this connection is its own business; the next checkout must not see it.
        let _ = conn.execute(sql.as_str()).await;
        return None;
    }
    let (m,): (String,) = sqlx::query_as("SELECT schema_name FROM marker")
        .fetch_one(&mut *conn)
        .await
        .ok()?;
    Some(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sqlx_request_ever_sees_another_tenant() {
    let (db, _tenancy, schemas, admin) =
        marked_over_public("lk", 50, 4, SearchPathMode::Session).await;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(connect_options(db.config()))
        .await
        .unwrap();
    let router = SqlxRouter::new(pool);
    let schemas = Arc::new(schemas);
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (stop, dbname) = (stop.clone(), db.name().to_owned());
        tokio::spawn(async move {
            let mut killed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Ok(conn) = admin.get().await {
                    if let Ok(rows) = conn
                        .query(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                             WHERE datname = $1 AND backend_type = 'client backend'
                               AND pid <> pg_backend_pid()
                             ORDER BY random() LIMIT 1",
                            &[&dbname],
                        )
                        .await
                    {
                        killed += rows.len() as u64;
                    }
                }
            }
            killed
        })
    };
    let (issued, ok, wrong, cancelled) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = Vec::new();
    for w in 0..32u64 {
        let (router, schemas, issued, ok, wrong, cancelled) = (
            router.clone(),
            schemas.clone(),
            issued.clone(),
            ok.clone(),
            wrong.clone(),
            cancelled.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(w);
            while issued.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                let schema = &schemas[rng.random_range(0..schemas.len())];
                let other = &schemas[rng.random_range(0..schemas.len())];
                let in_tx = rng.random_bool(0.25);
                let bad = (!in_tx && rng.random_bool(0.03)).then(|| misuse(&mut rng, other));
                let work = read(&router, schema, in_tx, bad);
                let answer = if rng.random_bool(0.05) {
                    let limit = Duration::from_micros(rng.random_range(0..2000));
                    match tokio::time::timeout(limit, work).await {
                        Ok(a) => a,
                        Err(_) => {
                            cancelled.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                } else {
                    work.await
                };
                match answer {
                    Some(m) if m == schema.as_str() => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(m) => {
                        eprintln!("WRONG TENANT: asked {schema}, got {m}");
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {}
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let killed = killer.await.unwrap();
    let (ok, wrong, cancelled) = (
        ok.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed),
        cancelled.load(Ordering::Relaxed),
    );
    println!(
        "sqlx leak: ok {ok}, WRONG TENANT {wrong}, cancelled {cancelled}, backends killed {killed}; {:?}",
        router.stats()
    );
    assert_eq!(wrong, 0, "wrong-tenant answers");
    assert!(cancelled > 0, "nothing was cancelled");
    assert!(ok > REQUESTS / 2, "too few successful requests: {ok}");
    assert!(
        router.stats().discarded > 0,
        "misuse left nothing to discard"
    );
}
