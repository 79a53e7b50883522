//! What [`TenantLayer`](crate::TenantLayer) leaves in a request's extensions, read back for
//! extractors.

use tenant_schemas::request::RequestScope;
use tenant_schemas::{ConnectionScope, Error, Tenant};

/// The request's scope, from the extensions the layer filled;
/// [`Error::NoTenantInScope`] when the layer did not run.
pub fn request_scope(extensions: &http::Extensions) -> Result<&RequestScope, Error> {
    extensions
        .get::<RequestScope>()
        .ok_or(Error::NoTenantInScope)
}

/// The tenant of a request, from the extensions the layer filled.
#[must_use]
pub fn tenant_of(extensions: &http::Extensions) -> Option<&Tenant> {
    extensions.get::<Tenant>()
}

/// A connection bound to the request's tenant, from the extensions the layer filled;
/// [`Error::NoTenantInScope`] when the layer did not run.
pub async fn tenant_connection(extensions: &http::Extensions) -> Result<ConnectionScope, Error> {
    request_scope(extensions)?.connection().await
}

/// A connection bound to `public`, through the tenancy the layer put in the extensions.
pub async fn public_connection(extensions: &http::Extensions) -> Result<ConnectionScope, Error> {
    request_scope(extensions)?.public_connection().await
}
