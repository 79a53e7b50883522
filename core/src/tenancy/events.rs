//! What happened to a tenant, and the hooks that hear it.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::schema::SchemaName;
use crate::shard::ShardName;
use crate::tenant::{TenantRecord, TenantStatus};

/// What happened to a tenant, for the hooks of [`TenancyBuilder::on_event`](super::TenancyBuilder::on_event).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TenantEvent {
    /// A tenant was created (schema, migrations and registry rows committed).
    Created(TenantRecord),
    /// A tenant's schema was migrated.
    Migrated {
        /// The tenant's schema.
        schema: SchemaName,
        /// The version before.
        from: i32,
        /// The version after.
        to: i32,
    },
    /// A tenant was deleted.
    Deleted(TenantRecord),
    /// An existing schema was registered as a tenant (see
    /// [`Tenancy::import_tenants`](super::Tenancy::import_tenants)): nothing was created.
    Imported(TenantRecord),
    /// Migrations were recorded as applied in a tenant's schema without running (see
    /// [`Tenancy::baseline`](super::Tenancy::baseline)).
    Baselined {
        /// The tenant's schema.
        schema: SchemaName,
        /// The version before.
        from: i32,
        /// The version after.
        to: i32,
    },
    /// A tenant's schema was renamed ([`Tenancy::rename_schema`](super::Tenancy::rename_schema)).
    SchemaRenamed {
        /// The schema's name before.
        from: SchemaName,
        /// Its name now.
        to: SchemaName,
    },
    /// A tenant was moved to another database
    /// ([`Tenancy::move_to_shard`](super::Tenancy::move_to_shard)).
    MovedToShard {
        /// The tenant's schema.
        schema: SchemaName,
        /// The database it was on.
        from: ShardName,
        /// The database it is on now.
        to: ShardName,
    },
    /// A tenant's state changed.
    StatusChanged {
        /// The tenant's schema.
        schema: SchemaName,
        /// The state before.
        from: TenantStatus,
        /// The state after.
        to: TenantStatus,
    },
    /// A tenant's schema holds more than its storage quota, so
    /// [`Tenancy::enforce_quotas`](super::Tenancy::enforce_quotas) made it read-only (a
    /// [`StatusChanged`](Self::StatusChanged) follows).
    OverQuota {
        /// The tenant's schema.
        schema: SchemaName,
        /// What its schema holds, in bytes.
        bytes: u64,
        /// Its quota, in bytes.
        quota: u64,
    },
}

type EventHook = Arc<dyn Fn(TenantEvent) -> BoxFuture<'static, ()> + Send + Sync>;

/// The hooks of one [`Tenancy`](super::Tenancy), run one after the other in the order they
/// were added.
#[derive(Clone, Default)]
pub(super) struct Hooks(Vec<EventHook>);

impl Hooks {
    pub(super) fn add<F, Fut>(&mut self, hook: F)
    where
        F: Fn(TenantEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.0.push(Arc::new(move |event| Box::pin(hook(event))));
    }

    /// Runs every hook with `event`.
    pub(super) async fn emit(&self, event: TenantEvent) {
        for hook in &self.0 {
            hook(event.clone()).await;
        }
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}
