//! Erasing a tenant: its schema, its registry rows and domains, with a receipt.

use std::time::{Instant, SystemTime};

use super::Tenancy;
use crate::error::{Error, Result};
use crate::keys::TenantKeys;
use crate::receipt::ErasureReceipt;
use crate::registry::DropSchema;
use crate::schema::SchemaName;
use crate::tenant::TenantStatus;

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
    pub async fn erase_tenant(
        &self,
        schema: &SchemaName,
        export_checksum: Option<String>,
    ) -> Result<ErasureReceipt> {
        if schema.is_public() {
            return Err(Error::Refused {
                what: "erasing the public schema",
                instead: "erase tenants one by one; the shared schema stays",
            });
        }
        let started = Instant::now();
        let tenant = self.registry().get(schema).await?;
        // New checkouts are refused from here; the deletion waits for (or cuts off) those
        // in flight, then counts under locks that it holds until the schema is dropped.
        self.set_status(schema, TenantStatus::Maintenance).await?;
        let tables = match self.delete_counting(schema, DropSchema::Yes, true).await {
            Ok((_, tables)) => tables.unwrap_or_default(),
            Err(e) => {
                // Nothing was erased (the count and the drop are one transaction). The tenant
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
