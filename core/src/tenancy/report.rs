//! Cross-tenant read-only reports: one query over every tenant's schema.
//!
//! [`Tenancy::report`] takes the query of *one* tenant, with the placeholder `{schema}`
//! where the tenant's schema goes (`SELECT count(*) AS notes FROM {schema}.notes`), and
//! runs it for all tenants at once as a `UNION ALL` of one branch per tenant. The schema
//! names come from the registry, never from the caller, and go in quoted
//! ([`SchemaName::quoted`]); each row starts with the column `tenant_schema` (text), the
//! tenant it belongs to, followed by the query's own columns.
//!
//! The query runs in a `READ ONLY` transaction (`REPEATABLE READ`: one snapshot for the
//! whole report) with a statement timeout, as a single statement of the extended protocol
//! (no second statement can be smuggled in after a `;`): a query that tries to write —
//! `INSERT`, `UPDATE`, `DELETE`, DDL, a writing function — fails with
//! [`Error::ReportWrites`] and changes nothing. That includes what PostgreSQL lets a
//! `READ ONLY` transaction do: the large-object writers (`lo_from_bytea`, `lo_create`,
//! `lo_import`, `lo_put`, `lowrite`, `lo_unlink` …) write to `pg_largeobject` all the same,
//! so a report checks before it ends that its transaction wrote nothing (it was given no
//! transaction id) and fails otherwise.
//!
//! Nor does a report leave anything behind on the connection: a session-level
//! `pg_advisory_lock(…)` (or any other state outliving the transaction) would stay held on a
//! pooled connection, so the report's connection is taken out of the pool and closed when
//! the report ends, however it ends (an error or a dropped future included).
//!
//! On a Citus coordinator the same statement becomes a distributed query: each branch is
//! planned for the worker holding its tenant and the rows are gathered on the coordinator.
//! With the library's own shard map (independent databases), one statement runs per
//! database and the rows are put together.
//!
//! ```no_run
//! use tenant_schemas::{ReportOptions, Tenancy};
//!
//! # async fn demo(tenancy: Tenancy) -> tenant_schemas::Result<()> {
//! let rows = tenancy
//!     .report(
//!         "SELECT count(*) AS notes FROM {schema}.notes WHERE body <> $1",
//!         &[&""],
//!         &ReportOptions::default(),
//!     )
//!     .await?;
//! for row in rows {
//!     let tenant: String = row.get("tenant_schema");
//!     let notes: i64 = row.get("notes");
//!     println!("{tenant}: {notes}");
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::error::{Error, Result};
use crate::schema::SchemaName;
use crate::shard::ShardName;
use crate::tenancy::Tenancy;

/// The placeholder of a report's query that the library replaces by each tenant's quoted
/// schema.
pub const SCHEMA_PLACEHOLDER: &str = "{schema}";

/// How many tenants go into one `UNION ALL` statement; more tenants make more statements
/// in the same read-only transaction (and snapshot).
const TENANTS_PER_STATEMENT: usize = 500;

/// Settings of [`Tenancy::report`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReportOptions {
    /// The longest a statement of the report may run (`statement_timeout`); 30 s by default.
    pub statement_timeout: Duration,
    /// Only these tenants; all tenants (except `public`) when empty.
    pub schemas: Vec<SchemaName>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(30),
            schemas: Vec::new(),
        }
    }
}

impl ReportOptions {
    /// The default options with another statement timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tenant_schemas::ReportOptions;
    ///
    /// let options = ReportOptions::default().statement_timeout(Duration::from_secs(5));
    /// assert_eq!(options.statement_timeout, Duration::from_secs(5));
    /// ```
    #[must_use]
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// The default options restricted to `schemas`.
    ///
    /// ```
    /// use tenant_schemas::{ReportOptions, SchemaName};
    ///
    /// let options = ReportOptions::default().schemas([SchemaName::new("acme").unwrap()]);
    /// assert_eq!(options.schemas.len(), 1);
    /// ```
    #[must_use]
    pub fn schemas(mut self, schemas: impl IntoIterator<Item = SchemaName>) -> Self {
        self.schemas = schemas.into_iter().collect();
        self
    }
}

/// The `UNION ALL` statement over `schemas` for the per-tenant query `sql`.
///
/// ```
/// use tenant_schemas::report::union_all;
/// use tenant_schemas::SchemaName;
///
/// let schemas = [SchemaName::new("acme").unwrap(), SchemaName::new("user").unwrap()];
/// let sql = union_all("SELECT count(*) AS n FROM {schema}.notes", &schemas).unwrap();
/// assert_eq!(
///     sql,
///     "SELECT 'acme'::text AS tenant_schema, r.* FROM (SELECT count(*) AS n FROM \"acme\".notes) AS r\n\
///      UNION ALL SELECT 'user'::text AS tenant_schema, r.* FROM (SELECT count(*) AS n FROM \"user\".notes) AS r"
/// );
/// assert!(union_all("SELECT count(*) FROM notes", &schemas).is_err()); // no {schema}
/// ```
pub fn union_all(sql: &str, schemas: &[SchemaName]) -> Result<String> {
    let sql = sql.trim().trim_end_matches(';').trim_end();
    if !sql.contains(SCHEMA_PLACEHOLDER) {
        return Err(Error::ReportQuery {
            reason: format!(
                "the query names no tenant: write `{SCHEMA_PLACEHOLDER}.table` where the \
                 tenant's schema goes"
            ),
        });
    }
    if sql.contains(';') {
        return Err(Error::ReportQuery {
            reason: "the query must be a single statement (it contains `;`)".into(),
        });
    }
    let branches: Vec<String> = schemas
        .iter()
        .map(|s| {
            // Schema names are validated (lower-case letters, digits, `_`): nothing in them
            // needs escaping in a literal or an identifier.
            format!(
                "SELECT '{}'::text AS tenant_schema, r.* FROM ({}) AS r",
                s.as_str(),
                sql.replace(SCHEMA_PLACEHOLDER, &s.quoted())
            )
        })
        .collect();
    Ok(branches.join("\nUNION ALL "))
}

impl Tenancy {
    /// Runs the read-only query `sql`, written for one tenant with `{schema}` where its
    /// schema goes, over every registered tenant whatever its state (or only
    /// `options.schemas`) as one `UNION ALL`, in a
    /// `READ ONLY` transaction with `options.statement_timeout`; returns the rows, each
    /// starting with the column `tenant_schema` (text), ordered by tenant (each tenant's
    /// rows in the order its query gave them). `params` are the query's `$1`, `$2`…, the same
    /// for every tenant. `public` is not part of a report.
    ///
    /// Refuses a query without `{schema}` or with a `;` ([`Error::ReportQuery`]); a query
    /// that writes fails with [`Error::ReportWrites`] and changes nothing. Works the same
    /// through a Citus coordinator, where it becomes a distributed query. See the
    /// [module](crate::report) for an example.
    pub async fn report(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        options: &ReportOptions,
    ) -> Result<Vec<Row>> {
        let mut by_database: BTreeMap<ShardName, Vec<SchemaName>> = BTreeMap::new();
        for record in self.registry().list().await? {
            if record.schema.is_public()
                || !(options.schemas.is_empty() || options.schemas.contains(&record.schema))
            {
                continue;
            }
            by_database
                .entry(record.shard)
                .or_default()
                .push(record.schema);
        }
        // Refuse a malformed query even when there is no tenant yet.
        union_all(sql, &[])?;
        let mut rows = Vec::new();
        for (shard, schemas) in by_database {
            let pool = self.registry().shard_pool(&shard)?;
            rows.extend(run(pool, sql, params, &schemas, options).await?);
        }
        // Stable: each tenant's rows keep their order.
        rows.sort_by(|a, b| a.get::<_, &str>(0).cmp(b.get::<_, &str>(0)));
        Ok(rows)
    }
}

/// The report over `schemas`, all in the database of `pool`.
async fn run(
    pool: &deadpool_postgres::Pool,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    schemas: &[SchemaName],
    options: &ReportOptions,
) -> Result<Vec<Row>> {
    let public = SchemaName::public();
    let err = |e: tokio_postgres::Error| report_error(&public, e);
    // Out of the pool for good: closed when dropped, so whatever session state the query
    // left (a session-level advisory lock, …) ends with it, even on an error or a cancel.
    let mut conn = deadpool_postgres::Object::take(crate::databases::connect(pool, &public).await?);
    let tx = conn
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(err)?;
    let timeout_ms = options.statement_timeout.as_millis().max(1);
    // Temporary tables left on the connection would stand in for `public`'s in the report.
    tx.batch_execute(&format!(
        "{}; SET LOCAL statement_timeout = {timeout_ms}; SET LOCAL search_path TO public",
        crate::leftovers::DROP_LEFT_TEMPORARY
    ))
    .await
    .map_err(err)?;
    let mut rows = Vec::new();
    for chunk in schemas.chunks(TENANTS_PER_STATEMENT) {
        let statement = union_all(sql, chunk)?;
        rows.extend(tx.query(&statement, params).await.map_err(err)?);
    }
    // A read-only transaction still lets the large-object functions write; any write
    // gives the transaction an id. Refused as the server refuses other writes (25006).
    tx.batch_execute(WROTE_NOTHING).await.map_err(err)?;
    // Nothing to keep: a read-only transaction ends the same either way.
    tx.rollback().await.map_err(err)?;
    Ok(rows)
}

/// Fails with `read_only_sql_transaction` when the transaction wrote anything.
const WROTE_NOTHING: &str = "DO $tenant_schemas$ BEGIN \
    IF pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL THEN \
    RAISE EXCEPTION USING ERRCODE = 'read_only_sql_transaction', \
    MESSAGE = 'the report''s query wrote to the database (a large-object function such as \
    lo_from_bytea, lo_create, lo_import, lo_put, lowrite or lo_unlink, or a function calling \
    one): a report may only read'; \
    END IF; END $tenant_schemas$";

fn report_error(public: &SchemaName, source: tokio_postgres::Error) -> Error {
    if source.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
        return Error::ReportWrites { source };
    }
    Error::Database {
        action: "running a cross-tenant report",
        schema: public.clone(),
        source,
    }
}
