//! SeaORM for [tenant-schemas](tenant_schemas): SeaORM connections and transactions bound to a
//! tenant's PostgreSQL schema, built on [tenant-schemas-sqlx](tenant_schemas_sqlx) (SeaORM
//! runs on sqlx), so that every guarantee of its checkout holds for SeaORM too.
//!
//! One [`Tenancy`](tenant_schemas::Tenancy) keeps the registry, creates and migrates tenants
//! and resolves hosts; a [`SqlxRouter`](tenant_schemas_sqlx::SqlxRouter) with the
//! registry's states serves the application's connections; a [`SeaOrmRouter`] over it hands
//! out [`SeaOrmConnection`]s, on which entities work unchanged:
//!
//! ```no_run
//! use sea_orm::{ActiveModelTrait, EntityTrait, Set};
//! use tenant_schemas::{scope, ConnectionSettings, Tenancy};
//! use tenant_schemas_seaorm::SeaOrmRouter;
//! use tenant_schemas_sqlx::{pool_from_settings, SqlxRouter};
//!
//! mod note {
//!     use sea_orm::entity::prelude::*;
//!
//!     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
//!     #[sea_orm(table_name = "notes")]
//!     pub struct Model {
//!         #[sea_orm(primary_key)]
//!         pub id: i64,
//!         pub body: String,
//!     }
//!
//!     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//!     pub enum Relation {}
//!
//!     impl ActiveModelBehavior for ActiveModel {}
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = ConnectionSettings::from_env()?; // DATABASE_URL
//! let tenancy = Tenancy::builder_from_settings(settings.clone())?.build().await?;
//! let sqlx = SqlxRouter::builder(pool_from_settings(&settings)?)
//!     .tenant_states(tenancy.tenant_states()) // states read from the registry
//!     .build();
//! let orm = SeaOrmRouter::new(sqlx);
//!
//! let acme = tenancy.tenant_by_schema(&"acme".parse()?).await?.ok_or("no acme")?;
//! scope::run(acme, async {
//!     let mut db = orm.connection().await?; // bound to acme's schema
//!     note::ActiveModel { body: Set("hello".into()), ..Default::default() }
//!         .insert(&db)
//!         .await?;
//!     let notes = note::Entity::find().all(&db).await?; // no transaction needed
//!     let tx = db.begin().await?; // a transaction on the same connection
//!     note::Entity::delete_many().exec(&tx).await?;
//!     tx.rollback().await?;
//!     Ok::<_, Box<dyn std::error::Error>>(notes.len())
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! A [`SeaOrmConnection`] holds one
//! [`SqlxConnection`](tenant_schemas_sqlx::SqlxConnection) for its life, a
//! [`SeaOrmTransaction`] one connection's transaction; nothing is implemented a second time:
//!
//! - **States, from the registry.** Maintenance, suspended and archived tenants get no
//!   connection (503, 403, 404); a read-only tenant's session and transactions are read-only,
//!   and a write is refused (403, [`Error::is_read_only`]).
//! - **Read-only however the transaction is split.** SeaORM hands the driver the SQL it
//!   sends, so statements are read as the core's router reads them
//!   ([`SqlEffects`](tenant_schemas::checkout::SqlEffects)): for a read-only tenant,
//!   `BEGIN READ WRITE`, `SET TRANSACTION READ WRITE`, `SET SESSION CHARACTERISTICS …`,
//!   `set_config('transaction_read_only', …)`, `DO`, `CALL` … are refused before they are
//!   sent. Transaction control is refused for every tenant: use [`SeaOrmConnection::begin`]
//!   or [`SeaOrmConnection::transaction`].
//! - **The path, or nothing.** The search path is `"<schema>", public` with the schema
//!   checked to exist ([`Error::is_schema_missing`], 404), never a fall-through to `public`.
//!   After a statement that may change the session (`SET search_path`, `RESET ALL`,
//!   `DISCARD ALL`, `set_config` …) the connection goes back to the pool and the next
//!   statement runs on a fresh checkout (in a transaction: the path is set again with
//!   `SET LOCAL`).
//! - **Deletion and rename.** A connection held across `Tenancy::delete_tenant` or
//!   `Tenancy::rename_schema` is waited for (`held_connection_grace`), then its backend is
//!   terminated: its reads, writes and DDL fail afterwards, none reaches `public`.
//! - **Diverged schemas.** Tenants whose column types differ run the same SeaORM query:
//!   statements prepared for another schema are closed when a pooled connection changes
//!   schema.
//! - **Fail closed outside a scope**
//!   ([`NoTenantInScope`](tenant_schemas_sqlx::Error::NoTenantInScope)).
//!
//! Not guaranteed, as in the core: the rest of *one* SQL text runs under whatever that text
//! set (`execute_unprepared("SET search_path TO x; SELECT …")`).
//!
//! # Why not SeaORM's `DatabaseConnection` and `DatabaseTransaction`
//!
//! SeaORM 1.1 lets a third party implement [`ConnectionTrait`](sea_orm::ConnectionTrait)
//! (statements come as a [`Statement`](sea_orm::Statement), rows go back as
//! `From<PgRow> for QueryResult`, values are bound with `sea_query_binder::SqlxValues`), but
//! not make a [`DatabaseTransaction`](sea_orm::DatabaseTransaction): its constructors are
//! private to SeaORM, which makes one only from a connection it takes from its own pool
//! (`DatabaseConnection`). A `DatabaseTransaction` over such a connection would escape
//! everything the checkout keeps for the connection's life (the schema's gate, the states,
//! the SQL reading above). So [`TransactionTrait`](sea_orm::TransactionTrait), whose
//! `begin` must return a `DatabaseTransaction`, is **not implemented**: code generic over it
//! does not compile against these types rather than run outside the tenant. Instead,
//! [`SeaOrmConnection::begin`] and [`SeaOrmRouter::begin`] return a [`SeaOrmTransaction`]
//! (which implements `ConnectionTrait`), and [`SeaOrmConnection::transaction`] and
//! [`SeaOrmRouter::transaction`] take the same closure as
//! `TransactionTrait::transaction`. Streaming (`StreamTrait`) is not offered: use `all()` or
//! a paginator.
//!
//! # Behind PgBouncer (transaction pooling)
//!
//! Build the sqlx router in [`SearchPathMode::Transaction`](tenant_schemas::SearchPathMode)
//! as tenant-schemas-sqlx's docs say; then only [`SeaOrmRouter::begin`] hands out anything,
//! and its statements are sent unnamed (nothing named outlives the transaction).
//!
//! # axum
//!
//! Feature `axum` adds an extractor, `axum::SeaOrmTenantDb`, that takes the router from the
//! request's extensions and the tenant from tenant-schemas-axum's `TenantLayer`.

#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod connection;
mod error;
mod exec;
mod router;
mod transaction;

#[cfg(feature = "axum")]
pub mod axum;

pub use connection::SeaOrmConnection;
pub use error::{Error, Result};
pub use router::SeaOrmRouter;
pub use transaction::SeaOrmTransaction;

/// The ORM this crate works with, re-exported so versions match.
pub use sea_orm;
