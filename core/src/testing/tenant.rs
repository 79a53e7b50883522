//! A tenant made for one test.

use super::{unique, HarnessResult};
use crate::host::Host;
use crate::registry::{DropSchema, NewTenant};
use crate::router::ConnectionScope;
use crate::schema::SchemaName;
use crate::tenancy::Tenancy;
use crate::tenant::{Tenant, TenantRecord};

/// A tenant with a unique schema and the domain `<schema>.test`, made for one test.
#[derive(Debug)]
pub struct TempTenant {
    tenancy: Tenancy,
    record: TenantRecord,
    host: Host,
}

impl TempTenant {
    /// Creates the tenant (with the tenancy's migrations).
    pub async fn create(tenancy: &Tenancy) -> HarnessResult<Self> {
        let schema = SchemaName::new(&unique("t_")).map_err(crate::Error::from)?;
        let host = Host::parse(&format!("{}.test", schema.as_str().replace('_', "-")))
            .map_err(crate::Error::from)?;
        let record = tenancy
            .create_tenant(NewTenant::new(schema).domain(host.clone()))
            .await?;
        Ok(Self {
            tenancy: tenancy.clone(),
            record,
            host,
        })
    }

    /// The tenant, to enter its scope.
    #[must_use]
    pub fn tenant(&self) -> Tenant {
        self.record.tenant()
    }

    /// Its schema.
    #[must_use]
    pub fn schema(&self) -> &SchemaName {
        &self.record.schema
    }

    /// Its domain, to send requests to.
    #[must_use]
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// A connection bound to its schema.
    pub async fn connection(&self) -> crate::Result<ConnectionScope> {
        self.tenancy
            .router()
            .connection_for_tenant(&self.record.tenant())
            .await
    }

    /// Deletes the tenant and drops its schema ([`DropSchema::Yes`]: refused, nothing
    /// deleted, when objects outside the schema depend on objects in it, e.g. a view a test
    /// made in `public`).
    pub async fn delete(self) -> crate::Result<()> {
        self.tenancy
            .delete_tenant(&self.record.schema, DropSchema::Yes)
            .await
            .map(drop)
    }
}
