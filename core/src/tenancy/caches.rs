//! What one process caches about the registry, and forgetting it when the registry changes
//! (through this process's [`Tenancy`](super::Tenancy), or announced by another's).

use crate::host::Host;
use crate::resolve::{CachedResolver, CoherentCache, TenantResolver};
use crate::router::session;
use crate::schema::SchemaName;
use crate::tenant::{Tenant, TenantRecord};

/// The caches in front of the registry.
#[derive(Clone)]
pub(super) struct Caches {
    /// Tenants by host.
    pub(super) hosts: CachedResolver<Box<dyn TenantResolver>>,
    /// Tenants by schema name, with their states: read at every checkout (see
    /// [`checkout`](crate::checkout)) and by the path and header strategies.
    pub(super) by_schema: CoherentCache<SchemaName, Option<Tenant>>,
}

impl Caches {
    /// Forgets the tenant in `schema` and `hosts`; every connection verifies the schema
    /// again before its next statement.
    pub(super) async fn forget(&self, schema: &SchemaName, hosts: &[Host]) {
        session::schema_changed(schema);
        self.by_schema.invalidate(schema).await;
        self.hosts.invalidate_tenant(schema).await;
        for host in hosts {
            self.hosts.invalidate(host).await;
        }
    }

    /// Forgets the tenant of `record` and its domains.
    pub(super) async fn forget_record(&self, record: &TenantRecord) {
        let hosts: Vec<Host> = record
            .domains
            .iter()
            .filter_map(|domain| Host::parse(domain).ok())
            .collect();
        self.forget(&record.schema, &hosts).await;
    }

    /// Forgets everything, e.g. after announcements may have gone unheard.
    pub(super) fn forget_everything(&self) {
        session::everything_changed();
        self.hosts.invalidate_all();
        self.by_schema.invalidate_all();
    }
}
