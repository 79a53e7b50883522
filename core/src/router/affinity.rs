//! Schema-affine checkout: a connection coming back on schema S goes straight to a request
//! waiting for S, which then needs no search-path switch.
//!
//! Requests that find the pool exhausted register here *and* wait on the pool, whichever
//! serves first. A returning connection is handed to a waiter for its own schema, unless the
//! oldest waiter has waited longer than [`MAX_SKIP`]: then it goes back to the pool, whose
//! queue is first come, first served, so no request starves behind a busy schema.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool, PoolError};
use tokio::sync::oneshot;

/// How long the oldest waiter may be passed over in favour of same-schema handoffs.
const MAX_SKIP: Duration = Duration::from_millis(2);

#[derive(Debug, Default)]
pub(crate) struct Handoff {
    /// Oldest first. A waiter the pool served meanwhile (its receiver dropped) stays until
    /// it reaches the front: a release lets go of those there and skips the others.
    waiters: Mutex<VecDeque<Waiter>>,
}

#[derive(Debug)]
struct Waiter {
    path: Arc<str>,
    since: Instant,
    sender: oneshot::Sender<Object>,
}

impl Handoff {
    /// A connection from the pool or, when the pool is exhausted, from whichever comes first:
    /// the pool's queue or a connection released on `path`.
    /// The flag tells whether the connection was handed over by a releasing scope (not
    /// recycled by the pool).
    pub(crate) async fn checkout(
        &self,
        pool: &Pool,
        path: &Arc<str>,
    ) -> Result<(Object, bool), PoolError> {
        let status = pool.status();
        if status.available > 0 || status.size < status.max_size {
            return pool.get().await.map(|conn| (conn, false));
        }
        let (sender, receiver) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Waiter {
                path: path.clone(),
                since: Instant::now(),
                sender,
            });
        // Dropping the losing branch is safe: an object already sent into a dropped
        // receiver, or got from the pool and dropped, goes back to the pool.
        tokio::select! {
            biased;
            Ok(conn) = receiver => Ok((conn, true)),
            conn = pool.get() => conn.map(|conn| (conn, false)),
        }
    }

    /// Hands `conn`, which is on `path`, to a waiter for `path`; gives it back when there
    /// is none (the caller then returns it to the pool).
    pub(crate) fn release(&self, conn: Object, path: &str) -> Option<Object> {
        if conn.is_closed() {
            return Some(conn);
        }
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        while waiters.front().is_some_and(|w| w.sender.is_closed()) {
            waiters.pop_front();
        }
        let oldest = waiters.front()?.since.elapsed();
        if oldest > MAX_SKIP {
            return Some(conn);
        }
        let i = waiters
            .iter()
            .position(|w| &*w.path == path && !w.sender.is_closed())?;
        let waiter = waiters.remove(i)?;
        drop(waiters);
        waiter.sender.send(conn).err()
    }
}
