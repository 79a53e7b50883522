//! What this process knows about the sessions of pooled connections and the schemas they
//! use: every piece of search-path bookkeeping lives here.
//!
//! Two things are kept process-wide, so that every router sees them whatever pool or
//! `Tenancy` it belongs to:
//!
//! - **Path memory**: the search path a connection was on when a [`ConnectionScope`] last
//!   released it, together with the pool's recycle count at that moment and the schema's
//!   [`Gate`] epoch. A checkout trusts the memory only when all three still hold: the
//!   connection was released by this library on a path it set and no statement could have
//!   changed since, nobody took it from the pool in between (a second router's checkout goes
//!   through this same memory; a raw `pool.get()` shows in the recycle count), and the schema
//!   has not been deleted or changed since.
//! - **Schema gates**: per schema name, an epoch bumped whenever the schema is deleted,
//!   renamed or announced as changed by another instance, and a lock that statements hold
//!   shared while they run and a deletion holds exclusively while it drops the schema. A
//!   connection whose path was verified under an older epoch is switched (and the schema's
//!   existence checked) again before its next statement. Epoch and lock are kept per schema
//!   *name*, for every database at once (a deletion closes the name, so even a connection
//!   checked out from another pool while it runs waits). Each database's gate also remembers
//!   when the schema was last seen to exist *there*: a switch checks existence only when that
//!   is older than [`VERIFIED_FOR`], and a remembered path is trusted only while it is not,
//!   so a deletion by another process is noticed within that time even without a listener,
//!   and a sighting on one database never vouches for another.
//!
//! [`ConnectionScope`]: super::ConnectionScope

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool, StatementCache, WeakPool};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::error::{Error, Result};
use crate::schema::SchemaName;

/// How long a statement waits for a deletion of its schema to finish before it fails.
const GATE_WAIT: Duration = Duration::from_secs(10);

/// How long a schema seen to exist is taken to exist without asking the server again, when
/// nothing in this process announced a change. It bounds how long another process's
/// deletion can go unnoticed by an instance that does not listen for changes.
pub(crate) const VERIFIED_FOR: Duration = Duration::from_secs(1);

/// Milliseconds since the first use of this module, for cheap atomic timestamps.
fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(START.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What the process knows of one schema name, on every database at once: the epoch bumped
/// when it is deleted, renamed or announced as changed, and the lock statements hold shared
/// while they run and a deletion holds exclusively. Kept by name, not by database: a
/// deletion cannot tell which of the process's pools reach the database it deletes from,
/// and a gate made while a deletion runs must find it closed.
#[derive(Debug, Default)]
struct Name {
    epoch: AtomicU64,
    lock: Arc<RwLock<()>>,
}

static NAMES: LazyLock<Mutex<HashMap<SchemaName, Weak<Name>>>> = LazyLock::new(Default::default);

/// The [`Name`] of `schema` (the same `Arc` for every caller while anyone holds it).
fn name(schema: &SchemaName) -> Arc<Name> {
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(name) = names.get(schema).and_then(Weak::upgrade) {
        return name;
    }
    if names.len() >= 1024 && names.len().is_power_of_two() {
        names.retain(|_, n| n.strong_count() > 0);
    }
    let name = Arc::new(Name::default());
    names.insert(schema.clone(), Arc::downgrade(&name));
    name
}

/// Liveness of one schema on one database, shared by every connection and router of the
/// process that use that pool (clones of a pool share its gates): the name's epoch and lock,
/// and when the schema was last seen to exist on that database.
#[derive(Debug)]
pub(crate) struct Gate {
    /// The pool whose database the schema lives on: while it upgrades, the pool's address
    /// (the gate's key) cannot belong to another pool.
    database: WeakPool,
    name: Arc<Name>,
    /// When the schema was last seen to exist (`now_ms() + 1`; 0: never), and under which
    /// epoch.
    verified_at: AtomicU64,
    verified_epoch: AtomicU64,
}

impl Gate {
    /// The current epoch: a path verified under another epoch must be verified again.
    pub(crate) fn epoch(&self) -> u64 {
        self.name.epoch.load(Ordering::Acquire)
    }

    /// Whether the schema was seen to exist on this database under `epoch` within
    /// [`VERIFIED_FOR`]: a switch may then skip the existence check, and a remembered path
    /// may be trusted.
    pub(crate) fn recently_verified(&self, epoch: u64) -> bool {
        let at = self.verified_at.load(Ordering::Acquire);
        at != 0
            && self.verified_epoch.load(Ordering::Acquire) == epoch
            && now_ms().saturating_sub(at - 1) < VERIFIED_FOR.as_millis() as u64
    }

    /// Records that the schema was seen to exist under `epoch`.
    pub(crate) fn mark_verified(&self, epoch: u64) {
        self.verified_epoch.store(epoch, Ordering::Release);
        self.verified_at.store(now_ms() + 1, Ordering::Release);
    }

    /// Held while a statement for the schema runs; waits while the schema is being deleted.
    pub(crate) async fn enter(&self, schema: &SchemaName) -> Result<OwnedRwLockReadGuard<()>> {
        let lock = &self.name.lock;
        match lock.clone().try_read_owned() {
            Ok(guard) => Ok(guard),
            Err(_) => tokio::time::timeout(GATE_WAIT, lock.clone().read_owned())
                .await
                .map_err(|_| Error::SchemaMissing {
                    schema: schema.clone(),
                }),
        }
    }
}

/// Waits while `schema` is closed (a deletion or rename of it runs in this process) and
/// returns its lock held shared, on every database at once: for a driver's checkout, which
/// registers itself with the deletion before letting go (see [`crate::checkout`]).
pub(crate) async fn enter_name(schema: &SchemaName) -> Result<(NameRef, OwnedRwLockReadGuard<()>)> {
    let name = name(schema);
    let lock = name.lock.clone();
    let guard = match lock.clone().try_read_owned() {
        Ok(guard) => guard,
        Err(_) => tokio::time::timeout(GATE_WAIT, lock.read_owned())
            .await
            .map_err(|_| Error::SchemaMissing {
                schema: schema.clone(),
            })?,
    };
    Ok((NameRef(name), guard))
}

/// Keeps a schema name's lock and epoch alive (a deletion closing the name then finds the
/// same lock), e.g. for as long as a driver's checkout is registered under it.
#[derive(Debug)]
pub(crate) struct NameRef(#[allow(dead_code)] Arc<Name>);

/// A schema name held closed during a deletion; see [`close`].
#[derive(Debug)]
pub(crate) struct ClosedGate {
    name: Arc<Name>,
    _guard: OwnedRwLockWriteGuard<()>,
}

impl Drop for ClosedGate {
    fn drop(&mut self) {
        // Before the lock opens: statements let through see the new epoch.
        self.name.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// Closes `schema` on every database of this process: waits until no statement for it runs,
/// holds new ones back (also those of connections checked out meanwhile) until the guard is
/// dropped, and then makes every connection verify the schema again.
pub(crate) async fn close(schema: &SchemaName) -> ClosedGate {
    let name = name(schema);
    let guard = name.lock.clone().write_owned().await;
    ClosedGate {
        name,
        _guard: guard,
    }
}

/// Gates by database (the address of its pool's shared state) and schema name: a schema
/// seen on one database says nothing about another database.
type GateKey = (usize, SchemaName);

/// The gates, held strongly while anyone uses them or their sighting of the schema is
/// fresh: a gate dropped as soon as its last connection let go of it would forget that
/// sighting, and with more tenants than pooled connections every switch would then check
/// the schema's existence again (a round trip) instead of being written with its statement.
#[derive(Debug, Default)]
struct Gates {
    by_key: HashMap<GateKey, Arc<Gate>>,
    sweep_at: usize,
}

static GATES: LazyLock<Mutex<Gates>> = LazyLock::new(Default::default);

fn database_key(pool: &Pool) -> usize {
    std::ptr::from_ref(pool.manager()) as usize
}

/// The gate of `schema` on `pool`'s database (the same `Arc` for every caller while anyone
/// holds it).
pub(crate) fn gate(pool: &Pool, schema: &SchemaName) -> Arc<Gate> {
    let key = (database_key(pool), schema.clone());
    let mut gates = GATES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(gate) = gates.by_key.get(&key) {
        // A dropped pool's address may have been reused by this one.
        if gate.database.upgrade().is_some() {
            return gate.clone();
        }
    }
    if gates.by_key.len() >= gates.sweep_at {
        // Keep what someone holds or what still vouches for a schema; what is dropped
        // knew nothing a new gate would not (its epoch is compared only by holders).
        gates.by_key.retain(|_, g| {
            Arc::strong_count(g) > 1
                || (g.database.upgrade().is_some() && g.recently_verified(g.epoch()))
        });
        gates.sweep_at = (gates.by_key.len() * 2).max(1024);
    }
    let gate = Arc::new(Gate {
        database: pool.weak(),
        name: name(schema),
        verified_at: AtomicU64::new(0),
        verified_epoch: AtomicU64::new(0),
    });
    gates.by_key.insert(key, gate.clone());
    gate
}

/// Tells every connection in this process that `schema` changed (deleted, renamed or
/// re-created elsewhere): each verifies it again before its next statement.
pub(crate) fn schema_changed(schema: &SchemaName) {
    // Only a name someone holds carries knowledge worth invalidating.
    let name = NAMES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(schema)
        .and_then(Weak::upgrade);
    if let Some(name) = name {
        name.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// Tells every connection in this process that any schema may have changed (a listener that
/// reconnected and may have missed announcements).
pub(crate) fn everything_changed() {
    let names: Vec<Arc<Name>> = NAMES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter_map(Weak::upgrade)
        .collect();
    for name in names {
        name.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// The path memory: per pooled connection, what it was on when this library released it.
///
/// deadpool gives a pooled connection no place for our own state, so it is kept beside it,
/// keyed by the address of the connection's statement cache (an `Arc` that lives exactly as
/// long as the connection). Each entry holds a `Weak` to that cache: while the entry exists
/// the allocation cannot be freed, so its address cannot be reused by a new connection and
/// mistaken for this one.
#[derive(Debug, Default)]
struct PathMemory {
    by_conn: ByAddress<Slot>,
    sweep_at: usize,
}

#[derive(Debug)]
struct Slot {
    conn: Weak<StatementCache>,
    path: Arc<str>,
    /// Held so the gate (and the epochs counted in it) lives as long as anything
    /// remembered under it: a gate dropped and made anew would start its epochs over.
    gate: Arc<Gate>,
    epoch: u64,
    recycle_count: usize,
    /// At least as many statements as the connection's cache holds (see [`Remembered`];
    /// `usize::MAX`: not counted).
    statements: usize,
}

/// What the path memory knew of a connection just checked out.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Remembered {
    /// It is on the path asked for, verified under the gate's current epoch.
    pub(crate) on_path: bool,
    /// An upper bound of the statements its cache holds, when nothing but this library used
    /// it since it was remembered: counting them is a walk over the whole cache, so the
    /// bound is carried from checkout to checkout instead.
    pub(crate) statements: Option<usize>,
    /// Its session's transactions are known to begin writable: nothing but this library used
    /// it since a writer's checkout released it (the last switch left
    /// `default_transaction_read_only` off). `false` when not known.
    pub(crate) writable: bool,
}

/// What a read-only tenant's session key holds (see `router::checkout`): a released session
/// remembered under such a key begins its transactions read-only.
pub(crate) const READ_ONLY_KEY: &str = " (read only)";

static MEMORY: LazyLock<Mutex<PathMemory>> = LazyLock::new(Default::default);

fn key(conn: &Object) -> usize {
    Arc::as_ptr(&conn.statement_cache) as usize
}

/// A map keyed by a connection's [`key`], hashed with [`AddressHasher`].
type ByAddress<V> = HashMap<usize, V, BuildHasherDefault<AddressHasher>>;

/// Hashes a [`key`], the address of a connection's statement cache: no one picks addresses
/// to make them collide, so a multiplication spreads them as well as the standard library's
/// SipHash does, for a few instructions instead of about 140 per look-up, and each checkout
/// looks a connection up three to five times (BENCHMARKS.md §24).
#[derive(Debug, Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `usize` keys; correct for anything else.
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        // The table picks buckets with the low bits: an allocation's address has its low
        // four bits zero, and a product's low bits depend on the factors' low bits only.
        // The product's well-mixed middle bits are rotated there (as rustc's FxHasher does).
        self.0.rotate_left(26)
    }
}

/// What is known of `conn`, just checked out (`handed_over`: straight from a releasing scope,
/// not through the pool): whether it is on `path`, verified under `gate`'s current `epoch`
/// less than [`VERIFIED_FOR`] ago, and a bound of its cached statements. The entry is
/// consumed: whatever happens next, only a clean release records it again.
pub(crate) fn take_known_path(
    conn: &Object,
    path: &str,
    gate: &Arc<Gate>,
    epoch: u64,
    handed_over: bool,
) -> Remembered {
    let slot = MEMORY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .by_conn
        .remove(&key(conn));
    let Some(slot) = slot else {
        return Remembered::default();
    };
    // Through the pool, exactly one recycle happened since the release: ours.
    let recycles = Object::metrics(conn).recycle_count;
    let untouched = if handed_over {
        recycles == slot.recycle_count
    } else {
        recycles == slot.recycle_count + 1
    };
    if !untouched {
        return Remembered::default();
    }
    Remembered {
        on_path: Arc::ptr_eq(&slot.gate, gate)
            && slot.epoch == epoch
            && &*slot.path == path
            && gate.recently_verified(epoch),
        statements: Some(slot.statements),
        writable: !slot.path.contains(READ_ONLY_KEY),
    }
}

/// Records that `conn` is being released on `path`, verified under `gate`'s `epoch`, with
/// nothing run since that could have changed its session, and at most `statements` cached.
pub(crate) fn remember(
    conn: &Object,
    path: Arc<str>,
    gate: Arc<Gate>,
    epoch: u64,
    statements: usize,
) {
    let mut memory = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    memory.by_conn.insert(
        key(conn),
        Slot {
            conn: Arc::downgrade(&conn.statement_cache),
            path,
            gate,
            epoch,
            recycle_count: Object::metrics(conn).recycle_count,
            statements,
        },
    );
    if memory.by_conn.len() > memory.sweep_at {
        // Drop entries of connections the pool has closed.
        memory
            .by_conn
            .retain(|_, slot| slot.conn.strong_count() > 0);
        memory.sweep_at = (memory.by_conn.len() * 2).max(64);
    }
}

/// Per pooled connection: the statements its cache holds for each schema, and when each
/// schema last used the connection, so that a full cache gives up its coldest schemas'
/// statements rather than all of them (see [`evict_coldest`]). Kept beside the connection
/// as [`PathMemory`] is, keyed by its statement cache's address with a `Weak` to it.
#[derive(Debug, Default)]
struct StatementMemory {
    by_conn: ByAddress<ConnStatements>,
    sweep_at: usize,
}

#[derive(Debug)]
struct ConnStatements {
    conn: Weak<StatementCache>,
    /// Counts uses, for [`SchemaStatements::last_used`].
    clock: u64,
    by_schema: HashMap<SchemaName, SchemaStatements>,
    /// Transaction mode: whether the pooler in front of the connection keeps named
    /// statements across server connections (`None`: not asked yet).
    pooler_keeps: Option<bool>,
    /// Transaction mode: an upper bound of the statements the connection's cache held when a
    /// scope let go of it, and the pool's recycle count then (see [`take_statement_bound`]).
    bound: Option<(usize, usize)>,
    /// The session key (path, state, role) of the last switch that committed on the
    /// connection, and the pool's recycle count then: in role mode, only scopes with that key
    /// may run the statements prepared on it, and only if nobody took the connection from the
    /// pool in between (see [`statements_owned_by`]).
    owner: Option<(Arc<str>, usize)>,
}

#[derive(Debug, Default)]
struct SchemaStatements {
    last_used: u64,
    /// The texts cached for the schema (as the cache keys them).
    texts: HashSet<String>,
}

static STATEMENTS: LazyLock<Mutex<StatementMemory>> = LazyLock::new(Default::default);

fn with_statements<T>(conn: &Object, f: impl FnOnce(&mut ConnStatements) -> T) -> T {
    let mut memory = STATEMENTS.lock().unwrap_or_else(|e| e.into_inner());
    if memory.by_conn.len() > memory.sweep_at {
        // Drop entries of connections the pool has closed.
        memory
            .by_conn
            .retain(|_, entry| entry.conn.strong_count() > 0);
        memory.sweep_at = (memory.by_conn.len() * 2).max(64);
    }
    let entry = memory
        .by_conn
        .entry(key(conn))
        .or_insert_with(|| ConnStatements {
            conn: Arc::downgrade(&conn.statement_cache),
            clock: 0,
            by_schema: HashMap::new(),
            pooler_keeps: None,
            bound: None,
            owner: None,
        });
    f(entry)
}

/// Whether `conn`'s cache is known to hold `text` for `schema`; with `first` (a scope's
/// first statement), also records that `schema` uses `conn` now (its statements become the
/// warmest).
pub(crate) fn note_statement_use(
    conn: &Object,
    schema: &SchemaName,
    text: &str,
    first: bool,
) -> bool {
    with_statements(conn, |entry| {
        if first {
            entry.clock += 1;
            let slot = entry.by_schema.entry(schema.clone()).or_default();
            slot.last_used = entry.clock;
            return slot.texts.contains(text);
        }
        entry
            .by_schema
            .get(schema)
            .is_some_and(|slot| slot.texts.contains(text))
    })
}

/// Records that `text` was added to `conn`'s cache for `schema`.
pub(crate) fn note_statement_cached(conn: &Object, schema: &SchemaName, text: String) {
    with_statements(conn, |entry| {
        entry
            .by_schema
            .entry(schema.clone())
            .or_default()
            .texts
            .insert(text);
    });
}

/// Records that `text` left `conn`'s cache for `schema`.
pub(crate) fn forget_statement(conn: &Object, schema: &SchemaName, text: &str) {
    with_statements(conn, |entry| {
        if let Some(slot) = entry.by_schema.get_mut(schema) {
            slot.texts.remove(text);
        }
    });
}

/// Whether the pooler in front of `conn` keeps named statements across server connections,
/// as found when it was last asked (`None`: never asked).
pub(crate) fn pooler_keeps_statements(conn: &Object) -> Option<bool> {
    with_statements(conn, |entry| entry.pooler_keeps)
}

/// Records what was found of `conn`'s pooler (`None`: ask again).
pub(crate) fn note_pooler_keeps_statements(conn: &Object, keeps: Option<bool>) {
    with_statements(conn, |entry| entry.pooler_keeps = keeps);
}

/// Transaction mode, where no path is remembered: records that a scope lets go of `conn`
/// with at most `statements` in its cache.
pub(crate) fn remember_statement_bound(conn: &Object, statements: usize) {
    let recycles = Object::metrics(conn).recycle_count;
    with_statements(conn, |entry| entry.bound = Some((statements, recycles)));
}

/// The bound [`remember_statement_bound`] recorded for `conn`, if nothing but the pool's own
/// recycling (exactly once) happened to it since: another checkout could have cached
/// statements the bound does not count. Consumed.
pub(crate) fn take_statement_bound(conn: &Object) -> Option<usize> {
    let recycles = Object::metrics(conn).recycle_count;
    with_statements(conn, |entry| entry.bound.take())
        .filter(|(_, then)| recycles == then + 1)
        .map(|(statements, _)| statements)
}

/// Role mode: whether the last switch that committed on `conn` had the session `key` (the
/// path, the state and the role: a tenant deleted and made again under its schema's name has
/// another role), so that no other tenant's SQL ran on the connection since its statements
/// were prepared. A prepared statement is the session's, not a role's: any SQL on the
/// session, a function's dynamic SQL included, can `DEALLOCATE` one by name and `PREPARE`
/// another in its place, which the next `Bind` of that name runs — under the role and on the
/// path of whoever binds it.
///
/// And nobody else took the connection from the pool since: the pool recycles it once per
/// checkout (none when a releasing scope hands it straight to the next), so a recycle count
/// more than one above the owner's means a raw user of the pool (`router.pool().get()`), or
/// another router's checkout that recorded nothing, had it in between.
pub(crate) fn statements_owned_by(conn: &Object, key: &str) -> bool {
    let recycles = Object::metrics(conn).recycle_count;
    with_statements(conn, |entry| {
        entry
            .owner
            .as_ref()
            .is_some_and(|(owner, then)| &**owner == key && recycles.wrapping_sub(*then) <= 1)
    })
}

/// Records that a switch with the session `key` committed on `conn` (see
/// [`statements_owned_by`]). Every router records it, with roles or not: a router without
/// them sharing the pool is another tenant's SQL on the connection too.
pub(crate) fn own_statements(conn: &Object, key: &Arc<str>) {
    let recycles = Object::metrics(conn).recycle_count;
    with_statements(conn, |entry| match &mut entry.owner {
        Some((owner, then)) if **owner == **key => *then = recycles,
        owner => *owner = Some((key.clone(), recycles)),
    });
}

/// Forgets what `conn`'s cache held (it was emptied).
pub(crate) fn forget_statements(conn: &Object) {
    with_statements(conn, |entry| entry.by_schema.clear());
}

/// The server no longer has `conn`'s prepared statements, or is about to lose them: its
/// cache is emptied, the memory beside it forgets them, and the client forgets the statements
/// it looks user-defined types up with (prepared again at the next lookup; it would otherwise
/// bind a name the server no longer knows, "prepared statement does not exist", at every
/// lookup of a type not yet seen).
pub(crate) fn statements_dropped(conn: &Object) {
    conn.statement_cache.clear();
    forget_statements(conn);
    conn.forget_typeinfo_statements();
}

/// Removes the statements of the schemas that used `conn` least recently (never `keep`'s)
/// from its cache until it holds at most `target`. Returns the cache's size then; the caller
/// empties the cache when that is still too many (statements this memory does not know of).
pub(crate) fn evict_coldest(conn: &Object, keep: &SchemaName, target: usize) -> usize {
    let cache = &conn.statement_cache;
    with_statements(conn, |entry| {
        let mut coldest: Vec<(u64, SchemaName)> = entry
            .by_schema
            .iter()
            .filter(|(schema, _)| *schema != keep)
            .map(|(schema, slot)| (slot.last_used, schema.clone()))
            .collect();
        coldest.sort_unstable_by_key(|(last_used, _)| *last_used);
        let mut size = cache.size();
        for (_, schema) in coldest {
            if size <= target {
                break;
            }
            if let Some(slot) = entry.by_schema.remove(&schema) {
                for text in &slot.texts {
                    // Dropped here, or when a query still holding it ends: then closed on
                    // the server.
                    drop(cache.remove(text, &[]));
                }
            }
            size = cache.size();
        }
        size
    })
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    /// Connections' keys are addresses of allocations, 16-byte aligned: the buckets a table
    /// picks with the low bits of their hashes must still differ, or every look-up of the
    /// path and statement memories would walk a chain.
    #[test]
    fn aligned_addresses_spread_over_the_low_bits() {
        let hasher = BuildHasherDefault::<AddressHasher>::default();
        let buckets: HashSet<u64> = (0..4096_usize)
            .map(|i| hasher.hash_one(0x7f3a_1c00_0000_usize + i * 16) & 0xfff)
            .collect();
        // A hash whose low bits followed the address's would fill at most 256 of the 4,096.
        assert!(buckets.len() > 2_000, "{} buckets of 4,096", buckets.len());
        let same: HashSet<u64> = (0..64_usize)
            .map(|i| hasher.hash_one(0x5555_0000_usize + i * 4096) >> 57)
            .collect();
        // The top seven bits are the table's tag for each entry: they must differ too.
        assert!(same.len() > 32, "{} tags of 64", same.len());
    }
}
