//! An adversary's attempts on role mode through sqlx: what one tenant's code leaves on a
//! pooled session must not hand the next tenant anything read under the first one's role.

#![allow(clippy::unwrap_used)]

use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, Row};
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{SearchPathMode, Tenancy, TenantRoles};
use tenant_schemas_sqlx::{connect_options, SqlxRouter};

/// A cursor declared `WITH HOLD` outlives its transaction with the rows it read: left on a
/// pooled session by one tenant (in its own transaction or through the connection), the
/// next tenant's checkout must not find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_held_open_by_one_tenant_does_not_reach_the_next() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(marker_and_notes())
        .tenant_roles(TenantRoles::new())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "sx_advc_", 2).await;
    let (a, b) = (&s[0], &s[1]);
    // One connection: every checkout reuses the last one's session.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(connect_options(db.config()))
        .await
        .unwrap();
    let router = SqlxRouter::builder(pool)
        .tenant_states(tenancy.tenant_states())
        .mode(SearchPathMode::Session)
        .build();
    for in_transaction in [false, true] {
        let declare = "DECLARE held CURSOR WITH HOLD FOR SELECT schema_name FROM marker";
        if in_transaction {
            let mut tx = router.begin_for(b).await.unwrap();
            tx.execute(declare).await.unwrap();
            tx.commit().await.unwrap();
        } else {
            let mut conn = router.connection_for_schema(b).await.unwrap();
            conn.execute(declare).await.unwrap();
        }
        let mut conn = router.connection_for_schema(a).await.unwrap();
        if let Ok(rows) = conn.fetch_all("FETCH ALL FROM held").await {
            let seen: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            assert!(
                !seen.iter().any(|s| s == b.as_str()),
                "in transaction {in_transaction}: {a} fetched {b}'s rows {seen:?}"
            );
        }
        drop(conn);
    }
}
