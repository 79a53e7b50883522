//! The current tenant, kept in tokio task-local storage.
//!
//! Adapters enter the scope for each request; anything the request's task runs can then
//! ask which tenant it serves, without passing it down:
//!
//! ```
//! use tenant_schemas::{scope, SchemaName, Tenant};
//!
//! async fn deep_in_the_app() -> String {
//!     scope::current_schema().map_or("none".into(), |s| s.to_string())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let acme = Tenant::new(SchemaName::new("acme").unwrap());
//! assert_eq!(scope::run(acme.clone(), deep_in_the_app()).await, "acme");
//! assert_eq!(deep_in_the_app().await, "none"); // outside: no tenant, no fallback
//!
//! // tokio::spawn does not inherit task-locals; scope::spawn does.
//! let handle = scope::run(acme, async { scope::spawn(deep_in_the_app()) }).await;
//! assert_eq!(handle.await.unwrap(), "acme");
//! # }
//! ```

use std::future::Future;

use futures_util::future::Either;
use tokio::task::futures::TaskLocalFuture;
use tokio::task::JoinHandle;
use tracing::instrument::{Instrument, Instrumented};

use crate::error::{Error, Result};
use crate::schema::SchemaName;
use crate::tenant::{Tenant, TenantClaim};

tokio::task_local! {
    static CURRENT: Tenant;
}

/// A future running inside a tenant scope, as returned by [`run`].
pub type Scoped<F> = TaskLocalFuture<Tenant, F>;

/// The schema of the tenant in scope, or `None` outside any scope.
#[must_use]
pub fn current_schema() -> Option<SchemaName> {
    CURRENT.try_with(|t| t.schema().clone()).ok()
}

/// The tenant in scope, or `None` outside any scope.
pub fn current_tenant() -> Option<Tenant> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The schema of the tenant in scope, or [`Error::NoTenantInScope`].
pub fn require_schema() -> Result<SchemaName> {
    current_schema().ok_or(Error::NoTenantInScope)
}

/// The tenant in scope, or [`Error::NoTenantInScope`].
pub fn require_tenant() -> Result<Tenant> {
    current_tenant().ok_or(Error::NoTenantInScope)
}

/// Refuses a credential issued for another tenant than the one in scope:
/// [`Error::CredentialForOtherTenant`] (403 in every adapter), or
/// [`Error::NoTenantInScope`] outside a scope. For applications that know whom a session
/// belongs to only once their own middleware has loaded it; when the request's headers tell
/// (a signed cookie, a token), configure
/// [`RequestResolverBuilder::credential_tenant`](crate::request::RequestResolverBuilder::credential_tenant)
/// instead, which refuses before any handler runs.
///
/// ```
/// use tenant_schemas::{scope, Error, SchemaName, Tenant, TenantClaim};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let acme = Tenant::new(SchemaName::new("acme")?);
/// let issued_for = |s: &str| TenantClaim::Schema(SchemaName::new(s).unwrap());
/// scope::sync_run(acme, || {
///     assert!(scope::check_claim(&issued_for("acme")).is_ok());
///     let err = scope::check_claim(&issued_for("globex")).unwrap_err();
///     assert!(matches!(err, Error::CredentialForOtherTenant { .. }));
///     assert_eq!(err.status(), http::StatusCode::FORBIDDEN);
/// });
/// # Ok(()) }
/// ```
pub fn check_claim(claim: &TenantClaim) -> Result<()> {
    claim_holds(&require_tenant()?, claim)
}

/// [`check_claim`] for `tenant`: the one comparison the request path makes too.
pub(crate) fn claim_holds(tenant: &Tenant, claim: &TenantClaim) -> Result<()> {
    if claim.matches(tenant) {
        return Ok(());
    }
    Err(Error::CredentialForOtherTenant {
        schema: tenant.schema().clone(),
        claimed: claim.to_string(),
    })
}

/// Runs `fut` with `tenant` in scope. Scopes nest: the innermost one wins.
pub fn run<F: Future>(tenant: Tenant, fut: F) -> Scoped<F> {
    CURRENT.scope(tenant, fut)
}

/// Runs `fut` in the scope of `schema` (a tenant named after its schema).
pub fn run_in_schema<F: Future>(schema: SchemaName, fut: F) -> Scoped<F> {
    run(Tenant::new(schema), fut)
}

/// Runs the closure `f` synchronously with `tenant` in scope.
pub fn sync_run<R>(tenant: Tenant, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(tenant, f)
}

/// Wraps `fut` in the current scope, if there is one, so it keeps the tenant wherever it is
/// polled (a `JoinSet`, another executor, a stream combinator's task); and in the current
/// [`tracing::Span`], so what it logs stays inside the request's span (which names host
/// and tenant).
pub fn bind<F: Future>(fut: F) -> Bound<F> {
    let scoped = match current_tenant() {
        Some(tenant) => Either::Left(run(tenant, fut)),
        None => Either::Right(fut),
    };
    scoped.instrument(tracing::Span::current())
}

/// A future that carries the scope and the tracing span it was created in, as returned by
/// [`bind`].
pub type Bound<F> = Instrumented<Either<Scoped<F>, F>>;

/// Spawns `fut` on the tokio runtime with the current tenant in scope, inside the current
/// [`tracing::Span`].
///
/// `tokio::spawn` starts tasks with empty task-local storage and outside any span; this
/// carries the tenant and the span over (see [`bind`]). Called outside a scope, the new task
/// has no tenant either (and tenant connections fail).
#[track_caller]
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(bind(fut))
}

/// Runs the blocking closure `f` on tokio's blocking pool with the current tenant in scope,
/// inside the current [`tracing::Span`].
#[track_caller]
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    match current_tenant() {
        Some(tenant) => tokio::task::spawn_blocking(move || span.in_scope(|| sync_run(tenant, f))),
        None => tokio::task::spawn_blocking(move || span.in_scope(f)),
    }
}
