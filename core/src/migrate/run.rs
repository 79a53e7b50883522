//! Migrating every tenant: shared migrations in `public` first, then each tenant schema in
//! its own transaction, with bounded parallelism.
//!
//! The registry keeps each tenant's version (`public.tenant_schemas_tenants.version`): the
//! runner reads it to find the tenants that are behind, and moves it with each schema's
//! migration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use tokio_postgres::types::Type;

use super::apply::{refuse_shadowing, HISTORY_TABLE};
use super::no_transaction::run_step;
use super::set::{MigrationSets, TenantMigrations};
use crate::databases::Databases;
use crate::error::{Error, Result};
use crate::schema::SchemaName;
use crate::shard::ShardName;

/// Serializes migrators across processes: a second one waits for the first.
pub(crate) const MIGRATE_LOCK: i64 = 0x7465_6e61_6e74_6d67;

/// Which tenants a multi-tenant run ([`Tenancy::migrate`], [`Tenancy::for_each_tenant`])
/// covers, and how many at once.
///
/// [`Tenancy::migrate`]: crate::Tenancy::migrate
/// [`Tenancy::for_each_tenant`]: crate::Tenancy::for_each_tenant
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// How many schemas are migrated at once; 0 picks a default from the core count and the
    /// pool size.
    pub parallel: usize,
    /// Only these tenant schemas (all when empty).
    pub schemas: Vec<SchemaName>,
    /// Leave `public` alone (the shared migrations; the public tenant).
    pub skip_public: bool,
    /// Migration only: migrate just these tenants (those of them that are behind, in this
    /// order), after the shared migrations, and leave every other tenant behind for a later
    /// run: a canary roll-out. Empty: no canaries.
    pub canary: Vec<SchemaName>,
    /// Migration only: migrate at most this many of the tenants that are behind (canaries
    /// first, then by schema name, a stable order), leaving the rest
    /// ([`MigrationReport::deferred`]) for the next run: a roll-out in waves. A failed
    /// tenant stays behind, so the next wave tries it first again.
    pub wave: Option<usize>,
}

/// What happened to one schema.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Nothing to do.
    UpToDate {
        /// Its version.
        version: i32,
    },
    /// Migrated.
    Migrated {
        /// The version before.
        from: i32,
        /// The version after.
        to: i32,
    },
    /// Failed; the schema stays at its previous version.
    Failed {
        /// The version it stays at, as the registry recorded it.
        version: i32,
        /// What went wrong.
        error: String,
    },
}

/// One schema's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReport {
    /// The schema.
    pub schema: SchemaName,
    /// The database (shard) it lives on.
    pub shard: ShardName,
    /// What happened.
    pub outcome: Outcome,
}

/// The result of a migration run, schema by schema.
#[derive(Debug, Clone, Default)]
pub struct MigrationReport {
    /// Every schema that was looked at: `public` first (unless skipped), then the tenants
    /// that were behind. Tenants already up to date are counted in `up_to_date` only.
    pub schemas: Vec<SchemaReport>,
    /// Tenants found up to date by the registry's version, without touching their schema.
    pub up_to_date: usize,
    /// Tenants behind that this run left for a later one ([`RunOptions::canary`],
    /// [`RunOptions::wave`]).
    pub deferred: usize,
    /// How long the run took.
    pub elapsed: Duration,
}

impl MigrationReport {
    /// The schemas that failed.
    pub fn failures(&self) -> impl Iterator<Item = &SchemaReport> {
        self.schemas
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
    }

    /// Whether every schema is at the latest version now.
    #[must_use]
    pub fn is_success(&self) -> bool {
        self.failures().next().is_none()
    }
}

/// Called after each schema with (schemas done, schemas to do).
pub type Progress = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// A migration run over the databases of one application (the registry on the default one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Runner<'a> {
    pub(crate) databases: &'a Databases,
    pub(crate) sets: &'a MigrationSets,
}

impl Runner<'_> {
    /// Runs the shared migrations in `public`, then brings every tenant that the registry
    /// says is behind to the latest tenant migration, each in its own transaction. A failed
    /// schema keeps its previous version and does not stop the others. A second migrator
    /// (another process) waits on an advisory lock until this one is done. The registry's
    /// tables must exist; the sets must have passed [`MigrationSets::validate`].
    ///
    /// Needs session state for the lock: run it over a direct connection, not through
    /// PgBouncer in transaction pooling mode.
    pub(crate) async fn run(
        self,
        options: &RunOptions,
        progress: Option<Progress>,
    ) -> Result<MigrationReport> {
        let started = Instant::now();
        let public = SchemaName::public();
        // The lock lives with this connection, which is taken out of the pool and closed at
        // the end: a cancelled run cannot leave the lock held by a pooled connection.
        let lock_conn = deadpool_postgres::Object::take(self.registry_conn().await?);
        lock_conn
            .execute_typed(
                "SELECT pg_catalog.pg_advisory_lock($1)",
                &[(&MIGRATE_LOCK, Type::INT8)],
            )
            .await
            .map_err(|e| Error::db("waiting for the migration lock", &public, e))?;

        let mut report = MigrationReport::default();
        // Every database's `public` gets the shared migrations.
        for shard in self.public_shards(options) {
            let outcome = self
                .migrate_one(&public, &shard, 0, &self.sets.shared)
                .await;
            report.schemas.push(SchemaReport {
                schema: public.clone(),
                shard,
                outcome,
            });
        }
        let plan = self.plan(options).await?;
        (report.up_to_date, report.deferred) = (plan.up_to_date, plan.deferred);
        self.check_sample(&plan).await?;
        let behind = plan.behind;
        let total = behind.len();
        let parallel = if options.parallel > 0 {
            options.parallel
        } else {
            default_parallelism(self.databases.default())
        };
        let mut done = 0;
        let mut results = stream::iter(behind)
            .map(|t| async move {
                let outcome = self
                    .migrate_one(&t.schema, &t.shard, t.version, &self.sets.tenant)
                    .await;
                SchemaReport {
                    schema: t.schema,
                    shard: t.shard,
                    outcome,
                }
            })
            .buffer_unordered(parallel);
        while let Some(result) = results.next().await {
            done += 1;
            if let Some(p) = &progress {
                p(done, total);
            }
            report.schemas.push(result);
        }
        drop(results);
        let _ = lock_conn
            .execute_typed(
                "SELECT pg_catalog.pg_advisory_unlock($1)",
                &[(&MIGRATE_LOCK, Type::INT8)],
            )
            .await;
        report.elapsed = started.elapsed();
        tracing::info!(
            migrated = report.schemas.len(),
            failed = report.failures().count(),
            up_to_date = report.up_to_date,
            "migration run finished"
        );
        Ok(report)
    }

    /// The databases whose `public` a run with `options` gives the shared migrations (the
    /// run and the dry run alike).
    pub(crate) fn public_shards(&self, options: &RunOptions) -> Vec<ShardName> {
        if options.skip_public || self.sets.shared.is_empty() {
            return Vec::new();
        }
        self.databases
            .iter()
            .map(|(shard, _)| shard.clone())
            .collect()
    }

    /// The tenants a run with `options` migrates, read before it does (by the run and by
    /// the dry run alike): those the registry says are behind, in order, after canaries and
    /// waves; how many it leaves behind and how many are up to date.
    pub(crate) async fn plan(&self, options: &RunOptions) -> Result<Plan> {
        let mut plan = Plan::default();
        let latest = self.sets.tenant.latest();
        let mut behind = Vec::new();
        for tenant in self.registered(&options.schemas).await? {
            if tenant.version < latest {
                behind.push(tenant);
            } else {
                plan.up_to_date += 1;
                plan.sample.get_or_insert(tenant);
            }
        }
        let before = behind.len();
        plan.behind = staged(behind, options);
        plan.deferred = before - plan.behind.len();
        Ok(plan)
    }

    /// Tenants that are up to date are not opened; one of them stands for all, so that an
    /// applied migration edited since is noticed even when nothing is pending: that fails
    /// the whole run.
    pub(crate) async fn check_sample(&self, plan: &Plan) -> Result<()> {
        if let Some(t) = &plan.sample {
            let conn = self.databases.connect(&t.shard, &t.schema).await?;
            self.sets.tenant.verify(&conn, &t.schema).await?;
        }
        Ok(())
    }

    /// The registered tenants (the public one aside) among `schemas` (all when empty), by
    /// schema name, with their registry version.
    pub(crate) async fn registered(&self, schemas: &[SchemaName]) -> Result<Vec<Registered>> {
        let public = SchemaName::public();
        let filter: Vec<&str> = schemas.iter().map(SchemaName::as_str).collect();
        let rows = self
            .registry_conn()
            .await?
            .query_typed(
                "SELECT schema_name, version, shard
                 FROM public.tenant_schemas_tenants
                 WHERE schema_name <> 'public' AND (cardinality($1::text[]) = 0 OR schema_name = ANY($1))
                 ORDER BY schema_name",
                &[(&filter, Type::TEXT_ARRAY)],
            )
            .await
            .map_err(|e| Error::db("reading tenant versions", &public, e))?;
        rows.iter()
            .map(|row| {
                Ok(Registered {
                    schema: SchemaName::from_registry(row.get(0))?,
                    version: row.get(1),
                    shard: ShardName::new(row.get(2)),
                })
            })
            .collect()
    }

    /// A connection to the database holding the registry.
    /// The role the registry records for the tenant in `schema` (role mode).
    async fn role_of(&self, schema: &SchemaName) -> Result<Option<String>> {
        let row = self
            .registry_conn()
            .await?
            .query_typed_opt(
                "SELECT role FROM public.tenant_schemas_tenants WHERE schema_name = $1",
                &[(&schema.as_str(), Type::TEXT)],
            )
            .await
            .map_err(|e| Error::db("reading the tenant's role", schema, e))?;
        Ok(row.and_then(|r| r.get(0)))
    }

    async fn registry_conn(&self) -> Result<deadpool_postgres::Object> {
        self.databases
            .connect(&ShardName::DEFAULT, &SchemaName::public())
            .await
    }

    async fn migrate_one(
        &self,
        schema: &SchemaName,
        shard: &ShardName,
        version: i32,
        migrations: &TenantMigrations,
    ) -> Outcome {
        match self
            .migrate_schema(schema, shard, version, migrations)
            .await
        {
            Ok((from, to)) if from == to => Outcome::UpToDate { version: to },
            Ok((from, to)) => Outcome::Migrated { from, to },
            Err((e, at)) => {
                tracing::warn!(schema = %schema, error = %e, "migration failed");
                Outcome::Failed {
                    version: at,
                    error: e.to_string(),
                }
            }
        }
    }

    /// Brings `schema` (registered at `version`) to the latest migration: the
    /// transactional migrations in one transaction each run of them, every
    /// [no-transaction step](super::Migration::no_transaction) between them on its own,
    /// each recorded once it succeeded. Returns (version before, version after), or the
    /// error and the version the schema was left at.
    pub(crate) async fn migrate_schema(
        &self,
        schema: &SchemaName,
        shard: &ShardName,
        version: i32,
        migrations: &TenantMigrations,
    ) -> std::result::Result<(i32, i32), (Error, i32)> {
        let mut from = None;
        let mut at = version;
        loop {
            let (start, reached) = self
                .transactional(schema, shard, at, migrations)
                .await
                .map_err(|e| (e, at))?;
            from.get_or_insert(start);
            at = reached;
            let Some(step) = migrations.iter().find(|m| m.version > at) else {
                break;
            };
            // `transactional` stops only before a no-transaction step.
            debug_assert!(step.no_transaction);
            self.no_transaction(schema, shard, step, migrations)
                .await
                .map_err(|e| (e, at))?;
            at = step.version;
        }
        Ok((from.unwrap_or(version), at))
    }

    /// The pending migrations up to the next no-transaction step, in one transaction.
    async fn transactional(
        &self,
        schema: &SchemaName,
        shard: &ShardName,
        version: i32,
        migrations: &TenantMigrations,
    ) -> Result<(i32, i32)> {
        let here = shard.is_default();
        // Role mode: the tenant's role, to grant it what the migrations add (a migration run
        // by another role than the one that created the tenant is not covered by the
        // default privileges). Read whether or not this process runs in role mode: a tenant
        // that has a role keeps it whoever migrates it.
        let role = if !schema.is_public() {
            self.role_of(schema).await?
        } else {
            None
        };
        let mut conn = self.databases.connect(shard, schema).await?;
        let in_schema = async {
            let tx = conn
                .transaction()
                .await
                .map_err(|e| Error::db("migrating", schema, e))?;
            let (from, to) = migrations.apply(&tx, schema).await?;
            if from != to {
                refuse_shadowing(tx.client(), schema, &self.sets.shared_names()).await?;
                if let Some(role) = &role {
                    tx.batch_execute(&crate::roles::grants_sql(schema, role))
                        .await
                        .map_err(|e| Error::db("granting the tenant's role", schema, e))?;
                }
            }
            if here && !schema.is_public() {
                tx.execute_typed(RECORD, &[(&schema.as_str(), Type::TEXT), (&to, Type::INT4)])
                    .await
                    .map_err(|e| Error::db("recording the version", schema, e))?;
            }
            tx.commit()
                .await
                .map_err(|e| Error::db("migrating", schema, e))?;
            Ok::<_, Error>((from, to))
        }
        .await;
        // A migration that may change session state beyond its transaction (a plain
        // `SET search_path`, `RESET ALL` …) leaves this connection closed, not pooled.
        if migrations.may_change_session_after(version) {
            drop(deadpool_postgres::Object::take(conn));
        }
        let (from, to) = in_schema?;
        if !here && !schema.is_public() {
            // The registry is on the default database: recorded after the schema's
            // transaction committed (a crash in between leaves the registry behind, which
            // the next run or `doctor --fix` brings level: applied migrations are skipped).
            self.record_elsewhere(schema, to).await?;
        }
        Ok((from, to))
    }

    /// Runs the no-transaction `step` in `schema` on a connection of its own (closed
    /// afterwards), then records it: its history row, and the registry's version, in one
    /// transaction when the registry is on the schema's database.
    async fn no_transaction(
        &self,
        schema: &SchemaName,
        shard: &ShardName,
        step: &super::Migration,
        migrations: &TenantMigrations,
    ) -> Result<()> {
        let here = shard.is_default();
        let mut conn =
            deadpool_postgres::Object::take(self.databases.connect(shard, schema).await?);
        run_step(&conn, schema, step, migrations.locks()).await?;
        let db = |e| Error::db("recording a no-transaction migration", schema, e);
        let tx = conn.transaction().await.map_err(db)?;
        tx.execute_typed(
            &format!(
                "INSERT INTO {}.{HISTORY_TABLE} (version, name, checksum) VALUES ($1, $2, $3)",
                schema.quoted()
            ),
            &[
                (&step.version, Type::INT4),
                (&step.name, Type::TEXT),
                (&step.checksum, Type::INT8),
            ],
        )
        .await
        .map_err(db)?;
        if here && !schema.is_public() {
            tx.execute_typed(
                RECORD,
                &[(&schema.as_str(), Type::TEXT), (&step.version, Type::INT4)],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        if !here && !schema.is_public() {
            self.record_elsewhere(schema, step.version).await?;
        }
        tracing::info!(schema = %schema, migration = %step.file_name(), "no-transaction migration applied");
        Ok(())
    }

    /// Records `schema`'s version in the registry, from another database's transaction.
    async fn record_elsewhere(&self, schema: &SchemaName, version: i32) -> Result<()> {
        self.registry_conn()
            .await?
            .execute_typed(
                RECORD,
                &[(&schema.as_str(), Type::TEXT), (&version, Type::INT4)],
            )
            .await
            .map_err(|e| Error::db("recording the version", schema, e))
            .map(drop)
    }
}

/// Moves a tenant's version in the registry.
const RECORD: &str = "UPDATE public.tenant_schemas_tenants SET version = $2 WHERE schema_name = $1";

/// A registered tenant and its registry version.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub(crate) schema: SchemaName,
    pub(crate) shard: ShardName,
    pub(crate) version: i32,
}

/// The tenants a run migrates ([`Runner::plan`]).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The tenants migrated, in order.
    pub(crate) behind: Vec<Registered>,
    /// Tenants up to date by the registry.
    pub(crate) up_to_date: usize,
    /// Tenants behind left for a later run.
    pub(crate) deferred: usize,
    /// An up-to-date tenant that stands for all of them ([`Runner::check_sample`]).
    pub(crate) sample: Option<Registered>,
}

/// The tenants behind that a run migrates, in order: with canaries only those (in their
/// order), then at most a wave of them.
fn staged(behind: Vec<Registered>, options: &RunOptions) -> Vec<Registered> {
    let mut behind = if options.canary.is_empty() {
        behind
    } else {
        options
            .canary
            .iter()
            .filter_map(|c| behind.iter().find(|t| &t.schema == c).cloned())
            .collect()
    };
    if let Some(wave) = options.wave {
        behind.truncate(wave);
    }
    behind
}

/// How many schemas are migrated (or jobs run) at once when not told.
pub(crate) fn default_parallelism(pool: &deadpool_postgres::Pool) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    // Leave one connection for the lock and one for everything else.
    (cores * 2)
        .min(pool.status().max_size.saturating_sub(2))
        .max(1)
}
