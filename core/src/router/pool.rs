//! What a router keeps for each database: its pool, the search-path policy, counters, the
//! schema-affine handoff, and (transaction mode) the parameter types learned per SQL text.
//!
//! A [`ConnectionScope`](super::ConnectionScope) holds its database's [`RouterPool`] and
//! goes through its methods only: it counts its switches there and hands its connection
//! back through [`RouterPool::release`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use deadpool_postgres::{Object, Pool, PoolError};
use tokio_postgres::types::Type;

use super::affinity::Handoff;
use super::preludes::Preludes;
use super::session::{self, Gate};
use crate::schema::{search_path, SchemaName};

/// How the search path reaches the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SearchPathMode {
    /// Set on the connection's session with `SET search_path`, remembered per pooled
    /// connection and skipped when it already matches. For direct connections and PgBouncer
    /// in session pooling mode.
    #[default]
    Session,
    /// Nothing relies on session state: every statement runs in a transaction that begins
    /// with `SET LOCAL search_path` — its own, or the one of
    /// [`ConnectionScope::transaction`](super::ConnectionScope::transaction). Statements are
    /// prepared inside that transaction and closed before it ends, so this works behind
    /// PgBouncer in transaction pooling mode (1.18 keeps no prepared statements across
    /// transactions) and RDS Proxy. Behind a pooler that keeps named statements across
    /// server connections (PgBouncer 1.21+ with `max_prepared_statements` > 0),
    /// [`SchemaRouterBuilder::pooler_prepared_statements`](super::SchemaRouterBuilder::pooler_prepared_statements)
    /// caches them instead.
    ///
    /// What would outlive a statement's transaction on the server connection, which a pooler
    /// hands to its next client, is refused before it is sent
    /// ([`Error::NotInTransactionMode`](crate::Error::NotInTransactionMode)): transaction
    /// control, temporary objects and held cursors, and settings made for the session (`SET`
    /// without `LOCAL`, `RESET`, `set_config(…)` unless its last argument is written `true`;
    /// use `SET LOCAL` inside a transaction).
    Transaction,
}

/// Counters of what the router did, for tests, metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterStats {
    /// Connections handed out.
    pub checkouts: u64,
    /// `search_path` switches sent to the server.
    pub switches: u64,
    /// Switches that also checked the schema's existence (a round trip of their own; a
    /// schema seen to exist within the last second is not checked again).
    pub existence_checks: u64,
    /// Transaction mode with
    /// [`pooler_prepared_statements`](super::SchemaRouterBuilder::pooler_prepared_statements):
    /// statements run as named, cached prepared statements that the pooler keeps (the
    /// others ran unnamed).
    pub named_statements: u64,
    /// Transaction mode with `pooler_prepared_statements`: connections asked whether their
    /// pooler keeps named statements (once per connection).
    pub pooler_probes: u64,
    /// Of [`pooler_probes`](Self::pooler_probes), those that found the pooler does not keep
    /// named statements (PgBouncer before 1.21, `max_prepared_statements = 0`, no pooler).
    pub pooler_probes_unsupported: u64,
}

/// How many SQL texts' parameter types a transaction-mode router keeps.
const MAX_PARAM_TYPES: usize = 4096;

/// One database as the router sees it.
#[derive(Debug)]
pub(crate) struct RouterPool {
    /// The pool's connections in groups: the router's own pool first, then any further
    /// pools to the same database (see [`SchemaRouterBuilder::connection_groups`]).
    ///
    /// [`SchemaRouterBuilder::connection_groups`]: super::SchemaRouterBuilder::connection_groups
    groups: Vec<Group>,
    mode: SearchPathMode,
    extra_schemas: Vec<SchemaName>,
    /// Whether connections' search paths are remembered across checkouts (see
    /// [`session`]); off when the pool's recycling may reset session state.
    track: bool,
    /// Transaction mode: the parameter types learned per SQL text.
    param_types: Mutex<HashMap<Box<str>, Arc<[Type]>>>,
    /// Transaction mode: use named statements where the pooler keeps them.
    pooler_statements: bool,
    /// Transaction mode with named statements: the text to prepare instead of a statement's
    /// usual one (schema and SQL), once a statement of that text no longer fitted its schema
    /// (see [`RouterPool::renamed`]).
    renamed: Mutex<HashMap<Box<str>, Arc<str>>>,
    /// Whether `renamed` holds anything (read without the lock on every statement).
    any_renamed: AtomicBool,
    named_statements: AtomicU64,
    pooler_probes: AtomicU64,
    pooler_probes_unsupported: AtomicU64,
    checkouts: AtomicU64,
    switches: AtomicU64,
    existence_checks: AtomicU64,
    /// See [`drops_statements`](Self::drops_statements).
    drops_statements: bool,
    /// See [`resets_settings`](Self::resets_settings).
    resets_settings: bool,
    /// See [`implicit_transactions`](super::SchemaRouterBuilder::implicit_transactions).
    implicit_transactions: bool,
    /// Where each schema checked out lately is placed (see [`place`](Self::place)).
    places: Mutex<HashMap<SchemaName, Place>>,
}

/// How many schemas' [`Place`]s a router keeps before it starts afresh: at most that many
/// gates are held by it (with its path, a few hundred bytes each; in transaction mode as much
/// again for its prelude).
const MAX_PLACES: usize = 16_384;

/// What a checkout for a schema needs before it takes a connection: the schema's search path
/// under the router's policy, its home group, and its gate on that group's database. Made
/// once per schema and kept ([`RouterPool::place`]): made at every checkout, the path's
/// formatting and the gate's look-up in the process-wide table were about 15 % of the
/// library's own work per statement at one tenant (BENCHMARKS.md §24).
#[derive(Debug, Clone)]
pub(super) struct Place {
    pub(super) path: Arc<str>,
    pub(super) group: usize,
    pub(super) gate: Arc<Gate>,
    /// Transaction mode's preludes on `path`, encoded once.
    pub(super) preludes: Arc<Preludes>,
}

/// One group of connections: a pool, and the schema-affine handoff of its returning
/// connections (session mode with tracking).
#[derive(Debug)]
struct Group {
    pool: Pool,
    handoff: Option<Handoff>,
}

/// The home group of `schema` among `groups`: a stable hash of its name (FNV-1a), so every
/// router and process agrees on it.
fn home(schema: &SchemaName, groups: usize) -> usize {
    let hash = schema
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    usize::try_from(hash % groups as u64).unwrap_or(0)
}

impl RouterPool {
    /// `track` (session mode only) turns the path memory on; `affinity` the handoff, when
    /// the memory is on.
    pub(super) fn new(
        pools: Vec<Pool>,
        mode: SearchPathMode,
        extra_schemas: Vec<SchemaName>,
        track: bool,
        affinity: bool,
        pooler_statements: bool,
    ) -> Self {
        let track = track && mode == SearchPathMode::Session;
        Self {
            groups: pools
                .into_iter()
                .map(|pool| Group {
                    pool,
                    handoff: (track && affinity).then(Handoff::default),
                })
                .collect(),
            mode,
            extra_schemas,
            track,
            param_types: Mutex::default(),
            pooler_statements: pooler_statements && mode == SearchPathMode::Transaction,
            renamed: Mutex::default(),
            any_renamed: AtomicBool::new(false),
            named_statements: AtomicU64::new(0),
            pooler_probes: AtomicU64::new(0),
            pooler_probes_unsupported: AtomicU64::new(0),
            checkouts: AtomicU64::new(0),
            switches: AtomicU64::new(0),
            existence_checks: AtomicU64::new(0),
            drops_statements: false,
            resets_settings: false,
            implicit_transactions: false,
            places: Mutex::default(),
        }
    }

    /// Says whether the pools' recycling keeps the server's prepared statements (see
    /// [`drops_statements`](Self::drops_statements)).
    pub(super) fn recycling_keeps_statements(mut self, keeps: bool) -> Self {
        self.drops_statements = !keeps;
        self
    }

    /// Says whether every checkout starts from the connection's startup settings (see
    /// [`resets_settings`](Self::resets_settings)).
    pub(super) fn resetting_settings(mut self, yes: bool) -> Self {
        self.resets_settings = yes;
        if yes && self.mode == SearchPathMode::Session {
            // Behind a transaction pooler the library's own work gets whichever server
            // connection is free: a reset sent on its own would reach another.
            crate::databases::note_resets_asked();
        }
        self
    }

    /// Says whether transaction mode runs a statement in its message's implicit transaction
    /// (see [`implicit_transactions`](super::SchemaRouterBuilder::implicit_transactions)).
    pub(super) fn implicit_transactions(mut self, yes: bool) -> Self {
        self.implicit_transactions = yes && self.mode == SearchPathMode::Transaction;
        self
    }

    /// Transaction mode runs a statement at hand in its message's implicit transaction, not
    /// in `BEGIN` … `COMMIT`.
    pub(super) fn in_implicit_transactions(&self) -> bool {
        self.implicit_transactions
    }

    /// [`reset_settings`]: in session mode every checkout switches, and every switch resets
    /// the session's settings first; in transaction mode every transaction begins with the
    /// resets.
    ///
    /// [`reset_settings`]: super::SchemaRouterBuilder::reset_settings
    pub(super) fn resets_settings(&self) -> bool {
        self.resets_settings
    }

    /// The pools' recycling may drop the server's prepared statements (a `Custom` query
    /// such as `DISCARD ALL`): a connection's statement cache is emptied at every checkout.
    pub(super) fn drops_statements(&self) -> bool {
        self.drops_statements
    }

    /// The router's own pool (the first group).
    pub(super) fn pool(&self) -> &Pool {
        &self.groups[0].pool
    }

    pub(super) fn mode(&self) -> SearchPathMode {
        self.mode
    }

    pub(super) fn tracks_search_path(&self) -> bool {
        self.track
    }

    /// Where `schema` is placed: its search path under this policy, its home group and its
    /// gate there. A gate kept here stays the one every caller gets (the process-wide table
    /// keeps what someone holds), and its pool lives as long as this router's.
    pub(super) fn place(&self, schema: &SchemaName) -> Place {
        let mut places = self.places.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(place) = places.get(schema) {
            return place.clone();
        }
        let group = if self.groups.len() > 1 {
            home(schema, self.groups.len())
        } else {
            0
        };
        let place = Place {
            path: search_path(schema, &self.extra_schemas),
            group,
            gate: session::gate(&self.groups[group].pool, schema),
            preludes: Arc::default(),
        };
        if places.len() >= MAX_PLACES {
            places.clear();
        }
        places.insert(schema.clone(), place.clone());
        place
    }

    /// A connection for `schema` (on `path`) from `group`, counted as a checkout: from the
    /// schema's home group (see [`place`](Self::place)) — its pool's queue, or a connection a
    /// scope releases on `path`, whichever comes first. Never from another group, even one
    /// with a connection idle: a connection that served another group's tenant once keeps
    /// its catalog entries for good, and borrowing whenever the home group is busy (under
    /// load: often) soon makes every backend hold every tenant's, which is what the groups
    /// are there to prevent (BENCHMARKS.md).
    /// Returns the connection and whether it was handed over by a releasing scope (not
    /// recycled by the pool).
    pub(super) async fn get(
        &self,
        schema: &SchemaName,
        group: usize,
        path: &Arc<str>,
    ) -> Result<(Object, bool), PoolError> {
        let Group { pool, handoff } = &self.groups[group];
        loop {
            let (conn, handed_over) = match handoff {
                Some(handoff) => handoff.checkout(pool, path).await,
                None => pool.get().await.map(|conn| (conn, false)),
            }?;
            // A request unanswered or a transaction block open on the session (a raw user of
            // the pool gave the connection back in one, or gave up waiting for its `BEGIN`):
            // the checkout's statements would run inside it, committed or lost with it.
            // Closed, not used; another one is taken (a new connection is idle, so this
            // ends).
            if !conn.is_idle() {
                tracing::warn!(schema = %schema, "closing a pooled connection given back busy or in a transaction");
                drop(Object::take(conn));
                continue;
            }
            self.checkouts.fetch_add(1, Ordering::Relaxed);
            return Ok((conn, handed_over));
        }
    }

    /// Takes a connection of `group` back that is on `path`, verified under `gate`'s
    /// `epoch`, with nothing run since that could have changed its session and at most
    /// `statements` cached: remembered (when tracking), then handed to a request waiting for
    /// that path, or returned to its pool.
    pub(super) fn release(
        &self,
        conn: Object,
        group: usize,
        path: &Arc<str>,
        gate: Arc<Gate>,
        epoch: u64,
        statements: usize,
    ) {
        if self.track {
            session::remember(&conn, path.clone(), gate, epoch, statements);
        }
        match &self.groups[group].handoff {
            Some(handoff) => drop(handoff.release(conn, path)),
            None => drop(conn),
        }
    }

    /// Counts a `search_path` switch sent to the server.
    pub(super) fn count_switch(&self) {
        self.switches.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a switch that checks the schema's existence.
    pub(super) fn count_existence_check(&self) {
        self.existence_checks.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn stats(&self) -> RouterStats {
        RouterStats {
            checkouts: self.checkouts.load(Ordering::Relaxed),
            switches: self.switches.load(Ordering::Relaxed),
            existence_checks: self.existence_checks.load(Ordering::Relaxed),
            named_statements: self.named_statements.load(Ordering::Relaxed),
            pooler_probes: self.pooler_probes.load(Ordering::Relaxed),
            pooler_probes_unsupported: self.pooler_probes_unsupported.load(Ordering::Relaxed),
        }
    }

    /// Transaction mode: whether statements may be named where the pooler keeps them.
    pub(super) fn pooler_statements(&self) -> bool {
        self.pooler_statements
    }

    /// Counts a statement run as a named statement the pooler keeps.
    pub(super) fn count_named_statement(&self) {
        self.named_statements.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection asked whether its pooler keeps named statements, and its answer.
    /// Returns whether this was the first answer no.
    pub(super) fn count_pooler_probe(&self, keeps: bool) -> bool {
        self.pooler_probes.fetch_add(1, Ordering::Relaxed);
        !keeps
            && self
                .pooler_probes_unsupported
                .fetch_add(1, Ordering::Relaxed)
                == 0
    }

    /// Transaction mode with named statements: the text to prepare for `keyed` (a statement's
    /// text marked with its schema) — `keyed` itself, or the text it was renamed to after a
    /// statement of it stopped fitting its schema.
    ///
    /// A pooler that keeps named statements (PgBouncer 1.21+) shares one server-side
    /// statement among every client that prepares the same text, and answers a new `Parse`
    /// of a text it already holds without parsing it again: once a migration changed a
    /// schema's result types, a prepared statement of the old text fails ("cached plan must
    /// not change result type", also when described) on every server connection holding it,
    /// for every client. A text of its own is parsed afresh.
    pub(super) fn renamed(&self, keyed: String) -> String {
        if !self.any_renamed.load(Ordering::Acquire) {
            return keyed;
        }
        match self.known_renames().get(keyed.as_str()) {
            Some(renamed) => renamed.to_string(),
            None => keyed,
        }
    }

    /// Gives `keyed` a new text of its own (see [`renamed`](Self::renamed)) now that its
    /// statement of text `stale` failed, and returns the text to prepare: the new one, or the
    /// one another connection's failure renamed it to meanwhile (so that every connection
    /// holding the stale statement moves to the same text).
    pub(super) fn rename(&self, keyed: &str, stale: &str) -> String {
        let mut renamed = self.known_renames();
        let current = renamed.get(keyed).map_or(keyed, |text| &**text);
        if current != stale {
            return current.to_owned();
        }
        if renamed.len() >= MAX_PARAM_TYPES {
            renamed.clear();
        }
        let fresh = super::statement::unshared(keyed);
        renamed.insert(keyed.into(), fresh.as_str().into());
        self.any_renamed.store(true, Ordering::Release);
        fresh
    }

    fn known_renames(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<str>>> {
        self.renamed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The parameter types learned for `sql`, if any: in transaction mode for every text, in
    /// role mode's session mode for texts run on a connection another schema switched last.
    pub(super) fn param_types(&self, sql: &str) -> Option<Arc<[Type]>> {
        self.known_param_types().get(sql).cloned()
    }

    pub(super) fn learn_param_types(&self, sql: &str, types: Arc<[Type]>) {
        let mut known = self.known_param_types();
        if known.len() >= MAX_PARAM_TYPES {
            known.clear();
        }
        known.insert(sql.into(), types);
    }

    pub(super) fn forget_param_types(&self, sql: &str) {
        self.known_param_types().remove(sql);
    }

    fn known_param_types(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<[Type]>>> {
        self.param_types.lock().unwrap_or_else(|e| e.into_inner())
    }
}
