//! The SQL of moving a tenant to another database by logical replication of its schema
//! (see [`Tenancy::move_to_shard`](crate::Tenancy::move_to_shard)): the checks, the
//! publication, slot and subscription, the waits, the fence, and the cleanup.
//!
//! Every publication, replication slot and subscription a move makes is named
//! `tsmove_<16 hex digits of the schema's name>_<8 random hex digits>`: a move of the same
//! schema finds the leftovers of an earlier one (one whose process died) by the prefix and
//! removes them first, on every database. The target schema carries the comment
//! [`MOVE_COMMENT`] until the move has switched the registry: a re-run drops such a schema
//! when the registry does not place the tenant there.

use std::time::{Duration, Instant};

use deadpool_postgres::Object;
use tokio_postgres::types::Type;

use super::dependents::{lock_and_refuse, refuse_outside_dependents, Dropping};
use super::export::ident;
use super::notify::announce;
use super::Registry;
use crate::connect::ConnectionSettings;
use crate::databases::Databases;
use crate::error::{Error, Result};
use crate::migrate::MIGRATE_LOCK;
use crate::receipt::{ShardMoveReport, TableRows};
use crate::schema::SchemaName;
use crate::shard::ShardName;
use crate::tenant::TenantRecord;

/// The comment a move's target schema carries until the registry places the tenant there.
pub(crate) const MOVE_COMMENT: &str = "tenant-schemas: a move in progress copies here";

/// How often the waits look again.
const POLL: Duration = Duration::from_millis(10);

/// How often the waits flush the source's WAL (see [`wait_confirmed`]).
const NUDGE_EVERY: Duration = Duration::from_millis(100);

/// How long the fence waits for the target to confirm the source's last writes before the
/// move gives up (writes are held meanwhile).
const FENCE_CATCH_UP: Duration = Duration::from_secs(30);

/// How long the catch-up before the fence may take.
const CATCH_UP: Duration = Duration::from_secs(600);

/// How long the fence waits for the table locks (writers that are in a transaction).
const FENCE_LOCK_TIMEOUT: &str = "10s";

/// Takes the migration lock on `lock` (a connection out of the pool) if nobody holds it:
/// whether it did.
async fn try_migration_lock(
    lock: &deadpool_postgres::ClientWrapper,
    schema: &SchemaName,
) -> Result<bool> {
    Ok(lock
        .query_typed_one(
            "SELECT pg_catalog.pg_try_advisory_lock($1)",
            &[(&MIGRATE_LOCK, Type::INT8)],
        )
        .await
        .map_err(|e| Error::db("taking the migration lock", schema, e))?
        .get(0))
}

/// Releases the migration lock [`try_migration_lock`] took, then closes its connection.
/// Closing alone releases it only once the server notices the connection is gone: a move or
/// migration started right after this one found the lock still held (a move refused with
/// "another move is in progress", more often on a busy machine). A failure is logged; the
/// closing still releases it.
async fn release_migration_lock(lock: deadpool_postgres::ClientWrapper) {
    if let Err(e) = lock
        .execute_typed(
            "SELECT pg_catalog.pg_advisory_unlock($1)",
            &[(&MIGRATE_LOCK, Type::INT8)],
        )
        .await
    {
        tracing::warn!(error = %e, "the migration lock was not released; closing its connection releases it");
    }
}

/// FNV-1a: a hash that stays the same across Rust versions and processes.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Eight hex digits that differ between moves (the time, the process, a counter).
fn unique_suffix() -> u32 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let h = fnv1a(&format!("{nanos}-{}-{n}", std::process::id()));
    (h ^ (h >> 32)) as u32
}

/// The prefix of the names of every move of `schema`'s publication, slot and subscription.
pub(crate) fn move_prefix(schema: &SchemaName) -> String {
    format!("tsmove_{:016x}_", fnv1a(schema.as_str()))
}

/// A `key=value` connection string value, quoted for libpq.
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The connection string the target's subscription connects to the source with: from the
/// settings the source's pool was made with when they are known (host, port, user,
/// password, database, sslmode, sslrootcert), otherwise from what the source server says
/// about the connection (no password then).
pub(crate) fn conninfo(settings: &ConnectionSettings) -> String {
    let config = settings.config();
    let mut parts = Vec::new();
    if let Some(host) = config.get_hosts().first() {
        let host = match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        };
        parts.push(format!("host={}", conninfo_value(&host)));
    }
    if let Some(port) = config.get_ports().first() {
        parts.push(format!("port={port}"));
    }
    if let Some(user) = config.get_user() {
        parts.push(format!("user={}", conninfo_value(user)));
    }
    if let Some(password) = config.get_password() {
        parts.push(format!(
            "password={}",
            conninfo_value(&String::from_utf8_lossy(password))
        ));
    }
    if let Some(dbname) = config.get_dbname() {
        parts.push(format!("dbname={}", conninfo_value(dbname)));
    }
    parts.push(format!("sslmode={}", settings.get_ssl_mode().as_str()));
    if let Some(root) = settings.get_root_cert() {
        parts.push(format!(
            "sslrootcert={}",
            conninfo_value(&root.display().to_string())
        ));
    }
    parts.join(" ")
}

/// The connection string of the server `conn` is connected to, as that server describes
/// the connection: its address (or first Unix socket directory), port, user and database.
async fn conninfo_from_server(conn: &Object, schema: &SchemaName) -> Result<String> {
    let row = conn
        .query_one(
            "SELECT pg_catalog.host(pg_catalog.inet_server_addr()),
                    pg_catalog.current_setting('port'),
                    pg_catalog.split_part(pg_catalog.current_setting('unix_socket_directories'), ',', 1),
                    current_user::text, pg_catalog.current_database()::text",
            &[],
        )
        .await
        .map_err(|e| Error::db("reading the source's address", schema, e))?;
    let addr: Option<String> = row.get(0);
    let port: String = row.get(1);
    let socket: String = row.get(2);
    let host = addr.unwrap_or_else(|| socket.trim().to_owned());
    let user: String = row.get(3);
    let dbname: String = row.get(4);
    Ok(format!(
        "host={} port={} user={} dbname={}",
        conninfo_value(&host),
        conninfo_value(&port),
        conninfo_value(&user),
        conninfo_value(&dbname)
    ))
}

/// A string literal for SQL (standard_conforming_strings on, as since PostgreSQL 9.1).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn refused(schema: &SchemaName, reason: impl Into<String>) -> Error {
    Error::ShardMove {
        schema: schema.clone(),
        reason: reason.into(),
    }
}

fn quoted_table(schema: &SchemaName, table: &str) -> String {
    format!("{}.\"{}\"", schema.quoted(), table.replace('"', "\"\""))
}

/// The plain tables of `schema` (partitions included: replication copies them), by name.
async fn replicated_tables(
    conn: &impl deadpool_postgres::GenericClient,
    schema: &SchemaName,
) -> std::result::Result<Vec<String>, tokio_postgres::Error> {
    let rows = conn
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
            &[&schema.as_str()],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A move prepared up to the fence: the target holds a copy kept current by the
/// subscription. Holds the connections the fence needs (taken before the schema's gate
/// closes) and the migration lock.
pub(crate) struct PreparedMove {
    pub(crate) record: TenantRecord,
    pub(crate) to: ShardName,
    source: Object,
    /// A second connection to the source, to flush its WAL while the fence waits.
    nudge: Object,
    target: Object,
    registry: Object,
    name: String,
    started: Instant,
    pub(crate) cleanup: MoveCleanup,
}

impl std::fmt::Debug for PreparedMove {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedMove")
            .field("schema", &self.record.schema)
            .field("to", &self.to)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PreparedMove {
    /// A connection to the source database (for cutting drivers off).
    pub(crate) fn source(&self) -> &Object {
        &self.source
    }

    /// When the move began.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }
}

/// What a move made that must go again: the subscription (target), the publication and slot
/// (source) and, before the registry switch, the target schema. Run by
/// [`run`](Self::run), or in the background when dropped armed (a move given up half-way).
#[derive(Debug)]
pub(crate) struct MoveCleanup {
    databases: Databases,
    schema: SchemaName,
    from: ShardName,
    to: ShardName,
    name: String,
    /// Whether the target schema is dropped too (until the registry placed the tenant there).
    pub(crate) drop_target: bool,
    armed: bool,
    /// The migration lock's connection (out of the pool: closing it releases the lock),
    /// closed once the cleanup is over.
    lock: Option<deadpool_postgres::ClientWrapper>,
}

impl MoveCleanup {
    /// Removes what the move made; errors are logged, not returned (the next move of the
    /// schema removes leftovers too).
    pub(crate) async fn run(mut self) {
        self.armed = false;
        let (databases, schema) = (self.databases.clone(), self.schema.clone());
        if let Err(e) = drop_subscription(&databases, &self.to, &schema, &self.name).await {
            tracing::warn!(schema = %schema, error = %e, "move cleanup: subscription not dropped");
        }
        if let Err(e) = drop_source_side(&databases, &self.from, &schema, &self.name).await {
            tracing::warn!(schema = %schema, error = %e, "move cleanup: publication or slot not dropped");
        }
        let target = async {
            let conn = databases.connect(&self.to, &schema).await?;
            let sql = if self.drop_target {
                format!("DROP SCHEMA IF EXISTS {} CASCADE", schema.quoted())
            } else {
                format!("COMMENT ON SCHEMA {} IS NULL", schema.quoted())
            };
            conn.batch_execute(&sql)
                .await
                .map_err(|e| Error::db("cleaning up after a move", &schema, e))
        };
        if let Err(e) = target.await {
            tracing::warn!(schema = %schema, error = %e, "move cleanup: target schema not cleaned up");
        }
        if let Some(lock) = self.lock.take() {
            release_migration_lock(lock).await;
        }
    }

    /// This cleanup, to be run in the foreground; `self` is left disarmed.
    pub(crate) fn take(&mut self) -> Self {
        let armed = std::mem::replace(&mut self.armed, false);
        Self {
            databases: self.databases.clone(),
            schema: self.schema.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            name: self.name.clone(),
            drop_target: self.drop_target,
            armed,
            lock: self.lock.take(),
        }
    }
}

impl Drop for MoveCleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut this = self.take();
        this.armed = false;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let schema = this.schema.clone();
                    this.run().await;
                    tracing::info!(schema = %schema, "a move given up half-way: cleaned up");
                });
            }
            Err(_) => tracing::warn!(schema = %self.schema,
                "a move given up outside a runtime: its publication, slot and subscription are left (a new move of the schema removes them)"),
        }
    }
}

/// Disables and drops subscription `name` on database `shard` (detached from its slot
/// first, so nothing connects to the source for it).
async fn drop_subscription(
    databases: &Databases,
    shard: &ShardName,
    schema: &SchemaName,
    name: &str,
) -> Result<()> {
    let conn = databases.connect(shard, schema).await?;
    let db = |e| Error::db("dropping a move's subscription", schema, e);
    let exists: bool = conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription
                            WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_catalog.pg_database
                                                               WHERE datname = pg_catalog.current_database()))",
            &[&name],
        )
        .await
        .map_err(db)?
        .get(0);
    if !exists {
        return Ok(());
    }
    for sql in [
        format!("ALTER SUBSCRIPTION {} DISABLE", ident(name)),
        format!("ALTER SUBSCRIPTION {} SET (slot_name = NONE)", ident(name)),
        format!("DROP SUBSCRIPTION {}", ident(name)),
    ] {
        conn.batch_execute(&sql).await.map_err(db)?;
    }
    Ok(())
}

/// Drops publication and slot `name` on database `shard`; a slot still in use (its
/// subscription's worker exiting) is waited for up to 10 s, then its WAL sender ended.
async fn drop_source_side(
    databases: &Databases,
    shard: &ShardName,
    schema: &SchemaName,
    name: &str,
) -> Result<()> {
    let conn = databases.connect(shard, schema).await?;
    let db = |e| Error::db("dropping a move's publication and slot", schema, e);
    conn.batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", ident(name)))
        .await
        .map_err(db)?;
    drop_slot(&conn, schema, name).await
}

async fn drop_slot(conn: &Object, schema: &SchemaName, name: &str) -> Result<()> {
    let db = |e| Error::db("dropping a move's replication slot", schema, e);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = conn
            .query_opt(
                "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(()) };
        match row.get::<_, Option<i32>>(0) {
            None => {
                conn.query("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&name])
                    .await
                    .map_err(db)?;
                return Ok(());
            }
            // Still streaming to a subscriber that was not dropped (another server's):
            // its WAL sender is ended, so the slot stops retaining WAL.
            Some(pid) if Instant::now() >= deadline => {
                conn.query("SELECT pg_catalog.pg_terminate_backend($1)", &[&pid])
                    .await
                    .map_err(db)?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

impl Registry {
    /// Removes what earlier moves of `schema` left (their process died): subscriptions,
    /// publications and slots named after it on every database, and a half-copied target
    /// schema (still commented [`MOVE_COMMENT`]) on a database other than `registered`.
    /// Only while holding the migration lock, which every move holds: nothing it removes
    /// belongs to a move still running.
    async fn remove_leftovers(&self, schema: &SchemaName, registered: &ShardName) -> Result<()> {
        let prefix = move_prefix(schema);
        let like = format!("{prefix}%");
        let db = |e| Error::db("removing an earlier move's leftovers", schema, e);
        for (shard, _) in self.databases.iter() {
            let conn = self.databases.connect(shard, schema).await?;
            let subs: Vec<String> = conn
                .query(
                    "SELECT subname::text FROM pg_catalog.pg_subscription
                     WHERE subname LIKE $1 AND subdbid = (SELECT oid FROM pg_catalog.pg_database
                                                          WHERE datname = pg_catalog.current_database())",
                    &[&like],
                )
                .await
                .map_err(db)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for name in subs {
                tracing::warn!(schema = %schema, shard = %shard, subscription = %name, "dropping an earlier move's subscription");
                drop_subscription(&self.databases, shard, schema, &name).await?;
            }
        }
        for (shard, _) in self.databases.iter() {
            let conn = self.databases.connect(shard, schema).await?;
            let pubs: Vec<String> = conn
                .query(
                    "SELECT pubname::text FROM pg_catalog.pg_publication WHERE pubname LIKE $1",
                    &[&like],
                )
                .await
                .map_err(db)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if !pubs.is_empty() && shard != registered {
                let stale: bool = conn
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1
                           AND pg_catalog.obj_description(oid, 'pg_namespace') IS DISTINCT FROM $2)",
                        &[&schema.as_str(), &MOVE_COMMENT],
                    )
                    .await
                    .map_err(db)?
                    .get(0);
                if stale {
                    tracing::error!(schema = %schema, shard = %shard, registered = %registered,
                        "a move away from this database died after switching the registry: the \
                         schema left here is a stale copy (the tenant is served from the \
                         registered database); look it over and drop it by hand");
                }
            }
            for name in pubs {
                tracing::warn!(schema = %schema, shard = %shard, publication = %name, "dropping an earlier move's publication");
                conn.batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", ident(&name)))
                    .await
                    .map_err(db)?;
            }
            let slots: Vec<String> = conn
                .query(
                    "SELECT slot_name::text FROM pg_catalog.pg_replication_slots
                     WHERE slot_name LIKE $1 AND database = pg_catalog.current_database()",
                    &[&like],
                )
                .await
                .map_err(db)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for name in slots {
                tracing::warn!(schema = %schema, shard = %shard, slot = %name, "dropping an earlier move's replication slot");
                drop_slot(&conn, schema, &name).await?;
            }
            if shard != registered {
                let half_copied: bool = conn
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace
                         WHERE nspname = $1
                           AND pg_catalog.obj_description(oid, 'pg_namespace') = $2)",
                        &[&schema.as_str(), &MOVE_COMMENT],
                    )
                    .await
                    .map_err(db)?
                    .get(0);
                if half_copied {
                    tracing::warn!(schema = %schema, shard = %shard, "dropping an earlier move's half-copied schema");
                    conn.batch_execute(&format!("DROP SCHEMA {} CASCADE", schema.quoted()))
                        .await
                        .map_err(db)?;
                }
            }
        }
        Ok(())
    }

    /// Checks a move of `schema` to `to`, takes the migration lock, builds the schema on
    /// `to`, and replicates it there until the copy is current. `Ok(Err(report))` when the
    /// tenant is on `to` already.
    pub(crate) async fn prepare_move(
        &self,
        schema: &SchemaName,
        to: &ShardName,
        source_settings: Option<&ConnectionSettings>,
    ) -> Result<std::result::Result<PreparedMove, ShardMoveReport>> {
        let started = Instant::now();
        if schema.is_public() {
            return Err(Error::Refused {
                what: "moving the public schema to another database",
                instead: "the public schema holds the registry and the shared tables; only \
                          tenant schemas can be moved",
            });
        }
        let record = self.get(schema).await?;
        self.databases.get(to)?;
        if &record.shard == to {
            // A move that died after its switch left its publication and slot on the old
            // database (retaining WAL): removed now, unless a migration or move runs.
            let lock = Object::take(self.conn().await?);
            let locked = try_migration_lock(&lock, schema).await?;
            if locked {
                let removed = self.remove_leftovers(schema, to).await;
                release_migration_lock(lock).await;
                removed?;
            }
            return Ok(Err(ShardMoveReport {
                schema: schema.clone(),
                from: record.shard.clone(),
                to: to.clone(),
                moved: false,
                rows: Vec::new(),
                took: Duration::ZERO,
                writes_held: Duration::ZERO,
            }));
        }
        let from = record.shard.clone();
        let public = SchemaName::public();
        // The migration lock, for the whole move: no tenant DDL meanwhile, no second move.
        let lock = Object::take(self.conn().await?);
        let locked = try_migration_lock(&lock, &public).await?;
        if !locked {
            return Err(refused(
                schema,
                "a migration run or another move is in progress (it holds the migration lock); \
                 try again once it is over",
            ));
        }
        self.remove_leftovers(schema, &from).await?;
        // The registry may have changed before the lock was ours.
        let record = self.get(schema).await?;
        if record.shard != from {
            return Err(refused(schema, "the tenant was moved meanwhile; try again"));
        }
        let source = self.databases.connect(&from, schema).await?;
        let nudge = self.databases.connect(&from, schema).await?;
        let target = self.databases.connect(to, schema).await?;
        let registry = self.conn().await?;
        let db = |e| Error::db("preparing a move", schema, e);
        // Objects outside the schema that depend on it could not be moved with it, and
        // dropping the source schema would destroy them.
        refuse_outside_dependents(&source, schema, Dropping::Move).await?;
        let wal_level: String = source
            .query_one("SELECT pg_catalog.current_setting('wal_level')", &[])
            .await
            .map_err(db)?
            .get(0);
        if wal_level != "logical" {
            return Err(refused(
                schema,
                format!(
                    "the source database `{from}` has wal_level = {wal_level}: a move needs \
                     wal_level = logical (set it in postgresql.conf and restart the server)"
                ),
            ));
        }
        let latest = self.sets.tenant.latest();
        if record.version != latest {
            return Err(refused(
                schema,
                format!(
                    "the tenant is at migration version {}, these tenant migrations end at \
                     {latest}: migrate first (with the migrations of the tenant's version)",
                    record.version
                ),
            ));
        }
        if self.sets.tenant.iter().any(|m| m.no_transaction) {
            return Err(Error::Refused {
                what: "moving a tenant when the tenant migrations have no-transaction steps",
                instead: "export the tenant and restore it on the other database",
            });
        }
        let no_identity: Vec<String> = source
            .query(
                "SELECT c.relname::text FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind = 'r'
                   AND (c.relreplident = 'n'
                        OR (c.relreplident = 'd' AND NOT EXISTS (
                              SELECT 1 FROM pg_catalog.pg_index i
                              WHERE i.indrelid = c.oid AND i.indisprimary)))
                 ORDER BY 1",
                &[&schema.as_str()],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let unlogged: Vec<String> = source
            .query(
                "SELECT c.relname::text FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relpersistence = 'u'
                 ORDER BY 1",
                &[&schema.as_str()],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !unlogged.is_empty() {
            return Err(refused(
                schema,
                format!(
                    "table(s) {} are unlogged, and logical replication cannot copy them",
                    unlogged.join(", ")
                ),
            ));
        }
        if !no_identity.is_empty() {
            return Err(refused(
                schema,
                format!(
                    "table(s) {} have no primary key or replica identity, so their updates and \
                     deletes could not be replicated during the move: give them a primary key \
                     (or `ALTER TABLE … REPLICA IDENTITY FULL`) in a migration",
                    no_identity.join(", ")
                ),
            ));
        }
        let exists: bool = target
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
                &[&schema.as_str()],
            )
            .await
            .map_err(db)?
            .get(0);
        if exists {
            return Err(refused(
                schema,
                format!("a schema `{schema}` exists on the target database `{to}` already"),
            ));
        }
        let conninfo = match source_settings {
            Some(settings) => conninfo(settings),
            None => conninfo_from_server(&source, schema).await?,
        };
        let name = format!("{}{:08x}", move_prefix(schema), unique_suffix());
        let mut prepared = PreparedMove {
            record,
            to: to.clone(),
            source,
            nudge,
            target,
            registry,
            name: name.clone(),
            started,
            // From here on, anything made is removed again on an error or when given up.
            cleanup: MoveCleanup {
                databases: self.databases.clone(),
                schema: schema.clone(),
                from,
                to: to.clone(),
                name,
                drop_target: true,
                armed: true,
                lock: Some(lock),
            },
        };
        match self.replicate(&mut prepared, &conninfo).await {
            Ok(()) => Ok(Ok(prepared)),
            Err(e) => {
                prepared.cleanup.take().run().await;
                Err(e)
            }
        }
    }

    /// The target schema (migrated, emptied), publication, slot and subscription, then the
    /// waits for the copy and the catch-up.
    async fn replicate(&self, m: &mut PreparedMove, conninfo: &str) -> Result<()> {
        let schema = m.record.schema.clone();
        let name = m.name.clone();
        let db = |e| Error::db("moving a tenant", &schema, e);
        // The target schema, migrated to the tenant's version, emptied: the copy brings the
        // rows, the migration history's included.
        {
            let tx = m.target.transaction().await.map_err(db)?;
            tx.batch_execute(&format!(
                "CREATE SCHEMA {q}; COMMENT ON SCHEMA {q} IS '{MOVE_COMMENT}'",
                q = schema.quoted()
            ))
            .await
            .map_err(db)?;
            self.sets.tenant.apply(&tx, &schema).await?;
            // Role mode: the tenant's role (made on the target's cluster if it is another)
            // is granted the target schema before anything can reach it there.
            if let (Some(role), Some(roles)) = (&m.record.role, self.roles()) {
                tx.batch_execute(&crate::roles::attach_sql(&schema, role, roles))
                    .await
                    .map_err(db)?;
            }
            let tables = replicated_tables(&tx, &schema).await.map_err(db)?;
            if !tables.is_empty() {
                let list: Vec<String> = tables.iter().map(|t| quoted_table(&schema, t)).collect();
                tx.batch_execute(&format!("TRUNCATE {} CASCADE", list.join(", ")))
                    .await
                    .map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
        }
        // Made separately from the subscription: on one cluster, a subscription making its
        // own slot waits for itself. The subscription commits synchronously: the target
        // then confirms a change as soon as it is applied, not once its WAL writer flushed
        // (up to 200 ms later, which the fence would wait; measured: 630 ms held under a
        // write load with the default `off`, 20 ms with `on`).
        m.source
            .batch_execute(&format!(
                "CREATE PUBLICATION {name} FOR TABLES IN SCHEMA {}",
                schema.quoted()
            ))
            .await
            .map_err(db)?;
        m.source
            .query(
                "SELECT pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&name],
            )
            .await
            .map_err(db)?;
        m.target
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION {name} CONNECTION {} PUBLICATION {name} \
                 WITH (create_slot = false, slot_name = '{name}', copy_data = true, \
                       synchronous_commit = on)",
                quote_literal(conninfo)
            ))
            .await
            .map_err(db)?;
        // The initial copy: every table of the publication ready.
        let published: i64 = m
            .source
            .query_one(
                "SELECT pg_catalog.count(*) FROM pg_catalog.pg_publication_tables WHERE pubname = $1",
                &[&name],
            )
            .await
            .map_err(db)?
            .get(0);
        loop {
            let row = m
                .target
                .query_one(
                    "SELECT pg_catalog.count(*) FILTER (WHERE r.srsubstate = 'r'),
                            coalesce(max(st.apply_error_count + st.sync_error_count), 0)
                     FROM pg_catalog.pg_subscription s
                     LEFT JOIN pg_catalog.pg_subscription_rel r ON r.srsubid = s.oid
                     LEFT JOIN pg_catalog.pg_stat_subscription_stats st ON st.subid = s.oid
                     WHERE s.subname = $1",
                    &[&name],
                )
                .await
                .map_err(db)?;
            let (ready, errors): (i64, i64) = (row.get(0), row.get(1));
            if errors > 0 {
                return Err(refused(
                    &schema,
                    "the subscription on the target failed (see the target server's log: \
                     can it connect to the source? is the role a superuser?)",
                ));
            }
            if ready >= published {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        // The catch-up: the target confirmed what the source had written by now.
        let lsn: String = m
            .source
            .query_one("SELECT pg_catalog.pg_current_wal_insert_lsn()::text", &[])
            .await
            .map_err(db)?
            .get(0);
        wait_confirmed(&m.source, &m.nudge, &schema, &name, &lsn, CATCH_UP).await?;
        // Materialized views are not replicated: filled from the copied rows (before the
        // fence, so as of a moment before the cut-over).
        let views: Vec<String> = m
            .target
            .query(
                "SELECT c.relname::text FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind = 'm' ORDER BY 1",
                &[&schema.as_str()],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for view in views {
            m.target
                .batch_execute(&format!(
                    "REFRESH MATERIALIZED VIEW {}",
                    quoted_table(&schema, &view)
                ))
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    /// The fence and the switch (see [`Tenancy::move_to_shard`](crate::Tenancy::move_to_shard)):
    /// the caller has closed the schema's gate and cut drivers off; `fenced` is when.
    /// Returns the cleanup too, for the caller to run once the gate is open again
    /// (requests held back at the gate hold pooled connections the cleanup may need).
    pub(crate) async fn finish_move(
        &self,
        mut m: PreparedMove,
        fenced: Instant,
    ) -> (Result<ShardMoveReport>, MoveCleanup) {
        let schema = m.record.schema.clone();
        let (from, to) = (m.record.shard.clone(), m.to.clone());
        let name = m.name.clone();
        let db = |e| Error::db("moving a tenant", &schema, e);
        let outcome = async {
            let stx = m.source.transaction().await.map_err(db)?;
            let tables = replicated_tables(&stx, &schema).await.map_err(db)?;
            let list: Vec<String> = tables.iter().map(|t| quoted_table(&schema, t)).collect();
            stx.batch_execute(&format!("SET LOCAL lock_timeout = '{FENCE_LOCK_TIMEOUT}'"))
                .await
                .map_err(db)?;
            if !list.is_empty() {
                // Writers of every process wait from here; readers go on.
                stx.batch_execute(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", list.join(", ")))
                    .await
                    .map_err(db)?;
            }
            let lsn: String = stx
                .query_one("SELECT pg_catalog.pg_current_wal_insert_lsn()::text", &[])
                .await
                .map_err(db)?
                .get(0);
            wait_confirmed(&stx, &m.nudge, &schema, &name, &lsn, FENCE_CATCH_UP).await?;
            // Every table holds as many rows on both sides.
            let mut rows = Vec::with_capacity(tables.len());
            for (table, q) in tables.iter().zip(&list) {
                let sql = format!("SELECT pg_catalog.count(*) FROM {q}");
                // Both sides at once: the fence lasts as long as the larger count.
                let (here, there) =
                    tokio::join!(stx.query_one(&sql, &[]), m.target.query_one(&sql, &[]));
                let here: i64 = here.map_err(db)?.get(0);
                let there: i64 = there.map_err(db)?.get(0);
                if here != there {
                    return Err(refused(
                        &schema,
                        format!(
                            "table {table} holds {here} rows on the source and {there} on the \
                             target after the catch-up: the move is given up"
                        ),
                    ));
                }
                rows.push(TableRows {
                    table: table.clone(),
                    rows: here,
                });
            }
            // Sequences are not replicated: their positions are copied.
            let sequences = stx
                .query(
                    "SELECT c.relname::text FROM pg_catalog.pg_class c
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relkind = 'S' ORDER BY 1",
                    &[&schema.as_str()],
                )
                .await
                .map_err(db)?;
            for row in sequences {
                let sequence: String = row.get(0);
                let q = quoted_table(&schema, &sequence);
                let position = stx
                    .query_one(&format!("SELECT last_value, is_called FROM {q}"), &[])
                    .await
                    .map_err(db)?;
                let (value, called): (i64, bool) = (position.get(0), position.get(1));
                m.target
                    .query_typed(
                        "SELECT pg_catalog.setval($1::regclass, $2, $3)",
                        &[
                            (&q, Type::TEXT),
                            (&value, Type::INT8),
                            (&called, Type::BOOL),
                        ],
                    )
                    .await
                    .map_err(db)?;
            }
            // Nothing outside depends on the schema since the move began: looked for again
            // once its tables are held as the drop holds them.
            lock_and_refuse(&stx, &schema, Dropping::Move).await?;
            // The source schema goes in the fence's transaction: writers waiting on the
            // locks then fail instead of writing where nobody reads.
            stx.batch_execute(&format!("DROP SCHEMA {} CASCADE", schema.quoted()))
                .await
                .map_err(db)?;
            // The switch, on the registry's database.
            let hosts: Vec<&str> = m.record.domains.iter().map(String::as_str).collect();
            let rtx = m.registry.transaction().await.map_err(db)?;
            let switched = rtx
                .execute_typed(
                    "UPDATE public.tenant_schemas_tenants SET shard = $3
                     WHERE schema_name = $1 AND shard = $2",
                    &[
                        (&schema.as_str(), Type::TEXT),
                        (&from.as_str(), Type::TEXT),
                        (&to.as_str(), Type::TEXT),
                    ],
                )
                .await
                .map_err(db)?;
            if switched != 1 {
                return Err(refused(
                    &schema,
                    "the tenant's registry row changed during the move",
                ));
            }
            announce(&rtx, &schema, &hosts).await.map_err(db)?;
            // From the commit on, the tenant lives on the target whatever happens next.
            m.cleanup.drop_target = false;
            if let Err(e) = rtx.commit().await {
                // Committed or not? The registry says.
                let now = self.get(&schema).await.map(|r| r.shard);
                if now.as_ref().ok() != Some(&to) {
                    m.cleanup.drop_target = true;
                    return Err(db(e));
                }
            }
            if let Err(e) = stx.commit().await {
                tracing::error!(schema = %schema, shard = %from, error = %e,
                    "moved, but the source schema could not be dropped: drop it by hand");
                // Dropped on a fresh connection instead, unless objects outside it have come
                // to depend on it since the fence's transaction ended (then it stays, stale).
                let mut conn = self.databases.connect(&from, &schema).await?;
                let tx = conn.transaction().await.map_err(db)?;
                match lock_and_refuse(&tx, &schema, Dropping::Move).await {
                    Ok(()) => {
                        tx.batch_execute(&format!(
                            "DROP SCHEMA IF EXISTS {} CASCADE",
                            schema.quoted()
                        ))
                        .await
                        .map_err(db)?;
                        tx.commit().await.map_err(db)?;
                    }
                    Err(e @ Error::OutsideDependents { .. }) => {
                        tracing::error!(schema = %schema, shard = %from, error = %e,
                            "moved; the stale source schema is kept: drop it by hand");
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, Error>(rows)
        }
        .await;
        let writes_held = fenced.elapsed();
        let cleanup = m.cleanup.take();
        let report = outcome.map(|rows| ShardMoveReport {
            schema,
            from,
            to,
            moved: true,
            rows,
            took: m.started.elapsed(),
            writes_held,
        });
        (report, cleanup)
    }
}

/// Waits until slot `name` (on the database of `conn`) confirms `lsn`, for at most `limit`.
///
/// `lsn` is read with `pg_current_wal_insert_lsn()`, not `pg_current_wal_lsn()` (where WAL
/// is *written*): with `synchronous_commit = off` a transaction's commit record may be
/// inserted but not yet written when its client hears of the commit, and a wait for the
/// write position would miss it (the fence's row counts caught that: the target lacked the
/// last transactions). WAL senders send only flushed WAL, which the WAL writer flushes
/// within `wal_writer_delay` (200 ms): `nudge` (another connection to the source) commits a
/// transaction with `synchronous_commit = on` now and then, which flushes everything
/// inserted before it at once. The transaction must write WAL for its commit to flush
/// (a mere `txid_current()` does not: measured, the fence then waited the 200 ms): it
/// writes a transactional logical message, which `pgoutput` does not send (the
/// subscription does not ask for messages).
async fn wait_confirmed(
    conn: &impl deadpool_postgres::GenericClient,
    nudge: &Object,
    schema: &SchemaName,
    name: &str,
    lsn: &str,
    limit: Duration,
) -> Result<()> {
    let db = |e| Error::db("waiting for the target to catch up", schema, e);
    let deadline = Instant::now() + limit;
    let mut nudged: Option<Instant> = None;
    loop {
        if nudged.is_none_or(|at| at.elapsed() >= NUDGE_EVERY) {
            nudge
                .batch_execute(
                    "BEGIN; SET LOCAL synchronous_commit = on; \
                     SELECT pg_catalog.pg_logical_emit_message(true, 'tenant-schemas-move', ''); \
                     COMMIT",
                )
                .await
                .map_err(db)?;
            nudged = Some(Instant::now());
        }
        let done: Option<bool> = conn
            .query_one(
                "SELECT (SELECT confirmed_flush_lsn >= $2::text::pg_lsn
                         FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)",
                &[&name, &lsn],
            )
            .await
            .map_err(db)?
            .get(0);
        match done {
            Some(true) => return Ok(()),
            None => return Err(refused(schema, "the move's replication slot is gone")),
            Some(false) if Instant::now() >= deadline => {
                return Err(refused(
                    schema,
                    format!("the target did not catch up with the source within {limit:?}"),
                ))
            }
            Some(false) => tokio::time::sleep(POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_quotes_every_value() {
        let settings =
            ConnectionSettings::from_url("postgres://app:s3'cr\\et@db.example.com:6432/my%20db")
                .unwrap();
        assert_eq!(
            conninfo(&settings),
            "host='db.example.com' port=6432 user='app' password='s3\\'cr\\\\et' \
             dbname='my db' sslmode=prefer"
        );
    }

    #[test]
    fn names_fit_an_identifier() {
        let schema = SchemaName::new(&"a".repeat(63)).unwrap();
        let prefix = move_prefix(&schema);
        assert_eq!(prefix.len() + 8, 32);
        assert!(prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        assert_ne!(move_prefix(&SchemaName::new("b").unwrap()), prefix);
    }
}
