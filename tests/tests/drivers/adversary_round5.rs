//! Round 5 of the red team. Role mode's "no statement prepared while another tenant's checkout
//! used a connection runs for the next tenant" through connection groups, SeaORM, tenant
//! transactions (both search-path modes), several calls of one scope at once and a raw user of
//! the pool; "read-only tenants never write" through calls of one scope at once, simple
//! queries, statement-timeout tenants with extra schemas, SeaORM's and sqlx's transactions;
//! "no request sees another tenant's data" under checkouts cancelled mid-switch on one
//! connection shared by many tasks, and a scope held across a deletion and re-creation of its
//! schema name; and tokio-postgres's own type lookups after role mode's `DEALLOCATE ALL`.
//! Each test asserts what the guarantee promises: it fails when the guarantee breaks.
//!
//! What broke in this round and is not covered (the README's *Not guaranteed*): the type
//! lookups the drivers keep for themselves in transaction mode (tokio-postgres's on the
//! connection or behind PgBouncer, sqlx's behind PgBouncer, so SeaORM's enum reads), taken
//! over by an application function that runs `DEALLOCATE`/`PREPARE` — which can as well leave
//! the tenant's role; a raw sqlx pool user between two checkouts; a persistent sqlx query
//! behind PgBouncer; a function unlocking the read-only default through SeaORM; large objects
//! written by a function for a read-only tenant.
use std::collections::HashMap;
use std::time::Duration;

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{
    DropSchema, NewTenant, SchemaName, SearchPathMode, Tenancy, Tenant, TenantRoles, TenantStatus,
};
use tenant_schemas_seaorm::sea_orm::{ConnectionTrait, DbBackend, Statement};
use tenant_schemas_seaorm::SeaOrmRouter;

use super::adversary_round4::forged_and_secret;
use super::adversary_statements::{FORGERY, SECRET, TAKE_OVER};
use super::doors::{admin, checkout, sqlx_over_one_connection, Door};

/// `public.take_over_and_plant(replacement)`: `take_over`'s replacement of every statement
/// that inserts into `notes`, then the same text `PREPARE`d under the names tokio-postgres
/// (`s<N>`, N below 20,000) and sqlx (`sqlx_s_<N>`, N below 400) give their next statements,
/// so that whatever a victim binds next under a name it did not parse itself runs it.
const TAKE_OVER_AND_PLANT: &str =
    "CREATE FUNCTION public.take_over_and_plant(replacement text) RETURNS int LANGUAGE plpgsql \
     AS $$ DECLARE i int; k int; BEGIN \
     k := public.take_over(replacement); \
     FOR i IN 0 .. 19999 LOOP \
       BEGIN EXECUTE format('PREPARE %I AS %s', 's' || i, replacement); k := k + 1; \
       EXCEPTION WHEN duplicate_prepared_statement THEN NULL; END; \
     END LOOP; \
     FOR i IN 1 .. 400 LOOP \
       BEGIN EXECUTE format('PREPARE %I AS %s', 'sqlx_s_' || i, replacement); k := k + 1; \
       EXCEPTION WHEN duplicate_prepared_statement THEN NULL; END; \
     END LOOP; RETURN k; END $$";

const FORGE_AND_PLANT: &str =
    "SELECT public.take_over_and_plant('INSERT INTO notes (body) VALUES (''forged by a'')')";

/// A function that leaves the session's transactions writable (`set_config(…, false)` in a
/// body the SQL reader cannot see).
const UNLOCK: &str = "CREATE FUNCTION public.unlock() RETURNS text LANGUAGE sql AS \
     $$ SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false) $$";

/// Tenants `<prefix>0..n` in session or transaction mode over `pool`, in role mode when
/// `roles`.
async fn tenancy_over(
    pool: tenant_schemas::deadpool_postgres::Pool,
    mode: SearchPathMode,
    roles: bool,
    prefix: &str,
    n: usize,
) -> (Tenancy, Vec<SchemaName>) {
    let mut builder = Tenancy::builder(pool)
        .migrations(marker_and_notes())
        .search_path_mode(mode);
    if roles {
        builder = builder.tenant_roles(TenantRoles::new());
    }
    let tenancy = builder.build().await.unwrap();
    let s = marked_tenants(&tenancy, prefix, n).await;
    (tenancy, s)
}

/// [`tenancy_over`] ONE connection to `db`, session mode, in role mode when `roles`.
async fn one_session_connection(
    db: &tenant_schemas::testing::TestDatabase,
    roles: bool,
    prefix: &str,
    n: usize,
) -> (Tenancy, Vec<SchemaName>) {
    tenancy_over(
        db.new_pool(1).unwrap(),
        SearchPathMode::Session,
        roles,
        prefix,
        n,
    )
    .await
}

// ------------------------------------------------------------ Guarantee 1 (role mode)

/// Role mode with connection groups (`connection_groups`, two groups of ONE connection each):
/// of six tenants, two whose checkouts land on the same backend; b's write is cached there,
/// a's SQL replaces it and plants the driver's next names, b writes again.
///
/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_role_statement_not_taken_over_with_connection_groups() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .connection_groups([db.new_pool(1).unwrap()])
        .migrations(marker_and_notes())
        .tenant_roles(TenantRoles::new())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "r5_cg", 6).await;
    admin(&db, TAKE_OVER).await;
    admin(&db, TAKE_OVER_AND_PLANT).await;
    // Which backend each tenant's checkouts land on (its group's one connection).
    let mut by_pid: HashMap<i32, Vec<SchemaName>> = HashMap::new();
    for x in &s {
        let pid: i32 = checkout(&tenancy, x)
            .await
            .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        by_pid.entry(pid).or_default().push(x.clone());
    }
    let pair = by_pid
        .values()
        .find(|v| v.len() >= 2)
        .expect("six tenants over two connections: two share one")
        .clone();
    let (a, b) = (&pair[0], &pair[1]);
    let door = Door::Core(tenancy.clone());
    door.runs(a, "SELECT 1").await.unwrap();
    for _ in 0..2 {
        door.runs(b, SECRET).await.unwrap();
    }
    let before = notes_with_body(&db, b, "secret").await;
    let took_over = door.runs(a, FORGE_AND_PLANT).await;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(door.runs(b, SECRET).await);
    }
    let ok = outcomes.iter().filter(|o| o.is_ok()).count() as i64;
    let (secret, forged) = forged_and_secret(&db, b, before).await;
    assert_eq!(
        (secret, forged),
        (ok, 0),
        "(connection groups) tenant {a}'s SQL ({took_over:?}) put its text in place of tenant \
         {b}'s statements on their group's connection: b's writes returned {outcomes:?}: new \
         secret rows {secret}, rows forged by {a} in {b}: {forged}"
    );
}

/// Role mode, core, session mode, ONE connection: b's write cached, a's SQL replaces it and
/// plants the driver's next names; then b's FIRST checkout after a makes four calls of its one
/// scope at once (`join!`: three writes and a read), so that they race for the first switch
/// (session mode has no per-scope lock). None may run what a planted.
///
/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_role_statement_not_taken_over_by_calls_of_one_scope_at_once() {
    let db = database().await;
    let (tenancy, s) = one_session_connection(&db, true, "r5_jc", 2).await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, TAKE_OVER).await;
    admin(&db, TAKE_OVER_AND_PLANT).await;
    let door = Door::Core(tenancy.clone());
    let mut ok = 0i64;
    let mut outcomes = Vec::new();
    for round in 0..6 {
        for _ in 0..2 {
            door.runs(b, SECRET).await.unwrap();
            ok += 1;
        }
        let took_over = door.runs(a, FORGE_AND_PLANT).await;
        let scope = checkout(&tenancy, b).await;
        let (w1, w2, r, w3) = tokio::join!(
            scope.execute(SECRET, &[]),
            scope.execute(SECRET, &[]),
            scope.query_one("SELECT schema_name FROM marker", &[]),
            scope.execute(SECRET, &[]),
        );
        for w in [&w1, &w2, &w3] {
            ok += i64::from(w.is_ok());
        }
        if let Ok(row) = &r {
            let seen: String = row.get(0);
            assert_eq!(&seen, b.as_str(), "round {round}: b's read saw {seen}");
        }
        outcomes.push(format!(
            "round {round}: a {took_over:?}; b {:?} {:?} {:?} {:?}",
            w1.map_err(|e| e.to_string()),
            w2.map_err(|e| e.to_string()),
            r.map(|_| ()).map_err(|e| e.to_string()),
            w3.map_err(|e| e.to_string())
        ));
        drop(scope);
    }
    let (secret, forged) = forged_and_secret(&db, b, 0).await;
    assert_eq!(
        (secret, forged),
        (ok, 0),
        "calls of one scope at once after tenant {a}'s SQL: secret rows {secret} (writes Ok \
         {ok}), rows forged by {a} in {b}: {forged}; {outcomes:#?}"
    );
}

/// b's writes through `TenantTransaction` (text, and `prepare` + `execute`) in `mode`, role
/// mode, ONE connection; a's SQL in a's own transaction replaces b's statements and plants
/// the driver's next names; b's next transaction writes again.
async fn transaction_statement_not_taken_over(mode: SearchPathMode, prefix: &str) {
    let db = database().await;
    let (tenancy, s) = tenancy_over(db.new_pool(1).unwrap(), mode, true, prefix, 2).await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, TAKE_OVER).await;
    admin(&db, TAKE_OVER_AND_PLANT).await;
    let tx_run = |t: Tenancy, s: SchemaName, sql: &'static str| async move {
        let mut scope = checkout(&t, &s).await;
        let tx = scope.transaction().await?;
        tx.execute(sql, &[]).await?;
        let stmt = tx.prepare(sql).await?;
        tx.execute(&stmt, &[]).await?;
        tx.commit().await
    };
    for _ in 0..2 {
        tx_run(tenancy.clone(), b.clone(), SECRET).await.unwrap();
    }
    let before = notes_with_body(&db, b, "secret").await;
    let took_over = tx_run(tenancy.clone(), a.clone(), FORGE_AND_PLANT).await;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(tx_run(tenancy.clone(), b.clone(), SECRET).await);
    }
    let ok = 2 * outcomes.iter().filter(|o| o.is_ok()).count() as i64;
    let (secret, forged) = forged_and_secret(&db, b, before).await;
    assert_eq!(
        (secret, forged),
        (ok, 0),
        "({mode:?}) tenant {a}'s SQL in its transaction ({took_over:?}) reached tenant {b}'s \
         transactions: b's returned {outcomes:?}: new secret rows {secret}, forged {forged}"
    );
}

/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_role_transaction_statement_not_taken_over_session_mode() {
    transaction_statement_not_taken_over(SearchPathMode::Session, "r5_ts").await;
}

/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_role_transaction_statement_not_taken_over_transaction_mode() {
    transaction_statement_not_taken_over(SearchPathMode::Transaction, "r5_tt").await;
}

/// SeaORM over the sqlx router (role mode, ONE connection): `execute` of `sql` on a fresh
/// SeaORM connection for `schema`.
async fn orm_runs(orm: &SeaOrmRouter, schema: &SchemaName, sql: &str) -> Result<(), String> {
    let db = orm
        .connection_for_tenant(&Tenant::new(schema.clone()))
        .await
        .map_err(|e| e.to_string())?;
    db.execute(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Role mode through SeaORM (sqlx's persistent named statements): b's write prepared on the
/// one connection, a's SQL replaces it and plants sqlx's next names, b writes again.
///
/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_role_statement_not_taken_over_seaorm() {
    let db = database().await;
    let (tenancy, s) = one_session_connection(&db, true, "r5_so", 2).await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, TAKE_OVER).await;
    admin(&db, TAKE_OVER_AND_PLANT).await;
    let orm = SeaOrmRouter::new(sqlx_over_one_connection(&db, &tenancy).await);
    orm_runs(&orm, a, "SELECT 1").await.unwrap();
    for _ in 0..2 {
        orm_runs(&orm, b, SECRET).await.unwrap();
    }
    let before = notes_with_body(&db, b, "secret").await;
    let took_over = orm_runs(&orm, a, FORGE_AND_PLANT).await;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(orm_runs(&orm, b, SECRET).await);
    }
    let ok = outcomes.iter().filter(|o| o.is_ok()).count() as i64;
    let (secret, forged) = forged_and_secret(&db, b, before).await;
    assert_eq!(
        (secret, forged),
        (ok, 0),
        "(SeaORM) tenant {a}'s SQL ({took_over:?}) put its text in place of tenant {b}'s \
         statements: b's writes returned {outcomes:?}: new secret rows {secret}, forged {forged}"
    );
}

/// The same against the core: a raw `router.pool().get()` between two checkouts of b.
///
/// HELD expected (round 4 tested the core's raw pool user with another forgery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_role_statement_taken_over_by_raw_pool_user_core() {
    let db = database().await;
    let (tenancy, s) = one_session_connection(&db, true, "r5_rc", 2).await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, TAKE_OVER).await;
    let door = Door::Core(tenancy.clone());
    door.runs(a, "SELECT 1").await.unwrap();
    for _ in 0..2 {
        door.runs(b, SECRET).await.unwrap();
    }
    let before = notes_with_body(&db, b, "secret").await;
    let took_over = tenancy
        .router()
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(FORGERY, &[])
        .await
        .map(|r| r.get::<_, i32>(0))
        .map_err(|e| e.to_string());
    let wrote = door.runs(b, SECRET).await;
    let (secret, forged) = forged_and_secret(&db, b, before).await;
    assert_eq!(
        (secret, forged),
        (i64::from(wrote.is_ok()), 0),
        "(core) a raw user of the pool between two checkouts of tenant {b} replaced its \
         statements ({took_over:?}); b's next write returned {wrote:?}: new secret rows \
         {secret}, forged rows in {b}: {forged}"
    );
}

// ------------------------------------------------------------ Guarantee 2 (read-only)

/// Read-only tenant through the core (session mode, ONE connection, a writer used the
/// connection last): its first checkout makes calls at once (`join!`): the unlocking
/// function and writes; then more writes and a `batch_execute` / `simple_query` that call the
/// function and write in one text. Nothing may be written.
///
/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_read_only_calls_of_one_scope_at_once_core() {
    let db = database().await;
    let (tenancy, s) = one_session_connection(&db, false, "r5_rj", 2).await;
    let (w, r) = (&s[0], &s[1]);
    admin(&db, UNLOCK).await;
    tenancy.set_status(r, TenantStatus::ReadOnly).await.unwrap();
    let door = Door::Core(tenancy.clone());
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        door.runs(w, "INSERT INTO notes (body) VALUES ('w')")
            .await
            .unwrap();
        let scope = checkout(&tenancy, r).await;
        let (u, w1, w2, u2, w3) = tokio::join!(
            scope.execute("SELECT public.unlock()", &[]),
            scope.execute(SECRET, &[]),
            scope.execute(SECRET, &[]),
            scope.query_one("SELECT public.unlock()", &[]),
            scope.execute(SECRET, &[]),
        );
        let later = scope.execute(SECRET, &[]).await;
        let batch = scope
            .batch_execute(&format!("SELECT public.unlock(); {SECRET}"))
            .await;
        let simple = scope
            .simple_query(&format!("SELECT public.unlock(); {SECRET}"))
            .await
            .map(|_| ());
        let after = scope.execute(SECRET, &[]).await;
        outcomes.push(format!(
            "{:?}",
            [
                u.map(|_| ()),
                w1.map(|_| ()),
                w2.map(|_| ()),
                u2.map(|_| ()),
                w3.map(|_| ()),
                later.map(|_| ()),
                batch,
                simple,
                after.map(|_| ())
            ]
            .map(|o| o.is_ok())
        ));
    }
    let secret = notes_with_body(&db, r, "secret").await;
    assert_eq!(
        secret, 0,
        "read-only tenant {r} wrote {secret} rows through calls of one scope at once \
         (ok flags per round: {outcomes:?})"
    );
}

/// Read-only tenant with a `statement_timeout` and an extra schema on its path (a shared
/// `ext` schema with a table), core, session mode, ONE connection: it calls the unlocking
/// function, then writes into its own table and the extra schema's, in the same scope, in
/// its next checkout, and inside a `TenantTransaction`.
///
/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_read_only_with_timeout_and_extra_schema_core() {
    let db = database().await;
    admin(
        &db,
        "CREATE SCHEMA ext; CREATE TABLE ext.log (body text); GRANT ALL ON SCHEMA ext TO PUBLIC; \
         GRANT ALL ON ext.log TO PUBLIC",
    )
    .await;
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .extra_schemas([schema("ext")])
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "r5_rt", 2).await;
    let (w, r) = (&s[0], &s[1]);
    admin(&db, UNLOCK).await;
    tenancy
        .set_statement_timeout(r, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    tenancy.set_status(r, TenantStatus::ReadOnly).await.unwrap();
    let door = Door::Core(tenancy.clone());
    door.runs(w, "INSERT INTO log VALUES ('w')").await.unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let mut scope = checkout(&tenancy, r).await;
        outcomes.push(
            scope
                .execute("SELECT public.unlock()", &[])
                .await
                .map(|_| ()),
        );
        outcomes.push(scope.execute(SECRET, &[]).await.map(|_| ()));
        outcomes.push(
            scope
                .execute("INSERT INTO log VALUES ('secret')", &[])
                .await
                .map(|_| ()),
        );
        outcomes.push(
            async {
                let tx = scope.transaction().await?;
                tx.execute("SELECT public.unlock()", &[]).await?;
                tx.execute("INSERT INTO log VALUES ('secret')", &[]).await?;
                tx.commit().await
            }
            .await,
        );
        outcomes.push(
            scope
                .execute("INSERT INTO log VALUES ('secret')", &[])
                .await
                .map(|_| ()),
        );
    }
    let secret = notes_with_body(&db, r, "secret").await;
    let logged: i64 = db
        .pool()
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM ext.log WHERE body = 'secret'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (secret, logged),
        (0, 0),
        "read-only tenant {r} (statement timeout, extra schema) wrote: notes {secret}, \
         ext.log {logged}; outcomes {:?}",
        outcomes
            .iter()
            .map(|o| o.as_ref().map_err(ToString::to_string))
            .collect::<Vec<_>>()
    );
}

// ------------------------------------------------------------ Guarantee 3 (isolation)

/// One connection (pool of ONE) shared by six tasks of three tenants, role mode (every change
/// of tenant drops the session's statements with `DEALLOCATE ALL`), each task 40 rounds of:
/// a write of its schema's name and a read of its marker, each under a timeout of 0–2 ms
/// (dropped at any point of the switch), then an un-timed read. Every read that answers must
/// be its own tenant's, and no tenant's notes may hold another's name.
async fn cancelled_switches_stay_isolated(mode: SearchPathMode, roles: bool, prefix: &str) {
    let db = database().await;
    let (tenancy, s) = tenancy_over(db.new_pool(1).unwrap(), mode, roles, prefix, 3).await;
    let label = format!("{mode:?}, roles {roles}");
    cancelled_switches_stay_isolated_through(Door::Core(tenancy), &db, &s, 40, &label).await;
}

/// Six tasks of the three tenants `s` through `door` (over ONE connection), `rounds` each:
/// a write under a timeout of 0–2 ms, a read under another, a read without; every read that
/// answers is its own tenant's, and no tenant holds another's writes.
async fn cancelled_switches_stay_isolated_through(
    door: Door,
    db: &tenant_schemas::testing::TestDatabase,
    s: &[SchemaName],
    rounds: u64,
    label: &str,
) {
    let mut tasks = Vec::new();
    for t in 0..6usize {
        let (door, me) = (door.clone(), s[t % 3].clone());
        tasks.push(tokio::spawn(async move {
            let mut wrong = Vec::new();
            for round in 0..rounds {
                let us = (round * 7919 + t as u64 * 104_729) % 2000;
                let insert = format!("INSERT INTO notes (body) VALUES ('{me}')");
                let _ =
                    tokio::time::timeout(Duration::from_micros(us), door.runs(&me, &insert)).await;
                if let Ok(Ok(seen)) =
                    tokio::time::timeout(Duration::from_micros((us * 3) % 2000), door.read(&me))
                        .await
                {
                    if seen != me.as_str() {
                        wrong.push(format!("{me} read {seen} (timed, round {round})"));
                    }
                }
                if let Ok(seen) = door.read(&me).await {
                    if seen != me.as_str() {
                        wrong.push(format!("{me} read {seen} (round {round})"));
                    }
                }
            }
            wrong
        }));
    }
    let mut wrong = Vec::new();
    for task in tasks {
        wrong.extend(task.await.unwrap());
    }
    let mut own = 0;
    for x in s {
        own += notes_with_body(db, x, x.as_str()).await;
        for y in s {
            if x != y {
                let n = notes_with_body(db, x, y.as_str()).await;
                if n > 0 {
                    wrong.push(format!("{x} holds {n} notes written by {y}"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "({label}) with checkouts cancelled mid-switch on one shared connection ({own} own \
         writes landed): {wrong:?}"
    );
}

/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_cancelled_switches_stay_isolated_session_roles() {
    cancelled_switches_stay_isolated(SearchPathMode::Session, true, "r5_cr").await;
}

/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_cancelled_switches_stay_isolated_session() {
    cancelled_switches_stay_isolated(SearchPathMode::Session, false, "r5_cs").await;
}

/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_cancelled_switches_stay_isolated_transaction_roles() {
    cancelled_switches_stay_isolated(SearchPathMode::Transaction, true, "r5_ct").await;
}

/// How the name of a held scope's schema is freed for a new tenant.
#[derive(Clone, Copy, Debug)]
enum Freed {
    /// The tenant is deleted, with its schema and role.
    Deleted,
    /// The tenant's schema is renamed.
    Renamed,
}

/// Role mode, core, session mode, ONE connection: a scope of tenant b is held while b's
/// schema name is `freed` and a new tenant is created under it; the held scope's next read
/// and write must not reach the new tenant's schema.
async fn held_scope_reaches_nothing_new(prefix: &str, freed: Freed) {
    let db = database().await;
    let (tenancy, s) = tenancy_over(
        db.new_pool(2).unwrap(),
        SearchPathMode::Session,
        true,
        prefix,
        2,
    )
    .await;
    let b = &s[1];
    let held = checkout(&tenancy, b).await;
    held.execute(SECRET, &[]).await.unwrap();
    match freed {
        Freed::Deleted => {
            tenancy.delete_tenant(b, DropSchema::Yes).await.unwrap();
        }
        Freed::Renamed => {
            tenancy
                .rename_schema(b, &schema(&format!("{prefix}_moved")))
                .await
                .unwrap();
        }
    }
    tenancy
        .create_tenant(NewTenant::new(b.clone()))
        .await
        .unwrap();
    tenancy
        .router()
        .connection_for_schema(b)
        .await
        .unwrap()
        .execute("INSERT INTO marker VALUES ('NEW')", &[])
        .await
        .unwrap();
    let read = held
        .query_one("SELECT schema_name FROM marker", &[])
        .await
        .map(|r| r.get::<_, String>(0))
        .map_err(|e| e.to_string());
    let wrote = held.execute(SECRET, &[]).await.map_err(|e| e.to_string());
    let secret = notes_with_body(&db, b, "secret").await;
    assert!(
        read.is_err() && secret == 0,
        "a scope of tenant {b}, held across its schema name {freed:?} and the creation of a \
         new tenant under it, read {read:?} and wrote {wrote:?} ({secret} secret rows in the \
         new tenant's schema)"
    );
}

/// [`held_scope_reaches_nothing_new`], the tenant deleted.
///
/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_role_scope_held_across_delete_and_recreate_reaches_nothing_new() {
    held_scope_reaches_nothing_new("r5_hd", Freed::Deleted).await;
}

/// [`held_scope_reaches_nothing_new`], the tenant's schema renamed.
///
/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_role_scope_held_across_rename_and_reuse_reaches_nothing_new() {
    held_scope_reaches_nothing_new("r5_hr", Freed::Renamed).await;
}

/// Role mode, sqlx session mode, ONE connection, 60 rounds: b writes (sqlx caches its
/// statement), a's forgery-and-plant runs under a timeout of 0–2 ms (its checkout dropped
/// anywhere: in its switch, between the switch and the `DEALLOCATE ALL` that follows it, in
/// the closing of sqlx's statements, or in its statement), then b writes under a timeout, then
/// freely. No forged row may land in b.
///
/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_role_statement_not_taken_over_with_cancelled_checkouts_sqlx() {
    let db = database().await;
    let (tenancy, s) = one_session_connection(&db, true, "r5_cx", 2).await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, TAKE_OVER).await;
    admin(&db, TAKE_OVER_AND_PLANT).await;
    let door = Door::Sqlx(sqlx_over_one_connection(&db, &tenancy).await);
    let (mut b_ok, mut unsure, mut failed) = (0i64, 0i64, 0i64);
    for round in 0..60u64 {
        if door.runs(b, SECRET).await.is_ok() {
            b_ok += 1;
        } else {
            failed += 1;
        }
        let _ = tokio::time::timeout(
            Duration::from_micros((round * 37) % 2000),
            door.runs(a, FORGE_AND_PLANT),
        )
        .await;
        match tokio::time::timeout(
            Duration::from_micros((round * 53) % 2000),
            door.runs(b, SECRET),
        )
        .await
        {
            Ok(Ok(())) => b_ok += 1,
            Ok(Err(_)) => failed += 1,
            Err(_) => unsure += 1,
        }
        if door.runs(b, SECRET).await.is_ok() {
            b_ok += 1;
        } else {
            failed += 1;
        }
    }
    let (secret, forged) = forged_and_secret(&db, b, 0).await;
    assert!(
        forged == 0 && secret >= b_ok && secret <= b_ok + unsure,
        "(sqlx) with cancelled checkouts tenant {a}'s forgery ran for {b}: forged rows \
         {forged}; secret rows {secret}, b's writes Ok {b_ok}, cancelled {unsure}, failed \
         {failed}"
    );
}

/// Read-only tenant through SeaORM: after the unlocking function on one handle, a
/// transaction on the same handle (`begin()`) and one from the router (`orm.begin_for`) write.
///
/// HELD expected (`BEGIN READ ONLY`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_read_only_seaorm_function_unlocks_then_writes_in_transactions() {
    let db = database().await;
    let (tenancy, s) = one_session_connection(&db, false, "r5_rb", 2).await;
    let r = &s[1];
    admin(&db, UNLOCK).await;
    tenancy.set_status(r, TenantStatus::ReadOnly).await.unwrap();
    let orm = SeaOrmRouter::new(sqlx_over_one_connection(&db, &tenancy).await);
    let mut conn = orm
        .connection_for_tenant(&Tenant::new(r.clone()))
        .await
        .unwrap();
    let unlocked = conn
        .query_one(Statement::from_string(
            DbBackend::Postgres,
            "SELECT public.unlock()",
        ))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let in_tx = async {
        let tx = conn.begin().await?;
        tx.execute(Statement::from_string(DbBackend::Postgres, SECRET))
            .await?;
        tx.commit().await
    }
    .await
    .map_err(|e| e.to_string());
    drop(conn);
    let routed = async {
        let tx = orm.begin_for(r).await.map_err(|e| e.to_string())?;
        tx.execute(Statement::from_string(
            DbBackend::Postgres,
            "SELECT public.unlock()",
        ))
        .await
        .map_err(|e| e.to_string())?;
        tx.execute(Statement::from_string(DbBackend::Postgres, SECRET))
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())
    }
    .await;
    let secret = notes_with_body(&db, r, "secret").await;
    assert_eq!(
        secret, 0,
        "(SeaORM) read-only tenant {r} wrote {secret} rows in a transaction after the unlocking \
         function ({unlocked:?}): on the handle {in_tx:?}, from the router {routed:?}"
    );
}

/// [`cancelled_switches_stay_isolated`] through sqlx (session mode, role mode, ONE
/// connection, so that every change of tenant carries `DEALLOCATE ALL` and the closing of
/// sqlx's statements): writes and reads under timeouts of 0–2 ms from six tasks of three
/// tenants; every read that answers is its own tenant's, no tenant holds another's writes.
///
/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_cancelled_switches_stay_isolated_sqlx_roles() {
    let db = database().await;
    let (tenancy, s) = one_session_connection(&db, true, "r5_cq", 3).await;
    let door = Door::Sqlx(sqlx_over_one_connection(&db, &tenancy).await);
    cancelled_switches_stay_isolated_through(door, &db, &s, 30, "sqlx, roles").await;
}

/// Read-only tenant through sqlx: after the unlocking function on its connection, the
/// router's transactions (`begin_for`, session mode) write.
///
/// HELD expected (`BEGIN READ ONLY`; a write on the raw `PgConnection` after such a function
/// is documented as not seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_read_only_sqlx_function_unlocks_then_router_transaction_writes() {
    let db = database().await;
    let (tenancy, s) = one_session_connection(&db, false, "r5_rs", 2).await;
    let r = &s[1];
    admin(&db, UNLOCK).await;
    tenancy.set_status(r, TenantStatus::ReadOnly).await.unwrap();
    let router = sqlx_over_one_connection(&db, &tenancy).await;
    let unlocked = {
        let mut conn = router.connection_for_schema(r).await.unwrap();
        sqlx::query("SELECT public.unlock()")
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        outcomes.push(
            async {
                let mut tx = router.begin_for(r).await.map_err(|e| e.to_string())?;
                sqlx::query("SELECT public.unlock()")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(SECRET)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())
            }
            .await,
        );
    }
    let secret = notes_with_body(&db, r, "secret").await;
    assert_eq!(
        secret, 0,
        "(sqlx) read-only tenant {r} wrote {secret} rows in the router's transactions after \
         the unlocking function ({unlocked:?}): {outcomes:?}"
    );
}

/// Role mode, sqlx in transaction mode behind a real PgBouncer 1.25 that keeps named
/// statements (`max_prepared_statements = 200`, one server connection), with the
/// documented `statement_cache_capacity(0)` but a careless persistent query (sqlx's default,
/// `persistent(true)`: a named `Parse`, which PgBouncer keeps on the server as
/// `PGBOUNCER_<n>` and hands to whoever parses the same text). b writes that way; a's SQL
/// replaces PgBouncer's statement on the server connection; b writes again. README: "In role
/// mode no statement prepared during another tenant's use of a connection runs for the next
/// one, through any door".
///
/// HELD: a's checkout itself sends `DEALLOCATE ALL` (the connection was b's), which PgBouncer
/// passes to the server, so a's function finds nothing to replace (`Ok(0)`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_role_persistent_sqlx_query_behind_pgbouncer_not_taken_over() {
    use tenant_schemas::testing::{TestCluster, TestPgBouncer};
    let db = database().await;
    let (tenancy, s) = one_session_connection(&db, true, "r5_pb", 2).await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, TAKE_OVER).await;
    let bouncer = TestPgBouncer::builder(TestCluster::shared().unwrap())
        .pool_size(1)
        .max_prepared_statements(200)
        .start()
        .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            tenant_schemas_sqlx::connect_options(&bouncer.config(db.name()))
                .statement_cache_capacity(0),
        )
        .await
        .unwrap();
    let router = tenant_schemas_sqlx::SqlxRouter::builder(pool)
        .mode(SearchPathMode::Transaction)
        .tenant_states(tenancy.tenant_states())
        .build();
    let write = |router: tenant_schemas_sqlx::SqlxRouter, s: SchemaName, sql: &'static str| async move {
        let mut tx = router.begin_for(&s).await.map_err(|e| e.to_string())?;
        sqlx::query(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())
    };
    for _ in 0..2 {
        write(router.clone(), b.clone(), SECRET).await.unwrap();
    }
    let before = notes_with_body(&db, b, "secret").await;
    let took_over = async {
        let mut tx = router.begin_for(a).await.map_err(|e| e.to_string())?;
        let n: i32 = sqlx::query_scalar(FORGERY)
            .persistent(false)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(n)
    }
    .await;
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        outcomes.push(write(router.clone(), b.clone(), SECRET).await);
    }
    let ok = outcomes.iter().filter(|o| o.is_ok()).count() as i64;
    let (secret, forged) = forged_and_secret(&db, b, before).await;
    assert_eq!(
        (secret, forged),
        (ok, 0),
        "(sqlx behind PgBouncer, persistent query) tenant {a}'s SQL ({took_over:?}) put its \
         text in place of the statement PgBouncer keeps for tenant {b}'s write: b's writes \
         returned {outcomes:?}: new secret rows {secret}, forged rows in {b}: {forged}"
    );
}

/// `public.take_over_catalog()`: puts in place of every statement on the session that reads
/// `pg_catalog.pg_type` or `pg_enum` (sqlx's own lookups of a result column's type) the same
/// text behind a data-modifying `WITH` that writes into `notes` (unqualified: the victim's
/// schema), with the same name and parameter types, so the victim gets the answer it expects.
const TAKE_OVER_CATALOG: &str =
    "CREATE FUNCTION public.take_over_catalog() RETURNS int LANGUAGE plpgsql AS $$ \
     DECLARE r record; n int := 0; BEGIN \
     FOR r IN SELECT name, statement, parameter_types FROM pg_catalog.pg_prepared_statements \
       WHERE (statement LIKE '%pg_catalog.pg_type%' OR statement LIKE '%pg_catalog.pg_enum%') \
         AND statement NOT LIKE '%take_over%' LOOP \
       EXECUTE format('DEALLOCATE %I', r.name); \
       EXECUTE format('PREPARE %I%s AS WITH w AS (INSERT INTO notes (body) VALUES \
         (''forged by a'')) %s', r.name, \
         CASE WHEN pg_catalog.cardinality(r.parameter_types) = 0 THEN '' \
         ELSE '(' || pg_catalog.array_to_string(r.parameter_types, ',') || ')' END, \
         r.statement); \
       n := n + 1; \
     END LOOP; RETURN n; END $$";

/// The core's door alone, role mode, ONE direct connection, `mode`: tenant b reads a value
/// of an enum type; tokio-postgres looks the type up with named statements it prepares once
/// per connection and keeps (`typeinfo`, `typeinfo_enum`); a's SQL puts a write in front of
/// them; b reads a value of another enum type.
async fn core_type_lookup_not_taken_over(mode: SearchPathMode, prefix: &str) {
    let db = database().await;
    admin(
        &db,
        "CREATE TYPE public.mood AS ENUM ('happy', 'sad'); \
         CREATE TYPE public.mood2 AS ENUM ('calm', 'busy')",
    )
    .await;
    admin(&db, TAKE_OVER_CATALOG).await;
    let (tenancy, s) = tenancy_over(db.new_pool(1).unwrap(), mode, true, prefix, 2).await;
    let (a, b) = (&s[0], &s[1]);
    let read = |t: Tenancy, s: SchemaName, sql: &'static str| async move {
        checkout(&t, &s)
            .await
            .query_one(sql, &[])
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let first = read(
        tenancy.clone(),
        b.clone(),
        "SELECT 'happy'::public.mood AS m",
    )
    .await;
    let took_over = Door::Core(tenancy.clone())
        .runs(a, "SELECT public.take_over_catalog()")
        .await;
    let second = read(
        tenancy.clone(),
        b.clone(),
        "SELECT 'calm'::public.mood2 AS m",
    )
    .await;
    let forged = notes_with_body(&db, b, "forged by a").await;
    assert_eq!(
        forged, 0,
        "(core, {mode:?}) tenant {a}'s SQL ({took_over:?}) replaced tokio-postgres's type \
         lookups on the connection: tenant {b}'s next read ({first:?}, then {second:?}) wrote \
         {forged} rows forged by {a} into {b}"
    );
}

/// HELD for isolation (b's switch drops a's statements). b's read then failed with "prepared
/// statement "s7" does not exist" before the fix of
/// `r5_role_core_type_lookup_survives_a_change_of_tenant`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_role_core_type_lookup_not_taken_over_session_mode() {
    core_type_lookup_not_taken_over(SearchPathMode::Session, "r5_ks").await;
}

/// Availability, no attacker: role mode, core, session mode, ONE connection. tokio-postgres
/// prepares its type lookups (`typeinfo`, `typeinfo_enum`) once per connection and keeps
/// them; role mode's `DEALLOCATE ALL` at every change of tenant drops them on the server.
/// Tenant b reads an enum, tenant a uses the connection, then b reads values of another
/// enum three times. README: "statements dropped where the library cannot see them … are
/// prepared again". Expect every read served.
///
/// Broke before the fix (availability, deterministic, 4/4 runs): "(core, role mode) after tenant r5_ka0 used
/// the connection, tenant r5_ka1's reads of an enum not seen before on it fail:
/// [Err("database error while preparing a statement (schema `r5_ka1`): prepared statement
/// "s7" does not exist (ERROR: 26000)"), … (three times)]". The switch's `DEALLOCATE ALL`
/// drops tokio-postgres's cached `typeinfo` statement, which the client kept using. Now the
/// switch that drops the statements makes the client forget its lookup statements too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_role_core_type_lookup_survives_a_change_of_tenant() {
    let db = database().await;
    admin(
        &db,
        "CREATE TYPE public.mood AS ENUM ('happy', 'sad'); \
         CREATE TYPE public.mood2 AS ENUM ('calm', 'busy')",
    )
    .await;
    let (tenancy, s) = one_session_connection(&db, true, "r5_ka", 2).await;
    let (a, b) = (&s[0], &s[1]);
    let read = |t: Tenancy, s: SchemaName, sql: &'static str| async move {
        checkout(&t, &s)
            .await
            .query_one(sql, &[])
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    read(
        tenancy.clone(),
        b.clone(),
        "SELECT 'happy'::public.mood AS m",
    )
    .await
    .unwrap();
    Door::Core(tenancy.clone())
        .runs(a, "SELECT 1")
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(
            read(
                tenancy.clone(),
                b.clone(),
                "SELECT 'calm'::public.mood2 AS m",
            )
            .await,
        );
    }
    assert!(
        outcomes.iter().all(Result::is_ok),
        "(core, role mode) after tenant {a} used the connection, tenant {b}'s reads of an enum \
         not seen before on it fail: {outcomes:?}"
    );
}
