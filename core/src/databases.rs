//! The PostgreSQL databases tenants live on: the default one, which holds the registry, and
//! any number of named others (shards).
//!
//! A tenant's [`ShardName`] (a value type, in `shard.rs`) says which database its schema is
//! on. The router and the registry both look databases up through one map type, so the
//! default database has one name everywhere: [`ShardName::DEFAULT`], stored as
//! [`DEFAULT_SHARD`](crate::DEFAULT_SHARD) in the registry. The flag saying whether a pooled
//! session may have been left read-only is kept here too, below the router that sets it and
//! the registry that reads it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use deadpool_postgres::{Object, Pool};

use crate::error::{Error, Result};
use crate::schema::SchemaName;
use crate::shard::ShardName;

/// The default database's name, for handing out references to it.
static DEFAULT_NAME: ShardName = ShardName::DEFAULT;

/// The databases of one application, each with a `T`: its pool, or what the router keeps for
/// it. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Databases<T = Pool> {
    default: T,
    others: Arc<BTreeMap<ShardName, T>>,
}

impl<T> Databases<T> {
    /// Only the default database.
    pub(crate) fn new(default: T) -> Self {
        Self {
            default,
            others: Arc::default(),
        }
    }

    /// Adds (or replaces) another database. The default database is not replaced: a shard
    /// named [`DEFAULT_SHARD`](crate::DEFAULT_SHARD) is ignored, as it always was.
    pub(crate) fn add(&mut self, name: ShardName, value: T)
    where
        T: Clone,
    {
        if !name.is_default() {
            Arc::make_mut(&mut self.others).insert(name, value);
        }
    }

    /// The default database's value.
    pub(crate) fn default(&self) -> &T {
        &self.default
    }

    /// The value of database `shard`; [`Error::UnknownShard`] when there is no such database.
    pub(crate) fn get(&self, shard: &ShardName) -> Result<&T> {
        if shard.is_default() {
            return Ok(&self.default);
        }
        self.others.get(shard).ok_or_else(|| Error::UnknownShard {
            shard: shard.to_string(),
        })
    }

    /// Every database, the default one first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ShardName, &T)> {
        std::iter::once((&DEFAULT_NAME, &self.default)).chain(self.others.iter())
    }

    /// Whether there is any database besides the default one.
    pub(crate) fn has_others(&self) -> bool {
        !self.others.is_empty()
    }

    /// The same databases, each with `f` of its value.
    pub(crate) fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Databases<U> {
        Databases {
            default: f(&self.default),
            others: Arc::new(
                self.others
                    .iter()
                    .map(|(name, value)| (name.clone(), f(value)))
                    .collect(),
            ),
        }
    }
}

impl Databases<Pool> {
    /// A connection to database `shard`, for work on `schema`.
    pub(crate) async fn connect(&self, shard: &ShardName, schema: &SchemaName) -> Result<Object> {
        connect(self.get(shard)?, schema).await
    }
}

/// Whether any router of this process has served a read-only tenant in session mode: a
/// pooled connection may then have been left with `default_transaction_read_only` on, so
/// every switch, and every connection the library takes from a pool for its own work (the
/// registry, migrations), sets it explicitly. Process-wide like the path memory: routers
/// and the registry share pools.
static READ_ONLY_SESSIONS: AtomicBool = AtomicBool::new(false);

/// Notes that a session is about to be made read-only (before its switch is sent).
pub(crate) fn note_read_only_session() {
    READ_ONLY_SESSIONS.store(true, Ordering::Release);
}

/// Whether a pooled session may have been left read-only.
pub(crate) fn read_only_sessions_seen() -> bool {
    READ_ONLY_SESSIONS.load(Ordering::Acquire)
}

/// Whether some tenant's sessions were given a `statement_timeout` in this process: from
/// then on, a switch to a tenant without one sets it back to the default, and the library's
/// own work resets it.
static STATEMENT_TIMEOUTS: AtomicBool = AtomicBool::new(false);

/// Notes that a tenant's session is about to get a `statement_timeout`.
pub(crate) fn note_statement_timeout() {
    STATEMENT_TIMEOUTS.store(true, Ordering::Release);
}

/// Whether a pooled session may have been left with a tenant's `statement_timeout`.
pub(crate) fn statement_timeouts_seen() -> bool {
    STATEMENT_TIMEOUTS.load(Ordering::Acquire)
}

/// Whether some tenant's sessions were given their own role in this process (role mode):
/// from then on, a switch without a role resets it, and the library's own work runs as the
/// login role (`RESET ROLE`).
static ROLES: AtomicBool = AtomicBool::new(false);

/// Notes that a tenant's session is about to be given its role.
pub(crate) fn note_roles() {
    ROLES.store(true, Ordering::Release);
}

/// Whether a pooled session may have been left under a tenant's role.
pub(crate) fn roles_seen() -> bool {
    ROLES.load(Ordering::Acquire)
}

/// Pooled connections whose session holds settings a tenant's SQL made beyond those a switch
/// sets (`SET work_mem …`, `SET app.token …`, `set_config(…, false)`), by the address of
/// their statement cache (held weakly, so entries of closed connections can be swept): the
/// next switch, or the library's own work, resets them first (`RESET ALL`).
static SETTINGS_LEFT: LazyLock<Mutex<HashMap<usize, Weak<deadpool_postgres::StatementCache>>>> =
    LazyLock::new(Default::default);

/// Whether any connection was ever noted in [`SETTINGS_LEFT`]: until then, nothing is
/// looked up.
static SETTINGS_LEFT_SEEN: AtomicBool = AtomicBool::new(false);

fn settings_key(conn: &Object) -> usize {
    Arc::as_ptr(&conn.statement_cache) as usize
}

/// Notes that `conn`'s session holds settings a tenant's SQL made, as its scope lets go of it.
pub(crate) fn note_settings_left(conn: &Object) {
    SETTINGS_LEFT_SEEN.store(true, Ordering::Release);
    let mut left = SETTINGS_LEFT.lock().unwrap_or_else(|e| e.into_inner());
    if left.len() >= 64 && left.len().is_power_of_two() {
        left.retain(|_, cache| cache.strong_count() > 0);
    }
    left.insert(settings_key(conn), Arc::downgrade(&conn.statement_cache));
}

/// Whether `conn`'s session holds settings a tenant's SQL made (see [`note_settings_left`]).
pub(crate) fn settings_left(conn: &Object) -> bool {
    SETTINGS_LEFT_SEEN.load(Ordering::Acquire)
        && SETTINGS_LEFT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&settings_key(conn))
}

/// Whether a router of the process resets every session it checks out
/// ([`SchemaRouterBuilder::reset_settings`](crate::SchemaRouterBuilder::reset_settings)).
static RESETS_ASKED: AtomicBool = AtomicBool::new(false);

/// Notes that a router resets every session it checks out: the library's own work does too.
pub(crate) fn note_resets_asked() {
    RESETS_ASKED.store(true, Ordering::Release);
}

/// Notes that `conn`'s session was reset (`RESET ALL` ran and committed).
pub(crate) fn settings_reset(conn: &Object) {
    SETTINGS_LEFT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&settings_key(conn));
}

/// A connection from `pool` for work on `schema`; [`Error::Pool`] when none can be had.
/// Once a read-only tenant has been served, the connection may have been left read-only
/// by its session: that is undone first, so the registry and migrations can write; likewise
/// a tenant's `statement_timeout`, (role mode) its role, and settings a tenant's SQL left.
pub(crate) async fn connect(pool: &Pool, schema: &SchemaName) -> Result<Object> {
    let conn = loop {
        let conn = pool
            .get()
            .await
            .map_err(|source| Error::pool(schema, source))?;
        // Given back with a request unanswered or a transaction open (a raw user of the
        // pool): the work would run inside it. Closed; another one is taken.
        if conn.is_idle() {
            break conn;
        }
        tracing::warn!(%schema, "closing a pooled connection given back busy or in a transaction");
        drop(Object::take(conn));
    };
    let mut reset = Vec::new();
    // Asked by a router (`reset_settings`): always, since what functions set is noted
    // nowhere; that costs this work a round trip. Otherwise only when noted.
    let left = RESETS_ASKED.load(Ordering::Acquire) || settings_left(&conn);
    if left {
        // A tenant's SQL left settings, a role or a session authorization (noted before it
        // was sent) that could make this work fail or run as someone else. First: `RESET
        // ALL` would undo what the statements below set; it leaves the role and the session
        // authorization alone. Nothing noted (and no reset asked), nothing sent: no round
        // trip on a registry read.
        reset.extend(crate::leftovers::SESSION_RESETS);
        reset.push("RESET ROLE");
        if RESETS_ASKED.load(Ordering::Acquire) {
            // Temporary tables a function created, which would shadow the work's tables.
            reset.push("DISCARD TEMP");
        }
    } else if roles_seen() {
        reset.push("RESET ROLE");
    }
    if read_only_sessions_seen() {
        reset.push("SET default_transaction_read_only TO off");
    }
    if statement_timeouts_seen() {
        reset.push("SET statement_timeout TO DEFAULT");
    }
    if !reset.is_empty() {
        conn.batch_execute(&reset.join("; "))
            .await
            .map_err(|e| Error::db("resetting the session's settings", schema, e))?;
    }
    if left {
        settings_reset(&conn);
    }
    Ok(conn)
}
