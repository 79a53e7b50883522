//! Read-only holds however the transaction is split: through a read-only tenant's
//! `ConnectionScope` and `TenantTransaction`, in both search-path modes, each spelling that
//! could make a transaction writable — alone, followed by a write in the same call, or spread
//! over several calls — commits nothing, and the SQL that could is refused with
//! `Error::TenantReadOnly` before it is sent.

#![allow(clippy::unwrap_used)]

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{
    scope, ConnectionScope, Error, SchemaName, SearchPathMode, Tenancy, TenantStatus,
};

const WRITE: &str = "INSERT INTO notes (body) VALUES ('escaped')";

/// A read-only tenant (its state in the registry) over a one-connection pool, so whatever
/// one call leaves on the session the next call finds.
async fn read_only_tenant(mode: SearchPathMode) -> (TestDatabase, Tenancy, SchemaName) {
    let (db, tenancy, s, _pool) = marked_over_public("ro_esc_", 1, 1, mode).await;
    let s = s[0].clone();
    tenancy
        .set_status(&s, TenantStatus::ReadOnly)
        .await
        .unwrap();
    (db, tenancy, s)
}

/// A scope on `s` whose session has `standard_conforming_strings` off. In transaction mode a
/// session `SET` through the scope is refused (it would outlive the call's transaction), so
/// it is made as another client of the pool's only connection would, on a raw one.
async fn strings_off(tenancy: &Tenancy, s: &SchemaName, mode: SearchPathMode) -> ConnectionScope {
    const OFF: &str = "SET standard_conforming_strings = off";
    if mode == SearchPathMode::Transaction {
        let raw = tenancy.router().pool().get().await.unwrap();
        raw.batch_execute(OFF).await.unwrap();
        drop(raw);
        let db = tenancy.router().connection_for_schema(s).await.unwrap();
        let refused = db.batch_execute(OFF).await;
        assert!(
            matches!(refused, Err(Error::NotInTransactionMode { .. })),
            "{refused:?}"
        );
        db
    } else {
        let db = tenancy.router().connection_for_schema(s).await.unwrap();
        db.batch_execute(OFF).await.unwrap();
        db
    }
}

async fn escaped_rows(tenancy: &Tenancy, s: &SchemaName) -> i64 {
    tenancy
        .router()
        .connection_for_schema(s)
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM notes WHERE body = 'escaped'", &[])
        .await
        .unwrap()
        .get(0)
}

fn refused(outcome: &Result<(), Error>, step: &str) {
    assert!(
        matches!(outcome, Err(Error::TenantReadOnly { .. })),
        "`{step}` was not refused as read-only: {outcome:?}"
    );
    if let Err(e) = outcome {
        assert_eq!(e.status(), 403, "{e}");
    }
}

/// Runs `escape` (the SQL that would make the transaction writable) through the tenant's
/// scope, then a write and a `COMMIT` in later calls on the same connection, each through
/// `batch_execute`, `execute` and within one call together with the write: the escape is
/// refused, and no row lands.
async fn through_the_scope(mode: SearchPathMode, escape: &str) {
    let (_db, tenancy, s) = read_only_tenant(mode).await;
    scope::run_in_schema(s.clone(), async {
        // Spread over several calls on one checkout.
        let db = tenancy.connection().await.unwrap();
        refused(&db.batch_execute(escape).await, escape);
        let _ = db.execute(WRITE, &[]).await;
        let _ = db.batch_execute("COMMIT").await;
        drop(db);
        // The same, through the extended protocol.
        let db = tenancy.connection().await.unwrap();
        if !escape.contains(';') {
            refused(&db.execute(escape, &[]).await.map(|_| ()), escape);
            refused(&db.prepare(escape).await.map(|_| ()), escape);
        }
        let _ = db.execute(WRITE, &[]).await;
        let _ = db.batch_execute("COMMIT").await;
        drop(db);
        // In one call with the write.
        let db = tenancy.connection().await.unwrap();
        let one_call = format!("{escape}; {WRITE}; COMMIT");
        refused(&db.batch_execute(&one_call).await, &one_call);
        refused(&db.simple_query(&one_call).await.map(|_| ()), &one_call);
        // Each checkout is fresh: a write alone still fails.
        let err = db.execute(WRITE, &[]).await.unwrap_err();
        assert!(matches!(err, Error::TenantReadOnly { .. }), "{err}");
    })
    .await;
    assert_eq!(
        escaped_rows(&tenancy, &s).await,
        0,
        "`{escape}` let a write through"
    );
}

/// The same through a `TenantTransaction`: the escape is refused, a write then fails, and
/// committing commits nothing.
async fn through_a_transaction(mode: SearchPathMode, escape: &str) {
    let (_db, tenancy, s) = read_only_tenant(mode).await;
    let mut db = tenancy.router().connection_for_schema(&s).await.unwrap();
    let tx = db.transaction().await.unwrap();
    refused(&tx.batch_execute(escape).await, escape);
    if !escape.contains(';') {
        refused(&tx.execute(escape, &[]).await.map(|_| ()), escape);
        refused(&tx.prepare(escape).await.map(|_| ()), escape);
    }
    let err = tx.execute(WRITE, &[]).await.unwrap_err();
    assert!(matches!(err, Error::TenantReadOnly { .. }), "{err}");
    let _ = tx.commit().await;
    drop(db);
    assert_eq!(
        escaped_rows(&tenancy, &s).await,
        0,
        "`{escape}` let a write through"
    );
}

macro_rules! spelling {
    ($name:ident, $sql:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn scope_in_session_mode() {
                through_the_scope(SearchPathMode::Session, $sql).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn scope_in_transaction_mode() {
                through_the_scope(SearchPathMode::Transaction, $sql).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn transaction_in_session_mode() {
                through_a_transaction(SearchPathMode::Session, $sql).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn transaction_in_transaction_mode() {
                through_a_transaction(SearchPathMode::Transaction, $sql).await;
            }
        }
    };
}

spelling!(begin_read_write, "BEGIN READ WRITE");
spelling!(
    begin_then_set_transaction,
    "BEGIN; SET TRANSACTION READ WRITE"
);
spelling!(start_transaction_read_write, "START TRANSACTION READ WRITE");
spelling!(
    start_then_set_transaction,
    "START TRANSACTION; SET TRANSACTION READ WRITE"
);
spelling!(set_transaction_read_write, "SET TRANSACTION READ WRITE");
spelling!(
    set_session_characteristics,
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"
);
spelling!(
    set_transaction_read_only_off,
    "SET transaction_read_only = off"
);
spelling!(
    set_local_quoted_transaction_read_only,
    "SET LOCAL \"transaction_read_only\" TO off"
);
spelling!(
    set_default_transaction_read_only_off,
    "SET default_transaction_read_only = off"
);
spelling!(
    set_config_transaction_read_only,
    "SELECT set_config('transaction_read_only', 'off', false)"
);
spelling!(
    set_config_default_transaction_read_only,
    "SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false)"
);
spelling!(reset_transaction_read_only, "RESET transaction_read_only");
spelling!(
    reset_default_transaction_read_only,
    "RESET default_transaction_read_only"
);
spelling!(
    do_block_that_commits,
    "DO $$ BEGIN SET default_transaction_read_only = off; COMMIT; \
     INSERT INTO notes (body) VALUES ('escaped'); END $$"
);
spelling!(
    unicode_escaped_name,
    "SET U&\"transaction\\005fread_only\" = off"
);

/// `SET standard_conforming_strings = off` (harmless in itself, so not refused) makes
/// PostgreSQL read `\'` in a plain string as an escaped quote: in a later call `'a\''` ends
/// the string for PostgreSQL, while the lexer reads on through a `COMMIT`, a
/// `BEGIN READ WRITE`, a write and a `COMMIT`. The escape must be refused and nothing
/// committed, in both search-path modes.
async fn backslash_escapes_hide_nothing(mode: SearchPathMode) {
    let (_db, tenancy, s) = read_only_tenant(mode).await;
    let db = strings_off(&tenancy, &s, mode).await;
    let hidden = format!(
        r"SELECT 'a\''; COMMIT; BEGIN READ WRITE; INSERT INTO {s}.notes (body) VALUES ($$escaped$$); COMMIT; SELECT '1'"
    );
    let outcome = db.batch_execute(&hidden).await;
    drop(db);
    assert_eq!(
        escaped_rows(&tenancy, &s).await,
        0,
        "a write hidden by backslash escapes committed ({outcome:?})"
    );
    refused(&outcome, &hidden);
}

/// The same through a read-only tenant's `TenantTransaction`: a hidden `COMMIT` would end it,
/// and what follows would begin a writable transaction of its own.
async fn backslash_escapes_hide_nothing_in_a_transaction(mode: SearchPathMode) {
    let (_db, tenancy, s) = read_only_tenant(mode).await;
    let mut db = strings_off(&tenancy, &s, mode).await;
    let tx = db.transaction().await.unwrap();
    let hidden = format!(
        r"SELECT 'a\''; COMMIT; BEGIN READ WRITE; INSERT INTO {s}.notes (body) VALUES ($$escaped$$); COMMIT; SELECT '1'"
    );
    let outcome = tx.batch_execute(&hidden).await;
    drop(tx);
    drop(db);
    assert_eq!(
        escaped_rows(&tenancy, &s).await,
        0,
        "a write hidden by backslash escapes committed ({outcome:?})"
    );
    refused(&outcome, &hidden);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backslash_escapes_hide_no_write_in_a_transaction() {
    backslash_escapes_hide_nothing_in_a_transaction(SearchPathMode::Session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backslash_escapes_hide_no_write_in_a_transaction_in_transaction_mode() {
    backslash_escapes_hide_nothing_in_a_transaction(SearchPathMode::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backslash_escapes_hide_no_write_in_session_mode() {
    backslash_escapes_hide_nothing(SearchPathMode::Session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backslash_escapes_hide_no_write_in_transaction_mode() {
    backslash_escapes_hide_nothing(SearchPathMode::Transaction).await;
}

/// The raw client of a read-only tenant's scope is refused: what runs on it is out of sight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_client_of_a_read_only_tenant_is_refused() {
    let (_db, tenancy, s) = read_only_tenant(SearchPathMode::Session).await;
    let db = tenancy.router().connection_for_schema(&s).await.unwrap();
    let err = db.client().await.unwrap_err();
    assert!(matches!(err, Error::TenantReadOnly { .. }), "{err}");
    // Reads go on.
    assert_eq!(marker_of(&db).await, "ro_esc_0");
}

/// PostgreSQL lets a `READ ONLY` transaction write large objects (`pg_largeobject`): a
/// read-only tenant calling a large-object writer commits a write, through the scope and a
/// `TenantTransaction`, in both modes. Each spelling is refused, and no large object lands.
async fn large_object_writers_write_nothing(mode: SearchPathMode) {
    let (db, tenancy, s) = read_only_tenant(mode).await;
    let admin = db.pool().get().await.unwrap();
    let oid: u32 = admin
        .query_one("SELECT pg_catalog.lo_from_bytea(0, 'kept')", &[])
        .await
        .unwrap()
        .get(0);
    let large_objects = || async {
        let (count, data): (i64, Option<Vec<u8>>) = {
            let row = admin
                .query_one(
                    "SELECT (SELECT count(*) FROM pg_catalog.pg_largeobject_metadata),                      CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata \
                     WHERE oid = $1) THEN pg_catalog.lo_get($1) END",
                    &[&oid],
                )
                .await
                .unwrap();
            (row.get(0), row.get(1))
        };
        (count, data)
    };
    let mut landed = Vec::new();
    for sql in [
        "SELECT lo_from_bytea(0, 'x')".to_owned(),
        "SELECT pg_catalog.lo_create(0)".to_owned(),
        "SELECT lo_creat(-1)".to_owned(),
        format!("SELECT lo_put({oid}, 0, 'changed')"),
        format!("SELECT lo_unlink({oid})"),
        format!("SELECT \"lo_unlink\"({oid})"),
        format!("SELECT U&\"lo\\005funlink\"({oid})"),
    ] {
        let scope = tenancy.router().connection_for_schema(&s).await.unwrap();
        let outcome = scope.batch_execute(&sql).await;
        let by_query = scope.query(sql.as_str(), &[]).await.map(|_| ());
        drop(scope);
        let mut scope = tenancy.router().connection_for_schema(&s).await.unwrap();
        let tx = scope.transaction().await.unwrap();
        let in_tx = tx.batch_execute(&sql).await;
        let _ = tx.commit().await;
        drop(scope);
        let now = large_objects().await;
        for (door, outcome) in [
            ("batch_execute", outcome),
            ("query", by_query),
            ("transaction", in_tx),
        ] {
            if !matches!(outcome, Err(Error::TenantReadOnly { .. })) {
                landed.push((
                    format!("{sql} through {door} not refused: {outcome:?}"),
                    now.clone(),
                ));
            }
        }
        if now != (1, Some(b"kept".to_vec())) {
            landed.push((sql.clone(), now));
        }
    }
    assert!(landed.is_empty(), "{landed:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_object_writers_write_nothing_in_session_mode() {
    large_object_writers_write_nothing(SearchPathMode::Session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_object_writers_write_nothing_in_transaction_mode() {
    large_object_writers_write_nothing(SearchPathMode::Transaction).await;
}

/// A setting's name that the SQL text does not spell (`'default_transaction_' ||
/// 'read_only'`, `reverse(…)`) names it all the same: `set_config` with a computed name
/// must not leave the session writable for the statements after it, on the same checkout
/// or the next one.
async fn computed_setting_names_escape_nothing(mode: SearchPathMode) {
    for escape in [
        "SELECT set_config('default_transaction_' || 'read_only', 'off', false)",
        "SELECT set_config(reverse('ylno_daer_noitcasnart_tluafed'), 'off', false)",
    ] {
        let (_db, tenancy, s) = read_only_tenant(mode).await;
        scope::run_in_schema(s.clone(), async {
            let db = tenancy.connection().await.unwrap();
            let _ = db.batch_execute(escape).await;
            let _ = db.execute(WRITE, &[]).await;
            let _ = db.batch_execute(WRITE).await;
            drop(db);
            let db = tenancy.connection().await.unwrap();
            let _ = db.execute(WRITE, &[]).await;
            let _ = db.batch_execute(&format!("{escape}; {WRITE}")).await;
            let _ = db.batch_execute(WRITE).await;
        })
        .await;
        assert_eq!(
            escaped_rows(&tenancy, &s).await,
            0,
            "`{escape}` let a write through"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computed_setting_names_escape_nothing_in_session_mode() {
    computed_setting_names_escape_nothing(SearchPathMode::Session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computed_setting_names_escape_nothing_in_transaction_mode() {
    computed_setting_names_escape_nothing(SearchPathMode::Transaction).await;
}

/// Session mode over one connection, a writer's and a read-only tenant's checkouts in turn,
/// each statement already cached for its schema (so its switch travels in the statement's
/// own message): the writer's write, in a transaction that begins under the read-only
/// default the other tenant's session left, still lands (switched again on its own), and
/// the read-only tenant's, in one that begins under the writer's, never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_and_read_only_tenants_take_turns_on_one_connection() {
    let (db, tenancy, s, _pool) =
        marked_over_public("ro_turn_", 2, 1, SearchPathMode::Session).await;
    let (writer, reader) = (&s[0], &s[1]);
    tenancy
        .set_status(reader, TenantStatus::ReadOnly)
        .await
        .unwrap();
    let router = tenancy.router();
    let mut written = 0;
    for round in 0..4 {
        let conn = router.connection_for_schema(writer).await.unwrap();
        conn.execute(WRITE, &[])
            .await
            .unwrap_or_else(|e| panic!("round {round}: the writer after a read-only tenant: {e}"));
        written += 1;
        drop(conn);
        let conn = router.connection_for_schema(reader).await.unwrap();
        let marker: String = conn
            .query_one("SELECT schema_name FROM marker", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(marker, reader.as_str());
        assert!(
            conn.execute(WRITE, &[]).await.is_err(),
            "round {round}: the read-only tenant wrote"
        );
        drop(conn);
    }
    assert_eq!(notes_with_body(&db, writer, "escaped").await, written);
    assert_eq!(notes_with_body(&db, reader, "escaped").await, 0);
    let stats = router.stats();
    assert!(stats.switches >= 8, "{stats:?}");
}

/// A function that sets the session's read-only default off, where the SQL reader sees a
/// plain `SELECT` (`set_config(…, false)` in its body).
const UNLOCK: &str = "CREATE OR REPLACE FUNCTION public.unlock_session() RETURNS text \
     LANGUAGE sql AS $$ SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false) $$";

/// After a read-only tenant called a function that set the session's read-only default off,
/// each way of running SQL through its scope — an extended-protocol statement, a batch, a
/// simple query — still writes nothing: each statement makes its own transaction read-only.
/// And a read-only tenant's `simple_query` answers as a writer's does (the guard's own
/// message is not among its messages).
async fn an_unlocking_function_opens_nothing(mode: SearchPathMode) {
    let (db, tenancy, s) = read_only_tenant(mode).await;
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(UNLOCK)
        .await
        .unwrap();
    let conn = tenancy.router().connection_for_schema(&s).await.unwrap();
    let unlocked: String = conn
        .query_one("SELECT public.unlock_session()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(unlocked, "off");
    let extended = conn.execute(WRITE, &[]).await.map(|_| ());
    let batch = conn.batch_execute(WRITE).await;
    let simple = conn.simple_query(WRITE).await.map(|_| ());
    for (outcome, how) in [
        (&extended, "execute"),
        (&batch, "batch_execute"),
        (&simple, "simple_query"),
    ] {
        assert!(
            outcome.is_err(),
            "{how} after the unlocking function: {outcome:?}"
        );
    }
    drop(conn);
    assert_eq!(escaped_rows(&tenancy, &s).await, 0);
    // The next checkout (found on the path, no switch in session mode) too.
    let next = tenancy.router().connection_for_schema(&s).await.unwrap();
    assert!(next.execute(WRITE, &[]).await.is_err());
    drop(next);
    assert_eq!(escaped_rows(&tenancy, &s).await, 0);

    // The same simple query's messages, read-only and then writable.
    let read_only = simple_messages(&tenancy, &s).await;
    tenancy.set_status(&s, TenantStatus::Active).await.unwrap();
    let writable = simple_messages(&tenancy, &s).await;
    assert_eq!(read_only, writable);
    assert!(
        read_only.contains(&format!("row Some({:?})", s.as_str())),
        "{read_only:?}"
    );
}

/// What a checkout of `s` answers to a simple query of two statements, message by message.
async fn simple_messages(tenancy: &Tenancy, s: &SchemaName) -> Vec<String> {
    use tenant_schemas::tokio_postgres::SimpleQueryMessage;
    const TWO: &str = "SELECT schema_name FROM marker; SELECT 1 WHERE false";
    let conn = tenancy.router().connection_for_schema(s).await.unwrap();
    conn.simple_query(TWO)
        .await
        .unwrap()
        .iter()
        .map(|m| match m {
            SimpleQueryMessage::Row(r) => format!("row {:?}", r.get(0)),
            SimpleQueryMessage::CommandComplete(n) => format!("complete {n}"),
            _ => "description".to_owned(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlocking_function_opens_nothing_in_session_mode() {
    an_unlocking_function_opens_nothing(SearchPathMode::Session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlocking_function_opens_nothing_in_transaction_mode() {
    an_unlocking_function_opens_nothing(SearchPathMode::Transaction).await;
}
