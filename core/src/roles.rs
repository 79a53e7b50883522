//! Role mode: each tenant's own `NOLOGIN` role, so that the database itself refuses a
//! tenant's statements naming another tenant's schema.
//!
//! With [`TenancyBuilder::tenant_roles`](crate::TenancyBuilder::tenant_roles), every tenant
//! gets a role (`ts_` and 16 hex digits, recorded in the registry's `role` column) that holds
//! `USAGE` and `CREATE` on its schema and every privilege on what is in it (granted on what
//! exists, and by default privileges on what the creating role adds later). The pooled login
//! role is made a member of each, and every switch sets the tenant's role together with its
//! search path (`SET ROLE`, `SET LOCAL ROLE` in transaction mode, in the same message); the
//! library's own work (registry, migrations) runs as the login role (`RESET ROLE`). A
//! tenant's statement naming another tenant's schema then fails with `permission denied`,
//! whichever door it came through. Every tenant role is a member of one group role
//! ([`TenantRoles::group`]), which holds what tenants may do in `public`
//! ([`TenantRoles::share`]); the registry's tables are not shared.
//!
//! The schema stays owned by the role that created it: a tenant's role owning it could drop
//! or rename it under the registry.

use std::fmt::Write as _;

use crate::error::{Error, Result};
use crate::schema::SchemaName;

/// The group role every tenant role is a member of, by default.
pub const DEFAULT_TENANT_GROUP: &str = "tenant_schemas_tenants";

/// The privileges [`TenantRoles::share`] can grant on a table in `public` (`ALL` stands for
/// all of them). Not `TRIGGER`: a trigger one tenant attached to a shared table would run
/// in every other tenant's writes and the public site's (as the login role), or fail them.
const SHAREABLE: [&str; 7] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "ALL",
];

/// Role mode's settings ([`TenancyBuilder::tenant_roles`](crate::TenancyBuilder::tenant_roles)):
/// the group role every tenant role belongs to, and the tables of `public` tenants may use.
///
/// ```
/// use tenant_schemas::TenantRoles;
///
/// let roles = TenantRoles::new()
///     .share("plans", &["SELECT"])
///     .unwrap()
///     .share("audit_log", &["INSERT"])
///     .unwrap();
/// assert_eq!(roles.group_name(), "tenant_schemas_tenants");
/// assert!(TenantRoles::new().share("plans; DROP TABLE x", &["SELECT"]).is_err());
/// assert!(TenantRoles::new().share("plans", &["SELECT, DELETE"]).is_err());
/// assert!(TenantRoles::new().share("plans", &["TRIGGER"]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRoles {
    group: String,
    /// Tenants may create objects in their schema.
    ddl: bool,
    /// (table in `public`, privileges), validated.
    shared: Vec<(String, Vec<&'static str>)>,
    /// Prepared statements stay on a connection when it changes tenant.
    keep_statements: bool,
}

impl Default for TenantRoles {
    fn default() -> Self {
        Self::new()
    }
}

impl TenantRoles {
    /// Role mode with the group role [`DEFAULT_TENANT_GROUP`] and nothing of `public` shared
    /// beyond what PostgreSQL grants to everyone (`USAGE` on the schema, functions).
    #[must_use]
    pub fn new() -> Self {
        Self {
            group: DEFAULT_TENANT_GROUP.to_owned(),
            ddl: false,
            shared: Vec::new(),
            keep_statements: false,
        }
    }

    /// Whether a connection keeps its prepared statements when it changes tenant (off by
    /// default).
    ///
    /// Off, no named statement prepared on a connection while another tenant's checkout used
    /// it runs for the next one: the first switch on such a connection drops every
    /// statement on the session (`DEALLOCATE ALL`), and the statements are prepared again.
    /// A prepared statement belongs to the session, not to a role, so a function of the
    /// application's that runs `DEALLOCATE` and `PREPARE` (in its body, or in SQL it builds)
    /// could otherwise put its own text under the name of another tenant's statement, which
    /// that tenant's next call would run under its role and on its path. With many tenants
    /// this costs role mode about a third of its throughput (BENCHMARKS.md §19 and §20):
    /// nearly every checkout prepares its statement again.
    ///
    /// On, statements are kept per schema as without roles. Turn it on only when no function
    /// of the application's runs `PREPARE`, `DEALLOCATE` or SQL it builds (`EXECUTE` in
    /// PL/pgSQL): role mode does not cover such a function anyway, since it can also run
    /// `RESET ROLE` or `SET ROLE` to another tenant's role (see the README's *Role mode*).
    /// Covers every door: the core's routers (session mode, and the named statements a
    /// pooler keeps in transaction mode), sqlx (its statements, and its switch statement
    /// prepared once per connection) and SeaORM.
    #[must_use]
    pub fn keep_statements_across_tenants(mut self, keep: bool) -> Self {
        self.keep_statements = keep;
        self
    }

    /// Whether connections keep their prepared statements when they change tenant
    /// ([`keep_statements_across_tenants`](Self::keep_statements_across_tenants)).
    #[must_use]
    pub fn keeps_statements_across_tenants(&self) -> bool {
        self.keep_statements
    }

    /// Whether a tenant's own statements may create objects in its schema (`CREATE` on the
    /// schema; off by default: only migrations shape a tenant's schema). Off, a tenant
    /// cannot plant a function, operator or trigger in its schema that the library's own
    /// work there (migrations, export, restore, run as the login role on the tenant's search
    /// path) would call with the login role's privileges. Turn it on only for applications
    /// that create tables at request time, and then qualify every name migrations use with
    /// its schema. Functions and procedures stay refused whatever this says
    /// ([`Error::LeavesTenantRole`]: a body can build SQL that leaves the role).
    #[must_use]
    pub fn tenant_ddl(mut self, allowed: bool) -> Self {
        self.ddl = allowed;
        self
    }

    /// Whether tenants may create objects in their schema ([`tenant_ddl`](Self::tenant_ddl)).
    #[must_use]
    pub fn allows_tenant_ddl(&self) -> bool {
        self.ddl
    }

    /// Another group role name (an identifier as [`SchemaName`] accepts it), e.g. one per
    /// application sharing a cluster.
    pub fn group(mut self, name: &str) -> Result<Self> {
        self.group = SchemaName::new(name)?.as_str().to_owned();
        Ok(self)
    }

    /// The group role's name.
    #[must_use]
    pub fn group_name(&self) -> &str {
        &self.group
    }

    /// Lets every tenant use `public.<table>` with `privileges` (`SELECT`, `INSERT`,
    /// `UPDATE`, `DELETE`, `TRUNCATE`, `REFERENCES` or `ALL` of these, any case; not
    /// `TRIGGER`, whose triggers would run in the other tenants' writes), granted to
    /// the group role when the tenancy is built and after the shared migrations run (a table
    /// not there yet is granted once it is). [`Error::InvalidSchemaName`] for a table name
    /// that is not a plain identifier, [`Error::InvalidRoleSetting`] for an unknown
    /// privilege or none.
    pub fn share(mut self, table: &str, privileges: &[&str]) -> Result<Self> {
        let table = SchemaName::new(table)?.as_str().to_owned();
        let mut granted = Vec::new();
        for privilege in privileges {
            let known = SHAREABLE
                .iter()
                .find(|p| p.eq_ignore_ascii_case(privilege.trim()))
                .ok_or_else(|| Error::InvalidRoleSetting {
                    reason: format!(
                        "unknown privilege `{privilege}` for public.{table} (one of: {})",
                        SHAREABLE.join(", ")
                    ),
                })?;
            if *known == "ALL" {
                granted.extend(SHAREABLE.iter().filter(|p| **p != "ALL"));
            } else {
                granted.push(*known);
            }
        }
        if granted.is_empty() {
            return Err(Error::InvalidRoleSetting {
                reason: format!("no privilege given for public.{table}"),
            });
        }
        self.shared.push((table, granted));
        Ok(self)
    }

    /// The group role, created when missing (the current role a member of it: a switch whose
    /// answer a statement does not wait for is preceded by `SET ROLE` of the group, see the
    /// router), and the grants of the shared tables that exist.
    pub(crate) fn group_sql(&self) -> String {
        let group = quote(&self.group);
        let mut sql = format!(
            "DO $ts_roles$ BEGIN \
               IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {lit}) THEN \
                 CREATE ROLE {group} NOLOGIN; \
               END IF; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; \
             END $ts_roles$; \
             GRANT {group} TO CURRENT_USER",
            lit = literal(&self.group),
        );
        for (table, privileges) in &self.shared {
            let _ = write!(
                sql,
                "; DO $ts_share$ BEGIN \
                   IF pg_catalog.to_regclass({lit}) IS NOT NULL THEN \
                     GRANT {privileges} ON public.{table} TO {group}; \
                     REVOKE TRIGGER ON public.{table} FROM {group}; \
                   END IF; \
                 END $ts_share$",
                lit = literal(&format!("public.{}", quote(table))),
                privileges = privileges.join(", "),
                table = quote(table),
            );
        }
        sql
    }
}

/// A new tenant role's name: `ts_` and 16 hex digits, drawn at random (roles are shared by
/// every database of the cluster; the registry records which tenant has which).
pub(crate) fn new_role_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("ts_{:016x}", hasher.finish())
}

/// `name` as a quoted identifier.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Makes `role` (created when missing, a member of the group role, the current role a member
/// of it) the tenant role of `schema`: `USAGE` on the schema (and `CREATE` when
/// [`TenantRoles::tenant_ddl`] allows it), every privilege on its tables (but `TRIGGER`, see
/// [`grants_sql`]), sequences and routines, and the same by default on what the current role
/// creates there later.
/// Idempotent.
pub(crate) fn attach_sql(schema: &SchemaName, role: &str, roles: &TenantRoles) -> String {
    let (r, s, g) = (quote(role), schema.quoted(), quote(&roles.group));
    let create = if roles.ddl {
        format!("GRANT CREATE ON SCHEMA {s} TO {r}")
    } else {
        format!("REVOKE CREATE ON SCHEMA {s} FROM {r}")
    };
    format!(
        "DO $ts_role$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {lit}) THEN \
             CREATE ROLE {r} NOLOGIN; \
           END IF; \
         END $ts_role$; \
         GRANT {g} TO {r}; \
         GRANT {r} TO CURRENT_USER; \
         REVOKE ALL ON SCHEMA {s} FROM PUBLIC; \
         GRANT USAGE ON SCHEMA {s} TO {r}; \
         {create}; \
         {grants}",
        lit = literal(role),
        grants = grants_sql(schema, role),
    )
}

/// Every privilege on what `schema` holds for `role`, now and (default privileges of the
/// current role) later, but writing the migration history (a tenant could otherwise make its
/// schema's migrations run again, or fail) and `TRIGGER` on tables: a trigger the tenant
/// attached (with a function that exists: the application's, `pg_catalog`'s) would run in
/// the library's own writes there (the history's insert, a migration's data change) with
/// the login role's privileges, or make them fail. Taken back where an earlier version
/// granted it.
pub(crate) fn grants_sql(schema: &SchemaName, role: &str) -> String {
    let (r, s) = (quote(role), schema.quoted());
    let history = format!("{s}.{}", crate::migrate::HISTORY_TABLE);
    let table_privileges = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES";
    format!(
        "GRANT {table_privileges} ON ALL TABLES IN SCHEMA {s} TO {r}; \
         REVOKE TRIGGER ON ALL TABLES IN SCHEMA {s} FROM {r}; \
         GRANT ALL ON ALL SEQUENCES IN SCHEMA {s} TO {r}; \
         GRANT ALL ON ALL ROUTINES IN SCHEMA {s} TO {r}; \
         ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT {table_privileges} ON TABLES TO {r}; \
         ALTER DEFAULT PRIVILEGES IN SCHEMA {s} REVOKE TRIGGER ON TABLES FROM {r}; \
         ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT ALL ON SEQUENCES TO {r}; \
         ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT ALL ON ROUTINES TO {r}; \
         ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT ALL ON TYPES TO {r}; \
         DO $ts_history$ BEGIN \
           IF pg_catalog.to_regclass({lit}) IS NOT NULL THEN \
             REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {history} FROM {r}; \
           END IF; \
         END $ts_history$",
        lit = literal(&history),
    )
}
