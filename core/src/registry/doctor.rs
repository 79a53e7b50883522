//! Finding (and repairing what is safe of) damage between the registry and the schemas.

use std::collections::{HashMap, HashSet};
use std::fmt;

use tokio_postgres::types::Type;

use crate::error::{Error, Result};
use crate::migrate::{
    invalid_indexes, quote, shadowed_tables, MigrationReport, HISTORY_TABLE, STEP_LOCK,
};
use crate::registry::Registry;
use crate::schema::{printable, SchemaName};

/// Something [`Registry::doctor`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// A schema with a migration history but no registry row: a tenant half deleted, or
    /// created behind the registry's back. Not repaired (it may hold data).
    OrphanSchema {
        /// The schema's name as PostgreSQL has it.
        name: String,
    },
    /// A registry row whose schema does not exist: its hosts cannot be served. Not repaired.
    MissingSchema {
        /// The registered schema.
        schema: SchemaName,
    },
    /// A tenant behind the migration set. Repaired by migrating it.
    Behind {
        /// The tenant.
        schema: SchemaName,
        /// Its version.
        version: i32,
        /// The latest version.
        latest: i32,
    },
    /// A tenant ahead of the migration set (newer code migrated it). Not repaired.
    Ahead {
        /// The tenant.
        schema: SchemaName,
        /// Its version.
        version: i32,
        /// The latest version this code knows.
        latest: i32,
    },
    /// A registry row whose schema name would not pass validation. Not repaired.
    InvalidName {
        /// The stored name (escaped).
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A tenant table (or view) with the name of one in `public`, not declared with
    /// [`TenantMigrations::shared_name`](crate::TenantMigrations::shared_name). Where the
    /// tenant's schema is missing from a search path, PostgreSQL skips it and the unqualified
    /// name silently means `public`'s table. Not repaired (rename one, or declare it).
    TableInPublic {
        /// The tenant.
        schema: SchemaName,
        /// The table's name.
        table: String,
    },
    /// A tenant whose schema has the name of a database role (made after the tenant): the
    /// default search path `"$user", public` resolves to that schema for that role on every
    /// connection not switched to a tenant. Not repaired (rename the role or move the tenant).
    SchemaNamedAfterRole {
        /// The tenant.
        schema: SchemaName,
    },
    /// An invalid index in a tenant schema (`pg_index.indisvalid = false`): a concurrent
    /// build that failed, e.g. a [no-transaction migration](crate::Migration::no_transaction)
    /// `CREATE UNIQUE INDEX CONCURRENTLY` over duplicate rows. Queries do not use it, but
    /// writes keep it up to date, and its name blocks the step's next attempt. Repaired: in
    /// a tenant behind the migration set it is dropped (`DROP INDEX CONCURRENTLY`) and the
    /// migration that builds it runs again; otherwise it is rebuilt (`REINDEX INDEX
    /// CONCURRENTLY`). Either fails again until what made the build fail (the duplicate
    /// rows) is fixed.
    InvalidIndex {
        /// The tenant.
        schema: SchemaName,
        /// The index.
        index: String,
    },
    /// Role mode: a tenant without a role of its own (`role: None`: created before role mode
    /// was on, or by a process without it), or whose recorded role does not exist on its
    /// database's cluster (a registry restored elsewhere, a role dropped by hand). Its
    /// requests are refused ([`Error::NoTenantRole`](crate::Error::NoTenantRole), or a failed
    /// switch) until repaired by [`Tenancy::sync_roles`](crate::Tenancy::sync_roles), which
    /// `fix` runs in role mode.
    RoleMissing {
        /// The tenant.
        schema: SchemaName,
        /// The role the registry records for it, if any.
        role: Option<String>,
    },
}

/// The finding in words, as the command-line tool prints it, e.g. `tenant acme is at
/// version 2 of 3`.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OrphanSchema { name } => {
                write!(
                    f,
                    "schema {name} has no registry row (not repaired: it may hold data)"
                )
            }
            Self::MissingSchema { schema } => write!(f, "tenant {schema} has no schema"),
            Self::Behind {
                schema,
                version,
                latest,
            } => write!(f, "tenant {schema} is at version {version} of {latest}"),
            Self::Ahead {
                schema,
                version,
                latest,
            } => write!(
                f,
                "tenant {schema} is at version {version}, ahead of {latest}"
            ),
            Self::InvalidName { name, reason } => {
                write!(f, "registry name {name} is invalid: {reason}")
            }
            Self::TableInPublic { schema, table } => write!(
                f,
                "tenant {schema} has a table {table} like public.{table} \
                 (not repaired: rename one, or declare it shared)"
            ),
            Self::SchemaNamedAfterRole { schema } => write!(
                f,
                "tenant {schema} is named like a database role (\"$user\" resolves to it)"
            ),
            Self::RoleMissing { schema, role: None } => write!(
                f,
                "tenant {schema} has no role of its own (role mode; `roles sync` gives it one)"
            ),
            Self::RoleMissing {
                schema,
                role: Some(role),
            } => write!(
                f,
                "tenant {schema}'s role {role} does not exist (`roles sync` makes it again)"
            ),
            Self::InvalidIndex { schema, index } => write!(
                f,
                "tenant {schema} has an invalid index {index} (a failed concurrent build; \
                 --fix drops it and migrates a tenant behind, rebuilds it otherwise)"
            ),
        }
    }
}

impl Finding {
    /// Whether `--fix` repairs this kind of finding.
    #[must_use]
    pub fn is_repairable(&self) -> bool {
        matches!(
            self,
            Self::Behind { .. } | Self::InvalidIndex { .. } | Self::RoleMissing { .. }
        )
    }
}

/// What [`Registry::doctor`] found and [`Tenancy::doctor`](crate::Tenancy::doctor)
/// repaired.
#[derive(Debug, Clone, Default)]
pub struct DoctorReport {
    /// Everything found.
    pub findings: Vec<Finding>,
    /// The findings repaired (with `fix`).
    pub repaired: Vec<Finding>,
    /// Findings a repair was tried for and failed, with the error.
    pub repair_failures: Vec<(Finding, String)>,
}

impl DoctorReport {
    /// The tenants found behind the migration set: what a repair migrates.
    pub(crate) fn behind(&self) -> Vec<SchemaName> {
        self.findings
            .iter()
            .filter_map(|f| match f {
                Finding::Behind { schema, .. } => Some(schema.clone()),
                _ => None,
            })
            .collect()
    }

    /// Records what the migration `run` of the [`behind`](Self::behind) tenants repaired.
    pub(crate) fn record_repairs(&mut self, run: &MigrationReport) {
        for finding in self.findings.iter().filter(|f| f.is_repairable()) {
            let Finding::Behind { schema, .. } = finding else {
                continue;
            };
            match run.failures().find(|r| &r.schema == schema) {
                Some(r) => self
                    .repair_failures
                    .push((finding.clone(), format!("{:?}", r.outcome))),
                None => self.repaired.push(finding.clone()),
            }
        }
    }

    /// Records the outcome of an index repair: `None` repaired, or the error.
    pub(crate) fn record_repair(&mut self, finding: Finding, error: Option<String>) {
        match error {
            None => self.repaired.push(finding),
            Some(e) => self.repair_failures.push((finding, e)),
        }
    }

    /// Whether nothing is left to look at.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.findings.len() == self.repaired.len()
    }
}

impl Registry {
    /// Looks for schemas without a registry row, rows without a schema, tenants behind or
    /// ahead of the migration set, invalid names, tenant tables named like a table in
    /// `public` (unless declared shared), tenant schemas named like a database role, and invalid indexes (failed concurrent builds).
    /// Only reads: [`Tenancy::doctor`](crate::Tenancy::doctor) with `fix` repairs what can
    /// be repaired.
    pub async fn doctor(&self) -> Result<DoctorReport> {
        let public = SchemaName::public();
        let db = |e| Error::db("checking the registry", &public, e);
        let mut report = DoctorReport::default();
        let tenants = self
            .conn()
            .await?
            .query_typed(
                "SELECT schema_name, version, shard, role FROM public.tenant_schemas_tenants \
                 ORDER BY schema_name",
                &[],
            )
            .await
            .map_err(db)?;
        // What each database holds: every schema, and those with a migration history.
        let mut present: HashMap<String, (HashSet<String>, Vec<String>)> = HashMap::new();
        // Per database: (schema, table) pairs shadowing `public`, and the role names.
        let mut shadowed: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut roles: HashMap<String, HashSet<String>> = HashMap::new();
        // Per database: (schema, index) pairs of invalid indexes.
        let mut invalid: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let allowed = self.sets().shared_names();
        for (shard, _) in self.databases().iter() {
            let conn = self.databases().connect(shard, &public).await?;
            let rows = conn
                .query_typed(
                    "SELECT n.nspname::text, EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                         WHERE c.relnamespace = n.oid AND c.relname = $1 AND c.relkind = 'r')
                     FROM pg_catalog.pg_namespace n ORDER BY 1",
                    &[(&HISTORY_TABLE, Type::TEXT)],
                )
                .await
                .map_err(db)?;
            let all = rows.iter().map(|r| r.get::<_, String>(0)).collect();
            let with_history = rows
                .iter()
                .filter(|r| r.get::<_, bool>(1))
                .map(|r| r.get::<_, String>(0))
                .collect();
            present.insert(shard.to_string(), (all, with_history));
            let pairs = shadowed_tables(&conn, None, &allowed).await.map_err(db)?;
            shadowed.insert(shard.to_string(), pairs);
            let role_names = conn
                .query_typed("SELECT rolname::text FROM pg_catalog.pg_roles", &[])
                .await
                .map_err(db)?
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect();
            roles.insert(shard.to_string(), role_names);
            let indexes = invalid_indexes(&conn, None).await.map_err(db)?;
            invalid.insert(
                shard.to_string(),
                indexes.into_iter().map(|(s, i, _)| (s, i)).collect(),
            );
        }
        let registered: HashSet<(String, String)> = tenants
            .iter()
            .map(|r| (r.get::<_, String>(2), r.get::<_, String>(0)))
            .collect();
        for (shard, (_, with_history)) in &present {
            for name in with_history {
                if name != "public" && !registered.contains(&(shard.clone(), name.clone())) {
                    report
                        .findings
                        .push(Finding::OrphanSchema { name: name.clone() });
                }
            }
        }
        let latest = self.sets().tenant.latest();
        for row in tenants {
            let name: &str = row.get(0);
            let schema = match SchemaName::from_registry(name) {
                Ok(s) => s,
                Err(e) => {
                    report.findings.push(Finding::InvalidName {
                        name: printable(name),
                        reason: e.reason().to_owned(),
                    });
                    continue;
                }
            };
            let version: i32 = row.get(1);
            let shard: &str = row.get(2);
            let exists = present
                .get(shard)
                .is_some_and(|(all, _)| all.contains(name));
            if !exists {
                report.findings.push(Finding::MissingSchema { schema });
                continue;
            }
            if schema.is_public() {
                continue;
            }
            if roles.get(shard).is_some_and(|r| r.contains(name)) {
                report.findings.push(Finding::SchemaNamedAfterRole {
                    schema: schema.clone(),
                });
            }
            let role: Option<String> = row.get(3);
            let role_missing = match &role {
                Some(role) => !roles.get(shard).is_some_and(|r| r.contains(role)),
                None => self.roles().is_some(),
            };
            if role_missing {
                report.findings.push(Finding::RoleMissing {
                    schema: schema.clone(),
                    role,
                });
            }
            for (_, table) in shadowed
                .get(shard)
                .into_iter()
                .flatten()
                .filter(|(s, _)| s == name)
            {
                report.findings.push(Finding::TableInPublic {
                    schema: schema.clone(),
                    table: table.clone(),
                });
            }
            for (_, index) in invalid
                .get(shard)
                .into_iter()
                .flatten()
                .filter(|(s, _)| s == name)
            {
                report.findings.push(Finding::InvalidIndex {
                    schema: schema.clone(),
                    index: index.clone(),
                });
            }
            if version < latest {
                report.findings.push(Finding::Behind {
                    schema,
                    version,
                    latest,
                });
            } else if version > latest {
                report.findings.push(Finding::Ahead {
                    schema,
                    version,
                    latest,
                });
            }
        }
        Ok(report)
    }
}

impl Registry {
    /// Repairs the [`Finding::InvalidIndex`]es of `report`, one by one, each on a connection
    /// of its own holding the no-transaction steps' lock exclusively (so no index a build is
    /// still making is touched): dropped in a tenant behind the migration set (its migration
    /// builds it again), rebuilt otherwise. Returns each finding with its error, if any.
    pub(crate) async fn repair_invalid_indexes(
        &self,
        report: &DoctorReport,
    ) -> Result<Vec<(Finding, Option<String>)>> {
        let behind = report.behind();
        let mut out = Vec::new();
        for finding in &report.findings {
            let Finding::InvalidIndex { schema, index } = finding else {
                continue;
            };
            let record = self.get(schema).await?;
            let conn = deadpool_postgres::Object::take(
                self.databases().connect(&record.shard, schema).await?,
            );
            let repaired = async {
                conn.query_typed(
                    "SELECT pg_catalog.pg_advisory_lock($1)",
                    &[(&STEP_LOCK, Type::INT8)],
                )
                .await?;
                let still = invalid_indexes(&conn, Some(schema))
                    .await?
                    .iter()
                    .any(|(_, i, _)| i == index);
                if still {
                    let target = format!("{}.{}", schema.quoted(), quote(index));
                    conn.batch_execute(&if behind.contains(schema) {
                        format!("DROP INDEX CONCURRENTLY IF EXISTS {target}")
                    } else {
                        format!("REINDEX INDEX CONCURRENTLY {target}")
                    })
                    .await?;
                }
                Ok::<_, tokio_postgres::Error>(())
            }
            .await;
            // The connection (and the lock with it) is closed here.
            drop(conn);
            let error = repaired
                .err()
                .map(|e| Error::db("repairing an invalid index", schema, e).to_string());
            out.push((finding.clone(), error));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words are the ones the command-line tool printed before it read them from here.
    #[test]
    fn each_finding_is_worded_as_the_cli_prints_it() {
        let acme = SchemaName::new("acme").unwrap();
        let cases = [
            (
                Finding::OrphanSchema { name: "old".into() },
                "schema old has no registry row (not repaired: it may hold data)",
            ),
            (
                Finding::MissingSchema {
                    schema: acme.clone(),
                },
                "tenant acme has no schema",
            ),
            (
                Finding::Behind {
                    schema: acme.clone(),
                    version: 2,
                    latest: 3,
                },
                "tenant acme is at version 2 of 3",
            ),
            (
                Finding::Ahead {
                    schema: acme.clone(),
                    version: 4,
                    latest: 3,
                },
                "tenant acme is at version 4, ahead of 3",
            ),
            (
                Finding::InvalidName {
                    name: "\"x\"".into(),
                    reason: "too long".into(),
                },
                "registry name \"x\" is invalid: too long",
            ),
            (
                Finding::TableInPublic {
                    schema: acme.clone(),
                    table: "users".into(),
                },
                "tenant acme has a table users like public.users \
                 (not repaired: rename one, or declare it shared)",
            ),
            (
                Finding::SchemaNamedAfterRole {
                    schema: acme.clone(),
                },
                "tenant acme is named like a database role (\"$user\" resolves to it)",
            ),
            (
                Finding::InvalidIndex {
                    schema: acme,
                    index: "notes_key".into(),
                },
                "tenant acme has an invalid index notes_key (a failed concurrent build; \
                 --fix drops it and migrates a tenant behind, rebuilds it otherwise)",
            ),
        ];
        for (finding, words) in cases {
            assert_eq!(finding.to_string(), words, "{finding:?}");
        }
    }
}
