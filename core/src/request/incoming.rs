//! What the request path reads from a framework's request and writes back into it.

use std::borrow::Cow;

use http::request::Parts;
use http::{HeaderMap, Uri};

/// A framework's request as [`RequestResolver::request_scope`](super::RequestResolver::request_scope)
/// sees it: the URI and headers it resolves the tenant from, the path it rewrites, the
/// extensions it fills for extractors.
///
/// Implemented for `http`'s request [`Parts`] (tower, axum, hyper, warp); an adapter over a
/// framework with its own request type (actix-web) implements it for a view of that type.
pub trait IncomingRequest {
    /// The request's URI (its authority, when present, is the host for the host strategy).
    fn uri(&self) -> Cow<'_, Uri>;

    /// The request's headers.
    fn headers(&self) -> Cow<'_, HeaderMap>;

    /// Routes the request by `path_and_query` from now on: a path-prefix strategy stripped
    /// its prefix, or the public path token was put in front.
    fn set_path_and_query(&mut self, path_and_query: &str);

    /// Stores `value` in the request's extensions (one value per type), for extractors.
    fn insert_extension<T: Clone + Send + Sync + 'static>(&mut self, value: T);
}

impl IncomingRequest for Parts {
    fn uri(&self) -> Cow<'_, Uri> {
        Cow::Borrowed(&self.uri)
    }

    fn headers(&self) -> Cow<'_, HeaderMap> {
        Cow::Borrowed(&self.headers)
    }

    fn set_path_and_query(&mut self, path_and_query: &str) {
        self.uri = with_path_and_query(&self.uri, path_and_query);
    }

    fn insert_extension<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.extensions.insert(value);
    }
}

/// `uri` with its path and query replaced; `uri` unchanged when they do not parse.
pub(super) fn with_path_and_query(uri: &Uri, path_and_query: &str) -> Uri {
    let mut parts = uri.clone().into_parts();
    match path_and_query.parse() {
        Ok(pq) => {
            parts.path_and_query = Some(pq);
            Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
        }
        Err(_) => uri.clone(),
    }
}
