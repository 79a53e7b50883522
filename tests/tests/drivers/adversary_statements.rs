//! Role mode: a tenant's SQL may not put its own text in place of a statement another tenant
//! prepared. A prepared statement belongs to the session, not to a role: any SQL on it — a
//! function's dynamic SQL, where no SQL reader sees it — can list the session's statements
//! (`pg_prepared_statements`), `DEALLOCATE` one by name and `PREPARE` its own text under the
//! same name and parameter types. The next `Bind` of that name runs the new text under the
//! role and on the path of whoever binds it: an unqualified forgery then writes into the
//! victim's own schema, with the victim's rights. Through every door: the core in session
//! mode, in transaction mode, behind a real PgBouncer 1.25 that keeps named statements,
//! `tenant-schemas-sqlx` in session mode (also with `shared_statements`, and its own switch
//! statement as the target) and behind PgBouncer.

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::{TestCluster, TestDatabase, TestPgBouncer};
use tenant_schemas::{SchemaName, SearchPathMode, Tenancy, TenantRoles, TenantStatus};

use super::doors::{admin, sqlx_behind_one_server, sqlx_over_one_connection_sharing, Door};

/// `public.take_over(replacement)`: puts `replacement` in place of every statement on the
/// session whose text inserts into `notes`, under the same name and parameter types (an
/// application's helper that runs dynamic SQL, called with what an attacker chose).
pub(super) const TAKE_OVER: &str =
    "CREATE FUNCTION public.take_over(replacement text) RETURNS int LANGUAGE plpgsql AS $$ \
     DECLARE r record; n int := 0; BEGIN \
     FOR r IN SELECT name, parameter_types FROM pg_catalog.pg_prepared_statements \
       WHERE statement LIKE '%INSERT INTO notes%' LOOP \
       EXECUTE format('DEALLOCATE %I', r.name); \
       EXECUTE format('PREPARE %I%s AS %s', r.name, \
         CASE WHEN pg_catalog.cardinality(r.parameter_types) = 0 THEN '' \
         ELSE '(' || pg_catalog.array_to_string(r.parameter_types, ',') || ')' END, \
         replacement); \
       n := n + 1; \
     END LOOP; RETURN n; END $$";

/// What tenant b writes: one note, `secret`.
pub(super) const SECRET: &str = "INSERT INTO notes (body) VALUES ('secret')";

/// What tenant a's SQL puts in place of b's statement: unqualified, so that PostgreSQL
/// analyses it again on b's path, under b's role, when b binds it.
pub(super) const FORGERY: &str =
    "SELECT public.take_over('INSERT INTO notes (body) VALUES (''forged by a'')')";

/// The scenario: tenant b's write is prepared (twice: a first use may only learn it) on the
/// one server connection `door` uses; tenant a's SQL puts its forgery in place of every
/// statement there that writes `notes`; b writes its secret. b's write does what b's SQL says
/// or fails, and nothing a chose runs in b's place.
async fn no_statement_is_taken_over(door: &Door, db: &TestDatabase, s: &[SchemaName]) {
    let (a, b) = (&s[0], &s[1]);
    admin(db, TAKE_OVER).await;
    // a used the connection before b: a checkout that would trust what its own schema
    // left would not drop b's statements at a's next switch.
    door.runs(a, "SELECT 1").await.unwrap();
    for _ in 0..2 {
        door.runs(b, SECRET).await.unwrap();
    }
    let before = notes_with_body(db, b, "secret").await;
    let took_over = door.runs(a, FORGERY).await;
    let wrote = door.runs(b, SECRET).await;
    let secret = notes_with_body(db, b, "secret").await - before;
    let forged = notes_with_body(db, b, "forged by a").await;
    assert_eq!(
        (secret, forged),
        (i64::from(wrote.is_ok()), 0),
        "tenant {a}'s SQL put its text in place of tenant {b}'s prepared write ({took_over:?}); \
         b's write of its secret returned {wrote:?}: new secret rows in {b}: {secret}, rows \
         forged by {a} in {b}'s schema: {forged}"
    );
    // And b goes on writing.
    door.runs(b, SECRET).await.unwrap();
}

/// Tenants `<prefix>0..2` in role mode over `pool`, in `mode`.
async fn role_tenancy(
    pool: tenant_schemas::deadpool_postgres::Pool,
    mode: SearchPathMode,
    pooler_statements: bool,
    prefix: &str,
) -> (Tenancy, Vec<SchemaName>) {
    let tenancy = Tenancy::builder(pool)
        .migrations(marker_and_notes())
        .search_path_mode(mode)
        .pooler_prepared_statements(pooler_statements)
        .tenant_roles(TenantRoles::new())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, prefix, 2).await;
    (tenancy, s)
}

/// [`role_tenancy`] over ONE direct connection to `db`, without pooler statements.
async fn direct(
    db: &TestDatabase,
    mode: SearchPathMode,
    prefix: &str,
) -> (Tenancy, Vec<SchemaName>) {
    role_tenancy(db.new_pool(1).unwrap(), mode, false, prefix).await
}

/// Broke before the fix: b's write ran a's forgery (`(0, 1)` against `(1, 0)`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_statement_is_taken_over_core_session_mode() {
    let db = database().await;
    let (tenancy, s) = direct(&db, SearchPathMode::Session, "sto_cs").await;
    no_statement_is_taken_over(&Door::Core(tenancy), &db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_statement_is_taken_over_core_transaction_mode() {
    let db = database().await;
    let (tenancy, s) = direct(&db, SearchPathMode::Transaction, "sto_ct").await;
    no_statement_is_taken_over(&Door::Core(tenancy), &db, &s).await;
}

/// Broke before the fix: a's function replaced PgBouncer's `PGBOUNCER_<n>` on the server
/// connection, which PgBouncer went on binding for b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_statement_is_taken_over_core_behind_pgbouncer() {
    let db = database().await;
    let bouncer = TestPgBouncer::builder(TestCluster::shared().unwrap())
        .pool_size(1)
        .max_prepared_statements(200)
        .start()
        .unwrap();
    let through = tenant_schemas::testing::pool(bouncer.config(db.name()), 1).unwrap();
    let (tenancy, s) = role_tenancy(through, SearchPathMode::Transaction, true, "sto_cb").await;
    no_statement_is_taken_over(&Door::Core(tenancy), &db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_statement_is_taken_over_sqlx_session_mode() {
    let db = database().await;
    let (tenancy, s) = direct(&db, SearchPathMode::Session, "sto_xs").await;
    let router = sqlx_over_one_connection_sharing(&db, &tenancy, false).await;
    no_statement_is_taken_over(&Door::Sqlx(router), &db, &s).await;
}

/// Broke before the fix: with `shared_statements(true)` sqlx kept b's statement across a's
/// checkout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_statement_is_taken_over_sqlx_session_mode_shared_statements() {
    let db = database().await;
    let (tenancy, s) = direct(&db, SearchPathMode::Session, "sto_xh").await;
    let router = sqlx_over_one_connection_sharing(&db, &tenancy, true).await;
    no_statement_is_taken_over(&Door::Sqlx(router), &db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_statement_is_taken_over_sqlx_behind_pgbouncer() {
    let db = database().await;
    let (tenancy, s) = direct(&db, SearchPathMode::Session, "sto_xb").await;
    let (_bouncer, router, _other) = sqlx_behind_one_server(&db, &tenancy, 1).await;
    no_statement_is_taken_over(&Door::Sqlx(router), &db, &s).await;
}

/// `public.take_over_switch()`: puts in place of every statement on the session that sets
/// `search_path` by `set_config` (the sqlx driver's switch, prepared by SQL) one with the same
/// name, parameters and columns that sets the path but not `default_transaction_read_only`.
const TAKE_OVER_SWITCH: &str =
    "CREATE FUNCTION public.take_over_switch() RETURNS int LANGUAGE plpgsql AS $$ \
     DECLARE r record; n int := 0; BEGIN \
     FOR r IN SELECT name FROM pg_catalog.pg_prepared_statements \
       WHERE statement LIKE '%set_config(''search_path''%' LOOP \
       EXECUTE format('DEALLOCATE %I', r.name); \
       EXECUTE format('PREPARE %I(text, text, text) AS SELECT \
         pg_catalog.set_config(''search_path'', $1, false) IS NOT NULL AS path_set, \
         $2 IS NOT NULL AS read_only_set, \
         $3::pg_catalog.regnamespace::pg_catalog.oid::pg_catalog.int8 AS schema_oid, \
         pg_catalog.now() = pg_catalog.statement_timestamp() AS fresh, \
         true AS no_temp, pg_catalog.pg_backend_pid() AS pid', r.name); \
       n := n + 1; \
     END LOOP; RETURN n; END $$";

/// The sqlx session switch taken over: read-only tenant b's checkout after a's SQL replaced
/// the switch statement on the connection must still refuse b's write. Broke before the fix:
/// the switch ran a's text, which left the session writable, and b's write was committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_switch_is_taken_over_sqlx_session_mode() {
    let db = database().await;
    let (tenancy, s) = direct(&db, SearchPathMode::Session, "sto_xw").await;
    let (a, b) = (&s[0], &s[1]);
    admin(&db, TAKE_OVER_SWITCH).await;
    let door = Door::Sqlx(sqlx_over_one_connection_sharing(&db, &tenancy, false).await);
    door.runs(b, SECRET).await.unwrap();
    tenancy.set_status(b, TenantStatus::ReadOnly).await.unwrap();
    let took_over = door.runs(a, "SELECT public.take_over_switch()").await;
    let wrote = door.runs(b, SECRET).await;
    let secret = notes_with_body(&db, b, "secret").await;
    assert!(
        wrote.is_err() && secret == 1,
        "tenant {a}'s SQL replaced the sqlx switch ({took_over:?}); read-only tenant {b}'s \
         write returned {wrote:?}, {b} holds {secret} secret rows (1 before)"
    );
}

/// The shared `public` schema's checkouts run as the login role in role mode: a statement
/// they prepared and another tenant's SQL replaced would run with every right. Tenant a's
/// forgery must not run in place of a write through `connection_for_schema(public)`, by the
/// core and by sqlx.
async fn public_statement_is_not_taken_over(door: &Door, db: &TestDatabase, a: &SchemaName) {
    admin(
        db,
        "CREATE TABLE public.notes (id serial PRIMARY KEY, body text NOT NULL)",
    )
    .await;
    let public = SchemaName::public();
    no_statement_is_taken_over(door, db, &[a.clone(), public]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_public_statement_is_taken_over_core_session_mode() {
    let db = database().await;
    let (tenancy, s) = direct(&db, SearchPathMode::Session, "sto_ps").await;
    public_statement_is_not_taken_over(&Door::Core(tenancy), &db, &s[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_public_statement_is_taken_over_sqlx_session_mode_shared_statements() {
    let db = database().await;
    let (tenancy, s) = direct(&db, SearchPathMode::Session, "sto_px").await;
    let router = sqlx_over_one_connection_sharing(&db, &tenancy, true).await;
    public_statement_is_not_taken_over(&Door::Sqlx(router), &db, &s[0]).await;
}
