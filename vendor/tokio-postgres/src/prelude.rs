//! Statements bound and executed ahead of another one in the same implicit transaction.
//!
//! Added for tenant-schemas; written to be proposed upstream (rust-postgres issue #1213).

use crate::Statement;
use crate::query::encode_bind;
use crate::types::{BorrowToSql, ToSql};
use crate::{Error, slice_iter};
use bytes::BytesMut;
use postgres_protocol::message::frontend;

/// Statements, with their parameters, sent in the same message as the statement of a
/// `*_after` call of [`Client`](crate::Client) and run before it, with no `Sync` in between:
/// one implicit transaction, one round trip, one `ReadyForQuery`.
///
/// What the prelude's statements return is discarded. If one fails, the server skips
/// everything after it up to the `Sync` (the request's own statement does not run), the
/// implicit transaction rolls back (also what the prelude changed, such as a setting made
/// with `set_config(…, false)`), and the call returns the prelude's error. If the request's
/// own statement fails, what the prelude changed rolls back with it.
///
/// A prelude runs only through the extended query protocol, in one implicit transaction
/// with the statement it precedes. A prelude that begins with `BEGIN` opens a transaction
/// block instead: the statement runs in it, the block stays open after the `Sync` (end it
/// with a `COMMIT`, which an aborted block answers with a rollback), and if the prelude
/// fails before its `BEGIN` ran, the statement does not run outside it either.
#[derive(Clone, Debug, Default)]
pub struct Prelude {
    buf: BytesMut,
    portals: usize,
}

impl Prelude {
    /// An empty prelude.
    pub fn new() -> Prelude {
        Prelude::default()
    }

    /// Adds `statement`, bound to `params`, to the prelude (run after what it holds).
    pub fn push(
        &mut self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<&mut Self, Error> {
        self.push_raw(statement, slice_iter(params))
    }

    /// [`push`](Self::push), with parameters given as an iterator.
    pub fn push_raw<P, I>(&mut self, statement: &Statement, params: I) -> Result<&mut Self, Error>
    where
        P: BorrowToSql,
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        let mark = self.buf.len();
        let encoded = encode_bind(statement, params, "", &mut self.buf)
            .and_then(|()| frontend::execute("", 0, &mut self.buf).map_err(Error::encode));
        if let Err(e) = encoded {
            self.buf.truncate(mark);
            return Err(e);
        }
        self.portals += 1;
        Ok(self)
    }

    /// Adds `sql`, one statement without parameters, to the prelude: parsed as the unnamed
    /// statement, bound and executed (`Parse`, `Bind`, `Execute`), as the simple query
    /// protocol would run it, but inside the implicit transaction of the request it precedes.
    pub fn push_text(&mut self, sql: &str) -> Result<&mut Self, Error> {
        let mark = self.buf.len();
        let encoded = frontend::parse("", sql, std::iter::empty(), &mut self.buf)
            .map_err(Error::encode)
            .and_then(|()| {
                frontend::bind(
                    "",
                    "",
                    std::iter::empty(),
                    std::iter::empty::<()>(),
                    |(), _| Ok(postgres_protocol::IsNull::No),
                    std::iter::empty(),
                    &mut self.buf,
                )
                .map_err(|e| match e {
                    frontend::BindError::Conversion(e) => Error::to_sql(e, 0),
                    frontend::BindError::Serialization(e) => Error::encode(e),
                })
            })
            .and_then(|()| frontend::execute("", 0, &mut self.buf).map_err(Error::encode));
        if let Err(e) = encoded {
            self.buf.truncate(mark);
            return Err(e);
        }
        self.portals += 1;
        Ok(self)
    }

    /// Whether the prelude holds no statement.
    pub fn is_empty(&self) -> bool {
        self.portals == 0
    }

    /// How many statements the prelude runs.
    pub fn len(&self) -> usize {
        self.portals
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn portals(&self) -> usize {
        self.portals
    }
}
