//! Red team, SeaORM (on the sqlx router): settings a tenant's SQL gives a pooled session must
//! never reach the next checkout of that connection. Every test runs on a pool of ONE
//! connection. Tests marked `Broke` failed before the fix that came
//! with them; the others held when first tried.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tenant_schemas::SchemaName;
use tenant_schemas_seaorm::SeaOrmRouter;

async fn token(orm: &SeaOrmRouter, schema: &SchemaName) -> String {
    let conn = orm.connection_for_schema(schema).await.unwrap();
    let row = conn
        .query_one(Statement::from_string(
            DbBackend::Postgres,
            "SELECT coalesce(current_setting('app.token', true), '') || '/' \
             || current_setting('lock_timeout') AS t",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<String>("", "t").unwrap()
}

/// Settings through SeaORM's raw statements, including those the core's SQL reader
/// would miss (`UPDATE pg_settings`, a function that sets), are reset by the sqlx switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_settings_through_seaorm_are_reset() {
    let (_db, _tenancy, s, orm) = setup("soadv_held_", 2, 1).await;
    let (a, b) = (&s[0], &s[1]);
    let conn = orm.connection_for_schema(a).await.unwrap();
    conn.execute_unprepared(
        "CREATE FUNCTION login_as(t text) RETURNS text LANGUAGE sql \
         AS $$ SELECT set_config('app.token', t, false) $$",
    )
    .await
    .unwrap();
    drop(conn);
    for sql in [
        "SET app.token = 'a-secret'",
        "SELECT login_as('a-secret')",
        "UPDATE pg_settings SET setting = '1ms' WHERE name = 'lock_timeout'",
    ] {
        let conn = orm.connection_for_schema(a).await.unwrap();
        conn.execute_unprepared(sql).await.unwrap();
        drop(conn);
        assert_eq!(token(&orm, b).await, "/0", "{sql}");
        let conn = orm.connection_for_schema(a).await.unwrap();
        conn.execute(Statement::from_string(DbBackend::Postgres, sql))
            .await
            .unwrap();
        drop(conn);
        assert_eq!(token(&orm, b).await, "/0", "{sql} (prepared)");
    }
}
