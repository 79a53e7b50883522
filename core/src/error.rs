//! The one error type of the crate, with the HTTP status each failure maps to.

use std::sync::Arc;

use http::StatusCode;

use crate::host::{Host, HostError};
use crate::schema::{SchemaName, SchemaNameError};
use crate::shard::ShardName;
use crate::tenant::{TenantId, TenantStatus};

/// A shorthand for `Result<T, tenant_schemas::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each variant naming the host, tenant or schema involved.
///
/// Adapters turn an error into a response with [`Error::status`]; [`Error::kind`] gives
/// a coarse category to match on without depending on the exact variant set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request's host is malformed (→ 400).
    #[error("invalid host: {0}")]
    InvalidHost(#[from] HostError),

    /// A schema name failed validation (→ 400).
    #[error(transparent)]
    InvalidSchemaName(#[from] SchemaNameError),

    /// No tenant is registered for this host (→ 404).
    #[error("no tenant for host `{host}`")]
    UnknownHost {
        /// The normalized host that was looked up.
        host: String,
    },

    /// A tenant connection was asked for outside any tenant scope (→ 500: a programming error).
    ///
    /// The router fails closed: it never falls back to `public` silently.
    #[error("no tenant in scope: run this code inside `scope::run` or a tenant-aware handler")]
    NoTenantInScope,

    /// The registry has no tenant with this schema (→ 404).
    #[error("tenant `{schema}` does not exist")]
    TenantNotFound {
        /// The schema looked for.
        schema: SchemaName,
    },

    /// A tenant with this schema already exists, or the schema itself does (→ 409).
    #[error("tenant `{schema}` already exists")]
    TenantExists {
        /// The schema that is taken.
        schema: SchemaName,
    },

    /// The domain is already registered to a tenant (→ 409).
    #[error("domain `{domain}` is already registered")]
    DomainTaken {
        /// The domain that is taken.
        domain: String,
    },

    /// The domain is not registered for this tenant (→ 404).
    #[error("domain `{domain}` is not registered for tenant `{schema}`")]
    DomainNotFound {
        /// The domain looked for.
        domain: String,
        /// The tenant it was looked for in.
        schema: SchemaName,
    },

    /// No connection could be had from the pool: the database is down or the pool is exhausted (→ 503).
    #[error("no database connection for schema `{schema}`: {}", pool_message(.source))]
    Pool {
        /// The schema the connection was for.
        schema: SchemaName,
        /// What the pool said.
        #[source]
        source: deadpool_postgres::PoolError,
    },

    /// A statement failed (→ 503 when the connection was lost, 500 otherwise).
    #[error("database error while {action} (schema `{schema}`): {}", pg_message(.source))]
    Database {
        /// What the library was doing, e.g. "switching search_path".
        action: &'static str,
        /// The schema it was done for.
        schema: SchemaName,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A tenant migration failed; the transaction it ran in was rolled back (→ 500).
    #[error("migration `{migration}` failed in schema `{schema}`: {}", pg_message(.source))]
    Migration {
        /// The schema being migrated.
        schema: SchemaName,
        /// The migration's name.
        migration: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A [no-transaction migration](crate::Migration::no_transaction) kept hitting its lock
    /// timeout; the schema stays at the version before (→ 500). Retry when the transaction
    /// holding the lock is over, or raise the timeout or retries.
    #[error("migration `{migration}` in schema `{schema}` could not get its locks within {timeout:?} in {attempts} attempts: {}", pg_message(.source))]
    MigrationLockTimeout {
        /// The schema being migrated.
        schema: SchemaName,
        /// The migration's file name.
        migration: String,
        /// How many times it was tried.
        attempts: u32,
        /// The lock timeout of each attempt.
        timeout: std::time::Duration,
        /// The last attempt's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A [no-transaction migration](crate::Migration::no_transaction) succeeded but the
    /// schema holds an invalid index (a failed concurrent build, e.g. one that `CREATE
    /// INDEX CONCURRENTLY IF NOT EXISTS` skipped); it is not recorded (→ 500). Run the
    /// doctor with `fix`.
    #[error("migration `{migration}` left schema `{schema}` with the invalid index `{index}` (a failed concurrent build): not recorded; `doctor --fix` repairs it")]
    InvalidIndex {
        /// The schema.
        schema: SchemaName,
        /// The migration's file name.
        migration: String,
        /// The invalid index.
        index: String,
    },

    /// A tenant was created (schema and registry rows committed) but a
    /// [no-transaction migration](crate::Migration::no_transaction), run after the creating
    /// transaction, failed: the tenant exists at `version` (→ 500). Migrating it again
    /// finishes it.
    #[error("tenant `{schema}` was created at version {version}, but then: {source}")]
    TenantCreatedBehind {
        /// The new tenant.
        schema: SchemaName,
        /// The version it was left at.
        version: i32,
        /// What failed.
        #[source]
        source: Box<Self>,
    },

    /// A migration applied to a schema was changed afterwards (its checksum differs).
    #[error("migration {file} was changed after it was applied to schema `{schema}`")]
    MigrationChanged {
        /// The schema whose history holds the old version.
        schema: SchemaName,
        /// The migration's file name.
        file: String,
    },

    /// A schema's history holds a version the migration set does not have (the schema is
    /// ahead of this code).
    #[error(
        "schema `{schema}` has migration version {version}, which this migration set does not know"
    )]
    UnknownMigration {
        /// The schema.
        schema: SchemaName,
        /// The unknown version.
        version: i32,
    },

    /// No database (shard) of that name is configured.
    #[error("no database named `{shard}` is configured")]
    UnknownShard {
        /// The shard's name.
        shard: String,
    },

    /// A tenant can only be cloned at the latest migration version.
    #[error("tenant `{schema}` is at version {version}, not the latest ({latest}): migrate it before cloning")]
    CloneVersion {
        /// The source tenant.
        schema: SchemaName,
        /// Its version.
        version: i32,
        /// The latest version.
        latest: i32,
    },

    /// This process's tenant migrations are older than the registry's: other tenants are
    /// already at a newer version (newer code migrated them), so a tenant created here would
    /// start behind them without a word. Run the creation with the newer migration set.
    #[error(
        "tenant `{schema}` not created: this process's tenant migrations end at version \
         {latest}, but tenants in the registry are at version {registry} (newer code migrated \
         them); create it with the newer migration set"
    )]
    MigrationSetBehind {
        /// The tenant that was not created.
        schema: SchemaName,
        /// The newest version of this process's tenant migration set.
        latest: i32,
        /// The newest version a tenant of the registry is at.
        registry: i32,
    },

    /// A migration file could not be read.
    #[error("cannot read migrations from `{path}`: {}", message(.source))]
    MigrationSource {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A lookup failed; the error is shared by every request that waited on the same lookup.
    #[error("tenant lookup for `{key}` failed: {source}")]
    Lookup {
        /// The host (or, for path and header strategies, the schema) being resolved.
        key: String,
        /// The resolver's error.
        #[source]
        source: Arc<Self>,
    },

    /// The operation is not available in the router's search-path mode (→ 500: a
    /// programming error).
    #[error("{what} is not available in transaction search-path mode: {instead}")]
    NotInTransactionMode {
        /// The operation.
        what: &'static str,
        /// What to do instead.
        instead: &'static str,
    },

    /// The library refuses SQL that would take the statements after it out of their
    /// tenant's transaction, e.g. a `COMMIT` sent through a
    /// [`TenantTransaction`](crate::TenantTransaction) (→ 500: a programming error).
    #[error("{what} is refused: {instead}")]
    Refused {
        /// What was refused.
        what: &'static str,
        /// What to do instead.
        instead: &'static str,
    },

    /// A custom resolver failed with its own error type.
    #[error("tenant resolver failed: {}", message(&**.0))]
    Resolver(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The tenant's schema does not exist on the database its connection is for: the tenant
    /// was deleted (or is being deleted), a stale cache or a resolver named a schema that was
    /// never created, or the tenant lives on another database (→ 404). Nothing ran: a search
    /// path whose first schema is missing would let every unqualified name fall through to
    /// `public`.
    #[error("schema `{schema}` does not exist on this database (deleted, never created, or on another shard)")]
    SchemaMissing {
        /// The missing schema.
        schema: SchemaName,
    },

    /// A migration was refused before anything ran (→ 500: fix the migration set). Every
    /// migration runs inside the transaction that creates or migrates its schema, so one
    /// that begins, ends or marks a transaction (`BEGIN`, `COMMIT`, `ROLLBACK`, `END`,
    /// `SAVEPOINT`, `PREPARE TRANSACTION` …) would commit a half-made tenant or run the
    /// migrations after it outside the schema's transaction.
    #[error("migration `{migration}` is refused: {reason}")]
    MigrationRefused {
        /// The migration's file name, e.g. `V3__backfill.sql`.
        migration: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A tenant's schema cannot have the name of a database role (→ 409): the default search
    /// path `"$user", public` puts a schema named like the connecting role first, so every
    /// connection of that role that was not switched to a tenant would read and write it.
    #[error("schema name `{schema}` is taken by a database role: `\"$user\"` in the default search path would resolve to it; choose another name")]
    SchemaNamedAfterRole {
        /// The refused schema.
        schema: SchemaName,
    },

    /// Deleting, erasing or moving the tenant would destroy objects outside its schema that
    /// depend on objects in it (→ 409): a view in `public` or in another tenant's schema
    /// selecting from its table, a foreign key of another schema's table referencing it, a
    /// table of another schema inheriting from it (its rows too), a column or default using
    /// its type or function … `DROP SCHEMA … CASCADE` would drop them silently. Nothing was
    /// changed. Drop those objects first, or (deleting, erasing) ask for them to be dropped
    /// with the schema: [`DropSchema::WithDependents`](crate::DropSchema::WithDependents),
    /// [`EraseOptions::with_dependents`](crate::EraseOptions::with_dependents).
    #[error(
        "tenant `{schema}` not {action}: {} outside its schema depend{} on objects in it and \
         would be dropped with it: {}; nothing was {action}: {instead}",
        count_objects(.dependents.len()),
        if .dependents.len() == 1 { "s" } else { "" },
        .dependents.join("; ")
    )]
    OutsideDependents {
        /// The tenant's schema.
        schema: SchemaName,
        /// What was refused: `deleted`, `erased` or `moved`.
        action: &'static str,
        /// Each dependent object and what it depends on, in PostgreSQL's words, e.g.
        /// `view public.all_notes depends on table acme.notes`.
        dependents: Vec<String>,
        /// How to proceed.
        instead: &'static str,
    },

    /// The connection settings cannot be used: a malformed connection string, an sslmode
    /// this build cannot honour, an unreadable root certificate file (→ 500: fix the
    /// configuration). The message never repeats the connection string, which may hold a
    /// password.
    #[error("invalid connection settings: {reason}")]
    ConnectionSettings {
        /// What is wrong.
        reason: String,
    },

    /// A tenant table has the name of a table in `public` and was not declared shared
    /// (→ 500: fix the migration set). Where the tenant's schema is missing from a search path,
    /// PostgreSQL skips it and the unqualified name silently means `public`'s table.
    #[error("table `{table}` would exist both in schema `{schema}` and in `public`, where unqualified names fall through when a schema is missing: rename it, or declare the shared name with `TenantMigrations::shared_name(\"{table}\")`")]
    TableInPublic {
        /// The tenant schema holding the table.
        schema: SchemaName,
        /// The table's name.
        table: String,
    },

    /// The tenant is registered but not served in its state (→ 503 in maintenance, 403
    /// suspended, 404 archived).
    #[error("tenant `{schema}` is not served: it is {status}")]
    TenantNotServed {
        /// The tenant's schema.
        schema: SchemaName,
        /// Its state.
        status: TenantStatus,
    },

    /// A Citus operation cannot be done: the database is no Citus coordinator, the tenant
    /// is on no node, a node address is malformed (→ 500).
    #[error("citus: {reason}")]
    Citus {
        /// What is wrong.
        reason: String,
    },

    /// A move of a tenant to another database
    /// ([`Tenancy::move_to_shard`](crate::Tenancy::move_to_shard)) was refused or given up:
    /// `reason` says why (the source's `wal_level`, a table without a primary key, the
    /// schema on the target already, a migration in progress, the target not catching up …).
    /// The tenant is served from where it was (→ 500).
    #[error("moving tenant `{schema}` to another database: {reason}")]
    ShardMove {
        /// The tenant's schema.
        schema: SchemaName,
        /// What is wrong.
        reason: String,
    },

    /// A cross-tenant report's query is malformed: it names no `{schema}` or holds more
    /// than one statement (→ 400).
    #[error("cannot run the report: {reason}")]
    ReportQuery {
        /// What is wrong.
        reason: String,
    },

    /// A cross-tenant report's query tried to write; reports run read-only and nothing
    /// was changed (→ 403).
    #[error("a report may not write: {}", pg_message(.source))]
    ReportWrites {
        /// The server's refusal.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A statement tried to write for a read-only tenant, or SQL that could make its
    /// transaction writable was refused before it was sent (→ 403).
    #[error("tenant `{schema}` is read-only: {source}")]
    TenantReadOnly {
        /// The tenant's schema.
        schema: SchemaName,
        /// The server's refusal (`read_only_sql_transaction`, 25006, a
        /// [`tokio_postgres::Error`]), or the library's.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A tenant export file could not be written or read back: unreadable, of another
    /// format, cut short, or not matching the restored tenant (→ 500). Nothing was restored.
    #[error("{action} tenant `{schema}`: {reason}")]
    TenantFile {
        /// `exporting` or `restoring`.
        action: &'static str,
        /// The tenant's schema (for a restore, the new one).
        schema: SchemaName,
        /// What is wrong.
        reason: String,
    },

    /// The tenant has all the connections its [`TenantLimits`](crate::TenantLimits) allow
    /// checked out, and this checkout could not wait for one (too many waiting already, or
    /// waited too long) (→ 503 with `Retry-After`). Other tenants are not affected.
    #[error("tenant `{schema}` is busy: its {limit} connections are in use")]
    TenantBusy {
        /// The tenant's schema.
        schema: SchemaName,
        /// Its connection limit.
        limit: u32,
    },

    /// Role mode: SQL that could leave the tenant's role (`SET ROLE`, `RESET ROLE`, `SET
    /// SESSION AUTHORIZATION`, `RESET ALL`, `DISCARD ALL`, `set_config(…)`, `DO`, `CALL`, a
    /// function body that sets a role, or a name spelt with `U&` escapes), or the raw client,
    /// was refused before anything was sent (→ 500: the application's SQL). See
    /// [`TenantRoles`](crate::TenantRoles).
    #[error(
        "tenant `{schema}` runs under its own role: {what} is refused (it could leave the role)"
    )]
    LeavesTenantRole {
        /// The tenant's schema.
        schema: SchemaName,
        /// What was refused.
        what: &'static str,
    },

    /// Role mode: the tenant has no role yet (registered before role mode was turned on, or
    /// not registered at all) (→ 500). Nothing ran: without its role it would run as the
    /// login role, which reaches every tenant. `tenant-schemas roles sync`
    /// ([`Tenancy::sync_roles`](crate::Tenancy::sync_roles)) gives every tenant one.
    #[error("tenant `{schema}` has no role of its own (run `tenant-schemas roles sync`)")]
    NoTenantRole {
        /// The tenant's schema.
        schema: SchemaName,
    },

    /// Role mode's settings are invalid, or role mode is off where it is needed.
    #[error("role mode: {reason}")]
    InvalidRoleSetting {
        /// What is wrong.
        reason: String,
    },

    /// A request's credential was issued for another tenant than the one it reached (a
    /// session or token reused across tenants; see [`TenantClaim`](crate::TenantClaim))
    /// (→ 403). Nothing ran for it.
    #[error("a credential issued for {claimed} was presented to tenant `{schema}`")]
    CredentialForOtherTenant {
        /// The tenant the request reached.
        schema: SchemaName,
        /// Whom the credential was issued for, in words (`schema `acme``, `tenant id 7`).
        claimed: String,
    },

    /// A tenant known by its registry id — a job's [`TenantRef`](crate::TenantRef), or a
    /// tenant resolved before — no longer exists: no tenant has its id any more. It was
    /// deleted, and one re-created in the same schema has a new id (→ 404). Nothing ran.
    #[error(
        "tenant `{schema}` (id {id}) no longer exists: it was deleted since it was resolved or queued"
    )]
    TenantGone {
        /// The id the job or the resolved tenant carried.
        id: TenantId,
        /// The schema it carried.
        schema: SchemaName,
    },

    /// The tenant a job's [`TenantRef`](crate::TenantRef) names lives in another schema or on
    /// another database than when the job was queued (renamed, moved) (→ 409). Nothing ran:
    /// the job's data may name the old place.
    #[error("tenant id {id} was schema `{schema}` on database `{shard}` when the job was queued and is now `{now_schema}` on `{now_shard}`: the job was not run")]
    TenantMoved {
        /// The tenant's id.
        id: TenantId,
        /// The schema the job carried.
        schema: SchemaName,
        /// The database (shard) the job carried.
        shard: ShardName,
        /// The tenant's schema now.
        now_schema: SchemaName,
        /// The tenant's database now.
        now_shard: ShardName,
    },

    /// A [`TenantRef`](crate::TenantRef) was asked of a tenant that did not come from the
    /// registry and so has no id (→ 500: a programming error).
    #[error("tenant `{schema}` has no registry id (it did not come from the registry): a background job can only refer to a registered tenant")]
    TenantNotRegistered {
        /// The tenant's schema.
        schema: SchemaName,
    },

    /// A cache key or storage path that would not stay inside its tenant's prefix: empty,
    /// absolute, with `..`, a backslash, NUL or another control character (→ 400).
    #[error("invalid tenant key {key:?}: {reason}")]
    InvalidKey {
        /// The key or path as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A baseline version beyond the newest tenant migration (→ 400).
    #[error(
        "cannot baseline at version {version}: the newest tenant migration is version {latest}"
    )]
    BaselineVersion {
        /// The version asked for.
        version: i32,
        /// The newest tenant migration's version.
        latest: i32,
    },

    /// A schema refused for a baseline or an import (→ 400), e.g. one without any table: its
    /// migrations cannot have been applied.
    #[error("cannot baseline schema `{schema}` at version {version}: {reason}")]
    BaselineRefused {
        /// The schema.
        schema: SchemaName,
        /// The version asked for.
        version: i32,
        /// Why.
        reason: &'static str,
    },

    /// The tenants to import could not be read from their source: a table or column
    /// missing, a column of the wrong type, a row without a schema name, an invalid domain
    /// (→ 400). Nothing was imported.
    #[error("cannot import tenants: {reason}")]
    ImportSource {
        /// What is wrong, naming the table, column or row.
        reason: String,
    },
}

/// A coarse category of [`Error`], stable across new variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input (host, schema name) is malformed.
    InvalidInput,
    /// The tenant, host or domain does not exist.
    NotFound,
    /// The tenant or domain already exists, or the change would destroy objects that
    /// depend on the tenant's.
    Conflict,
    /// The database is unreachable or the pool is exhausted; retrying later may work.
    Unavailable,
    /// The code asked for a tenant connection with no tenant in scope.
    NoTenantInScope,
    /// The tenant is not served in its state, or may not write (suspended, read-only).
    Forbidden,
    /// Anything else: a failed statement or migration, a resolver's own error.
    Internal,
}

impl Error {
    /// The category of this error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidHost(_)
            | Self::InvalidSchemaName(_)
            | Self::InvalidKey { .. }
            | Self::BaselineVersion { .. }
            | Self::BaselineRefused { .. }
            | Self::ImportSource { .. }
            | Self::ReportQuery { .. } => ErrorKind::InvalidInput,
            Self::UnknownHost { .. }
            | Self::TenantNotFound { .. }
            | Self::TenantGone { .. }
            | Self::DomainNotFound { .. }
            | Self::SchemaMissing { .. } => ErrorKind::NotFound,
            Self::TenantExists { .. }
            | Self::TenantMoved { .. }
            | Self::DomainTaken { .. }
            | Self::SchemaNamedAfterRole { .. }
            | Self::OutsideDependents { .. }
            | Self::MigrationSetBehind { .. } => ErrorKind::Conflict,
            Self::MigrationRefused { .. } | Self::TableInPublic { .. } => ErrorKind::Internal,
            Self::Pool { .. } | Self::TenantBusy { .. } => ErrorKind::Unavailable,
            Self::TenantNotServed { status, .. } => match status {
                TenantStatus::Maintenance => ErrorKind::Unavailable,
                TenantStatus::Archived => ErrorKind::NotFound,
                _ => ErrorKind::Forbidden,
            },
            Self::TenantReadOnly { .. }
            | Self::ReportWrites { .. }
            | Self::CredentialForOtherTenant { .. } => ErrorKind::Forbidden,
            Self::NoTenantRole { .. } | Self::LeavesTenantRole { .. } => ErrorKind::Internal,
            Self::InvalidRoleSetting { .. } => ErrorKind::InvalidInput,
            Self::Database { source, .. } | Self::Migration { source, .. }
                if is_connection_lost(source) =>
            {
                ErrorKind::Unavailable
            }
            // The tenant's `statement_timeout` (or an operator) cancelled the statement: the
            // tenant is over its share for now, not broken.
            Self::Database { .. } if self.is_cancelled() => ErrorKind::Unavailable,
            Self::NoTenantInScope => ErrorKind::NoTenantInScope,
            Self::Lookup { source, .. } => source.kind(),
            _ => ErrorKind::Internal,
        }
    }

    /// The HTTP status an adapter answers with: 400, 403, 404, 409, 503 or 500.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self.kind() {
            ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NoTenantInScope | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the server cancelled the statement (`57014`, `query_canceled`): it ran longer
    /// than the tenant's `statement_timeout`
    /// ([`TenantLimits::statement_timeout`](crate::TenantLimits::statement_timeout)), or was
    /// cancelled by an operator. The adapters answer 503 with `Retry-After`.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Database { source, .. }
            if source.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED))
    }

    /// The server's error report, when a statement failed on the server.
    #[must_use]
    pub fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            Self::Database { source, .. }
            | Self::Migration { source, .. }
            | Self::MigrationLockTimeout { source, .. }
            | Self::ReportWrites { source } => source.as_db_error(),
            Self::TenantReadOnly { source, .. } => source
                .downcast_ref::<tokio_postgres::Error>()
                .and_then(tokio_postgres::Error::as_db_error),
            Self::TenantCreatedBehind { source, .. } => source.as_db_error(),
            Self::Lookup { source, .. } => source.as_db_error(),
            _ => None,
        }
    }

    pub(crate) fn db(
        action: &'static str,
        schema: &SchemaName,
        source: tokio_postgres::Error,
    ) -> Self {
        if source.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION) {
            return Self::TenantReadOnly {
                schema: schema.clone(),
                source: Box::new(source),
            };
        }
        Self::Database {
            action,
            schema: schema.clone(),
            source,
        }
    }

    /// A database error said to have happened while doing `action` instead of what a
    /// helper reported; other errors as they are.
    pub(crate) fn while_doing(self, action: &'static str) -> Self {
        match self {
            Self::Database { source, schema, .. } => Self::Database {
                action,
                schema,
                source,
            },
            other => other,
        }
    }

    /// SQL refused for a read-only tenant before it was sent: it could make the tenant's
    /// transaction writable (`what` says how).
    /// Role mode's refusal of SQL that could leave the tenant's role.
    pub(crate) fn leaves_role_refused(schema: &SchemaName) -> Self {
        Self::LeavesTenantRole {
            schema: schema.clone(),
            what: "SQL that could change the session's role (SET ROLE, RESET ROLE, SET SESSION \
                   AUTHORIZATION, RESET ALL, DISCARD ALL, set_config, DO, CALL, CREATE FUNCTION or \
                   PROCEDURE, a body setting a role, functions running SQL text such as \
                   query_to_xml or ts_stat, U& names)",
        }
    }

    /// Transaction mode: temporary objects (searched before the path) and held cursors (with
    /// the rows they read under the tenant's path and role) outlive the transaction on the
    /// session, which a pooler hands to another client next.
    pub(crate) fn session_objects_refused() -> Self {
        Self::NotInTransactionMode {
            what: "SQL that makes temporary objects or cursors outliving the transaction \
                   (CREATE TEMP …, pg_temp, DECLARE … WITH HOLD)",
            instead: "a temporary table ON COMMIT DROP inside ConnectionScope::transaction()",
        }
    }

    pub(crate) fn session_settings_refused() -> Self {
        Self::NotInTransactionMode {
            what: "a setting made for the session (SET without LOCAL, RESET, set_config(…, \
                   false)): it would stay on the server connection after the statement's \
                   transaction, for whichever tenant or client uses it next",
            instead: "SET LOCAL (or set_config(…, true)) inside ConnectionScope::transaction()",
        }
    }

    pub(crate) fn read_only_refused(schema: &SchemaName, what: &'static str) -> Self {
        Self::TenantReadOnly {
            schema: schema.clone(),
            source: Box::new(ReadOnlyRefusal(what)),
        }
    }

    pub(crate) fn pool(schema: &SchemaName, source: deadpool_postgres::PoolError) -> Self {
        Self::Pool {
            schema: schema.clone(),
            source,
        }
    }

    pub(crate) fn tenant_not_found(schema: &SchemaName) -> Self {
        Self::TenantNotFound {
            schema: schema.clone(),
        }
    }

    pub(crate) fn domain_not_found(domain: &Host, schema: &SchemaName) -> Self {
        Self::DomainNotFound {
            domain: domain.to_string(),
            schema: schema.clone(),
        }
    }
}

/// The server's own message (with its SQLSTATE) where there is one; the driver's
/// `Display` alone only says "db error". Otherwise the driver's message and its causes'
/// (its `Display` says "error connecting to server" and leaves out why).
pub(crate) fn pg_message(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} ({}: {})", db.message(), db.severity(), db.code().code()),
        None => with_sources(err.to_string(), std::error::Error::source(err)),
    }
}

/// `1 object`, `2 objects` …
fn count_objects(n: usize) -> String {
    if n == 1 {
        "1 object".to_owned()
    } else {
        format!("{n} objects")
    }
}

/// What the pool says, with the driver's real message where the pool has one: its
/// `Display` of a backend error is "Error occurred while creating a new object: db error".
fn pool_message(err: &deadpool_postgres::PoolError) -> String {
    use deadpool_postgres::{HookError, PoolError};
    match err {
        PoolError::Backend(e) => pg_message(e),
        PoolError::PostCreateHook(HookError::Backend(e)) => {
            format!("post-create hook failed: {}", pg_message(e))
        }
        PoolError::PostCreateHook(HookError::Message(m)) => {
            format!("post-create hook failed: {m}")
        }
        other => with_sources(other.to_string(), std::error::Error::source(other)),
    }
}

/// Any error's message followed by its causes' (see [`with_sources`]).
pub(crate) fn message(err: &(dyn std::error::Error + 'static)) -> String {
    match err.downcast_ref::<tokio_postgres::Error>() {
        Some(pg) => pg_message(pg),
        None => with_sources(err.to_string(), err.source()),
    }
}

/// `text`, then the message of each error of the `source` chain that `text` does not
/// already include (many errors repeat their cause in their own message), `: `-separated.
pub(crate) fn with_sources(
    mut text: String,
    mut source: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    while let Some(err) = source {
        let (shown, next) = match err.downcast_ref::<tokio_postgres::Error>() {
            // Its own chain is in its message.
            Some(pg) => (pg_message(pg), None),
            None => (err.to_string(), err.source()),
        };
        if !shown.is_empty() && !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = next;
    }
    text
}

/// True when the error means the connection is gone (closed, I/O error, server shutdown or
/// the backend terminated), as opposed to a statement the server rejected.
pub(crate) fn is_connection_lost(err: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if err.is_closed() {
        return true;
    }
    match err.code() {
        Some(code) => {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || code.code().starts_with("08")
        }
        // No SQLSTATE: an I/O or protocol error on the socket.
        None => std::error::Error::source(err)
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()),
    }
}

/// The library's refusal of SQL for a read-only tenant, before it was sent.
#[derive(Debug, thiserror::Error)]
#[error("{0} is refused for a read-only tenant (nothing was sent)")]
struct ReadOnlyRefusal(&'static str);
