//! What the router knows of statements: the SQL text or prepared [`Statement`] a query
//! method is given ([`ToScopedStatement`]), and what each statement prepared through a
//! [`ConnectionScope`] or a [`TenantTransaction`] may do ([`PreparedEffects`]), one type
//! for both.
//!
//! [`ConnectionScope`]: super::ConnectionScope
//! [`TenantTransaction`]: super::TenantTransaction

use std::sync::{Mutex, PoisonError};

use tokio_postgres::Statement;

use crate::sql::Effects;

/// SQL text or a prepared [`Statement`], as accepted by the query methods of
/// [`ConnectionScope`](super::ConnectionScope).
pub trait ToScopedStatement: sealed::Sealed {
    #[doc(hidden)]
    fn as_source(&self) -> Source<'_>;
}

#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    Text(&'a str),
    Prepared(&'a Statement),
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for str {}
    impl Sealed for String {}
    impl Sealed for tokio_postgres::Statement {}
}

impl ToScopedStatement for str {
    fn as_source(&self) -> Source<'_> {
        Source::Text(self)
    }
}

impl ToScopedStatement for String {
    fn as_source(&self) -> Source<'_> {
        Source::Text(self)
    }
}

impl ToScopedStatement for Statement {
    fn as_source(&self) -> Source<'_> {
        Source::Prepared(self)
    }
}

/// The server-side name of a prepared statement, which tokio-postgres shows only in its
/// `Debug` output (`Statement { name: "s12", … }`). Empty when that output changes: the
/// statement is then taken as unknown, which costs switches, never isolation.
pub(super) fn statement_name(stmt: &Statement) -> String {
    let debug = format!("{stmt:?}");
    debug
        .split_once("name: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_default()
}

/// What each statement prepared through one [`ConnectionScope`](super::ConnectionScope) or
/// [`TenantTransaction`](super::TenantTransaction) may do, by its server-side name: what
/// its SQL said when it was prepared, applied each time it runs.
#[derive(Debug, Default)]
pub(super) struct PreparedEffects(Mutex<Vec<(String, Effects)>>);

impl PreparedEffects {
    /// Notes that `stmt` was prepared from SQL that may do `effects`.
    pub(super) fn remember(&self, stmt: &Statement, effects: Effects) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((statement_name(stmt), effects));
    }

    /// What running `stmt` may do, if it was prepared here; `None` for a statement prepared
    /// elsewhere (or whose name cannot be read).
    pub(super) fn get(&self, stmt: &Statement) -> Option<Effects> {
        let name = statement_name(stmt);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(n, _)| !n.is_empty() && *n == name)
            .map(|(_, effects)| *effects)
    }
}

/// `sql` behind a comment that no other prepare carries, for a named statement prepared inside
/// a tenant's transaction. PgBouncer 1.21 and later (`max_prepared_statements` > 0, its
/// default since 1.24) keep a named statement on the server after the client closes it and
/// hand it to every client that prepares the same text, analysed under whichever tenant's
/// path prepared it first (or before a migration changed its types): "cached plan must not
/// change result type" where tenants' column types differ. A text of its own is parsed
/// afresh, on this tenant's path. The comment changes nothing else (PostgreSQL skips it).
pub(crate) fn unshared(sql: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::LazyLock;
    static BASE: LazyLock<u64> = LazyLock::new(|| {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("/* tenant-schemas {:016x}-{n:x} */ {sql}", *BASE)
}
