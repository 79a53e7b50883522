//! The command line's arguments, and their conversion into the library's types.
//!
//! Schema names and domains are checked while parsing, so a malformed one is a usage error
//! (exit 2) like any other argument clap rejects.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};
use tenant_schemas::{
    CitusNode, Host, ImportSource, NewTenant, RunOptions, SchemaName, TenantStatus, TransferMode,
};

use crate::error::EXIT_CODES;

/// Where tenant migrations are looked for when `--migrations` is not given.
pub(crate) const DEFAULT_MIGRATIONS: &str = "migrations/tenant";
/// Where shared migrations are looked for when `--shared-migrations` is not given.
pub(crate) const DEFAULT_SHARED_MIGRATIONS: &str = "migrations/shared";

#[derive(Parser)]
#[command(
    name = "tenant-schemas",
    version,
    about = "Schema-per-tenant PostgreSQL: migrate, create, clone, delete, rename-schema, state, list, domains, run, doctor, status, import, move, rebalance",
    after_help = EXIT_CODES
)]
pub(crate) struct Cli {
    /// PostgreSQL connection string of the database holding the registry (a direct
    /// connection, not through PgBouncer in transaction mode: migrations hold an advisory
    /// lock).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub(crate) database_url: Option<String>,
    /// PEM file of the root certificates trusted when a URL's sslmode is verify-ca or
    /// verify-full (or require, which then verifies the chain), for every URL that does not
    /// name its own sslrootcert. URLs take libpq's sslmode (disable, prefer, require,
    /// verify-ca, verify-full) and sslrootcert parameters.
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) ssl_root_cert: Option<PathBuf>,
    /// Another database tenants live on, as NAME=URL (repeatable); the registry stays on
    /// --database-url.
    #[arg(long = "shard", value_name = "NAME=URL", value_parser = shard_arg, global = true)]
    pub(crate) shards: Vec<(String, String)>,
    /// A file of NAME=URL lines, one shard each (blank lines and lines starting with # are
    /// skipped); combined with --shard.
    #[arg(long = "shards", value_name = "FILE", global = true)]
    pub(crate) shards_file: Option<PathBuf>,
    /// Tenant migrations directory (V<n>__<name>.sql files) [default: migrations/tenant].
    /// Must exist for the commands that use it (migrate, create, clone, doctor, status,
    /// move --to-shard).
    #[arg(long, value_name = "DIR", global = true)]
    pub(crate) migrations: Option<PathBuf>,
    /// Shared (public) migrations directory [default: migrations/shared]. When given, it
    /// must exist; the default may be missing (then there are no shared migrations, and
    /// migrate and status say so).
    #[arg(long, value_name = "DIR", global = true)]
    pub(crate) shared_migrations: Option<PathBuf>,
    /// A table name that may exist both in tenant schemas and in public on purpose
    /// (repeatable); other such names are refused by migrate and create, and reported by
    /// doctor.
    #[arg(long = "shared-name", global = true)]
    pub(crate) shared_names: Vec<String>,
    /// Role mode: each tenant runs under its own database role (`TenancyBuilder::
    /// tenant_roles`). Commands that create tenants (create, clone, restore, import) give
    /// them one; `roles sync` gives one to every tenant that has none.
    #[arg(long, global = true)]
    pub(crate) tenant_roles: bool,
    /// Role mode's group role, which every tenant role is a member of
    /// [default: tenant_schemas_tenants].
    #[arg(long, value_name = "ROLE", global = true)]
    pub(crate) tenant_group: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args, Clone)]
pub(crate) struct Selection {
    /// Only this schema (repeatable; `public` names the public schema). A schema the
    /// registry does not have is an error.
    #[arg(long = "schema", value_parser = target_schema)]
    pub(crate) schemas: Vec<SchemaName>,
    /// Leave the public schema alone.
    #[arg(long)]
    pub(crate) skip_public: bool,
    /// Schemas handled at once (default: from the core count and pool size).
    #[arg(long, default_value_t = 0)]
    pub(crate) parallel: usize,
}

/// A staged roll-out: canaries first, then waves.
#[derive(Args, Clone, Default)]
pub(crate) struct Rollout {
    /// Migrate only this tenant (repeatable), after the shared migrations: the canaries of a
    /// roll-out. The other tenants stay behind for a later run.
    #[arg(long = "canary", value_name = "SCHEMA", value_parser = tenant_schema, conflicts_with = "dry_run")]
    pub(crate) canary: Vec<SchemaName>,
    /// Migrate at most N of the tenants that are behind (canaries first, then by schema
    /// name), leaving the rest for the next run: a roll-out in waves.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "dry_run")]
    pub(crate) wave: Option<u64>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the shared migrations in public, then bring every tenant to the latest version.
    #[command(after_help = EXIT_CODES)]
    Migrate {
        #[command(flatten)]
        selection: Selection,
        /// List each schema's pending migrations; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Run nothing: record the tenant migrations up to VERSION as applied in the
        /// selected tenants' schemas, which already hold those tables (adopting a
        /// deployment; like Flyway's baseline or Django's --fake). A later `migrate` runs
        /// the ones after it.
        #[arg(long, value_name = "VERSION", conflicts_with = "dry_run")]
        baseline: Option<i32>,
        #[command(flatten)]
        rollout: Rollout,
    },
    /// Per schema: its version, the newest, pending migrations and drift (registry and
    /// schema disagreeing). Only reads; exits 1 when there is drift.
    #[command(after_help = EXIT_CODES)]
    Status {
        /// Only this schema (repeatable).
        #[arg(long = "schema", value_parser = target_schema)]
        schemas: Vec<SchemaName>,
    },
    /// Create a tenant: schema, migrations and registry rows in one transaction. Installs
    /// the registry when the database has none (and says so).
    #[command(after_help = EXIT_CODES)]
    Create {
        /// The schema name.
        #[arg(value_parser = tenant_schema)]
        schema: SchemaName,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// A domain (repeatable; the first is primary).
        #[arg(long = "domain", value_parser = host)]
        domains: Vec<Host>,
        /// The shard (a --shard NAME) to create it on (default: the one with the fewest
        /// tenants).
        #[arg(long, value_name = "NAME")]
        in_shard: Option<String>,
    },
    /// Create a tenant as a copy of another, rows included.
    #[command(after_help = EXIT_CODES)]
    Clone {
        /// The tenant to copy.
        #[arg(value_parser = target_schema)]
        source: SchemaName,
        /// The new schema.
        #[arg(value_parser = tenant_schema)]
        schema: SchemaName,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// A domain (repeatable; the first is primary).
        #[arg(long = "domain", value_parser = host)]
        domains: Vec<Host>,
    },
    /// Write a tenant's data to a file: its registry row, then every table's rows and every
    /// sequence's position, from one snapshot (format: docs/export-format.md). Prints the
    /// file's SHA-256, to keep (e.g. on an erasure's receipt).
    #[command(after_help = EXIT_CODES)]
    Export {
        /// The tenant's schema.
        #[arg(value_parser = tenant_schema)]
        schema: SchemaName,
        /// The file to write (an existing one is refused).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore an export as a new tenant, beside the one exported: created with the tenant
    /// migrations (at the export's version), its rows loaded and checked in one transaction,
    /// then served. A failure leaves nothing; an existing schema is refused.
    #[command(after_help = EXIT_CODES)]
    Restore {
        /// The export file.
        file: PathBuf,
        /// The new tenant's schema.
        #[arg(long = "as", value_parser = tenant_schema)]
        schema: SchemaName,
        /// Display name [default: the schema].
        #[arg(long)]
        name: Option<String>,
        /// A domain (repeatable; the first is primary).
        #[arg(long = "domain", value_parser = host)]
        domains: Vec<Host>,
    },
    /// Delete a tenant's registry rows (and its schema with --drop-schema).
    #[command(after_help = EXIT_CODES)]
    Delete {
        /// The schema name.
        #[arg(value_parser = target_schema)]
        schema: SchemaName,
        /// Also drop the schema and everything in it. Refused (nothing deleted) when objects
        /// outside the schema depend on objects in it (a view, a foreign key, a child table
        /// in public or in another tenant's schema): they are named.
        #[arg(long)]
        drop_schema: bool,
        /// With --drop-schema: drop the objects outside the schema that depend on it too
        /// (DROP SCHEMA ... CASCADE).
        #[arg(long, requires = "drop_schema")]
        cascade: bool,
    },
    /// Erase a tenant: its schema and every row in it, its registry row and domains (put in
    /// maintenance first, so the rows counted are the rows erased). Prints the receipt:
    /// each table and its rows, and the prefixes of its tenant-aware keys to purge in the
    /// stores that hold them.
    #[command(after_help = EXIT_CODES)]
    Erase {
        /// The tenant's schema.
        #[arg(value_parser = tenant_schema)]
        schema: SchemaName,
        /// The checksum of the export taken before, kept on the receipt.
        #[arg(long)]
        export_checksum: Option<String>,
        /// Erase the objects outside the schema that depend on it too (a view, a foreign
        /// key, a child table in public or in another tenant's schema; DROP SCHEMA ...
        /// CASCADE); without it such objects refuse the erasure (nothing erased).
        #[arg(long)]
        cascade: bool,
    },
    /// Move a tenant to another schema name (ALTER SCHEMA ... RENAME TO and its registry row,
    /// in one transaction). Running instances that listen for changes follow within moments;
    /// the display name is unchanged.
    #[command(after_help = EXIT_CODES)]
    RenameSchema {
        /// The tenant's schema now.
        #[arg(value_parser = target_schema)]
        old: SchemaName,
        /// Its new schema name.
        #[arg(value_parser = target_schema)]
        new: SchemaName,
    },
    /// Set a tenant's state: active, read-only (served, writes fail), maintenance (503 with
    /// Retry-After), suspended (403) or archived (404, schema kept). Running instances that
    /// listen for changes follow within moments.
    #[command(after_help = EXIT_CODES)]
    State {
        /// The schema name.
        #[arg(value_parser = target_schema)]
        schema: SchemaName,
        /// The new state.
        #[arg(value_parser = tenant_state)]
        state: TenantStatus,
    },
    /// Set or clear a tenant's own connection limit (at most that many connections checked
    /// out for it at a time in each running instance) or statement timeout (its statements
    /// running longer are cancelled by the server), over the instance's defaults (see
    /// `TenantLimits`). Running instances that listen for changes follow within moments.
    #[command(after_help = EXIT_CODES)]
    #[command(group(clap::ArgGroup::new("limit").required(true).multiple(true)
        .args(["max_connections", "clear", "statement_timeout", "clear_statement_timeout"])))]
    Limit {
        /// The schema name.
        #[arg(value_parser = tenant_schema)]
        schema: SchemaName,
        /// The connection limit (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "clear")]
        max_connections: Option<u32>,
        /// Remove the tenant's own connection limit (the instance's default applies).
        #[arg(long)]
        clear: bool,
        /// The statement timeout in milliseconds (at least 10).
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(10..),
            conflicts_with = "clear_statement_timeout")]
        statement_timeout: Option<u32>,
        /// Remove the tenant's own statement timeout (the instance's default applies).
        #[arg(long)]
        clear_statement_timeout: bool,
    },
    /// Set or clear a tenant's storage quota (`usage --enforce-quotas` makes a tenant over
    /// it read-only).
    #[command(after_help = EXIT_CODES)]
    #[command(group(clap::ArgGroup::new("quota").required(true).args(["bytes", "clear"])))]
    Quota {
        /// The schema name.
        #[arg(value_parser = tenant_schema)]
        schema: SchemaName,
        /// The quota: bytes, or with a unit (500MB, 10GB; powers of 1000).
        #[arg(long, value_parser = size)]
        bytes: Option<u64>,
        /// Remove the quota.
        #[arg(long)]
        clear: bool,
    },
    /// Each tenant's schema size (tables, indexes, TOAST) and quota. Only reads, unless
    /// --enforce-quotas: then tenants over their quota are made read-only.
    #[command(after_help = EXIT_CODES)]
    Usage {
        /// Make active tenants over their storage quota read-only.
        #[arg(long)]
        enforce_quotas: bool,
    },
    /// List tenants. Only reads.
    #[command(after_help = EXIT_CODES)]
    List,
    /// Table names tenant schemas may share with `public` (e.g. Django's own tables after
    /// adopting django-tenants), kept in the registry: every command and instance allows
    /// them without --shared-name.
    #[command(subcommand, after_help = EXIT_CODES)]
    SharedNames(SharedNamesCommand),
    /// Add, remove or promote a tenant's domains.
    #[command(subcommand, after_help = EXIT_CODES)]
    Domains(DomainCommand),
    /// Role mode: tenants' own database roles (implies --tenant-roles).
    #[command(subcommand, after_help = EXIT_CODES)]
    Roles(RolesCommand),
    /// Run SQL on every tenant, each in its schema; prints each schema's rows (for a query)
    /// or affected-row count (for a command).
    #[command(after_help = EXIT_CODES)]
    Run {
        /// The SQL text.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        sql: Option<String>,
        /// A file holding the SQL.
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        selection: Selection,
    },
    /// Register existing schemas as tenants without touching their data: from a query or
    /// from django-tenants' tables, with their domains; --baseline records the migrations
    /// they hold already. All of them or none.
    #[command(
        after_help = EXIT_CODES,
        group(ArgGroup::new("import_source").required(true).args(["query", "from_django_tenants"]))
    )]
    Import {
        #[command(flatten)]
        source: ImportArgs,
        /// Record the tenant migrations up to VERSION as applied in each imported schema
        /// (default 0: none; a history the schema has is kept).
        #[arg(long, value_name = "VERSION", default_value_t = 0)]
        baseline: i32,
        /// Write nothing: list the tenants and every problem that would refuse the import,
        /// all at once, each with what resolves it. Exits 1 when there are problems.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the registry against the schemas (only reads); --fix migrates tenants that are
    /// behind. Exits 1 when problems remain.
    #[command(after_help = EXIT_CODES)]
    Doctor {
        /// Repair what is safe to repair.
        #[arg(long)]
        fix: bool,
    },
    /// Move a tenant online, its requests working meanwhile: to another database
    /// (`--to-shard NAME`, one of `--shard`/`--shards`, or `default`) by logical
    /// replication of its schema (needs wal_level = logical on the source, a superuser,
    /// and a primary key on every table); or, on Citus, to another worker (`--to
    /// HOST:PORT`) with citus_schema_move.
    #[command(after_help = EXIT_CODES)]
    Move {
        /// The tenant.
        #[arg(value_parser = tenant_schema)]
        schema: SchemaName,
        /// Citus: the worker, as the coordinator's metadata names it.
        #[arg(long, value_name = "HOST:PORT", value_parser = citus_node,
              required_unless_present = "to_shard", conflicts_with = "to_shard")]
        to: Option<CitusNode>,
        /// The database (shard) to move the tenant to.
        #[arg(long, value_name = "NAME")]
        to_shard: Option<String>,
        /// How the tables are copied: auto (logical replication; needs a primary key or
        /// replica identity on every table), force_logical, or block_writes.
        #[arg(long, default_value = "auto", value_parser = transfer_mode)]
        mode: TransferMode,
    },
    /// Citus: move tenants between workers until each holds about as many (the moves of
    /// Citus' rebalance plan, each under the cut-over fence); prints the tenants it moved.
    #[command(after_help = EXIT_CODES)]
    Rebalance {
        /// How the tables are copied (see `move`).
        #[arg(long, default_value = "auto", value_parser = transfer_mode)]
        mode: TransferMode,
    },
}

/// Where `import` reads the tenants from.
#[derive(Args, Clone)]
#[group(skip)]
pub(crate) struct ImportArgs {
    /// A query on the registry's database, run read-only, returning the columns
    /// schema_name, and optionally name, domain, is_primary and shard (one row per tenant
    /// and domain).
    #[arg(long, value_name = "SQL")]
    pub(crate) query: Option<String>,
    /// Read django-tenants' tenant and domain tables.
    #[arg(long)]
    pub(crate) from_django_tenants: bool,
    /// With --from-django-tenants: keep Django's own tables (django_migrations,
    /// django_content_type, auth_permission …), which django-tenants leaves in `public`
    /// and in every tenant schema, as shared names in the registry first.
    #[arg(long, requires = "from_django_tenants")]
    pub(crate) declare_django_tables: bool,
    /// django-tenants' tenant model table.
    #[arg(
        long,
        value_name = "TABLE",
        default_value = "customers_client",
        conflicts_with = "query"
    )]
    pub(crate) tenant_table: String,
    /// django-tenants' domain model table.
    #[arg(
        long,
        value_name = "TABLE",
        default_value = "customers_domain",
        conflicts_with = "query"
    )]
    pub(crate) domain_table: String,
}

impl ImportArgs {
    /// The library's import source.
    pub(crate) fn source(&self) -> ImportSource {
        match &self.query {
            Some(sql) => ImportSource::query(sql.as_str()),
            None => ImportSource::django_tenants_tables(
                self.tenant_table.as_str(),
                self.domain_table.as_str(),
            ),
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum SharedNamesCommand {
    /// List the shared names: kept in the registry, and given with --shared-name.
    List,
    /// Keep table names as shared names in the registry.
    Add {
        /// The table names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove a shared name from the registry.
    Remove {
        /// The table name.
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum RolesCommand {
    /// Give every tenant without a role its own (existing tenants adopted onto role mode),
    /// and make every tenant role's grants on its schema whole again. Idempotent.
    Sync,
    /// Each tenant's role. Only reads.
    List,
}

#[derive(Subcommand)]
pub(crate) enum DomainCommand {
    /// Add a domain.
    Add {
        /// The tenant.
        #[arg(value_parser = target_schema)]
        schema: SchemaName,
        /// The domain.
        #[arg(value_parser = host)]
        domain: Host,
        /// Make it the primary domain.
        #[arg(long)]
        primary: bool,
    },
    /// Remove a domain.
    Remove {
        /// The tenant.
        #[arg(value_parser = target_schema)]
        schema: SchemaName,
        /// The domain.
        #[arg(value_parser = host)]
        domain: Host,
    },
    /// Make an existing domain the primary one.
    SetPrimary {
        /// The tenant.
        #[arg(value_parser = target_schema)]
        schema: SchemaName,
        /// The domain.
        #[arg(value_parser = host)]
        domain: Host,
    },
}

impl Command {
    /// Whether the command reads the tenant migrations (and so needs their directory).
    pub(crate) fn uses_migrations(&self) -> bool {
        matches!(
            self,
            Self::Migrate { .. }
                | Self::Status { .. }
                | Self::Create { .. }
                | Self::Clone { .. }
                | Self::Restore { .. }
                | Self::Doctor { .. }
                | Self::Import { .. }
                | Self::Move {
                    to_shard: Some(_),
                    ..
                }
        )
    }

    /// Whether the command reads the shared migrations.
    pub(crate) fn uses_shared_migrations(&self) -> bool {
        matches!(self, Self::Migrate { .. } | Self::Status { .. })
    }

    /// Whether the command creates the registry's tables when they are missing; the others
    /// refuse to run on a database without them.
    pub(crate) fn installs_registry(&self) -> bool {
        matches!(
            self,
            Self::Migrate { dry_run: false, .. }
                | Self::Create { .. }
                | Self::Import { dry_run: false, .. }
                | Self::Roles(RolesCommand::Sync)
        )
    }
}

/// A Citus node as `host:port`.
fn citus_node(node: &str) -> Result<CitusNode, String> {
    node.parse()
        .map_err(|e: tenant_schemas::Error| e.to_string())
}

/// A Citus shard transfer mode.
fn transfer_mode(mode: &str) -> Result<TransferMode, String> {
    mode.parse()
        .map_err(|e: tenant_schemas::Error| e.to_string())
}

/// A size: bytes, or a number with kB, MB, GB or TB (powers of 1000).
fn size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 500MB, 10GB, 1048576)"))?;
    let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => return Err(format!("unknown unit `{other}` (B, kB, MB, GB, TB)")),
    };
    number
        .checked_mul(factor)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}`: a quota is at least 1 byte and fits 64 bits"))
}

/// A tenant state as typed (`read-only` or `read_only`).
fn tenant_state(state: &str) -> Result<TenantStatus, String> {
    state.parse()
}

/// A schema to act on: a tenant's, or `public`.
fn target_schema(name: &str) -> Result<SchemaName, String> {
    if name == "public" {
        return Ok(SchemaName::public());
    }
    SchemaName::new(name).map_err(|e| e.to_string())
}

/// A new tenant's schema (`public` is not one).
fn tenant_schema(name: &str) -> Result<SchemaName, String> {
    SchemaName::new(name).map_err(|e| e.to_string())
}

fn host(name: &str) -> Result<Host, String> {
    Host::parse(name).map_err(|e| format!("invalid domain: {e}"))
}

/// `NAME=URL`, split; the URL is checked when connecting.
pub(crate) fn shard_arg(arg: &str) -> Result<(String, String), String> {
    let (name, url) = arg
        .split_once('=')
        .ok_or("expected NAME=URL, e.g. eu=postgres://user@eu-db/app")?;
    let name = name.trim();
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "invalid shard name `{name}` (empty or with spaces)"
        ));
    }
    if name == tenant_schemas::DEFAULT_SHARD {
        return Err(format!(
            "`{name}` is the database of --database-url; give this shard another name"
        ));
    }
    if url.trim().is_empty() {
        return Err(format!("shard `{name}` has no URL"));
    }
    Ok((name.to_owned(), url.trim().to_owned()))
}

impl Rollout {
    /// `options` with this roll-out.
    pub(crate) fn apply(&self, mut options: RunOptions) -> RunOptions {
        options.canary.clone_from(&self.canary);
        options.wave = self.wave.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        options
    }
}

impl Selection {
    /// The run options these arguments select.
    pub(crate) fn options(&self) -> RunOptions {
        RunOptions {
            parallel: self.parallel,
            schemas: self.schemas.clone(),
            skip_public: self.skip_public,
            ..RunOptions::default()
        }
    }
}

/// The tenant `create` and `clone` make: its schema, display name, domains and shard.
pub(crate) fn new_tenant(
    schema: &SchemaName,
    name: Option<String>,
    domains: &[Host],
    shard: Option<&str>,
) -> NewTenant {
    let mut new = NewTenant::new(schema.clone());
    if let Some(name) = name {
        new = new.name(name);
    }
    for d in domains {
        new = new.domain(d.clone());
    }
    if let Some(shard) = shard {
        new = new.shard(shard);
    }
    new
}
