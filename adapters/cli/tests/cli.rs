//! The `tenant-schemas` binary end to end, against a throwaway PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use tenant_schemas::testing::TestCluster;

struct Cli {
    url: String,
    dir: std::path::PathBuf,
}

impl Cli {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_tenant-schemas"))
            .args(args)
            .env("DATABASE_URL", &self.url)
            .arg("--migrations")
            .arg(self.dir.join("tenant"))
            .arg("--shared-migrations")
            .arg(self.dir.join("shared"))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        out
    }
}

fn write(dir: &Path, file: &str, sql: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(file), sql).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_end_to_end() {
    let cluster = TestCluster::shared().unwrap();
    let db = cluster.create_database().await.unwrap();
    let dir = std::env::temp_dir().join(format!("ts-cli-{}", std::process::id()));
    write(
        &dir.join("tenant"),
        "V1__notes.sql",
        "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)",
    );
    write(
        &dir.join("shared"),
        "V1__plans.sql",
        "CREATE TABLE plans (name text)",
    );
    let url = cluster
        .url(db.name())
        .unwrap_or_else(|| std::env::var(tenant_schemas::testing::DATABASE_URL_ENV).unwrap());
    let cli = Cli {
        url,
        dir: dir.clone(),
    };

    let out = cli.ok(&["migrate", "--json"]);
    assert!(out.contains("\"migrated\":1"), "{out}");
    cli.ok(&["create", "acme", "--name", "Acme", "--domain", "acme.test"]);
    let (code, _, err) = cli.run(&["create", "Bad-Name"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid schema name"), "{err}");
    let out = cli.ok(&["list", "--json"]);
    assert!(
        out.contains("\"schema\":\"acme\"") && out.contains("acme.test"),
        "{out}"
    );

    cli.ok(&[
        "run",
        "--sql",
        "INSERT INTO notes (body) VALUES ('hello')",
        "--skip-public",
    ]);
    cli.ok(&["clone", "acme", "beta", "--domain", "beta.test"]);
    let out = cli.ok(&[
        "run",
        "--sql",
        "SELECT body FROM notes",
        "--schema",
        "beta",
        "--json",
    ]);
    assert!(out.contains("\"rows\":1"), "{out}");
    // Without --skip-public the public schema is included, and has no notes table.
    let (code, out, _) = cli.run(&["run", "--sql", "SELECT body FROM notes"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED public"), "{out}");

    cli.ok(&["domains", "add", "acme", "www.acme.test", "--primary"]);
    cli.ok(&["domains", "set-primary", "acme", "acme.test"]);
    cli.ok(&["domains", "remove", "acme", "www.acme.test"]);
    let (code, _, err) = cli.run(&["domains", "remove", "acme", "www.acme.test"]);
    assert_eq!(code, 2, "{err}");

    // A migration that fails in beta only: exit 1, the failure listed.
    write(
        &dir.join("tenant"),
        "V2__extra.sql",
        "ALTER TABLE notes ADD COLUMN extra int; SELECT 1 / (CASE WHEN current_schema() = 'beta' THEN 0 ELSE 1 END)",
    );
    let (code, out, _) = cli.run(&["migrate"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAILED beta") && out.contains("V2__extra.sql"),
        "{out}"
    );
    let (code, out, _) = cli.run(&["doctor"]);
    assert_eq!(code, 1);
    assert!(out.contains("tenant beta is at version 1 of 2"), "{out}");

    cli.ok(&["delete", "beta", "--drop-schema"]);
    let out = cli.ok(&["doctor", "--json"]);
    assert!(out.contains("\"healthy\":true"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
