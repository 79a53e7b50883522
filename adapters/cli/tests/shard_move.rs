//! `tenant-schemas move SCHEMA --to-shard NAME` end to end, on a cluster of its own with
//! `wal_level = logical` (the shared test cluster runs without it).

#![allow(clippy::unwrap_used)]

mod common;

use common::{sql, Cli};
use tenant_schemas::testing::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_to_shard_moves_the_tenant_and_says_so() {
    let cluster = TestCluster::start_with_settings(&["wal_level=logical"]).unwrap();
    let (main, eu) = (
        cluster.create_database().await.unwrap(),
        cluster.create_database().await.unwrap(),
    );
    let Some(main_url) = cluster.url(main.name()) else {
        eprintln!("skipped: an external server (TENANT_SCHEMAS_TEST_DATABASE_URL) is not started with wal_level = logical by the harness");
        return;
    };
    let eu_url = cluster.url(eu.name()).unwrap();
    let dir = std::env::temp_dir().join(format!("ts-cli-{}-move", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    common::write(
        &dir.join("tenant"),
        "V1__notes.sql",
        "CREATE TABLE notes (id bigserial PRIMARY KEY, body text)",
    );
    std::fs::create_dir_all(dir.join("shared")).unwrap();
    let cli = Cli { url: main_url, dir };
    let shard = format!("eu={eu_url}");
    cli.ok(&["migrate", "--shard", &shard]);
    cli.ok(&["create", "acme", "--shard", &shard, "--in-shard", "default"]);
    sql(
        &main,
        "INSERT INTO acme.notes (body) SELECT 'n' || i FROM generate_series(1, 25) i",
    )
    .await;

    let out = cli.ok(&[
        "move",
        "acme",
        "--to-shard",
        "eu",
        "--shard",
        &shard,
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["moved"], true, "{out}");
    assert_eq!(report["from"], "default", "{out}");
    assert_eq!(report["to"], "eu", "{out}");
    let notes = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "notes")
        .unwrap();
    assert_eq!(notes["rows"], 25, "{out}");
    let count = |db: &tenant_schemas::testing::TestDatabase| {
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
    assert_eq!((count(&main).await, count(&eu).await), (0, 1));
    let out = cli.ok(&["list", "--shard", &shard]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("acme") && l.contains(" eu ")),
        "{out}"
    );

    // Already there: exit 0, nothing moved.
    let out = cli.ok(&["move", "acme", "--to-shard", "eu", "--shard", &shard]);
    assert!(out.contains("already"), "{out}");
    // An unconfigured shard: exit 3 (configuration).
    let (_, err) = cli.fails(3, &["move", "acme", "--to-shard", "us"]);
    assert!(err.contains("us"), "{err}");
    // A refusal (a schema of that name on the target): exit 1.
    sql(&main, "CREATE SCHEMA acme").await;
    let (_, err) = cli.fails(
        1,
        &["move", "acme", "--to-shard", "default", "--shard", &shard],
    );
    assert!(err.contains("exists on the target"), "{err}");
    // Neither --to nor --to-shard: usage.
    cli.fails(2, &["move", "acme"]);
}
