//! `tenant-schemas`: the command line of the tenant-schemas library.
//!
//! Migrations are read from `--migrations` (default `migrations/tenant`) and
//! `--shared-migrations` (default `migrations/shared`), files named `V<n>__<name>.sql`.
//! The database comes from `--database-url` or `DATABASE_URL`. `--json` prints one JSON
//! document for scripts. The exit code is 1 when any schema failed (the failures are
//! listed), 2 on a usage or connection error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tenant_schemas::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tenant_schemas::tokio_postgres::{Config, NoTls};
use tenant_schemas::{
    DropSchema, Finding, Host, NewTenant, Outcome, RunOptions, SchemaName, Tenancy,
    TenantMigrations,
};

#[derive(Parser)]
#[command(
    name = "tenant-schemas",
    version,
    about = "Schema-per-tenant PostgreSQL: migrate, create, clone, delete, list, domains, run, doctor"
)]
struct Cli {
    /// PostgreSQL connection string (a direct connection, not through PgBouncer in
    /// transaction mode: migrations hold an advisory lock).
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Tenant migrations directory.
    #[arg(long, default_value = "migrations/tenant", global = true)]
    migrations: PathBuf,
    /// Shared (public) migrations directory.
    #[arg(long, default_value = "migrations/shared", global = true)]
    shared_migrations: PathBuf,
    /// A table name that may exist both in tenant schemas and in public on purpose
    /// (repeatable); other such names are refused by migrate and create, and reported by
    /// doctor.
    #[arg(long = "shared-name", global = true)]
    shared_names: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Selection {
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
enum Command {
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
enum DomainCommand {
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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn migrations(dir: &Path) -> Result<TenantMigrations, BoxError> {
    if dir.is_dir() {
        Ok(TenantMigrations::from_dir(dir)?)
    } else {
        Ok(TenantMigrations::new())
    }
}

fn schema(name: &str) -> Result<SchemaName, BoxError> {
    if name == "public" {
        return Ok(SchemaName::public());
    }
    Ok(SchemaName::new(name)?)
}

fn selection(s: &Selection) -> Result<RunOptions, BoxError> {
    Ok(RunOptions {
        parallel: s.parallel,
        schemas: s
            .schemas
            .iter()
            .map(|n| schema(n))
            .collect::<Result<_, _>>()?,
        skip_public: s.skip_public,
    })
}

fn progress_bar(json: bool) -> (Option<tenant_schemas::Progress>, Option<ProgressBar>) {
    if json {
        return (None, None);
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} schemas {elapsed_precise} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let progress: tenant_schemas::Progress = Arc::new(move |done, total| {
        b.set_length(total as u64);
        b.set_position(done as u64);
    });
    (Some(progress), Some(bar))
}

async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    let url = cli
        .database_url
        .clone()
        .ok_or("no database: pass --database-url or set DATABASE_URL")?;
    let config: Config = url.parse()?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(16)
        .runtime(Runtime::Tokio1)
        .build()?;
    let tenancy = Tenancy::builder(pool)
        .migrations(
            cli.shared_names
                .iter()
                .fold(migrations(&cli.migrations)?, |m, name| {
                    m.shared_name(name.as_str())
                }),
        )
        .shared_migrations(migrations(&cli.shared_migrations)?)
        .build()
        .await?;
    let json = cli.json;
    let print = |text: String, value: Value| {
        if json {
            println!("{value}");
        } else {
            println!("{text}");
        }
    };
    match cli.command {
        Command::Migrate(sel) => {
            let (progress, bar) = progress_bar(json);
            let report = tenancy.migrate(&selection(&sel)?, progress).await?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let failed: Vec<_> = report.failures().collect();
            let migrated = report
                .schemas
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Migrated { .. }))
                .count();
            let rows: Vec<Value> = report
                .schemas
                .iter()
                .map(|r| match &r.outcome {
                    Outcome::Migrated { from, to } => json!({"schema": r.schema.as_str(), "outcome": "migrated", "from": from, "to": to}),
                    Outcome::UpToDate { version } => json!({"schema": r.schema.as_str(), "outcome": "up_to_date", "version": version}),
                    Outcome::Failed { version, error } => json!({"schema": r.schema.as_str(), "outcome": "failed", "version": version, "error": error}),
                    _ => json!({"schema": r.schema.as_str(), "outcome": "other"}),
                })
                .collect();
            let mut text = format!(
                "migrated {migrated}, up to date {}, failed {} in {:.2} s",
                report.up_to_date + report.schemas.len() - migrated - failed.len(),
                failed.len(),
                report.elapsed.as_secs_f64()
            );
            for f in &failed {
                if let Outcome::Failed { version, error } = &f.outcome {
                    text.push_str(&format!(
                        "\nFAILED {} (stays at version {version}): {error}",
                        f.schema
                    ));
                }
            }
            print(
                text,
                json!({"migrated": migrated, "up_to_date": report.up_to_date, "failed": failed.len(),
                       "elapsed_ms": report.elapsed.as_millis() as u64, "schemas": rows}),
            );
            return Ok(if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::Create {
            schema: s,
            name,
            domains,
        } => {
            let new = new_tenant(&s, name, &domains)?;
            let r = tenancy.create_tenant(new).await?;
            print(
                format!("created {} (version {})", r.schema, r.version),
                record_json(&r),
            );
        }
        Command::Clone {
            source,
            schema: s,
            name,
            domains,
        } => {
            let new = new_tenant(&s, name, &domains)?;
            let r = tenancy.clone_tenant(&schema(&source)?, new).await?;
            print(
                format!("cloned {source} into {}", r.schema),
                record_json(&r),
            );
        }
        Command::Delete {
            schema: s,
            drop_schema,
        } => {
            let drop = if drop_schema {
                DropSchema::Yes
            } else {
                DropSchema::No
            };
            let r = tenancy.delete_tenant(&schema(&s)?, drop).await?;
            print(
                format!(
                    "deleted {}{}",
                    r.schema,
                    if drop_schema { " and its schema" } else { "" }
                ),
                json!({"deleted": r.schema.as_str(), "schema_dropped": drop_schema}),
            );
        }
        Command::List => {
            let list = tenancy.registry().list().await?;
            let text = list
                .iter()
                .map(|r| {
                    format!(
                        "{:<24} v{:<4} {:<10} {:<24} {}",
                        r.schema,
                        r.version,
                        r.status.as_str(),
                        r.name,
                        r.domains.join(" ")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            print(text, Value::Array(list.iter().map(record_json).collect()));
        }
        Command::Domains(cmd) => match cmd {
            DomainCommand::Add {
                schema: s,
                domain,
                primary,
            } => {
                tenancy
                    .add_domain(&schema(&s)?, &Host::parse(&domain)?, primary)
                    .await?;
                print(
                    format!("added {domain} to {s}"),
                    json!({"added": domain, "schema": s}),
                );
            }
            DomainCommand::Remove { schema: s, domain } => {
                tenancy
                    .remove_domain(&schema(&s)?, &Host::parse(&domain)?)
                    .await?;
                print(
                    format!("removed {domain} from {s}"),
                    json!({"removed": domain, "schema": s}),
                );
            }
            DomainCommand::SetPrimary { schema: s, domain } => {
                tenancy
                    .set_primary_domain(&schema(&s)?, &Host::parse(&domain)?)
                    .await?;
                print(
                    format!("{domain} is now the primary domain of {s}"),
                    json!({"primary": domain, "schema": s}),
                );
            }
        },
        Command::Run {
            sql,
            file,
            selection: sel,
        } => {
            let sql = match (sql, file) {
                (Some(sql), _) => sql,
                (None, Some(f)) => {
                    std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?
                }
                (None, None) => return Err("pass --sql or --file".into()),
            };
            let bar = (!json).then(|| {
                ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {pos} schemas {elapsed_precise}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                )
            });
            let results = tenancy
                .for_each_tenant(&selection(&sel)?, |_tenant| {
                    let (tenancy, sql, bar) = (tenancy.clone(), sql.clone(), bar.clone());
                    async move {
                        let db = tenancy.connection().await?;
                        let outcome = db.simple_query(&sql).await.map(|messages| {
                            messages
                                .iter()
                                .filter(|m| {
                                    matches!(
                                        m,
                                        tenant_schemas::tokio_postgres::SimpleQueryMessage::Row(_)
                                    )
                                })
                                .count()
                        });
                        if let Some(bar) = bar {
                            bar.inc(1);
                        }
                        outcome
                    }
                })
                .await?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let failed = results.iter().filter(|(_, r)| r.is_err()).count();
            let text = results
                .iter()
                .map(|(s, r)| match r {
                    Ok(rows) => format!("ok     {s} ({rows} rows)"),
                    Err(e) => format!("FAILED {s}: {e}"),
                })
                .collect::<Vec<_>>()
                .join("\n");
            let rows: Vec<Value> = results
                .iter()
                .map(|(s, r)| match r {
                    Ok(rows) => json!({"schema": s.as_str(), "ok": true, "rows": rows}),
                    Err(e) => json!({"schema": s.as_str(), "ok": false, "error": e.to_string()}),
                })
                .collect();
            print(
                format!("{text}\n{} schemas, {failed} failed", results.len()),
                json!({"failed": failed, "schemas": rows}),
            );
            return Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::Doctor { fix } => {
            let report = tenancy.registry().doctor(fix).await?;
            let describe = |f: &Finding| match f {
                Finding::OrphanSchema { name } => {
                    format!("schema {name} has no registry row (not repaired: it may hold data)")
                }
                Finding::MissingSchema { schema } => format!("tenant {schema} has no schema"),
                Finding::Behind {
                    schema,
                    version,
                    latest,
                } => format!("tenant {schema} is at version {version} of {latest}"),
                Finding::Ahead {
                    schema,
                    version,
                    latest,
                } => format!("tenant {schema} is at version {version}, ahead of {latest}"),
                Finding::InvalidName { name, reason } => {
                    format!("registry name {name} is invalid: {reason}")
                }
                Finding::TableInPublic { schema, table } => format!(
                    "tenant {schema} has a table {table} like public.{table} \
                     (not repaired: rename one, or declare it shared)"
                ),
                Finding::SchemaNamedAfterRole { schema } => format!(
                    "tenant {schema} is named like a database role (\"$user\" resolves to it)"
                ),
                _ => format!("{f:?}"),
            };
            let mut lines: Vec<String> = report
                .findings
                .iter()
                .map(|f| {
                    format!(
                        "{} {}",
                        if report.repaired.contains(f) {
                            "repaired"
                        } else {
                            "found   "
                        },
                        describe(f)
                    )
                })
                .collect();
            for (f, e) in &report.repair_failures {
                lines.push(format!("repair failed for {}: {e}", describe(f)));
            }
            if lines.is_empty() {
                lines.push("no problems found".into());
            }
            let findings: Vec<Value> = report
                .findings
                .iter()
                .map(|f| json!({"finding": describe(f), "repaired": report.repaired.contains(f)}))
                .collect();
            print(
                lines.join("\n"),
                json!({"healthy": report.is_healthy(), "findings": findings}),
            );
            return Ok(if report.is_healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn new_tenant(s: &str, name: Option<String>, domains: &[String]) -> Result<NewTenant, BoxError> {
    let mut new = NewTenant::new(SchemaName::new(s)?);
    if let Some(name) = name {
        new = new.name(name);
    }
    for d in domains {
        new = new.domain(Host::parse(d)?);
    }
    Ok(new)
}

fn record_json(r: &tenant_schemas::TenantRecord) -> Value {
    json!({
        "schema": r.schema.as_str(),
        "name": r.name,
        "status": r.status.as_str(),
        "version": r.version,
        "domains": r.domains,
    })
}
