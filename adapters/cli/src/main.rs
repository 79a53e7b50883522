//! `tenant-schemas`: the command line of the tenant-schemas library.
//!
//! Migrations are read from `--migrations` (default `migrations/tenant`) and
//! `--shared-migrations` (default `migrations/shared`), files named `V<n>__<name>.sql`.
//! The database comes from `--database-url` or `DATABASE_URL`. `--json` prints one JSON
//! document for scripts. The exit code is 1 when any schema failed (the failures are
//! listed), 2 on a usage or connection error.
//!
//! [`args`] holds the arguments, [`commands`] one module per command, [`output`] the text,
//! JSON and progress bars they print.

mod args;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;
use tenant_schemas::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tenant_schemas::tokio_postgres::{Config, NoTls};
use tenant_schemas::Tenancy;

use crate::args::{migrations, Cli, Command};
use crate::output::Output;

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

/// Connects, builds the tenancy, and runs the command.
async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    let tenancy = tenancy(&cli).await?;
    let out = Output::new(cli.json);
    match cli.command {
        Command::Migrate(sel) => return commands::migrate::run(&tenancy, out, &sel).await,
        Command::Create {
            schema,
            name,
            domains,
        } => commands::create::run(&tenancy, out, &schema, name, &domains).await?,
        Command::Clone {
            source,
            schema,
            name,
            domains,
        } => commands::clone::run(&tenancy, out, &source, &schema, name, &domains).await?,
        Command::Delete {
            schema,
            drop_schema,
        } => commands::delete::run(&tenancy, out, &schema, drop_schema).await?,
        Command::List => commands::list::run(&tenancy, out).await?,
        Command::Domains(cmd) => commands::domains::run(&tenancy, out, cmd).await?,
        Command::Run {
            sql,
            file,
            selection,
        } => return commands::run::run(&tenancy, out, sql, file, &selection).await,
        Command::Doctor { fix } => return commands::doctor::run(&tenancy, out, fix).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// The tenancy over `--database-url`, with the migrations of `--migrations` and
/// `--shared-migrations`.
async fn tenancy(cli: &Cli) -> Result<Tenancy, BoxError> {
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
    Ok(Tenancy::builder(pool)
        .migrations(
            cli.shared_names
                .iter()
                .fold(migrations(&cli.migrations)?, |m, name| {
                    m.shared_name(name.as_str())
                }),
        )
        .shared_migrations(migrations(&cli.shared_migrations)?)
        .build()
        .await?)
}
