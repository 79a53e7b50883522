//! Migrations: ordered SQL files (`V<n>__<name>.sql`, refinery's naming) for the tenant
//! schemas and for `public`.
//!
//! Each schema keeps its own history (`tenant_schemas_history`: version, name, checksum),
//! each schema is migrated in its own transaction, and the registry records every tenant's
//! version, so "is anything to do?" over all tenants is one query. A migration whose SQL
//! changed after it was applied is an error naming it.
//!
//! Why not refinery: its runner keeps one history table per connection target and commits
//! per migration or per run; here a tenant's migrations must run inside the transaction
//! that creates the tenant (atomic creation), every schema needs its own history, and the
//! registry's version column must move in the same transaction. The runner below is the
//! smallest that does that; the file naming stays refinery's.
//!
//! Because every migration runs inside its schema's transaction, a migration may not begin,
//! end or mark a transaction itself (`BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT` …): such a
//! set is refused with [`Error::MigrationRefused`] when it is built (`from_files`, `from_dir`)
//! or, for sets built with [`TenantMigrations::with`], before anything runs. A migration may
//! change session state (`SET`, `RESET`, `set_config`, a `DO` block …): that is common and
//! legitimate (`SET LOCAL lock_timeout`), so it is not refused but isolated instead. The
//! schema's search path is set again before every migration, so one migration's `SET
//! search_path` or `RESET ALL` cannot make the next one land in another schema, and a
//! connection that ran such a migration is closed afterwards instead of going back to the
//! pool, where a session-level change would outlive the transaction.
//!
//! A tenant table may not have the name of a table in `public` unless declared with
//! [`TenantMigrations::shared_name`]: where a search path names a schema that is missing,
//! PostgreSQL skips it and unqualified names silently resolve in `public`.
//!
//! ```
//! use tenant_schemas::TenantMigrations;
//!
//! let migrations = TenantMigrations::new()
//!     .with("create_notes", "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)")
//!     .with("add_created_at", "ALTER TABLE notes ADD COLUMN created_at timestamptz DEFAULT now()");
//! assert_eq!(migrations.len(), 2);
//! assert_eq!(migrations.latest(), 2);
//! ```

use std::path::Path;
use std::sync::Arc;

use futures_util::future::join_all;
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use crate::error::{Error, Result};
use crate::schema::{search_path, SchemaName};

/// The history table each migrated schema holds.
pub const HISTORY_TABLE: &str = "tenant_schemas_history";

/// One migration: SQL run with its schema first on the search path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Its version: the `n` of `V<n>__…`, or its position when added with
    /// [`TenantMigrations::with`].
    pub version: i32,
    /// Its name, e.g. `create_notes`.
    pub name: String,
    /// The SQL, one or more statements separated by `;`.
    pub sql: String,
    /// A checksum of the SQL (64-bit FNV-1a), to notice an applied migration that changed.
    pub checksum: i64,
}

impl Migration {
    /// A migration; the checksum is computed from `sql`.
    pub fn new(version: i32, name: impl Into<String>, sql: impl Into<String>) -> Self {
        let sql = sql.into();
        Migration {
            version,
            name: name.into(),
            checksum: checksum(&sql),
            sql,
        }
    }

    /// The file name it has, or would have: `V<version>__<name>.sql`.
    pub fn file_name(&self) -> String {
        format!("V{}__{}.sql", self.version, self.name)
    }
}

fn checksum(sql: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sql.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// An ordered list of migrations, for the tenant schemas (or, passed as shared migrations,
/// for `public`). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TenantMigrations {
    list: Arc<Vec<Migration>>,
    /// Table names allowed in a tenant schema and in `public` at once.
    shared_names: Arc<Vec<String>>,
}

impl TenantMigrations {
    /// No migrations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a migration with the next version.
    pub fn with(mut self, name: impl Into<String>, sql: impl Into<String>) -> Self {
        let version = self.latest().saturating_add(1);
        Arc::make_mut(&mut self.list).push(Migration::new(version, name, sql));
        self
    }

    /// Declares that a tenant table may have the same name as a table in `public` on purpose,
    /// e.g. a `users` table for the main site in `public` and one per tenant. Without it,
    /// creating a tenant or migrating fails with [`Error::TableInPublic`] when a tenant table
    /// and a `public` table share a name, and [`Registry::doctor`](crate::Registry::doctor)
    /// reports it: code that runs with a tenant's schema missing from its search path would
    /// silently use `public`'s table.
    ///
    /// ```
    /// use tenant_schemas::TenantMigrations;
    ///
    /// let migrations = TenantMigrations::new()
    ///     .with("users", "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL)")
    ///     .shared_name("users");
    /// assert!(migrations.is_shared_name("users"));
    /// ```
    pub fn shared_name(mut self, table: impl Into<String>) -> Self {
        let table = table.into();
        if !self.is_shared_name(&table) {
            Arc::make_mut(&mut self.shared_names).push(table);
        }
        self
    }

    /// Whether `table` was declared with [`shared_name`](Self::shared_name).
    pub fn is_shared_name(&self, table: &str) -> bool {
        self.shared_names.iter().any(|n| n == table)
    }

    /// The table names declared with [`shared_name`](Self::shared_name).
    pub fn shared_names(&self) -> impl Iterator<Item = &str> {
        self.shared_names.iter().map(String::as_str)
    }

    /// Checks that no migration begins, ends or marks a transaction (`BEGIN`, `COMMIT`,
    /// `ROLLBACK`, `END`, `SAVEPOINT`, `PREPARE TRANSACTION` …), which would end the
    /// transaction a schema is created or migrated in. `from_files` and `from_dir` check at
    /// once; a set built with [`with`](Self::with) is checked before anything runs.
    ///
    /// ```
    /// use tenant_schemas::{Error, TenantMigrations};
    ///
    /// let set = TenantMigrations::new().with("backfill", "UPDATE notes SET body = ''; COMMIT");
    /// assert!(matches!(set.validate(), Err(Error::MigrationRefused { .. })));
    /// ```
    pub fn validate(&self) -> Result<()> {
        match self
            .iter()
            .find(|m| crate::sql::effects(&m.sql).transaction_control)
        {
            Some(m) => Err(Error::MigrationRefused {
                migration: m.file_name(),
                reason: "it contains a transaction-control statement (BEGIN, COMMIT, ROLLBACK, \
                         END, SAVEPOINT, PREPARE TRANSACTION …); each schema is migrated in a \
                         transaction of its own, so remove it",
            }),
            None => Ok(()),
        }
    }

    /// Whether a migration above `version` may change session state (`SET`, `RESET`,
    /// `set_config`, `DO` …) beyond its transaction: the connection it ran on must not go
    /// back to the pool.
    pub(crate) fn may_change_session_after(&self, version: i32) -> bool {
        self.iter()
            .any(|m| m.version > version && crate::sql::effects(&m.sql).session)
    }

    /// Migrations from `(file name, SQL)` pairs, e.g. embedded with `include_str!`:
    /// `from_files([("V1__notes.sql", include_str!("../migrations/V1__notes.sql"))])`.
    pub fn from_files<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut list = Vec::new();
        for (file, sql) in files {
            let (version, name) = parse_file_name(file).ok_or_else(|| bad_name(Path::new(file)))?;
            list.push(Migration::new(version, name, sql));
        }
        Self::from_list(list)
    }

    /// Reads the `*.sql` files of `dir`, named `V<n>__<name>.sql`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let io_err = |source| Error::MigrationSource {
            path: dir.to_path_buf(),
            source,
        };
        let mut list = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            let Some(file) = path.file_name() else {
                continue;
            };
            // A name that is not UTF-8 cannot be read as `V<n>__<name>.sql`; skipping it would
            // silently drop a migration.
            let Some(file) = file.to_str() else {
                return Err(Error::MigrationSource {
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the file name is not valid UTF-8",
                    ),
                });
            };
            if !file.ends_with(".sql") {
                continue;
            }
            let (version, name) = parse_file_name(file).ok_or_else(|| bad_name(&path))?;
            let sql = std::fs::read_to_string(&path).map_err(|source| Error::MigrationSource {
                path: path.clone(),
                source,
            })?;
            list.push(Migration::new(version, name, sql));
        }
        Self::from_list(list)
    }

    fn from_list(mut list: Vec<Migration>) -> Result<Self> {
        list.sort_by_key(|m| m.version);
        if let Some(pair) = list.windows(2).find(|w| w[0].version == w[1].version) {
            return Err(Error::MigrationSource {
                path: pair[1].file_name().into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("version {} is used twice", pair[1].version),
                ),
            });
        }
        let set = TenantMigrations {
            list: Arc::new(list),
            shared_names: Arc::default(),
        };
        set.validate()?;
        Ok(set)
    }

    /// How many migrations there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The highest version: where a fully migrated schema is.
    pub fn latest(&self) -> i32 {
        self.list.last().map_or(0, |m| m.version)
    }

    /// The migrations in order.
    pub fn iter(&self) -> impl Iterator<Item = &Migration> {
        self.list.iter()
    }

    /// The migration with `version`.
    pub fn get(&self, version: i32) -> Option<&Migration> {
        self.list
            .binary_search_by_key(&version, |m| m.version)
            .ok()
            .map(|i| &self.list[i])
    }

    /// Brings `schema` to the latest version inside `tx`: creates its history table if
    /// needed, checks what was applied against the list (a changed or unknown applied
    /// migration is an error), then sends every pending migration and its history row in one
    /// pipelined batch, each migration preceded by `SET LOCAL search_path` so that a
    /// migration changing the search path cannot move the next one elsewhere. Returns
    /// (version before, version after).
    ///
    /// A migration may change session state that outlives `tx` (see
    /// [`may_change_session_after`](Self::may_change_session_after)): the caller then closes
    /// the connection instead of returning it to the pool.
    pub(crate) async fn apply(
        &self,
        tx: &Transaction<'_>,
        schema: &SchemaName,
    ) -> Result<(i32, i32)> {
        self.validate()?;
        let db = |e| Error::db("migrating", schema, e);
        let set_path = format!("SET LOCAL search_path TO {}", search_path(schema, &[]));
        tx.batch_execute(&format!(
            "{set_path}; \
             CREATE TABLE IF NOT EXISTS {s}.{HISTORY_TABLE} (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 checksum bigint NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
            s = schema.quoted(),
        ))
        .await
        .map_err(db)?;
        let applied = tx
            .query(
                &format!(
                    "SELECT version, checksum FROM {}.{HISTORY_TABLE} ORDER BY version",
                    schema.quoted()
                ),
                &[],
            )
            .await
            .map_err(db)?;
        let current = self.check_applied(schema, &applied)?;
        let pending: Vec<&Migration> = self.iter().filter(|m| m.version > current).collect();
        if pending.is_empty() {
            return Ok((current, current));
        }
        // All pending migrations go out at once, each after the schema's search path is set
        // again (a migration's `SET search_path`, `RESET ALL` or `set_config` must not move the
        // next one); the server runs them in order, and after a failure the rest fail too
        // ("transaction is aborted"): report the first failure.
        // The path is set once more after the last one, for what the transaction runs next.
        let set_path = set_path.as_str();
        let sends = pending
            .iter()
            .flat_map(|m| [None, Some(*m)])
            .chain([None])
            .map(|m| async move {
                let sql = m.map_or(set_path, |m| m.sql.as_str());
                (m, tx.batch_execute(sql).await)
            });
        let results = join_all(sends).await;
        for (m, result) in results {
            result.map_err(|source| match m {
                Some(m) => Error::Migration {
                    schema: schema.clone(),
                    migration: m.file_name(),
                    source,
                },
                None => db(source),
            })?;
        }
        let versions: Vec<i32> = pending.iter().map(|m| m.version).collect();
        let names: Vec<&str> = pending.iter().map(|m| m.name.as_str()).collect();
        let sums: Vec<i64> = pending.iter().map(|m| m.checksum).collect();
        // Multi-argument `unnest` is FROM-clause syntax that only works unqualified; it still
        // resolves in `pg_catalog`, which is searched before any schema on the path.
        tx.execute_typed(
            &format!(
                "INSERT INTO {}.{HISTORY_TABLE} (version, name, checksum)
                 SELECT * FROM unnest($1::int4[], $2::text[], $3::int8[])",
                schema.quoted()
            ),
            &[
                (&versions, Type::INT4_ARRAY),
                (&names, Type::TEXT_ARRAY),
                (&sums, Type::INT8_ARRAY),
            ],
        )
        .await
        .map_err(db)?;
        Ok((current, self.latest()))
    }
}

impl TenantMigrations {
    /// Checks a schema's history rows `(version, checksum)` against the list and returns the
    /// highest applied version.
    pub(crate) fn check_applied(
        &self,
        schema: &SchemaName,
        applied: &[tokio_postgres::Row],
    ) -> Result<i32> {
        let mut current = 0;
        for row in applied {
            let (version, sum): (i32, i64) = (row.get(0), row.get(1));
            match self.get(version) {
                Some(m) if m.checksum == sum => current = current.max(version),
                Some(m) => {
                    return Err(Error::MigrationChanged {
                        schema: schema.clone(),
                        file: m.file_name(),
                    })
                }
                None => {
                    return Err(Error::UnknownMigration {
                        schema: schema.clone(),
                        version,
                    })
                }
            }
        }
        Ok(current)
    }

    /// Reads `schema`'s history and checks it (see [`check_applied`](Self::check_applied)).
    pub(crate) async fn verify(
        &self,
        client: &tokio_postgres::Client,
        schema: &SchemaName,
    ) -> Result<i32> {
        let rows = client
            .query_typed(
                &format!(
                    "SELECT version, checksum FROM {}.{HISTORY_TABLE} ORDER BY version",
                    schema.quoted()
                ),
                &[],
            )
            .await
            .map_err(|e| Error::db("reading the migration history", schema, e))?;
        self.check_applied(schema, &rows)
    }
}

/// Relation kinds compared by name between tenant schemas and `public`: tables, partitioned
/// tables, views, materialized views and foreign tables.
const NAMED_RELKINDS: &str = "('r', 'p', 'v', 'm', 'f')";

/// Tenant relations whose name is also a relation in `public`, as (schema, name), ordered:
/// those of `schema`, or with `None` those of every schema holding a migration history
/// (`public` aside). Names in `allowed` are left out, and so is the history table (always
/// schema-qualified by this crate).
pub(crate) async fn shadowed_tables(
    client: &tokio_postgres::Client,
    schema: Option<&SchemaName>,
    allowed: &[&str],
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN {NAMED_RELKINDS}
           AND n.nspname <> 'public'
           AND c.relname::text <> $2
           AND NOT (c.relname::text = ANY ($3))
           AND CASE WHEN $1::text IS NULL
                    THEN EXISTS (SELECT 1 FROM pg_catalog.pg_class h
                                 WHERE h.relnamespace = n.oid AND h.relname::text = $2
                                   AND h.relkind = 'r')
                    ELSE n.nspname::text = $1 END
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_class p
                       JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
                       WHERE pn.nspname = 'public' AND p.relname = c.relname
                         AND p.relkind IN {NAMED_RELKINDS})
         ORDER BY 1, 2"
    );
    let schema = schema.map(SchemaName::as_str);
    let rows = client
        .query_typed(
            &sql,
            &[
                (&schema, Type::TEXT),
                (&HISTORY_TABLE, Type::TEXT),
                (&allowed, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn bad_name(path: &Path) -> Error {
    Error::MigrationSource {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "migration files are named V<number>__<name>.sql",
        ),
    }
}

fn parse_file_name(file: &str) -> Option<(i32, &str)> {
    let stem = file.rsplit('/').next()?.strip_suffix(".sql")?;
    let rest = stem.strip_prefix('V').or_else(|| stem.strip_prefix('v'))?;
    let (number, name) = rest.split_once("__")?;
    let version: i32 = number.parse().ok()?;
    (version > 0 && !name.is_empty()).then_some((version, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(
            parse_file_name("V1__create_notes.sql"),
            Some((1, "create_notes"))
        );
        assert_eq!(parse_file_name("dir/V20__x.sql"), Some((20, "x")));
        assert_eq!(parse_file_name("V1_create.sql"), None);
        assert_eq!(parse_file_name("1__create.sql"), None);
        assert_eq!(parse_file_name("Vx__create.sql"), None);
        assert_eq!(parse_file_name("V1__.sql"), None);
        assert_eq!(parse_file_name("V0__zero.sql"), None);
        assert_eq!(parse_file_name("V1__a.txt"), None);
    }

    #[test]
    fn from_dir_orders_by_number_and_rejects_bad_names() {
        let dir = std::env::temp_dir().join(format!("ts-migrations-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("V10__ten.sql"), "SELECT 10").unwrap();
        std::fs::write(dir.join("V2__two.sql"), "SELECT 2").unwrap();
        std::fs::write(dir.join("README.md"), "not a migration").unwrap();
        let m = TenantMigrations::from_dir(&dir).unwrap();
        let names: Vec<_> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["two", "ten"]);
        assert_eq!(m.latest(), 10);
        assert_eq!(m.get(10).unwrap().file_name(), "V10__ten.sql");
        std::fs::write(dir.join("bad.sql"), "SELECT 1").unwrap();
        assert!(matches!(
            TenantMigrations::from_dir(&dir),
            Err(Error::MigrationSource { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        let dup = TenantMigrations::from_files([("V1__a.sql", "x"), ("V1__b.sql", "y")]);
        assert!(dup.is_err());
    }

    #[test]
    fn checksums_follow_the_sql() {
        let a = Migration::new(1, "a", "CREATE TABLE a (x int)");
        let b = Migration::new(1, "a", "CREATE TABLE a (x bigint)");
        assert_ne!(a.checksum, b.checksum);
        assert_eq!(
            a.checksum,
            Migration::new(1, "a", "CREATE TABLE a (x int)").checksum
        );
    }
}
