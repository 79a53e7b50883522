//! Role mode through sqlx: a tenant's connection and transaction run under the tenant's
//! role in both modes, so another tenant's schema and the registry are `permission denied`,
//! on one pooled connection reused by every checkout; the shared `public` schema by name runs
//! as the login role.

#![allow(clippy::unwrap_used)]

use sqlx::postgres::PgPoolOptions;
use sqlx::Executor;
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{scope, SchemaName, SearchPathMode, Tenancy, TenantRoles};
use tenant_schemas_sqlx::{connect_options, SqlxRouter};

fn denied(result: Result<impl std::fmt::Debug, sqlx::Error>, what: &str) {
    match result {
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42501") => {}
        other => panic!("{what}: expected permission denied, got {other:?}"),
    }
}

fn attempts(other: &SchemaName) -> Vec<String> {
    let o = other.quoted();
    vec![
        format!("SELECT schema_name FROM {o}.marker"),
        format!("INSERT INTO {o}.notes (body) VALUES ('stolen')"),
        format!("DELETE FROM {o}.notes"),
        format!("CREATE TABLE {o}.planted (x int)"),
        "SELECT * FROM public.tenant_schemas_tenants".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_runs_each_tenant_under_its_role_in_both_modes() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(marker_and_notes())
        .tenant_roles(TenantRoles::new())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "sx_role_", 2).await;
    let (a, b) = (&s[0], &s[1]);
    for mode in [SearchPathMode::Session, SearchPathMode::Transaction] {
        // One connection: every checkout reuses the last one's session.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(connect_options(db.config()))
            .await
            .unwrap();
        let router = SqlxRouter::builder(pool)
            .tenant_states(tenancy.tenant_states())
            .mode(mode)
            .build();
        for (own, other) in [(a, b), (b, a), (a, b)] {
            for sql in attempts(other) {
                let mut tx = router.begin_for(own).await.unwrap();
                denied(
                    tx.fetch_all(sql.as_str()).await,
                    &format!("{mode:?} tx {sql}"),
                );
                drop(tx);
                if mode == SearchPathMode::Session {
                    let mut conn = router.connection_for_schema(own).await.unwrap();
                    denied(
                        conn.fetch_all(sql.as_str()).await,
                        &format!("{mode:?} conn {sql}"),
                    );
                }
            }
            let mut tx = router.begin_for(own).await.unwrap();
            let seen: String = sqlx::query_scalar("SELECT schema_name FROM marker")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            assert_eq!(seen, own.as_str());
            tx.commit().await.unwrap();
        }
        // The tenant in scope, as a handler or job reaches it.
        let in_scope = scope::run_in_schema(b.clone(), async {
            let mut tx = router.begin().await.unwrap();
            tx.fetch_all(format!("SELECT * FROM {}.marker", a.quoted()).as_str())
                .await
                .map(drop)
        })
        .await;
        denied(in_scope, &format!("{mode:?} in scope"));
        // The shared public schema by name runs as the login role, on the same connection.
        let mut tx = router.begin_for(&SchemaName::public()).await.unwrap();
        let (user, session): (String, String) =
            sqlx::query_as("SELECT current_user::text, session_user::text")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(user, session, "{mode:?}");
        tx.commit().await.unwrap();
    }
}
