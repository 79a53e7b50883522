//! The set-up most database tests share, written once for the core's own tests and the
//! workspace's cross-crate tests: a fresh database on the shared cluster, a [`Tenancy`] over
//! it, tenants marked with their own name, short constructors for names, and a few looks at
//! what the database holds.
//!
//! These helpers panic when something fails: they are for tests.
//!
//! ```no_run
//! use tenant_schemas::testing::fixtures::{database, marked_tenants, marker_and_notes, tenancy};
//!
//! # async fn demo() {
//! let db = database().await;
//! let tenancy = tenancy(&db, marker_and_notes()).await;
//! // Tenants t0, t1, t2 on t0.test …, each with a `marker` row naming its schema.
//! let schemas = marked_tenants(&tenancy, "t", 3).await;
//! assert_eq!(schemas[2].as_str(), "t2");
//! # }
//! ```

use deadpool_postgres::Pool;

use super::{TestCluster, TestDatabase, TestPgBouncer};
use crate::host::Host;
use crate::migrate::TenantMigrations;
use crate::registry::NewTenant;
use crate::router::{ConnectionScope, SchemaRouter, SearchPathMode};
use crate::schema::SchemaName;
use crate::tenancy::Tenancy;

/// The rows of `schema.notes` (see [`marker_and_notes`]) whose `body` is `body`, counted over
/// `db`'s admin pool, outside any tenant's door.
pub async fn notes_with_body(db: &TestDatabase, schema: &SchemaName, body: &str) -> i64 {
    db.pool()
        .get()
        .await
        .expect("admin connection")
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.notes WHERE body = $1",
                schema.quoted()
            ),
            &[&body],
        )
        .await
        .expect("counting notes")
        .get(0)
}

/// A tenant migration creating `notes (id bigserial, body text)`.
pub const NOTES: &str = "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)";

/// A tenant migration creating `marker (schema_name text)`, which [`marked_tenants`] fills
/// with each tenant's own schema name: a row read through a connection shows which schema
/// the connection was on.
pub const MARKER: &str = "CREATE TABLE marker (schema_name text NOT NULL)";

/// A fresh, empty database on the [shared](TestCluster::shared) test cluster.
pub async fn database() -> TestDatabase {
    TestCluster::shared()
        .expect("test cluster")
        .create_database()
        .await
        .expect("test database")
}

/// Two fresh databases and a [`Tenancy`] over both, with [`marker_and_notes`]: `a` the
/// default one (the registry), `b` the shard named `b`, each through a pool of 4
/// connections: the set-up of the tests of tenants on another shard.
pub async fn two_databases() -> (TestDatabase, TestDatabase, Tenancy) {
    let (a, b) = (database().await, database().await);
    let tenancy = Tenancy::builder(a.new_pool(4).expect("pool"))
        .shard("b", b.new_pool(4).expect("pool"))
        .migrations(marker_and_notes())
        .build()
        .await
        .expect("tenancy");
    (a, b, tenancy)
}

/// A real PgBouncer in transaction pooling with `servers` server connections to `db`, and a
/// [`Tenancy`] in [transaction mode](SearchPathMode::Transaction) that reaches `db` only
/// through it (registry included), over a pool of `clients` connections, with
/// [`marker_and_notes`].
pub async fn bounced_tenancy(
    db: &TestDatabase,
    servers: usize,
    clients: usize,
) -> (TestPgBouncer, Tenancy) {
    let cluster = TestCluster::shared().expect("test cluster");
    let bouncer = TestPgBouncer::start(cluster, servers).expect("pgbouncer");
    let through = super::pool(bouncer.config(db.name()), clients).expect("pool");
    let tenancy = Tenancy::builder(through)
        .migrations(marker_and_notes())
        .search_path_mode(SearchPathMode::Transaction)
        .build()
        .await
        .expect("tenancy");
    (bouncer, tenancy)
}

/// A [`Tenancy`] over `db`'s pool with `migrations` (the registry installed).
pub async fn tenancy(db: &TestDatabase, migrations: TenantMigrations) -> Tenancy {
    Tenancy::builder(db.pool().clone())
        .migrations(migrations)
        .build()
        .await
        .expect("tenancy")
}

/// The migrations [`NOTES`], then [`MARKER`].
#[must_use]
pub fn marker_and_notes() -> TenantMigrations {
    TenantMigrations::new()
        .with("notes", NOTES)
        .with("marker", MARKER)
}

/// A schema name that must be valid.
#[must_use]
pub fn schema(name: &str) -> SchemaName {
    SchemaName::new(name).expect("valid schema name")
}

/// A host that must be valid.
#[must_use]
pub fn host(name: &str) -> Host {
    Host::parse(name).expect("valid host")
}

/// Creates the tenant `name` (without a domain) and puts its schema name in its `marker`
/// table (see [`MARKER`]) through `tenancy`'s router; returns its schema.
pub async fn marked_tenant(tenancy: &Tenancy, name: &str) -> SchemaName {
    let s = schema(name);
    tenancy
        .create_tenant(NewTenant::new(s.clone()))
        .await
        .expect("tenant created");
    tenancy
        .router()
        .connection_for_schema(&s)
        .await
        .expect("connection")
        .execute("INSERT INTO marker VALUES ($1)", &[&s.as_str()])
        .await
        .expect("marker row");
    s
}

/// Creates tenants `<prefix>0` to `<prefix><n - 1>`, each on the domain `<schema>.test`
/// (`_` written `-`) with a `marker` row holding its schema name and `i` notes (see
/// [`marker_and_notes`]); returns their schemas.
pub async fn marked_tenants(tenancy: &Tenancy, prefix: &str, n: usize) -> Vec<SchemaName> {
    let mut out = Vec::new();
    for i in 0..n {
        let s = schema(&format!("{prefix}{i}"));
        tenancy
            .create_tenant(
                NewTenant::new(s.clone())
                    .domain(host(&format!("{}{i}.test", prefix.replace('_', "-")))),
            )
            .await
            .expect("create tenant");
        let db = tenancy
            .router()
            .connection_for_schema(&s)
            .await
            .expect("connection");
        db.execute("INSERT INTO marker VALUES ($1)", &[&s.as_str()])
            .await
            .expect("marker");
        for _ in 0..i {
            db.execute("INSERT INTO notes (body) VALUES ('x')", &[])
                .await
                .expect("note");
        }
        out.push(s);
    }
    out
}

/// Creates `public.marker` holding the row `PUBLIC`: a statement that falls through to
/// `public` instead of running in its tenant's schema then reads `PUBLIC`, not an error.
pub async fn plant_public_marker(pool: &Pool) {
    pool.get()
        .await
        .expect("connection")
        .batch_execute(
            "CREATE TABLE public.marker (schema_name text NOT NULL);
             INSERT INTO public.marker VALUES ('PUBLIC')",
        )
        .await
        .expect("public marker");
}

/// A fresh database with tenants `<prefix>0..n` ([`marked_tenants`]) under a [`Tenancy`] in
/// `mode` over a pool of `size` connections (small pools reuse connections), and
/// [`plant_public_marker`]: the set-up of the misuse tests.
pub async fn marked_over_public(
    prefix: &str,
    n: usize,
    size: usize,
    mode: SearchPathMode,
) -> (TestDatabase, Tenancy, Vec<SchemaName>, Pool) {
    let db = database().await;
    let pool = db.new_pool(size).expect("pool");
    let tenancy = Tenancy::builder(pool.clone())
        .migrations(marker_and_notes())
        .search_path_mode(mode)
        .build()
        .await
        .expect("tenancy");
    let schemas = marked_tenants(&tenancy, prefix, n).await;
    plant_public_marker(&pool).await;
    (db, tenancy, schemas, pool)
}

/// Fills the `notes` table ([`NOTES`]) of `db`'s schema with about
/// `mb` MB: 1,000 rows of ~1 kB per MB, a statement per MB. For measuring a bigger tenant
/// (moves, exports) in a test asked for it by an environment variable.
pub async fn fill_notes(db: &ConnectionScope, mb: u32) {
    for _ in 0..mb {
        db.execute(
            "INSERT INTO notes (body) SELECT 'fill-' || repeat(md5(i::text), 31)
             FROM generate_series(1, 1000) AS i",
            &[],
        )
        .await
        .expect("filling notes");
    }
}

/// The `marker` row `db` reads: the schema its statements run in (`PUBLIC` for a
/// fall-through, see [`plant_public_marker`]).
pub async fn marker_of(db: &ConnectionScope) -> String {
    db.query_one("SELECT schema_name FROM marker", &[])
        .await
        .expect("marker query")
        .get(0)
}

/// What a fresh checkout of `router` for `schema` reads from `marker`, or the error it
/// gets (e.g. [`Error::SchemaMissing`](crate::Error::SchemaMissing)).
pub async fn try_seen_by(router: &SchemaRouter, schema: &SchemaName) -> crate::Result<String> {
    router
        .connection_for_schema(schema)
        .await?
        .query_one("SELECT schema_name FROM marker", &[])
        .await
        .map(|row| row.get(0))
}

/// The `marker` row a fresh checkout of `router` for `schema` reads.
pub async fn seen_by(router: &SchemaRouter, schema: &SchemaName) -> String {
    marker_of(
        &router
            .connection_for_schema(schema)
            .await
            .expect("connection"),
    )
    .await
}

/// Whether `db` has a schema called `name`.
pub async fn schema_exists(db: &TestDatabase, name: &str) -> bool {
    count(
        db,
        "SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = $1",
        name,
    )
    .await
        == 1
}

/// Whether the registry of `db` has a row for the schema `name`.
pub async fn is_registered(db: &TestDatabase, name: &str) -> bool {
    count(
        db,
        "SELECT count(*) FROM public.tenant_schemas_tenants WHERE schema_name = $1",
        name,
    )
    .await
        == 1
}

/// The schemas of `db` holding a relation (table, view, sequence …) called `name`, sorted.
pub async fn schemas_holding(db: &TestDatabase, name: &str) -> Vec<String> {
    let conn = db.pool().get().await.expect("connection");
    conn.query(
        "SELECT n.nspname::text FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relname = $1 ORDER BY 1",
        &[&name],
    )
    .await
    .expect("catalog query")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn count(db: &TestDatabase, sql: &str, name: &str) -> i64 {
    let conn = db.pool().get().await.expect("connection");
    conn.query_one(sql, &[&name])
        .await
        .expect("catalog query")
        .get(0)
}

/// Until `sql`, a count over `db` (with `params`), is above zero: a backend waiting for a
/// lock, say, so that a test goes on once what it holds up is under way instead of after a
/// pause, which a busy machine outruns. Panics after a minute.
pub async fn until_counted(
    db: &TestDatabase,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) {
    let conn = db.pool().get().await.expect("connection");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n: i64 = conn
            .query_one(sql, params)
            .await
            .expect("catalog query")
            .get(0);
        if n > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited a minute for a count above zero of: {sql}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The SQLSTATE of the server's error `err` carries, if any (e.g. `42501`,
/// `insufficient_privilege`): [`Error::as_db_error`](crate::Error::as_db_error)'s code.
#[must_use]
pub fn sqlstate(err: &crate::Error) -> Option<String> {
    err.as_db_error().map(|db| db.code().code().to_owned())
}

/// A statement whose parse and analysis trees take hundreds of megabytes (an `IN` list of `n`
/// constants) and that, run, leaves `search_path = path` and `statement_timeout = 1ms` on the
/// session. Left as a server connection's unnamed prepared statement, PostgreSQL frees it at
/// the start of the next message — after that message's `statement_timeout` (the 1 ms left)
/// has started, before its first statement runs.
#[must_use]
pub fn heavy_unnamed(path: &str, n: usize) -> String {
    let mut sql = format!(
        "SELECT pg_catalog.set_config('search_path', '{path}', false), \
         pg_catalog.set_config('statement_timeout', '1', false) WHERE 1 IN ("
    );
    for _ in 0..n {
        sql.push_str("1,");
    }
    sql.push_str("1)");
    sql
}
