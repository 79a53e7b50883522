//! What can end a command, and the exit code each maps to: the one place that decides
//! ([`CliError::exit_code`]); [`EXIT_CODES`] says it in words for `--help` (and the README
//! repeats it).

use std::fmt;

use tenant_schemas::{Error, ErrorKind};

/// The exit codes in words, shown after `--help`.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  something failed: a schema's migration or SQL, a refused change (unknown tenant,
     tenant or domain taken, objects outside the schema depending on it), an unknown
     --schema, an empty selection, problems found by doctor or status (the failures
     are listed)
  2  usage: arguments not understood (invalid schema names and domains included)
  3  connection or configuration: no or bad database URL, cannot connect, registry not
     installed, migrations directory missing, unreadable or older than the registry's
     tenants (create), an unreadable --file or
     --shards file, a tenant's shard not configured";

/// Why a command did not succeed.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The command ran and something failed (exit 1). What failed was printed already when
    /// the message is `None`.
    Failed(Option<String>),
    /// The database or the configuration is not usable (exit 3).
    Config(String),
}

impl CliError {
    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Failed(_) => 1,
            Self::Config(_) => 3,
        }
    }

    /// A failure (exit 1) with a message.
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self::Failed(Some(message.into()))
    }

    /// A configuration or connection error (exit 3).
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::Config(message.into())
    }

    /// The message to print on standard error, if any.
    pub(crate) fn message(&self) -> Option<&str> {
        match self {
            Self::Failed(m) => m.as_deref(),
            Self::Config(m) => Some(m),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message().unwrap_or("failed"))
    }
}

/// A library error: connection trouble and configuration (a shard not configured, an
/// unreadable or refused migration set) exit 3, everything else 1.
impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        let text = describe(&e);
        match (&e, e.kind()) {
            (_, ErrorKind::Unavailable)
            | (Error::UnknownShard { .. }, _)
            | (Error::MigrationSource { .. }, _)
            | (Error::MigrationRefused { .. }, _)
            | (Error::MigrationSetBehind { .. }, _) => Self::Config(text),
            _ => Self::Failed(Some(text)),
        }
    }
}

/// A library error in words, with what to do where the CLI knows better than the library.
pub(crate) fn describe(e: &Error) -> String {
    match e {
        Error::UnknownShard { shard } => {
            format!("{e}: pass --shard {shard}=URL (or list it in a --shards file)")
        }
        // The library's message names its Rust API; here the flag says the same.
        Error::TableInPublic { schema, table } => format!(
            "table `{table}` would exist both in schema `{schema}` and in `public`, where \
             unqualified names fall through when a schema is missing: rename it, or keep it \
             as a shared name with `tenant-schemas shared-names add {table}` (or pass \
             --shared-name {table} to each command){}",
            if crate::commands::shared_names::DJANGO_TABLES.contains(&table.as_str()) {
                "; it is one of Django's own tables: `import --from-django-tenants \
                 --declare-django-tables` keeps them all"
            } else {
                ""
            }
        ),
        Error::MigrationSetBehind { .. } => {
            format!("{e}: pass --migrations DIR with the newer tenant migrations")
        }
        _ => e.to_string(),
    }
}

/// A refusal for objects outside the tenant's schema that depend on it, naming the flag
/// that drops them too (`--cascade`) instead of the library's API; other errors as
/// [`From`] makes them.
pub(crate) fn with_cascade(e: Error) -> CliError {
    match &e {
        Error::OutsideDependents {
            schema,
            action,
            dependents,
            ..
        } => CliError::failed(format!(
            "tenant `{schema}` not {action}: {n} outside its schema depend{s} on objects in \
             it and would be dropped with it: {list}; nothing was {action}: drop those \
             objects first, or pass --cascade to drop them with the schema",
            n = if dependents.len() == 1 {
                "1 object".to_owned()
            } else {
                format!("{} objects", dependents.len())
            },
            s = if dependents.len() == 1 { "s" } else { "" },
            list = dependents.join("; "),
        )),
        _ => e.into(),
    }
}

/// The result of a command.
pub(crate) type CliResult<T = ()> = Result<T, CliError>;
