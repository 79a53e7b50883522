//! From an HTTP request to a tenant: the logic every adapter shares.
//!
//! A [`RequestResolver`] reads the request's host (or, with other [`Strategy`]s, a path
//! prefix or a header), finds the tenant through the [`Tenancy`] (cached), and says how the
//! request continues: served in a tenant's scope, maybe with a rewritten path, or rejected
//! with a status and a short plain-text message ([`Rejection`]). Adapters only translate
//! their framework's request into `http` parts and the outcome back into a response.
//!
//! ```no_run
//! use tenant_schemas::request::{RequestResolver, Strategy, UnknownTenant};
//! use tenant_schemas::{Tenancy, Tenant};
//!
//! # fn demo(tenancy: Tenancy) {
//! let resolver = RequestResolver::builder(tenancy)
//!     .strategies([Strategy::Host, Strategy::path_prefix("/t/")])
//!     .unknown_tenant(UnknownTenant::Serve(Tenant::public()))
//!     .public_path_token("/main")
//!     .build();
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::header::HeaderName;
use http::{HeaderMap, StatusCode, Uri};

use crate::error::{Error, ErrorKind};
use crate::host::Host;
use crate::resolver::TenantResolver;
use crate::schema::{printable, SchemaName};
use crate::tenancy::Tenancy;
use crate::tenant::Tenant;

/// One way of finding the tenant of a request; [`RequestResolver`] tries them in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// The request's host, through the tenancy's cached [`TenantResolver`].
    Host,
    /// A path prefix `<prefix><schema>/…`, e.g. `/t/acme/notes`; the prefix and the schema
    /// are stripped before routing (`/notes`). The tenant must be active in the registry.
    PathPrefix(String),
    /// A header whose value is the tenant's schema name. **Unauthenticated:** any client can
    /// send it, so use it only behind a gateway that sets it, or for internal services.
    Header(HeaderName),
}

impl Strategy {
    /// [`Strategy::PathPrefix`] with the prefix normalized to start and end with `/`.
    pub fn path_prefix(prefix: &str) -> Self {
        let trimmed = prefix.trim_matches('/');
        if trimmed.is_empty() {
            Strategy::PathPrefix("/".into())
        } else {
            Strategy::PathPrefix(format!("/{trimmed}/"))
        }
    }
}

/// What to do with a well-formed request whose tenant is unknown.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum UnknownTenant {
    /// Answer 404 (the default).
    #[default]
    NotFound,
    /// Serve it as this tenant, e.g. [`Tenant::public`].
    Serve(Tenant),
    /// Answer what the function returns.
    Respond(RespondFn),
}

/// A user function answering requests of unknown tenants (see [`UnknownTenant::Respond`]).
pub type RespondFn = Arc<dyn Fn(&Uri, &HeaderMap) -> Rejection + Send + Sync>;

impl fmt::Debug for UnknownTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnknownTenant::NotFound => f.write_str("NotFound"),
            UnknownTenant::Serve(t) => f.debug_tuple("Serve").field(t).finish(),
            UnknownTenant::Respond(_) => f.write_str("Respond(..)"),
        }
    }
}

/// A request that will not be served: the status and a short plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    body: Cow<'static, str>,
}

impl Rejection {
    /// A rejection with this status and body.
    pub fn new(status: StatusCode, body: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            status,
            body: body.into(),
        }
    }

    /// The rejection for an error: 400, 404, 503 or 500, with a message that names the
    /// problem but no internals (the details go to the log).
    pub fn from_error(err: &Error) -> Self {
        let status = err.status();
        let body: Cow<'static, str> = match (err, err.kind()) {
            (Error::InvalidHost(e), _) => format!(
                "400 Bad Request: invalid host: {}\n",
                printable(&e.kind().to_string())
            )
            .into(),
            (Error::UnknownHost { host }, _) => {
                format!("404 Not Found: no tenant for host {}\n", printable(host)).into()
            }
            (_, ErrorKind::InvalidInput) => "400 Bad Request: invalid tenant name\n".into(),
            (_, ErrorKind::NotFound) => "404 Not Found: unknown tenant\n".into(),
            (_, ErrorKind::Unavailable) => {
                tracing::warn!(error = %err, "database unavailable");
                "503 Service Unavailable: the database cannot be reached, try again later\n".into()
            }
            _ => {
                tracing::error!(error = %err, "tenant resolution failed");
                "500 Internal Server Error\n".into()
            }
        };
        Rejection { status, body }
    }

    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The plain-text body.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The body, owned.
    pub fn into_body(self) -> Cow<'static, str> {
        self.body
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
        let Some(pq) = &self.path_and_query else {
            return uri.clone();
        };
        let mut parts = uri.clone().into_parts();
        match pq.parse() {
            Ok(pq) => {
                parts.path_and_query = Some(pq);
                Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
            }
            Err(_) => uri.clone(),
        }
    }
}

/// Finds the tenant of HTTP requests (see the [module docs](self)).
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
    public_token: Option<String>,
}

/// Builds a [`RequestResolver`].
#[derive(Debug)]
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
    /// [`strip_path_token`] undoes it when building URLs.
    ///
    /// The token's paths belong to the public site alone: a request served as any other
    /// tenant whose path is the token or starts with it (`/main`, `/main/…`, also written
    /// `/%6Dain/…` or `//main/…`) is answered 404, instead of running the public site's
    /// routes in that tenant's scope.
    pub fn public_path_token(mut self, token: &str) -> Self {
        let trimmed = token.trim_matches('/');
        self.inner.public_token = (!trimmed.is_empty()).then(|| format!("/{trimmed}"));
        self
    }

    /// Finishes the resolver.
    pub fn build(self) -> RequestResolver {
        RequestResolver {
            inner: Arc::new(self.inner),
        }
    }
}

impl RequestResolver {
    /// Resolves by host, answering 404 for unknown hosts.
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
            },
        }
    }

    /// The tenancy behind it.
    pub fn tenancy(&self) -> &Tenancy {
        &self.inner.tenancy
    }

    /// The public path token, if one is configured (e.g. `/main`).
    pub fn public_path_token(&self) -> Option<&str> {
        self.inner.public_token.as_deref()
    }

    /// Finds the tenant of a request from its URI and headers.
    pub async fn resolve(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<ResolvedRequest, Rejection> {
        let inner = &*self.inner;
        let mut host = None;
        let mut found = None;
        for strategy in &inner.strategies {
            let attempt = match strategy {
                Strategy::Host => {
                    let h = self
                        .host(uri, headers)
                        .map_err(|e| Rejection::from_error(&e))?;
                    let tenant = inner.tenancy.resolver().resolve(&h).await;
                    host = Some(h);
                    tenant.map(|t| t.map(|t| (t, None)))
                }
                Strategy::PathPrefix(prefix) => match split_prefix(uri, prefix) {
                    Some((schema, rest)) => inner
                        .tenancy
                        .tenant_by_schema(&schema)
                        .await
                        .map(|t| t.map(|t| (t, Some(rest)))),
                    None => Ok(None),
                },
                Strategy::Header(name) => {
                    match headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| SchemaName::new(v.trim()).ok())
                    {
                        Some(schema) => inner
                            .tenancy
                            .tenant_by_schema(&schema)
                            .await
                            .map(|t| t.map(|t| (t, None))),
                        None => Ok(None),
                    }
                }
            };
            match attempt {
                Ok(Some(hit)) => {
                    found = Some(hit);
                    break;
                }
                Ok(None) => {}
                Err(e) => return Err(Rejection::from_error(&e)),
            }
        }
        if host.is_none() {
            host = self.host(uri, headers).ok();
        }
        let (tenant, mut path) = match found {
            Some(hit) => hit,
            None => match &inner.unknown {
                UnknownTenant::NotFound => {
                    let err = match &host {
                        Some(h) => Error::UnknownHost {
                            host: h.to_string(),
                        },
                        None => Error::UnknownHost {
                            host: String::new(),
                        },
                    };
                    return Err(Rejection::from_error(&err));
                }
                UnknownTenant::Serve(t) => (t.clone(), None),
                UnknownTenant::Respond(f) => return Err(f(uri, headers)),
            },
        };
        if let Some(token) = &inner.public_token {
            let current = path
                .as_deref()
                .unwrap_or_else(|| uri.path_and_query().map_or("/", |pq| pq.as_str()));
            if tenant.is_public() {
                path = Some(format!("{token}{current}"));
            } else if under_token(token, current) {
                tracing::debug!(
                    tenant = %tenant.schema(),
                    "a tenant's request for the public site's path token: 404"
                );
                return Err(Rejection::new(StatusCode::NOT_FOUND, "404 Not Found\n"));
            }
        }
        Ok(ResolvedRequest {
            tenant,
            host,
            path_and_query: path,
        })
    }

    fn host(&self, uri: &Uri, headers: &HeaderMap) -> Result<Host, Error> {
        if self.inner.trust_forwarded {
            if let Some(forwarded) = forwarded_host(headers) {
                return Ok(Host::parse(forwarded)?);
            }
        }
        Ok(Host::from_request(uri, headers)?)
    }
}

/// The host a trusted proxy forwarded: `Forwarded: …;host=…` first, then `X-Forwarded-Host`.
/// With several proxies, the first entry is the one the client sent.
fn forwarded_host(headers: &HeaderMap) -> Option<&str> {
    let from_forwarded = headers
        .get(http::header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',').next()?.split(';').find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                key.eq_ignore_ascii_case("host")
                    .then(|| value.trim_matches('"'))
            })
        });
    from_forwarded.or_else(|| {
        headers
            .get("x-forwarded-host")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    })
}

/// Whether the path of `path_and_query` is `token` (`/main`) or lies under it (`/main/…`),
/// the way a router could see it: percent-escapes decoded (`/%6Dain`, as actix-web routes
/// it) and runs of slashes merged (`//main`, as path-normalizing middleware does).
fn under_token(token: &str, path_and_query: &str) -> bool {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(path, _)| path);
    let mut decoded = Vec::with_capacity(path.len());
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let byte = match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => match std::str::from_utf8(hex)
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                Some(b) => {
                    i += 2;
                    b
                }
                None => b'%',
            },
            (b, _) => b,
        };
        i += 1;
        if !(byte == b'/' && decoded.last() == Some(&b'/')) {
            decoded.push(byte);
        }
    }
    match decoded.strip_prefix(token.as_bytes()) {
        Some(rest) => rest.is_empty() || rest.starts_with(b"/"),
        None => false,
    }
}

/// `/t/acme/notes?x=1` with prefix `/t/` → (`acme`, `/notes?x=1`).
fn split_prefix(uri: &Uri, prefix: &str) -> Option<(SchemaName, String)> {
    let rest = uri.path().strip_prefix(prefix)?;
    let (name, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let schema = SchemaName::new(name).ok()?;
    let path = match uri.query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail.to_owned(),
    };
    Some((schema, path))
}

/// Undoes the public path token for URLs shown to users: `/main/signup` → `/signup`.
///
/// ```
/// use tenant_schemas::request::strip_path_token;
///
/// assert_eq!(strip_path_token("/main", "/main/signup"), "/signup");
/// assert_eq!(strip_path_token("/main", "/main"), "/");
/// assert_eq!(strip_path_token("/main", "/mainly"), "/mainly");
/// assert_eq!(strip_path_token("/main", "/notes"), "/notes");
/// ```
pub fn strip_path_token<'a>(token: &str, path: &'a str) -> &'a str {
    let token = token.trim_end_matches('/');
    match path.strip_prefix(token) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let uri: Uri = "/t/acme/notes/1?x=1".parse().unwrap();
        let (schema, rest) = split_prefix(&uri, "/t/").unwrap();
        assert_eq!(schema.as_str(), "acme");
        assert_eq!(rest, "/notes/1?x=1");
        let uri: Uri = "/t/acme".parse().unwrap();
        assert_eq!(split_prefix(&uri, "/t/").unwrap().1, "/");
        let uri: Uri = "/t/Bad-Name/x".parse().unwrap();
        assert!(split_prefix(&uri, "/t/").is_none());
        let uri: Uri = "/x/acme".parse().unwrap();
        assert!(split_prefix(&uri, "/t/").is_none());
        assert_eq!(
            Strategy::path_prefix("t"),
            Strategy::PathPrefix("/t/".into())
        );
        assert_eq!(
            Strategy::path_prefix("/tenants/"),
            Strategy::PathPrefix("/tenants/".into())
        );
    }

    #[test]
    fn paths_under_the_token() {
        for path in [
            "/main",
            "/main/",
            "/main?x=1",
            "/main/signup?x=1",
            "/%6Dain/x",
            "/%6d%61%69%6e",
            "//main//x",
            "/main%2Fx",
        ] {
            assert!(under_token("/main", path), "{path}");
        }
        for path in [
            "/",
            "/mainly",
            "/notes/main",
            "/x?/main",
            "/%6",
            "/ma%in",
            "/Main",
        ] {
            assert!(!under_token("/main", path), "{path}");
        }
    }

    #[test]
    fn forwarded() {
        let mut h = HeaderMap::new();
        assert_eq!(forwarded_host(&h), None);
        h.insert(
            "x-forwarded-host",
            "a.example.com, proxy.internal".parse().unwrap(),
        );
        assert_eq!(forwarded_host(&h), Some("a.example.com"));
        h.insert(
            http::header::FORWARDED,
            "for=1.2.3.4;Host=\"b.example.com\";proto=https, for=5.6.7.8"
                .parse()
                .unwrap(),
        );
        assert_eq!(forwarded_host(&h), Some("b.example.com"));
    }

    #[test]
    fn rejections_do_not_echo_raw_input() {
        let err = Error::from(Host::parse("a\u{1}b").unwrap_err());
        let r = Rejection::from_error(&err);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(!r.body().contains('\u{1}'));
        let r = Rejection::from_error(&Error::UnknownHost {
            host: "x.test".into(),
        });
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(r.body().contains("x.test"));
    }
}
