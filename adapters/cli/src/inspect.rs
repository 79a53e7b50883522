//! What `status` and `migrate --dry-run` read, and only read: per schema, the registry's
//! version, the schema's own migration history, the migrations still to run, and where the
//! two disagree (drift).

use std::fmt;

use serde_json::{json, Value};
use tenant_schemas::tokio_postgres::types::Type;
use tenant_schemas::{Migration, SchemaName, ShardName, TenantMigrations, HISTORY_TABLE};

use crate::connect::{connect_error, with_causes, Context};
use crate::error::CliResult;

/// Where the registry and a schema disagree, or the schema and the migration set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Drift {
    /// The tenant lives on a database this command was not given.
    UnknownShard { shard: ShardName },
    /// The registry has the tenant; its database has no such schema.
    MissingSchema { shard: ShardName },
    /// The registry says the tenant is migrated, its schema has no history table.
    NoHistory { registry: i32 },
    /// The registry records another version than the schema's history.
    RegistryMismatch { registry: i32, schema: i32 },
    /// A version newer than any migration this set knows.
    Ahead { version: i32, latest: i32 },
    /// An applied migration whose SQL changed since.
    Changed { file: String },
    /// An applied version the set does not have (and not beyond its newest).
    UnknownMigration { version: i32 },
    /// The schema's history could not be read.
    Unreadable { error: String },
}

impl Drift {
    /// A stable name for scripts.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::UnknownShard { .. } => "unknown_shard",
            Self::MissingSchema { .. } => "missing_schema",
            Self::NoHistory { .. } => "no_history",
            Self::RegistryMismatch { .. } => "registry_mismatch",
            Self::Ahead { .. } => "ahead",
            Self::Changed { .. } => "changed_migration",
            Self::UnknownMigration { .. } => "unknown_migration",
            Self::Unreadable { .. } => "unreadable",
        }
    }

    /// Whether `migrate` would fail on this schema.
    pub(crate) fn blocks_migration(&self) -> bool {
        !matches!(self, Self::RegistryMismatch { .. } | Self::NoHistory { .. })
    }

    /// As JSON: `{"kind": …, "message": …}`.
    pub(crate) fn json(&self) -> Value {
        json!({"kind": self.kind(), "message": self.to_string()})
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownShard { shard } => {
                write!(
                    f,
                    "on shard {shard}, not configured (pass --shard {shard}=URL)"
                )
            }
            Self::MissingSchema { shard } => write!(f, "schema missing on database {shard}"),
            Self::NoHistory { registry } => write!(
                f,
                "no migration history in the schema (the registry says version {registry})"
            ),
            Self::RegistryMismatch { registry, schema } => write!(
                f,
                "registry says version {registry}, the schema's history {schema}"
            ),
            Self::Ahead { version, latest } => write!(
                f,
                "at version {version}, newer than any known migration (newest {latest})"
            ),
            Self::Changed { file } => write!(f, "{file} changed after it was applied"),
            Self::UnknownMigration { version } => {
                write!(f, "applied version {version} is not in the migration set")
            }
            Self::Unreadable { error } => write!(f, "history unreadable: {error}"),
        }
    }
}

/// One schema as it is.
#[derive(Debug)]
pub(crate) struct SchemaState {
    pub(crate) schema: SchemaName,
    pub(crate) shard: ShardName,
    /// The registry's version (`None` for `public`, which the registry does not version).
    pub(crate) registry: Option<i32>,
    /// The newest version the schema's history holds (`None` when it could not be read).
    pub(crate) applied: Option<i32>,
    /// The newest version of its migration set.
    pub(crate) latest: i32,
    /// The migrations of the set newer than `applied` (all of them when it is `None` and
    /// the schema exists).
    pub(crate) pending: Vec<Migration>,
    pub(crate) drift: Vec<Drift>,
}

impl SchemaState {
    /// Whether `migrate` would fail on this schema.
    pub(crate) fn blocked(&self) -> bool {
        self.drift.iter().any(Drift::blocks_migration)
    }

    /// The pending migrations' file names.
    pub(crate) fn pending_files(&self) -> Vec<String> {
        self.pending.iter().map(Migration::file_name).collect()
    }
}

/// The schemas to look at.
pub(crate) struct Scope<'a> {
    /// Only these (all when empty); `public` names the public schema of every database.
    pub(crate) schemas: &'a [SchemaName],
    /// Leave `public` out.
    pub(crate) skip_public: bool,
}

/// Reads every selected schema: `public` of each database first (when there are shared
/// migrations or a history there), then the registered tenants by name. Writes nothing.
pub(crate) async fn inspect(ctx: &Context, scope: &Scope<'_>) -> CliResult<Vec<SchemaState>> {
    let tenants = crate::commands::known_tenants(ctx, scope.schemas).await?;
    let registry = ctx.tenancy.registry();
    let (tenant_set, shared_set) = (registry.migrations(), registry.shared_migrations());
    let selected = |s: &SchemaName| scope.schemas.is_empty() || scope.schemas.contains(s);
    let mut states = Vec::new();
    if !scope.skip_public && selected(&SchemaName::public()) {
        for db in &ctx.databases {
            let state = read(
                ctx,
                SchemaName::public(),
                db.shard.clone(),
                None,
                shared_set,
            )
            .await?;
            if !shared_set.is_empty() || state.applied.is_some_and(|v| v > 0) {
                states.push(state);
            }
        }
    }
    for t in tenants {
        if t.schema.is_public() || !selected(&t.schema) {
            continue;
        }
        states.push(read(ctx, t.schema, t.shard, Some(t.version), tenant_set).await?);
    }
    Ok(states)
}

/// One schema's state on its database.
async fn read(
    ctx: &Context,
    schema: SchemaName,
    shard: ShardName,
    registry: Option<i32>,
    set: &TenantMigrations,
) -> CliResult<SchemaState> {
    let latest = set.latest();
    let mut state = SchemaState {
        schema,
        shard,
        registry,
        applied: None,
        latest,
        pending: Vec::new(),
        drift: Vec::new(),
    };
    let Some(db) = ctx.database(&state.shard) else {
        state.drift.push(Drift::UnknownShard {
            shard: state.shard.clone(),
        });
        return Ok(state);
    };
    let conn = db.pool.get().await.map_err(|e| connect_error(db, &e))?;
    let unreadable = |e: &(dyn std::error::Error + 'static)| Drift::Unreadable {
        error: with_causes(e),
    };
    let name = state.schema.as_str();
    let found = conn
        .query_typed(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1),
                    pg_catalog.to_regclass(pg_catalog.format('%I.%I', $1, $2)) IS NOT NULL",
            &[(&name, Type::TEXT), (&HISTORY_TABLE, Type::TEXT)],
        )
        .await;
    let (exists, has_history) = match found {
        Ok(rows) => rows.first().map_or((false, false), |r| {
            (r.get::<_, bool>(0), r.get::<_, bool>(1))
        }),
        Err(e) => {
            state.drift.push(unreadable(&e));
            return Ok(state);
        }
    };
    if !exists {
        state.drift.push(Drift::MissingSchema {
            shard: state.shard.clone(),
        });
        return Ok(state);
    }
    let mut applied = 0;
    if has_history {
        let sql = format!(
            "SELECT version, checksum FROM {}.{HISTORY_TABLE} ORDER BY version",
            state.schema.quoted()
        );
        match conn.query_typed(&sql, &[]).await {
            Ok(rows) => {
                for row in rows {
                    let (version, checksum): (i32, i64) = (row.get(0), row.get(1));
                    applied = applied.max(version);
                    match set.get(version) {
                        Some(m) if m.checksum != checksum => state.drift.push(Drift::Changed {
                            file: m.file_name(),
                        }),
                        None if version <= latest => {
                            state.drift.push(Drift::UnknownMigration { version });
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => {
                state.drift.push(unreadable(&e));
                return Ok(state);
            }
        }
    } else if let Some(v) = registry.filter(|v| *v > 0) {
        state.drift.push(Drift::NoHistory { registry: v });
    }
    state.applied = Some(applied);
    state.pending = set
        .iter()
        .filter(|m| m.version > applied)
        .cloned()
        .collect();
    if let Some(registry) = registry {
        if has_history && registry != applied {
            state.drift.push(Drift::RegistryMismatch {
                registry,
                schema: applied,
            });
        }
    }
    let newest = applied.max(registry.unwrap_or(0));
    if newest > latest {
        state.drift.push(Drift::Ahead {
            version: newest,
            latest,
        });
    }
    Ok(state)
}
