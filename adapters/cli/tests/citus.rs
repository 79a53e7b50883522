//! `tenant-schemas` on a Citus coordinator: `create` makes distributed schemas, `list`
//! shows each tenant's node, `move` moves one to another worker. Against a real Citus
//! cluster (`TestCitusCluster`); `TENANT_SCHEMAS_SKIP_CITUS=1` skips it where Citus is not
//! installed.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use tenant_schemas::testing::TestCitusCluster;

fn run(url: &str, dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tenant-schemas"))
        .args(args)
        .args(["--migrations", dir.to_str().unwrap()])
        .env("DATABASE_URL", url)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_and_move_on_citus() {
    if TestCitusCluster::skip_requested() {
        eprintln!("Citus tests skipped (TENANT_SCHEMAS_SKIP_CITUS is set)");
        return;
    }
    let cluster = TestCitusCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let db = cluster.create_database().await.unwrap();
    let url = cluster.coordinator().url(db.name()).unwrap();
    let dir = std::env::temp_dir().join(format!("ts-cli-citus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("V1__notes.sql"),
        "CREATE TABLE notes (id bigserial PRIMARY KEY, body text)",
    )
    .unwrap();

    run(&url, &dir, &["create", "acme", "--domain", "acme.test"]);
    run(&url, &dir, &["create", "globex"]);
    let list = run(&url, &dir, &["list"]);
    assert!(list.lines().next().unwrap().contains("NODE"), "{list}");
    let node_of = |schema: &str| -> String {
        let json: serde_json::Value =
            serde_json::from_str(&run(&url, &dir, &["list", "--json"])).unwrap();
        json.as_array()
            .unwrap()
            .iter()
            .find(|t| t["schema"] == schema)
            .unwrap()["node"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let from = node_of("acme");
    let to = cluster
        .worker_nodes()
        .into_iter()
        .map(|n| n.to_string())
        .find(|n| *n != from)
        .unwrap();
    let moved = run(&url, &dir, &["move", "acme", "--to", &to]);
    assert!(moved.contains(&format!("{from} -> {to}")), "{moved}");
    assert_eq!(node_of("acme"), to);
    let again = run(&url, &dir, &["move", "acme", "--to", &to]);
    assert!(again.contains("already"), "{again}");
    let _ = std::fs::remove_dir_all(&dir);
}
