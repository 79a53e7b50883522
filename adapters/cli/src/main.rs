//! `tenant-schemas`: the command line of the tenant-schemas library.
//!
//! Migrations are read from `--migrations` (default `migrations/tenant`) and
//! `--shared-migrations` (default `migrations/shared`), files named `V<n>__<name>.sql`; a
//! command that needs tenant migrations fails when their directory is missing instead of
//! taking it for "no migrations". The registry's database comes from `--database-url` or
//! `DATABASE_URL`, other databases tenants live on from `--shard NAME=URL` or a `--shards`
//! file. Read-only commands (`list`, `status`, `doctor` without `--fix`, `migrate
//! --dry-run`) never write: on a database without the registry they say so. `--json`
//! prints one JSON document for scripts. Exit codes: [`error::EXIT_CODES`].
//!
//! [`args`] holds the arguments, [`connect`] the databases and the tenancy over them,
//! [`commands`] one module per command, [`inspect`] how `status` and `migrate --dry-run`
//! word what the core reads, [`output`] the text, JSON, tables and progress bars they print, and [`error`] the
//! exit codes.

// The argument docs are `--help` text, where `V<n>__<name>.sql` is not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

mod args;
mod commands;
mod connect;
mod error;
mod inspect;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::error::CliResult;
use crate::output::Output;

#[tokio::main]
async fn main() -> ExitCode {
    // Usage errors exit 2 here, from clap.
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(message) = e.message() {
                eprintln!("error: {message}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Connects, builds the tenancy, and runs the command.
async fn run(cli: Cli) -> CliResult {
    let ctx = connect::open(&cli).await?;
    let out = Output::new(cli.json);
    match cli.command {
        Command::Migrate {
            selection,
            baseline: Some(version),
            ..
        } => commands::baseline::run(&ctx, out, &selection, version).await,
        Command::Migrate {
            selection,
            dry_run: false,
            rollout,
            ..
        } => commands::migrate::run(&ctx, out, &selection, &rollout).await,
        Command::Migrate {
            selection,
            dry_run: true,
            ..
        } => commands::migrate::dry_run(&ctx, out, &selection).await,
        Command::Status { schemas } => commands::status::run(&ctx, out, &schemas).await,
        Command::Create {
            schema,
            name,
            domains,
            in_shard,
        } => commands::create::run(&ctx, out, &schema, name, &domains, in_shard.as_deref()).await,
        Command::Clone {
            source,
            schema,
            name,
            domains,
        } => commands::clone::run(&ctx, out, &source, &schema, name, &domains).await,
        Command::Delete {
            schema,
            drop_schema,
            cascade,
        } => commands::delete::run(&ctx, out, &schema, drop_schema, cascade).await,
        Command::RenameSchema { old, new } => {
            commands::rename_schema::run(&ctx, out, &old, &new).await
        }
        Command::State { schema, state } => commands::state::run(&ctx, out, &schema, state).await,
        Command::Limit {
            schema,
            max_connections,
            clear,
            statement_timeout,
            clear_statement_timeout,
        } => {
            let connections = (max_connections.is_some() || clear).then_some(max_connections);
            let timeout = (statement_timeout.is_some() || clear_statement_timeout)
                .then_some(statement_timeout);
            commands::limit::run(&ctx, out, &schema, connections, timeout).await
        }
        Command::Erase {
            schema,
            export_checksum,
            cascade,
        } => commands::erase::run(&ctx, out, &schema, export_checksum, cascade).await,
        Command::Export { schema, out: file } => {
            commands::export::export(&ctx, out, &schema, &file).await
        }
        Command::Restore {
            file,
            schema,
            name,
            domains,
        } => commands::export::restore(&ctx, out, &file, schema, name, domains).await,
        Command::Quota { schema, bytes, .. } => {
            commands::usage::quota(&ctx, out, &schema, bytes).await
        }
        Command::Usage { enforce_quotas } => commands::usage::run(&ctx, out, enforce_quotas).await,
        Command::List => commands::list::run(&ctx, out).await,
        Command::Domains(cmd) => commands::domains::run(&ctx, out, cmd).await,
        Command::SharedNames(cmd) => commands::shared_names::run(&ctx, out, cmd).await,
        Command::Roles(cmd) => commands::roles::run(&ctx, out, cmd).await,
        Command::Run {
            sql,
            file,
            selection,
        } => commands::run::run(&ctx, out, sql, file, &selection).await,
        Command::Doctor { fix } => commands::doctor::run(&ctx, out, fix).await,
        Command::Import {
            source,
            baseline,
            dry_run: false,
        } => commands::import::run(&ctx, out, &source, baseline).await,
        Command::Import {
            source,
            baseline,
            dry_run: true,
        } => commands::import::dry_run(&ctx, out, &source, baseline).await,
        Command::Move {
            schema,
            to_shard: Some(shard),
            ..
        } => commands::shard_move::run(&ctx, out, &schema, &shard).await,
        Command::Move {
            schema,
            to: Some(to),
            mode,
            ..
        } => commands::citus::move_tenant(&ctx, out, &schema, &to, mode).await,
        Command::Move { .. } => unreachable!("clap requires --to or --to-shard"),
        Command::Rebalance { mode } => commands::citus::rebalance(&ctx, out, mode).await,
    }
}
