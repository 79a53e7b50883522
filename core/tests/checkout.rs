//! One checkout for every door: a tenant's state is read from the registry at checkout,
//! whatever brought the tenant into scope — `scope::run_in_schema`, `Tenant::new`, a
//! `StaticResolver`, a tenant resolved before its state changed, a router built by hand —
//! never trusted from the `Tenant` value.

#![allow(clippy::unwrap_used)]

use tenant_schemas::testing::fixtures::*;
use tenant_schemas::{
    scope, DropSchema, Error, NewTenant, SchemaName, SchemaRouter, SearchPathMode, StaticResolver,
    Tenancy, Tenant, TenantStatus,
};

const NOT_SERVED: [TenantStatus; 3] = [
    TenantStatus::Maintenance,
    TenantStatus::Suspended,
    TenantStatus::Archived,
];

/// Every way a careless application gets a connection for `schema` in scope without the
/// registry's answer: the outcome of each, named.
async fn every_door(
    tenancy: &Tenancy,
    schema: &SchemaName,
) -> Vec<(&'static str, Result<String, Error>)> {
    let read = |db: tenant_schemas::ConnectionScope| async move {
        db.query_one("SELECT schema_name FROM marker", &[])
            .await
            .map(|r| r.get::<_, String>(0))
    };
    let mut out = Vec::new();
    let via_run_in_schema = scope::run_in_schema(schema.clone(), async {
        read(tenancy.connection().await?).await
    })
    .await;
    out.push(("scope::run_in_schema", via_run_in_schema));
    let via_new = scope::run(Tenant::new(schema.clone()), async {
        read(tenancy.router().connection().await?).await
    })
    .await;
    out.push(("Tenant::new in scope", via_new));
    let direct = async {
        read(
            tenancy
                .router()
                .connection_for_tenant(&Tenant::new(schema.clone()))
                .await?,
        )
        .await
    }
    .await;
    out.push(("connection_for_tenant(Tenant::new)", direct));
    let by_name = async { read(tenancy.router().connection_for_schema(schema).await?).await }.await;
    out.push(("connection_for(schema)", by_name));
    // A tenant claiming to be active (a custom resolver's or a stale value).
    let claims_active = Tenant::new(schema.clone()).with_status(TenantStatus::Active);
    let claimed = scope::run(claims_active, async {
        read(tenancy.connection().await?).await
    })
    .await;
    out.push(("a value claiming Active", claimed));
    out
}

/// A tenant in maintenance, suspended or archived gets no connection through any door
/// (each refusal names the registry's state), and is served again once active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_not_served_gets_no_connection_through_any_door() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let s = marked_tenants(&tenancy, "door_", 1).await.remove(0);
    for status in NOT_SERVED {
        tenancy.set_status(&s, status).await.unwrap();
        for (door, outcome) in every_door(&tenancy, &s).await {
            assert!(
                matches!(&outcome, Err(Error::TenantNotServed { status: got, .. }) if *got == status),
                "{status} through {door}: {outcome:?}"
            );
        }
    }
    tenancy.set_status(&s, TenantStatus::Active).await.unwrap();
    for (door, outcome) in every_door(&tenancy, &s).await {
        assert_eq!(outcome.unwrap(), "door_0", "active through {door}");
    }
}

/// A resolver that invents tenants, here a `StaticResolver` mapping a host to
/// `Tenant::new(schema)` (active by construction), cannot serve a suspended tenant or make a
/// read-only one write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_resolver_cannot_serve_a_tenant_the_registry_does_not() {
    let db = database().await;
    let s = schema("static_0");
    let h = host("static.example.test");
    let app = Tenancy::builder(db.pool().clone())
        .resolver(StaticResolver::new().with(h.clone(), Tenant::new(s.clone())))
        .migrations(marker_and_notes())
        .build()
        .await
        .unwrap();
    app.create_tenant(NewTenant::new(s.clone())).await.unwrap();
    let write = || async {
        let tenant = app.resolve(&h).await.unwrap();
        assert_eq!(
            tenant.status(),
            TenantStatus::Active,
            "the resolver's value"
        );
        scope::run(tenant, async {
            app.connection()
                .await?
                .execute("INSERT INTO notes (body) VALUES ('static')", &[])
                .await
        })
        .await
    };
    for status in NOT_SERVED {
        app.set_status(&s, status).await.unwrap();
        let outcome = write().await;
        assert!(
            matches!(&outcome, Err(Error::TenantNotServed { status: got, .. }) if *got == status),
            "{status}: {outcome:?}"
        );
    }
    app.set_status(&s, TenantStatus::ReadOnly).await.unwrap();
    let outcome = write().await;
    assert!(
        matches!(outcome, Err(Error::TenantReadOnly { .. })),
        "{outcome:?}"
    );
    app.set_status(&s, TenantStatus::Active).await.unwrap();
    assert_eq!(write().await.unwrap(), 1);
    let notes: i64 = app
        .router()
        .connection_for_schema(&s)
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM notes WHERE body = 'static'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(notes, 1, "only the write made while active landed");
}

/// A read-only tenant brought into scope by name (`scope::run_in_schema`, `Tenant::new`)
/// cannot write, in either search-path mode; nothing it tried is committed.
async fn read_only_by_name(mode: SearchPathMode) {
    let (_db, tenancy, s, _pool) = marked_over_public("rob_", 1, 2, mode).await;
    let s = &s[0];
    tenancy.set_status(s, TenantStatus::ReadOnly).await.unwrap();
    let insert = "INSERT INTO notes (body) VALUES ('by name')";
    let by_schema = scope::run_in_schema(s.clone(), async {
        tenancy.connection().await?.execute(insert, &[]).await
    })
    .await;
    assert!(
        matches!(by_schema, Err(Error::TenantReadOnly { .. })),
        "{by_schema:?}"
    );
    let by_value = tenancy
        .router()
        .connection_for_tenant(&Tenant::new(s.clone()))
        .await
        .unwrap()
        .execute(insert, &[])
        .await;
    assert!(
        matches!(by_value, Err(Error::TenantReadOnly { .. })),
        "{by_value:?}"
    );
    let by_name = tenancy
        .router()
        .connection_for_schema(s)
        .await
        .unwrap()
        .execute(insert, &[])
        .await;
    assert!(
        matches!(by_name, Err(Error::TenantReadOnly { .. })),
        "{by_name:?}"
    );
    // Reads still work.
    assert_eq!(seen_by(tenancy.router(), s).await, "rob_0");
    tenancy.set_status(s, TenantStatus::Active).await.unwrap();
    let landed: i64 = tenancy
        .router()
        .connection_for_schema(s)
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM notes WHERE body = 'by name'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(landed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_tenant_reached_by_name_cannot_write() {
    read_only_by_name(SearchPathMode::Session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_tenant_reached_by_name_cannot_write_in_transaction_mode() {
    read_only_by_name(SearchPathMode::Transaction).await;
}

/// A tenant resolved while active and suspended before its connection is checked out (a
/// request in flight, a job holding the `Tenant`) is refused at checkout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_resolved_before_its_suspension_is_refused_at_checkout() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    marked_tenants(&tenancy, "late_", 1).await;
    let resolved = tenancy.resolve(&host("late-0.test")).await.unwrap();
    assert_eq!(resolved.status(), TenantStatus::Active);
    tenancy
        .set_status(resolved.schema(), TenantStatus::Suspended)
        .await
        .unwrap();
    let outcome = scope::run(resolved, async { tenancy.connection().await }).await;
    assert!(
        matches!(
            outcome,
            Err(Error::TenantNotServed {
                status: TenantStatus::Suspended,
                ..
            })
        ),
        "{outcome:?}"
    );
}

/// A router built by hand over the `Tenancy`'s pool reads the same states once given them;
/// without them (no registry: no states to read) it serves the state the value carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_built_by_hand_reads_the_states_it_is_given() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let s = marked_tenants(&tenancy, "hand_", 1).await.remove(0);
    tenancy
        .set_status(&s, TenantStatus::Suspended)
        .await
        .unwrap();
    let with_states = SchemaRouter::builder(tenancy.router().pool().clone())
        .tenant_states(tenancy.tenant_states())
        .build();
    let err = with_states
        .connection_for_tenant(&Tenant::new(s.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantNotServed { .. }), "{err}");
    assert!(with_states.tenant_states().is_some());
    let bare = SchemaRouter::new(tenancy.router().pool().clone());
    assert!(bare.tenant_states().is_none());
    assert_eq!(
        marker_of(&bare.connection_for_schema(&s).await.unwrap()).await,
        "hand_0"
    );
    // The value's own state is still honoured without the registry.
    let err = bare
        .connection_for_tenant(&Tenant::new(s.clone()).with_status(TenantStatus::Archived))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantNotServed { .. }), "{err}");
    // `public` by name is the shared schema: served.
    assert!(with_states.public().await.is_ok());
}

/// A tenant resolved from the registry (it carries its id) whose registry row is gone —
/// deleted keeping its schema — or belongs to a tenant re-created in the same schema is not
/// served: the schema it names is no longer its tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_tenant_deleted_since_is_not_served_from_a_kept_schema() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let s = marked_tenants(&tenancy, "kept_", 1).await.remove(0);
    let resolved = tenancy.resolve(&host("kept-0.test")).await.unwrap();
    assert!(resolved.id().is_some());
    tenancy.delete_tenant(&s, DropSchema::No).await.unwrap();
    assert!(schema_exists(&db, "kept_0").await);
    let outcome = scope::run(resolved.clone(), async { tenancy.connection().await }).await;
    assert!(
        matches!(outcome, Err(Error::SchemaMissing { .. })),
        "{outcome:?}"
    );
    // Re-created in the same schema (imported, keeping its data): another tenant, another id.
    tenancy
        .import_tenants(&[NewTenant::new(s.clone()).domain(host("kept-0.test"))], 0)
        .await
        .unwrap();
    let outcome = scope::run(resolved, async { tenancy.connection().await }).await;
    assert!(
        matches!(outcome, Err(Error::TenantGone { .. })),
        "{outcome:?}"
    );
    // Resolved afresh, it is served.
    let fresh = tenancy.resolve(&host("kept-0.test")).await.unwrap();
    let read = scope::run(fresh, async {
        marker_of(&tenancy.connection().await.unwrap()).await
    })
    .await;
    assert_eq!(read, "kept_0");
}

/// A job for a registered tenant (`run_ref`, `for_each_tenant`) goes through the same
/// checkout: a tenant suspended while the job waits on its first connection is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_go_through_the_same_checkout() {
    let db = database().await;
    let tenancy = tenancy(&db, marker_and_notes()).await;
    let s = marked_tenants(&tenancy, "job_", 1).await.remove(0);
    let reference = tenancy.registry().get(&s).await.unwrap();
    let reference = tenant_schemas::TenantRef::from(&reference);
    let outcome = tenancy
        .run_ref(&reference, async {
            // The state changes after the job started, before its first connection.
            tenancy
                .set_status(&s, TenantStatus::Maintenance)
                .await
                .unwrap();
            tenancy.connection().await.map(|_| ())
        })
        .await
        .unwrap();
    assert!(
        matches!(
            outcome,
            Err(Error::TenantNotServed {
                status: TenantStatus::Maintenance,
                ..
            })
        ),
        "{outcome:?}"
    );
}

/// A tenant the registry places on shard `b`, whose schema name also exists on the default
/// database (there its earlier tenant was deleted keeping its schema, then the name was given
/// to a tenant created on `b`). A door that brings the tenant into scope by name
/// (`scope::run_in_schema`, `Tenant::new`, `connection_for_schema`) takes the value's
/// database, the default one: the checkout must follow the registry's placement or refuse,
/// never serve the kept schema on the wrong database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_reached_by_name_is_not_served_from_another_database() {
    let (_a, _b, tenancy) = two_databases().await;
    let s = schema("placed_0");
    let write_marker = |tenant: Tenant, value: &'static str| {
        let tenancy = tenancy.clone();
        async move {
            tenancy
                .router()
                .connection_for_tenant(&tenant)
                .await
                .unwrap()
                .execute("INSERT INTO marker VALUES ($1)", &[&value])
                .await
                .unwrap();
        }
    };
    let old = tenancy
        .create_tenant(NewTenant::new(s.clone()))
        .await
        .unwrap();
    write_marker(old.tenant(), "KEPT ON THE DEFAULT DATABASE").await;
    tenancy.delete_tenant(&s, DropSchema::No).await.unwrap();
    let placed = tenancy
        .create_tenant(NewTenant::new(s.clone()).shard("b"))
        .await
        .unwrap();
    write_marker(placed.tenant(), "placed_0").await;

    let read = |db: tenant_schemas::ConnectionScope| async move {
        db.query_one("SELECT schema_name FROM marker", &[])
            .await
            .map(|r| r.get::<_, String>(0))
    };
    let mut doors: Vec<(&str, Result<String, Error>)> = Vec::new();
    doors.push((
        "scope::run_in_schema",
        scope::run_in_schema(s.clone(), async { read(tenancy.connection().await?).await }).await,
    ));
    doors.push((
        "connection_for_tenant(Tenant::new)",
        async {
            read(
                tenancy
                    .router()
                    .connection_for_tenant(&Tenant::new(s.clone()))
                    .await?,
            )
            .await
        }
        .await,
    ));
    doors.push((
        "connection_for_schema",
        async { read(tenancy.router().connection_for_schema(&s).await?).await }.await,
    ));
    let served: Vec<_> = doors
        .iter()
        .filter(|(_, outcome)| !matches!(outcome, Ok(m) if m == "placed_0"))
        .filter(|(_, outcome)| !matches!(outcome, Err(Error::SchemaMissing { .. })))
        .collect();
    assert!(
        served.is_empty(),
        "served from another database than the registry's: {served:?}"
    );
    // The registry's own value reaches its database.
    let own = read(
        tenancy
            .router()
            .connection_for_tenant(&placed.tenant())
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(own, "placed_0");
}

/// The raw client of a scope (`ConnectionScope::client`, for `copy_in`, `query_raw` …) is a
/// door the library cannot hook, as sqlx's `PgConnection` is: held across
/// `Tenancy::delete_tenant`, it must reach nothing afterwards — its session is still on
/// `"<schema>", public`, and with the schema dropped PostgreSQL resolves every name in
/// `public`. Reads, writes and DDL fail; `public` is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_client_held_across_a_deletion_reaches_nothing() {
    let db = database().await;
    let tenancy = Tenancy::builder(db.new_pool(2).unwrap())
        .migrations(marker_and_notes())
        .held_connection_grace(std::time::Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let s = marked_tenants(&tenancy, "rawheld_", 1).await.remove(0);
    plant_public_marker(db.pool()).await;
    let scope = tenancy.router().connection_for_schema(&s).await.unwrap();
    let client = scope.client().await.unwrap();
    let mine: String = client
        .query_one("SELECT schema_name FROM marker", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(mine, "rawheld_0");
    tenancy.delete_tenant(&s, DropSchema::Yes).await.unwrap();
    let read = client
        .query_one("SELECT schema_name FROM marker", &[])
        .await
        .map(|r| r.get::<_, String>(0));
    let write = client
        .execute("INSERT INTO marker VALUES ('LEAKED')", &[])
        .await;
    let ddl = client.batch_execute("CREATE TABLE leaked (x int)").await;
    drop(scope);
    assert!(read.is_err(), "read after the deletion: {read:?}");
    assert!(write.is_err(), "write after the deletion: {write:?}");
    assert!(ddl.is_err(), "DDL after the deletion: {ddl:?}");
    let public = db.pool().get().await.unwrap();
    let leaked: i64 = public
        .query_one(
            "SELECT (SELECT count(*) FROM public.marker WHERE schema_name = 'LEAKED') \
             + (SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = 'leaked')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "rows or tables landed in public");
}
