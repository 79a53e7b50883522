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
//!   existence checked) again before its next statement.
//!
//! [`ConnectionScope`]: crate::ConnectionScope

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use deadpool_postgres::{Object, StatementCache};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::error::{Error, Result};
use crate::schema::SchemaName;

/// How long a statement waits for a deletion of its schema to finish before it fails.
const GATE_WAIT: Duration = Duration::from_secs(10);

/// Liveness of one schema name, shared by every connection and router in the process.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    epoch: AtomicU64,
    lock: Arc<RwLock<()>>,
}

impl Gate {
    /// The current epoch: a path verified under another epoch must be verified again.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Marks every connection's knowledge of this schema as stale.
    pub(crate) fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Held while a statement for the schema runs; waits while the schema is being deleted.
    pub(crate) async fn enter(&self, schema: &SchemaName) -> Result<OwnedRwLockReadGuard<()>> {
        match self.lock.clone().try_read_owned() {
            Ok(guard) => Ok(guard),
            Err(_) => tokio::time::timeout(GATE_WAIT, self.lock.clone().read_owned())
                .await
                .map_err(|_| Error::SchemaMissing {
                    schema: schema.clone(),
                }),
        }
    }

    /// Waits until no statement for the schema runs in this process and holds new ones back
    /// until the guard is dropped; the epoch is bumped when it is, so every connection
    /// verifies the schema again.
    pub(crate) async fn close(self: &Arc<Self>) -> ClosedGate {
        let guard = self.lock.clone().write_owned().await;
        ClosedGate {
            gate: self.clone(),
            _guard: guard,
        }
    }
}

/// A schema's gate held closed during a deletion or rename; see [`Gate::close`].
#[derive(Debug)]
pub(crate) struct ClosedGate {
    gate: Arc<Gate>,
    _guard: OwnedRwLockWriteGuard<()>,
}

impl Drop for ClosedGate {
    fn drop(&mut self) {
        // Before the lock opens: statements let through see the new epoch.
        self.gate.bump();
    }
}

static GATES: LazyLock<Mutex<HashMap<SchemaName, Weak<Gate>>>> = LazyLock::new(Default::default);

/// The gate of `schema` (the same `Arc` for every caller while anyone holds it).
pub(crate) fn gate(schema: &SchemaName) -> Arc<Gate> {
    let mut gates = GATES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(gate) = gates.get(schema).and_then(Weak::upgrade) {
        return gate;
    }
    if gates.len() >= 1024 && gates.len().is_power_of_two() {
        gates.retain(|_, g| g.strong_count() > 0);
    }
    let gate = Arc::new(Gate::default());
    gates.insert(schema.clone(), Arc::downgrade(&gate));
    gate
}

/// Tells every connection in this process that `schema` changed (deleted, renamed or
/// re-created elsewhere): each verifies it again before its next statement.
pub(crate) fn schema_changed(schema: &SchemaName) {
    // Only a gate someone holds carries knowledge worth invalidating.
    let gate = GATES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(schema)
        .and_then(Weak::upgrade);
    if let Some(gate) = gate {
        gate.bump();
    }
}

/// Tells every connection in this process that any schema may have changed (a listener that
/// reconnected and may have missed announcements).
pub(crate) fn everything_changed() {
    let gates: Vec<Arc<Gate>> = GATES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter_map(Weak::upgrade)
        .collect();
    for gate in gates {
        gate.bump();
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
    by_conn: HashMap<usize, Slot>,
    sweep_at: usize,
}

#[derive(Debug)]
struct Slot {
    conn: Weak<StatementCache>,
    path: Arc<str>,
    epoch: u64,
    recycle_count: usize,
}

static MEMORY: LazyLock<Mutex<PathMemory>> = LazyLock::new(Default::default);

fn key(conn: &Object) -> usize {
    Arc::as_ptr(&conn.statement_cache) as usize
}

/// Whether `conn`, just checked out (`handed_over`: straight from a releasing scope, not
/// through the pool), is known to be on `path`, verified under the gate's current `epoch`.
/// The entry is consumed: whatever happens next, only a clean release records it again.
pub(crate) fn take_known_path(conn: &Object, path: &str, epoch: u64, handed_over: bool) -> bool {
    let slot = MEMORY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .by_conn
        .remove(&key(conn));
    let Some(slot) = slot else { return false };
    // Through the pool, exactly one recycle happened since the release: ours.
    let recycles = Object::metrics(conn).recycle_count;
    let untouched = if handed_over {
        recycles == slot.recycle_count
    } else {
        recycles == slot.recycle_count + 1
    };
    untouched && slot.epoch == epoch && &*slot.path == path
}

/// Records that `conn` is being released on `path`, verified under `epoch`, with nothing
/// run since that could have changed its session.
pub(crate) fn remember(conn: &Object, path: Arc<str>, epoch: u64) {
    let mut memory = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    memory.by_conn.insert(
        key(conn),
        Slot {
            conn: Arc::downgrade(&conn.statement_cache),
            path,
            epoch,
            recycle_count: Object::metrics(conn).recycle_count,
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
