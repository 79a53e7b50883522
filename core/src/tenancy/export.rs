//! A tenant's data as one file: export, and restore under a new name.

use tokio::io::{AsyncBufRead, AsyncWrite};

use super::Tenancy;
use crate::error::{Error, Result};
use crate::receipt::TableRows;
use crate::registry::{read_export_header, DropSchema, NewTenant};
use crate::schema::SchemaName;
use crate::tenant::{TenantRecord, TenantStatus};

impl Tenancy {
    /// Writes `schema`'s data to `out` as one file (format 1, `docs/export-format.md`): its
    /// registry row (name, domains, state, migration version), then every table's rows in
    /// PostgreSQL's COPY text format and every sequence's position, all read in one
    /// snapshot, so the file is consistent even while the tenant is served. The schema's
    /// definition is not in the file: [`restore_tenant`](Self::restore_tenant) builds it with
    /// the tenant migrations. Returns each table and its rows.
    pub async fn export_tenant<W>(&self, schema: &SchemaName, out: &mut W) -> Result<Vec<TableRows>>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let tenant = self.registry().get(schema).await?;
        self.inner.registry.export(&tenant, out).await
    }

    /// Restores an export (see [`export_tenant`](Self::export_tenant)) as the new tenant
    /// `new`, beside the one exported (a schema of its own; a live tenant is never
    /// overwritten: an existing schema is [`Error::TenantExists`]; the shared `public` schema
    /// is [`Error::Refused`]). The tenant is created with
    /// the tenant migrations in maintenance, its rows and sequence positions are loaded in
    /// one transaction and checked against the file's counts, then it is put in `new`'s
    /// state (active by default). If anything fails, the new tenant is deleted again and
    /// nothing is left.
    ///
    /// The export must be at the migration version this process's migrations end at
    /// ([`Error::TenantFile`] otherwise: restore with the migration set of that version, then
    /// migrate).
    pub async fn restore_tenant<R>(&self, input: &mut R, new: NewTenant) -> Result<TenantRecord>
    where
        R: AsyncBufRead + Unpin + Send,
    {
        let schema = new.schema().clone();
        if schema.is_public() {
            // Its tables are the registry's and the applications' shared ones.
            return Err(Error::Refused {
                what: "restoring a tenant into the public schema",
                instead: "restore it as a new tenant schema (`restore FILE --as NEW_SCHEMA`)",
            });
        }
        let header = read_export_header(input, &schema).await?;
        let (version, from) = self.inner.registry.export_version(&header, &schema).await?;
        let latest = self.inner.registry.migrations().latest();
        if version != latest {
            return Err(Error::TenantFile {
                action: "restoring",
                schema,
                reason: format!(
                    "the export of `{from}` is at migration version {version}, these tenant \
                     migrations end at {latest}: restore it with the migrations of version \
                     {version}, then migrate"
                ),
            });
        }
        let wanted = new.get_status();
        let created = self
            .create_tenant(new.status(TenantStatus::Maintenance))
            .await?;
        // From here the new tenant is deleted again unless it is loaded: on an error, and
        // when this future is dropped half-way (in the background then).
        let mut undo = Undo {
            tenancy: Some(self.clone()),
            schema: schema.clone(),
        };
        let loaded = self.inner.registry.load(&created, input).await;
        undo.tenancy = None;
        if let Err(e) = loaded {
            self.delete_tenant(&schema, DropSchema::Yes).await?;
            return Err(e);
        }
        if wanted != TenantStatus::Maintenance {
            self.set_status(&schema, wanted).await?;
        }
        tracing::info!(schema = %schema, from = %from, "tenant restored");
        self.registry().get(&schema).await
    }
}

/// Deletes a tenant whose restore was given up (its future dropped) before it was loaded:
/// in a task of its own, as `Drop` cannot wait.
struct Undo {
    tenancy: Option<Tenancy>,
    schema: SchemaName,
}

impl Drop for Undo {
    fn drop(&mut self) {
        let Some(tenancy) = self.tenancy.take() else {
            return;
        };
        let schema = self.schema.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    match tenancy.delete_tenant(&schema, DropSchema::Yes).await {
                        Ok(_) => tracing::info!(schema = %schema, "a restore given up: its tenant deleted"),
                        Err(e) => tracing::warn!(schema = %schema, error = %e,
                            "a restore given up: its tenant, in maintenance, could not be deleted"),
                    }
                });
            }
            Err(_) => tracing::warn!(schema = %schema,
                "a restore given up outside a runtime: its tenant is left in maintenance"),
        }
    }
}
