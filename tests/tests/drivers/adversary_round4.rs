//! Round 4 of the red team: role mode's "no statement prepared while another tenant's
//! checkout used a connection runs for the next tenant", and session mode's read-only
//! tenants once writers go behind their switch again on connections "known writable".
//! Each test asserts what the guarantee promises: it fails when the guarantee breaks.

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{
    SchemaName, SchemaRouter, SearchPathMode, Tenancy, TenantRoles, TenantStatus,
};

use super::adversary_statements::{FORGERY, SECRET, TAKE_OVER};
use super::doors::{admin, checkout, raw, sqlx_over_one_connection, Door};

/// A function that leaves the session's transactions writable (`set_config(…, false)` in a
/// body the SQL reader cannot see).
const UNLOCK: &str = "CREATE FUNCTION public.unlock() RETURNS text LANGUAGE sql AS \
     $$ SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false) $$";

/// Tenants `<prefix>0..2` over ONE direct connection to `db`, session mode, in role mode
/// when `roles`.
async fn role_tenancy(db: &TestDatabase, roles: bool, prefix: &str) -> (Tenancy, Vec<SchemaName>) {
    role_tenancy_reset(db, roles, false, prefix).await
}

/// [`role_tenancy`] with `reset_settings(reset)`.
async fn role_tenancy_reset(
    db: &TestDatabase,
    roles: bool,
    reset: bool,
    prefix: &str,
) -> (Tenancy, Vec<SchemaName>) {
    let mut builder = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .reset_settings(reset)
        .search_path_mode(SearchPathMode::Session);
    if roles {
        builder = builder.tenant_roles(TenantRoles::new());
    }
    let tenancy = builder.build().await.unwrap();
    let s = marked_tenants(&tenancy, prefix, 2).await;
    (tenancy, s)
}

/// (new `secret` rows in `b` since `before`, rows `forged by a` in `b`).
pub(super) async fn forged_and_secret(
    db: &TestDatabase,
    b: &SchemaName,
    before: i64,
) -> (i64, i64) {
    (
        notes_with_body(db, b, "secret").await - before,
        notes_with_body(db, b, "forged by a").await,
    )
}

// ---------------------------------------------------------------- Guarantee 1 (role mode)

/// Two routers over ONE pool (one connection): the role-mode tenancy's, and a plain
/// `SchemaRouter::new` over the same pool (no roles). Tenant a's checkout through the plain
/// router replaces b's cached write; b's next write through the role-mode router binds it.
///
/// Broke before the fix (deterministic): "tenant r4_rr0's SQL (through a router without roles on the same pool) put its text in place of role-mode tenant r4_rr1's prepared write (Ok(2)); b's write returned Ok(()): new secret rows 0, forged rows in r4_rr1: 1". A router without roles took no ownership (`own_statements` was called in role mode only), so b's next checkout trusted the connection; every router records it now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_role_statement_taken_over_through_a_router_without_roles_on_the_same_pool() {
    let db = database().await;
    let (tenancy, s) = role_tenancy(&db, true, "r4_rr").await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, TAKE_OVER).await;
    let plain = SchemaRouter::new(tenancy.router().pool().clone());
    let door = Door::Core(tenancy.clone());
    door.runs(a, "SELECT 1").await.unwrap();
    for _ in 0..2 {
        door.runs(b, SECRET).await.unwrap();
    }
    let before = notes_with_body(&db, b, "secret").await;
    let took_over = plain
        .connection_for_schema(a)
        .await
        .unwrap()
        .query_one(FORGERY, &[])
        .await
        .map(|r| r.get::<_, i32>(0));
    let wrote = door.runs(b, SECRET).await;
    let (secret, forged) = forged_and_secret(&db, b, before).await;
    assert_eq!(
        (secret, forged),
        (i64::from(wrote.is_ok()), 0),
        "tenant {a}'s SQL (through a router without roles on the same pool) put its text in \
         place of role-mode tenant {b}'s prepared write ({took_over:?}); b's write returned \
         {wrote:?}: new secret rows {secret}, forged rows in {b}: {forged}"
    );
}

/// The same tenant b twice in a row, a raw user of the pool in between (the application's
/// `router.pool().get()`, which runs under b's role as the last checkout left it) calling the
/// helper with a's forgery: b's second checkout is on path, no switch, no `DEALLOCATE ALL`.
///
/// Broke before the fix (deterministic): "a raw pool user's SQL put a's text in place of r4_rw1's prepared write; b's write returned Ok(()): new secret rows 0, forged rows in r4_rw1: 1". Fixed: a checkout whose path memory finds the connection used by someone else since also forgets who owns its statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_role_statement_taken_over_by_raw_pool_use_between_two_checkouts_of_one_tenant() {
    let db = database().await;
    let (tenancy, s) = role_tenancy(&db, true, "r4_rw").await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, TAKE_OVER).await;
    let door = Door::Core(tenancy.clone());
    door.runs(a, "SELECT 1").await.unwrap();
    for _ in 0..2 {
        door.runs(b, SECRET).await.unwrap();
    }
    let before = notes_with_body(&db, b, "secret").await;
    raw(&tenancy, FORGERY).await;
    let wrote = door.runs(b, SECRET).await;
    let (secret, forged) = forged_and_secret(&db, b, before).await;
    assert_eq!(
        (secret, forged),
        (i64::from(wrote.is_ok()), 0),
        "a raw pool user's SQL put a's text in place of {b}'s prepared write; b's write \
         returned {wrote:?}: new secret rows {secret}, forged rows in {b}: {forged}"
    );
}

/// The statements' owner is remembered by schema name, not by tenant (role): tenant b, on
/// its way out, replaces its own cached write on the one pooled connection with a forgery
/// (`take_over`), then is deleted with its schema and role; a NEW tenant is created under the
/// same schema name (a new customer, its own role). Its first write binds the name the old
/// tenant's SQL filled: no `DEALLOCATE ALL`, since "b" switched the connection last.
async fn statement_survives_schema_reuse(roles: bool, prefix: &str) {
    let db = database().await;
    let (tenancy, s) = role_tenancy(&db, roles, prefix).await;
    let door = Door::Core(tenancy.clone());
    reused_schema_name_runs_nothing_old(&door, &db, &tenancy, &s[1], "core").await;
}

/// The scenario of [`statement_survives_schema_reuse`] through `door` (`label` names it).
async fn reused_schema_name_runs_nothing_old(
    door: &Door,
    db: &TestDatabase,
    tenancy: &Tenancy,
    b: &SchemaName,
    label: &str,
) {
    admin(db, TAKE_OVER).await;
    for _ in 0..2 {
        door.runs(b, SECRET).await.unwrap();
    }
    let took_over = door.runs(b, FORGERY).await;
    tenancy
        .delete_tenant(b, tenant_schemas::DropSchema::Yes)
        .await
        .unwrap();
    tenancy
        .create_tenant(tenant_schemas::NewTenant::new(b.clone()))
        .await
        .unwrap();
    let wrote = door.runs(b, SECRET).await;
    let (secret, forged) = forged_and_secret(db, b, 0).await;
    assert_eq!(
        (secret, forged),
        (i64::from(wrote.is_ok()), 0),
        "({label}) the deleted tenant {b}'s SQL ({took_over:?}) put its text in place of a \
         statement the NEW tenant of that schema name bound: its write returned {wrote:?}: \
         secret rows {secret}, rows forged by the old tenant in the new one's schema: {forged}"
    );
}

///
/// Broke once before the fix, held in later runs (not deterministic): the one connection is usually replaced during `delete_tenant`/`create_tenant` (its backend pid changes), which drops the forgery; when it survives: "the deleted tenant r4_dr1's SQL (Ok(())) put its text in place of a statement the NEW tenant of that schema name bound: its write returned Ok(()): secret rows 0, rows forged by the old tenant in the new one's schema: 1". Deterministic version: `r4_role_statement_survives_schema_reuse_by_another_instance`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_role_statement_survives_delete_and_recreate_of_schema_name() {
    statement_survives_schema_reuse(true, "r4_dr").await;
}

// ------------------------------------------------------- Guarantee 2 (read-only tenants)

/// Read-only tenant b calls a function that sets the session's read-only default off (core,
/// session mode, one connection), then writes: in the same scope (`same_scope`), or in its
/// next checkout, which lands on the same connection remembered on b's path.
async fn read_only_unlocks_then_writes(roles: bool, same_scope: bool, prefix: &str) {
    read_only_unlocks_then_writes_reset(roles, false, same_scope, prefix).await;
}

async fn read_only_unlocks_then_writes_reset(
    roles: bool,
    reset: bool,
    same_scope: bool,
    prefix: &str,
) {
    let db = database().await;
    let (tenancy, s) = role_tenancy_reset(&db, roles, reset, prefix).await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, UNLOCK).await;
    let door = Door::Core(tenancy.clone());
    door.runs(a, SECRET).await.unwrap();
    door.runs(b, SECRET).await.unwrap();
    tenancy.set_status(b, TenantStatus::ReadOnly).await.unwrap();
    let before = notes_with_body(&db, b, "secret").await;
    let scope = checkout(&tenancy, b).await;
    let unlocked = scope
        .query_one("SELECT public.unlock()", &[])
        .await
        .map(|_| ());
    let wrote = if same_scope {
        scope.execute(SECRET, &[]).await.map(|_| ())
    } else {
        drop(scope);
        checkout(&tenancy, b)
            .await
            .execute(SECRET, &[])
            .await
            .map(|_| ())
    };
    let secret = notes_with_body(&db, b, "secret").await - before;
    assert_eq!(
        secret, 0,
        "read-only tenant {b} wrote {secret} rows after calling a function that set \
         default_transaction_read_only off ({unlocked:?}); its write returned {wrote:?}"
    );
}

///
/// Broke before the fix (deterministic): "read-only tenant r4_us1 wrote 1 rows after calling a function that set default_transaction_read_only off (Ok(())); its write returned Ok(())".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_read_only_tenant_unlocks_session_by_function_then_writes_same_scope() {
    read_only_unlocks_then_writes(false, true, "r4_us").await;
}

///
/// Broke before the fix (deterministic): "read-only tenant r4_un1 wrote 1 rows after calling a function that set default_transaction_read_only off (Ok(())); its write returned Ok(())" (the next checkout is on path: no switch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_read_only_tenant_unlocks_session_by_function_then_writes_next_checkout() {
    read_only_unlocks_then_writes(false, false, "r4_un").await;
}

///
/// Broke before the fix (deterministic): "read-only tenant r4_ur1 wrote 1 rows after calling a function that set default_transaction_read_only off (Ok(())); its write returned Ok(())".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_read_only_tenant_unlocks_session_by_function_then_writes_same_scope_roles() {
    read_only_unlocks_then_writes(true, true, "r4_ur").await;
}

///
/// Broke before the fix (deterministic): "read-only tenant r4_uq1 wrote 1 rows after calling a function that set default_transaction_read_only off (Ok(())); its write returned Ok(())".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_read_only_tenant_unlocks_session_by_function_then_writes_next_checkout_roles() {
    read_only_unlocks_then_writes(true, false, "r4_uq").await;
}

///
/// Broke before the fix (deterministic): "read-only tenant r4_uz1 wrote 1 rows after calling a function that set default_transaction_read_only off (Ok(())); its write returned Ok(())".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_read_only_tenant_unlocks_session_by_function_then_writes_same_scope_reset_settings() {
    read_only_unlocks_then_writes_reset(false, true, true, "r4_uz").await;
}

///
/// HELD: with `reset_settings(true)` every checkout switches and sets the read-only default again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_read_only_tenant_unlocks_session_by_function_then_writes_next_checkout_reset_settings()
{
    read_only_unlocks_then_writes_reset(false, true, false, "r4_uy").await;
}

/// sqlx, session mode, one connection, role mode: the same schema-name reuse as
/// `r4_role_statement_survives_delete_and_recreate_of_schema_name`: sqlx's "last schema on
/// this backend" is a schema name, so the new tenant's checkout keeps the statements.
///
/// Broke before the fix (deterministic): "(sqlx) the deleted tenant r4_dx1's SQL (Ok(())) put its text in place of a statement the NEW tenant of that schema name bound: its write returned Ok(()): secret rows 0, rows forged by the old tenant in the new one's schema: 1". sqlx's `switches_schema` remembered a schema name per backend; it remembers the role too now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_role_statement_survives_delete_and_recreate_of_schema_name_sqlx() {
    let db = database().await;
    let (tenancy, s) = role_tenancy(&db, true, "r4_dx").await;
    let door = Door::Sqlx(sqlx_over_one_connection(&db, &tenancy).await);
    reused_schema_name_runs_nothing_old(&door, &db, &tenancy, &s[1], "sqlx").await;
}

/// Writer w's connection is remembered on w's path (writable); w is then made read-only
/// while the connection sits in the pool; w's next checkout must not write.
///
/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_writer_made_read_only_while_remembered_does_not_write() {
    let db = database().await;
    let (tenancy, s) = role_tenancy(&db, false, "r4_wr").await;
    let (a, w) = (&s[0], &s[1]);
    // A read-only tenant served first (process-wide), then w writes twice (cached).
    tenancy.set_status(a, TenantStatus::ReadOnly).await.unwrap();
    let door = Door::Core(tenancy.clone());
    door.runs(a, "SELECT 1").await.unwrap();
    for _ in 0..2 {
        door.runs(w, SECRET).await.unwrap();
    }
    let before = notes_with_body(&db, w, "secret").await;
    tenancy.set_status(w, TenantStatus::ReadOnly).await.unwrap();
    let wrote = door.runs(w, SECRET).await;
    let secret = notes_with_body(&db, w, "secret").await - before;
    assert_eq!(
        secret, 0,
        "tenant {w}, made read-only while its connection was remembered writable, wrote \
         {secret} rows ({wrote:?})"
    );
}

/// `public.plant(prefix, first, n, replacement)`: `PREPARE`s `replacement` under the names
/// `<prefix><first>` … `<prefix><first + n - 1>`, the names a driver will give its next
/// statements (tokio-postgres `s<N>`, sqlx `sqlx_s_<N>`), so that a victim's next `Parse` under
/// one of them meets the attacker's statement.
const PLANT: &str =
    "CREATE FUNCTION public.plant(prefix text, first int, n int, replacement text) RETURNS int \
     LANGUAGE plpgsql AS $$ DECLARE i int; k int := 0; BEGIN \
     FOR i IN first .. first + n - 1 LOOP \
       BEGIN EXECUTE format('PREPARE %I AS %s', prefix || i, replacement); k := k + 1; \
       EXCEPTION WHEN duplicate_prepared_statement THEN NULL; END; \
     END LOOP; RETURN k; END $$";

const PLANT_SQLX: &str =
    "SELECT public.plant('sqlx_s_', 1, 400, 'INSERT INTO notes (body) VALUES (''forged by a'')')";

/// sqlx, session mode, role mode, one connection: tenant a plants the names sqlx will use
/// next on the connection; b's first write after a must not run a's text (an error is
/// acceptable for the guarantee; noted in the message).
///
/// HELD (for the statement guarantee): nothing a planted runs; b's writes fail instead (see the next test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_role_planted_statement_names_sqlx() {
    let db = database().await;
    let (tenancy, s) = role_tenancy(&db, true, "r4_px").await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, PLANT).await;
    let door = Door::Sqlx(sqlx_over_one_connection(&db, &tenancy).await);
    door.runs(b, "SELECT 1").await.unwrap();
    let planted = door.runs(a, PLANT_SQLX).await;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(door.runs(b, SECRET).await);
    }
    let ok = outcomes.iter().filter(|o| o.is_ok()).count() as i64;
    let (secret, forged) = forged_and_secret(&db, b, 0).await;
    assert_eq!(
        (secret, forged),
        (ok, 0),
        "(sqlx) tenant {a} planted statements under sqlx's next names ({planted:?}); b's \
         writes returned {outcomes:?}: secret rows {secret}, forged rows in {b}: {forged}"
    );
}

/// The same against the core (tokio-postgres names `s<N>` from a process-wide counter):
/// a plants `s0` … `s19999`; b's next writes (new texts, so new names) must not run it.
///
/// HELD: b's switch after a carries `DEALLOCATE ALL`, which drops what a planted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_role_planted_statement_names_core() {
    let db = database().await;
    let (tenancy, s) = role_tenancy(&db, true, "r4_pc").await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, PLANT).await;
    let door = Door::Core(tenancy.clone());
    door.runs(b, "SELECT 1").await.unwrap();
    let planted = door
        .runs(
            a,
            "SELECT public.plant('s', 0, 20000, 'INSERT INTO notes (body) VALUES (''forged by a'')')",
        )
        .await;
    let mut outcomes = Vec::new();
    for i in 0..3 {
        outcomes.push(
            door.runs(
                b,
                &format!("INSERT INTO notes (body) VALUES ('secret') -- {i}"),
            )
            .await,
        );
    }
    let ok = outcomes.iter().filter(|o| o.is_ok()).count() as i64;
    let (secret, forged) = forged_and_secret(&db, b, 0).await;
    assert_eq!(
        (secret, forged),
        (ok, 0),
        "(core) tenant {a} planted statements under tokio-postgres's names ({planted:?}); b's \
         writes returned {outcomes:?}: secret rows {secret}, forged rows in {b}: {forged}"
    );
}

/// Availability, not the statement guarantee: after tenant a planted statements under the
/// names sqlx will use next (`r4_role_planted_statement_names_sqlx`), b's checkouts on that
/// connection keep failing (`prepared statement "sqlx_s_<N>" already exists`, one name per
/// attempt): the connection is handed on with a's statements. Expect b served again after
/// one failure at most.
///
/// Broke before the fix (availability, deterministic): "(sqlx) tenant r4_pd0 planted statements under sqlx's next names (Ok(())); b's writes keep failing: [Err(Other("r4_pd1: error returned from database: prepared statement \"sqlx_s_3\" already exists")), … "sqlx_s_4" …, "sqlx_s_5" …, "sqlx_s_6" …]".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_role_planted_statement_names_sqlx_deny_service() {
    let db = database().await;
    let (tenancy, s) = role_tenancy(&db, true, "r4_pd").await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, PLANT).await;
    let door = Door::Sqlx(sqlx_over_one_connection(&db, &tenancy).await);
    door.runs(b, "SELECT 1").await.unwrap();
    let planted = door.runs(a, PLANT_SQLX).await;
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        outcomes.push(door.runs(b, SECRET).await);
    }
    assert!(
        outcomes[1..].iter().all(Result::is_ok),
        "(sqlx) tenant {a} planted statements under sqlx's next names ({planted:?}); b's \
         writes keep failing: {outcomes:?}"
    );
}

/// The schema-name reuse of `r4_role_statement_survives_delete_and_recreate_of_schema_name`
/// with the tenant deleted and created again by ANOTHER instance (an admin process or the
/// CLI, its own pool), so the serving instance's one connection survives: the web instance
/// (role mode, ONE connection, listening for changes) served old tenant b, whose SQL
/// replaced its own cached write with a forgery; the new tenant b's first write there binds it.
///
/// Broke before the fix (deterministic, 3/3): "(core, two instances) the deleted tenant r4_di1's SQL (Ok(())) put its text in place of a statement the NEW tenant of that schema name bound: its write returned Ok(()): secret rows 0, rows forged by the old tenant in the new one's schema: 1". The statements' owner was a schema name; it is the session key (path, state, role) now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_role_statement_survives_schema_reuse_by_another_instance() {
    let db = database().await;
    let web = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .tenant_roles(TenantRoles::new())
        .listen_for_changes(db.config().clone())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&web, "r4_di", 2).await;
    let b = &s[1];
    let ops = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(marker_and_notes())
        .tenant_roles(TenantRoles::new())
        .listen_for_changes(db.config().clone())
        .build()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while !(web.is_listening() && ops.is_listening()) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "listeners"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    admin(&db, TAKE_OVER).await;
    let door = Door::Core(web.clone());
    for _ in 0..2 {
        door.runs(b, SECRET).await.unwrap();
    }
    let took_over = door.runs(b, FORGERY).await;
    ops.delete_tenant(b, tenant_schemas::DropSchema::Yes)
        .await
        .unwrap();
    ops.create_tenant(tenant_schemas::NewTenant::new(b.clone()))
        .await
        .unwrap();
    // The web instance hears of the new tenant (and its new role).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let wrote = door.runs(b, SECRET).await;
    let (secret, forged) = forged_and_secret(&db, b, 0).await;
    assert_eq!(
        (secret, forged),
        (i64::from(wrote.is_ok()), 0),
        "(core, two instances) the deleted tenant {b}'s SQL ({took_over:?}) put its text in \
         place of a statement the NEW tenant of that schema name bound: its write returned \
         {wrote:?}: secret rows {secret}, rows forged by the old tenant in the new one's \
         schema: {forged}"
    );
}

/// b's write prepared and run through `TenantTransaction::prepare` in session mode (role
/// mode, ONE connection), a's forgery, then b's next transaction prepares and runs the same
/// text again.
///
/// HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_role_transaction_statement_not_taken_over_core_session_mode() {
    let db = database().await;
    let (tenancy, s) = role_tenancy(&db, true, "r4_tx").await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, TAKE_OVER).await;
    let door = Door::Core(tenancy.clone());
    door.runs(a, "SELECT 1").await.unwrap();
    let tx_write = |t: Tenancy, s: SchemaName| async move {
        let mut scope = checkout(&t, &s).await;
        let tx = scope.transaction().await?;
        let stmt = tx.prepare(SECRET).await?;
        tx.execute(&stmt, &[]).await?;
        tx.commit().await
    };
    for _ in 0..2 {
        tx_write(tenancy.clone(), b.clone()).await.unwrap();
    }
    let before = notes_with_body(&db, b, "secret").await;
    let took_over = door.runs(a, FORGERY).await;
    let wrote = tx_write(tenancy.clone(), b.clone()).await;
    let (secret, forged) = forged_and_secret(&db, b, before).await;
    assert_eq!(
        (secret, forged),
        (i64::from(wrote.is_ok()), 0),
        "tenant {a}'s SQL ({took_over:?}) put its text in place of {b}'s statement prepared \
         in a transaction: b's write returned {wrote:?}: secret {secret}, forged {forged}"
    );
}

/// Pool handoff: 2 tenants, pool of ONE connection, 8 concurrent tasks each doing 15
/// checkouts (so most connections are handed over straight from a releasing scope): a's
/// tasks call the forgery, b's write the secret. No forged row may land in b.
///
/// HELD (2 runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_role_statement_not_taken_over_under_pool_handoff() {
    let db = database().await;
    let (tenancy, s) = role_tenancy(&db, true, "r4_ho").await;
    let (a, b) = (s[0].clone(), s[1].clone());
    admin(&db, TAKE_OVER).await;
    let door = Door::Core(tenancy.clone());
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (door, schema) = (door.clone(), if t % 2 == 0 { a.clone() } else { b.clone() });
        let sql = if t % 2 == 0 { FORGERY } else { SECRET };
        tasks.push(tokio::spawn(async move {
            let mut ok = 0i64;
            for _ in 0..15 {
                if door.runs(&schema, sql).await.is_ok() {
                    ok += 1;
                }
            }
            (t % 2 == 1, ok)
        }));
    }
    let mut b_ok = 0;
    for task in tasks {
        let (is_b, ok) = task.await.unwrap();
        if is_b {
            b_ok += ok;
        }
    }
    let (secret, forged) = forged_and_secret(&db, &b, 0).await;
    assert_eq!(
        (secret, forged),
        (b_ok, 0),
        "under pool handoff tenant {a}'s forgery ran for {b}: b's writes Ok {b_ok}, secret \
         rows {secret}, forged rows {forged}"
    );
}

/// Cancellation: role mode, ONE connection. 60 rounds: b writes (its statement cached), a's
/// forgery runs under a timeout of 0–1,000 µs (cancelled anywhere in its switch carrying
/// `DEALLOCATE ALL`, or its statement), then b writes under a timeout too, then b writes
/// freely. No forged row may land in b, and every write that returned `Ok` is there.
///
/// HELD (2 runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_role_statement_not_taken_over_with_cancelled_checkouts() {
    use std::time::Duration;
    let db = database().await;
    let (tenancy, s) = role_tenancy(&db, true, "r4_cc").await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, TAKE_OVER).await;
    let door = Door::Core(tenancy.clone());
    let mut b_ok = 0i64;
    let mut unsure = 0i64;
    for round in 0..60u64 {
        if door.runs(b, SECRET).await.is_ok() {
            b_ok += 1;
        }
        let delay = Duration::from_micros((round * 37) % 1000);
        let _ = tokio::time::timeout(delay, door.runs(a, FORGERY)).await;
        match tokio::time::timeout(
            Duration::from_micros((round * 53) % 1500),
            door.runs(b, SECRET),
        )
        .await
        {
            Ok(Ok(())) => b_ok += 1,
            Ok(Err(_)) => {}
            // Cancelled: it may or may not have run.
            Err(_) => unsure += 1,
        }
        if door.runs(b, SECRET).await.is_ok() {
            b_ok += 1;
        }
    }
    let (secret, forged) = forged_and_secret(&db, b, 0).await;
    assert!(
        forged == 0 && secret >= b_ok && secret <= b_ok + unsure,
        "with cancelled checkouts tenant {a}'s forgery ran for {b}: forged rows {forged}; \
         secret rows {secret}, b's writes Ok {b_ok}, cancelled {unsure}"
    );
}
