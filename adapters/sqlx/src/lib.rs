//! sqlx for [tenant-schemas](tenant_schemas): sqlx connections and transactions bound to a
//! tenant's PostgreSQL schema, with the guarantees of the core's router.
//!
//! One [`Tenancy`](tenant_schemas::Tenancy) (tokio-postgres) keeps the registry, creates and
//! migrates tenants and resolves hosts, as with any adapter; a [`SqlxRouter`] over a
//! `sqlx::PgPool` to the same database serves the application's queries:
//!
//! ```no_run
//! use tenant_schemas::{scope, Host, NewTenant, SchemaName, Tenancy, TenantMigrations};
//! use tenant_schemas_sqlx::SqlxRouter;
//!
//! # async fn demo(deadpool: tenant_schemas::deadpool_postgres::Pool) -> Result<(), Box<dyn std::error::Error>> {
//! let tenancy = Tenancy::builder(deadpool) // registry, migrations, lifecycle
//!     .migrations(TenantMigrations::from_dir("migrations/tenant")?)
//!     .build()
//!     .await?;
//! tenancy
//!     .create_tenant(NewTenant::new(SchemaName::new("acme")?).domain(Host::parse("acme.example.com")?))
//!     .await?;
//!
//! let router = SqlxRouter::new(sqlx::PgPool::connect("postgres://app@localhost/app").await?);
//! let acme = tenancy.resolve(&Host::parse("acme.example.com")?).await?; // cached lookup
//! scope::run(acme, async {
//!     let mut conn = router.connection().await?; // bound to acme's schema
//!     sqlx::query("INSERT INTO notes (body) VALUES ($1)")
//!         .bind("hello")
//!         .execute(&mut *conn)
//!         .await?;
//!     let mut tx = router.begin().await?; // a transaction on acme's path
//!     sqlx::query("DELETE FROM notes").execute(&mut *tx).await?;
//!     tx.rollback().await?;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - **A connection is handed out on its tenant's path, or not at all.** Every checkout sets
//!   the session's `search_path` to `"<schema>", public` with a check that the schema exists,
//!   in one round trip (one statement, prepared on each connection); a missing schema is
//!   [`Error::SchemaMissing`], never a fall-through to `public` (PostgreSQL silently skips
//!   missing schemas of a search path).
//! - **Nothing a pooled connection comes back with is trusted.** The same round trip checks
//!   that no transaction block is left open (a raw `BEGIN`), that the session holds no
//!   temporary objects (which PostgreSQL searches before the path) nor cursors held open (with
//!   the rows they read under the last tenant's path and role), and that the router's
//!   prepared statement is still there (`DISCARD ALL` and `DEALLOCATE ALL` drop sqlx's
//!   statements with it); a connection failing a check is closed and another taken. So user SQL that changes the session (`SET search_path`,
//!   `RESET ALL`, `DISCARD ALL`, `set_config(…)`, a `BEGIN` left open) cannot affect the next
//!   checkout, and a future dropped mid-statement cannot either: sqlx waits out the
//!   cancelled statement before the connection is pooled again, and the next checkout
//!   switches regardless. Other settings made for the session (`SET work_mem …`, `SET
//!   app.token …`, `set_config(…, false)`, `SET ROLE`, a function that sets one) stay for the
//!   rest of that checkout; the next checkout's switch begins with `RESET ALL; RESET
//!   SESSION AUTHORIZATION; RESET ROLE`
//!   ([`DriverCheckout::session_prefix`](tenant_schemas::checkout::DriverCheckout::session_prefix);
//!   in transaction mode behind `BEGIN READ WRITE`, in the transaction's first message,
//!   [`DriverCheckout::local_begin`](tenant_schemas::checkout::DriverCheckout::local_begin)),
//!   so they never reach it, unless
//!   [`SqlxRouterBuilder::reset_settings`](crate::SqlxRouterBuilder::reset_settings) turned
//!   that off. `RESET ALL` returns to the connection's startup settings: give settings meant
//!   for every checkout as connect options
//!   ([`PgConnectOptions::options`](sqlx::postgres::PgConnectOptions::options)), not in an
//!   `after_connect` hook.
//! - **Tenants whose column or parameter types differ share connections safely.** sqlx
//!   caches prepared statements by their SQL; a statement prepared under another schema's
//!   path would fail under this one ("cached plan must not change result type", or a
//!   parameter of the other type). A checkout for another schema than the connection's
//!   previous one (remembered per pool connection, shared by every router on the pool)
//!   closes sqlx's prepared statements first, so the tenant's are prepared afresh
//!   ([`SqlxStats::statements_cleared`]); a checkout for the same schema keeps them. Where
//!   every tenant has the same shape,
//!   [`SqlxRouterBuilder::shared_statements`](crate::SqlxRouterBuilder::shared_statements)
//!   keeps them across schemas (the server analyses them again under each path).
//! - **Transactions keep the path.** [`SqlxRouter::begin`] sets the path before `BEGIN`
//!   (session mode) or with `SET LOCAL` inside it (transaction mode, behind PgBouncer). In
//!   transaction mode the server connection is another client's between transactions, so
//!   instead of the checks above each transaction's first message drops the temporary
//!   objects, closes the held cursors and forgets the sequence state left on it (`DISCARD
//!   TEMP; CLOSE ALL; DISCARD SEQUENCES`), before the
//!   path is set.
//! - **Fail closed outside a scope:** [`Error::NoTenantInScope`].
//! - **One checkout with the core** ([`tenant_schemas::checkout`]), when the router has the
//!   registry's states ([`SqlxRouterBuilder::tenant_states`] with
//!   `tenancy.tenant_states()`): a tenant's state is read from the registry at every
//!   checkout, whatever `Tenant` value is in scope. Maintenance, suspended and archived
//!   tenants get no connection ([`Error::TenantNotServed`]: 503, 403, 404); a read-only
//!   tenant's session is read-only (`default_transaction_read_only`; its transactions
//!   `BEGIN READ ONLY`), and [`SqlxConnection::error`] turns the server's refusal into
//!   [`Error::TenantReadOnly`] (403).
//! - **A connection held across a deletion or rename reaches nothing.** Each checkout is
//!   registered with the schema's gate for the connection's whole life;
//!   `Tenancy::delete_tenant` and `Tenancy::rename_schema` (in this process) wait for such
//!   connections up to `TenancyBuilder::held_connection_grace` (5 s), then terminate their
//!   backends (`pg_terminate_backend`): reads, writes and DDL on a held connection fail
//!   afterwards, never reach `public`.
//!
//! Not guaranteed: sqlx hands out a raw `&mut PgConnection`, so the library does not read
//! the SQL sent through it. SQL that changes the search path affects the statements sent
//! after it on the *same* connection (the core's `ConnectionScope` re-switches before the
//! next call; here only the next checkout is protected): do not change `search_path`
//! yourself. For the same reason a read-only tenant's connection stops careless writes
//! (`conn.begin()` is read-only), not deliberate ones (`BEGIN READ WRITE`, `SET
//! default_transaction_read_only = off`). A deletion by another process does not wait for
//! or cut off a held connection (any `Tenancy` of this process does): leave no table of a tenant's name in `public` (`migrate` refuses them), so
//! that a statement racing such a deletion fails instead of reading `public`. Behind
//! PgBouncer a held transaction's server backend is the one terminated: do not keep a
//! `SqlxTransaction` after sending `COMMIT` through it yourself. A `DEALLOCATE` of one of
//! sqlx's own statements by its name is not seen at checkout (`DEALLOCATE ALL` and `DISCARD
//! ALL` are): that statement's next use on the connection fails. And SQL that deliberately
//! replaces the router's prepared switch statement (its name is in `pg_prepared_statements`)
//! with one of its own makes the next checkout skip the switch. That takes intent, not
//! carelessness (its name ends in a number drawn at random per process), and is not checked:
//! reading `pg_prepared_statements` at every checkout costs about a tenth of the throughput.
//!
//! # Why every checkout switches (no path memory)
//!
//! The core's router skips the switch when it knows a pooled connection is still on the
//! tenant's path, because it reads every statement sent through a `ConnectionScope`. A
//! `SqlxConnection` derefs to `PgConnection`, and nothing sees what runs on it, so such a
//! memory could only be trusted after asking the server — a round trip, the same as the
//! switch, which runs in one prepared statement with the checks a checkout needs anyway (open
//! transaction, temporary objects). Measured on the load benchmark (BENCHMARKS.md, "sqlx
//! driver", 2026-12-03; 2 shared cores), as a share of plain sqlx on one schema: plain sqlx
//! plus one `SELECT 1` round trip per checkout 0.66–0.90, this router 0.56–0.66 at one
//! tenant. At 1,000 tenants it reaches 0.20: nearly every checkout there changes the
//! connection's schema, so sqlx's statements are closed and prepared again, two more round
//! trips (plain sqlx doing only that reaches 0.39–0.40).
//!
//! # Behind PgBouncer (transaction pooling)
//!
//! Build the router with [`SearchPathMode::Transaction`](tenant_schemas::SearchPathMode), the
//! pool with `statement_cache_capacity(0)`, and run queries with `.persistent(false)`:
//! PgBouncer 1.18 keeps no prepared statements across transactions, and sqlx 0.8 still
//! prepares a *named* statement for a persistent query when its cache is off (and never
//! closes it), which another client then finds taken ("prepared statement \"sqlx_s_1\"
//! already exists"). `.persistent(false)` sends an unnamed statement, which lives only
//! until the next one.
//!
//! ```no_run
//! use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
//! use tenant_schemas::SearchPathMode;
//! use tenant_schemas_sqlx::SqlxRouter;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let options: PgConnectOptions = "postgres://app@pgbouncer:6432/app".parse()?;
//! let pool = PgPoolOptions::new()
//!     .connect_with(options.statement_cache_capacity(0))
//!     .await?;
//! let router = SqlxRouter::builder(pool).mode(SearchPathMode::Transaction).build();
//! // router.connection() is refused in this mode; every unit of work is a transaction:
//! let mut tx = router.begin_for(&tenant_schemas::SchemaName::new("acme")?).await?;
//! sqlx::query("SELECT count(*) FROM notes")
//!     .persistent(false)
//!     .fetch_one(&mut *tx)
//!     .await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```
//!
//! # Connecting with the core's settings (and TLS)
//!
//! [`connect_options_from_settings`] makes sqlx's options from the core's
//! [`ConnectionSettings`](tenant_schemas::ConnectionSettings), so that one URL means the
//! same database and the same security level for both drivers: libpq's `sslmode` (all five)
//! and `sslrootcert`, with the crate's `tls` feature (sqlx's native-tls: as libpq, `prefer`
//! and `require` accept any certificate, Citus' self-signed X.509 version 1 included).
//! [`pool_from_settings`] makes the whole pool as the core makes its own: those options, the
//! core's pool size and timeouts ([`pool_options_from_settings`]: a checkout waits at most
//! 10 s, not sqlx's 30 s).
//!
//! A stopped database answers [`Error::Pool`] (503) about as fast as the core: sqlx retries a
//! refused connection until its `acquire_timeout`, so a checkout that waits more than
//! 100 ms checks whether the server accepts connections at all (a connection that sends
//! nothing, which PostgreSQL does not log) and fails when it refuses them.
//!
//! ```no_run
//! use tenant_schemas::{ConnectionSettings, Tenancy};
//! use tenant_schemas_sqlx::{pool_from_settings, SqlxRouter};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = ConnectionSettings::from_env()?; // DATABASE_URL
//! let tenancy = Tenancy::builder_from_settings(settings.clone())?.build().await?;
//! let router = SqlxRouter::new(pool_from_settings(&settings)?);
//! # Ok(()) }
//! ```
//!
//! # Web frameworks
//!
//! Features `axum` and `actix` add extractors ([`axum::SqlxTenantDb`],
//! [`actix::SqlxTenantDb`] and their `public` siblings) that take the router from the
//! request (an axum `Extension`, actix `app_data`) and the tenant from the adapter's
//! middleware.

#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod connection;
mod error;
#[cfg(any(feature = "actix", feature = "axum"))]
mod extract;
mod options;
mod router;
mod transaction;

#[cfg(feature = "actix")]
pub mod actix;
#[cfg(feature = "axum")]
pub mod axum;

pub use connection::SqlxConnection;
pub use error::{Error, Result};
pub use options::{
    connect_options, connect_options_from_settings, pool_from_settings, pool_options_from_settings,
};
pub use router::{SqlxRouter, SqlxRouterBuilder, SqlxStats};
pub use transaction::SqlxTransaction;

/// The driver this crate works with, re-exported so versions match.
pub use sqlx;
