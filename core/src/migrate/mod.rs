//! Migrations: ordered SQL files (`V<n>__<name>.sql`, refinery's naming) for the tenant
//! schemas and for `public`.
//!
//! Each schema keeps its own history (`tenant_schemas_history`: version, name, checksum),
//! each schema is migrated in its own transaction, and the registry records every tenant's
//! version, so "is anything to do?" over all tenants is one query. A migration whose SQL
//! changed after it was applied is an error naming it.
//!
//! Why not refinery: its runner keeps one history table per connection target and commits
//! per migration or per run; here a tenant's migrations must run inside the transaction
//! that creates the tenant (atomic creation), every schema needs its own history, and the
//! registry's version column must move in the same transaction. The runner below is the
//! smallest that does that; the file naming stays refinery's.
//!
//! Because every migration runs inside its schema's transaction, a migration may not begin,
//! end or mark a transaction itself (`BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT` …): such a
//! set is refused with [`Error::MigrationRefused`] when it is built (`from_files`, `from_dir`)
//! or, for sets built with [`TenantMigrations::with`], before anything runs. A migration may
//! change session state (`SET`, `RESET`, `set_config`, a `DO` block …): that is common and
//! legitimate (`SET LOCAL lock_timeout`), so it is not refused but isolated instead. The
//! schema's search path is set again before every migration, so one migration's `SET
//! search_path` or `RESET ALL` cannot make the next one land in another schema, and a
//! connection that ran such a migration is closed afterwards instead of going back to the
//! pool, where a session-level change would outlive the transaction.
//!
//! Some operations cannot run in a transaction at all, typically `CREATE INDEX
//! CONCURRENTLY`, which builds an index without blocking writes to a large table. Mark such a
//! migration (one statement) with a first line [`NO_TRANSACTION_MARKER`]
//! (`-- tenant-schemas: no-transaction`) or build it with
//! [`TenantMigrations::with_no_transaction`]: it runs after the migrations before it have
//! committed, on a connection of its own, under `SET lock_timeout`
//! ([`TenantMigrations::lock_timeout`], 5 s) with a few retries on lock timeouts
//! ([`TenantMigrations::lock_retries`]), and its version is recorded only once it succeeded;
//! the migrations after it run in a transaction again. Creating a tenant commits it at the
//! version before the first such step, then runs the rest (see
//! [`Tenancy::create_tenant`](crate::Tenancy::create_tenant)). A build that fails leaves the
//! schema at the version before and an invalid index, which the doctor reports and repairs
//! ([`Finding::InvalidIndex`](crate::Finding::InvalidIndex)). `no_transaction.rs` runs them.
//!
//! [`RunOptions::canary`] and [`RunOptions::wave`] stage a roll-out: a few canary tenants
//! first, then the others in waves of at most N, in a stable order.
//!
//! A tenant table may not have the name of a table in `public` unless declared with
//! [`TenantMigrations::shared_name`]: where a search path names a schema that is missing,
//! PostgreSQL skips it and unqualified names silently resolve in `public`.
//!
//! The files of this folder: `set.rs` (a migration set), `source.rs` (sets from SQL files),
//! `apply.rs` (one schema, inside the caller's transaction), `no_transaction.rs` (steps
//! outside any transaction), `baseline.rs` (recording migrations as applied without
//! running them), `run.rs` (every tenant) and `status.rs` (what each schema holds against
//! its set, and what a run would do: read with the run's own selection and checks).
//!
//! ```
//! use tenant_schemas::TenantMigrations;
//!
//! let migrations = TenantMigrations::new()
//!     .with("create_notes", "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)")
//!     .with("add_created_at", "ALTER TABLE notes ADD COLUMN created_at timestamptz DEFAULT now()");
//! assert_eq!(migrations.len(), 2);
//! assert_eq!(migrations.latest(), 2);
//! ```

mod apply;
mod baseline;
mod no_transaction;
mod run;
mod set;
mod source;
mod status;

pub use apply::HISTORY_TABLE;
pub(crate) use apply::{refuse_shadowing, shadowed_tables};
pub use baseline::Baselined;
pub(crate) use no_transaction::{invalid_indexes, quote, STEP_LOCK};
pub(crate) use run::{default_parallelism, Runner, MIGRATE_LOCK};
pub use run::{MigrationReport, Outcome, Progress, RunOptions, SchemaReport};
pub(crate) use set::MigrationSets;
pub use set::{Migration, TenantMigrations, NO_TRANSACTION_MARKER};
pub use status::{Drift, DryRun, SchemaStatus};
