//! Transaction mode's preludes, encoded once per schema and settings.
//!
//! Every transaction-mode statement's message begins with its switch: `BEGIN` and the `SET
//! LOCAL`s (or, in the statement's implicit transaction, the `set_config`s) and the leftovers
//! undone, each an unnamed `Parse`/`Bind`/`Execute`. Formatting and encoding them at every
//! statement was about a fifth of the client's instructions per statement at one tenant
//! (BENCHMARKS.md §29). They depend only on the schema's search path, which is fixed for a
//! schema's [`Place`](super::pool::Place), and on the few settings of a [`PreludeKey`]: each
//! place keeps the ones it has sent (a few hundred bytes each). One ended by the existence
//! check, sent about once a second per schema, is made when needed and not kept.

use std::sync::{Arc, Mutex};

use tokio_postgres::Prelude;

/// What a schema's prelude depends on besides its search path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreludeKey {
    /// What opens the transaction.
    pub(crate) shape: Shape,
    /// The tenant's `statement_timeout`.
    pub(crate) timeout_ms: Option<u32>,
    /// The tenant's role (quoted), in role mode.
    pub(crate) role: Option<Arc<str>>,
    /// Whether the process has seen tenant roles: a tenant without a role then sets none
    /// (`crate::databases::roles_seen`). Read before the prelude is encoded; it only ever
    /// turns on, so a prelude kept under `false` sets no role, or one more `NONE`.
    pub(crate) roles_seen: bool,
}

/// How a transaction-mode prelude opens its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `BEGIN` (`READ ONLY` for a read-only tenant), with the session's resets first when
    /// `reset`.
    Begin { read_only: bool, reset: bool },
    /// Nothing: the statement's own implicit transaction, settings made with `set_config(…,
    /// true)`.
    Implicit,
}

/// How many preludes a schema keeps: one in practice, a few when its settings change. Past it
/// the schema's start afresh.
const MAX_PER_SCHEMA: usize = 8;

/// The preludes a schema's place keeps, shared by every scope on the schema.
#[derive(Debug, Default)]
pub(crate) struct Preludes(Mutex<Vec<(PreludeKey, Arc<Prelude>)>>);

impl Preludes {
    /// The prelude kept for `key`, or the one `encode` makes, then kept (in a buffer no
    /// larger than it: the encoder's grows by doubling).
    pub(crate) fn get_or_encode<E>(
        &self,
        key: PreludeKey,
        encode: impl FnOnce() -> Result<Prelude, E>,
    ) -> Result<Arc<Prelude>, E> {
        if let Some((_, prelude)) = self.kept().iter().find(|(kept, _)| *kept == key) {
            return Ok(prelude.clone());
        }
        // `BytesMut`'s clone is exactly as long as its contents.
        #[allow(clippy::redundant_clone)]
        let prelude = Arc::new(encode()?.clone());
        let mut kept = self.kept();
        if kept.len() >= MAX_PER_SCHEMA {
            kept.clear();
        }
        kept.push((key, prelude.clone()));
        Ok(prelude)
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<(PreludeKey, Arc<Prelude>)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(read_only: bool, timeout_ms: Option<u32>) -> PreludeKey {
        PreludeKey {
            shape: Shape::Begin {
                read_only,
                reset: false,
            },
            timeout_ms,
            role: None,
            roles_seen: false,
        }
    }

    fn encoded(sql: &str) -> Result<Prelude, std::convert::Infallible> {
        let mut prelude = Prelude::new();
        prelude.push_text(sql).expect("encodes");
        Ok(prelude)
    }

    #[test]
    fn kept_per_key() {
        let preludes = Preludes::default();
        let a = preludes.get_or_encode(key(false, None), || encoded("SELECT 1"));
        let again = preludes.get_or_encode(
            key(false, None),
            || -> Result<Prelude, std::convert::Infallible> { panic!("encoded again") },
        );
        assert!(Arc::ptr_eq(&a.unwrap(), &again.unwrap()));
        let other = preludes
            .get_or_encode(key(false, Some(5)), || encoded("SELECT 1, 2"))
            .unwrap();
        assert_eq!(other.len(), 1);
        let read_only = preludes.get_or_encode(key(true, None), || encoded("SELECT 2"));
        assert!(!Arc::ptr_eq(&read_only.unwrap(), &other));
    }

    #[test]
    fn a_failed_encoding_is_not_kept() {
        let preludes = Preludes::default();
        let failed = preludes.get_or_encode(key(false, None), || Err("no"));
        assert_eq!(failed.unwrap_err(), "no");
        assert!(preludes
            .get_or_encode(key(false, None), || encoded("SELECT 1"))
            .is_ok());
    }

    #[test]
    fn bounded() {
        let preludes = Preludes::default();
        for ms in 0..(MAX_PER_SCHEMA as u32 * 3) {
            preludes
                .get_or_encode(key(false, Some(ms)), || encoded("SELECT 1"))
                .unwrap();
            assert!(preludes.kept().len() <= MAX_PER_SCHEMA);
        }
    }
}
