//! What a router keeps for each database: its pool, the search-path policy, counters, the
//! schema-affine handoff, and (transaction mode) the parameter types learned per SQL text.
//!
//! A [`ConnectionScope`](super::ConnectionScope) holds its database's [`RouterPool`] and
//! goes through its methods only: it counts its switches there and hands its connection
//! back through [`RouterPool::release`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use deadpool_postgres::{Object, Pool, PoolError};
use tokio_postgres::types::Type;

use super::affinity::Handoff;
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
    /// transactions) and RDS Proxy.
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
}

/// How many SQL texts' parameter types a transaction-mode router keeps.
const MAX_PARAM_TYPES: usize = 4096;

/// One database as the router sees it.
#[derive(Debug)]
pub(crate) struct RouterPool {
    pool: Pool,
    mode: SearchPathMode,
    extra_schemas: Vec<SchemaName>,
    /// Whether connections' search paths are remembered across checkouts (see
    /// [`session`]); off when the pool's recycling may reset session state.
    track: bool,
    /// Schema-affine handoff of returning connections (session mode with tracking).
    handoff: Option<Handoff>,
    /// Transaction mode: the parameter types learned per SQL text.
    param_types: Mutex<HashMap<Box<str>, Arc<[Type]>>>,
    checkouts: AtomicU64,
    switches: AtomicU64,
    existence_checks: AtomicU64,
}

impl RouterPool {
    /// `track` (session mode only) turns the path memory on; `affinity` the handoff, when
    /// the memory is on.
    pub(super) fn new(
        pool: Pool,
        mode: SearchPathMode,
        extra_schemas: Vec<SchemaName>,
        track: bool,
        affinity: bool,
    ) -> Self {
        let track = track && mode == SearchPathMode::Session;
        Self {
            pool,
            mode,
            extra_schemas,
            track,
            handoff: (track && affinity).then(Handoff::default),
            param_types: Mutex::default(),
            checkouts: AtomicU64::new(0),
            switches: AtomicU64::new(0),
            existence_checks: AtomicU64::new(0),
        }
    }

    pub(super) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(super) fn mode(&self) -> SearchPathMode {
        self.mode
    }

    pub(super) fn tracks_search_path(&self) -> bool {
        self.track
    }

    /// The search path of `schema` under this policy.
    pub(super) fn search_path(&self, schema: &SchemaName) -> Arc<str> {
        search_path(schema, &self.extra_schemas)
    }

    /// A connection from the pool (or, when the pool is exhausted, one handed over by a
    /// scope releasing it on `path`), counted as a checkout. The flag tells whether it was
    /// handed over rather than recycled by the pool.
    pub(super) async fn get(&self, path: &Arc<str>) -> Result<(Object, bool), PoolError> {
        let got = match &self.handoff {
            Some(handoff) => handoff.checkout(&self.pool, path).await,
            None => self.pool.get().await.map(|conn| (conn, false)),
        }?;
        self.checkouts.fetch_add(1, Ordering::Relaxed);
        Ok(got)
    }

    /// Takes a connection back that is on `path`, verified under `gate`'s `epoch`, with
    /// nothing run since that could have changed its session and at most `statements`
    /// cached: remembered (when tracking), then handed to a request waiting for that path,
    /// or returned to the pool.
    pub(super) fn release(
        &self,
        conn: Object,
        path: &Arc<str>,
        gate: Arc<Gate>,
        epoch: u64,
        statements: usize,
    ) {
        if self.track {
            session::remember(&conn, path.clone(), gate, epoch, statements);
        }
        match &self.handoff {
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
        }
    }

    /// Transaction mode: the parameter types learned for `sql`, if any.
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
