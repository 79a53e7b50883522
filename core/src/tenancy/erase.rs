//! Erasing a tenant: its schema, its registry rows and domains, with a receipt.

use std::time::{Instant, SystemTime};

use super::Tenancy;
use crate::error::{Error, Result};
use crate::keys::TenantKeys;
use crate::receipt::ErasureReceipt;
use crate::registry::dependents::{refuse_outside_dependents, Dropping};
use crate::registry::DropSchema;
use crate::schema::SchemaName;
use crate::tenant::TenantStatus;

/// Settings of [`Tenancy::erase_tenant_with`].
///
/// ```
/// use tenant_schemas::EraseOptions;
///
/// let options = EraseOptions::default()
///     .export_checksum("sha256:0123")
///     .with_dependents(true);
/// assert!(options.with_dependents);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EraseOptions {
    /// The checksum of the export taken before, kept on the receipt; none by default.
    pub export_checksum: Option<String>,
    /// Whether objects outside the tenant's schema that depend on objects in it (a view of
    /// `public` or of another tenant's schema on its table, a foreign key referencing it, a
    /// table inheriting from it …) are erased with it, as `DROP SCHEMA … CASCADE` drops
    /// them; the receipt counts the rows of such inheritance children under their parent.
    /// Off by default: the erasure is refused ([`Error::OutsideDependents`]).
    pub with_dependents: bool,
}

impl EraseOptions {
    /// These options with the checksum of the export taken before.
    #[must_use]
    pub fn export_checksum(mut self, checksum: impl Into<String>) -> Self {
        self.export_checksum = Some(checksum.into());
        self
    }

    /// These options erasing (`true`) or refusing (`false`, the default) the objects outside
    /// the schema that depend on it.
    #[must_use]
    pub fn with_dependents(mut self, with: bool) -> Self {
        self.with_dependents = with;
        self
    }
}

impl Tenancy {
    /// Erases a tenant — a customer leaving, a data-deletion request — and says what was
    /// removed: its schema and every row in it, its registry row and domains, as
    /// [`delete_tenant`](Self::delete_tenant) with [`DropSchema::Yes`] does, after putting it
    /// in maintenance so that the rows counted for the receipt are the rows erased. The
    /// [`ErasureReceipt`] lists each table and its rows, the tenant as it was, and the
    /// prefixes of its tenant-aware keys, which live in stores the library cannot reach
    /// (purge them there; the hooks hear [`TenantEvent::Deleted`](crate::TenantEvent::Deleted)).
    /// Give the checksum of the export taken before (`tenant-schemas export`), if any, to
    /// keep it on the receipt.
    ///
    /// The rows are counted once the connections in flight for the tenant have ended (or
    /// were cut off, as for a deletion), under locks held until its schema is dropped: a
    /// transaction that was writing when the erasure began is counted. The shared `public`
    /// schema is refused ([`Error::Refused`]). Should the count fail, nothing is erased
    /// and the tenant is put back in its state (also under the new name of a rename that
    /// won a race with the erasure).
    ///
    /// Objects outside the tenant's schema that depend on objects in it (a view in `public`
    /// or in another tenant's schema selecting from its table, a foreign key of another
    /// schema's table referencing it, a table inheriting from it …) are not erased: the
    /// erasure is refused ([`Error::OutsideDependents`], naming each) before the tenant is
    /// put in maintenance, and again, with the tenant put back, should one appear before
    /// the drop. [`erase_tenant_with`](Self::erase_tenant_with) and
    /// [`EraseOptions::with_dependents`] erase them too.
    pub async fn erase_tenant(
        &self,
        schema: &SchemaName,
        export_checksum: Option<String>,
    ) -> Result<ErasureReceipt> {
        self.erase_tenant_with(
            schema,
            EraseOptions {
                export_checksum,
                with_dependents: false,
            },
        )
        .await
    }

    /// [`erase_tenant`](Self::erase_tenant) with [`EraseOptions`]: the export's checksum,
    /// and whether objects outside the schema that depend on it are erased too.
    pub async fn erase_tenant_with(
        &self,
        schema: &SchemaName,
        options: EraseOptions,
    ) -> Result<ErasureReceipt> {
        let EraseOptions {
            export_checksum,
            with_dependents,
        } = options;
        let drop = if with_dependents {
            DropSchema::WithDependents
        } else {
            DropSchema::Yes
        };
        if schema.is_public() {
            return Err(Error::Refused {
                what: "erasing the public schema",
                instead: "erase tenants one by one; the shared schema stays",
            });
        }
        let started = Instant::now();
        let tenant = self.registry().get(schema).await?;
        // Refused before the tenant's state changes.
        if !with_dependents {
            let conn = self
                .registry()
                .databases()
                .connect(&tenant.shard, schema)
                .await?;
            refuse_outside_dependents(&conn, schema, Dropping::Erase).await?;
        }
        // New checkouts are refused from here; the deletion waits for (or cuts off) those
        // in flight, then counts under locks that it holds until the schema is dropped.
        // Setting the state can fail after it was made too: a rename that ran between the
        // change and its reading back moved the tenant (seen in CI, the tenant left in
        // maintenance under its new name).
        let erased = async {
            self.set_status(schema, TenantStatus::Maintenance).await?;
            self.delete_counting(schema, drop, true, Dropping::Erase)
                .await
        };
        let tables = match erased.await {
            Ok((_, tables)) => tables.unwrap_or_default(),
            Err(e) => {
                // Nothing was erased (the count, the look for outside dependents and the
                // drop are one transaction). The tenant
                // is found by its id: a rename that won a race with the erasure moved it. It
                // is put back unless someone changed its state since.
                if let Some(now) = self.registry().get_by_id(tenant.id).await? {
                    if now.status == TenantStatus::Maintenance {
                        self.set_status(&now.schema, tenant.status).await?;
                    }
                }
                return Err(e);
            }
        };
        let keys = TenantKeys::for_schema(schema.clone());
        tracing::info!(schema = %schema, tenant_id = tenant.id, "tenant erased");
        Ok(ErasureReceipt {
            key_prefix: keys.key_prefix(),
            path_prefix: keys.path_prefix(),
            tenant,
            tables,
            erased_at: SystemTime::now(),
            took: started.elapsed(),
            export_checksum,
        })
    }
}
