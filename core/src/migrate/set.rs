//! A migration set: migrations in version order, and the table names a set allows in
//! `public` too.

use std::sync::Arc;

use crate::error::{Error, Result};

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
        Self {
            version,
            name: name.into(),
            checksum: checksum(&sql),
            sql,
        }
    }

    /// The file name it has, or would have: `V<version>__<name>.sql`.
    #[must_use]
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
}

/// The migration sets of one application: the tenant migrations, and the shared ones run in
/// `public`.
#[derive(Debug, Clone, Default)]
pub(crate) struct MigrationSets {
    /// Run in every tenant schema.
    pub(crate) tenant: TenantMigrations,
    /// Run in `public` of every database.
    pub(crate) shared: TenantMigrations,
}

impl MigrationSets {
    /// Checks both sets (see [`TenantMigrations::validate`]), the shared one first.
    pub(crate) fn validate(&self) -> Result<()> {
        self.shared.validate()?;
        self.tenant.validate()
    }

    /// The table names declared with [`TenantMigrations::shared_name`] on either set.
    pub(crate) fn shared_names(&self) -> Vec<&str> {
        self.tenant
            .shared_names()
            .chain(self.shared.shared_names())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
