//! Role mode's life cycle in the registry: the group role and the shared tables' grants,
//! tenants given their roles ([`Registry::sync_roles`]), roles dropped with their tenant.
//! The settings and the SQL are in `roles.rs`.

use deadpool_postgres::Object;
use tokio_postgres::types::Type;

use super::Registry;
use crate::error::{Error, Result};
use crate::roles::{attach_sql, new_role_name, quote, TenantRoles};
use crate::schema::SchemaName;

/// Drops `role` after its schema was dropped on the database `conn` is connected to: what it
/// was granted there goes (`DROP OWNED`), then the role itself, unless another database of
/// the cluster still holds something of it (a schema moved there keeps it). A role that still
/// owns an object there (outside the dropped schema) is kept, with the object.
pub(crate) async fn drop_role(conn: &Object, schema: &SchemaName, role: &str) {
    let r = quote(role);
    let exists: bool = match conn
        .query_typed_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)",
            &[(&role, Type::TEXT)],
        )
        .await
    {
        Ok(row) => row.get(0),
        Err(e) => {
            tracing::warn!(schema = %schema, role, error = %e, "tenant role not dropped");
            return;
        }
    };
    if !exists {
        return;
    }
    // `DROP OWNED` drops every object of this database the role owns, wherever it is: one
    // it still owns once its schema is gone (a `public` table an administrator gave it) is
    // outside the schema and must not go silently. The role is kept with it.
    let owned: Vec<String> = match conn
        .query_typed(
            "SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
             FROM pg_catalog.pg_shdepend d
             JOIN pg_catalog.pg_roles r ON r.oid = d.refobjid
             WHERE d.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
               AND r.rolname = $1 AND d.deptype = 'o'
               AND d.dbid = (SELECT oid FROM pg_catalog.pg_database
                             WHERE datname = pg_catalog.current_database())
             ORDER BY 1",
            &[(&role, Type::TEXT)],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|row| row.get(0)).collect(),
        Err(e) => {
            tracing::warn!(schema = %schema, role, error = %e, "tenant role not dropped");
            return;
        }
    };
    if !owned.is_empty() {
        tracing::warn!(
            schema = %schema,
            role,
            owned = %owned.join(", "),
            "tenant role kept: it owns objects outside the dropped schema"
        );
        return;
    }
    if let Err(e) = conn.batch_execute(&format!("DROP OWNED BY {r}")).await {
        tracing::warn!(schema = %schema, role, error = %e, "tenant role's privileges not dropped");
        return;
    }
    match conn.batch_execute(&format!("DROP ROLE {r}")).await {
        Ok(()) => tracing::info!(schema = %schema, role, "tenant role dropped"),
        Err(e) => {
            tracing::info!(schema = %schema, role, error = %e, "tenant role kept: used elsewhere in the cluster");
        }
    }
}

/// Every tenant role inherits what the group role holds: an existing role that can log in,
/// is a superuser or the current role, is a member of another role, or owns a schema, a
/// relation or a routine of this database would hand every tenant its privileges (the
/// login role's: every schema and the registry). Refused with
/// [`Error::InvalidRoleSetting`]; a role of that name not there yet is made bare.
async fn refuse_privileged_group(conn: &Object, group: &str) -> Result<()> {
    let public = SchemaName::public();
    let privileged: bool = conn
        .query_typed_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = $1 AND ( \
               r.rolcanlogin OR r.rolsuper OR r.rolname = CURRENT_USER::text \
               OR EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m WHERE m.member = r.oid) \
               OR EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.nspowner = r.oid) \
               OR EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.relowner = r.oid) \
               OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc p WHERE p.proowner = r.oid)))",
            &[(&group, Type::TEXT)],
        )
        .await
        .map_err(|e| Error::db("checking the tenants' group role", &public, e))?
        .get(0);
    if privileged {
        return Err(Error::InvalidRoleSetting {
            reason: format!(
                "the group role `{group}` can log in, is a superuser or the login role, is a \
                 member of another role, or owns objects: every tenant would inherit its \
                 privileges (choose a role of its own, TenantRoles::group)"
            ),
        });
    }
    Ok(())
}

impl Registry {
    /// Role mode's settings, if on.
    pub(crate) fn roles(&self) -> Option<&TenantRoles> {
        self.roles.as_deref()
    }

    /// Role mode: the group role and the shared tables' grants on every database.
    pub(crate) async fn install_roles(&self) -> Result<()> {
        let Some(roles) = self.roles() else {
            return Ok(());
        };
        let public = SchemaName::public();
        for (_, pool) in self.databases.iter() {
            let conn = crate::databases::connect(pool, &public).await?;
            refuse_privileged_group(&conn, roles.group_name()).await?;
            conn.batch_execute(&roles.group_sql())
                .await
                .map_err(|e| Error::db("setting up the tenants' group role", &public, e))?;
        }
        Ok(())
    }

    /// Role mode, for every tenant but the public one: a role for those without one
    /// (recorded in the registry), and each role's grants on its schema made whole again
    /// (after migrations run by another role, or objects created outside the library).
    /// Returns how many tenants were given a role. Idempotent.
    pub(crate) async fn sync_roles(&self) -> Result<Vec<(SchemaName, String, bool)>> {
        let Some(roles) = self.roles() else {
            return Err(Error::InvalidRoleSetting {
                reason: "role mode is off: build the tenancy with `tenant_roles`".into(),
            });
        };
        self.install_roles().await?;
        let mut done = Vec::new();
        for record in self.list().await? {
            if record.schema.is_public() {
                continue;
            }
            let (role, new) = match &record.role {
                Some(role) => (role.clone(), false),
                None => (new_role_name(), true),
            };
            let schema = &record.schema;
            let mut conn = self.databases.connect(&record.shard, schema).await?;
            let db = |e| Error::db("giving the tenant its role", schema, e);
            let tx = conn.transaction().await.map_err(db)?;
            tx.batch_execute(&attach_sql(schema, &role, roles))
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            // Back to the pool before the registry is written: on a pool of one connection
            // the write would wait for it for ever.
            drop(conn);
            if new {
                let recorded = self
                    .change(
                        schema,
                        "recording the tenant's role",
                        &[],
                        "UPDATE public.tenant_schemas_tenants SET role = $2 \
                         WHERE schema_name = $1 AND role IS NULL",
                        &[(&schema.as_str(), Type::TEXT), (&role.as_str(), Type::TEXT)],
                    )
                    .await?;
                if recorded == 0 {
                    // Another process gave it one meanwhile: this one is not used.
                    let conn = self.databases.connect(&record.shard, schema).await?;
                    drop_role(&conn, schema, &role).await;
                    continue;
                }
            }
            done.push((schema.clone(), role, new));
        }
        Ok(done)
    }
}
