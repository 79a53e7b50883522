//! Tenants in background jobs: a [`TenantRef`] goes into the job's payload where the
//! request is handled, and [`Tenancy::run_ref`] restores the tenant's scope on the worker,
//! after checking with the registry that the tenant is still the one the job was queued
//! for.
//!
//! A job may run long after it was queued: its tenant may have been deleted (and another
//! created in the same schema since), renamed, moved to another database or suspended.
//! Each of these is a typed error before the job's code runs, never a job running in the
//! wrong schema:
//!
//! | since the job was queued | [`Tenancy::run_ref`] |
//! |---|---|
//! | nothing changed | runs the job in the tenant's scope |
//! | the tenant was deleted (even if re-created in the same schema: a new id) | [`Error::TenantGone`] |
//! | its schema or database changed | [`Error::TenantMoved`] |
//! | it is in maintenance, suspended or archived | [`Error::TenantNotServed`] |
//! | it is read-only | runs the job; its writes fail with [`Error::TenantReadOnly`] |
//!
//! The check is made when the job starts; a tenant deleted while the job runs is handled
//! as for a request (its statements fail with [`Error::SchemaMissing`] once its schema is
//! gone).
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! use tenant_schemas::{SchemaName, Tenant, TenantRef};
//!
//! // In the request handler: the tenant in scope, as the registry resolved it.
//! let acme = Tenant::new(SchemaName::new("acme").unwrap()).with_id(7);
//! let payload = serde_json::to_string(&acme.to_ref().unwrap()).unwrap();
//! assert_eq!(payload, r#"{"id":7,"schema":"acme","shard":"default"}"#);
//!
//! // On the worker: read back (the schema name is validated again) …
//! let tenant: TenantRef = serde_json::from_str(&payload).unwrap();
//! assert_eq!(tenant.id(), 7);
//! // … and `tenancy.run_ref(&tenant, job).await` runs the job in acme's scope.
//! # }
//! ```

use std::future::Future;

use tracing::Instrument;

use crate::error::{Error, Result};
use crate::tenancy::Tenancy;
use crate::tenant::{Tenant, TenantRecord, TenantRef};

impl TenantRef {
    /// Checks `record` (the registry's tenant with this id now) against the reference: the
    /// tenant the job may run for, or why not.
    fn check(&self, record: Option<TenantRecord>) -> Result<Tenant> {
        let Some(record) = record else {
            return Err(Error::TenantGone {
                id: self.id,
                schema: self.schema.clone(),
            });
        };
        if record.schema != self.schema || record.shard != self.shard {
            return Err(Error::TenantMoved {
                id: self.id,
                schema: self.schema.clone(),
                shard: self.shard.clone(),
                now_schema: record.schema,
                now_shard: record.shard,
            });
        }
        if !record.status.is_served() {
            return Err(Error::TenantNotServed {
                schema: record.schema,
                status: record.status,
            });
        }
        Ok(record.tenant())
    }
}

impl TryFrom<&Tenant> for TenantRef {
    type Error = Error;

    /// See [`Tenant::to_ref`].
    fn try_from(tenant: &Tenant) -> Result<Self> {
        tenant.to_ref()
    }
}

impl Tenant {
    /// The reference a background job carries to run for this tenant later (see
    /// [`TenantRef`]); [`Error::TenantNotRegistered`] for a tenant that did not come from the
    /// registry (made with [`Tenant::new`], or by a resolver without ids).
    ///
    /// ```
    /// use tenant_schemas::{Error, SchemaName, Tenant};
    ///
    /// let acme = Tenant::new(SchemaName::new("acme").unwrap());
    /// assert!(matches!(acme.to_ref(), Err(Error::TenantNotRegistered { .. })));
    /// assert_eq!(acme.with_id(7).to_ref().unwrap().id(), 7);
    /// ```
    pub fn to_ref(&self) -> Result<TenantRef> {
        match self.id() {
            Some(id) => Ok(TenantRef::new(id, self.schema().clone(), self.shard())),
            None => Err(Error::TenantNotRegistered {
                schema: self.schema().clone(),
            }),
        }
    }
}

impl Tenancy {
    /// Runs `job` in the scope of the tenant `tenant` refers to, as the registry has it now
    /// (its name and state included), inside a `tenant_job{tenant, tenant_id}` tracing
    /// span; for a worker restoring the tenant a job was queued for.
    ///
    /// The registry is asked every time (no cache): a tenant deleted since is
    /// [`Error::TenantGone`] (a tenant re-created in the same schema has another id), one
    /// whose schema or database changed is [`Error::TenantMoved`], one not served in its
    /// state is [`Error::TenantNotServed`]; `job` is then not polled at all.
    ///
    /// ```no_run
    /// # async fn demo(tenancy: tenant_schemas::Tenancy, payload: &str) -> tenant_schemas::Result<()> {
    /// use tenant_schemas::TenantRef;
    /// # let tenant = tenant_schemas::Tenant::public().with_id(1).to_ref()?;
    /// // let tenant: TenantRef = serde_json::from_str(payload)?;
    /// let sent = tenancy
    ///     .run_ref(&tenant, async {
    ///         let db = tenancy.connection().await?; // the tenant's schema
    ///         db.execute("UPDATE invoices SET sent = true WHERE NOT sent", &[]).await
    ///     })
    ///     .await??;
    /// # Ok(()) }
    /// ```
    pub async fn run_ref<F: Future>(&self, tenant: &TenantRef, job: F) -> Result<F::Output> {
        let record = self.registry().get_by_id(tenant.id).await?;
        let restored = tenant.check(record)?;
        let span = tracing::info_span!(
            "tenant_job",
            tenant = %restored.schema(),
            tenant_id = tenant.id
        );
        Ok(crate::scope::run(restored, job).instrument(span).await)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::schema::SchemaName;
    use crate::shard::ShardName;
    use crate::tenant::{TenantId, TenantStatus};

    fn record(id: TenantId, schema: &str, shard: &str, status: TenantStatus) -> TenantRecord {
        TenantRecord {
            id,
            schema: SchemaName::new(schema).unwrap(),
            name: "Acme".into(),
            created_at: SystemTime::UNIX_EPOCH,
            status,
            version: 1,
            domains: Vec::new(),
            shard: ShardName::new(shard),
            max_connections: None,
            storage_quota: None,
            statement_timeout: None,
            role: None,
        }
    }

    #[test]
    fn the_registry_decides_whether_a_reference_still_holds() {
        let acme = record(7, "acme", "default", TenantStatus::Active);
        let r = TenantRef::from(&acme);
        assert_eq!(r.to_string(), "acme (id 7)");
        let tenant = r.check(Some(acme)).unwrap();
        assert_eq!((tenant.schema().as_str(), tenant.id()), ("acme", Some(7)));
        assert_eq!(tenant.name(), "Acme");

        let err = r.check(None).unwrap_err();
        assert!(matches!(err, Error::TenantGone { id: 7, .. }), "{err}");
        assert_eq!(err.status(), http::StatusCode::NOT_FOUND);
        assert!(err.to_string().contains("`acme` (id 7)"), "{err}");

        let renamed = record(7, "acme_inc", "default", TenantStatus::Active);
        let err = r.check(Some(renamed)).unwrap_err();
        assert!(matches!(err, Error::TenantMoved { .. }), "{err}");
        assert!(err.to_string().contains("now `acme_inc`"), "{err}");
        let moved = record(7, "acme", "eu", TenantStatus::Active);
        let err = r.check(Some(moved)).unwrap_err();
        assert!(err.to_string().contains("on `eu`"), "{err}");

        for status in [
            TenantStatus::Maintenance,
            TenantStatus::Suspended,
            TenantStatus::Archived,
        ] {
            let err = r
                .check(Some(record(7, "acme", "default", status)))
                .unwrap_err();
            assert!(matches!(err, Error::TenantNotServed { .. }), "{err}");
        }
        let read_only = r
            .check(Some(record(7, "acme", "default", TenantStatus::ReadOnly)))
            .unwrap();
        assert_eq!(read_only.status(), TenantStatus::ReadOnly);
    }

    #[test]
    fn only_registered_tenants_have_references() {
        let t = Tenant::new(SchemaName::new("acme").unwrap());
        let err = TenantRef::try_from(&t).unwrap_err();
        assert!(err.to_string().contains("no registry id"), "{err}");
        let r = t.with_id(3).with_shard("eu").to_ref().unwrap();
        assert_eq!(r.shard(), &ShardName::new("eu"));
        assert_eq!(r.to_string(), "acme (id 3, database eu)");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn references_round_trip_through_json_and_are_validated() {
        let r = TenantRef::new(7, SchemaName::new("acme").unwrap(), "eu");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"id":7,"schema":"acme","shard":"eu"}"#);
        assert_eq!(serde_json::from_str::<TenantRef>(&json).unwrap(), r);
        // The shard defaults to the registry's database.
        let r: TenantRef = serde_json::from_str(r#"{"id":1,"schema":"acme"}"#).unwrap();
        assert!(r.shard().is_default());
        let err = serde_json::from_str::<TenantRef>(r#"{"id":1,"schema":"pg_catalog"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid schema name"), "{err}");
        assert!(serde_json::from_str::<TenantRef>(r#"{"schema":"acme"}"#).is_err());
    }
}
