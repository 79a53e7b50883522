//! Transaction mode: every statement runs in a transaction of its own that begins with
//! `SET LOCAL search_path`, so nothing relies on session state (PgBouncer in transaction
//! pooling mode, RDS Proxy).

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use futures_util::future::{join, maybe_done};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Prelude, SimpleQueryMessage};

use super::{is_replannable, not_in_transaction_mode, refuse_transaction_control};
use super::{ConnectionScope, Target, POOLER_DOES_NOT_KEEP, POOLER_KEEPS, POOLER_UNKNOWN};
use crate::checkout::begin_access;
use crate::error::{Error, Result};
use crate::router::preludes::{PreludeKey, Shape};
use crate::router::session;
use crate::router::statement::{statement_name, unshared, Source};

/// The statement prepared to find out whether the pooler keeps named statements: it shows in
/// `pg_prepared_statements` under the pooler's name for it, or under the client's.
const PROBE: &str = "SELECT 1 /* tenant-schemas: does the pooler keep named statements? */";

impl ConnectionScope {
    /// Transaction mode: `BEGIN` and the local switch with the existence check as the prelude
    /// of the statement's own message (unnamed, with the parameter types learned for its text;
    /// see [`local_transaction_after`](Self::local_transaction_after)), then `COMMIT`, in one
    /// flush: one round trip, and nothing server-side outlives the transaction. The first
    /// time a text is seen its parameter types are learned inside the transaction with a
    /// named statement that is closed before the statement runs (under a text no other
    /// prepare uses: a pooler that keeps named statements would otherwise hand it one analysed
    /// under another tenant's path, see [`unshared`]).
    pub(super) async fn in_own_transaction<'s, T, F, Fut>(
        &self,
        source: Source<'s>,
        action: &'static str,
        op: F,
    ) -> Result<T>
    where
        F: Fn(Target<'s>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let Source::Text(sql) = source else {
            return Err(not_in_transaction_mode(
                "a statement prepared outside a transaction",
            ));
        };
        refuse_transaction_control(sql)?;
        let _entered = self.gate.enter(&self.schema).await?;
        // SQL that drops prepared statements runs unnamed: it would drop its own. So does
        // everything once tenant roles are in use: a named statement the pooler keeps lives on
        // a server connection other clients' transactions run on, where another tenant's SQL (a
        // function's dynamic SQL) can `DEALLOCATE` it and `PREPARE` its own text under the same
        // name, which this tenant's next `Bind` would run under its role and path. An unnamed
        // statement lives for one message.
        let effects = crate::sql::effects(sql);
        let named =
            self.pool.pooler_statements() && !self.guard_statements && !effects.drops_prepared;
        // Only what may run behind other statements before the same `Sync` goes in the
        // message's implicit transaction: `LOCK TABLE`, DDL and the like keep `BEGIN`.
        let implicit = !effects.own_transaction;
        if named && self.pooler_keeps_statements().await? {
            match self.named(sql, implicit, &op).await {
                Err(Error::Database { source, .. })
                    if source.code() == Some(&SqlState::INVALID_SQL_STATEMENT_NAME) =>
                {
                    // The pooler no longer knows the connection's statements (reconfigured
                    // with `max_prepared_statements = 0`, or restarted behind the same
                    // connection): the statement ran nothing. Ask again before naming any,
                    // and run this one unnamed.
                    tracing::warn!(schema = %self.schema, error = %source, "the pooler lost a named statement; asking it again whether it keeps them");
                    self.forget_pooler();
                }
                other => return other.map_err(|e| e.while_doing(action)),
            }
        }
        let first = self.typed_once(sql, implicit, &op).await;
        let result = match first {
            Err(Error::Database { source, .. }) if is_replannable(&source) => {
                tracing::debug!(schema = %self.schema, error = %source, "learned parameter types do not fit this schema; learning again");
                self.pool.forget_param_types(sql);
                self.typed_once(sql, implicit, &op).await
            }
            Err(Error::Database { source, .. })
                if source.code() == Some(&SqlState::INVALID_SQL_STATEMENT_NAME) =>
            {
                // Statements the connection relied on (a type lookup tokio-postgres keeps)
                // were dropped behind its back — a function's `DEALLOCATE ALL` — and the
                // transaction rolled back: prepared again in a new one.
                tracing::warn!(schema = %self.schema, error = %source, "the connection's prepared statements were dropped behind its cache; preparing again");
                self.statements_dropped();
                self.typed_once(sql, implicit, &op).await
            }
            other => other,
        };
        self.after_own_transaction(sql);
        result.map_err(|e| e.while_doing(action))
    }

    /// A named statement the pooler keeps, prepared (and cached) the first time on this
    /// connection inside the statement's transaction; once cached, `BEGIN` and the local
    /// switch as the prelude of its `Bind`/`Execute`, then `COMMIT`, in one flush. A statement
    /// that no longer fits its schema is prepared again under a new text (see
    /// [`RouterPool::renamed`]).
    ///
    /// [`RouterPool::renamed`]: crate::router::pool::RouterPool::renamed
    async fn named<'s, T, F, Fut>(&self, sql: &'s str, implicit: bool, op: &F) -> Result<T>
    where
        F: Fn(Target<'s>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let keyed = self.keyed(sql);
        let text = self.pool.renamed(keyed.clone());
        match self.named_once(text.clone(), implicit, op).await {
            Err(Error::Database { source, .. }) if is_replannable(&source) => {
                tracing::debug!(schema = %self.schema, error = %source, "named statement does not fit this schema; preparing it under a new text");
                drop(self.conn().statement_cache.remove(&text, &[]));
                let fresh = self.pool.rename(&keyed, &text);
                self.named_once(fresh, implicit, op).await
            }
            other => other,
        }
    }

    /// One attempt of [`named`](Self::named) with the statement of `text`.
    async fn named_once<'s, T, F, Fut>(&self, text: String, implicit: bool, op: &F) -> Result<T>
    where
        F: Fn(Target<'s>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        // Listed as cached for the schema by the memory beside the connection: at hand (from
        // the cache), it runs behind the `BEGIN` and the switch in its own message, the
        // `COMMIT` behind it, one flush. Should the cache have been emptied behind the memory's
        // back, the statement is prepared here, outside any transaction; one that cannot be
        // prepared there takes the path below.
        let first = !self.noted.swap(true, Ordering::AcqRel);
        if session::note_statement_use(self.conn(), &self.schema, &text, first) {
            if let Ok(stmt) = self.prepare_keyed(text.clone()).await {
                let result = self
                    .local_transaction_after(implicit, |prelude| op(Target::After(prelude, stmt)))
                    .await;
                self.pool.count_named_statement();
                return result;
            }
        }
        // Set when the statement is at hand, and its execution written in the same poll, so the
        // COMMIT can follow: once its Parse is answered (it is parsed inside the transaction,
        // on the tenant's path).
        let at_hand = AtomicBool::new(false);
        let body = async {
            let stmt = self.prepare_keyed(text).await?;
            at_hand.store(true, Ordering::Release);
            op(Target::Prepared(stmt)).await
        };
        let result = self
            .local_transaction_when(body, || at_hand.load(Ordering::Acquire))
            .await;
        self.pool.count_named_statement();
        result
    }

    /// Whether the pooler in front of the connection keeps named statements across server
    /// connections, asked once per connection (see [`probe_pooler`](Self::probe_pooler)).
    async fn pooler_keeps_statements(&self) -> Result<bool> {
        match self.pooler_keeps.load(Ordering::Acquire) {
            POOLER_KEEPS => return Ok(true),
            POOLER_DOES_NOT_KEEP => return Ok(false),
            _ => {}
        }
        let keeps = match session::pooler_keeps_statements(self.conn()) {
            Some(keeps) => keeps,
            None => {
                let keeps = self.probe_pooler().await?;
                session::note_pooler_keeps_statements(self.conn(), Some(keeps));
                if self.pool.count_pooler_probe(keeps) {
                    tracing::warn!(
                        "pooler_prepared_statements is on, but the pooler does not keep named \
                         prepared statements (PgBouncer 1.21+ with max_prepared_statements > 0 \
                         does): statements run unnamed"
                    );
                }
                keeps
            }
        };
        self.pooler_keeps.store(
            if keeps {
                POOLER_KEEPS
            } else {
                POOLER_DOES_NOT_KEEP
            },
            Ordering::Release,
        );
        Ok(keeps)
    }

    /// After user SQL ran in transaction mode: if it may have dropped prepared statements
    /// (`DEALLOCATE ALL`, which PgBouncer answers by forgetting the client's statements; it
    /// would close the connection at the next `Bind` of one), the connection's cached
    /// statements are dropped too, and the client's type lookups prepared again. If it may
    /// have dropped or renamed a schema, every connection of the process verifies its schema
    /// again (see the session mode's `after_running`).
    pub(super) fn after_own_transaction(&self, sql: &str) {
        let effects = crate::sql::effects(sql);
        if effects.drops_prepared {
            self.statements_dropped();
        }
        if effects.changes_schemas {
            session::everything_changed();
        }
    }

    /// Asks again, at the next statement, whether the pooler keeps named statements, and
    /// drops the connection's cached statements.
    fn forget_pooler(&self) {
        self.pooler_keeps.store(POOLER_UNKNOWN, Ordering::Release);
        session::note_pooler_keeps_statements(self.conn(), None);
        self.statements_dropped();
    }

    /// In a transaction of its own (one server connection throughout, whatever the pooling):
    /// prepares [`PROBE`] as a named statement, reads the names `pg_prepared_statements`
    /// shows for its text, and closes it before the transaction ends. A pooler that keeps
    /// named statements across server connections (PgBouncer 1.21+ with
    /// `max_prepared_statements` > 0) prepares it under a name of its own (`PGBOUNCER_<n>`);
    /// PgBouncer 1.18, one with `max_prepared_statements = 0`, or no pooler at all, under the
    /// client's name. Only the former counts as keeping them: a name that cannot be read
    /// counts as not.
    async fn probe_pooler(&self) -> Result<bool> {
        let _one_at_a_time = self.calls.lock().await;
        let client: &tokio_postgres::Client = self.conn();
        self.open_transaction.store(true, Ordering::Release);
        let probe = async {
            client.batch_execute("BEGIN").await?;
            let stmt = client.prepare(PROBE).await?;
            let name = statement_name(&stmt);
            let messages = client
                .simple_query(&format!(
                    "SELECT name FROM pg_catalog.pg_prepared_statements WHERE statement = '{PROBE}'"
                ))
                .await?;
            // Closed here, inside the transaction, on the server connection it was prepared on.
            drop(stmt);
            let names: Vec<String> = messages
                .iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                    _ => None,
                })
                .collect();
            Ok::<_, tokio_postgres::Error>(
                !name.is_empty() && !names.is_empty() && !names.contains(&name),
            )
        };
        let outcome = probe.await;
        let ended = client
            .batch_execute(if outcome.is_ok() {
                "COMMIT"
            } else {
                "ROLLBACK"
            })
            .await;
        if ended.is_ok() {
            self.open_transaction.store(false, Ordering::Release);
        }
        let keeps = outcome.map_err(|e| {
            Error::db(
                "asking whether the pooler keeps prepared statements",
                &self.schema,
                e,
            )
        })?;
        ended.map_err(|e| Error::db("committing", &self.schema, e))?;
        Ok(keeps)
    }

    async fn typed_once<'s, T, F, Fut>(&self, sql: &'s str, implicit: bool, op: &F) -> Result<T>
    where
        F: Fn(Target<'s>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let client: &tokio_postgres::Client = self.conn();
        match self.pool.param_types(sql) {
            Some(types) => {
                self.local_transaction_after(implicit, |prelude| {
                    op(Target::TypedAfter(prelude, sql, types))
                })
                .await
            }
            None => {
                let body = async {
                    let stmt = client.prepare(&unshared(sql)).await?;
                    let types: Arc<[Type]> = stmt.params().into();
                    // Closed here, inside the transaction, before anything else is sent.
                    drop(stmt);
                    self.pool.learn_param_types(sql, types.clone());
                    op(Target::Typed(sql, types)).await
                };
                self.local_transaction(body, false).await
            }
        }
    }

    /// A statement at hand (its parameter types learned) in a transaction of its own, in one
    /// flush: `BEGIN`, the local switch and the existence check as the [`Prelude`] of the
    /// statement's own message (each an unnamed `Parse`/`Bind`/`Execute`, no `Sync` before the
    /// statement's), then `COMMIT`. Should the message fail before its `BEGIN` ran (cancelled
    /// under a `statement_timeout` the server connection's last user left, or by a cancel
    /// request), PostgreSQL skips everything up to the `Sync`: the statement never runs
    /// outside the transaction, on whatever path the session has; the `COMMIT` then finds no
    /// transaction. A failure after `BEGIN` aborts the transaction, which `COMMIT` rolls back.
    /// With `implicit` (the statement may run behind others before the same `Sync`), on a
    /// router with [`implicit_transactions`](crate::SchemaRouterBuilder::implicit_transactions)
    /// and for a writable tenant without resets, the statement runs in its message's implicit
    /// transaction instead ([`implicit_transaction_after`](Self::implicit_transaction_after)).
    async fn local_transaction_after<T, Fut>(
        &self,
        implicit: bool,
        body: impl FnOnce(Arc<Prelude>) -> Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let reset = self.pool.resets_settings();
        // A transaction block a dropped call left open on the session (its `COMMIT` not yet
        // written): a statement sent without `BEGIN` would run inside it, and commit nothing
        // when the scope's drop closes the connection for it. `BEGIN` and `COMMIT` end it.
        if implicit
            && self.pool.in_implicit_transactions()
            && !reset
            && !self.read_only
            && !self.open_transaction.load(Ordering::Acquire)
        {
            return self.implicit_transaction_after(body).await;
        }
        let _one_at_a_time = self.calls.lock().await;
        let client: &tokio_postgres::Client = self.conn();
        let epoch = self.gate.epoch();
        let check = !self.gate.recently_verified(epoch);
        let shape = Shape::Begin {
            read_only: self.read_only,
            reset,
        };
        let prelude = self.prelude(shape, check, || {
            let begin = format!("BEGIN{}", begin_access(self.read_only, reset));
            let settings = crate::checkout::local_start_statements(
                &self.path,
                self.statement_timeout_ms,
                self.role.as_deref(),
                reset,
            );
            std::iter::once(begin).chain(settings).collect()
        })?;
        self.open_transaction.store(true, Ordering::Release);
        self.pool.count_switch();
        if check {
            self.pool.count_existence_check();
        }
        // Both written on the first poll, the statement's message first: `body` writes its
        // whole message before its first await (as every `Target` operation does).
        let (outcome, ended) = join(body(prelude), client.batch_execute("COMMIT")).await;
        if ended.is_ok() {
            self.open_transaction.store(false, Ordering::Release);
        }
        let value = match outcome {
            Err(e) if e.is_from_prelude() => return Err(self.switch_error(e)),
            outcome => outcome.map_err(|e| Error::db("running a statement", &self.schema, e))?,
        };
        if check {
            self.gate.mark_verified(epoch);
        }
        ended.map_err(|e| Error::db("committing", &self.schema, e))?;
        Ok(value)
    }

    /// The prelude of `shape` for this scope's schema and settings: the `statements` given,
    /// each encoded as an unnamed `Parse`/`Bind`/`Execute`, and when `check`ed the existence
    /// check. Without the check (nearly always: a schema is checked again about once a
    /// second) the one the schema's place keeps
    /// ([`Preludes`](crate::router::preludes::Preludes)), encoded the first time.
    fn prelude(
        &self,
        shape: Shape,
        check: bool,
        statements: impl FnOnce() -> Vec<String>,
    ) -> Result<Arc<Prelude>> {
        let encode = || {
            let mut prelude = Prelude::new();
            let check_sql = check.then(|| self.existence_check());
            for statement in statements().iter().chain(check_sql.as_ref()) {
                prelude
                    .push_text(statement)
                    .map_err(|e| self.switch_error(e))?;
            }
            Ok(prelude)
        };
        if check {
            return encode().map(Arc::new);
        }
        let key = PreludeKey {
            shape,
            timeout_ms: self.statement_timeout_ms,
            role: self.role.clone(),
            roles_seen: crate::databases::roles_seen(),
        };
        self.preludes.get_or_encode(key, encode)
    }

    /// A statement at hand in the implicit transaction of its own message
    /// ([`implicit_transactions`](crate::SchemaRouterBuilder::implicit_transactions)): the
    /// settings made local with `set_config(…, true)`, the leftovers undone and the existence
    /// check as its [`Prelude`], one `Sync`. Nothing ahead of the statement opens a
    /// transaction block, so nothing is left open should the call be dropped: the server ends
    /// the implicit transaction at the `Sync`, and the settings with it. A failure anywhere
    /// in the prelude makes PostgreSQL skip the statement; one at commit (a deferred
    /// constraint) is read before the `ReadyForQuery` that ends the statement's answer.
    async fn implicit_transaction_after<T, Fut>(
        &self,
        body: impl FnOnce(Arc<Prelude>) -> Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let _one_at_a_time = self.calls.lock().await;
        let epoch = self.gate.epoch();
        let check = !self.gate.recently_verified(epoch);
        let prelude = self.prelude(Shape::Implicit, check, || {
            crate::checkout::implicit_start_statements(
                &self.path,
                self.statement_timeout_ms,
                self.role.as_deref(),
            )
        })?;
        self.pool.count_switch();
        if check {
            self.pool.count_existence_check();
        }
        let value = match body(prelude).await {
            Err(e) if e.is_from_prelude() => return Err(self.switch_error(e)),
            outcome => outcome.map_err(|e| Error::db("running a statement", &self.schema, e))?,
        };
        if check {
            self.gate.mark_verified(epoch);
        }
        Ok(value)
    }

    /// Runs `body` inside `BEGIN; SET LOCAL search_path …; <existence check>` and ends the
    /// transaction. `body`'s first request is written once the `BEGIN` message has answered;
    /// with `pipelined_commit`, the `COMMIT` right behind it — only for a body that writes all
    /// its requests on its first poll, since the `COMMIT` is written after them. An aborted
    /// transaction answers `COMMIT` with a rollback, so a failed body commits nothing.
    pub(super) async fn local_transaction<T>(
        &self,
        body: impl Future<Output = Result<T, tokio_postgres::Error>>,
        pipelined_commit: bool,
    ) -> Result<T> {
        self.local_transaction_when(body, || pipelined_commit).await
    }

    /// [`local_transaction`](Self::local_transaction), with the `COMMIT` written right
    /// behind the body as soon as `written` says, asked after each of the body's polls until
    /// it is done, that the body has written all its requests: in the same flush as the
    /// body's last request when that is written on the body's first poll, else as soon as
    /// the poll that wrote it returns. Otherwise the transaction ends after the body's
    /// answer.
    async fn local_transaction_when<T>(
        &self,
        body: impl Future<Output = Result<T, tokio_postgres::Error>>,
        written: impl Fn() -> bool,
    ) -> Result<T> {
        let _one_at_a_time = self.calls.lock().await;
        let client: &tokio_postgres::Client = self.conn();
        self.open_transaction.store(true, Ordering::Release);
        self.pool.count_switch();
        let epoch = self.gate.epoch();
        let check = !self.gate.recently_verified(epoch);
        if check {
            self.pool.count_existence_check();
        }
        let reset = self.pool.resets_settings();
        let begin = format!(
            "BEGIN{}; {}{}",
            begin_access(self.read_only, reset),
            self.local_start(reset),
            if check {
                format!("; {}", self.existence_check())
            } else {
                String::new()
            }
        );
        let commit = || maybe_done(client.batch_execute("COMMIT"));
        // Nothing of the body is written before the `BEGIN` message has answered. Each message
        // fails on its own: one cancelled before its `BEGIN` ran — under a `statement_timeout`
        // the server connection's last user left, which fires while PostgreSQL frees that
        // user's unnamed statement at the message's start, or by a cancel request — would
        // leave a statement written behind it to run by itself, in autocommit, on whatever
        // path and role the session has (another tenant's).
        if let Err(e) = client.batch_execute(&begin).await {
            // `BEGIN` ran and a later statement failed (the transaction is aborted), or it
            // never ran: a `ROLLBACK` ends what there is.
            if client.batch_execute("ROLLBACK").await.is_ok() {
                self.open_transaction.store(false, Ordering::Release);
            }
            return Err(self.switch_error(e));
        }
        let mut outcome = pin!(maybe_done(body));
        // Typed by the (never taken) first branch.
        let mut pipelined = pin!(false.then(commit));
        let mut decided = false;
        // As `join(body, commit)`, the `COMMIT` started only once the body has written
        // everything.
        poll_fn(|cx| {
            let outcome_ready = outcome.as_mut().poll(cx).is_ready();
            if !decided {
                if written() {
                    decided = true;
                    pipelined.set(Some(commit()));
                } else if outcome_ready {
                    decided = true;
                }
            }
            let ended_ready = match pipelined.as_mut().as_pin_mut() {
                Some(ended) => ended.poll(cx).is_ready(),
                None => true,
            };
            if outcome_ready && ended_ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        let outcome = outcome
            .as_mut()
            .take_output()
            .expect("polled to completion above");
        let ended = match pipelined.as_mut().as_pin_mut() {
            Some(ended) => ended.take_output().expect("polled to completion above"),
            None => {
                // A row count the driver refused ran on the server: it commits, as it does
                // behind the prelude (whose `COMMIT` is already written) and in session mode.
                let end = if outcome
                    .as_ref()
                    .map_or_else(tokio_postgres::Error::is_row_count, |_| true)
                {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                client.batch_execute(end).await
            }
        };
        if ended.is_ok() {
            self.open_transaction.store(false, Ordering::Release);
        }
        if check {
            self.gate.mark_verified(epoch);
        }
        let value = outcome.map_err(|e| Error::db("running a statement", &self.schema, e))?;
        ended.map_err(|e| Error::db("committing", &self.schema, e))?;
        Ok(value)
    }
}
