//! The `tenant-schemas` binary end to end, against a throwaway PostgreSQL (one cluster for
//! the test binary, a database of its own per test).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{sql, url, write, Cli};
use tenant_schemas::testing::{TestCluster, TestDatabase};

async fn registry_tables_exist(db: &TestDatabase) -> bool {
    db.pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT to_regclass('public.tenant_schemas_tenants') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_end_to_end() {
    let (cli, _db) = Cli::new("e2e").await;

    let out = cli.ok(&["migrate", "--json"]);
    assert!(out.contains("\"migrated\":1"), "{out}");
    cli.ok(&["create", "acme", "--name", "Acme", "--domain", "acme.test"]);
    let (_, err) = cli.fails(2, &["create", "Bad-Name"]);
    assert!(err.contains("invalid schema name"), "{err}");
    let (_, err) = cli.fails(2, &["domains", "add", "acme", "bad domain"]);
    assert!(err.contains("invalid domain"), "{err}");
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
    assert!(out.contains("\"rows\":[{\"body\":\"hello\"}]"), "{out}");
    // Without --skip-public the public schema is included, and has no notes table.
    let (out, _) = cli.fails(1, &["run", "--sql", "SELECT body FROM notes"]);
    assert!(out.contains("FAILED public"), "{out}");

    cli.ok(&["domains", "add", "acme", "www.acme.test", "--primary"]);
    cli.ok(&["domains", "set-primary", "acme", "acme.test"]);
    cli.ok(&["domains", "remove", "acme", "www.acme.test"]);
    // A refused change is a failure (1), not a usage error (2).
    let (_, err) = cli.fails(1, &["domains", "remove", "acme", "www.acme.test"]);
    assert!(err.contains("www.acme.test"), "{err}");
    let (_, err) = cli.fails(1, &["create", "acme"]);
    assert!(err.contains("already exists"), "{err}");

    // A migration that fails in beta only: exit 1, the failure listed.
    write(
        &cli.dir.join("tenant"),
        "V2__extra.sql",
        "ALTER TABLE notes ADD COLUMN extra int; SELECT 1 / (CASE WHEN current_schema() = 'beta' THEN 0 ELSE 1 END)",
    );
    let (out, _) = cli.fails(1, &["migrate"]);
    assert!(
        out.contains("FAILED beta") && out.contains("V2__extra.sql"),
        "{out}"
    );
    let (out, _) = cli.fails(1, &["doctor"]);
    assert!(out.contains("tenant beta is at version 1 of 2"), "{out}");
    // The repair migrates beta, which fails again: said, and exit 1.
    let (out, _) = cli.fails(1, &["doctor", "--fix"]);
    assert!(out.contains("repair failed for tenant beta"), "{out}");

    cli.ok(&["delete", "beta", "--drop-schema"]);
    let out = cli.ok(&["doctor", "--json"]);
    assert!(out.contains("\"healthy\":true"), "{out}");
}

/// A missing `--migrations` directory used to count as "no migrations": `create` made a
/// tenant without tables and exited 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_migrations_directory_is_an_error() {
    let (cli, db) = Cli::new("nodir").await;
    let missing = cli.dir.join("tenant-typo");
    let missing = missing.to_str().unwrap();

    let (code, _, err) = cli.raw(&["create", "acme", "--migrations", missing], &cli.dir);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(missing) && err.contains("does not exist"),
        "{err}"
    );
    // Nothing was written: not even the registry.
    assert!(!registry_tables_exist(&db).await);

    // A file is not a directory.
    let file = cli.dir.join("tenant/V1__notes.sql");
    let (code, _, err) = cli.raw(
        &["migrate", "--migrations", file.to_str().unwrap()],
        &cli.dir,
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("is not a directory"), "{err}");

    // The default directory, missing (this test's directory has `tenant/`, not
    // `migrations/tenant/`): the error says where it looked and how to pass one.
    for command in [
        &["create", "acme"][..],
        &["migrate"],
        &["migrate", "--dry-run"],
    ] {
        let (code, _, err) = cli.raw(command, &cli.dir);
        assert_eq!(code, 3, "{command:?}: {err}");
        assert!(
            err.contains("migrations/tenant") && err.contains("--migrations DIR"),
            "{err}"
        );
    }
    assert!(!registry_tables_exist(&db).await);

    // A given --shared-migrations must exist too.
    let (code, _, err) = cli.raw(
        &[
            "migrate",
            "--migrations",
            cli.dir.join("tenant").to_str().unwrap(),
            "--shared-migrations",
            missing,
        ],
        &cli.dir,
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("--shared-migrations") && err.contains(missing),
        "{err}"
    );

    // The default directories are found from the project's directory; a missing default
    // shared directory means no shared migrations, and is said.
    let project = cli.dir.join("project");
    write(
        &project.join("migrations/tenant"),
        "V1__notes.sql",
        "CREATE TABLE notes (body text)",
    );
    let (code, out, err) = cli.raw(&["migrate"], &project);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("no shared migrations"), "{err}");
    let (code, out, err) = cli.raw(&["create", "acme"], &project);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("version 1"), "{out}");

    // Commands that do not read migrations do not need them.
    let (code, out, err) = cli.raw(&["list", "--migrations", missing], &cli.dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("acme"), "{out}");
}

/// `list` and `doctor` used to create the registry's tables on any database they were
/// pointed at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_never_install_the_registry() {
    let (cli, db) = Cli::new("readonly").await;
    for command in [
        &["list"][..],
        &["doctor"],
        &["status"],
        &["migrate", "--dry-run"],
        &["run", "--sql", "SELECT 1"],
        &["delete", "acme"],
        &["domains", "remove", "acme", "acme.test"],
        &["doctor", "--fix"],
    ] {
        let (_, err) = cli.fails(3, command);
        assert!(
            err.contains("registry is not installed") && err.contains(db.name()),
            "{command:?}: {err}"
        );
    }
    assert!(!registry_tables_exist(&db).await);

    // The writing commands install it, and say so.
    let (code, _, err) = cli.run(&["create", "acme"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("installed the tenant registry"), "{err}");
    assert!(registry_tables_exist(&db).await);
    let out = cli.ok(&["list"]);
    assert!(out.contains("acme"), "{out}");
}

/// Every non-migration failure used to exit 2, like a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_configuration_errors_exit_3() {
    let (cli, db) = Cli::new("conn").await;
    let bin = env!("CARGO_BIN_EXE_tenant-schemas");
    let run = |url: Option<&str>, args: &[&str]| {
        let mut command = Command::new(bin);
        command.args(args).env_remove("DATABASE_URL");
        if let Some(url) = url {
            command.env("DATABASE_URL", url);
        }
        let out = command.output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, err) = run(None, &["list"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");

    let (code, err) = run(Some("host=localhost port=notaport"), &["list"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("not a valid PostgreSQL connection string"),
        "{err}"
    );

    // A refused connection: the message names the server, never the password.
    let (code, err) = run(
        Some("postgres://someone:hunter2secret@127.0.0.1:1/app"),
        &["list"],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("someone@127.0.0.1:1/app"), "{err}");
    assert!(!err.contains("hunter2secret"), "{err}");

    // A database that does not exist.
    let wrong = cli.url.replace(db.name(), "no_such_database_here");
    let (code, err) = run(Some(&wrong), &["list"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no_such_database_here"), "{err}");

    // Usage is clap's 2; the codes are in --help.
    let (code, _) = run(Some(&cli.url), &["migrate", "--no-such-flag"]);
    assert_eq!(code, 2);
    let out = Command::new(bin).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.contains("Exit codes:") && help.contains("3  connection or configuration"),
        "{help}"
    );
    // The URL's value (and its password) is never shown in --help.
    let out = Command::new(bin)
        .arg("--help")
        .env("DATABASE_URL", "postgres://u:hunter2secret@h/d")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2secret"));
}

/// `migrate --schema typo` used to succeed having migrated nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_schemas_and_empty_selections_fail() {
    let (cli, _db) = Cli::new("select").await;
    cli.ok(&["migrate"]);
    cli.ok(&["create", "acme"]);
    for command in [
        &["migrate", "--schema", "acmee"][..],
        &["migrate", "--dry-run", "--schema", "acmee"],
        &["run", "--sql", "SELECT 1", "--schema", "acmee"],
        &["status", "--schema", "acmee"],
    ] {
        let (_, err) = cli.fails(1, command);
        assert!(err.contains("no such tenant: acmee"), "{command:?}: {err}");
    }
    // A selection of nothing is not a success either.
    let (_, err) = cli.fails(
        1,
        &[
            "run",
            "--sql",
            "SELECT 1",
            "--schema",
            "public",
            "--skip-public",
        ],
    );
    assert!(err.contains("no schema selected"), "{err}");
    let (_, err) = cli.fails(1, &["migrate", "--schema", "public", "--skip-public"]);
    assert!(err.contains("nothing to migrate"), "{err}");
    cli.ok(&["delete", "acme", "--drop-schema"]);
    let (_, err) = cli.fails(1, &["run", "--sql", "SELECT 1", "--skip-public"]);
    assert!(err.contains("no schema selected"), "{err}");
    let (_, err) = cli.fails(1, &["migrate", "--skip-public"]);
    assert!(err.contains("nothing to migrate"), "{err}");

    cli.ok(&["create", "acme"]);
    // One typo among good names still stops everything.
    write(
        &cli.dir.join("tenant"),
        "V2__more.sql",
        "ALTER TABLE notes ADD COLUMN more int",
    );
    cli.fails(1, &["migrate", "--schema", "acme", "--schema", "nope"]);
    let out = cli.ok(&["status", "--json"]);
    assert!(out.contains("\"pending\":[\"V2__more.sql\"]"), "{out}");
    let out = cli.ok(&["migrate", "--schema", "acme"]);
    assert!(out.contains("migrated 1"), "{out}");
}

/// `run` used to print "(0 rows)" for an UPDATE that changed rows, and never a SELECT's
/// rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_rows_and_affected_counts() {
    let (cli, _db) = Cli::new("run").await;
    cli.ok(&["create", "acme"]);
    cli.ok(&["create", "beta"]);
    cli.ok(&[
        "run",
        "--sql",
        "INSERT INTO notes (body) VALUES ('first'), ('second')",
        "--schema",
        "acme",
    ]);
    cli.ok(&[
        "run",
        "--sql",
        "INSERT INTO notes (body) VALUES (NULL)",
        "--schema",
        "beta",
    ]);

    let out = cli.ok(&[
        "run",
        "--sql",
        "UPDATE notes SET body = coalesce(body, '') || '!'",
        "--skip-public",
    ]);
    assert!(out.contains("acme: 2 rows affected"), "{out}");
    assert!(out.contains("beta: 1 row affected"), "{out}");
    assert!(!out.contains("0 rows"), "{out}");

    let out = cli.ok(&[
        "run",
        "--sql",
        "SELECT id, body FROM notes ORDER BY id",
        "--skip-public",
    ]);
    let expected_acme = "acme:\n  id  body\n  --  -------\n  1   first!\n  2   second!\n  (2 rows)";
    assert!(out.contains(expected_acme), "{out}");
    assert!(
        out.contains("beta:\n  id  body\n  --  ----\n  1   !\n  (1 row)"),
        "{out}"
    );

    // JSON: each schema's rows as objects; NULL is null.
    let out = cli.ok(&[
        "run",
        "--sql",
        "SELECT id, NULLIF(body, '!') AS body FROM notes ORDER BY id",
        "--schema",
        "beta",
        "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["schemas"][0]["results"][0]["rows"],
        serde_json::json!([{"id": "1", "body": null}]),
        "{out}"
    );
    let out = cli.ok(&[
        "run",
        "--sql",
        "DELETE FROM notes WHERE id = 1; SELECT count(*) AS left FROM notes",
        "--schema",
        "acme",
        "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["schemas"][0]["results"],
        serde_json::json!([
            {"rows_affected": 1},
            {"columns": ["left"], "rows": [{"left": "1"}], "row_count": 1}
        ]),
        "{out}"
    );
    // A query returning no rows still shows its columns.
    let out = cli.ok(&[
        "run",
        "--sql",
        "SELECT body FROM notes WHERE false",
        "--schema",
        "acme",
    ]);
    assert!(out.contains("acme:\n  body\n  ----\n  (0 rows)"), "{out}");
}

/// `list` columns used to shift with the schema name's length (`SchemaName`'s `Display`
/// ignored the width).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_columns_line_up() {
    let (cli, _db) = Cli::new("list").await;
    cli.ok(&["create", "a", "--name", "A"]);
    cli.ok(&[
        "create",
        "a_rather_long_schema_name_for_a_tenant_x",
        "--name",
        "Long",
        "--domain",
        "long.test",
    ]);
    let out = cli.ok(&["list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let header = lines[0];
    for column in ["VERSION", "STATUS", "SHARD", "NAME", "DOMAINS"] {
        let at = header.find(column).unwrap();
        for line in &lines[2..] {
            // A row whose last cells are empty ends early (no trailing spaces).
            if line.len() > at {
                assert!(
                    line[..at].ends_with("  ") && !line[at..].starts_with(' '),
                    "{column} misaligned:\n{out}"
                );
            }
        }
    }
    assert!(lines[3].ends_with("long.test"), "{out}");
}

/// `migrate --dry-run` lists what would run and writes nothing; `status` shows versions,
/// pending migrations and drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_dry_run() {
    let (cli, db) = Cli::new("status").await;
    cli.ok(&["migrate"]);
    cli.ok(&["create", "acme"]);
    cli.ok(&["create", "beta"]);
    let out = cli.ok(&["status"]);
    assert!(out.contains("3 schemas: 0 behind, 0 with drift"), "{out}");

    write(
        &cli.dir.join("tenant"),
        "V2__extra.sql",
        "ALTER TABLE notes ADD COLUMN extra int",
    );
    write(
        &cli.dir.join("shared"),
        "V2__more_plans.sql",
        "ALTER TABLE plans ADD COLUMN price int",
    );
    let out = cli.ok(&["migrate", "--dry-run"]);
    assert!(
        out.contains("public (default): 1 pending: V2__more_plans.sql"),
        "{out}"
    );
    assert!(out.contains("acme: 1 pending: V2__extra.sql"), "{out}");
    assert!(out.contains("beta: 1 pending: V2__extra.sql"), "{out}");
    assert!(out.contains("would run 3 migrations in 3 schemas"), "{out}");
    // Still pending: the dry run wrote nothing.
    let out = cli.ok(&[
        "migrate",
        "--dry-run",
        "--json",
        "--schema",
        "acme",
        "--skip-public",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["schemas"][0]["pending"],
        serde_json::json!(["V2__extra.sql"])
    );
    assert_eq!(doc["schemas"].as_array().unwrap().len(), 1, "{out}");

    let out = cli.ok(&["status"]);
    let acme = out.lines().find(|l| l.starts_with("acme ")).unwrap();
    assert_eq!(
        acme.split_whitespace().collect::<Vec<_>>(),
        ["acme", "default", "1", "2", "1"],
        "{out}"
    );

    // Drift: a schema dropped behind the registry's back, and a version no migration has.
    cli.ok(&["create", "gamma"]);
    sql(&db, "DROP SCHEMA beta CASCADE").await;
    sql(
        &db,
        "UPDATE public.tenant_schemas_tenants SET version = 9 WHERE schema_name = 'gamma'",
    )
    .await;
    let (out, _) = cli.fails(1, &["status"]);
    let beta = out.lines().find(|l| l.starts_with("beta ")).unwrap();
    assert!(beta.contains("schema missing on database default"), "{out}");
    let gamma = out.lines().find(|l| l.starts_with("gamma ")).unwrap();
    assert!(
        gamma.contains("registry says version 9, the schema's history 2")
            && gamma.contains("newer than any known migration"),
        "{out}"
    );
    let (out, _) = cli.fails(1, &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let beta = doc["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["schema"] == "beta")
        .unwrap();
    assert_eq!(beta["drift"][0]["kind"], "missing_schema", "{out}");

    // The dry run says beta would fail, and exits 1 like the real run.
    let (out, _) = cli.fails(1, &["migrate", "--dry-run"]);
    assert!(out.contains("beta: would fail: schema missing"), "{out}");
    let (out, _) = cli.fails(1, &["migrate"]);
    assert!(out.contains("FAILED beta"), "{out}");
    let out = cli.ok(&["status", "--schema", "acme"]);
    assert!(out.contains("1 schema: 0 behind, 0 with drift"), "{out}");
}

/// A binary whose tenant migrations are older than the registry's tenants (a rolling
/// deploy) refuses to create a tenant behind them, naming both versions and the flag, and
/// `status` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_migrations_directory_does_not_create_tenants_behind() {
    let (cli, db) = Cli::new("older").await;
    cli.ok(&["migrate"]);
    cli.ok(&["create", "acme"]);
    let newer = cli.dir.join("newer");
    std::fs::create_dir_all(&newer).unwrap();
    for entry in std::fs::read_dir(cli.dir.join("tenant")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), newer.join(entry.file_name())).unwrap();
    }
    write(
        &newer,
        "V2__extra.sql",
        "ALTER TABLE notes ADD COLUMN extra int",
    );
    let shared = cli.dir.join("shared");
    let with_newer = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend([
            "--migrations",
            newer.to_str().unwrap(),
            "--shared-migrations",
            shared.to_str().unwrap(),
        ]);
        cli.raw(&all, &cli.dir)
    };
    let (code, _, err) = with_newer(&["migrate"]);
    assert_eq!(code, 0, "{err}");

    let (_, err) = cli.fails(3, &["create", "late"]);
    assert!(
        err.contains("end at version 1")
            && err.contains("at version 2")
            && err.contains("--migrations DIR"),
        "{err}"
    );
    let (out, _) = cli.fails(1, &["status"]);
    assert!(
        out.contains("these tenant migrations end at version 1, but 1 tenant newer code migrated (up to version 2)"),
        "{out}"
    );
    let (out, _) = cli.fails(1, &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["ahead"], 1, "{out}");
    let (code, _, err) = with_newer(&["create", "late"]);
    assert_eq!(code, 0, "{err}");
    let version: i32 = db
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT version FROM public.tenant_schemas_tenants WHERE schema_name = 'late'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 2);
}

/// The command line used to reach one database only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards() {
    let (cli, db) = Cli::new("shards").await;
    let eu = TestCluster::shared()
        .unwrap()
        .create_database()
        .await
        .unwrap();
    let eu_url = url(&eu);
    let shard = format!("eu={eu_url}");
    cli.ok(&["migrate", "--shard", &shard]);
    let out = cli.ok(&["create", "acme", "--shard", &shard, "--in-shard", "eu"]);
    assert!(out.contains("shard eu"), "{out}");
    cli.ok(&["create", "home", "--shard", &shard, "--in-shard", "default"]);
    // The schema is on the shard's database, not the registry's.
    let on = |db: &TestDatabase| {
        let pool = db.pool().clone();
        async move {
            pool.get()
                .await
                .unwrap()
                .query_one(
                    "SELECT count(*) FROM pg_namespace WHERE nspname = 'acme'",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!((on(&eu).await, on(&db).await), (1, 0));
    let out = cli.ok(&["list"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("acme") && l.contains(" eu ")),
        "{out}"
    );

    // Without the shard: its tenants are reported, not silently skipped.
    let (out, _) = cli.fails(1, &["status"]);
    assert!(
        out.contains("on shard eu, not configured (pass --shard eu=URL)"),
        "{out}"
    );
    let (out, _) = cli.fails(1, &["run", "--sql", "SELECT 1", "--skip-public"]);
    assert!(
        out.contains("FAILED acme") && out.contains("--shard eu=URL"),
        "{out}"
    );
    assert!(out.contains("home:\n"), "{out}");
    let (_, err) = cli.fails(3, &["create", "other", "--in-shard", "eu"]);
    assert!(err.contains("--shard eu=URL"), "{err}");

    // A shards file.
    let file = cli.dir.join("shards.conf");
    std::fs::write(&file, format!("# shards\n\neu = {eu_url}\n")).unwrap();
    let file = file.to_str().unwrap();
    cli.ok(&[
        "run",
        "--sql",
        "INSERT INTO notes (body) VALUES ('bonjour')",
        "--schema",
        "acme",
        "--shards",
        file,
    ]);
    let out = cli.ok(&[
        "run",
        "--sql",
        "SELECT body FROM notes",
        "--skip-public",
        "--shards",
        file,
    ]);
    assert!(out.contains("acme:\n  body\n  -------\n  bonjour"), "{out}");
    let out = cli.ok(&["status", "--shards", file]);
    assert!(out.contains("public  eu "), "{out}");

    write(
        &cli.dir.join("tenant"),
        "V2__extra.sql",
        "ALTER TABLE notes ADD COLUMN extra int",
    );
    let out = cli.ok(&["migrate", "--dry-run", "--shards", file]);
    assert!(out.contains("acme: 1 pending: V2__extra.sql"), "{out}");
    let out = cli.ok(&["migrate", "--shards", file]);
    assert!(out.contains("migrated 2"), "{out}");
    cli.ok(&["doctor", "--shards", file]);

    // Shard configuration errors name the file and line, or the shard.
    let bad = cli.dir.join("bad.conf");
    std::fs::write(&bad, "eu postgres://x\n").unwrap();
    let (_, err) = cli.fails(3, &["list", "--shards", bad.to_str().unwrap()]);
    assert!(
        err.contains("bad.conf:1") && err.contains("NAME=URL"),
        "{err}"
    );
    let (_, err) = cli.fails(3, &["list", "--shard", &shard, "--shards", file]);
    assert!(err.contains("shard `eu` is given twice"), "{err}");
    let (_, err) = cli.fails(
        3,
        &["list", "--shard", "eu=postgres://u:pw-secret@127.0.0.1:1/x"],
    );
    assert!(
        err.contains("(shard `eu`)") && !err.contains("pw-secret"),
        "{err}"
    );
    cli.fails(2, &["list", "--shard", "default=postgres://x/y"]);
}

/// `state` changes a tenant's state through the library (the registry keeps it, `list`
/// shows it); a typo in the state is a usage error, an unknown tenant exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_a_tenant_state() {
    let (cli, _db) = Cli::new("state").await;
    cli.ok(&["create", "acme", "--domain", "acme.test"]);
    let out = cli.ok(&["state", "acme", "read-only"]);
    assert_eq!(out.trim(), "acme: active -> read_only", "{out}");
    let out = cli.ok(&["state", "acme", "read_only"]);
    assert_eq!(out.trim(), "acme was read_only already", "{out}");
    let out = cli.ok(&["--json", "state", "acme", "maintenance"]);
    assert!(out.contains(r#""to":"maintenance""#), "{out}");
    let out = cli.ok(&["list"]);
    assert!(out.lines().nth(2).unwrap().contains("maintenance"), "{out}");
    let (_, err) = cli.fails(2, &["state", "acme", "paused"]);
    assert!(err.contains("unknown tenant state"), "{err}");
    let (_, err) = cli.fails(1, &["state", "nobody", "active"]);
    assert!(err.contains("nobody"), "{err}");
}

/// `rename-schema` moves a tenant to another schema name (its domains follow, its data and
/// history move along); a taken name or `public` exit 1 with nothing changed, an invalid
/// name is a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_schema_moves_a_tenant() {
    let (cli, db) = Cli::new("rename").await;
    cli.ok(&["create", "acme", "--domain", "acme.test"]);
    cli.ok(&["create", "globex", "--domain", "globex.test"]);
    sql(&db, "INSERT INTO acme.notes (body) VALUES ('kept')").await;
    let out = cli.ok(&["rename-schema", "acme", "acme_corp"]);
    assert_eq!(
        out.trim(),
        "renamed schema acme to acme_corp (tenant acme, domains: acme.test)",
        "{out}"
    );
    let out = cli.ok(&["list"]);
    assert!(
        out.contains("acme_corp") && out.contains("acme.test"),
        "{out}"
    );
    let out = cli.ok(&[
        "run",
        "--sql",
        "SELECT body FROM notes",
        "--schema",
        "acme_corp",
    ]);
    assert!(out.contains("kept"), "{out}");
    let out = cli.ok(&["status", "--schema", "acme_corp"]);
    assert!(out.contains("0 with drift"), "{out}");
    let (_, err) = cli.fails(1, &["rename-schema", "acme_corp", "globex"]);
    assert!(err.contains("`globex` already exists"), "{err}");
    let (_, err) = cli.fails(1, &["rename-schema", "public", "main"]);
    assert!(err.contains("public"), "{err}");
    let (_, err) = cli.fails(1, &["rename-schema", "nobody", "somebody"]);
    assert!(err.contains("nobody"), "{err}");
    let (_, err) = cli.fails(2, &["rename-schema", "acme_corp", "Bad-Name"]);
    assert!(err.contains("invalid schema name"), "{err}");
    let out = cli.ok(&["--json", "rename-schema", "acme_corp", "acme"]);
    assert!(out.contains(r#""to":"acme""#), "{out}");
    let out = cli.ok(&["list"]);
    assert!(out.contains("acme ") && !out.contains("acme_corp"), "{out}");
}

/// `migrate --wave N` migrates at most N tenants behind, in schema order, the next run the
/// next ones; `--canary` only the canaries. A `.sql` migration marked no-transaction builds
/// its index concurrently; where the build fails (duplicate rows) the run exits 1 with that
/// tenant at the version before, and `doctor --fix` repairs it once the data is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_rollouts_and_concurrent_indexes() {
    let (cli, db) = Cli::new("rollout").await;
    for t in ["t1", "t2", "t3", "t4", "t5"] {
        cli.ok(&["create", t]);
    }
    sql(&db, "INSERT INTO t4.notes (body) VALUES ('same'), ('same')").await;
    write(
        &cli.dir.join("tenant"),
        "V2__notes_body.sql",
        "-- tenant-schemas: no-transaction\n\
         CREATE UNIQUE INDEX CONCURRENTLY notes_body ON notes (body)",
    );
    let out = cli.ok(&["migrate", "--wave", "2", "--skip-public"]);
    assert!(
        out.starts_with("migrated 2, up to date 0, failed 0")
            && out.contains("3 tenants behind left for a later run"),
        "{out}"
    );
    let out = cli.ok(&["migrate", "--canary", "t5", "--skip-public", "--json"]);
    assert!(
        out.contains(r#""migrated":1"#) && out.contains(r#""deferred":2"#),
        "{out}"
    );
    assert!(out.contains(r#""schema":"t5""#), "{out}");
    let (out, _) = cli.fails(1, &["migrate", "--wave", "2", "--skip-public"]);
    assert!(
        out.starts_with("migrated 1, up to date 3, failed 1"),
        "{out}"
    );
    assert!(
        out.contains("FAILED t4 (stays at version 1): migration `V2__notes_body.sql` failed"),
        "{out}"
    );
    let (out, _) = cli.fails(1, &["doctor"]);
    assert!(
        out.contains("tenant t4 has an invalid index notes_body"),
        "{out}"
    );
    sql(
        &db,
        "DELETE FROM t4.notes WHERE id = (SELECT max(id) FROM t4.notes)",
    )
    .await;
    let out = cli.ok(&["doctor", "--fix"]);
    assert!(
        out.contains("repaired tenant t4 has an invalid index"),
        "{out}"
    );
    let out = cli.ok(&["doctor"]);
    assert_eq!(out.trim(), "no problems found");
    cli.fails(2, &["migrate", "--wave", "0"]);
    cli.fails(2, &["migrate", "--canary", "Bad-Name"]);
    let (_, err) = cli.fails(1, &["migrate", "--canary", "nobody"]);
    assert!(err.contains("no such tenant: nobody"), "{err}");
}

/// URLs take libpq's sslmode and sslrootcert (or --ssl-root-cert): against a server with
/// TLS on and a certificate for localhost, verify-full connects; a host name the
/// certificate does not hold, or a CA nobody gave, exit 3 and say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_over_tls_with_verify_full() {
    if std::env::var_os(tenant_schemas::testing::DATABASE_URL_ENV).is_some() {
        return; // the harness cannot turn TLS on in an external server
    }
    let cluster = TestCluster::start_with_tls().unwrap();
    let db = cluster.create_database().await.unwrap();
    let ca = cluster.ca_cert().unwrap().display().to_string();
    let port = cluster.port().unwrap();
    let dir = std::env::temp_dir().join(format!("ts-cli-{}-tls", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write(
        &dir.join("tenant"),
        "V1__notes.sql",
        "CREATE TABLE notes (id bigserial PRIMARY KEY, body text)",
    );
    std::fs::create_dir_all(dir.join("shared")).unwrap();
    let (tenant, shared) = (dir.join("tenant"), dir.join("shared"));
    let run = |url: &str, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tenant-schemas"))
            .args(args)
            .arg("--migrations")
            .arg(&tenant)
            .arg("--shared-migrations")
            .arg(&shared)
            .env("DATABASE_URL", url)
            .output()
            .unwrap();
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "$ DATABASE_URL='{url}' tenant-schemas {}\n{shown}",
            args.join(" ")
        );
        (out.status.code().unwrap_or(-1), shown)
    };
    let name = db.name();

    let verified =
        format!("postgres://postgres@localhost:{port}/{name}?sslmode=verify-full&sslrootcert={ca}");
    let (code, out) = run(
        &verified,
        &["create", "acme", "--domain", "acme.example.com"],
    );
    assert_eq!(code, 0, "{out}");
    // The CA from the option instead of the URL.
    let bare = format!("postgres://postgres@localhost:{port}/{name}?sslmode=verify-full");
    let (code, out) = run(&bare, &["list", "--ssl-root-cert", &ca]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("acme.example.com"), "{out}");

    // The server is reached at 127.0.0.1 but called db.invalid.
    let wrong_host = format!(
        "postgres://postgres@db.invalid:{port}/{name}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"
    );
    let (code, out) = run(&wrong_host, &["list"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("the host name `db.invalid` does not match the server's certificate"),
        "{out}"
    );
    let (code, out) = run(&bare, &["list"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("unknown issuer"), "{out}");
    let (code, out) = run(&bare, &["list", "--ssl-root-cert", "/nonexistent/ca.crt"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("/nonexistent/ca.crt"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `migrate --dry-run` runs the checks the real run does: it once predicted no failure for a
/// run that then failed in every tenant (a tenant table also present in `public`). The
/// schemas the dry run says would fail are exactly those the run then fails, and neither
/// writes where it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_predicts_the_failures_of_the_run() {
    let (cli, db) = Cli::new("predict").await;
    cli.ok(&["migrate"]);
    for tenant in ["acme", "beta", "gamma"] {
        cli.ok(&["create", tenant]);
    }
    // Made by hand in `public`: every tenant's `notes` now shadows it.
    sql(&db, "CREATE TABLE public.notes (id int)").await;
    write(
        &cli.dir.join("tenant"),
        "V2__extra.sql",
        "ALTER TABLE notes ADD COLUMN extra int",
    );
    let failing = |doc: &serde_json::Value, flag: &dyn Fn(&serde_json::Value) -> bool| {
        let mut names: Vec<String> = doc["schemas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| flag(s))
            .map(|s| s["schema"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };

    let (out, _) = cli.fails(1, &["migrate", "--dry-run"]);
    assert!(out.contains("3 would fail"), "{out}");
    assert!(
        out.contains("acme: would fail:") && out.contains("notes"),
        "{out}"
    );
    let (out, _) = cli.fails(1, &["migrate", "--dry-run", "--json"]);
    let predicted: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(predicted["would_fail"], 3, "{out}");
    let predicted = failing(&predicted, &|s| s["would_fail"] == true);

    let (out, _) = cli.fails(1, &["migrate", "--json"]);
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    let failed = failing(&run, &|s| s["outcome"] == "failed");
    assert_eq!(failed, ["acme", "beta", "gamma"], "{out}");
    assert_eq!(predicted, failed);

    // `status` names the same hazard, and the dry run agrees with the run once it is gone.
    let (out, _) = cli.fails(1, &["status"]);
    let acme = out.lines().find(|l| l.starts_with("acme ")).unwrap();
    assert!(acme.contains("notes"), "{out}");
    sql(&db, "DROP TABLE public.notes").await;
    let out = cli.ok(&["migrate", "--dry-run"]);
    assert!(out.contains("would run 3 migrations in 3 schemas"), "{out}");
    let out = cli.ok(&["migrate"]);
    assert!(out.contains("migrated 3"), "{out}");
}

/// A tenant table named like one of `public` is refused with the flag that declares it
/// shared, not the library's Rust API; with the flag, the tenant is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_also_in_public_is_refused_naming_the_flag() {
    let (cli, _db) = Cli::with(
        "shared-name",
        &[
            ("tenant", "V1__plans.sql", "CREATE TABLE plans (name text)"),
            ("shared", "V1__plans.sql", "CREATE TABLE plans (name text)"),
        ],
    )
    .await;
    cli.ok(&["migrate"]);
    let (_, err) = cli.fails(1, &["create", "acme"]);
    assert!(err.contains("--shared-name plans"), "{err}");
    assert!(!err.contains("TenantMigrations::shared_name"), "{err}");
    cli.ok(&["create", "acme", "--shared-name", "plans"]);
}

/// `limit` sets and clears a tenant's own connection limit in the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_sets_a_tenants_connection_limit() {
    let (cli, db) = Cli::new("limit").await;
    cli.ok(&["migrate"]);
    cli.ok(&["create", "acme"]);
    let limit = || async {
        db.pool()
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT max_connections FROM public.tenant_schemas_tenants WHERE schema_name = 'acme'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, Option<i32>>(0)
    };
    let out = cli.ok(&["limit", "acme", "--max-connections", "3"]);
    assert!(out.contains("acme: max connections none -> 3"), "{out}");
    assert_eq!(limit().await, Some(3));
    let out = cli.ok(&["limit", "acme", "--clear", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["from"], 3, "{out}");
    assert!(doc["to"].is_null(), "{out}");
    assert_eq!(limit().await, None);
    cli.fails(2, &["limit", "acme"]);
    cli.fails(2, &["limit", "acme", "--max-connections", "0"]);
    cli.fails(2, &["limit", "acme", "--max-connections", "2", "--clear"]);
    cli.fails(2, &["limit", "acme", "--statement-timeout", "0"]);
    // The statement timeout, alone or with the connection limit.
    let timeout = || async {
        db.pool()
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT statement_timeout_ms FROM public.tenant_schemas_tenants WHERE schema_name = 'acme'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, Option<i32>>(0)
    };
    let out = cli.ok(&["limit", "acme", "--statement-timeout", "2500"]);
    assert!(
        out.contains("acme: statement timeout (ms) none -> 2500"),
        "{out}"
    );
    assert_eq!(timeout().await, Some(2500));
    let out = cli.ok(&[
        "limit",
        "acme",
        "--max-connections",
        "2",
        "--clear-statement-timeout",
        "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["to"], 2, "{out}");
    assert_eq!(doc["statement_timeout_ms"]["from"], 2500, "{out}");
    assert!(doc["statement_timeout_ms"]["to"].is_null(), "{out}");
    assert_eq!((limit().await, timeout().await), (Some(2), None));
    cli.fails(1, &["limit", "nobody", "--max-connections", "1"]);
}

/// `erase` removes a tenant and prints the receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_removes_a_tenant_and_prints_the_receipt() {
    let (cli, db) = Cli::new("erase").await;
    cli.ok(&["migrate"]);
    cli.ok(&["create", "acme", "--domain", "acme.example.com"]);
    cli.ok(&["create", "beta"]);
    cli.ok(&[
        "run",
        "--schema",
        "acme",
        "--sql",
        "INSERT INTO notes (body) VALUES ('a'), ('b')",
    ]);
    let out = cli.ok(&["erase", "acme", "--export-checksum", "sha256:abc", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["erased"], "acme", "{out}");
    assert_eq!(
        doc["domains"],
        serde_json::json!(["acme.example.com"]),
        "{out}"
    );
    let notes = doc["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "notes")
        .unwrap();
    assert_eq!(notes["rows"], 2, "{out}");
    assert_eq!(doc["export_checksum"], "sha256:abc", "{out}");
    assert_eq!(doc["key_prefix"], "t/acme/", "{out}");
    let left: i64 = db
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'acme'
             UNION ALL SELECT count(*) FROM public.tenant_schemas_tenants WHERE schema_name = 'acme'
             UNION ALL SELECT count(*) FROM public.tenant_schemas_domains WHERE domain = 'acme.example.com'
             ORDER BY 1 DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "something of acme is left");
    let out = cli.ok(&["list"]);
    assert!(out.contains("beta") && !out.contains("acme"), "{out}");
    cli.fails(1, &["erase", "acme"]);
    cli.fails(2, &["erase", "public"]);
}

/// `export` writes a tenant to a file and prints its checksum; `restore --as` brings it
/// back beside the original with the same rows; an existing file or schema is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_restore_round_trip() {
    let (cli, _db) = Cli::new("export").await;
    cli.ok(&["migrate"]);
    cli.ok(&["create", "acme"]);
    cli.ok(&[
        "run",
        "--schema",
        "acme",
        "--sql",
        "INSERT INTO notes (body) VALUES ('one'), (E'two\\nlines')",
    ]);
    let file = cli.dir.join("acme.tsx");
    let _ = std::fs::remove_file(&file);
    let file_arg = file.to_str().unwrap();
    let out = cli.ok(&["export", "acme", "--out", file_arg, "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["rows"], 2, "{out}");
    let checksum = doc["sha256"].as_str().unwrap().to_owned();
    assert_eq!(checksum.len(), 64, "{out}");
    cli.fails(3, &["export", "acme", "--out", file_arg]);

    cli.ok(&[
        "restore",
        file_arg,
        "--as",
        "acme_copy",
        "--domain",
        "copy.example.com",
    ]);
    let rows = |schema: &str| {
        cli.ok(&[
            "run",
            "--schema",
            schema,
            "--sql",
            "SELECT id, body FROM notes ORDER BY id",
            "--json",
        ])
    };
    let (original, copy) = (rows("acme"), rows("acme_copy"));
    assert!(original.contains("two\\nlines"), "{original}");
    assert_eq!(
        original.replace("acme", "S"),
        copy.replace("acme_copy", "S")
    );
    cli.fails(1, &["restore", file_arg, "--as", "acme"]);
    let out = cli.ok(&[
        "erase",
        "acme",
        "--export-checksum",
        &format!("sha256:{checksum}"),
    ]);
    assert!(out.contains(&checksum), "{out}");
}

/// `usage` shows each tenant's schema size; `quota` sets a storage quota and
/// `usage --enforce-quotas` makes a tenant over it read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_quotas() {
    let (cli, _db) = Cli::new("usage").await;
    cli.ok(&["migrate"]);
    cli.ok(&["create", "acme"]);
    cli.ok(&["create", "beta"]);
    cli.ok(&[
        "run",
        "--schema",
        "acme",
        "--sql",
        "INSERT INTO notes (body) SELECT repeat(md5(g::text), 40) FROM generate_series(1, 2000) g",
    ]);
    let out = cli.ok(&["usage", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bytes = |doc: &serde_json::Value, s: &str| {
        doc["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["schema"] == s)
            .unwrap()["bytes"]
            .as_u64()
            .unwrap()
    };
    assert!(bytes(&doc, "acme") > bytes(&doc, "beta"), "{out}");
    let out = cli.ok(&["quota", "acme", "--bytes", "100kB"]);
    assert!(out.contains("none -> 100000 bytes"), "{out}");
    cli.fails(2, &["quota", "acme", "--bytes", "10XB"]);
    cli.fails(2, &["quota", "acme"]);
    let out = cli.ok(&["usage"]);
    assert!(out.contains("1 over quota"), "{out}");
    let out = cli.ok(&["usage", "--enforce-quotas"]);
    assert!(out.contains("made acme read-only"), "{out}");
    let (out, err) = cli.fails(
        1,
        &[
            "run",
            "--schema",
            "acme",
            "--sql",
            "INSERT INTO notes (body) VALUES ('x')",
        ],
    );
    assert!(format!("{out}{err}").contains("read-only"), "{out}{err}");
    cli.ok(&["quota", "acme", "--clear"]);
}

/// Role mode from the command line: tenants created before are adopted by `roles sync`
/// (each its own role, recorded and listed), `--tenant-roles` gives new ones a role at
/// creation, `delete` drops it, and a tenant's role cannot read another tenant's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_sync_adopts_existing_tenants_and_create_gives_new_ones_a_role() {
    let (cli, db) = Cli::new("roles").await;
    cli.ok(&["migrate"]);
    cli.ok(&["create", "acme"]);
    cli.ok(&["create", "globex"]);
    let out = cli.ok(&["roles", "list"]);
    assert!(out.contains("2 tenants have no role"), "{out}");
    let out = cli.ok(&["roles", "sync", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["new"], 2, "{out}");
    let out = cli.ok(&["roles", "sync", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["new"], 0, "{out}");
    cli.ok(&["--tenant-roles", "create", "initech"]);
    let roles = || async {
        db.pool()
            .get()
            .await
            .unwrap()
            .query(
                "SELECT schema_name, role FROM public.tenant_schemas_tenants \
                 WHERE schema_name <> 'public' ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1)))
            .collect::<Vec<_>>()
    };
    let all = roles().await;
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|(_, role)| role.is_some()), "{all:?}");
    let out = cli.ok(&["roles", "list", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["without_role"], 0, "{out}");
    // The role reaches its own schema, not another's.
    let acme_role = all[0].1.clone().unwrap();
    let conn = db.pool().get().await.unwrap();
    conn.batch_execute(&format!("SET ROLE \"{acme_role}\""))
        .await
        .unwrap();
    conn.batch_execute("SELECT * FROM acme.tenant_schemas_history")
        .await
        .unwrap();
    let err = conn
        .batch_execute("SELECT * FROM globex.tenant_schemas_history")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    conn.batch_execute("RESET ROLE").await.unwrap();
    drop(conn);
    cli.ok(&["delete", "acme", "--drop-schema"]);
    let gone: i64 = db
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&acme_role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gone, 0, "the deleted tenant's role is dropped");
}

/// `delete --drop-schema` and `erase` refuse to destroy objects outside the tenant's schema
/// that depend on it — a view in `public` or in another tenant's schema, a foreign key of a
/// `public` table, another tenant's table inheriting from the tenant's — naming each and
/// `--cascade` (exit 1, nothing deleted); with `--cascade` they go with the schema as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_erase_refuse_outside_dependents_unless_cascade() {
    let (cli, db) = Cli::new("cascade").await;
    cli.ok(&["migrate"]);
    let kinds = [
        (
            "CREATE VIEW public.all_notes AS SELECT * FROM acme.notes",
            "view public.all_notes depends on table acme.notes",
            "SELECT count(*) FROM pg_views WHERE viewname = 'all_notes'",
            1,
        ),
        (
            "CREATE VIEW beta.peek AS SELECT id FROM acme.notes",
            "view beta.peek depends on table acme.notes",
            "SELECT count(*) FROM pg_views WHERE viewname = 'peek'",
            1,
        ),
        (
            "CREATE TABLE public.orders (note bigint REFERENCES acme.notes (id));
             INSERT INTO public.orders SELECT id FROM acme.notes",
            "table constraint orders_note_fkey on public.orders depends on",
            "SELECT count(*) FROM pg_constraint WHERE conname = 'orders_note_fkey'",
            1,
        ),
        (
            "CREATE TABLE acme.base (x int); CREATE TABLE beta.heir () INHERITS (acme.base);
             INSERT INTO beta.heir VALUES (1), (2)",
            "table beta.heir depends on table acme.base",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'heir'",
            1,
        ),
    ];
    let count = |q: &'static str| {
        let db = &db;
        async move {
            db.pool()
                .get()
                .await
                .unwrap()
                .query_one(q, &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    for (i, (plant, named, probe, present)) in kinds.into_iter().enumerate() {
        for command in ["delete", "erase"] {
            cli.ok(&["create", "acme", "--domain", "acme.test"]);
            cli.ok(&["create", "beta"]);
            cli.ok(&[
                "run",
                "--schema",
                "acme",
                "--sql",
                "INSERT INTO notes (body) VALUES ('a'), ('b')",
            ]);
            sql(&db, plant).await;
            let args: &[&str] = if command == "delete" {
                &["delete", "acme", "--drop-schema"]
            } else {
                &["erase", "acme", "--json"]
            };
            let (out, err) = cli.fails(1, args);
            let done = if command == "delete" {
                "deleted"
            } else {
                "erased"
            };
            assert!(
                err.contains(named)
                    && err.contains("--cascade")
                    && err.contains(&format!("nothing was {done}")),
                "{i} {command}: {out}{err}"
            );
            assert_eq!(count(probe).await, present, "{i} {command}: destroyed");
            assert_eq!(
                count("SELECT count(*) FROM acme.notes").await,
                2,
                "{i} {command}"
            );
            let list = cli.ok(&["list", "--json"]);
            assert!(
                list.contains("\"schema\":\"acme\"") && list.contains("\"active\""),
                "{i} {command}: {list}"
            );
            // Asked for: as before.
            let mut cascade = args.to_vec();
            cascade.push("--cascade");
            let out = cli.ok(&cascade);
            if command == "erase" {
                let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
                assert_eq!(doc["erased"], "acme", "{out}");
            }
            assert_eq!(count(probe).await, 0, "{i} {command}: kept with --cascade");
            assert_eq!(
                count("SELECT count(*) FROM pg_namespace WHERE nspname = 'acme'").await,
                0
            );
            cli.ok(&["delete", "beta", "--drop-schema", "--cascade"]);
            sql(&db, "DROP TABLE IF EXISTS public.orders").await;
        }
    }
    // `--cascade` without dropping the schema means nothing: a usage error.
    cli.ok(&["create", "acme"]);
    cli.fails(2, &["delete", "acme", "--cascade"]);
}
