//! What the CLI's end-to-end tests share: the binary run against a database of its own
//! with a directory of migrations.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tenant_schemas::testing::{TestCluster, TestDatabase};

/// The binary, run with one database and one directory of migrations.
pub struct Cli {
    pub url: String,
    pub dir: PathBuf,
}

impl Cli {
    /// A fresh database and a migrations directory `<tmp>/ts-cli-<pid>-<name>` with
    /// `tenant/V1__notes.sql` and `shared/V1__plans.sql`.
    pub async fn new(name: &str) -> (Self, TestDatabase) {
        Self::with(
            name,
            &[
                (
                    "tenant",
                    "V1__notes.sql",
                    "CREATE TABLE notes (id bigserial PRIMARY KEY, body text)",
                ),
                ("shared", "V1__plans.sql", "CREATE TABLE plans (name text)"),
            ],
        )
        .await
    }

    /// A fresh database and a migrations directory `<tmp>/ts-cli-<pid>-<name>` with
    /// `tenant/` and `shared/` holding `files` (directory, file name, SQL).
    pub async fn with(name: &str, files: &[(&str, &str, &str)]) -> (Self, TestDatabase) {
        let db = TestCluster::shared()
            .unwrap()
            .create_database()
            .await
            .unwrap();
        let dir = std::env::temp_dir().join(format!("ts-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["tenant", "shared"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for (sub, file, sql) in files {
            write(&dir.join(sub), file, sql);
        }
        (Self { url: url(&db), dir }, db)
    }

    /// Runs with `--migrations` and `--shared-migrations` pointing at this test's
    /// directories.
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = args.to_vec();
        let (tenant, shared) = (self.dir.join("tenant"), self.dir.join("shared"));
        all.extend([
            "--migrations",
            tenant.to_str().unwrap(),
            "--shared-migrations",
            shared.to_str().unwrap(),
        ]);
        self.raw(&all, &self.dir)
    }

    /// Runs exactly `args`, in `cwd`, with `DATABASE_URL` set.
    pub fn raw(&self, args: &[&str], cwd: &Path) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_tenant-schemas"))
            .args(args)
            .current_dir(cwd)
            .env("DATABASE_URL", &self.url)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        out
    }

    /// Runs `args`, expects exit `code`; returns stdout and stderr.
    pub fn fails(&self, code: i32, args: &[&str]) -> (String, String) {
        let (got, out, err) = self.run(args);
        assert_eq!(got, code, "{args:?}: {out}{err}");
        (out, err)
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn url(db: &TestDatabase) -> String {
    TestCluster::shared()
        .unwrap()
        .url(db.name())
        .unwrap_or_else(|| {
            // An external server: its URL, with this database.
            let base = std::env::var(tenant_schemas::testing::DATABASE_URL_ENV).unwrap();
            let (server, _) = base.rsplit_once('/').unwrap();
            format!("{server}/{}", db.name())
        })
}

pub fn write(dir: &Path, file: &str, sql: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(file), sql).unwrap();
}

pub async fn sql(db: &TestDatabase, sql: &str) {
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap();
}
