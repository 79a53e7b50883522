//! [`RequestResolver`]: the strategies, the fallback and the path token, applied in order.

use std::sync::Arc;

use std::time::Duration;

use http::{HeaderMap, StatusCode, Uri};

use super::incoming::{with_path_and_query, IncomingRequest};
use super::path_token::PathToken;
use super::strategy::{forwarded_host, Match};
use super::{Rejection, RequestScope, Strategy, UnknownTenant};
use crate::{Error, Host, Tenancy, Tenant, TenantClaim, TenantStatus};

/// The application's reading of whom a request's credential was issued for.
type ReadClaim = dyn Fn(&HeaderMap) -> Option<TenantClaim> + Send + Sync;

/// [`RequestResolverBuilder::credential_tenant`]'s function (`Debug` for the resolver's).
#[derive(Clone)]
struct ClaimReader(Arc<ReadClaim>);

impl std::fmt::Debug for ClaimReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClaimReader(..)")
    }
}

/// Finds the tenant of HTTP requests (see the [module docs](super)).
#[derive(Clone, Debug)]
pub struct RequestResolver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tenancy: Tenancy,
    strategies: Vec<Strategy>,
    trust_forwarded: bool,
    unknown: UnknownTenant,
    public_token: Option<PathToken>,
    suspended_status: StatusCode,
    retry_after: u64,
    claim: Option<ClaimReader>,
}

/// Builds a [`RequestResolver`].
#[derive(Debug)]
#[must_use]
pub struct RequestResolverBuilder {
    inner: Inner,
}

impl RequestResolverBuilder {
    /// The strategies to try, in order (default: [`Strategy::Host`] alone).
    pub fn strategies(mut self, strategies: impl IntoIterator<Item = Strategy>) -> Self {
        self.inner.strategies = strategies.into_iter().collect();
        self
    }

    /// Take the host from `Forwarded` (`host=`) or `X-Forwarded-Host` when present.
    ///
    /// Only turn this on when every request reaches the application through a proxy that
    /// sets or overwrites these headers: otherwise any client can pick its tenant.
    pub fn trust_forwarded_headers(mut self, trust: bool) -> Self {
        self.inner.trust_forwarded = trust;
        self
    }

    /// What to do when no strategy finds a tenant (default: 404).
    pub fn unknown_tenant(mut self, policy: UnknownTenant) -> Self {
        self.inner.unknown = policy;
        self
    }

    /// The `PUBLIC_SCHEMA_URL_TOKEN` of django-tenant-schemas: requests served as the
    /// public tenant have `token` put in front of their path (`/signup` → `/main/signup`), so
    /// one router holds the public site under the token and the tenant sites beside it.
    /// [`strip_path_token`](super::strip_path_token) undoes it when building URLs.
    ///
    /// The token's paths belong to the public site alone: a request served as any other
    /// tenant whose path is the token or starts with it (`/main`, `/main/…`, also written
    /// `/%6Dain/…` or `//main/…`) is answered 404, instead of running the public site's
    /// routes in that tenant's scope.
    pub fn public_path_token(mut self, token: &str) -> Self {
        self.inner.public_token = PathToken::new(token);
        self
    }

    /// The status answered for a [suspended](crate::TenantStatus::Suspended) tenant
    /// (default: 403 Forbidden; e.g. 402 Payment Required or 451).
    pub fn suspended_status(mut self, status: StatusCode) -> Self {
        self.inner.suspended_status = status;
        self
    }

    /// The `Retry-After` sent with the 503 of a tenant in
    /// [maintenance](crate::TenantStatus::Maintenance) (default: 60 seconds).
    pub fn maintenance_retry_after(mut self, retry_after: Duration) -> Self {
        self.inner.retry_after = retry_after.as_secs().max(1);
        self
    }

    /// Binds credentials to their tenant: `read` says, from a request's headers, which tenant
    /// its credential (session cookie, bearer token) was issued for — after verifying it, as
    /// the application does — or `None` when the request carries none. A request whose
    /// credential names another tenant than the one the request resolved to is answered
    /// 403 (`this credential was issued for another site`, [`Error::CredentialForOtherTenant`]
    /// logged as a warning) before any handler runs: a session cookie scoped to
    /// `.example.com` and sent to `globex.example.com`, or a token copied from acme's site,
    /// reaches nothing of globex. The public tenant is a tenant like the others: return
    /// `None` for credentials that are meant to work on the main site too.
    ///
    /// ```
    /// use tenant_schemas::request::RequestResolver;
    /// use tenant_schemas::{SchemaName, Tenancy, TenantClaim};
    ///
    /// # fn demo(tenancy: Tenancy) -> RequestResolver {
    /// // A session cookie `session=<schema>.<signature>`, signed at sign-in.
    /// fn verified_schema(cookie: &str) -> Option<&str> {
    ///     let (schema, _signature) = cookie.split_once('.')?; // verify it here
    ///     Some(schema)
    /// }
    /// RequestResolver::builder(tenancy)
    ///     .credential_tenant(|headers| {
    ///         let cookies = headers.get(http::header::COOKIE)?.to_str().ok()?;
    ///         let session = cookies
    ///             .split(';')
    ///             .find_map(|c| c.trim().strip_prefix("session="))?;
    ///         let schema = SchemaName::new(verified_schema(session)?).ok()?;
    ///         Some(TenantClaim::Schema(schema))
    ///     })
    ///     .build()
    /// # }
    /// ```
    pub fn credential_tenant<F>(mut self, read: F) -> Self
    where
        F: Fn(&HeaderMap) -> Option<TenantClaim> + Send + Sync + 'static,
    {
        self.inner.claim = Some(ClaimReader(Arc::new(read)));
        self
    }

    /// Finishes the resolver.
    #[must_use]
    pub fn build(self) -> RequestResolver {
        RequestResolver {
            inner: Arc::new(self.inner),
        }
    }
}

/// A request that will be served, and how.
#[derive(Debug, Clone)]
pub struct ResolvedRequest {
    /// The tenant to serve it as.
    pub tenant: Tenant,
    /// The normalized host, when the request had a valid one.
    pub host: Option<Host>,
    /// The new path and query to route by, when a strategy or the public path token
    /// rewrote them; `None` to route by the original URI.
    pub path_and_query: Option<String>,
}

impl ResolvedRequest {
    /// A span naming the host and tenant, to run the request (and its body) in, so every log
    /// line of the request names its tenant.
    pub fn span(&self) -> tracing::Span {
        let host = self.host.as_ref().map_or("", Host::as_str);
        tracing::info_span!("tenant_request", host = %host, tenant = %self.tenant.schema())
    }

    /// `uri` with the rewritten path and query, when there are any.
    pub fn rewrite_uri(&self, uri: &Uri) -> Uri {
        match &self.path_and_query {
            Some(pq) => with_path_and_query(uri, pq),
            None => uri.clone(),
        }
    }
}

impl RequestResolver {
    /// Resolves by host, answering 404 for unknown hosts.
    #[must_use]
    pub fn new(tenancy: Tenancy) -> Self {
        Self::builder(tenancy).build()
    }

    /// A builder for other strategies and policies.
    pub fn builder(tenancy: Tenancy) -> RequestResolverBuilder {
        RequestResolverBuilder {
            inner: Inner {
                tenancy,
                strategies: vec![Strategy::Host],
                trust_forwarded: false,
                unknown: UnknownTenant::NotFound,
                public_token: None,
                suspended_status: StatusCode::FORBIDDEN,
                retry_after: 60,
                claim: None,
            },
        }
    }

    /// The tenancy behind it.
    #[must_use]
    pub fn tenancy(&self) -> &Tenancy {
        &self.inner.tenancy
    }

    /// The public path token, if one is configured (e.g. `/main`).
    pub fn public_path_token(&self) -> Option<&str> {
        self.inner.public_token.as_ref().map(PathToken::as_str)
    }

    /// The request path of every adapter: finds the tenant of `request`, routes it by the
    /// rewritten path (path-prefix strategy, public path token), puts the [`Tenant`], the
    /// [`Tenancy`] and the returned [`RequestScope`] in its extensions, and returns the scope
    /// to run the handler in. A request that will not be served gets its [`Rejection`].
    pub async fn request_scope<R>(&self, request: &mut R) -> Result<RequestScope, Rejection>
    where
        R: IncomingRequest,
    {
        let resolved = self.resolve(&request.uri(), &request.headers()).await?;
        if let Some(pq) = &resolved.path_and_query {
            request.set_path_and_query(pq);
        }
        let scope = RequestScope::new(
            resolved.tenant.clone(),
            self.inner.tenancy.clone(),
            resolved.span(),
        );
        request.insert_extension(resolved.tenant);
        request.insert_extension(self.inner.tenancy.clone());
        request.insert_extension(scope.clone());
        Ok(scope)
    }

    /// Finds the tenant of a request from its URI and headers: the first strategy that finds
    /// one wins; without one, the [`UnknownTenant`] policy decides; then the public path
    /// token applies. A tenant whose [state](crate::TenantStatus) is not served is
    /// rejected: 503 with `Retry-After` in maintenance, 403 (or the configured status)
    /// suspended, 404 archived; so is a request whose credential was issued for another
    /// tenant (403, see [`RequestResolverBuilder::credential_tenant`]).
    pub async fn resolve(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<ResolvedRequest, Rejection> {
        let inner = &*self.inner;
        let host = self.host(uri, headers);
        let mut found = None;
        for strategy in &inner.strategies {
            found = strategy.find(&inner.tenancy, uri, headers, &host).await?;
            if found.is_some() {
                break;
            }
        }
        let host = host.ok();
        let Match {
            tenant,
            path_and_query,
        } = match found {
            Some(found) => found,
            None => inner.unknown.fallback(uri, headers, host.as_ref())?,
        };
        self.served(&tenant)?;
        if let Some(ClaimReader(read)) = &inner.claim {
            if let Some(claim) = read(headers) {
                crate::scope::claim_holds(&tenant, &claim)
                    .map_err(|e| Rejection::from_error(&e))?;
            }
        }
        let path_and_query = match &inner.public_token {
            Some(token) => token.route(&tenant, uri, path_and_query)?,
            None => path_and_query,
        };
        Ok(ResolvedRequest {
            tenant,
            host,
            path_and_query,
        })
    }

    /// Rejects a tenant that is not served in its state.
    fn served(&self, tenant: &Tenant) -> Result<(), Rejection> {
        let status = tenant.status();
        if status.is_served() {
            return Ok(());
        }
        let err = Error::TenantNotServed {
            schema: tenant.schema().clone(),
            status,
        };
        let rejection = Rejection::from_error(&err);
        Err(match status {
            TenantStatus::Maintenance => rejection.with_retry_after(self.inner.retry_after),
            TenantStatus::Suspended => {
                let body = format!(
                    "{} {}: this site is suspended\n",
                    self.inner.suspended_status.as_u16(),
                    self.inner.suspended_status.canonical_reason().unwrap_or("")
                );
                Rejection::new(self.inner.suspended_status, body)
            }
            _ => rejection,
        })
    }

    /// The request's host: a trusted proxy's forwarded host when configured and present,
    /// else the URI's authority or the `Host` header.
    fn host(&self, uri: &Uri, headers: &HeaderMap) -> Result<Host, Error> {
        if self.inner.trust_forwarded {
            if let Some(forwarded) = forwarded_host(headers) {
                return Ok(Host::parse(forwarded)?);
            }
        }
        Ok(Host::from_request(uri, headers)?)
    }
}
