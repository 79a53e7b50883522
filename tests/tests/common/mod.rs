//! Shared set-up: a fresh database on the shared throwaway cluster, with the registry.
#![allow(dead_code, unreachable_pub)]

use tenant_schemas::testing::{TestCluster, TestDatabase};
use tenant_schemas::{Host, NewTenant, SchemaName, Tenancy, TenantMigrations};

pub const NOTES: &str = "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)";
pub const MARKER: &str = "CREATE TABLE marker (schema_name text NOT NULL)";

pub async fn database() -> TestDatabase {
    TestCluster::shared()
        .expect("test cluster")
        .create_database()
        .await
        .expect("test database")
}

pub async fn tenancy(db: &TestDatabase, migrations: TenantMigrations) -> Tenancy {
    Tenancy::builder(db.pool().clone())
        .migrations(migrations)
        .build()
        .await
        .expect("tenancy")
}

pub fn schema(name: &str) -> SchemaName {
    SchemaName::new(name).expect("valid schema name")
}

pub fn host(name: &str) -> Host {
    Host::parse(name).expect("valid host")
}

/// Creates tenants `prefix0..prefixN` with domain `<schema>.test` (`_` written `-`), each with a `marker` row
/// holding its schema name and `i` notes.
pub async fn marked_tenants(tenancy: &Tenancy, prefix: &str, n: usize) -> Vec<SchemaName> {
    let mut out = Vec::new();
    for i in 0..n {
        let s = schema(&format!("{prefix}{i}"));
        tenancy
            .create_tenant(
                NewTenant::new(s.clone())
                    .domain(host(&format!("{}{i}.test", prefix.replace('_', "-")))),
            )
            .await
            .expect("create tenant");
        let db = tenancy
            .router()
            .connection_for(&s)
            .await
            .expect("connection");
        db.execute("INSERT INTO marker VALUES ($1)", &[&s.as_str()])
            .await
            .expect("marker");
        for _ in 0..i {
            db.execute("INSERT INTO notes (body) VALUES ('x')", &[])
                .await
                .expect("note");
        }
        out.push(s);
    }
    out
}

pub fn marker_and_notes() -> TenantMigrations {
    TenantMigrations::new()
        .with("notes", NOTES)
        .with("marker", MARKER)
}
