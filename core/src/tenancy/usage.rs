//! What tenants' schemas hold, their storage quotas, and enforcing them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Tenancy, TenantEvent};
use crate::error::Result;
use crate::receipt::SchemaUsage;
use crate::schema::SchemaName;
use crate::tenant::TenantStatus;

impl Tenancy {
    /// Every tenant's schema size and quota (the shared `public` schema aside), by schema:
    /// one catalog query per database (`pg_total_relation_size` of every table, index and
    /// TOAST table, summed). Measured at most once per `max_age`: a call within it gets the
    /// last measurement (`Duration::ZERO` measures now).
    pub async fn usage(&self, max_age: Duration) -> Result<Arc<[SchemaUsage]>> {
        let mut last = self.inner.usage.lock().await;
        if let Some((at, usage)) = &*last {
            if at.elapsed() <= max_age {
                return Ok(usage.clone());
            }
        }
        let usage: Arc<[SchemaUsage]> = self.inner.registry.usage().await?.into();
        *last = Some((Instant::now(), usage.clone()));
        Ok(usage)
    }

    /// Sets (or, with `None`, clears) `schema`'s storage quota in bytes, kept in the
    /// registry; see [`enforce_quotas`](Self::enforce_quotas).
    pub async fn set_storage_quota(&self, schema: &SchemaName, bytes: Option<u64>) -> Result<()> {
        self.inner.registry.set_storage_quota(schema, bytes).await?;
        let record = self.inner.registry.get(schema).await?;
        self.forget(&record).await;
        Ok(())
    }

    /// Makes every active tenant whose schema holds more than its storage quota read-only
    /// (measured now): its reads are served, its writes refused (403), until its data
    /// shrinks or its quota grows and it is made active again
    /// ([`set_status`](Self::set_status)). The hooks hear [`TenantEvent::OverQuota`] then
    /// [`TenantEvent::StatusChanged`] for each. Returns the tenants it made read-only with
    /// their usage. Run it from a periodic job; each call is one catalog query per database.
    pub async fn enforce_quotas(&self) -> Result<Vec<SchemaUsage>> {
        let usage = self.usage(Duration::ZERO).await?;
        let mut made = Vec::new();
        for u in usage
            .iter()
            .filter(|u| u.over_quota() && u.status == TenantStatus::Active)
        {
            let (Some(quota), bytes) = (u.storage_quota, u.bytes) else {
                continue;
            };
            tracing::warn!(schema = %u.schema, bytes, quota, "tenant over its storage quota: made read-only");
            self.emit(TenantEvent::OverQuota {
                schema: u.schema.clone(),
                bytes,
                quota,
            })
            .await;
            self.set_status(&u.schema, TenantStatus::ReadOnly).await?;
            made.push(u.clone());
        }
        Ok(made)
    }
}
