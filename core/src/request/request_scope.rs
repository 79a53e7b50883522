//! [`RequestScope`]: a resolved request's tenant, tenancy and span, and running in them.

use std::future::Future;

use tracing::instrument::{Instrument, Instrumented};

use crate::scope::{self, Scoped};
use crate::{ConnectionScope, Result, Tenancy, Tenant};

/// Where a resolved request runs: its tenant's scope and its `tenant_request` tracing span
/// (which names host and tenant), with the [`Tenancy`] for its connections.
///
/// [`RequestResolver::request_scope`](super::RequestResolver::request_scope) makes it and
/// puts a copy in the request's extensions, where extractors find it.
#[derive(Debug, Clone)]
pub struct RequestScope {
    tenant: Tenant,
    tenancy: Tenancy,
    span: tracing::Span,
}

impl RequestScope {
    pub(super) fn new(tenant: Tenant, tenancy: Tenancy, span: tracing::Span) -> Self {
        Self {
            tenant,
            tenancy,
            span,
        }
    }

    /// The tenant the request is served as.
    #[must_use]
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// The tenancy that resolved it.
    #[must_use]
    pub fn tenancy(&self) -> &Tenancy {
        &self.tenancy
    }

    /// The request's span.
    #[must_use]
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Runs the handler: `call` (which may run handler code before it returns its future)
    /// and the future it returns, both in the tenant's scope and the request's span.
    pub fn run<F: Future>(&self, call: impl FnOnce() -> F) -> Instrumented<Scoped<F>> {
        let future = self.in_scope(call);
        scope::run(self.tenant.clone(), future).instrument(self.span.clone())
    }

    /// Runs `f` synchronously in the tenant's scope and the request's span: for polling a
    /// response body streamed after the handler returned.
    pub fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        let _entered = self.span.enter();
        scope::sync_run(self.tenant.clone(), f)
    }

    /// A pooled connection bound to the request's tenant schema.
    pub async fn connection(&self) -> Result<ConnectionScope> {
        self.tenancy
            .router()
            .connection_for_tenant(&self.tenant)
            .await
    }

    /// A pooled connection bound to `public`.
    pub async fn public_connection(&self) -> Result<ConnectionScope> {
        self.tenancy.router().public().await
    }
}
