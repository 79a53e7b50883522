//! What one user of a connection may leave on its session for the next — settings,
//! temporary tables, held cursors, sequence state — and the statements that undo it. A leaf:
//! every driver's switch ([`checkout`](crate::checkout)), the library's own work
//! (`databases`) and migrations use it.

/// What a transaction-mode transaction runs first, right behind its `BEGIN` and in the same
/// message (see
/// [`DriverCheckout::local_begin`](crate::checkout::DriverCheckout::local_begin)): the
/// temporary tables the server connection's last user left are dropped. `pg_temp` is searched before the tenant's path,
/// so one named like a tenant's table would stand in for it; a pooler's server connection
/// keeps them for whichever client comes next, and a function can make one (`CREATE TEMP
/// TABLE IF NOT EXISTS` in a PL/pgSQL body) where no SQL reader sees it. Transactional, and
/// allowed in a read-only transaction; cheap when there are none.
pub(crate) const DROP_LEFT_TEMPORARY: &str = "DISCARD TEMP";

/// The resets of a switch that starts from the connection's startup settings: every setting,
/// then the session authorization (`RESET ALL` leaves it and the role alone; a `RESET ROLE`
/// or the tenant's role follows). See
/// [`DriverCheckout::session_prefix`](crate::checkout::DriverCheckout::session_prefix).
/// `RESET ALL` first: each statement runs under the `statement_timeout` in force when it starts, so only the
/// first runs under whatever the last user left (`1ms`).
pub(crate) const SESSION_RESETS: [&str; 2] = ["RESET ALL", "RESET SESSION AUTHORIZATION"];

/// What the connection's last user may have left on the session where no SQL reader saw it
/// (a function's body, another client of a pooler), undone by every transaction-mode `BEGIN`
/// and, with `reset_settings`, by a session-mode checkout's first switch (without it, that
/// switch sends [`DROP_LEFT_TEMPORARY`] alone), in the same message: temporary tables
/// ([`DROP_LEFT_TEMPORARY`]); cursors held open past their transaction (`DECLARE … WITH
/// HOLD`), which anyone can `FETCH` from by name — no privilege is checked, not even in role
/// mode — and get the rows the last user's query read; and sequence state (`lastval()`,
/// `currval()` would give the last user's ids). Allowed in a transaction, transactional, and
/// cheap when there is nothing to undo.
pub(crate) const LEFT_OBJECTS: [&str; 3] = [DROP_LEFT_TEMPORARY, "CLOSE ALL", "DISCARD SEQUENCES"];
