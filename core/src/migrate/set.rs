//! A migration set: migrations in version order, and the table names a set allows in
//! `public` too.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// The first line that marks a migration file as a step run outside any transaction (see
/// [`Migration::no_transaction`]).
pub const NO_TRANSACTION_MARKER: &str = "-- tenant-schemas: no-transaction";

/// One migration: SQL run with its schema first on the search path, inside the transaction
/// that creates or migrates the schema, unless it is a [no-transaction
/// step](Self::no_transaction).
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
    /// Whether it runs outside any transaction (see [`no_transaction`](Self::no_transaction)).
    pub no_transaction: bool,
}

impl Migration {
    /// A migration; the checksum is computed from `sql`. SQL whose first line is
    /// [`NO_TRANSACTION_MARKER`] makes a [no-transaction step](Self::no_transaction).
    pub fn new(version: i32, name: impl Into<String>, sql: impl Into<String>) -> Self {
        let sql = sql.into();
        Self {
            version,
            name: name.into(),
            checksum: checksum(&sql),
            no_transaction: declares_no_transaction(&sql),
            sql,
        }
    }

    /// Makes it a step that cannot run in a transaction, typically `CREATE INDEX
    /// CONCURRENTLY` (one statement: PostgreSQL runs several statements sent at once in one
    /// implicit transaction). It runs on a connection of its own after the migrations
    /// before it have committed, with the schema first on the search path, under
    /// `SET lock_timeout` ([`TenantMigrations::lock_timeout`]); a lock timeout is retried
    /// ([`TenantMigrations::lock_retries`]) after dropping any invalid index the attempt
    /// left. Its version is recorded only once it succeeded and left no invalid index in
    /// the schema. A build that fails otherwise (e.g. a unique index over duplicate rows)
    /// leaves the schema at the version before, and its invalid index for
    /// [`Tenancy::doctor`](crate::Tenancy::doctor) to report and, with `fix`, repair.
    ///
    /// In a `.sql` file, a first line [`NO_TRANSACTION_MARKER`] says the same.
    ///
    /// ```
    /// use tenant_schemas::Migration;
    ///
    /// let m = Migration::new(3, "notes_body", "CREATE INDEX CONCURRENTLY notes_body ON notes (body)")
    ///     .no_transaction();
    /// assert!(m.no_transaction);
    /// let from_file = Migration::new(
    ///     3,
    ///     "notes_body",
    ///     "-- tenant-schemas: no-transaction\nCREATE INDEX CONCURRENTLY notes_body ON notes (body)",
    /// );
    /// assert!(from_file.no_transaction);
    /// ```
    #[must_use]
    pub fn no_transaction(mut self) -> Self {
        self.no_transaction = true;
        self
    }

    /// The file name it has, or would have: `V<version>__<name>.sql`.
    #[must_use]
    pub fn file_name(&self) -> String {
        format!("V{}__{}.sql", self.version, self.name)
    }
}

/// Whether the first line of `sql` is [`NO_TRANSACTION_MARKER`] (spacing and case aside).
fn declares_no_transaction(sql: &str) -> bool {
    let squeeze = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect()
    };
    sql.lines()
        .next()
        .is_some_and(|line| squeeze(line) == squeeze(NO_TRANSACTION_MARKER))
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
    /// How no-transaction steps wait for locks.
    locks: LockSettings,
}

/// How a no-transaction step waits for locks: `SET lock_timeout`, and how often a lock
/// timeout is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LockSettings {
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
}

impl Default for LockSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            retries: 3,
        }
    }
}

impl TenantMigrations {
    /// No migrations.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a migration with the next version.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, sql: impl Into<String>) -> Self {
        let version = self.latest().saturating_add(1);
        Arc::make_mut(&mut self.list).push(Migration::new(version, name, sql));
        self
    }

    /// Appends a [no-transaction step](Migration::no_transaction) with the next version,
    /// e.g. `CREATE INDEX CONCURRENTLY`.
    ///
    /// ```
    /// use tenant_schemas::TenantMigrations;
    ///
    /// let migrations = TenantMigrations::new()
    ///     .with("notes", "CREATE TABLE notes (body text)")
    ///     .with_no_transaction("notes_body", "CREATE INDEX CONCURRENTLY notes_body ON notes (body)");
    /// assert!(migrations.get(2).unwrap().no_transaction);
    /// ```
    #[must_use]
    pub fn with_no_transaction(mut self, name: impl Into<String>, sql: impl Into<String>) -> Self {
        let version = self.latest().saturating_add(1);
        Arc::make_mut(&mut self.list).push(Migration::new(version, name, sql).no_transaction());
        self
    }

    /// How long a [no-transaction step](Migration::no_transaction) waits for a lock before
    /// the attempt fails (`SET lock_timeout`; default 5 s, at least 1 ms), so that a build
    /// queued behind a long transaction does not hold up everything queued behind it.
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.locks.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How often a no-transaction step that hit its [lock timeout](Self::lock_timeout) is
    /// tried again (default 3), after 250 ms, then twice as long each time (at most 10 s).
    #[must_use]
    pub fn lock_retries(mut self, retries: u32) -> Self {
        self.locks.retries = retries;
        self
    }

    pub(crate) fn locks(&self) -> LockSettings {
        self.locks
    }

    /// Whether any migration is a [no-transaction step](Migration::no_transaction).
    #[must_use]
    pub fn has_no_transaction_steps(&self) -> bool {
        self.iter().any(|m| m.no_transaction)
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
    #[must_use]
    pub fn shared_name(mut self, table: impl Into<String>) -> Self {
        let table = table.into();
        if !self.is_shared_name(&table) {
            Arc::make_mut(&mut self.shared_names).push(table);
        }
        self
    }

    /// Whether `table` was declared with [`shared_name`](Self::shared_name).
    #[must_use]
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

    /// The set of `list` (in any order): refused when a version is used twice or a
    /// migration controls transactions.
    pub(super) fn from_list(mut list: Vec<Migration>) -> Result<Self> {
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
        let set = Self {
            list: Arc::new(list),
            shared_names: Arc::default(),
            locks: LockSettings::default(),
        };
        set.validate()?;
        Ok(set)
    }

    /// How many migrations there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The highest version: where a fully migrated schema is.
    #[must_use]
    pub fn latest(&self) -> i32 {
        self.list.last().map_or(0, |m| m.version)
    }

    /// The migrations in order.
    pub fn iter(&self) -> impl Iterator<Item = &Migration> {
        self.list.iter()
    }

    /// The migration with `version`.
    #[must_use]
    pub fn get(&self, version: i32) -> Option<&Migration> {
        self.list
            .binary_search_by_key(&version, |m| m.version)
            .ok()
            .map(|i| &self.list[i])
    }

    /// What one row of a schema's history, `version` applied with `checksum`, says against
    /// this set: the one check of history rows, made by a migration run
    /// (`check_applied`) and by the status and the dry run alike.
    pub(crate) fn check_row(&self, version: i32, checksum: i64) -> HistoryRow<'_> {
        match self.get(version) {
            Some(m) if m.checksum == checksum => HistoryRow::Applied,
            Some(m) => HistoryRow::Changed(m),
            None => HistoryRow::Unknown,
        }
    }
}

/// A history row checked against a migration set ([`TenantMigrations::check_row`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum HistoryRow<'a> {
    /// A migration of the set, applied as it is.
    Applied,
    /// A migration of the set whose SQL changed after it was applied.
    Changed(&'a Migration),
    /// A version the set does not have.
    Unknown,
}

/// The migration sets of one application: the tenant migrations, and the shared ones run in
/// `public`.
#[derive(Debug, Clone, Default)]
pub(crate) struct MigrationSets {
    /// Run in every tenant schema.
    pub(crate) tenant: TenantMigrations,
    /// Run in `public` of every database.
    pub(crate) shared: TenantMigrations,
    /// Shared names kept in the registry (`Tenancy::declare_shared_names`), read when the
    /// tenancy is built and followed by its changes; shared by every clone of the sets.
    pub(crate) declared: Arc<std::sync::RwLock<Vec<String>>>,
}

impl MigrationSets {
    /// Checks both sets (see [`TenantMigrations::validate`]), the shared one first.
    pub(crate) fn validate(&self) -> Result<()> {
        self.shared.validate()?;
        self.tenant.validate()
    }

    /// The table names declared with [`TenantMigrations::shared_name`] on either set, and
    /// those kept in the registry.
    pub(crate) fn shared_names(&self) -> Vec<String> {
        let declared = self
            .declared
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut names: Vec<String> = self
            .tenant
            .shared_names()
            .chain(self.shared.shared_names())
            .chain(declared.iter().map(String::as_str))
            .map(str::to_owned)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Replaces the names kept in the registry.
    pub(crate) fn set_declared(&self, names: Vec<String>) {
        *self
            .declared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = names;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_no_transaction_marker_is_the_first_line() {
        for sql in [
            "-- tenant-schemas: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (x)",
            "--tenant-schemas:no-transaction\r\nCREATE INDEX CONCURRENTLY i ON t (x)",
            "  -- Tenant-Schemas: No-Transaction  ",
        ] {
            assert!(Migration::new(1, "i", sql).no_transaction, "{sql:?}");
        }
        for sql in [
            "CREATE INDEX i ON t (x)",
            "CREATE TABLE t (x int);\n-- tenant-schemas: no-transaction",
            "-- tenant-schemas: no-transactions",
        ] {
            assert!(!Migration::new(1, "i", sql).no_transaction, "{sql:?}");
        }
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
