//! The public path token (django-tenant-schemas' `PUBLIC_SCHEMA_URL_TOKEN`): the public
//! site's routes live under it, and only the public tenant reaches them.

use http::{StatusCode, Uri};

use super::Rejection;
use crate::Tenant;

/// A normalized token: one leading `/`, no trailing one (`/main`).
#[derive(Debug, Clone)]
pub(super) struct PathToken(String);

impl PathToken {
    /// `main`, `/main/` and `/main` all give `/main`; an empty token gives none.
    pub(super) fn new(token: &str) -> Option<Self> {
        let trimmed = token.trim_matches('/');
        (!trimmed.is_empty()).then(|| Self(format!("/{trimmed}")))
    }

    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    /// The path to route a request of `tenant` by: the public tenant's path under the
    /// token; for any other tenant the path unchanged, or a 404 when it lies under the token
    /// (the public site's routes would run in the tenant's scope). `rewritten` is the path a
    /// strategy already rewrote, if any.
    pub(super) fn route(
        &self,
        tenant: &Tenant,
        uri: &Uri,
        rewritten: Option<String>,
    ) -> Result<Option<String>, Rejection> {
        let current = rewritten
            .as_deref()
            .unwrap_or_else(|| uri.path_and_query().map_or("/", |pq| pq.as_str()));
        if tenant.is_public() {
            return Ok(Some(format!("{}{current}", self.0)));
        }
        if self.covers(current) {
            tracing::debug!(
                tenant = %tenant.schema(),
                "a tenant's request for the public site's path token: 404"
            );
            return Err(Rejection::new(StatusCode::NOT_FOUND, "404 Not Found\n"));
        }
        Ok(rewritten)
    }

    /// Whether the path of `path_and_query` is the token (`/main`) or lies under it
    /// (`/main/…`), the way a router could see it: percent-escapes decoded (`/%6Dain`, as
    /// actix-web routes it) and runs of slashes merged (`//main`, as path-normalizing
    /// middleware does).
    fn covers(&self, path_and_query: &str) -> bool {
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
        match decoded.strip_prefix(self.0.as_bytes()) {
            Some(rest) => rest.is_empty() || rest.starts_with(b"/"),
            None => false,
        }
    }
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
#[must_use]
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
    fn paths_under_the_token() {
        let token = PathToken::new("main").unwrap();
        assert_eq!(token.as_str(), "/main");
        assert!(PathToken::new("/").is_none());
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
            assert!(token.covers(path), "{path}");
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
            assert!(!token.covers(path), "{path}");
        }
    }
}
