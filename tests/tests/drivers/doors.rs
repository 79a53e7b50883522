//! The checkout scenario, the same for every door into a tenant: the core's router in session
//! and transaction mode, `tenant-schemas-sqlx` in session mode and in transaction mode behind
//! a real PgBouncer. Each door gets the registry's tenant states (the `Tenancy`'s own router,
//! or `tenant_states` for sqlx) and must:
//!
//! - serve the five states as the registry says, whatever `Tenant` value is in scope;
//! - refuse the careless ways of writing for a read-only tenant (a transaction begun the
//!   driver's way, a write, a commit) and commit nothing;
//! - leave a connection held across `delete_tenant` and `rename_schema` able to reach
//!   nothing: reads, writes and an unqualified `CREATE TABLE` fail, and `public` (which has
//!   a `marker` table of its own) gains nothing.
//!
//! And a second scenario, over one connection (one server connection behind PgBouncer): a
//! temporary table left on the session — by a function the tenant called, by plain SQL, or
//! by another client of the pooler — never stands in for the next tenant's table
//! (PostgreSQL searches `pg_temp` before the tenant's path), and a cursor held open past its
//! transaction cannot be fetched from by the next tenant. And a third: a setting left on
//! the session — by a function, by plain SQL, or by another client of the pooler — never
//! reaches the next tenant's checkout (`reset_settings(true)` for the core, sqlx's default).

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::Connection;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::{TestCluster, TestDatabase, TestPgBouncer};
use tenant_schemas::{
    scope, ConnectionScope, DropSchema, SchemaName, SearchPathMode, Tenancy, Tenant, TenantStatus,
};
use tenant_schemas_sqlx::{SqlxConnection, SqlxRouter, SqlxTransaction};

/// How a door refused, in the scenario's terms.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    NotServed(TenantStatus),
    ReadOnly,
    /// Anything else (a missing schema, a terminated connection …): the statement did not
    /// run.
    Other(String),
}

fn core_refusal(e: &tenant_schemas::Error) -> Refusal {
    match e {
        tenant_schemas::Error::TenantNotServed { status, .. } => Refusal::NotServed(*status),
        tenant_schemas::Error::TenantReadOnly { .. } => Refusal::ReadOnly,
        other => Refusal::Other(other.to_string()),
    }
}

fn sqlx_refusal(e: &tenant_schemas_sqlx::Error) -> Refusal {
    match e {
        tenant_schemas_sqlx::Error::TenantNotServed { status, .. } => Refusal::NotServed(*status),
        tenant_schemas_sqlx::Error::TenantReadOnly { .. } => Refusal::ReadOnly,
        other => Refusal::Other(other.to_string()),
    }
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(|e| query_refusal(s, e))`
fn query_refusal(schema: &SchemaName, e: sqlx::Error) -> Refusal {
    let is_read_only =
        matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("25006"));
    if is_read_only {
        Refusal::ReadOnly
    } else {
        Refusal::Other(format!("{schema}: {e}"))
    }
}

/// A door into tenants.
#[derive(Clone)]
pub(super) enum Door {
    Core(Tenancy),
    Sqlx(SqlxRouter),
}

/// A connection a door handed out and someone holds.
#[allow(clippy::large_enum_variant)] // a test's few values
enum Held {
    Core(ConnectionScope),
    SqlxSession(SqlxConnection),
    SqlxTransaction(SqlxTransaction),
}

const READ: &str = "SELECT schema_name FROM marker";
const WRITE: &str = "INSERT INTO notes (body) VALUES ('door')";

impl Door {
    fn sqlx_session(router: &SqlxRouter) -> bool {
        router.mode() == SearchPathMode::Session
    }

    /// A connection for `tenant` (a value as careless code builds it), checked out in its
    /// scope.
    async fn hold(&self, tenant: Tenant) -> Result<Held, Refusal> {
        match self {
            Self::Core(tenancy) => scope::run(tenant, tenancy.connection())
                .await
                .map(Held::Core)
                .map_err(|e| core_refusal(&e)),
            Self::Sqlx(router) if Self::sqlx_session(router) => {
                scope::run(tenant, router.connection())
                    .await
                    .map(Held::SqlxSession)
                    .map_err(|e| sqlx_refusal(&e))
            }
            Self::Sqlx(router) => scope::run(tenant, router.begin())
                .await
                .map(Held::SqlxTransaction)
                .map_err(|e| sqlx_refusal(&e)),
        }
    }

    /// One checkout for `schema` that reads its marker.
    pub(super) async fn read(&self, schema: &SchemaName) -> Result<String, Refusal> {
        self.hold(Tenant::new(schema.clone()))
            .await?
            .read(schema)
            .await
    }

    async fn write(&self, schema: &SchemaName) -> Result<(), Refusal> {
        self.runs(schema, WRITE).await
    }

    /// One checkout for `schema` that runs `sql` and is given back (a transaction committed).
    pub(super) async fn runs(&self, schema: &SchemaName, sql: &str) -> Result<(), Refusal> {
        let mut held = self.hold(Tenant::new(schema.clone())).await?;
        let ran = held.run(schema, sql).await;
        held.finish().await;
        ran
    }

    /// A read-only tenant's careless write: a transaction begun the driver's way, a write
    /// and a commit, each its own call.
    async fn write_in_a_transaction(&self, schema: &SchemaName) -> Result<(), Refusal> {
        match self {
            Self::Core(tenancy) => {
                let mut db = tenancy
                    .router()
                    .connection_for_tenant(&Tenant::new(schema.clone()))
                    .await
                    .map_err(|e| core_refusal(&e))?;
                // The stray-BEGIN spelling first: refused before it is sent.
                let begun = db.batch_execute("BEGIN READ WRITE").await;
                let _ = db.execute(WRITE, &[]).await;
                let _ = db.batch_execute("COMMIT").await;
                begun.map_err(|e| core_refusal(&e))?;
                let tx = db.transaction().await.map_err(|e| core_refusal(&e))?;
                tx.execute(WRITE, &[]).await.map_err(|e| core_refusal(&e))?;
                tx.commit().await.map_err(|e| core_refusal(&e))
            }
            Self::Sqlx(router) if Self::sqlx_session(router) => {
                let mut conn = router
                    .connection_for_schema(schema)
                    .await
                    .map_err(|e| sqlx_refusal(&e))?;
                let mut tx = conn.begin().await.map_err(|e| query_refusal(schema, e))?;
                sqlx::query(WRITE)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| query_refusal(schema, e))?;
                tx.commit().await.map_err(|e| query_refusal(schema, e))
            }
            Self::Sqlx(router) => {
                let mut tx = router
                    .begin_for(schema)
                    .await
                    .map_err(|e| sqlx_refusal(&e))?;
                sqlx::query(WRITE)
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| query_refusal(schema, e))?;
                tx.commit().await.map_err(|e| sqlx_refusal(&e))
            }
        }
    }
}

impl Held {
    async fn read(self, schema: &SchemaName) -> Result<String, Refusal> {
        let mut held = self;
        held.read_mut(schema).await
    }

    async fn read_mut(&mut self, schema: &SchemaName) -> Result<String, Refusal> {
        self.text(schema, READ).await
    }

    async fn run(&mut self, schema: &SchemaName, sql: &str) -> Result<(), Refusal> {
        match self {
            Self::Core(db) => db
                .execute(sql, &[])
                .await
                .map(|_| ())
                .map_err(|e| core_refusal(&e)),
            Self::SqlxSession(conn) => sqlx::query(sql)
                .execute(&mut **conn)
                .await
                .map(|_| ())
                .map_err(|e| query_refusal(schema, e)),
            Self::SqlxTransaction(tx) => sqlx::query(sql)
                .persistent(false)
                .execute(&mut **tx)
                .await
                .map(|_| ())
                .map_err(|e| query_refusal(schema, e)),
        }
    }

    /// The text `sql` returns (one row, one column).
    async fn text(&mut self, schema: &SchemaName, sql: &str) -> Result<String, Refusal> {
        match self {
            Self::Core(db) => db
                .query_one(sql, &[])
                .await
                .map(|r| r.get(0))
                .map_err(|e| core_refusal(&e)),
            Self::SqlxSession(conn) => sqlx::query_scalar(sql)
                .fetch_one(&mut **conn)
                .await
                .map_err(|e| query_refusal(schema, e)),
            Self::SqlxTransaction(tx) => sqlx::query_scalar(sql)
                .persistent(false)
                .fetch_one(&mut **tx)
                .await
                .map_err(|e| query_refusal(schema, e)),
        }
    }

    /// The bodies of `notes` as the tenant's SQL sees them (unqualified), sorted.
    async fn bodies(&mut self, schema: &SchemaName) -> Result<Vec<String>, Refusal> {
        self.texts(schema, "SELECT body FROM notes ORDER BY body")
            .await
    }

    /// The texts `sql` returns (one column).
    async fn texts(&mut self, schema: &SchemaName, sql: &str) -> Result<Vec<String>, Refusal> {
        match self {
            Self::Core(db) => db
                .query(sql, &[])
                .await
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                .map_err(|e| core_refusal(&e)),
            Self::SqlxSession(conn) => sqlx::query_scalar(sql)
                .fetch_all(&mut **conn)
                .await
                .map_err(|e| query_refusal(schema, e)),
            Self::SqlxTransaction(tx) => sqlx::query_scalar(sql)
                .persistent(false)
                .fetch_all(&mut **tx)
                .await
                .map_err(|e| query_refusal(schema, e)),
        }
    }

    async fn finish(self) {
        if let Self::SqlxTransaction(tx) = self {
            let _ = tx.commit().await;
        }
    }
}

/// The scenario's database: tenants `<prefix>0..2` (the first is put through the states,
/// deleted and renamed), `public.marker`, and a `Tenancy` whose deletions give held driver
/// connections a short grace.
async fn setup(prefix: &str) -> (TestDatabase, Tenancy, Vec<SchemaName>) {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(4).unwrap())
        .migrations(marker_and_notes())
        .held_connection_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let schemas = marked_tenants(&tenancy, prefix, 3).await;
    plant_public_marker(db.pool()).await;
    (db, tenancy, schemas)
}

async fn notes(db: &TestDatabase, schema: &SchemaName) -> i64 {
    notes_with_body(db, schema, "door").await
}

async fn public_is_untouched(db: &TestDatabase) {
    assert!(schemas_holding(db, "stray").await.is_empty(), "DDL landed");
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
    assert_eq!(public, ["PUBLIC"], "a write landed in public");
}

/// A held connection after its schema was deleted or renamed: its read, its write and an
/// unqualified `CREATE TABLE` are refused.
async fn held_reaches_nothing(held: &mut Held, schema: &SchemaName, label: &str) {
    let read = held.read_mut(schema).await;
    assert!(read.is_err(), "{label}: a held connection read {read:?}");
    let write = held
        .run(schema, "INSERT INTO marker VALUES ('stray')")
        .await;
    assert!(write.is_err(), "{label}: a held connection wrote");
    let ddl = held.run(schema, "CREATE TABLE stray (x int)").await;
    assert!(ddl.is_err(), "{label}: a held connection ran DDL");
}

async fn run(door: Door, db: &TestDatabase, tenancy: &Tenancy, s: &[SchemaName]) {
    // The five states, whatever value is in scope.
    for status in TenantStatus::ALL {
        tenancy.set_status(&s[0], status).await.unwrap();
        let read = door.read(&s[0]).await;
        let write = door.write(&s[0]).await;
        match status {
            TenantStatus::Active => {
                assert_eq!(read.unwrap(), s[0].as_str());
                write.unwrap();
            }
            TenantStatus::ReadOnly => {
                assert_eq!(read.unwrap(), s[0].as_str());
                assert_eq!(write.unwrap_err(), Refusal::ReadOnly);
                let careless = door.write_in_a_transaction(&s[0]).await;
                assert_eq!(careless.unwrap_err(), Refusal::ReadOnly, "{status}");
            }
            _ => {
                assert_eq!(read.unwrap_err(), Refusal::NotServed(status));
                assert_eq!(write.unwrap_err(), Refusal::NotServed(status));
            }
        }
    }
    assert_eq!(
        notes(db, &s[0]).await,
        1,
        "only the write made while active"
    );
    tenancy
        .set_status(&s[0], TenantStatus::Active)
        .await
        .unwrap();

    // Deletion with a held connection.
    let mut held = door.hold(Tenant::new(s[0].clone())).await.unwrap();
    assert_eq!(held.read_mut(&s[0]).await.unwrap(), s[0].as_str());
    tenancy.delete_tenant(&s[0], DropSchema::Yes).await.unwrap();
    held_reaches_nothing(&mut held, &s[0], "deleted").await;
    drop(held);
    assert!(door.read(&s[0]).await.is_err());
    public_is_untouched(db).await;

    // Rename with a held connection.
    let new = schema(&format!("{}_renamed", s[1]));
    let mut held = door.hold(Tenant::new(s[1].clone())).await.unwrap();
    assert_eq!(held.read_mut(&s[1]).await.unwrap(), s[1].as_str());
    tenancy.rename_schema(&s[1], &new).await.unwrap();
    held_reaches_nothing(&mut held, &s[1], "renamed").await;
    drop(held);
    assert_eq!(door.read(&new).await.unwrap(), s[1].as_str());
    assert!(door.read(&s[1]).await.is_err());
    public_is_untouched(db).await;

    // The untouched tenant is served throughout.
    assert_eq!(door.read(&s[2]).await.unwrap(), s[2].as_str());
}

async fn core_door(mode: SearchPathMode, prefix: &str) {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(4).unwrap())
        .migrations(marker_and_notes())
        .search_path_mode(mode)
        .held_connection_grace(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let schemas = marked_tenants(&tenancy, prefix, 3).await;
    plant_public_marker(db.pool()).await;
    run(Door::Core(tenancy.clone()), &db, &tenancy, &schemas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_core_session_mode() {
    core_door(SearchPathMode::Session, "door_cs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_core_transaction_mode() {
    core_door(SearchPathMode::Transaction, "door_ct").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_sqlx_session_mode() {
    let (db, tenancy, schemas) = setup("door_ss").await;
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .connect_with(tenant_schemas_sqlx::connect_options(db.config()))
        .await
        .unwrap();
    let router = SqlxRouter::builder(pool)
        .tenant_states(tenancy.tenant_states())
        .build();
    run(Door::Sqlx(router), &db, &tenancy, &schemas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_sqlx_behind_pgbouncer() {
    let (db, tenancy, schemas) = setup("door_sb").await;
    let bouncer = TestPgBouncer::start(TestCluster::shared().unwrap(), 3).unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .connect_with(
            tenant_schemas_sqlx::connect_options(&bouncer.config(db.name()))
                .statement_cache_capacity(0),
        )
        .await
        .unwrap();
    let router = SqlxRouter::builder(pool)
        .mode(SearchPathMode::Transaction)
        .tenant_states(tenancy.tenant_states())
        .build();
    run(Door::Sqlx(router), &db, &tenancy, &schemas).await;
}

/// `public.plant(who)`: a PL/pgSQL function that keeps a temporary table `notes` (a common
/// pattern: `CREATE TEMP TABLE IF NOT EXISTS` in its body), which the SQL reader cannot see.
const PLANT: &str = "CREATE FUNCTION public.plant(who text) RETURNS text LANGUAGE plpgsql AS $$ \
     BEGIN CREATE TEMP TABLE IF NOT EXISTS notes (id bigint, body text); \
     INSERT INTO notes VALUES (1, 'planted by ' || who); RETURN who; END $$";

/// The temporary-table scenario: `door` hands out connections over ONE server connection;
/// `other_client`, when given, is another client of the same pooler (not the library). After
/// tenant `s[0]` leaves a temporary `notes` on the session — through a function, through
/// plain SQL (which a door may refuse) — and after the other client does, tenant `s[1]`'s
/// unqualified `notes` is its own (one note, `x`), through a connection and a transaction.
async fn no_temporary_table_reaches_the_next_tenant(
    door: &Door,
    db: &TestDatabase,
    s: &[SchemaName],
    other_client: Option<&tenant_schemas::deadpool_postgres::Pool>,
) {
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(PLANT)
        .await
        .unwrap();
    let (a, b) = (&s[0], &s[1]);
    let next_tenant_reads_its_own = |how: &'static str| async move {
        let mut held = door.hold(Tenant::new(b.clone())).await.unwrap();
        let bodies = held.bodies(b).await.unwrap();
        held.finish().await;
        assert_eq!(
            bodies,
            ["x"],
            "after {how}, tenant {b}'s `notes` is another's temporary table"
        );
    };

    door.runs(a, "SELECT public.plant('a')").await.unwrap();
    next_tenant_reads_its_own("a function's temporary table").await;

    // Refused by a door that reads the SQL in transaction mode; either way, nothing may reach
    // the next tenant.
    let typed = door
        .runs(
            a,
            "CREATE TEMP TABLE notes AS SELECT 1::bigint AS id, 'typed by a'::text AS body",
        )
        .await;
    next_tenant_reads_its_own(if typed.is_ok() {
        "a temporary table made by SQL"
    } else {
        "a refused temporary table"
    })
    .await;

    if let Some(pool) = other_client {
        pool.get()
            .await
            .unwrap()
            .batch_execute(
                "CREATE TEMP TABLE notes (id bigint, body text); \
                 INSERT INTO notes VALUES (1, 'left by another client')",
            )
            .await
            .unwrap();
        next_tenant_reads_its_own("another client's temporary table").await;
    }

    // A cursor held open past its transaction, over tenant a's rows: the next tenant's
    // `FETCH` by its name must find no such cursor.
    let next_tenant_fetches_nothing = |how: &'static str| async move {
        let mut held = door.hold(Tenant::new(b.clone())).await.unwrap();
        let fetched = held.texts(b, "FETCH ALL FROM left_open").await;
        held.finish().await;
        assert!(
            fetched.is_err(),
            "after {how}, tenant {b} fetched from another's cursor: {fetched:?}"
        );
    };
    // Refused by a door that reads the SQL in transaction mode.
    let declared = door
        .runs(
            a,
            "DECLARE left_open CURSOR WITH HOLD FOR SELECT schema_name FROM marker",
        )
        .await;
    next_tenant_fetches_nothing(if declared.is_ok() {
        "a held cursor"
    } else {
        "a refused held cursor"
    })
    .await;
    if let Some(pool) = other_client {
        pool.get()
            .await
            .unwrap()
            .batch_execute(&format!(
                "BEGIN; DECLARE left_open CURSOR WITH HOLD FOR SELECT schema_name FROM {}.marker; \
                 COMMIT",
                a.quoted()
            ))
            .await
            .unwrap();
        next_tenant_fetches_nothing("another client's held cursor").await;
    }
}

/// Tenants `<prefix>0..2` over a `Tenancy` in `mode`, with `reset_settings(reset)`, whose
/// pool has ONE connection.
pub(super) async fn one_connection_core(
    mode: SearchPathMode,
    reset: bool,
    prefix: &str,
) -> (TestDatabase, Tenancy, Vec<SchemaName>) {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(1).unwrap())
        .migrations(marker_and_notes())
        .search_path_mode(mode)
        .reset_settings(reset)
        .build()
        .await
        .unwrap();
    let schemas = marked_tenants(&tenancy, prefix, 2).await;
    (db, tenancy, schemas)
}

/// A sqlx router in session mode over a pool of ONE direct connection to `db`, with
/// `tenancy`'s states.
pub(super) async fn sqlx_over_one_connection(db: &TestDatabase, tenancy: &Tenancy) -> SqlxRouter {
    sqlx_over_one_connection_sharing(db, tenancy, false).await
}

/// [`sqlx_over_one_connection`], keeping statements across schemas when `shared`
/// (`SqlxRouterBuilder::shared_statements`).
pub(super) async fn sqlx_over_one_connection_sharing(
    db: &TestDatabase,
    tenancy: &Tenancy,
    shared: bool,
) -> SqlxRouter {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(tenant_schemas_sqlx::connect_options(db.config()))
        .await
        .unwrap();
    SqlxRouter::builder(pool)
        .tenant_states(tenancy.tenant_states())
        .shared_statements(shared)
        .build()
}

/// A real PgBouncer with ONE server connection to `db`; a sqlx router in transaction mode,
/// with `tenancy`'s states, over `clients` client connections to it (no statement cache, as
/// the crate's docs ask there); and another client of the pooler, not the library.
pub(super) async fn sqlx_behind_one_server(
    db: &TestDatabase,
    tenancy: &Tenancy,
    clients: u32,
) -> (
    TestPgBouncer,
    SqlxRouter,
    tenant_schemas::deadpool_postgres::Pool,
) {
    let bouncer = TestPgBouncer::start(TestCluster::shared().unwrap(), 1).unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(clients)
        .connect_with(
            tenant_schemas_sqlx::connect_options(&bouncer.config(db.name()))
                .statement_cache_capacity(0),
        )
        .await
        .unwrap();
    let router = SqlxRouter::builder(pool)
        .mode(SearchPathMode::Transaction)
        .tenant_states(tenancy.tenant_states())
        .build();
    let other = tenant_schemas::testing::pool(bouncer.config(db.name()), 1).unwrap();
    (bouncer, router, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_temporary_table_reaches_the_next_tenant_core_session_mode() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "tmp_cs").await;
    no_temporary_table_reaches_the_next_tenant(&Door::Core(tenancy), &db, &s, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_temporary_table_reaches_the_next_tenant_core_transaction_mode() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Transaction, false, "tmp_ct").await;
    no_temporary_table_reaches_the_next_tenant(&Door::Core(tenancy), &db, &s, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_temporary_table_reaches_the_next_tenant_core_behind_pgbouncer() {
    let db = database().await;
    let (bouncer, tenancy) = bounced_tenancy(&db, 1, 2).await;
    let s = marked_tenants(&tenancy, "tmp_cb", 2).await;
    let other = tenant_schemas::testing::pool(bouncer.config(db.name()), 1).unwrap();
    no_temporary_table_reaches_the_next_tenant(&Door::Core(tenancy), &db, &s, Some(&other)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_temporary_table_reaches_the_next_tenant_sqlx_session_mode() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "tmp_ss").await;
    let router = sqlx_over_one_connection(&db, &tenancy).await;
    no_temporary_table_reaches_the_next_tenant(&Door::Sqlx(router), &db, &s, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_temporary_table_reaches_the_next_tenant_sqlx_behind_pgbouncer() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "tmp_sb").await;
    let (_bouncer, router, other) = sqlx_behind_one_server(&db, &tenancy, 2).await;
    no_temporary_table_reaches_the_next_tenant(&Door::Sqlx(router), &db, &s, Some(&other)).await;
}

/// `public.leave(who)`: a PL/pgSQL function that sets, for the session, a custom setting, a
/// server setting, and the session's transactions read-only; the SQL reader sees a `SELECT`.
const LEAVE: &str = "CREATE FUNCTION public.leave(who text) RETURNS text LANGUAGE plpgsql AS $$ \
     BEGIN PERFORM set_config('app.token', who, false); \
     PERFORM set_config('work_mem', '1234kB', false); \
     PERFORM set_config('default_transaction_read_only', 'on', false); RETURN who; END $$";

/// What the next tenant must find: no token, the server's `work_mem`.
const SETTINGS: &str =
    "SELECT coalesce(current_setting('app.token', true), '') || '|' || current_setting('work_mem')";

/// The settings scenario: `door` hands out connections over ONE server connection (behind
/// PgBouncer, `other_client` is another client of it). After tenant `s[0]` leaves settings on
/// the session — through a function, through plain SQL (which a door may refuse) — and after
/// the other client does, tenant `s[1]` finds the defaults and can write.
async fn no_setting_reaches_the_next_tenant(
    door: &Door,
    db: &TestDatabase,
    s: &[SchemaName],
    other_client: Option<&tenant_schemas::deadpool_postgres::Pool>,
) {
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(LEAVE)
        .await
        .unwrap();
    let (a, b) = (&s[0], &s[1]);
    let defaults = format!("|{}", {
        let raw = db.pool().get().await.unwrap();
        raw.query_one("SELECT current_setting('work_mem')", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    });
    let next_tenant_finds_the_defaults = |how: &'static str| {
        let defaults = defaults.clone();
        async move {
            let mut held = door.hold(Tenant::new(b.clone())).await.unwrap();
            // The write first: in the transaction that begins with the resets.
            let wrote = held.run(b, WRITE).await;
            let found = held.text(b, SETTINGS).await.unwrap();
            held.finish().await;
            assert_eq!(
                found, defaults,
                "after {how}, tenant {b} found another's settings"
            );
            assert_eq!(wrote, Ok(()), "after {how}, tenant {b} could not write");
        }
    };

    door.runs(a, "SELECT public.leave('a-by-function')")
        .await
        .unwrap();
    next_tenant_finds_the_defaults("a function's settings").await;

    // Refused by a door that reads the SQL in transaction mode.
    let typed = door
        .runs(a, "SET app.token = 'a-by-sql'; SET work_mem = '2345kB'")
        .await;
    next_tenant_finds_the_defaults(if typed.is_ok() {
        "settings made by SQL"
    } else {
        "refused settings"
    })
    .await;

    if let Some(pool) = other_client {
        pool.get()
            .await
            .unwrap()
            .batch_execute(
                "SET app.token = 'another-client'; SET work_mem = '3456kB'; \
                 SET default_transaction_read_only = on",
            )
            .await
            .unwrap();
        next_tenant_finds_the_defaults("another client's settings").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_setting_reaches_the_next_tenant_core_session_mode() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, true, "set_cs").await;
    no_setting_reaches_the_next_tenant(&Door::Core(tenancy), &db, &s, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_setting_reaches_the_next_tenant_core_transaction_mode() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Transaction, true, "set_ct").await;
    no_setting_reaches_the_next_tenant(&Door::Core(tenancy), &db, &s, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_setting_reaches_the_next_tenant_core_behind_pgbouncer() {
    let db = database().await;
    let cluster = TestCluster::shared().unwrap();
    let bouncer = TestPgBouncer::start(cluster, 1).unwrap();
    let through = tenant_schemas::testing::pool(bouncer.config(db.name()), 2).unwrap();
    let tenancy = Tenancy::builder(through)
        .migrations(marker_and_notes())
        .search_path_mode(SearchPathMode::Transaction)
        .reset_settings(true)
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "set_cb", 2).await;
    let other = tenant_schemas::testing::pool(bouncer.config(db.name()), 1).unwrap();
    no_setting_reaches_the_next_tenant(&Door::Core(tenancy), &db, &s, Some(&other)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_setting_reaches_the_next_tenant_sqlx_session_mode() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "set_ss").await;
    let router = sqlx_over_one_connection(&db, &tenancy).await;
    no_setting_reaches_the_next_tenant(&Door::Sqlx(router), &db, &s, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_setting_reaches_the_next_tenant_sqlx_behind_pgbouncer() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "set_sb").await;
    let (_bouncer, router, other) = sqlx_behind_one_server(&db, &tenancy, 2).await;
    no_setting_reaches_the_next_tenant(&Door::Sqlx(router), &db, &s, Some(&other)).await;
}

/// `public.stall(who)`: a PL/pgSQL function that leaves on the session 200 temporary tables
/// (which the next checkout drops first, in more than a millisecond) and a
/// `statement_timeout` of 1 ms, where the SQL reader cannot see either: the next tenant's
/// switch starts under that timeout.
const STALL: &str = "CREATE FUNCTION public.stall(who text) RETURNS text LANGUAGE plpgsql AS $$ \
     BEGIN FOR i IN 1..200 LOOP \
     EXECUTE format('CREATE TEMP TABLE IF NOT EXISTS stall_%s (x int)', i); END LOOP; \
     PERFORM set_config('statement_timeout', '1ms', false); RETURN who; END $$";

/// The failed-switch scenario: `door` hands out connections over ONE server connection. After
/// tenant `s[0]`'s function leaves a session on which the next switch is cancelled, tenant
/// `s[1]`'s write fails or lands in its own schema — never in `s[0]`'s, which the server
/// connection's path still names — and the next checkout serves `s[1]`: one function cannot
/// take a connection (behind PgBouncer, every client's) out of service.
async fn no_write_runs_behind_a_failed_switch(door: &Door, db: &TestDatabase, s: &[SchemaName]) {
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(STALL)
        .await
        .unwrap();
    let (a, b) = (&s[0], &s[1]);
    // Tenant b seen a moment ago (its switch needs no existence check), its write not yet
    // prepared on the connection.
    door.read(b).await.unwrap();
    door.runs(a, "SELECT public.stall('a')").await.unwrap();
    let first = door.write(b).await;
    assert_eq!(
        notes(db, a).await,
        0,
        "tenant {b}'s write landed in tenant {a}'s schema (it returned {first:?})"
    );
    let second = door.write(b).await;
    assert_eq!(
        second,
        Ok(()),
        "the checkout after {first:?} did not serve tenant {b}"
    );
    assert_eq!(notes(db, b).await, 1 + i64::from(first.is_ok()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_runs_behind_a_failed_switch_core_session_mode() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "stl_cs").await;
    no_write_runs_behind_a_failed_switch(&Door::Core(tenancy), &db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_runs_behind_a_failed_switch_core_transaction_mode() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Transaction, false, "stl_ct").await;
    no_write_runs_behind_a_failed_switch(&Door::Core(tenancy), &db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_runs_behind_a_failed_switch_core_behind_pgbouncer() {
    let db = database().await;
    let (_bouncer, tenancy) = bounced_tenancy(&db, 1, 2).await;
    let s = marked_tenants(&tenancy, "stl_cb", 2).await;
    no_write_runs_behind_a_failed_switch(&Door::Core(tenancy), &db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_runs_behind_a_failed_switch_sqlx_session_mode() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "stl_ss").await;
    let router = sqlx_over_one_connection(&db, &tenancy).await;
    no_write_runs_behind_a_failed_switch(&Door::Sqlx(router), &db, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_runs_behind_a_failed_switch_sqlx_behind_pgbouncer() {
    let (db, tenancy, s) = one_connection_core(SearchPathMode::Session, false, "stl_sb").await;
    let (_bouncer, router, _other) = sqlx_behind_one_server(&db, &tenancy, 2).await;
    no_write_runs_behind_a_failed_switch(&Door::Sqlx(router), &db, &s).await;
}

/// Runs `sql` on `db`'s admin pool, outside any tenant's door.
pub(super) async fn admin(db: &TestDatabase, sql: &str) {
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap();
}

/// A core checkout for tenant `s` (the registry's state), as a handler would take it.
pub(super) async fn checkout(tenancy: &Tenancy, s: &SchemaName) -> ConnectionScope {
    tenancy
        .router()
        .connection_for_tenant(&Tenant::new(s.clone()))
        .await
        .unwrap()
}

/// One checkout of tenant `s` that inserts a note with `body` into its `notes`.
pub(super) async fn writes(tenancy: &Tenancy, s: &SchemaName, body: &str) {
    checkout(tenancy, s)
        .await
        .execute("INSERT INTO notes (body) VALUES ($1)", &[&body])
        .await
        .unwrap();
}

/// `sql` run by a raw user of the pool the tenancy's router uses (`router.pool().get()`),
/// whatever it leaves on the connection it gives back.
pub(super) async fn raw(tenancy: &Tenancy, sql: &str) {
    tenancy
        .router()
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap();
}
