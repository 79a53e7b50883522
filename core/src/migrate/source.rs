//! Where migration sets come from: SQL files named like refinery's, `V<n>__<name>.sql`, in
//! a directory or embedded in the binary.

use std::path::Path;

use super::set::{Migration, TenantMigrations};
use crate::error::{Error, Result};

impl TenantMigrations {
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
}
