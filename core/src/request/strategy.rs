//! The ways of finding a request's tenant, and what to do when none finds it.

use std::fmt;
use std::sync::Arc;

use http::header::HeaderName;
use http::{HeaderMap, Uri};

use super::Rejection;
use crate::{Error, Host, SchemaName, Tenancy, Tenant, TenantResolver};

/// One way of finding the tenant of a request; [`RequestResolver`](super::RequestResolver)
/// tries them in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// The request's host, through the tenancy's cached
    /// [`TenantResolver`](crate::TenantResolver).
    Host,
    /// A path prefix `<prefix><schema>/…`, e.g. `/t/acme/notes`; the prefix and the schema
    /// are stripped before routing (`/notes`). The tenant must be active in the registry.
    PathPrefix(String),
    /// A header whose value is the tenant's schema name. **Unauthenticated:** any client can
    /// send it, so use it only behind a gateway that sets it, or for internal services.
    /// A request with the header twice, or with two values in one (`acme, beta`), is
    /// refused with 400, as a request with two `Host` headers is: which one a gateway
    /// checked and which one the application reads could differ.
    Header(HeaderName),
}

impl Strategy {
    /// [`Strategy::PathPrefix`] with the prefix normalized to start and end with `/`.
    #[must_use]
    pub fn path_prefix(prefix: &str) -> Self {
        let trimmed = prefix.trim_matches('/');
        if trimmed.is_empty() {
            Self::PathPrefix("/".into())
        } else {
            Self::PathPrefix(format!("/{trimmed}/"))
        }
    }

    /// The tenant this strategy finds for the request, if any. `host` is the request's
    /// host as parsed once for all strategies: a malformed one rejects the request (400)
    /// when the host strategy is reached, even if a later strategy could have matched.
    pub(super) async fn find(
        &self,
        tenancy: &Tenancy,
        uri: &Uri,
        headers: &HeaderMap,
        host: &Result<Host, Error>,
    ) -> Result<Option<Match>, Rejection> {
        let found = match self {
            Self::Host => {
                let host = host.as_ref().map_err(Rejection::from_error)?;
                tenancy
                    .cached_resolver()
                    .resolve(host)
                    .await
                    .map(|t| t.map(Match::as_is))
            }
            Self::PathPrefix(prefix) => match split_prefix(uri, prefix) {
                Some((schema, rest)) => tenancy
                    .tenant_by_schema(&schema)
                    .await
                    .map(|t| t.map(|tenant| Match::rewritten(tenant, rest))),
                None => Ok(None),
            },
            Self::Header(name) => match header_schema(headers, name)? {
                Some(schema) => tenancy
                    .tenant_by_schema(&schema)
                    .await
                    .map(|t| t.map(Match::as_is)),
                None => Ok(None),
            },
        };
        found.map_err(|e| Rejection::from_error(&e))
    }
}

/// A tenant found for a request, and the path to route it by when the strategy rewrote it.
#[derive(Debug)]
pub(super) struct Match {
    pub(super) tenant: Tenant,
    pub(super) path_and_query: Option<String>,
}

impl Match {
    fn as_is(tenant: Tenant) -> Self {
        Self {
            tenant,
            path_and_query: None,
        }
    }

    fn rewritten(tenant: Tenant, path_and_query: String) -> Self {
        Self {
            tenant,
            path_and_query: Some(path_and_query),
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

impl UnknownTenant {
    /// The tenant to serve a request that no strategy found a tenant for, or its rejection.
    pub(super) fn fallback(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        host: Option<&Host>,
    ) -> Result<Match, Rejection> {
        match self {
            Self::NotFound => Err(Rejection::from_error(&Error::UnknownHost {
                host: host.map(Host::to_string).unwrap_or_default(),
            })),
            Self::Serve(tenant) => Ok(Match::as_is(tenant.clone())),
            Self::Respond(respond) => Err(respond(uri, headers)),
        }
    }
}

impl fmt::Debug for UnknownTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("NotFound"),
            Self::Serve(t) => f.debug_tuple("Serve").field(t).finish(),
            Self::Respond(_) => f.write_str("Respond(..)"),
        }
    }
}

/// The host a trusted proxy forwarded: `Forwarded: …;host=…` first, then `X-Forwarded-Host`.
/// With several proxies, the first entry is the one the client sent.
pub(super) fn forwarded_host(headers: &HeaderMap) -> Option<&str> {
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

/// The schema named by header `name`, when it holds a valid one; a 400 when the request
/// names more than one (the header twice, or a list in one).
fn header_schema(headers: &HeaderMap, name: &HeaderName) -> Result<Option<SchemaName>, Rejection> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() || value.as_bytes().contains(&b',') {
        return Err(Rejection::new(
            http::StatusCode::BAD_REQUEST,
            format!(
                "400 Bad Request: the request has more than one {name} header (or a list in \
                 one): name one tenant\n"
            ),
        ));
    }
    Ok(value
        .to_str()
        .ok()
        .and_then(|v| SchemaName::new(v.trim()).ok()))
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
    fn a_tenant_header_names_one_tenant_or_the_request_is_refused() {
        let name = HeaderName::from_static("x-tenant");
        let mut h = HeaderMap::new();
        assert_eq!(header_schema(&h, &name), Ok(None));
        h.insert(&name, "acme".parse().unwrap());
        assert_eq!(header_schema(&h, &name).unwrap().unwrap().as_str(), "acme");
        // An invalid name is no tenant (the next strategy may find one).
        h.insert(&name, "Bad-Name".parse().unwrap());
        assert_eq!(header_schema(&h, &name), Ok(None));
        for values in [
            &["acme", "beta"][..],
            &["acme", "acme"],
            &["acme, beta"],
            &["acme,"],
        ] {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(&name, v.parse().unwrap());
            }
            let rejection = header_schema(&h, &name).unwrap_err();
            assert_eq!(
                rejection.status(),
                http::StatusCode::BAD_REQUEST,
                "{values:?}"
            );
            assert!(
                rejection.body().contains("more than one x-tenant header"),
                "{rejection:?}"
            );
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
}
