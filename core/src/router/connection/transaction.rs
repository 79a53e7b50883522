//! Transaction mode: every statement runs in a transaction of its own that begins with
//! `SET LOCAL search_path`, so nothing relies on session state (PgBouncer in transaction
//! pooling mode, RDS Proxy).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::future::{join, join3};
use tokio_postgres::types::Type;

use super::{is_replannable, not_in_transaction_mode, refuse_transaction_control};
use super::{ConnectionScope, Target};
use crate::error::{Error, Result};
use crate::router::statement::{unshared, Source};

impl ConnectionScope {
    /// Transaction mode: `BEGIN`, the local switch with the existence check, the statement
    /// (unnamed, with the parameter types learned for its text) and `COMMIT`, written in one
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
        let first = self.typed_once(sql, &op).await;
        match first {
            Err(Error::Database { source, .. }) if is_replannable(&source) => {
                tracing::debug!(schema = %self.schema, error = %source, "learned parameter types do not fit this schema; learning again");
                self.pool.forget_param_types(sql);
                self.typed_once(sql, &op).await
            }
            other => other,
        }
        .map_err(|e| e.while_doing(action))
    }

    async fn typed_once<'s, T, F, Fut>(&self, sql: &'s str, op: &F) -> Result<T>
    where
        F: Fn(Target<'s>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let client: &tokio_postgres::Client = self.conn();
        match self.pool.param_types(sql) {
            Some(types) => {
                self.local_transaction(op(Target::Typed(sql, types)), true)
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

    /// Runs `body` inside `BEGIN; SET LOCAL search_path …; <existence check>` and ends the
    /// transaction. `body`'s first request is written right behind the `BEGIN`; with
    /// `pipelined_commit`, so is the `COMMIT` — only for a body that writes all its requests
    /// on its first poll, since the `COMMIT` is written after them. An aborted transaction
    /// answers `COMMIT` with a rollback, so a failed switch or body commits nothing.
    pub(super) async fn local_transaction<T>(
        &self,
        body: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
        pipelined_commit: bool,
    ) -> Result<T> {
        let client: &tokio_postgres::Client = self.conn();
        self.open_transaction.store(true, Ordering::Release);
        self.pool.count_switch();
        let epoch = self.gate.epoch();
        let check = !self.gate.recently_verified(epoch);
        if check {
            self.pool.count_existence_check();
        }
        let begin = format!(
            "BEGIN{}; {}{}",
            if self.read_only { " READ ONLY" } else { "" },
            self.local_settings(),
            if check {
                format!("; {}", self.existence_check())
            } else {
                String::new()
            }
        );
        let (begun, outcome, ended) = if pipelined_commit {
            join3(
                client.batch_execute(&begin),
                body,
                client.batch_execute("COMMIT"),
            )
            .await
        } else {
            let (begun, outcome) = join(client.batch_execute(&begin), body).await;
            let end = if begun.is_ok() && outcome.is_ok() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            (begun, outcome, client.batch_execute(end).await)
        };
        if ended.is_ok() {
            self.open_transaction.store(false, Ordering::Release);
        }
        begun.map_err(|e| self.switch_error(e))?;
        if check {
            self.gate.mark_verified(epoch);
        }
        let value = outcome.map_err(|e| Error::db("running a statement", &self.schema, e))?;
        ended.map_err(|e| Error::db("committing", &self.schema, e))?;
        Ok(value)
    }
}
