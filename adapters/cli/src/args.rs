//! The command line's arguments, and their conversion into the library's types.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use tenant_schemas::{Host, NewTenant, RunOptions, SchemaName, TenantMigrations};

use crate::BoxError;

#[derive(Parser)]
#[command(
    name = "tenant-schemas",
    version,
    about = "Schema-per-tenant PostgreSQL: migrate, create, clone, delete, list, domains, run, doctor"
)]
pub(crate) struct Cli {
    /// PostgreSQL connection string (a direct connection, not through PgBouncer in
    /// transaction mode: migrations hold an advisory lock).
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub(crate) database_url: Option<String>,
    /// Tenant migrations directory.
    #[arg(long, default_value = "migrations/tenant", global = true)]
    pub(crate) migrations: PathBuf,
    /// Shared (public) migrations directory.
    #[arg(long, default_value = "migrations/shared", global = true)]
    pub(crate) shared_migrations: PathBuf,
    /// A table name that may exist both in tenant schemas and in public on purpose
    /// (repeatable); other such names are refused by migrate and create, and reported by
    /// doctor.
    #[arg(long = "shared-name", global = true)]
    pub(crate) shared_names: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args, Clone)]
pub(crate) struct Selection {
    /// Only this tenant schema (repeatable).
    #[arg(long = "schema")]
    schemas: Vec<String>,
    /// Leave the public schema alone.
    #[arg(long)]
    skip_public: bool,
    /// Schemas handled at once (default: from the core count and pool size).
    #[arg(long, default_value_t = 0)]
    parallel: usize,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the shared migrations in public, then bring every tenant to the latest version.
    Migrate(Selection),
    /// Create a tenant: schema, migrations and registry rows in one transaction.
    Create {
        /// The schema name.
        schema: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// A domain (repeatable; the first is primary).
        #[arg(long = "domain")]
        domains: Vec<String>,
    },
    /// Create a tenant as a copy of another, rows included.
    Clone {
        /// The tenant to copy.
        source: String,
        /// The new schema.
        schema: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// A domain (repeatable; the first is primary).
        #[arg(long = "domain")]
        domains: Vec<String>,
    },
    /// Delete a tenant's registry rows (and its schema with --drop-schema).
    Delete {
        /// The schema name.
        schema: String,
        /// Also drop the schema and everything in it.
        #[arg(long)]
        drop_schema: bool,
    },
    /// List tenants.
    List,
    /// Add, remove or promote a tenant's domains.
    #[command(subcommand)]
    Domains(DomainCommand),
    /// Run SQL on every tenant, each in its schema.
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
    /// Check the registry against the schemas; --fix migrates tenants that are behind.
    Doctor {
        /// Repair what is safe to repair.
        #[arg(long)]
        fix: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum DomainCommand {
    /// Add a domain.
    Add {
        /// The tenant.
        schema: String,
        /// The domain.
        domain: String,
        /// Make it the primary domain.
        #[arg(long)]
        primary: bool,
    },
    /// Remove a domain.
    Remove {
        /// The tenant.
        schema: String,
        /// The domain.
        domain: String,
    },
    /// Make an existing domain the primary one.
    SetPrimary {
        /// The tenant.
        schema: String,
        /// The domain.
        domain: String,
    },
}

/// The migrations in `dir`, none when it does not exist.
pub(crate) fn migrations(dir: &Path) -> Result<TenantMigrations, BoxError> {
    if dir.is_dir() {
        Ok(TenantMigrations::from_dir(dir)?)
    } else {
        Ok(TenantMigrations::new())
    }
}

/// A schema named on the command line; `public` is a valid target here.
pub(crate) fn schema(name: &str) -> Result<SchemaName, BoxError> {
    if name == "public" {
        return Ok(SchemaName::public());
    }
    Ok(SchemaName::new(name)?)
}

impl Selection {
    /// The run options these arguments select.
    pub(crate) fn options(&self) -> Result<RunOptions, BoxError> {
        Ok(RunOptions {
            parallel: self.parallel,
            schemas: self
                .schemas
                .iter()
                .map(|n| schema(n))
                .collect::<Result<_, _>>()?,
            skip_public: self.skip_public,
        })
    }
}

/// The tenant `create` and `clone` make: its schema, display name and domains.
pub(crate) fn new_tenant(
    schema: &str,
    name: Option<String>,
    domains: &[String],
) -> Result<NewTenant, BoxError> {
    let mut new = NewTenant::new(SchemaName::new(schema)?);
    if let Some(name) = name {
        new = new.name(name);
    }
    for d in domains {
        new = new.domain(Host::parse(d)?);
    }
    Ok(new)
}
