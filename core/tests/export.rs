//! A tenant's data as one file: export, restore under a new name beside the original
//! (catalog and rows identical), and restores that fail leaving nothing behind.

#![allow(clippy::unwrap_used)]

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::testing::TestDatabase;
use tenant_schemas::{Error, NewTenant, SchemaName, Tenancy, TenantMigrations, TenantStatus};

fn migrations() -> TenantMigrations {
    TenantMigrations::new()
        .with(
            "notes",
            "CREATE TABLE notes (id bigserial PRIMARY KEY, body text, tags text[], data jsonb,
                                 raw bytea, n numeric, at timestamptz)",
        )
        .with(
            "items",
            "CREATE TABLE items (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL,
                                 shout text GENERATED ALWAYS AS (upper(name)) STORED,
                                 note_id bigint REFERENCES notes (id))",
        )
        .with(
            "more",
            "CREATE TABLE \"Odd \"\"name\"\"\" (x int); CREATE TABLE empty_one (x int);
             CREATE SEQUENCE counter",
        )
}

async fn tenancy(db: &TestDatabase, migrations: TenantMigrations) -> Tenancy {
    Tenancy::builder(db.pool().clone())
        .migrations(migrations)
        .build()
        .await
        .unwrap()
}

/// Every table's rows as text, and the catalog's columns, of `schema`.
async fn contents(db: &TestDatabase, schema: &str) -> (Vec<String>, Vec<String>) {
    let client = db.pool().get().await.unwrap();
    // Defaults are shown qualified unless on the path: the same path for both schemas.
    client
        .batch_execute("SET search_path TO public")
        .await
        .unwrap();
    let columns: Vec<String> = client
        .query(
            "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
                    || ' ' || coalesce(column_default, '') || ' ' || is_generated || ' ' || is_identity
             FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0).replace(&format!("{schema}."), "S."))
        .collect();
    let mut rows = Vec::new();
    for table in ["notes", "items", "\"Odd \"\"name\"\"\"", "empty_one"] {
        for r in client
            .query(
                &format!("SELECT t::text FROM \"{schema}\".{table} t ORDER BY 1"),
                &[],
            )
            .await
            .unwrap()
        {
            rows.push(format!("{table}: {}", r.get::<_, String>(0)));
        }
    }
    let next: i64 = client
        .query_one(&format!("SELECT nextval('\"{schema}\".counter')"), &[])
        .await
        .unwrap()
        .get(0);
    rows.push(format!("counter: {next}"));
    (columns, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_restored_under_a_new_name_is_identical() {
    let db = database().await;
    let t = tenancy(&db, migrations()).await;
    let acme = schema("acme");
    t.create_tenant(
        NewTenant::new(acme.clone())
            .name("Acme \"Inc.\"\nLtd")
            .domain(host("acme.test")),
    )
    .await
    .unwrap();
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "SET search_path TO acme;
             INSERT INTO notes (body, tags, data, raw, n, at) VALUES
               (E'line one\\nline two\\ttab \\\\ backslash', '{a,\"b c\"}', '{\"k\": [1, null]}',
                '\\x00ff10', 12.5, '2026-12-03 12:00+00'),
               (NULL, NULL, NULL, NULL, NULL, NULL),
               ('\\.', '{}', '\"\\\\.\"', '', -0.0001, 'infinity'),
               ('ünïcödé 🚀', '{}', '[]', '\\x5c2e', 1e20, '1999-01-01');
             INSERT INTO notes (id, body) VALUES (100, 'explicit id');
             INSERT INTO items (name, note_id) VALUES ('first', 1), ('second', NULL);
             INSERT INTO \"Odd \"\"name\"\"\" VALUES (1), (NULL);
             SELECT nextval('counter'), nextval('counter'), nextval('counter');",
        )
        .await
        .unwrap();

    let mut file = Vec::new();
    let tables = t.export_tenant(&acme, &mut file).await.unwrap();
    let notes = tables.iter().find(|c| c.table == "notes").unwrap();
    assert_eq!(notes.rows, 5);
    assert!(file.starts_with(b"tenant-schemas export 1\ntenant {"));

    let copy = schema("acme_restored");
    let record = t
        .restore_tenant(
            &mut file.as_slice(),
            NewTenant::new(copy.clone()).domain(host("restored.test")),
        )
        .await
        .unwrap();
    assert_eq!(record.status, TenantStatus::Active);
    assert_eq!(record.version, 3);
    assert_eq!(
        contents(&db, "acme_restored").await,
        contents(&db, "acme").await
    );
    // Served, resolvable, and its sequences continue where the original's are.
    let restored = t.resolve(&host("restored.test")).await.unwrap();
    assert_eq!(restored.schema(), &copy);
    let next_note = |s: SchemaName| {
        let t = t.clone();
        async move {
            let db = t.router().connection_for_schema(&s).await.unwrap();
            db.query_one(
                "INSERT INTO notes (body) VALUES ('after') RETURNING id",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    assert_eq!(next_note(copy.clone()).await, next_note(acme.clone()).await);
    // The original is untouched.
    assert_eq!(
        t.registry().get(&acme).await.unwrap().status,
        TenantStatus::Active
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_that_fails_leaves_nothing() {
    let db = database().await;
    let t = tenancy(&db, migrations()).await;
    let acme = schema("acme");
    t.create_tenant(NewTenant::new(acme.clone())).await.unwrap();
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO acme.notes (body) SELECT 'row ' || g FROM generate_series(1, 50) g",
        )
        .await
        .unwrap();
    let mut file = Vec::new();
    t.export_tenant(&acme, &mut file).await.unwrap();
    let text = String::from_utf8(file.clone()).unwrap();

    let try_restore = |bytes: Vec<u8>, name: &'static str| {
        let t = t.clone();
        async move {
            t.restore_tenant(&mut bytes.as_slice(), NewTenant::new(schema(name)))
                .await
        }
    };
    // Cut short in the middle of a table.
    let cut = file[..file.len() / 2].to_vec();
    let err = try_restore(cut, "cut").await.unwrap_err();
    assert!(matches!(&err, Error::TenantFile { .. }), "{err:?}");
    // Rewrites the line of the note `row 1`.
    let with_row_1 = |f: &dyn Fn(&str) -> String| {
        text.lines()
            .map(|l| {
                if l.starts_with("1\trow 1\t") {
                    f(l)
                } else {
                    l.to_owned()
                }
            })
            .map(|l| l + "\n")
            .collect::<String>()
    };
    // A row too many for what the `end` line says.
    let extra = with_row_1(&|l| format!("{l}\n51\trow 51\t\\N\t\\N\t\\N\t\\N\t\\N"));
    assert_ne!(extra, text);
    let err = try_restore(extra.into_bytes(), "extra").await.unwrap_err();
    assert!(err.to_string().contains("rows"), "{err}");
    // Not an export.
    let err = try_restore(b"hello\n".to_vec(), "junk").await.unwrap_err();
    assert!(err.to_string().contains("format 1"), "{err}");
    // A row that does not fit its table.
    let bad = with_row_1(&|l| format!("{l}\tsurplus"));
    assert_ne!(bad, text);
    let err = try_restore(bad.into_bytes(), "misfit").await.unwrap_err();
    assert!(
        matches!(&err, Error::TenantFile { .. } | Error::Database { .. }),
        "{err:?}"
    );
    for name in ["cut", "extra", "junk", "misfit"] {
        assert!(!schema_exists(&db, name).await, "{name}: a schema was left");
        assert!(
            !is_registered(&db, name).await,
            "{name}: a registry row was left"
        );
    }
    // Never over a live tenant.
    let err = try_restore(file.clone(), "acme").await.unwrap_err();
    assert!(matches!(err, Error::TenantExists { .. }), "{err:?}");
    assert_eq!(
        db.pool()
            .get()
            .await
            .unwrap()
            .query_one("SELECT count(*) FROM acme.notes", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        50
    );
    // Another migration version: refused before anything is created.
    let older = tenancy(&db, TenantMigrations::new().with("notes", "CREATE TABLE notes (id bigserial PRIMARY KEY, body text, tags text[], data jsonb, raw bytea, n numeric, at timestamptz)")).await;
    let err = older
        .restore_tenant(&mut file.as_slice(), NewTenant::new(schema("older")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("version 3"), "{err}");
    assert!(!schema_exists(&db, "older").await);
}

/// A table without columns (PostgreSQL allows them; its rows are empty lines) round-trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_columns_round_trips() {
    let db = database().await;
    let t = tenancy(
        &db,
        TenantMigrations::new().with("bare", "CREATE TABLE bare (); CREATE TABLE one (x int)"),
    )
    .await;
    let acme = schema("acme");
    t.create_tenant(NewTenant::new(acme.clone())).await.unwrap();
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO acme.bare DEFAULT VALUES; INSERT INTO acme.bare DEFAULT VALUES;
                        INSERT INTO acme.one VALUES (7)",
        )
        .await
        .unwrap();
    let mut file = Vec::new();
    t.export_tenant(&acme, &mut file).await.unwrap();
    t.restore_tenant(&mut file.as_slice(), NewTenant::new(schema("copy")))
        .await
        .unwrap();
    let client = db.pool().get().await.unwrap();
    for table in ["bare", "one"] {
        let count = |s: &str| format!("SELECT count(*) FROM {s}.{table}");
        let a: i64 = client.query_one(&count("acme"), &[]).await.unwrap().get(0);
        let b: i64 = client.query_one(&count("copy"), &[]).await.unwrap().get(0);
        assert_eq!((table, b), (table, a));
    }
}

/// The session's output settings (a database's, a role's, or left by a handler's `SET` on a
/// pooled session) do not change the rows written: a float keeps every digit and a date its
/// day and month when the restore runs under other settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_settings_do_not_change_the_rows() {
    let db = database().await;
    let migrations = || {
        TenantMigrations::new().with(
            "values",
            "CREATE TABLE vals (f float8, d date, ts timestamp, i interval)",
        )
    };
    t_setup(&db, migrations()).await;
    let admin = db.pool().get().await.unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{0}\" SET extra_float_digits = 0;
             ALTER DATABASE \"{0}\" SET DateStyle = 'SQL, DMY';
             ALTER DATABASE \"{0}\" SET IntervalStyle = 'sql_standard'",
            db.name()
        ))
        .await
        .unwrap();
    // New sessions see the database's settings.
    let exporter = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(migrations())
        .build()
        .await
        .unwrap();
    let mut file = Vec::new();
    exporter
        .export_tenant(&schema("acme"), &mut file)
        .await
        .unwrap();
    admin
        .batch_execute(&format!("ALTER DATABASE \"{}\" RESET ALL", db.name()))
        .await
        .unwrap();
    let restorer = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(migrations())
        .build()
        .await
        .unwrap();
    restorer
        .restore_tenant(&mut file.as_slice(), NewTenant::new(schema("copy")))
        .await
        .unwrap();
    let client = db.new_pool(1).unwrap().get().await.unwrap();
    let rows = |s: &str| {
        format!(
            "SELECT f = 0.1::float8 + 0.2::float8, d = date '2026-03-04',
                    ts = timestamp '2026-03-04 05:06:07.5', i = interval '-1 day +2 hours'
             FROM {s}.vals"
        )
    };
    for s in ["acme", "copy"] {
        let row = client.query_one(&rows(s), &[]).await.unwrap();
        let same: (bool, bool, bool, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!((s, same), (s, (true, true, true, true)));
    }
}

async fn t_setup(db: &TestDatabase, migrations: TenantMigrations) {
    let t = tenancy(db, migrations).await;
    t.create_tenant(NewTenant::new(schema("acme")))
        .await
        .unwrap();
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO acme.vals VALUES (0.1::float8 + 0.2::float8, '2026-03-04',
                                           '2026-03-04 05:06:07.5', '-1 day +2 hours')",
        )
        .await
        .unwrap();
}

/// A crafted file cannot write the restored schema's migration history (which a restore
/// records itself): a fake row there would make `migrate` skip a migration for the tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cannot_write_the_migration_history() {
    let db = database().await;
    let t = tenancy(&db, migrations()).await;
    let acme = schema("acme");
    t.create_tenant(NewTenant::new(acme.clone())).await.unwrap();
    let mut file = Vec::new();
    t.export_tenant(&acme, &mut file).await.unwrap();
    let text = String::from_utf8(file).unwrap();
    let (body, end) = text.split_at(text.find("end {").unwrap());
    let tables = t.export_tenant(&acme, &mut Vec::new()).await.unwrap().len();
    let crafted = format!(
        "{body}table {{\"name\": \"tenant_schemas_history\", \"columns\": [\"version\", \"name\", \"checksum\"]}}\n\
         4\tnext\t0\n\\.\nend {{\"tables\": {}, \"rows\": 1}}\n",
        tables + 1
    );
    assert!(end.starts_with("end {"));
    let err = t
        .restore_tenant(&mut crafted.as_bytes(), NewTenant::new(schema("copy")))
        .await;
    let history: i64 = db
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_namespace n
             WHERE n.nspname = 'copy'
               AND EXISTS (SELECT FROM copy.tenant_schemas_history WHERE version = 4)",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    assert_eq!(history, 0, "restore answered {err:?}");
    assert!(matches!(err, Err(Error::TenantFile { .. })), "{err:?}");
    assert!(t.registry().get(&schema("copy")).await.is_err());
}

/// Rows a migration seeds (default settings, a first log line) are in the export as the
/// tenant left them: the restore's rows are the file's, not the file's on top of the seeds
/// (a key seeded twice, a row without a key doubled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_seeded_by_migrations_are_restored_as_exported() {
    let db = database().await;
    let t = tenancy(
        &db,
        TenantMigrations::new().with(
            "seeded",
            "CREATE TABLE settings (k text PRIMARY KEY, v text NOT NULL);
             INSERT INTO settings VALUES ('theme', 'light'), ('lang', 'en');
             CREATE TABLE log (msg text);
             INSERT INTO log VALUES ('created');
             CREATE TABLE child (k text REFERENCES settings (k))",
        ),
    )
    .await;
    let acme = schema("acme");
    t.create_tenant(NewTenant::new(acme.clone())).await.unwrap();
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "UPDATE acme.settings SET v = 'dark' WHERE k = 'theme';
             DELETE FROM acme.settings WHERE k = 'lang';
             INSERT INTO acme.log VALUES ('second'); INSERT INTO acme.child VALUES ('theme')",
        )
        .await
        .unwrap();
    let mut file = Vec::new();
    t.export_tenant(&acme, &mut file).await.unwrap();
    t.restore_tenant(&mut file.as_slice(), NewTenant::new(schema("copy")))
        .await
        .unwrap();
    let client = db.pool().get().await.unwrap();
    for table in ["settings", "log", "child"] {
        let rows = |s: &str| {
            format!(
                "SELECT coalesce(string_agg(t::text, ',' ORDER BY t::text), '') FROM {s}.{table} t"
            )
        };
        let a: String = client.query_one(&rows("acme"), &[]).await.unwrap().get(0);
        let b: String = client.query_one(&rows("copy"), &[]).await.unwrap().get(0);
        assert_eq!((table, b), (table, a));
    }
}

/// A restore "as" the shared `public` schema is refused before anything is written: it
/// would load a tenant's rows into (and empty) the tables of `public`, the registry's
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_into_public_is_refused() {
    let db = database().await;
    let t = tenancy(
        &db,
        TenantMigrations::new().with("shared", "CREATE TABLE IF NOT EXISTS things (x int)"),
    )
    .await;
    let acme = schema("acme");
    t.create_tenant(NewTenant::new(acme.clone())).await.unwrap();
    let client = db.pool().get().await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE public.things (x int); INSERT INTO public.things VALUES (1);
                        INSERT INTO acme.things VALUES (2)",
        )
        .await
        .unwrap();
    let mut file = Vec::new();
    t.export_tenant(&acme, &mut file).await.unwrap();
    // The file, crafted: every table of `public` listed (the registry's emptied), one row
    // for `things`.
    let text = String::from_utf8(file).unwrap();
    let mut crafted = text[..text.find("table {").unwrap()].to_owned();
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_catalog.pg_tables WHERE schemaname = 'public'
               AND tablename <> 'tenant_schemas_history' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut rows = 0;
    for table in &tables {
        if table == "things" {
            crafted.push_str("table {\"name\": \"things\", \"columns\": [\"x\"]}\n99\n\\.\n");
            rows += 1;
        } else {
            crafted.push_str(&format!(
                "table {{\"name\": \"{table}\", \"columns\": []}}\n\\.\n"
            ));
        }
    }
    crafted.push_str(&format!(
        "end {{\"tables\": {}, \"rows\": {rows}}}\n",
        tables.len()
    ));
    let err = t
        .restore_tenant(
            &mut crafted.as_bytes(),
            NewTenant::new(SchemaName::public()),
        )
        .await;
    let things: Vec<i32> = client
        .query("SELECT x FROM public.things ORDER BY x", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(things, [1], "restore answered {err:?}");
    assert!(matches!(err, Err(Error::Refused { .. })), "{err:?}");
    assert_eq!(t.registry().get(&acme).await.unwrap().schema, acme);
}

/// A restore given up half-way (its future dropped: a request timed out, an operator's
/// Ctrl-C) leaves nothing behind either: the tenant it created in maintenance is deleted
/// again, its name free for the next attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_given_up_half_way_leaves_nothing() {
    use tokio::io::AsyncWriteExt;
    let db = database().await;
    let t = tenancy(&db, migrations()).await;
    let acme = schema("acme");
    t.create_tenant(NewTenant::new(acme.clone())).await.unwrap();
    let mut file = Vec::new();
    t.export_tenant(&acme, &mut file).await.unwrap();
    let text = String::from_utf8(file.clone()).unwrap();
    // The file up to its first table's rows; the rest never comes.
    let head = &text[..text.find("table {").unwrap()];
    let (mut writer, reader) = tokio::io::duplex(1 << 16);
    writer.write_all(head.as_bytes()).await.unwrap();
    let copy = schema("copy");
    let restoring = {
        let (t, copy) = (t.clone(), copy.clone());
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(reader);
            t.restore_tenant(&mut reader, NewTenant::new(copy)).await
        })
    };
    // Until the restore loads the tenant it created (its transaction open, waiting for
    // the file's next line).
    let watcher = db.pool().get().await.unwrap();
    loop {
        let loading: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                 AND state = 'idle in transaction' AND query LIKE 'TRUNCATE TABLE \"copy\".%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if loading == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    restoring.abort();
    assert!(restoring.await.unwrap_err().is_cancelled());
    drop(writer);
    // The clean-up runs in the background: wait for it (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while t.registry().get(&copy).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the half-restored tenant is still registered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let schemas: i64 = db
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'copy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0);
    // The name is free again.
    t.restore_tenant(&mut file.as_slice(), NewTenant::new(copy.clone()))
        .await
        .unwrap();
}

/// A table with an inheritance child: the parent's own rows are exported once (a parent's
/// `SELECT` includes its children's rows, which the child's own table holds), so the
/// restored copy has the rows of the original, not the child's twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inheritance_child_round_trips_without_duplicates() {
    let db = database().await;
    let t = tenancy(
        &db,
        TenantMigrations::new().with(
            "family",
            "CREATE TABLE parent (x int); CREATE TABLE child () INHERITS (parent)",
        ),
    )
    .await;
    let acme = schema("acme");
    t.create_tenant(NewTenant::new(acme.clone())).await.unwrap();
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute("INSERT INTO acme.parent VALUES (1); INSERT INTO acme.child VALUES (2), (3)")
        .await
        .unwrap();
    let mut file = Vec::new();
    let tables = t.export_tenant(&acme, &mut file).await.unwrap();
    let rows: i64 = tables.iter().map(|t| t.rows).sum();
    assert_eq!(rows, 3, "{tables:?}");
    t.restore_tenant(&mut file.as_slice(), NewTenant::new(schema("copy")))
        .await
        .unwrap();
    let client = db.pool().get().await.unwrap();
    for sql in [
        "SELECT count(*) FROM ONLY {s}.parent",
        "SELECT count(*) FROM {s}.parent",
    ] {
        let count = |s: &str| sql.replace("{s}", s);
        let a: i64 = client.query_one(&count("acme"), &[]).await.unwrap().get(0);
        let b: i64 = client.query_one(&count("copy"), &[]).await.unwrap().get(0);
        assert_eq!((sql, b), (sql, a));
    }
}
