//! A request that will not be served, and the one way every adapter answers it.

use std::borrow::Cow;

use http::header::{CONTENT_TYPE, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderValue, Response, StatusCode};

use crate::schema::printable;
use crate::{Error, ErrorKind, TenantStatus};

/// A request that will not be served: the status and a short plain-text body.
///
/// Every adapter answers a rejected request, and a library error met in a handler or an
/// extractor, with [`into_http`](Self::into_http), so every such response has the same
/// headers.
///
/// ```
/// use tenant_schemas::request::Rejection;
///
/// let res = Rejection::from_error(&tenant_schemas::Error::UnknownHost { host: "x.test".into() })
///     .into_http();
/// assert_eq!(res.status(), 404);
/// assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
/// assert_eq!(res.headers()["x-content-type-options"], "nosniff");
/// assert_eq!(res.body(), "404 Not Found: no tenant for host x.test\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    body: Cow<'static, str>,
    retry_after: Option<u64>,
}

impl Rejection {
    /// A rejection with this status and body.
    pub fn new(status: StatusCode, body: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            body: body.into(),
            retry_after: None,
        }
    }

    /// Tells the client to try again after `seconds` (a `Retry-After` header).
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The `Retry-After` seconds, if any.
    #[must_use]
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// The rejection for an error: its [`Error::status`] (400, 404, 503, …), with a message
    /// that names the problem but no internals (the details go to the log).
    pub fn from_error(err: &Error) -> Self {
        if let Error::TenantBusy { .. } = err {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: this site is busy, try again in a moment\n",
            )
            .with_retry_after(1);
        }
        if err.is_cancelled() {
            tracing::warn!(error = %err, "statement cancelled (the tenant's statement_timeout)");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: this request took too long, try again in a moment\n",
            )
            .with_retry_after(1);
        }
        let body: Cow<'static, str> = match (err, err.kind()) {
            (Error::InvalidHost(e), _) => format!(
                "400 Bad Request: invalid host: {}\n",
                printable(&e.kind().to_string())
            )
            .into(),
            (Error::UnknownHost { host }, _) => {
                format!("404 Not Found: no tenant for host {}\n", printable(host)).into()
            }
            (Error::TenantNotServed { status, .. }, _) => match status {
                TenantStatus::Maintenance => {
                    "503 Service Unavailable: this site is down for maintenance, try again later\n"
                        .into()
                }
                TenantStatus::Archived => "404 Not Found: unknown tenant\n".into(),
                _ => "403 Forbidden: this site is suspended\n".into(),
            },
            (Error::CredentialForOtherTenant { .. }, _) => {
                tracing::warn!(error = %err, "credential presented to another tenant");
                "403 Forbidden: this credential was issued for another site\n".into()
            }
            (Error::TenantReadOnly { .. }, _) => {
                "403 Forbidden: this site is read-only for now\n".into()
            }
            (_, ErrorKind::InvalidInput) => "400 Bad Request: invalid tenant name\n".into(),
            (_, ErrorKind::Forbidden) => "403 Forbidden\n".into(),
            (_, ErrorKind::NotFound) => "404 Not Found: unknown tenant\n".into(),
            (_, ErrorKind::Conflict) => {
                "409 Conflict: the tenant or domain exists already\n".into()
            }
            (_, ErrorKind::Unavailable) => {
                tracing::warn!(error = %err, "database unavailable");
                "503 Service Unavailable: the database cannot be reached, try again later\n".into()
            }
            (_, ErrorKind::NoTenantInScope) => {
                tracing::error!(error = %err, "a tenant connection was asked for outside any tenant scope");
                "500 Internal Server Error\n".into()
            }
            _ => {
                tracing::error!(error = %err, "request failed");
                "500 Internal Server Error\n".into()
            }
        };
        Self {
            status: err.status(),
            body,
            retry_after: None,
        }
    }

    /// The status to answer with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The plain-text body.
    #[must_use]
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The body, owned.
    #[must_use]
    pub fn into_body(self) -> Cow<'static, str> {
        self.body
    }

    /// The response: the status, the body as `text/plain; charset=utf-8`, and
    /// `x-content-type-options: nosniff` (a browser must not guess that the text, which may
    /// quote the request's host, is HTML). Adapters map the body into their framework's body
    /// type.
    pub fn into_http(self) -> Response<Cow<'static, str>> {
        let mut res = Response::new(self.body);
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        res
    }
}

impl From<&Error> for Rejection {
    fn from(err: &Error) -> Self {
        Self::from_error(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Host;

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

    #[test]
    fn the_body_names_the_status_it_is_sent_with() {
        for err in [
            Error::TenantExists {
                schema: crate::SchemaName::new("acme").unwrap(),
            },
            Error::DomainTaken {
                domain: "acme.test".into(),
            },
            Error::UnknownHost {
                host: "x.test".into(),
            },
            Error::NoTenantInScope,
        ] {
            let r = Rejection::from_error(&err);
            let code = r.status().as_u16().to_string();
            assert!(
                r.body().starts_with(&code),
                "{err}: {} {}",
                r.status(),
                r.body()
            );
        }
    }

    #[test]
    fn every_rejection_is_plain_text_and_not_sniffed() {
        let res = Rejection::new(StatusCode::GONE, "gone").into_http();
        assert_eq!(res.status(), StatusCode::GONE);
        assert_eq!(res.headers().len(), 2);
        assert_eq!(res.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(res.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(res.body(), "gone");
    }
}
