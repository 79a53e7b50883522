//! Adversarial review of the prelude changes: transaction mode's `BEGIN`/switch in the
//! statement's own message with a pipelined `COMMIT`; session mode's writer after a read-only
//! tenant. A write refused behind its switch because the implicit transaction began
//! read-only is no longer run again (it ran twice what the statement did outside the
//! transaction); the connection is closed instead.

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{SchemaName, SearchPathMode, Tenancy, Tenant, TenantStatus};

use super::doors::{admin, checkout, one_connection_core, raw, writes};

/// `public.lock_and_write(body)`: takes a session-level advisory lock (not undone by a
/// rollback, allowed in a read-only transaction), then inserts into the caller's `notes`.
const LOCK_AND_WRITE: &str =
    "CREATE FUNCTION public.lock_and_write(b text) RETURNS text LANGUAGE plpgsql AS $$ \
     BEGIN PERFORM pg_catalog.pg_advisory_lock(4242); \
     INSERT INTO notes (body) VALUES (b); RETURN b; END $$";

const CALL: &str = "SELECT public.lock_and_write($1)";

/// How many times the session of `db` holds advisory lock 4242 (unlocked until it is not).
async fn advisory_holds(db: &tenant_schemas::ConnectionScope) -> usize {
    let mut holds = 0;
    while db
        .query_one("SELECT pg_catalog.pg_advisory_unlock(4242)", &[])
        .await
        .unwrap()
        .get::<_, bool>(0)
    {
        holds += 1;
        assert!(holds < 10);
    }
    holds
}

/// Broke before the fix (deterministic). Door: the core, session mode, pool of ONE connection. Tenant b (a writer) calls a
/// function once, with its statement cached and listed; tenant a (read-only) is served on the
/// same connection; then b calls the function once more. Its statement travels behind the
/// switch in one implicit transaction that began under a's read-only default: the function
/// takes its session-level advisory lock, its INSERT is refused (25006), the implicit
/// transaction rolls back — the lock stays — and `began_read_only` switches and runs the
/// statement AGAIN: the lock is taken twice for one call. b then unlocks once, as its code
/// says, and still holds the lock: another session (any tenant's) now waits on it for the
/// rest of the connection's life. Deterministic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_prelude_session_read_only_retry_runs_a_statement_twice() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "apr_lk").await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, LOCK_AND_WRITE).await;
    {
        let conn = checkout(&tenancy, b).await;
        conn.query_one(CALL, &[&"warm"]).await.unwrap();
        assert_eq!(
            advisory_holds(&conn).await,
            1,
            "warm-up: one call, one lock"
        );
    }
    tenancy.set_status(a, TenantStatus::ReadOnly).await.unwrap();
    {
        let conn = checkout(&tenancy, a).await;
        let marker: String = conn
            .query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(marker, a.as_str());
    }
    let conn = checkout(&tenancy, b).await;
    let ran = conn.query_one(CALL, &[&"once"]).await;
    assert!(ran.is_ok(), "{ran:?}");
    assert_eq!(notes_with_body(&db, b, "once").await, 1);
    let holds = advisory_holds(&conn).await;
    assert_eq!(
        holds, 1,
        "one call of tenant {b}'s statement took the session-level advisory lock {holds} \
         times: the statement ran twice (its first run refused with 25006 behind the switch, \
         its side effect outside the transaction kept)"
    );
}

/// Door: the core, session mode, pool of ONE connection. Tenant a's write is cached and
/// listed while it is active; a is made read-only; writer b runs its cached write (its
/// implicit transaction began read-write, the default `off`); then a's cached write and a
/// function that writes: both must be refused and nothing lands in a.
/// HELD (deterministic): a read-only tenant's switch is never a prelude; it answers first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_prelude_session_read_only_tenant_after_a_writer() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "apr_ro").await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, LOCK_AND_WRITE).await;
    const W: &str = "INSERT INTO notes (body) VALUES ($1)";
    writes(&tenancy, a, "warm").await;
    writes(&tenancy, b, "warm").await;
    tenancy.set_status(a, TenantStatus::ReadOnly).await.unwrap();
    for round in 0..3 {
        writes(&tenancy, b, "b").await;
        let body = format!("ro-{round}");
        let wrote = checkout(&tenancy, a).await.execute(W, &[&body]).await;
        assert!(wrote.is_err(), "read-only tenant {a} wrote: {wrote:?}");
        writes(&tenancy, b, "b").await;
        let called = checkout(&tenancy, a).await.query_one(CALL, &[&body]).await;
        assert!(
            called.is_err(),
            "read-only tenant {a} wrote by a function: {called:?}"
        );
        assert_eq!(notes_with_body(&db, a, &body).await, 0);
    }
}

/// Inconsistent before the fix (deterministic; not the path guarantee). Door: the core, transaction mode,
/// pool of ONE connection. The same careless call twice:
/// `query_one` on an `INSERT … RETURNING` of two rows (the driver refuses the row count). The
/// first time (parameter types not learned) the library waits for `BEGIN`, the body fails
/// and it sends `ROLLBACK`: nothing is written. The second time (types learned) the
/// statement runs behind the prelude with `COMMIT` pipelined: the same error is returned,
/// and both rows are committed. Not the path guarantee, a consistency one: the same call's
/// effect depends on whether the text was seen before (session mode commits, as its
/// comments say). Deterministic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_prelude_transaction_row_count_error_commits_only_once_learned() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Transaction, false, "apr_rc").await;
    let b = &s[1];
    const TWO: &str = "INSERT INTO notes (body) VALUES ($1), ($1) RETURNING body";
    let first = checkout(&tenancy, b)
        .await
        .query_one(TWO, &[&"first"])
        .await;
    let second = checkout(&tenancy, b)
        .await
        .query_one(TWO, &[&"second"])
        .await;
    assert!(first.is_err() && second.is_err(), "{first:?} {second:?}");
    let (f, sc) = (
        notes_with_body(&db, b, "first").await,
        notes_with_body(&db, b, "second").await,
    );
    assert_eq!(
        (f, sc),
        (f, f),
        "the same failing query_one committed {f} rows the first time (types not learned) and \
         {sc} the second (behind the prelude, COMMIT pipelined)"
    );
}

/// A raw user of the very pool the door uses (as in `adversary_switch_failed.rs`) (`router.pool().get()`) begins a transaction,
/// writes into tenant a's schema and gives the connection back with the transaction open
/// (deadpool's `Fast` recycling only asks whether it is closed).
async fn leave_open_transaction(tenancy: &Tenancy, a: &SchemaName, body: &str) {
    let raw = tenancy.router().pool().get().await.unwrap();
    raw.batch_execute(&format!(
        "BEGIN READ WRITE; INSERT INTO {}.notes (body) VALUES ('{body}')",
        a.quoted()
    ))
    .await
    .unwrap();
}

/// The open-transaction scenario in `mode`: a raw pool user leaves an open transaction (with
/// a write into a) on the one connection; read-only tenant b calls a function that writes
/// (the SQL reader cannot see the write; only the server's read-only transaction refuses
/// it); writer a runs its `transaction()` with a write and commits. Neither b's write nor
/// the raw user's uncommitted one may be committed.
async fn open_transaction_left(mode: SearchPathMode, prefix: &str) {
    let (db, tenancy, s) = one_connection_core(mode, false, prefix).await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, LOCK_AND_WRITE).await;
    const W: &str = "INSERT INTO notes (body) VALUES ($1)";
    checkout(&tenancy, b)
        .await
        .query_one(CALL, &[&"warm"])
        .await
        .unwrap();
    writes(&tenancy, a, "warm").await;
    tenancy.set_status(b, TenantStatus::ReadOnly).await.unwrap();
    let refused = checkout(&tenancy, b)
        .await
        .query_one(CALL, &[&"ro-alone"])
        .await;
    assert!(
        refused.is_err(),
        "without the leftover, read-only {b} wrote: {refused:?}"
    );
    leave_open_transaction(&tenancy, a, "raw").await;
    let ro = checkout(&tenancy, b).await.query_one(CALL, &[&"ro"]).await;
    let mut conn = checkout(&tenancy, a).await;
    let tx = conn.transaction().await.unwrap();
    tx.execute(W, &[&"tx"]).await.unwrap();
    let committed = tx.commit().await;
    drop(conn);
    let (ro_rows, raw_rows, tx_rows) = (
        notes_with_body(&db, b, "ro").await,
        notes_with_body(&db, a, "raw").await,
        notes_with_body(&db, a, "tx").await,
    );
    assert_eq!(
        (ro_rows, raw_rows),
        (0, 0),
        "after a raw pool user left `BEGIN READ WRITE; INSERT INTO {a}.notes …` open on the connection: \
         read-only tenant {b}'s function call returned {ro:?} and {ro_rows} of its rows were \
         committed; {raw_rows} of the raw user's uncommitted rows were committed by tenant \
         checkouts (a's own transaction: {committed:?}, {tx_rows} rows)"
    );
}

/// HELD (deterministic). Door: the core, transaction mode, pool of ONE connection; the
/// leaver a raw user of that pool who leaves `BEGIN READ WRITE; INSERT …` open. Read-only b's
/// function call is refused (25006) even inside the raw user's transaction, and its failure
/// aborts that transaction, which the pipelined `COMMIT` rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_prelude_transaction_read_only_after_open_transaction_left_by_raw_pool_user() {
    open_transaction_left(SearchPathMode::Transaction, "apr_ot").await;
}

/// `public.hijack(replacement)`: replaces, on the session, every named prepared statement
/// (protocol-level) whose text inserts into `notes` by `replacement` under the same name and
/// parameter type (`text`) (prepared statements outlive transactions; `pg_prepared_statements` shows
/// the session's names and texts to any SQL on it).
const HIJACK: &str =
    "CREATE FUNCTION public.hijack(replacement text) RETURNS int LANGUAGE plpgsql AS $$ \
     DECLARE r record; n int := 0; BEGIN \
     FOR r IN SELECT name FROM pg_catalog.pg_prepared_statements \
       WHERE statement LIKE '%INSERT INTO notes%' AND NOT from_sql LOOP \
       EXECUTE format('DEALLOCATE %I', r.name); \
       EXECUTE format('PREPARE %I(text) AS %s', r.name, replacement); \
       n := n + 1; \
     END LOOP; RETURN n; END $$";

/// HELD (deterministic): `permission denied for schema a` (a's role cannot open its schema
/// to others: the GRANTs grant nothing). Door: the core, session mode, ROLE mode, pool of ONE
/// connection. As above, but tenant a's
/// function first opens its own `notes` to everyone (`GRANT USAGE ON SCHEMA a TO PUBLIC;
/// GRANT INSERT ON a.notes TO PUBLIC`, if a's role may) and replaces b's cached INSERT with
/// one into `a.notes`: under b's role, b's secret is then written into a's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_prelude_session_role_mode_named_statement_exfiltrates() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .tenant_roles(tenant_schemas::TenantRoles::new())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "apr_hx", 2).await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, HIJACK).await;
    admin(
        &db,
        "CREATE FUNCTION public.open_up(s text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN \
         EXECUTE format('GRANT USAGE ON SCHEMA %I TO PUBLIC', s); \
         EXECUTE format('GRANT INSERT ON %I.notes TO PUBLIC', s); \
         EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO PUBLIC', s); \
         RETURN 1; END $$",
    )
    .await;
    const W: &str = "INSERT INTO notes (body) VALUES ($1)";
    writes(&tenancy, b, "warm").await;
    let opened = checkout(&tenancy, a)
        .await
        .query_one("SELECT public.open_up($1)", &[&a.as_str()])
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let replacement = format!("INSERT INTO {}.notes (body) VALUES ($1)", a.quoted());
    let replaced = checkout(&tenancy, a)
        .await
        .query_one("SELECT public.hijack($1)", &[&replacement])
        .await
        .map(|r| r.get::<_, i32>(0))
        .map_err(|e| e.to_string());
    let wrote = checkout(&tenancy, b).await.execute(W, &[&"secret"]).await;
    let in_a = notes_with_body(&db, a, "secret").await;
    assert_eq!(
        in_a, 0,
        "role mode: tenant {a} opened its notes ({opened:?}) and replaced {replaced:?} named \
         statement(s); tenant {b}'s INSERT of its secret returned {wrote:?} and wrote {in_a} \
         row(s) into {a}'s schema, under {b}'s role"
    );
}

/// HELD (deterministic). Door: `tenant-schemas-sqlx`, session mode, pool of ONE direct connection, with `tenancy`'s
/// states. The open-transaction scenario of the core's tests: a raw user of the router's pool
/// leaves `BEGIN READ WRITE; INSERT INTO a.notes …` open; read-only b calls a function that
/// writes; writer a's transaction (sqlx's `begin`) commits. Neither b's row nor the raw one
/// may be committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_prelude_sqlx_session_read_only_after_open_transaction_left_by_raw_pool_user() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "apr_xs").await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, LOCK_AND_WRITE).await;
    let router = super::doors::sqlx_over_one_connection(&db, &tenancy).await;
    tenancy.set_status(b, TenantStatus::ReadOnly).await.unwrap();
    {
        let mut raw = router.pool().acquire().await.unwrap();
        sqlx::raw_sql(&format!(
            "BEGIN READ WRITE; INSERT INTO {}.notes (body) VALUES ('raw')",
            a.quoted()
        ))
        .execute(&mut *raw)
        .await
        .unwrap();
    }
    let ro = async {
        let mut conn = router
            .connection_for_schema(b)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query("SELECT public.lock_and_write($1)")
            .bind("ro")
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    let committed = async {
        let mut conn = router
            .connection_for_schema(a)
            .await
            .map_err(|e| e.to_string())?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query("INSERT INTO notes (body) VALUES ('tx')")
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())
    }
    .await;
    let (ro_rows, raw_rows) = (
        notes_with_body(&db, b, "ro").await,
        notes_with_body(&db, a, "raw").await,
    );
    assert_eq!(
        (ro_rows, raw_rows),
        (0, 0),
        "sqlx, after a raw pool user left an open transaction: read-only {b}'s function call \
         returned {ro:?} ({ro_rows} rows committed); the raw user's rows committed: {raw_rows} \
         (a's transaction: {committed:?})"
    );
}

/// HELD (deterministic). Door: the core, session mode, pool of ONE connection. Tenant a writes (the connection on
/// a's path); a raw pool user leaves a bare `BEGIN READ WRITE` open; tenant b writes (its
/// switch, `SET search_path` inside that transaction, is remembered as done); b opens a
/// `transaction()` (its `BEGIN` only warns) and rolls it back — ending the raw user's
/// transaction, and with it b's switch: the session's path is a's again. b's next write, on
/// a connection remembered on b's path, must still land in b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_prelude_session_switch_undone_by_rollback_of_a_left_transaction() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "apr_rb").await;
    let (a, b) = (&s[0], &s[1]);
    const W: &str = "INSERT INTO notes (body) VALUES ($1)";
    writes(&tenancy, b, "warm").await;
    writes(&tenancy, a, "warm").await;
    raw(&tenancy, "BEGIN READ WRITE").await;
    let first = checkout(&tenancy, b).await.execute(W, &[&"b1"]).await;
    let rolled = async {
        let mut conn = checkout(&tenancy, b).await;
        let tx = conn.transaction().await?;
        tx.rollback().await
    }
    .await;
    let mut misplaced = Vec::new();
    for round in 0..3 {
        let body = format!("b2-{round}");
        let wrote = checkout(&tenancy, b).await.execute(W, &[&body]).await;
        if notes_with_body(&db, a, &body).await > 0 {
            misplaced.push((round, wrote));
        }
    }
    assert!(
        misplaced.is_empty(),
        "tenant {b}'s writes landed in tenant {a}'s schema (round, returned): {misplaced:?} \
         (b's first write: {first:?}; b's transaction rolled back: {rolled:?})"
    );
}

/// HELD (deterministic). Door: the core, session mode, `reset_settings(true)`, pool of ONE
/// connection. Tenant a's function leaves `app.token` on the session; tenant b's schema is dropped behind the
/// library's back (b never seen: its switch carries the existence check); b's checkout
/// fails as a missing schema — a failure that does not close the connection — and its
/// `RESET ALL` rolls back with the switch. Tenant c, next on the connection, must not find
/// a's setting (and must be served on its own path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_prelude_session_missing_schema_switch_keeps_left_settings() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, true, "apr_ms").await;
    let c = marked_tenants(&tenancy, "apr_msc", 1).await.remove(0);
    let (a, b) = (&s[0], &s[1]);
    checkout(&tenancy, &c)
        .await
        .query("SELECT 1", &[])
        .await
        .unwrap();
    checkout(&tenancy, a)
        .await
        .query_one(
            "SELECT pg_catalog.set_config('app.token', 'a-secret', false)",
            &[],
        )
        .await
        .unwrap();
    admin(&db, &format!("DROP SCHEMA {} CASCADE", b.quoted())).await;
    let missing = async {
        let conn = tenancy
            .router()
            .connection_for_tenant(&Tenant::new(b.clone()))
            .await?;
        conn.query("SELECT schema_name FROM marker", &[]).await
    }
    .await;
    assert!(
        missing.is_err(),
        "tenant {b}'s dropped schema served: {missing:?}"
    );
    let conn = checkout(&tenancy, &c).await;
    let row = conn
        .query_one(
            "SELECT coalesce(current_setting('app.token', true), ''), \
             (SELECT schema_name FROM marker)",
            &[],
        )
        .await
        .unwrap();
    let (token, marker): (String, String) = (row.get(0), row.get(1));
    assert_eq!(
        (token.as_str(), marker.as_str()),
        ("", c.as_str()),
        "after tenant {b}'s switch failed ({missing:?}), tenant {c} found tenant {a}'s setting"
    );
}

/// Broke before the fix (deterministic; last clause of the guarantee, and liveness: all 4 writes refused,
/// each reported as `TenantReadOnly` for an active tenant). Door: the core, session mode, pool
/// of ONE connection, in a process that never served a read-only tenant. A raw user of the pool leaves `default_transaction_read_only = on` on
/// the session. Writer b's cached INSERT travels behind its switch; the implicit transaction
/// begins read-only and the write is refused (25006) — `began_read_only` does not apply (no
/// read-only session seen), so there is no retry, and the connection is handed to the next
/// checkout with that default still on. Every later checkout's cached write fails the same
/// way: the connection is never given a state the library chose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_prelude_session_read_only_default_left_by_raw_pool_user() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "apr_rd").await;
    let (a, b) = (&s[0], &s[1]);
    const W: &str = "INSERT INTO notes (body) VALUES ($1)";
    writes(&tenancy, b, "warm").await;
    writes(&tenancy, a, "warm").await;
    raw(&tenancy, "SET default_transaction_read_only = on").await;
    let mut outcomes = Vec::new();
    for round in 0..4 {
        let tenant = if round % 2 == 0 { b } else { a };
        let wrote = checkout(&tenancy, tenant)
            .await
            .execute(W, &[&format!("w-{round}")])
            .await
            .map_err(|e| e.to_string());
        outcomes.push(wrote);
    }
    assert!(
        outcomes[1..].iter().all(Result::is_ok),
        "a read-only default a raw pool user left keeps failing every writer's cached \
         statement (the connection keeps being handed on in that state): {outcomes:#?}"
    );
    assert_eq!(
        notes_with_body(&db, b, "w-0").await,
        i64::from(outcomes[0].is_ok())
    );
}

/// Broke before the fix (deterministic; as above, through a tenant's own door, `reset_settings(true)`
/// notwithstanding). Door: the core, session mode, `reset_settings(true)`, pool of ONE
/// connection, in a process that never served a read-only tenant. Active tenant a calls a function that leaves
/// `default_transaction_read_only = on` on the session (`set_config(…, false)`, invisible to
/// the SQL reader); the next writers' cached statements travel behind switches whose
/// `RESET ALL` comes too late (the implicit transaction already began read-only), and no
/// `began_read_only` retry applies. Expect the writers after the first to be served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_prelude_session_read_only_default_left_by_a_function() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, true, "apr_rf").await;
    let (a, b) = (&s[0], &s[1]);
    admin(
        &db,
        "CREATE FUNCTION public.leave_ro() RETURNS text LANGUAGE sql AS \
         $$ SELECT pg_catalog.set_config('default_transaction_read_only', 'on', false) $$",
    )
    .await;
    const W: &str = "INSERT INTO notes (body) VALUES ($1)";
    writes(&tenancy, b, "warm").await;
    writes(&tenancy, a, "warm").await;
    checkout(&tenancy, a)
        .await
        .query_one("SELECT public.leave_ro()", &[])
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for round in 0..4 {
        let tenant = if round % 2 == 0 { b } else { a };
        let wrote = checkout(&tenancy, tenant)
            .await
            .execute(W, &[&format!("w-{round}")])
            .await
            .map_err(|e| e.to_string());
        outcomes.push(wrote);
    }
    assert!(
        outcomes[1..].iter().all(Result::is_ok),
        "a read-only default a tenant's function left keeps failing every writer's cached \
         statement, reported as the (active) tenant being read-only: {outcomes:#?}"
    );
}

/// Broke before the fix (deterministic). Door: the core, session mode, pool of ONE connection; the same
/// raw pool user. Read-only b's switch (`SET default_transaction_read_only = on …`) runs
/// inside the raw user's open read-write transaction and changes nothing about it; b's
/// function writes; writer a's `transaction()` (its `BEGIN` only warns) commits b's row and
/// the raw user's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_prelude_session_read_only_after_open_transaction_left_by_raw_pool_user() {
    open_transaction_left(SearchPathMode::Session, "apr_os").await;
}

/// A writer's plain statement after the raw pool user left `BEGIN READ WRITE; INSERT …` open:
/// whatever the call returns, the raw user's row must not be committed, and a write that
/// returned `Ok` must be committed once the scope is given back.
async fn writer_after_open_transaction(mode: SearchPathMode, prefix: &str) {
    let (db, tenancy, s) = one_connection_core(mode, false, prefix).await;
    let (a, b) = (&s[0], &s[1]);
    const W: &str = "INSERT INTO notes (body) VALUES ($1)";
    writes(&tenancy, b, "warm").await;
    writes(&tenancy, a, "warm").await;
    leave_open_transaction(&tenancy, a, "raw").await;
    let wrote = checkout(&tenancy, b).await.execute(W, &[&"rw"]).await;
    let (raw_rows, rw_rows) = (
        notes_with_body(&db, a, "raw").await,
        notes_with_body(&db, b, "rw").await,
    );
    assert_eq!(
        (raw_rows, rw_rows),
        (0, i64::from(wrote.is_ok())),
        "after a raw pool user left `BEGIN READ WRITE; INSERT INTO {a}.notes …` open: tenant \
         {b}'s `execute` returned {wrote:?}; the raw user's uncommitted rows committed: \
         {raw_rows}; b's rows committed: {rw_rows}"
    );
}

/// Broke before the fix (deterministic). Door: the core, transaction mode, pool of ONE connection; the
/// leaver a raw user of that pool. Tenant b's prelude `BEGIN` only warns ("there is already a
/// transaction in progress"): b's statement runs in the raw user's transaction, not one the
/// library opened, and the pipelined `COMMIT` commits the raw user's write into a with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_prelude_transaction_writer_after_open_transaction_left_by_raw_pool_user() {
    writer_after_open_transaction(SearchPathMode::Transaction, "apr_wt").await;
}

/// Broke before the fix (deterministic). Door: the core, session mode, pool of ONE connection; the same
/// raw pool user. b's `execute` runs inside the raw user's open transaction and returns
/// `Ok(1)`; the scope is given back and the row is not committed (it is lost, or committed
/// by whoever's `COMMIT` comes next, with the raw user's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversary_prelude_session_writer_after_open_transaction_left_by_raw_pool_user() {
    writer_after_open_transaction(SearchPathMode::Session, "apr_ws").await;
}
