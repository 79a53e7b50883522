//! tenant-schemas-seaorm against a real PostgreSQL: SeaORM entities per tenant, the five
//! states, read-only however the transaction is split, connections held across a deletion
//! or rename, diverged column types, and SQL that changes the session.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, Set, Statement,
};
use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{
    scope, DropSchema, NewTenant, Tenancy, Tenant, TenantMigrations, TenantStatus,
};
use tenant_schemas_seaorm::{Error, SeaOrmRouter};
use tenant_schemas_sqlx::SqlxRouter;

fn new_note(body: &str) -> note::ActiveModel {
    note::ActiveModel {
        body: Set(body.to_owned()),
        ..Default::default()
    }
}

/// Two tenants with the same table, `public.notes` holding a row too: each tenant's entity
/// CRUD (insert, find, update, delete; no transaction) sees and changes only its own rows,
/// through the scope and by name, on a pool of one connection (shared by both tenants).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_work_per_tenant_and_see_only_their_rows() {
    let (db, _tenancy, s, orm) = setup("orm_crud_", 2, 1).await;
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.notes (id bigserial PRIMARY KEY, body text NOT NULL);
             INSERT INTO public.notes (body) VALUES ('PUBLIC')",
        )
        .await
        .unwrap();
    for schema in &s {
        // The fixtures' rows go first: by entity, without a transaction.
        let db = orm.connection_for_schema(schema).await.unwrap();
        note::Entity::delete_many().exec(&db).await.unwrap();
    }
    for round in 0..2 {
        for (i, schema) in s.iter().enumerate() {
            let db = scope::run_in_schema(schema.clone(), orm.connection())
                .await
                .unwrap();
            assert_eq!(db.schema(), schema);
            assert_eq!(seen_marker(&db).await.unwrap(), schema.as_str());
            for n in 0..=i {
                new_note(&format!("{schema} {round}.{n}"))
                    .insert(&db)
                    .await
                    .unwrap();
            }
        }
    }
    for (i, schema) in s.iter().enumerate() {
        let db = orm.connection_for_schema(schema).await.unwrap();
        let notes = note::Entity::find().all(&db).await.unwrap();
        assert_eq!(notes.len(), 2 * (i + 1), "{schema}: {notes:?}");
        assert!(
            notes.iter().all(|n| n.body.starts_with(schema.as_str())),
            "{schema}: {notes:?}"
        );
        // Update and delete, by entity.
        let mut first = notes[0].clone().into_active_model();
        first.body = Set(format!("{schema} updated"));
        first.update(&db).await.unwrap();
        let gone = note::Entity::delete_many()
            .filter(note::Column::Body.ne(format!("{schema} updated")))
            .exec(&db)
            .await
            .unwrap();
        assert_eq!(gone.rows_affected, (2 * (i + 1) - 1) as u64);
        let left = note::Entity::find().all(&db).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].body, format!("{schema} updated"));
    }
    let public: Vec<String> = db
        .pool()
        .get()
        .await
        .unwrap()
        .query("SELECT body FROM public.notes", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(public, ["PUBLIC"]);
    // Outside any scope: refused, never public.
    let err = orm.connection().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Driver(tenant_schemas_sqlx::Error::NoTenantInScope)
        ),
        "{err}"
    );
}

/// The five states, read from the registry whatever `Tenant` value is in scope: active reads
/// and writes; read-only reads, and its entity insert is refused (403) and lands nowhere;
/// maintenance, suspended and archived get no connection and no transaction (503, 403, 404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_five_states_through_seaorm() {
    let (db, tenancy, s, orm) = setup("orm_st_", 1, 2).await;
    let s = &s[0];
    let tenant = Tenant::new(s.clone()); // says active, whatever the registry says

    let conn = orm.connection_for_tenant(&tenant).await.unwrap();
    assert_eq!(conn.status(), TenantStatus::Active);
    new_note("active").insert(&conn).await.unwrap();
    drop(conn);

    tenancy.set_status(s, TenantStatus::ReadOnly).await.unwrap();
    let conn = scope::run(tenant.clone(), orm.connection()).await.unwrap();
    assert_eq!(conn.status(), TenantStatus::ReadOnly);
    assert_eq!(seen_marker(&conn).await.unwrap(), s.as_str());
    let err = conn.error(new_note("read-only").insert(&conn).await.unwrap_err());
    assert!(err.is_read_only(), "{err}");
    assert_eq!(err.status(), 403);
    let mut conn = conn;
    let tx = conn.begin().await.unwrap();
    let err = tx.error(new_note("read-only tx").insert(&tx).await.unwrap_err());
    assert!(err.is_read_only(), "{err}");
    drop(tx);
    drop(conn);
    let tx = orm.begin_for_tenant(&tenant).await.unwrap();
    assert_eq!(tx.status(), TenantStatus::ReadOnly);
    let err = tx.error(new_note("read-only tx").insert(&tx).await.unwrap_err());
    assert!(err.is_read_only(), "{err}");
    drop(tx);

    for (status, code) in [
        (TenantStatus::Maintenance, 503),
        (TenantStatus::Suspended, 403),
        (TenantStatus::Archived, 404),
    ] {
        tenancy.set_status(s, status).await.unwrap();
        let errors = [
            scope::run(tenant.clone(), orm.connection())
                .await
                .unwrap_err(),
            orm.connection_for_schema(s).await.unwrap_err(),
            orm.begin_for_tenant(&tenant).await.unwrap_err(),
            orm.begin_for(s).await.unwrap_err(),
        ];
        for err in errors {
            assert!(
                matches!(&err, Error::Driver(tenant_schemas_sqlx::Error::TenantNotServed { status: got, .. }) if *got == status),
                "{status}: {err}"
            );
            assert_eq!(err.status(), code, "{status}");
        }
    }

    tenancy.set_status(s, TenantStatus::Active).await.unwrap();
    let conn = orm.connection_for_tenant(&tenant).await.unwrap();
    new_note("active again").insert(&conn).await.unwrap();
    assert_eq!(notes_in(&db, s, "active").await, 1);
    assert_eq!(notes_in(&db, s, "active again").await, 1);
    assert_eq!(notes_in(&db, s, "read-only").await, 0);
    assert_eq!(notes_in(&db, s, "read-only tx").await, 0);
}

/// A read-only tenant: every way of splitting a writable transaction over several calls —
/// `BEGIN READ WRITE` / `START TRANSACTION READ WRITE` through `execute_unprepared`, `SET
/// TRANSACTION READ WRITE`, `SET SESSION CHARACTERISTICS …`, `set_config` of
/// `transaction_read_only` or `default_transaction_read_only`, on the connection and in its
/// transactions — is refused (read-only, 403), the insert after it fails, the `COMMIT` is
/// refused, and nothing lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_tenant_commits_nothing_however_the_transaction_is_split() {
    let (db, tenancy, s, orm) = setup("orm_ro_", 1, 2).await;
    let s = &s[0];
    tenancy.set_status(s, TenantStatus::ReadOnly).await.unwrap();
    let insert = "INSERT INTO notes (body) VALUES ('split')";
    let openers = [
        "BEGIN READ WRITE",
        "START TRANSACTION READ WRITE",
        "BEGIN",
        "SET TRANSACTION READ WRITE",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "SET default_transaction_read_only = off",
        "SELECT set_config('transaction_read_only', 'off', false)",
        "SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false)",
        "BEGIN READ WRITE; INSERT INTO notes (body) VALUES ('split'); COMMIT",
    ];
    for opener in openers {
        // On the connection, as three calls.
        let mut conn = orm.connection_for_schema(s).await.unwrap();
        let err = conn.error(conn.execute_unprepared(opener).await.unwrap_err());
        assert!(err.is_read_only(), "{opener}: {err}");
        assert_eq!(err.status(), 403, "{opener}");
        let stmt = Statement::from_string(DbBackend::Postgres, opener);
        let err = conn.error(conn.query_all(stmt).await.unwrap_err());
        assert!(err.is_read_only(), "{opener} as a statement: {err}");
        let err = conn.error(conn.execute_unprepared(insert).await.unwrap_err());
        assert!(err.is_read_only(), "insert after {opener}: {err}");
        assert!(conn.execute_unprepared("COMMIT").await.is_err());
        // In a transaction of the connection, and in one of the router.
        let tx = conn.begin().await.unwrap();
        let err = tx.error(tx.execute_unprepared(opener).await.unwrap_err());
        assert!(err.is_read_only(), "{opener} in a transaction: {err}");
        assert!(tx.execute_unprepared(insert).await.is_err());
        // Ends (the server rolls an aborted transaction back); nothing was written.
        let _ = tx.commit().await;
        let tx = orm.begin_for(s).await.unwrap();
        let err = tx.error(tx.execute_unprepared(opener).await.unwrap_err());
        assert!(
            err.is_read_only(),
            "{opener} in a router transaction: {err}"
        );
        assert!(tx.execute_unprepared(insert).await.is_err());
        let _ = tx.commit().await;
        // The connection is still the read-only tenant's.
        assert_eq!(seen_marker(&conn).await.unwrap(), s.as_str());
        assert!(conn.execute_unprepared(insert).await.is_err());
    }
    assert_eq!(notes_in(&db, s, "split").await, 0);
}

/// Transaction control is refused on a tenant connection of any state (use `begin()`); a
/// transaction commits, rolls back, and rolls back when dropped; `transaction(|tx| …)`
/// commits on `Ok` and rolls back on `Err`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_roll_back_and_refuse_transaction_control() {
    let (db, _tenancy, s, orm) = setup("orm_tx_", 1, 1).await;
    let s = &s[0];
    let mut conn = orm.connection_for_schema(s).await.unwrap();
    for sql in ["BEGIN", "COMMIT", "SAVEPOINT a", "ROLLBACK"] {
        let err = conn.error(conn.execute_unprepared(sql).await.unwrap_err());
        assert!(
            matches!(
                err,
                Error::Driver(tenant_schemas_sqlx::Error::Checkout(
                    tenant_schemas::Error::Refused { .. }
                ))
            ),
            "{sql}: {err}"
        );
    }
    let tx = conn.begin().await.unwrap();
    new_note("committed").insert(&tx).await.unwrap();
    assert!(tx.execute_unprepared("COMMIT").await.is_err());
    tx.commit().await.unwrap();
    let tx = conn.begin().await.unwrap();
    new_note("rolled back").insert(&tx).await.unwrap();
    tx.rollback().await.unwrap();
    let tx = conn.begin().await.unwrap();
    new_note("dropped").insert(&tx).await.unwrap();
    drop(tx);
    // The connection goes on, outside any transaction.
    new_note("after").insert(&conn).await.unwrap();
    let ok: Result<(), _> = conn
        .transaction::<_, (), DbErr>(|tx| {
            Box::pin(async move {
                new_note("closure ok").insert(tx).await?;
                Ok(())
            })
        })
        .await;
    ok.unwrap();
    let failed = conn
        .transaction::<_, (), DbErr>(|tx| {
            Box::pin(async move {
                new_note("closure err").insert(tx).await?;
                Err(DbErr::Custom("undo".into()))
            })
        })
        .await;
    assert!(failed.is_err());
    drop(conn); // the pool's one connection, for the router's transaction
    let in_scope = scope::run_in_schema(s.clone(), async {
        orm.transaction::<_, (), DbErr>(|tx| {
            Box::pin(async move {
                new_note("router closure").insert(tx).await?;
                Ok(())
            })
        })
        .await
    })
    .await;
    in_scope.unwrap();
    for (body, n) in [
        ("committed", 1),
        ("rolled back", 0),
        ("dropped", 0),
        ("after", 1),
        ("closure ok", 1),
        ("closure err", 0),
        ("router closure", 1),
    ] {
        assert_eq!(notes_in(&db, s, body).await, n, "{body}");
    }
}

/// What a SeaORM connection cut off by a deletion or rename can still do: nothing. Its read,
/// its insert and an unqualified `CREATE TABLE` fail, and `public` holds nothing new.
async fn reaches_nothing(db: &tenant_schemas::testing::TestDatabase, conn: &impl ConnectionTrait) {
    assert!(seen_marker(conn).await.is_err(), "a read ran");
    assert!(
        marker::ActiveModel {
            schema_name: Set("stray".into())
        }
        .insert(conn)
        .await
        .is_err(),
        "a write ran"
    );
    assert!(
        conn.execute_unprepared("CREATE TABLE stray (x int)")
            .await
            .is_err(),
        "DDL ran"
    );
    assert!(schemas_holding(db, "stray").await.is_empty());
    assert_eq!(public_markers(db).await, ["PUBLIC"]);
}

/// A SeaORM connection, and a transaction, held across `delete_tenant`: the deletion does
/// not wait for them past its grace, and they reach nothing afterwards; a new connection
/// fails closed (404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_held_across_a_deletion_reaches_nothing() {
    let (db, tenancy, s, orm) = setup("orm_del_", 2, 2).await;
    let held = orm.connection_for_schema(&s[0]).await.unwrap();
    assert_eq!(seen_marker(&held).await.unwrap(), "orm_del_0");
    let tx = orm.begin_for(&s[1]).await.unwrap();
    new_note("held").insert(&tx).await.unwrap();
    tenancy.delete_tenant(&s[0], DropSchema::Yes).await.unwrap();
    tenancy.delete_tenant(&s[1], DropSchema::No).await.unwrap();
    assert!(!schema_exists(&db, "orm_del_0").await);
    reaches_nothing(&db, &held).await;
    reaches_nothing(&db, &tx).await;
    assert!(tx.commit().await.is_err());
    assert_eq!(notes_in(&db, &s[1], "held").await, 0);
    drop(held);
    let err = orm.connection_for_schema(&s[0]).await.unwrap_err();
    assert!(err.is_schema_missing(), "{err}");
    assert_eq!(err.status(), 404);
}

/// A SeaORM connection held across `rename_schema` reaches nothing afterwards; the new name
/// serves the tenant, the old one fails closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_held_across_a_rename_reaches_nothing() {
    let (db, tenancy, s, orm) = setup("orm_ren_", 1, 2).await;
    let held = orm.connection_for_schema(&s[0]).await.unwrap();
    assert_eq!(seen_marker(&held).await.unwrap(), "orm_ren_0");
    let new = schema("orm_ren_new");
    tenancy.rename_schema(&s[0], &new).await.unwrap();
    reaches_nothing(&db, &held).await;
    drop(held);
    let conn = orm.connection_for_schema(&new).await.unwrap();
    assert_eq!(seen_marker(&conn).await.unwrap(), "orm_ren_0");
    let err = orm.connection_for_schema(&s[0]).await.unwrap_err();
    assert!(err.is_schema_missing(), "{err}");
}

/// SQL that moves the session (`SET search_path`, `RESET ALL`, `set_config`, `DISCARD ALL`)
/// does not move the next statement: on a connection it runs on a fresh checkout (a read-only
/// tenant's session read-only again), in a transaction on the tenant's path again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_that_moves_the_session_does_not_move_the_next_statement() {
    let (db, tenancy, s, orm) = setup("orm_mv_", 2, 1).await;
    tenancy
        .set_status(&s[1], TenantStatus::ReadOnly)
        .await
        .unwrap();
    let moves = [
        "SET search_path TO public",
        "SELECT set_config('search_path', 'public', false)",
        "RESET ALL",
        "DISCARD ALL",
    ];
    for sql in moves {
        for schema in &s {
            let mut conn = orm.connection_for_schema(schema).await.unwrap();
            assert_eq!(seen_marker(&conn).await.unwrap(), schema.as_str());
            conn.execute_unprepared(sql).await.unwrap();
            assert_eq!(
                seen_marker(&conn).await.unwrap(),
                schema.as_str(),
                "after {sql}"
            );
            if schema == &s[1] {
                let err = conn.error(new_note("moved").insert(&conn).await.unwrap_err());
                assert!(err.is_read_only(), "after {sql}: {err}");
            }
            if sql != "DISCARD ALL" {
                // DISCARD ALL cannot run in a transaction block.
                let tx = conn.begin().await.unwrap();
                tx.execute_unprepared(sql).await.unwrap();
                assert_eq!(
                    seen_marker(&tx).await.unwrap(),
                    schema.as_str(),
                    "{sql} in tx"
                );
                tx.commit().await.unwrap();
                assert_eq!(
                    seen_marker(&conn).await.unwrap(),
                    schema.as_str(),
                    "after tx"
                );
            }
        }
    }
    assert_eq!(notes_in(&db, &s[1], "moved").await, 0);
    assert_eq!(public_markers(&db).await, ["PUBLIC"]);
}

/// Tenants whose `items.code` is `int` in one and `text` in the other: the same SeaORM
/// statements (a result of the column's type, a parameter of it), alternating between them
/// on a pool of one connection, answer each tenant's own type (the sqlx checkout closes the
/// statements prepared for another schema).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_column_types_run_the_same_statements() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(
            TenantMigrations::new().with("items", "CREATE TABLE items (code int, name text)"),
        )
        .build()
        .await
        .unwrap();
    let (ints, texts) = (schema("orm_div_int"), schema("orm_div_text"));
    for s in [&ints, &texts] {
        tenancy
            .create_tenant(NewTenant::new(s.clone()))
            .await
            .unwrap();
    }
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO orm_div_int.items VALUES (7, 'int row');
             ALTER TABLE orm_div_text.items ALTER COLUMN code TYPE text;
             INSERT INTO orm_div_text.items VALUES ('a7', 'text row')",
        )
        .await
        .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(tenant_schemas_sqlx::connect_options(db.config()))
        .await
        .unwrap();
    let orm = SeaOrmRouter::new(
        SqlxRouter::builder(pool)
            .tenant_states(tenancy.tenant_states())
            .build(),
    );
    let result = Statement::from_string(
        DbBackend::Postgres,
        "SELECT code FROM items ORDER BY code LIMIT 1",
    );
    let parameter = |code: sea_orm::Value| {
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT name FROM items WHERE code = $1",
            [code],
        )
    };
    for _ in 0..3 {
        let conn = orm.connection_for_schema(&ints).await.unwrap();
        let row = conn.query_one(result.clone()).await.unwrap().unwrap();
        assert_eq!(row.try_get::<i32>("", "code").unwrap(), 7);
        let row = conn.query_one(parameter(7.into())).await.unwrap().unwrap();
        assert_eq!(row.try_get::<String>("", "name").unwrap(), "int row");
        drop(conn);
        let conn = orm.connection_for_schema(&texts).await.unwrap();
        let row = conn.query_one(result.clone()).await.unwrap().unwrap();
        assert_eq!(row.try_get::<String>("", "code").unwrap(), "a7");
        let row = conn
            .query_one(parameter("a7".into()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get::<String>("", "name").unwrap(), "text row");
        drop(conn);
        let tx = orm.begin_for(&ints).await.unwrap();
        let row = tx.query_one(result.clone()).await.unwrap().unwrap();
        assert_eq!(row.try_get::<i32>("", "code").unwrap(), 7);
        tx.commit().await.unwrap();
    }
}

/// Until `db` shows a backend waiting for an advisory lock: the statement that takes it has
/// been sent, and everything before it in its text has run.
async fn until_waiting_for_the_lock(db: &tenant_schemas::testing::TestDatabase) {
    tenant_schemas::testing::fixtures::until_counted(
        db,
        "SELECT count(*) FROM pg_catalog.pg_stat_activity \
         WHERE wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock(4242)%'",
        &[],
    )
    .await;
}

/// Sends SQL that moves the session and then waits for an advisory lock `holder` holds (a
/// transaction-level one: released when the statement's transaction ends),
/// drops the call mid-flight, releases the lock, and returns what `handle` reads next.
async fn cancel_a_moving_call(
    db: &tenant_schemas::testing::TestDatabase,
    holder: &tenant_schemas::deadpool_postgres::Object,
    handle: &impl ConnectionTrait,
) -> String {
    holder
        .execute("SELECT pg_advisory_lock(4242)", &[])
        .await
        .unwrap();
    {
        let call = handle
            .execute_unprepared("SET search_path TO public; SELECT pg_advisory_xact_lock(4242)");
        tokio::pin!(call);
        tokio::select! {
            answer = &mut call => panic!("the call answered: {answer:?}"),
            () = until_waiting_for_the_lock(db) => {}
        }
        // The call is dropped here, mid-flight.
    }
    holder
        .execute("SELECT pg_advisory_unlock(4242)", &[])
        .await
        .unwrap();
    seen_marker(handle).await.unwrap()
}

/// A call that moved the session and was cancelled before it answered (its future dropped
/// while the server still runs it) does not move the handle's next statement: on a
/// connection, the next statement runs on a fresh checkout; in a transaction, on the
/// tenant's path set again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_that_moved_the_session_does_not_move_the_next() {
    let (db, _tenancy, s, orm) = setup("orm_cancel_", 1, 2).await;
    let s = &s[0];
    let holder = db.pool().get().await.unwrap();
    let mut conn = orm.connection_for_schema(s).await.unwrap();
    assert_eq!(cancel_a_moving_call(&db, &holder, &conn).await, s.as_str());
    let tx = conn.begin().await.unwrap();
    assert_eq!(cancel_a_moving_call(&db, &holder, &tx).await, s.as_str());
    tx.rollback().await.unwrap();
    let tx = orm.begin_for(s).await.unwrap();
    assert_eq!(cancel_a_moving_call(&db, &holder, &tx).await, s.as_str());
    tx.rollback().await.unwrap();
}

/// `set_config` with a name the SQL text does not spell (`'default_transaction_' ||
/// 'read_only'`) leaves no statement after it writable: on the same connection, in a later
/// checkout, in a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computed_setting_name_leaves_a_read_only_tenant_read_only() {
    let (db, tenancy, s, orm) = setup("orm_ro2_", 1, 1).await;
    let s = &s[0];
    tenancy.set_status(s, TenantStatus::ReadOnly).await.unwrap();
    let insert = "INSERT INTO notes (body) VALUES ('computed')";
    for escape in [
        "SELECT set_config('default_transaction_' || 'read_only', 'off', false)",
        "SELECT set_config(reverse('ylno_daer_noitcasnart_tluafed'), 'off', false)",
    ] {
        let conn = orm.connection_for_schema(s).await.unwrap();
        let _ = conn.execute_unprepared(escape).await;
        let _ = conn.execute_unprepared(insert).await;
        let stmt = Statement::from_string(DbBackend::Postgres, insert);
        let _ = conn.execute(stmt).await;
        let _ = conn
            .execute_unprepared(&format!("{escape}; {insert}"))
            .await;
        drop(conn);
        let mut conn = orm.connection_for_schema(s).await.unwrap();
        let _ = conn.execute_unprepared(insert).await;
        let tx = conn.begin().await.unwrap();
        let _ = tx.execute_unprepared(escape).await;
        let _ = tx.execute_unprepared(insert).await;
        let _ = tx.commit().await;
        let _ = conn.execute_unprepared(insert).await;
    }
    assert_eq!(notes_in(&db, s, "computed").await, 0);
}

/// Role mode through SeaORM: a tenant's connection, transaction and entities run under its
/// role, on one pooled connection shared by both tenants: the other tenant's schema and the
/// registry are `permission denied`, its own rows are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_mode_denies_another_tenants_schema_through_seaorm() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(marker_and_notes())
        .tenant_roles(tenant_schemas::TenantRoles::new())
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "orm_role_", 2).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(tenant_schemas_sqlx::connect_options(db.config()))
        .await
        .unwrap();
    let orm = SeaOrmRouter::new(
        SqlxRouter::builder(pool)
            .tenant_states(tenancy.tenant_states())
            .build(),
    );
    let denied = |r: Result<sea_orm::ExecResult, DbErr>, what: &str| {
        let text = format!("{r:?}");
        assert!(
            r.is_err() && text.contains("42501"),
            "{what}: expected permission denied, got {text}"
        );
    };
    for (own, other) in [(&s[0], &s[1]), (&s[1], &s[0]), (&s[0], &s[1])] {
        let conn = orm.connection_for_schema(own).await.unwrap();
        assert_eq!(seen_marker(&conn).await.unwrap(), own.as_str());
        for sql in [
            format!("SELECT * FROM {}.marker", other.quoted()),
            format!("DELETE FROM {}.notes", other.quoted()),
            "SELECT * FROM public.tenant_schemas_tenants".to_owned(),
        ] {
            denied(conn.execute_unprepared(&sql).await, &sql);
        }
        note::Entity::insert(new_note("mine"))
            .exec(&conn)
            .await
            .unwrap();
        drop(conn);
        let tx = orm.begin_for(own).await.unwrap();
        denied(
            tx.execute_unprepared(&format!("SELECT * FROM {}.notes", other.quoted()))
                .await,
            "transaction",
        );
        drop(tx);
    }
}
