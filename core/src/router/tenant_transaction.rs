//! A transaction bound to one schema, as [`ConnectionScope::transaction`] hands it out.
//!
//! [`ConnectionScope::transaction`]: super::ConnectionScope::transaction

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, SimpleQueryMessage, Statement};

use super::statement::{unshared, PreparedEffects, Source, ToScopedStatement};
use crate::error::{Error, Result};
use crate::schema::SchemaName;
use crate::sql::{self, Effects};

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A transaction on a tenant's schema: every statement run through it sees the tenant's
/// search path, or does not run.
///
/// The SQL it is given is read like a [`ConnectionScope`](super::ConnectionScope)'s: after
/// a statement that may change the session (`SET search_path`, `set_config`, `RESET` …) the
/// tenant's path is set again (`SET LOCAL`) before the next statement, and SQL that would
/// end or split the transaction (`COMMIT`, `ROLLBACK`, `SAVEPOINT` …) is refused — use
/// [`commit`](Self::commit) or [`rollback`](Self::rollback). A [`Statement`] runs only if
/// it was prepared through this transaction. It rolls back when dropped without
/// [`commit`](Self::commit).
pub struct TenantTransaction<'a> {
    tx: Transaction<'a>,
    schema: SchemaName,
    /// `SET LOCAL search_path TO <path>`, and the tenant's `statement_timeout` when it has one.
    settings: Arc<str>,
    /// The path must be set again before the next statement.
    reassert: AtomicBool,
    /// SQL that may drop or rename a schema ran: once it commits, every connection of the
    /// process verifies its schema again.
    changes_schemas: AtomicBool,
    /// SQL that may drop or rename a schema ran since the schema was last seen in this
    /// transaction: the next statement first checks that it still exists (dropped inside the
    /// transaction, its unqualified names would resolve in `public`).
    verify: AtomicBool,
    /// What each statement prepared through this transaction may do.
    prepared: PreparedEffects,
    /// The tenant is read-only: SQL that could make the transaction writable is refused.
    read_only: bool,
    /// Role mode: SQL that could leave the tenant's role is refused.
    role: bool,
    /// Session mode: the scope's mark that the session may hold what outlives the
    /// transaction (temporary objects, a held cursor), so its connection is closed rather
    /// than pooled, and its mark that the session may hold settings the SQL made (`SET`
    /// without `LOCAL`), which the next checkout's switch resets. `None` in transaction mode,
    /// where such SQL is refused: a pooler's server connection would carry it to the next
    /// client.
    untrusted: Option<(&'a AtomicBool, &'a AtomicBool)>,
}

impl<'a> TenantTransaction<'a> {
    pub(super) fn new(
        tx: Transaction<'a>,
        schema: SchemaName,
        settings: Arc<str>,
        (read_only, role): (bool, bool),
        untrusted: Option<(&'a AtomicBool, &'a AtomicBool)>,
    ) -> Self {
        Self {
            tx,
            schema,
            settings,
            reassert: AtomicBool::new(false),
            changes_schemas: AtomicBool::new(false),
            verify: AtomicBool::new(false),
            prepared: PreparedEffects::default(),
            read_only,
            role,
            untrusted,
        }
    }

    /// For a read-only tenant, SQL that could make the transaction writable is refused
    /// before it is sent (the transaction is read-only and has run a query, so the server
    /// would refuse most of it too; `DO` and `CALL` are refused as well).
    fn refuse_read_write(&self, effects: Effects) -> Result<()> {
        if self.role && effects.leaves_role {
            return Err(Error::leaves_role_refused(&self.schema));
        }
        if self.read_only && effects.escapes_read_only {
            return Err(Error::read_only_refused(
                &self.schema,
                "SQL that controls transactions or how they write (SET TRANSACTION, \
                 DO, CALL, transaction_read_only …) or a large-object writer (lo_from_bytea, \
                 lo_unlink …)",
            ));
        }
        Ok(())
    }

    /// The schema the transaction is bound to.
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// Checks `effects` and sets the path again if an earlier statement may have moved it.
    async fn before(&self, effects: Effects) -> Result<()> {
        self.refuse_read_write(effects)?;
        if effects.transaction_control {
            return Err(transaction_control_refused());
        }
        if effects.session_objects {
            match self.untrusted {
                Some((untrusted, _)) => untrusted.store(true, Ordering::Release),
                None => return Err(Error::session_objects_refused()),
            }
        }
        match self.untrusted {
            // Marked before it runs: committed or not, the next checkout resets.
            Some((_, left_settings)) if effects.leaves_settings() => {
                left_settings.store(true, Ordering::Release);
            }
            // Transaction mode: the setting would outlive the transaction on the server
            // connection.
            None if effects.session_settings => return Err(Error::session_settings_refused()),
            _ => {}
        }
        let verify = self.verify.load(Ordering::Acquire);
        if self.reassert.load(Ordering::Acquire) || verify {
            let mut sql = self.settings.to_string();
            if verify {
                sql.push_str("; ");
                sql.push_str(&crate::schema::existence_check(&self.schema));
            }
            self.tx.batch_execute(&sql).await.map_err(|e| {
                if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME) {
                    Error::SchemaMissing {
                        schema: self.schema.clone(),
                    }
                } else {
                    Error::db("switching search_path", &self.schema, e)
                }
            })?;
            self.reassert.store(false, Ordering::Release);
            self.verify.store(false, Ordering::Release);
        }
        if effects.session {
            // Set before the statement runs: if it is cancelled, the next one still resets.
            self.reassert.store(true, Ordering::Release);
        }
        if effects.changes_schemas {
            self.changes_schemas.store(true, Ordering::Release);
            self.verify.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The statement for `source`, with what it may do; a statement not prepared through
    /// this transaction is refused (nothing is known of its SQL).
    async fn statement(&self, source: Source<'_>) -> Result<Statement> {
        match source {
            Source::Text(sql) => {
                self.before(sql::effects(sql)).await?;
                self.tx
                    .prepare(&unshared(sql))
                    .await
                    .map_err(|e| Error::db("preparing a statement", &self.schema, e))
            }
            Source::Prepared(stmt) => {
                let effects = self.prepared.get(stmt).ok_or(Error::Refused {
                    what: "a statement not prepared through this tenant transaction",
                    instead: "prepare it with TenantTransaction::prepare",
                })?;
                self.before(effects).await?;
                Ok(stmt.clone())
            }
        }
    }

    /// Prepares `sql` on the transaction.
    pub async fn prepare(&self, sql: &str) -> Result<Statement> {
        let effects = sql::effects(sql);
        self.refuse_read_write(effects)?;
        if effects.transaction_control {
            return Err(transaction_control_refused());
        }
        // Parsed on the tenant's path; its own effects apply when it runs.
        self.before(Effects::default()).await?;
        let stmt = self
            .tx
            .prepare(&unshared(sql))
            .await
            .map_err(|e| Error::db("preparing a statement", &self.schema, e))?;
        self.prepared.remember(&stmt, effects);
        Ok(stmt)
    }

    /// Runs a statement and returns its rows.
    pub async fn query<S>(&self, statement: &S, params: Params<'_>) -> Result<Vec<Row>>
    where
        S: ToScopedStatement + ?Sized,
    {
        super::observed(&self.schema, async {
            let stmt = self.statement(statement.as_source()).await?;
            self.tx
                .query(&stmt, params)
                .await
                .map_err(|e| Error::db("running a query", &self.schema, e))
        })
        .await
    }

    /// Runs a statement that returns exactly one row.
    pub async fn query_one<S>(&self, statement: &S, params: Params<'_>) -> Result<Row>
    where
        S: ToScopedStatement + ?Sized,
    {
        super::observed(&self.schema, async {
            let stmt = self.statement(statement.as_source()).await?;
            self.tx
                .query_one(&stmt, params)
                .await
                .map_err(|e| Error::db("running a query", &self.schema, e))
        })
        .await
    }

    /// Runs a statement that returns at most one row.
    pub async fn query_opt<S>(&self, statement: &S, params: Params<'_>) -> Result<Option<Row>>
    where
        S: ToScopedStatement + ?Sized,
    {
        super::observed(&self.schema, async {
            let stmt = self.statement(statement.as_source()).await?;
            self.tx
                .query_opt(&stmt, params)
                .await
                .map_err(|e| Error::db("running a query", &self.schema, e))
        })
        .await
    }

    /// Runs a statement and returns the number of rows it affected.
    pub async fn execute<S>(&self, statement: &S, params: Params<'_>) -> Result<u64>
    where
        S: ToScopedStatement + ?Sized,
    {
        super::observed(&self.schema, async {
            let stmt = self.statement(statement.as_source()).await?;
            self.tx
                .execute(&stmt, params)
                .await
                .map_err(|e| Error::db("running a statement", &self.schema, e))
        })
        .await
    }

    /// Runs one or more statements separated by `;`, without parameters.
    pub async fn batch_execute(&self, sql: &str) -> Result<()> {
        super::observed(&self.schema, async {
            self.before(sql::effects(sql)).await?;
            self.tx
                .batch_execute(sql)
                .await
                .map_err(|e| Error::db("running a batch", &self.schema, e))
        })
        .await
    }

    /// Runs statements through the simple query protocol and returns their messages.
    pub async fn simple_query(&self, sql: &str) -> Result<Vec<SimpleQueryMessage>> {
        super::observed(&self.schema, async {
            self.before(sql::effects(sql)).await?;
            self.tx
                .simple_query(sql)
                .await
                .map_err(|e| Error::db("running a simple query", &self.schema, e))
        })
        .await
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<()> {
        let schema = self.schema.clone();
        let changes_schemas = self.changes_schemas.load(Ordering::Acquire);
        let committed = self
            .tx
            .commit()
            .await
            .map_err(|e| Error::db("committing", &schema, e));
        if changes_schemas {
            // Committed or not (an answer lost with the connection): verified again.
            super::session::everything_changed();
        }
        committed
    }

    /// Rolls the transaction back (dropping it does the same).
    pub async fn rollback(self) -> Result<()> {
        let schema = self.schema.clone();
        self.tx
            .rollback()
            .await
            .map_err(|e| Error::db("rolling back", &schema, e))
    }
}

/// SQL that would end or split the transaction the tenant's path is set in.
fn transaction_control_refused() -> Error {
    Error::Refused {
        what:
            "SQL with transaction control (COMMIT, ROLLBACK, SAVEPOINT …) on a tenant transaction",
        instead: "end it with TenantTransaction::commit or rollback",
    }
}

impl fmt::Debug for TenantTransaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTransaction")
            .field("schema", &self.schema)
            .field("settings", &&*self.settings)
            .finish_non_exhaustive()
    }
}
