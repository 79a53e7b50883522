//! The one health model of migrations: what each schema holds against its migration set,
//! read and never written. [`Tenancy::migration_status`](crate::Tenancy::migration_status)
//! reads every registered schema; [`Tenancy::migrate_dry_run`](crate::Tenancy::migrate_dry_run)
//! reads the schemas a [`Tenancy::migrate`](crate::Tenancy::migrate) with the same options
//! would open, chosen by the run's own selection (`Runner::plan`), and checks each with the
//! run's own checks: the history against the set (`TenantMigrations::check_row`), and
//! tenant tables named like tables in `public` (`refuse_shadowing`). A schema the dry run
//! says [would fail](SchemaStatus::would_fail) is one the run fails, and the other way
//! round, for every reason the run can know before it runs a migration's SQL: what a
//! pending migration's own SQL does (an error in it, a table it creates in `public`'s
//! name) shows only when it runs.

use std::fmt;

use futures_util::stream::{self, StreamExt};
use tokio_postgres::types::Type;

use super::apply::{applied_sql, refuse_shadowing, HISTORY_TABLE};
use super::run::{default_parallelism, Registered, Runner};
use super::set::{HistoryRow, Migration};
use super::RunOptions;
use crate::error::{pg_message, Error, Result};
use crate::schema::SchemaName;
use crate::shard::ShardName;

/// Where the registry and a schema disagree, or the schema and its migration set: what
/// [`SchemaStatus::drift`] lists. Its [`Display`](fmt::Display) is the sentence the
/// command-line tool prints.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Drift {
    /// The tenant lives on a database (shard) that is not configured.
    UnknownShard {
        /// The shard the registry names.
        shard: ShardName,
    },
    /// The registry has the tenant; its database has no such schema.
    MissingSchema {
        /// The database it should be on.
        shard: ShardName,
    },
    /// The registry says the tenant is migrated; its schema has no history table.
    NoHistory {
        /// The registry's version.
        registry: i32,
    },
    /// The registry records another version than the schema's history.
    RegistryMismatch {
        /// The registry's version.
        registry: i32,
        /// The newest version in the schema's history.
        schema: i32,
    },
    /// A version newer than any migration of the set (newer code migrated it).
    Ahead {
        /// The newest version the registry or the history holds.
        version: i32,
        /// The set's newest.
        latest: i32,
    },
    /// An applied migration whose SQL changed since.
    Changed {
        /// The migration's file name.
        file: String,
    },
    /// An applied version the set does not have (and not beyond its newest).
    UnknownMigration {
        /// The version.
        version: i32,
    },
    /// A tenant table (or view) with the name of one in `public`, not declared with
    /// [`TenantMigrations::shared_name`](crate::TenantMigrations::shared_name): `migrate` refuses to leave a schema so
    /// ([`Error::TableInPublic`]), and the doctor reports it
    /// ([`Finding::TableInPublic`](crate::Finding::TableInPublic)).
    TableInPublic {
        /// The tenant schema holding it (for `public`: a tenant whose table is named like
        /// one of `public`'s).
        schema: SchemaName,
        /// The table's name.
        table: String,
    },
    /// The schema's history could not be read.
    Unreadable {
        /// The error, with its causes.
        error: String,
    },
}

impl Drift {
    /// A stable name for scripts, e.g. `missing_schema`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownShard { .. } => "unknown_shard",
            Self::MissingSchema { .. } => "missing_schema",
            Self::NoHistory { .. } => "no_history",
            Self::RegistryMismatch { .. } => "registry_mismatch",
            Self::Ahead { .. } => "ahead",
            Self::Changed { .. } => "changed_migration",
            Self::UnknownMigration { .. } => "unknown_migration",
            Self::TableInPublic { .. } => "table_in_public",
            Self::Unreadable { .. } => "unreadable",
        }
    }

    /// Whether `migrate` fails on a schema with this drift when it opens it. A table named
    /// like one of `public` fails the run only when it migrates something
    /// ([`SchemaStatus::would_fail`] says which).
    #[must_use]
    pub fn blocks_migration(&self) -> bool {
        !matches!(self, Self::RegistryMismatch { .. } | Self::NoHistory { .. })
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownShard { shard } => write!(f, "on shard {shard}, not configured"),
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
            Self::TableInPublic { schema, table } => write!(
                f,
                "table {table} of {schema} is also in public (rename one, or declare it shared)"
            ),
            Self::Unreadable { error } => write!(f, "history unreadable: {error}"),
        }
    }
}

/// One schema as it is: what [`Tenancy::migration_status`](crate::Tenancy::migration_status)
/// and [`Tenancy::migrate_dry_run`](crate::Tenancy::migrate_dry_run) return per schema.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SchemaStatus {
    /// The schema (`public` for the shared migrations of a database).
    pub schema: SchemaName,
    /// The database (shard) it lives on.
    pub shard: ShardName,
    /// The registry's version (`None` for `public`, which the registry does not version).
    pub registry: Option<i32>,
    /// The newest version the schema's history holds (0 without a history; `None` when it
    /// could not be read).
    pub applied: Option<i32>,
    /// The newest version of its migration set.
    pub latest: i32,
    /// The migrations of the set newer than `applied` (none when `applied` is `None`).
    pub pending: Vec<Migration>,
    /// Where it disagrees with the registry or its set; empty when healthy.
    pub drift: Vec<Drift>,
}

impl SchemaStatus {
    /// Whether [`Tenancy::migrate`](crate::Tenancy::migrate) fails on this schema when it
    /// opens it: a drift that [blocks](Drift::blocks_migration) it, a table named like one of
    /// `public` only when there is something to migrate (the run checks names after it
    /// migrated).
    #[must_use]
    pub fn would_fail(&self) -> bool {
        self.drift.iter().any(|d| match d {
            Drift::TableInPublic { .. } => !self.pending.is_empty(),
            d => d.blocks_migration(),
        })
    }

    /// The pending migrations' file names, e.g. `V2__add_column.sql`.
    #[must_use]
    pub fn pending_files(&self) -> Vec<String> {
        self.pending.iter().map(Migration::file_name).collect()
    }
}

/// What [`Tenancy::migrate_dry_run`](crate::Tenancy::migrate_dry_run) found: the schemas
/// the run would open, in the run's order, as they are.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DryRun {
    /// `public` of each database first (when there are shared migrations and `public` is
    /// not skipped), then the tenants the registry says are behind that the run would
    /// migrate (after [`RunOptions::canary`] and [`RunOptions::wave`]).
    pub schemas: Vec<SchemaStatus>,
    /// Tenants the registry says are up to date: the run does not open them.
    pub up_to_date: usize,
    /// Tenants behind that the run would leave for a later one (canaries, waves).
    pub deferred: usize,
}

impl DryRun {
    /// The schemas the run would fail on.
    pub fn failures(&self) -> impl Iterator<Item = &SchemaStatus> {
        self.schemas.iter().filter(|s| s.would_fail())
    }
}

impl Runner<'_> {
    /// Every registered tenant's schema in `schemas` (all when empty), by name, after
    /// `public` of each database (unless `skip_public`, or `schemas` leaves it out) when it
    /// has shared migrations or a history.
    pub(crate) async fn status(
        self,
        schemas: &[SchemaName],
        skip_public: bool,
    ) -> Result<Vec<SchemaStatus>> {
        let selected = |s: &SchemaName| schemas.is_empty() || schemas.contains(s);
        let mut states = Vec::new();
        if !skip_public && selected(&SchemaName::public()) {
            for (shard, _) in self.databases.iter() {
                let state = self
                    .inspect(SchemaName::public(), shard.clone(), None)
                    .await?;
                if !self.sets.shared.is_empty() || state.applied.is_some_and(|v| v > 0) {
                    states.push(state);
                }
            }
        }
        let tenants: Vec<Registered> = self.registered(schemas).await?;
        states.extend(self.inspect_all(tenants).await?);
        Ok(states)
    }

    /// The schemas a [`run`](Runner::run) with `options` would open, chosen as the run
    /// chooses them, each inspected; fails where the run fails before opening any (an
    /// up-to-date tenant whose applied migrations changed).
    pub(crate) async fn dry_run(self, options: &RunOptions) -> Result<DryRun> {
        let mut schemas = Vec::new();
        for shard in self.public_shards(options) {
            schemas.push(self.inspect(SchemaName::public(), shard, None).await?);
        }
        let plan = self.plan(options).await?;
        self.check_sample(&plan).await?;
        schemas.extend(self.inspect_all(plan.behind).await?);
        Ok(DryRun {
            schemas,
            up_to_date: plan.up_to_date,
            deferred: plan.deferred,
        })
    }

    /// Inspects registered tenants, a few at once, in their order.
    async fn inspect_all(&self, tenants: Vec<Registered>) -> Result<Vec<SchemaStatus>> {
        let parallel = default_parallelism(self.databases.default());
        stream::iter(tenants)
            .map(|t| self.inspect(t.schema, t.shard, Some(t.version)))
            .buffered(parallel)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// One schema's state on its database, registered at `registry` (`None` for `public`),
    /// against its set. Fails only when no connection can be had.
    async fn inspect(
        &self,
        schema: SchemaName,
        shard: ShardName,
        registry: Option<i32>,
    ) -> Result<SchemaStatus> {
        let set = if schema.is_public() {
            &self.sets.shared
        } else {
            &self.sets.tenant
        };
        let latest = set.latest();
        let mut state = SchemaStatus {
            schema,
            shard,
            registry,
            applied: None,
            latest,
            pending: Vec::new(),
            drift: Vec::new(),
        };
        let Ok(pool) = self.databases.get(&state.shard) else {
            state.drift.push(Drift::UnknownShard {
                shard: state.shard.clone(),
            });
            return Ok(state);
        };
        let conn = crate::databases::connect(pool, &state.schema).await?;
        let unreadable = |e: &tokio_postgres::Error| Drift::Unreadable {
            error: pg_message(e),
        };
        let found = conn
            .query_typed(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1),
                        pg_catalog.to_regclass(pg_catalog.format('%I.%I', $1, $2)) IS NOT NULL",
                &[
                    (&state.schema.as_str(), Type::TEXT),
                    (&HISTORY_TABLE, Type::TEXT),
                ],
            )
            .await;
        let (exists, has_history) = match found {
            Ok(rows) => rows
                .first()
                .map_or((false, false), |r| (r.get(0), r.get(1))),
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
            match conn.query_typed(&applied_sql(&state.schema), &[]).await {
                Ok(rows) => {
                    for row in &rows {
                        let (version, checksum): (i32, i64) = (row.get(0), row.get(1));
                        applied = applied.max(version);
                        // The run's own check of each history row (`check_applied`).
                        match set.check_row(version, checksum) {
                            HistoryRow::Changed(m) => state.drift.push(Drift::Changed {
                                file: m.file_name(),
                            }),
                            HistoryRow::Unknown if version <= latest => {
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
        // The run's own check of names shared with `public`.
        match refuse_shadowing(&conn, &state.schema, &self.sets.shared_names()).await {
            Ok(()) => {}
            Err(Error::TableInPublic { schema, table }) => {
                state.drift.push(Drift::TableInPublic { schema, table });
            }
            Err(e) => state.drift.push(Drift::Unreadable {
                error: e.to_string(),
            }),
        }
        Ok(state)
    }
}
