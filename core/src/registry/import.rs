//! Adopting an existing deployment: registering schemas that already exist as tenants
//! (from a query, or from django-tenants' tables) and recording the migrations they already
//! have as applied (a baseline), without touching their data.

use tokio_postgres::types::Type;
use tokio_postgres::{Row, Transaction};

use super::lifecycle::{refuse_role_name, NewTenant};
use super::Registry;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::migrate::{refuse_shadowing, Baselined, MIGRATE_LOCK};
use crate::schema::SchemaName;
use crate::shard::ShardName;
use crate::tenant::TenantRecord;

/// Where [`Tenancy::import_tenants`](crate::Tenancy::import_tenants) reads the tenants to
/// register from: a query on the registry's database, run in a read-only transaction.
///
/// A query returns one row per tenant and domain, with the columns (by name)
/// `schema_name` (text, required), and optionally `name` (text: the display name),
/// `domain` (text), `is_primary` (boolean: the primary domain, otherwise the tenant's first
/// domain row is) and `shard` (text: the database it lives on).
///
/// ```
/// use tenant_schemas::ImportSource;
///
/// let query = ImportSource::query("SELECT schema_name, name, domain FROM old_tenants");
/// let django = ImportSource::django_tenants(); // customers_client and customers_domain
/// let custom = ImportSource::django_tenants_tables("shop_client", "shop_domain");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportSource {
    /// A query returning `schema_name` and optionally `name`, `domain`, `is_primary`,
    /// `shard`.
    Query(String),
    /// django-tenants' tables: the tenant model's (`schema_name`, and `name` when it has
    /// one) and the domain model's (`domain`, `tenant_id`, `is_primary`).
    DjangoTenants {
        /// The tenant model's table, e.g. `customers_client` (may be schema-qualified).
        tenant_table: String,
        /// The domain model's table, e.g. `customers_domain`.
        domain_table: String,
    },
}

impl ImportSource {
    /// The tenants a query returns (see the type's docs for its columns).
    #[must_use]
    pub fn query(sql: impl Into<String>) -> Self {
        Self::Query(sql.into())
    }

    /// django-tenants' tables as its documentation names them: `customers_client` and
    /// `customers_domain`.
    #[must_use]
    pub fn django_tenants() -> Self {
        Self::django_tenants_tables("customers_client", "customers_domain")
    }

    /// django-tenants' tables with the names of your tenant and domain models' tables.
    #[must_use]
    pub fn django_tenants_tables(
        tenant_table: impl Into<String>,
        domain_table: impl Into<String>,
    ) -> Self {
        Self::DjangoTenants {
            tenant_table: tenant_table.into(),
            domain_table: domain_table.into(),
        }
    }
}

fn source_error(reason: impl Into<String>) -> Error {
    Error::ImportSource {
        reason: reason.into(),
    }
}

/// A table name as given (`table` or `schema.table`), quoted; letters, digits, `_` and `$`
/// only, so that it can only ever name a table.
fn quoted_table(name: &str, what: &str) -> Result<String> {
    let valid = |part: &str| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
            && part.len() <= 63
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| valid(p)) {
        return Err(source_error(format!(
            "invalid {what} `{name}`: expected a table name, optionally schema-qualified"
        )));
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join("."))
}

impl Registry {
    /// The tenants `source` lists, as they would be imported: one [`NewTenant`] per schema,
    /// its domains primary first. Only reads (in a read-only transaction); schema names
    /// and domains are validated.
    pub async fn read_import(&self, source: &ImportSource) -> Result<Vec<NewTenant>> {
        let (tenants, mut problems) = self.read_import_all(source).await?;
        match problems.is_empty() {
            true => Ok(tenants),
            false => Err(problems.swap_remove(0).1),
        }
    }

    /// [`read_import`](Self::read_import), with every row that cannot be imported (an
    /// invalid schema name or domain) as a problem, by its schema's name as the row has it,
    /// instead of failing at the first.
    pub(crate) async fn read_import_all(
        &self,
        source: &ImportSource,
    ) -> Result<(Vec<NewTenant>, Vec<(String, Error)>)> {
        let public = SchemaName::public();
        let db = |e| Error::db("reading the tenants to import", &public, e);
        let mut conn = self.conn().await?;
        let tx = conn
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        let sql = match source {
            ImportSource::Query(sql) => sql.clone(),
            ImportSource::DjangoTenants {
                tenant_table,
                domain_table,
            } => django_query(&tx, tenant_table, domain_table).await?,
        };
        let statement = tx
            .prepare(&sql)
            .await
            .map_err(|e| source_error(format!("the query failed: {}", pg_text(&e))))?;
        let columns: Vec<&str> = statement.columns().iter().map(|c| c.name()).collect();
        if !columns.contains(&"schema_name") {
            return Err(source_error(format!(
                "the query returns no `schema_name` column (it returns: {})",
                columns.join(", ")
            )));
        }
        let rows = tx
            .query(&statement, &[])
            .await
            .map_err(|e| source_error(format!("the query failed: {}", pg_text(&e))))?;
        let has = |column: &str| columns.contains(&column);
        let mut tenants: Vec<Importing> = Vec::new();
        let mut problems: Vec<(String, Error)> = Vec::new();
        for (n, row) in rows.iter().enumerate() {
            let Some(name) = text(row, "schema_name", n)? else {
                problems.push((
                    format!("row {}", n + 1),
                    source_error(format!("row {} has no schema_name (NULL)", n + 1)),
                ));
                continue;
            };
            let schema = match SchemaName::from_registry(&name) {
                Ok(schema) => schema,
                Err(e) => {
                    problems.push((name, Error::from(e)));
                    continue;
                }
            };
            let i = match tenants.iter().position(|t| t.schema == schema) {
                Some(i) => i,
                None => {
                    tenants.push(Importing::new(schema.clone()));
                    tenants.len() - 1
                }
            };
            let tenant = &mut tenants[i];
            if has("name") && tenant.name.is_none() {
                tenant.name = text(row, "name", n)?;
            }
            if has("shard") && tenant.shard.is_none() {
                tenant.shard = text(row, "shard", n)?;
            }
            if has("domain") {
                if let Some(domain) = text(row, "domain", n)? {
                    let host = match Host::parse(&domain) {
                        Ok(host) => host,
                        Err(e) => {
                            problems.push((
                                schema.to_string(),
                                source_error(format!(
                                    "tenant `{schema}`: invalid domain `{domain}`: {e}"
                                )),
                            ));
                            continue;
                        }
                    };
                    let primary = has("is_primary")
                        && row
                            .try_get::<_, Option<bool>>("is_primary")
                            .map_err(|e| wrong_type("is_primary", "boolean", n, &e))?
                            .unwrap_or(false);
                    if !tenant.domains.iter().any(|(d, _)| d == &host) {
                        tenant.domains.push((host, primary));
                    }
                }
            }
        }
        tx.rollback().await.map_err(db)?;
        Ok((
            tenants.into_iter().map(Importing::into_new).collect(),
            problems,
        ))
    }

    /// What [`import`](Self::import) would refuse, every tenant checked (not only up to the
    /// first failure): each tenant is registered in a savepoint of one transaction (undone
    /// when it fails, kept for the next tenants' checks when it passes), which is rolled
    /// back at the end; tenants on another database are checked there the same way, each in
    /// a transaction rolled back. Nothing is written.
    pub(crate) async fn import_problems(
        &self,
        tenants: &[NewTenant],
        baseline: i32,
    ) -> Result<Vec<(String, Error)>> {
        let public = SchemaName::public();
        self.sets.tenant.validate()?;
        self.sets.tenant.check_baseline(baseline)?;
        let db = |e| Error::db("checking tenants to import", &public, e);
        let mut conn = self.conn().await?;
        let mut tx = conn.transaction().await.map_err(db)?;
        let shared_names = self.sets.shared_names();
        let mut problems = Vec::new();
        for (n, new) in (1i64..).zip(tenants) {
            let schema = new.schema();
            let sp = tx.savepoint("tenant").await.map_err(db)?;
            // Under an id no tenant has (negative): a sequence value taken here would be
            // gone after the rollback.
            let checked = self
                .import_one(&sp, new, baseline, &shared_names, Some(-n))
                .await;
            // A tenant that passes stays registered (in the transaction) for the next ones'
            // checks: two rows claiming one domain are a problem too.
            match checked {
                Ok(_) => sp.commit().await.map_err(db)?,
                Err(e) => {
                    sp.rollback().await.map_err(db)?;
                    problems.push((schema.to_string(), e));
                }
            }
        }
        tx.rollback().await.map_err(db)?;
        Ok(problems)
    }

    /// Registers each of `tenants`, whose schemas exist already, with the tenant
    /// migrations up to `baseline` recorded as applied in its schema (see
    /// [`baseline`](Self::baseline)): all of them or, on the first failure, none. Nothing in
    /// the schemas is changed besides their migration history.
    pub(crate) async fn import(
        &self,
        tenants: &[NewTenant],
        baseline: i32,
    ) -> Result<Vec<TenantRecord>> {
        let public = SchemaName::public();
        self.sets.tenant.validate()?;
        self.sets.tenant.check_baseline(baseline)?;
        let db = |e| Error::db("importing tenants", &public, e);
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db)?;
        let shared_names = self.sets.shared_names();
        for new in tenants {
            self.import_one(&tx, new, baseline, &shared_names, None)
                .await?;
        }
        tx.commit().await.map_err(db)?;
        let mut records = Vec::new();
        for new in tenants {
            let record = self.get(new.schema()).await?;
            tracing::info!(schema = %record.schema, tenant_id = record.id, version = record.version, "tenant imported");
            records.push(record);
        }
        Ok(records)
    }

    /// Registers `new` in `tx` after its schema's checks and baseline. A schema on another
    /// database gets its history there first, in a transaction of its own: committed for an
    /// import (should the registration fail, the history stays, true to what the schema
    /// holds), rolled back for a dry run, which registers under `dry_run_id` (an id no
    /// tenant has) rather than a value of the registry's sequence.
    async fn import_one(
        &self,
        tx: &Transaction<'_>,
        new: &NewTenant,
        baseline: i32,
        shared_names: &[String],
        dry_run_id: Option<i64>,
    ) -> Result<()> {
        let schema = new.schema();
        let shard = match &new.shard {
            Some(shard) if !schema.is_public() => shard.clone(),
            _ => ShardName::DEFAULT,
        };
        let version = if schema.is_public() {
            0
        } else if shard.is_default() {
            let (_, to) = self.adopt_schema(tx, schema, baseline).await?;
            refuse_shadowing(tx.client(), schema, shared_names).await?;
            to
        } else {
            let db = |e| Error::db("importing a tenant", schema, e);
            let mut shard_conn = self.databases.connect(&shard, schema).await?;
            let stx = shard_conn.transaction().await.map_err(db)?;
            let (_, to) = self.adopt_schema(&stx, schema, baseline).await?;
            refuse_shadowing(stx.client(), schema, shared_names).await?;
            if dry_run_id.is_none() {
                stx.commit().await.map_err(db)?;
            } else {
                stx.rollback().await.map_err(db)?;
            }
            to
        };
        self.register_as(tx, new, version, &shard, dry_run_id)
            .await?;
        Ok(())
    }

    /// The checks a schema to register passes, and its baseline, in `tx`.
    async fn adopt_schema(
        &self,
        tx: &Transaction<'_>,
        schema: &SchemaName,
        baseline: i32,
    ) -> Result<(i32, i32)> {
        // As for a created tenant: a schema named like a role would be on every unswitched
        // connection's path.
        refuse_role_name(tx, schema, "importing a tenant").await?;
        self.sets.tenant.baseline(tx, schema, baseline).await
    }

    /// Records the tenant migrations up to `version` as applied, without running them, in
    /// the schemas of the registered tenants `schemas` (every tenant but the public one when
    /// empty), each in its own transaction, and moves their registry version along (see
    /// [`Tenancy::baseline`](crate::Tenancy::baseline)). Waits for a migration run in
    /// progress, as a second migrator would.
    pub(crate) async fn baseline(
        &self,
        schemas: &[SchemaName],
        version: i32,
    ) -> Result<Vec<Baselined>> {
        const RECORD: &str =
            "UPDATE public.tenant_schemas_tenants SET version = $2 WHERE schema_name = $1";
        let public = SchemaName::public();
        self.sets.tenant.validate()?;
        self.sets.tenant.check_baseline(version)?;
        let tenants = self.list().await?;
        if let Some(unknown) = schemas
            .iter()
            .find(|s| !tenants.iter().any(|t| &t.schema == *s))
        {
            return Err(Error::tenant_not_found(unknown));
        }
        let lock = deadpool_postgres::Object::take(self.conn().await?);
        lock.execute_typed(
            "SELECT pg_catalog.pg_advisory_lock($1)",
            &[(&MIGRATE_LOCK, Type::INT8)],
        )
        .await
        .map_err(|e| Error::db("waiting for the migration lock", &public, e))?;
        let mut done = Vec::new();
        for tenant in tenants.iter().filter(|t| {
            !t.schema.is_public() && (schemas.is_empty() || schemas.contains(&t.schema))
        }) {
            let (schema, shard) = (&tenant.schema, &tenant.shard);
            let db = |e| Error::db("recording a baseline", schema, e);
            let mut conn = self.databases.connect(shard, schema).await?;
            let tx = conn.transaction().await.map_err(db)?;
            let (from, to) = self.sets.tenant.baseline(&tx, schema, version).await?;
            if shard.is_default() {
                tx.execute_typed(RECORD, &[(&schema.as_str(), Type::TEXT), (&to, Type::INT4)])
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)?;
            } else {
                tx.commit().await.map_err(db)?;
                self.conn()
                    .await?
                    .execute_typed(RECORD, &[(&schema.as_str(), Type::TEXT), (&to, Type::INT4)])
                    .await
                    .map_err(db)?;
            }
            done.push(Baselined {
                schema: schema.clone(),
                shard: shard.clone(),
                from,
                to,
            });
        }
        // The lock goes with the connection, which is closed, not pooled.
        drop(lock);
        Ok(done)
    }
}

/// A tenant being read from an import source.
struct Importing {
    schema: SchemaName,
    name: Option<String>,
    shard: Option<String>,
    /// Each domain, and whether its row says it is primary.
    domains: Vec<(Host, bool)>,
}

impl Importing {
    fn new(schema: SchemaName) -> Self {
        Self {
            schema,
            name: None,
            shard: None,
            domains: Vec::new(),
        }
    }

    fn into_new(mut self) -> NewTenant {
        // Primary first; otherwise in the order of the rows.
        self.domains.sort_by_key(|(_, primary)| !primary);
        let mut new = NewTenant::new(self.schema);
        if let Some(name) = self.name {
            new = new.name(name);
        }
        if let Some(shard) = self.shard {
            new = new.shard(ShardName::new(&shard));
        }
        for (domain, _) in self.domains {
            new = new.domain(domain);
        }
        new
    }
}

/// The text column `column` of row `n`.
fn text(row: &Row, column: &str, n: usize) -> Result<Option<String>> {
    row.try_get::<_, Option<String>>(column)
        .map_err(|e| wrong_type(column, "text", n, &e))
}

fn wrong_type(column: &str, expected: &str, n: usize, e: &tokio_postgres::Error) -> Error {
    source_error(format!(
        "column `{column}` of row {} is not {expected}: {e}",
        n + 1
    ))
}

/// The server's message for a failed statement.
fn pg_text(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_owned())
}

/// The query reading django-tenants' tables; the tenant model's `name` column is used when
/// it has one (django-tenants' own `TenantMixin` has only `schema_name`).
async fn django_query(
    tx: &Transaction<'_>,
    tenant_table: &str,
    domain_table: &str,
) -> Result<String> {
    let public = SchemaName::public();
    let tenants = quoted_table(tenant_table, "tenant table")?;
    let domains = quoted_table(domain_table, "domain table")?;
    let mut has_name = false;
    for (table, what) in [(&tenants, "tenant table"), (&domains, "domain table")] {
        let row = tx
            .query_typed_one(
                "SELECT pg_catalog.to_regclass($1) IS NOT NULL,
                        EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                                WHERE attrelid = pg_catalog.to_regclass($1)
                                  AND attname = 'name' AND NOT attisdropped)",
                &[(table, Type::TEXT)],
            )
            .await
            .map_err(|e| Error::db("reading the tenants to import", &public, e))?;
        if !row.get::<_, bool>(0) {
            let given = if what == "tenant table" {
                tenant_table
            } else {
                domain_table
            };
            return Err(source_error(format!(
                "no {what} `{given}` in the database (is this the django-tenants database? \
                 name the tables with --tenant-table and --domain-table)"
            )));
        }
        if what == "tenant table" {
            has_name = row.get(1);
        }
    }
    let name = if has_name { "c.name" } else { "NULL::text" };
    Ok(format!(
        "SELECT c.schema_name::text AS schema_name, {name}::text AS name,
                d.domain::text AS domain, d.is_primary
         FROM {tenants} c LEFT JOIN {domains} d ON d.tenant_id = c.id
         ORDER BY c.id, d.is_primary DESC NULLS LAST, d.id"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_quoted_or_refused() {
        assert_eq!(
            quoted_table("customers_client", "t").unwrap(),
            "\"customers_client\""
        );
        assert_eq!(
            quoted_table("public.Client", "t").unwrap(),
            "\"public\".\"Client\""
        );
        for bad in ["", "a.b.c", "x; DROP TABLE y", "\"x\"", "1abc", "a b"] {
            assert!(quoted_table(bad, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn the_primary_domain_comes_first() {
        let mut t = Importing::new(SchemaName::new("acme").unwrap());
        for (d, primary) in [("a.test", false), ("b.test", true), ("c.test", false)] {
            t.domains.push((Host::parse(d).unwrap(), primary));
        }
        let new = t.into_new();
        let domains: Vec<&str> = new.domains.iter().map(Host::as_str).collect();
        assert_eq!(domains, ["b.test", "a.test", "c.test"]);
    }
}
