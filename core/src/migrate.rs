//! The application's tenant migrations: ordered SQL run in each new tenant's schema.
//!
//! At this stage a tenant gets every migration when it is created, inside the creating
//! transaction; [`TenantMigrations`] is the seam a fuller migration engine (per-schema
//! history, migrating existing tenants) plugs into.
//!
//! ```
//! use tenant_schemas::TenantMigrations;
//!
//! let migrations = TenantMigrations::new()
//!     .with("create_notes", "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)")
//!     .with("add_created_at", "ALTER TABLE notes ADD COLUMN created_at timestamptz DEFAULT now()");
//! assert_eq!(migrations.len(), 2);
//! assert_eq!(migrations.iter().next().unwrap().version, 1);
//! ```

use std::path::Path;
use std::sync::Arc;

use tokio_postgres::types::Type;

use crate::error::{Error, Result};
use crate::schema::{search_path, SchemaName};

/// One migration: SQL run with the tenant's schema first on the search path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Its position, from 1.
    pub version: u32,
    /// A name for messages, e.g. `create_notes`.
    pub name: String,
    /// The SQL, one or more statements separated by `;`.
    pub sql: String,
}

/// An ordered list of tenant migrations. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TenantMigrations {
    list: Arc<Vec<Migration>>,
}

impl TenantMigrations {
    /// No migrations: new tenants get an empty schema.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a migration; its version is its position.
    pub fn with(mut self, name: impl Into<String>, sql: impl Into<String>) -> Self {
        let list = Arc::make_mut(&mut self.list);
        let version = u32::try_from(list.len() + 1).unwrap_or(u32::MAX);
        list.push(Migration {
            version,
            name: name.into(),
            sql: sql.into(),
        });
        self
    }

    /// Reads the `*.sql` files of `dir`, named `V<n>__<name>.sql` and applied in order of `n`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let io_err = |source| Error::MigrationSource {
            path: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            let Some(stem) = file.strip_suffix(".sql") else {
                continue;
            };
            let (version, name) = parse_file_stem(stem).ok_or_else(|| Error::MigrationSource {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "migration files are named V<number>__<name>.sql",
                ),
            })?;
            files.push((version, name.to_owned(), path));
        }
        files.sort_by_key(|(version, _, _)| *version);
        let mut migrations = TenantMigrations::new();
        for (_, name, path) in files {
            let sql = std::fs::read_to_string(&path).map_err(|source| Error::MigrationSource {
                path: path.clone(),
                source,
            })?;
            migrations = migrations.with(name, sql);
        }
        Ok(migrations)
    }

    /// How many migrations there are: the version a fully migrated schema is at.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The migrations in order.
    pub fn iter(&self) -> impl Iterator<Item = &Migration> {
        self.list.iter()
    }

    /// Runs every migration in `schema` inside `tx`, with the search path set for the
    /// transaction only. Returns the version reached.
    pub(crate) async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        schema: &SchemaName,
    ) -> Result<i32> {
        let path = search_path(schema, &[]);
        tx.execute_typed(
            "SELECT set_config('search_path', $1, true)",
            &[(&&*path, Type::TEXT)],
        )
        .await
        .map_err(|e| Error::db("switching search_path", schema, e))?;
        for migration in self.iter() {
            tracing::debug!(schema = %schema, migration = %migration.name, "applying migration");
            tx.batch_execute(&migration.sql)
                .await
                .map_err(|source| Error::Migration {
                    schema: schema.clone(),
                    migration: migration.name.clone(),
                    source,
                })?;
        }
        Ok(i32::try_from(self.len()).unwrap_or(i32::MAX))
    }
}

fn parse_file_stem(stem: &str) -> Option<(u64, &str)> {
    let rest = stem.strip_prefix('V').or_else(|| stem.strip_prefix('v'))?;
    let (number, name) = rest.split_once("__")?;
    let version = number.parse().ok()?;
    (!name.is_empty()).then_some((version, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(
            parse_file_stem("V1__create_notes"),
            Some((1, "create_notes"))
        );
        assert_eq!(parse_file_stem("V20__x"), Some((20, "x")));
        assert_eq!(parse_file_stem("V1_create"), None);
        assert_eq!(parse_file_stem("1__create"), None);
        assert_eq!(parse_file_stem("Vx__create"), None);
        assert_eq!(parse_file_stem("V1__"), None);
    }

    #[test]
    fn from_dir_orders_by_number() {
        let dir = std::env::temp_dir().join(format!("ts-migrations-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("V10__ten.sql"), "SELECT 10").unwrap();
        std::fs::write(dir.join("V2__two.sql"), "SELECT 2").unwrap();
        std::fs::write(dir.join("README.md"), "not a migration").unwrap();
        let m = TenantMigrations::from_dir(&dir).unwrap();
        let names: Vec<_> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["two", "ten"]);
        std::fs::write(dir.join("bad.sql"), "SELECT 1").unwrap();
        assert!(matches!(
            TenantMigrations::from_dir(&dir),
            Err(Error::MigrationSource { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
