//! The databases a command works on (`--database-url` and the shards), the migration sets
//! it reads, and the [`Tenancy`] over them; every failure here is a configuration or
//! connection error (exit 3) naming the URL (without its password), file or directory.

use std::path::{Path, PathBuf};

use tenant_schemas::deadpool_postgres::{Pool, PoolError};
use tenant_schemas::tokio_postgres::config::Host as PgHost;
use tenant_schemas::tokio_postgres::Config;
use tenant_schemas::{ConnectionSettings, ShardName, Tenancy, TenantMigrations, TenantRoles};

use crate::args::{Cli, DEFAULT_MIGRATIONS, DEFAULT_SHARED_MIGRATIONS};
use crate::error::{CliError, CliResult};

/// One database: its name, where it is (no password), and its pool.
#[derive(Clone)]
pub(crate) struct Database {
    /// `default` for `--database-url`, the shard's name otherwise.
    pub(crate) shard: ShardName,
    /// `user@host:port/dbname`, for messages.
    pub(crate) shown: String,
    pub(crate) pool: Pool,
    /// The settings the pool was made with: what a move's subscription connects with.
    pub(crate) settings: ConnectionSettings,
}

/// What a command works with.
pub(crate) struct Context {
    pub(crate) tenancy: Tenancy,
}

/// Connects to every database, reads the migration sets the command needs, builds the
/// tenancy and checks the registry: installed when the command may install it, otherwise
/// required to be there already.
pub(crate) async fn open(cli: &Cli) -> CliResult<Context> {
    let url = cli
        .database_url
        .as_deref()
        .ok_or_else(|| CliError::config("no database: pass --database-url or set DATABASE_URL"))?;
    let root_cert = cli.ssl_root_cert.as_deref();
    let mut databases = vec![database(
        ShardName::DEFAULT,
        "--database-url",
        url,
        root_cert,
    )?];
    for (name, url) in shard_list(cli)? {
        if databases.iter().any(|d| d.shard == name.as_str()) {
            return Err(CliError::config(format!(
                "shard `{name}` is given twice (--shard and --shards)"
            )));
        }
        let what = format!("shard `{name}`");
        databases.push(database(ShardName::new(&name), &what, &url, root_cert)?);
    }
    for db in &databases {
        check_connection(db).await?;
    }

    let tenant = if cli.command.uses_migrations() {
        tenant_migrations(cli.migrations.as_deref())?
    } else {
        TenantMigrations::new()
    };
    let tenant = cli
        .shared_names
        .iter()
        .fold(tenant, |m, name| m.shared_name(name.as_str()));
    let shared = if cli.command.uses_shared_migrations() {
        shared_migrations(cli.shared_migrations.as_deref())?
    } else {
        TenantMigrations::new()
    };
    let roles = if cli.tenant_roles || matches!(cli.command, crate::args::Command::Roles(_)) {
        let roles = TenantRoles::new();
        Some(match cli.tenant_group.as_deref() {
            Some(group) => roles
                .group(group)
                .map_err(|e| CliError::config(format!("--tenant-group: {}", reason(&e))))?,
            None => roles,
        })
    } else {
        None
    };
    let build = |install: bool| {
        let mut builder = Tenancy::builder(databases[0].pool.clone())
            .migrations(tenant.clone())
            .shared_migrations(shared.clone())
            .install_registry(install)
            .replication_source(ShardName::DEFAULT, databases[0].settings.clone());
        for db in &databases[1..] {
            builder = builder
                .shard(db.shard.clone(), db.pool.clone())
                .replication_source(db.shard.clone(), db.settings.clone());
        }
        if let Some(roles) = &roles {
            builder = builder.tenant_roles(roles.clone());
        }
        builder.build()
    };
    let mut tenancy = build(false).await?;
    if !tenancy.registry().is_installed().await? {
        let shown = &databases[0].shown;
        if !cli.command.installs_registry() {
            return Err(CliError::config(format!(
                "the tenant registry is not installed in database {shown} \
                 (no tenant_schemas_tenants table, or one from an older version): \
                 is this the right database? `tenant-schemas migrate` installs it"
            )));
        }
        tenancy = build(true).await?;
        eprintln!(
            "note: installed the tenant registry tables in database {shown} \
             (they were missing, or from an older version)"
        );
    }
    Ok(Context { tenancy })
}

/// A pool over `url` (over TLS as its sslmode says; `root_cert` unless it names its own
/// sslrootcert); `what` says where the URL came from.
fn database(
    shard: ShardName,
    what: &str,
    url: &str,
    root_cert: Option<&Path>,
) -> CliResult<Database> {
    // The parser's messages do not repeat the URL, so no password ends up in them.
    let mut settings = ConnectionSettings::from_url(url).map_err(|e| {
        CliError::config(format!(
            "{what} is not a valid PostgreSQL connection string: {}",
            reason(&e)
        ))
    })?;
    if let (None, Some(file)) = (settings.get_root_cert(), root_cert) {
        settings = settings.root_cert(file);
    }
    let shown = shown(settings.config());
    // Connect within the URL's connect_timeout, or 10 s.
    let pool = settings
        .clone()
        .pool_size(16)
        .pool()
        .map_err(|e| CliError::config(format!("{what} ({shown}): {}", reason(&e))))?;
    Ok(Database {
        shard,
        shown,
        pool,
        settings,
    })
}

/// A settings error's reason, without the library's "invalid connection settings" prefix.
fn reason(err: &tenant_schemas::Error) -> String {
    match err {
        tenant_schemas::Error::ConnectionSettings { reason } => reason
            .strip_prefix("invalid connection string: ")
            .unwrap_or(reason)
            .to_owned(),
        other => other.to_string(),
    }
}

/// `user@host:port/dbname` (no password), for messages.
pub(crate) fn shown(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            PgHost::Tcp(h) => h.clone(),
            PgHost::Unix(p) => p.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let mut out = String::new();
    if let Some(user) = config.get_user() {
        out.push_str(user);
        out.push('@');
    }
    out.push_str(
        if hosts.is_empty() {
            "localhost".into()
        } else {
            hosts.join(",")
        }
        .as_str(),
    );
    if !ports.is_empty() {
        out.push(':');
        out.push_str(&ports.join(","));
    }
    out.push('/');
    out.push_str(config.get_dbname().unwrap_or("(default)"));
    out
}

/// Fails unless a connection to `db` can be made.
async fn check_connection(db: &Database) -> CliResult {
    db.pool
        .get()
        .await
        .map(drop)
        .map_err(|e| connect_error(db, &e))
}

/// No connection to `db`: a configuration or connection error naming it.
pub(crate) fn connect_error(db: &Database, e: &PoolError) -> CliError {
    // The pool's own words ("Error occurred while creating a new object") say nothing.
    let why = match e {
        PoolError::Backend(pg) => with_causes(pg),
        other => with_causes(other),
    };
    let which = if db.shard.is_default() {
        String::new()
    } else {
        format!(" (shard `{}`)", db.shard)
    };
    CliError::config(format!(
        "cannot connect to database {}{which}: {why}",
        db.shown
    ))
}

/// An error's message and its causes', without repeats; the server's own message for a
/// statement or login it refused.
pub(crate) fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let (text, source) = match e.downcast_ref::<tenant_schemas::tokio_postgres::Error>() {
            // The server's message is the whole story; its source repeats it.
            Some(pg) => match pg.as_db_error() {
                Some(db) => (db.message().to_owned(), None),
                None => (pg.to_string(), e.source()),
            },
            None => (e.to_string(), e.source()),
        };
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = source;
    }
    parts.join(": ")
}

/// The shards of `--shard` and of the `--shards` file, in that order.
fn shard_list(cli: &Cli) -> CliResult<Vec<(String, String)>> {
    let mut list = cli.shards.clone();
    if let Some(file) = &cli.shards_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            CliError::config(format!("cannot read shards file {}: {e}", file.display()))
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let shard = crate::args::shard_arg(line)
                .map_err(|e| CliError::config(format!("{}:{}: {e}", file.display(), n + 1)))?;
            list.push(shard);
        }
    }
    for (i, (name, _)) in list.iter().enumerate() {
        if list[..i].iter().any(|(n, _)| n == name) {
            return Err(CliError::config(format!("shard `{name}` is given twice")));
        }
    }
    Ok(list)
}

/// The tenant migrations of `--migrations`, or of the default directory; either must exist.
fn tenant_migrations(given: Option<&Path>) -> CliResult<TenantMigrations> {
    match given {
        Some(dir) => read_dir(dir, "--migrations"),
        None => {
            let dir = Path::new(DEFAULT_MIGRATIONS);
            if dir.exists() {
                return read_dir(dir, "tenant migrations");
            }
            Err(CliError::config(format!(
                "no tenant migrations: {} does not exist; run from the project's \
                 directory, or pass --migrations DIR (an empty directory for none)",
                absolute(dir).display()
            )))
        }
    }
}

/// The shared migrations of `--shared-migrations` (which must exist), or of the default
/// directory (none when it is missing, said on standard error).
fn shared_migrations(given: Option<&Path>) -> CliResult<TenantMigrations> {
    match given {
        Some(dir) => read_dir(dir, "--shared-migrations"),
        None => {
            let dir = Path::new(DEFAULT_SHARED_MIGRATIONS);
            if dir.exists() {
                return read_dir(dir, "shared migrations");
            }
            eprintln!(
                "note: no shared migrations ({} does not exist; pass --shared-migrations DIR \
                 if there are some)",
                absolute(dir).display()
            );
            Ok(TenantMigrations::new())
        }
    }
}

/// The migrations in `dir`, which must be a directory; `what` names it in errors.
fn read_dir(dir: &Path, what: &str) -> CliResult<TenantMigrations> {
    if !dir.exists() {
        return Err(CliError::config(format!(
            "{what}: {} does not exist",
            absolute(dir).display()
        )));
    }
    if !dir.is_dir() {
        return Err(CliError::config(format!(
            "{what}: {} is not a directory",
            absolute(dir).display()
        )));
    }
    Ok(TenantMigrations::from_dir(dir)?)
}

/// `path` from the current directory, for messages.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
