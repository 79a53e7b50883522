//! Tenant-aware keys: cache keys and object-storage paths prefixed with the tenant, so
//! one tenant's entries and files never mix with another's.
//!
//! [`tenant_key`] and [`tenant_path`] use the tenant in [`scope`](crate::scope::run) and fail
//! outside one ([`Error::NoTenantInScope`]): there is no unprefixed fallback. A key or path
//! that could leave its prefix once a store or a file system interprets it (`..`, an
//! absolute path, a backslash, NUL or another control character, a percent-encoded
//! `..`) is refused with [`Error::InvalidKey`] instead of being cleaned up: a cleaned-up
//! path may still name another tenant's file.
//!
//! Keys are `t/<schema>/<key>`, paths `tenants/<schema>/<path>`. The public tenant's are
//! `t/public/…` and `tenants/public/…`, which no other tenant can have (no tenant schema is
//! called `public`).
//!
//! ```
//! use tenant_schemas::keys::{tenant_key, tenant_path};
//! use tenant_schemas::{scope, SchemaName, Tenant};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> tenant_schemas::Result<()> {
//! let acme = Tenant::new(SchemaName::new("acme")?);
//! scope::run(acme, async {
//!     assert_eq!(tenant_key("sessions:42")?, "t/acme/sessions:42");
//!     assert_eq!(tenant_path("uploads/a.png")?, "tenants/acme/uploads/a.png");
//!     assert!(tenant_path("../globex/uploads/a.png").is_err());
//!     Ok::<_, tenant_schemas::Error>(())
//! })
//! .await?;
//! assert!(tenant_key("sessions:42").is_err()); // no tenant in scope: no key
//! # Ok(()) }
//! ```
//!
//! Keeping each tenant under its own prefix also makes a tenant's data easy to find and to
//! delete: everything of `acme` is under [`TenantKeys::key_prefix`] and
//! [`TenantKeys::path_prefix`]. The prefix is the tenant's schema: a tenant whose schema is
//! renamed has a new prefix, and its objects must be moved with it.

use crate::error::{Error, Result};
use crate::schema::SchemaName;
use crate::scope;
use crate::tenant::Tenant;

/// What every tenant's cache keys start with, before the schema.
pub const KEY_PREFIX: &str = "t/";
/// What every tenant's storage paths start with, before the schema.
pub const PATH_PREFIX: &str = "tenants/";
/// The longest storage path made, in bytes (S3's and most object stores' key limit).
pub const MAX_PATH_LEN: usize = 1024;

/// The key and path prefixes of one tenant.
///
/// ```
/// use tenant_schemas::keys::TenantKeys;
/// use tenant_schemas::SchemaName;
///
/// let keys = TenantKeys::for_schema(SchemaName::new("acme").unwrap());
/// assert_eq!(keys.key("rate:login:1.2.3.4").unwrap(), "t/acme/rate:login:1.2.3.4");
/// assert_eq!(keys.path_prefix(), "tenants/acme/"); // e.g. to list or delete its files
/// assert!(keys.path("/etc/passwd").is_err());
/// assert_eq!(TenantKeys::for_schema(SchemaName::public()).key_prefix(), "t/public/");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantKeys {
    schema: SchemaName,
}

impl TenantKeys {
    /// The prefixes of `tenant`.
    #[must_use]
    pub fn for_tenant(tenant: &Tenant) -> Self {
        Self::for_schema(tenant.schema().clone())
    }

    /// The prefixes of the tenant living in `schema`.
    #[must_use]
    pub fn for_schema(schema: SchemaName) -> Self {
        Self { schema }
    }

    /// The prefixes of the tenant in scope; [`Error::NoTenantInScope`] outside any scope.
    pub fn current() -> Result<Self> {
        scope::require_schema().map(Self::for_schema)
    }

    /// `t/<schema>/`: what each of the tenant's keys starts with.
    #[must_use]
    pub fn key_prefix(&self) -> String {
        format!("{KEY_PREFIX}{}/", self.schema)
    }

    /// `tenants/<schema>/`: what each of the tenant's paths starts with.
    #[must_use]
    pub fn path_prefix(&self) -> String {
        format!("{PATH_PREFIX}{}/", self.schema)
    }

    /// `key` under the tenant's [key prefix](Self::key_prefix); [`Error::InvalidKey`] for an
    /// empty key or one with a control character (NUL, newline …), a backslash, a leading `/`
    /// or a `..` segment.
    pub fn key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(format!("{}{key}", self.key_prefix()))
    }

    /// `path` under the tenant's [path prefix](Self::path_prefix); [`Error::InvalidKey`] for
    /// what [`key`](Self::key) refuses, and also for `.` or empty segments (`a//b`), a drive
    /// letter (`C:`), a percent-encoded form of any of these (`%2e%2e`), and a result longer
    /// than [`MAX_PATH_LEN`].
    pub fn path(&self, path: &str) -> Result<String> {
        check_path(path)?;
        let full = format!("{}{path}", self.path_prefix());
        if full.len() > MAX_PATH_LEN {
            return Err(invalid(path, "the prefixed path is longer than 1024 bytes"));
        }
        Ok(full)
    }
}

/// `key` under the prefix of the tenant in scope: `t/<schema>/<key>` (see the
/// [module](self)). [`Error::NoTenantInScope`] outside a scope, [`Error::InvalidKey`] for a
/// key that could leave the prefix.
pub fn tenant_key(key: &str) -> Result<String> {
    TenantKeys::current()?.key(key)
}

/// `path` under the prefix of the tenant in scope: `tenants/<schema>/<path>` (see the
/// [module](self)). [`Error::NoTenantInScope`] outside a scope, [`Error::InvalidKey`] for a
/// path that could leave the prefix.
pub fn tenant_path(path: &str) -> Result<String> {
    TenantKeys::current()?.path(path)
}

fn invalid(key: &str, reason: &'static str) -> Error {
    Error::InvalidKey {
        key: key.to_owned(),
        reason,
    }
}

fn check_key(key: &str) -> Result<()> {
    match key_problem(key) {
        Some(reason) => Err(invalid(key, reason)),
        None => Ok(()),
    }
}

fn check_path(path: &str) -> Result<()> {
    if let Some(reason) = path_problem(path) {
        return Err(invalid(path, reason));
    }
    // A store or proxy that decodes percent-escapes sees the decoded path: every decoding
    // (`%252e`, encoded twice, too) must pass as well.
    let mut current = path.to_owned();
    loop {
        let decoded = percent_encoding::percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == current {
            return Ok(());
        }
        if path_problem(&decoded).is_some() {
            return Err(invalid(
                path,
                "percent-decoded, it could leave the tenant's prefix",
            ));
        }
        current = decoded;
    }
}

/// What keys and paths both refuse.
fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("it is empty")
    } else if key.contains('\0') {
        Some("it contains NUL")
    } else if key.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if key.contains('\\') {
        Some("it contains a backslash, a path separator on Windows")
    } else if key.starts_with('/') {
        Some("it is absolute (starts with `/`)")
    } else if key.split('/').any(|segment| segment == "..") {
        Some("a `..` segment would leave the tenant's prefix")
    } else {
        None
    }
}

/// What paths refuse besides.
fn path_problem(path: &str) -> Option<&'static str> {
    if let Some(reason) = key_problem(path) {
        return Some(reason);
    }
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        if *segment == "." {
            return Some("it has a `.` segment");
        }
        // A trailing `/` (a "folder") is fine; `a//b` is not.
        if segment.is_empty() && i != last {
            return Some("it has an empty segment (`//`)");
        }
    }
    let first = segments[0].as_bytes();
    if first.len() >= 2 && first[0].is_ascii_alphabetic() && first[1] == b':' {
        return Some("it starts with a drive letter (absolute on Windows)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> TenantKeys {
        TenantKeys::for_schema(SchemaName::new("acme").unwrap())
    }

    #[test]
    fn keys_and_paths_are_prefixed_with_the_tenant() {
        let keys = acme();
        assert_eq!(keys.key("sessions:42").unwrap(), "t/acme/sessions:42");
        assert_eq!(keys.key("a/b.c").unwrap(), "t/acme/a/b.c");
        assert_eq!(
            keys.path("uploads/a.png").unwrap(),
            "tenants/acme/uploads/a.png"
        );
        assert_eq!(keys.path("uploads/").unwrap(), "tenants/acme/uploads/");
        assert_eq!(
            keys.path("file..name.txt").unwrap(),
            "tenants/acme/file..name.txt"
        );
        assert_eq!(keys.path("50%off.png").unwrap(), "tenants/acme/50%off.png");
        let public = TenantKeys::for_schema(SchemaName::public());
        assert_eq!(public.key("x").unwrap(), "t/public/x");
        assert_eq!(public.path("x").unwrap(), "tenants/public/x");
        // Two tenants' prefixes never contain one another.
        let acme2 = TenantKeys::for_schema(SchemaName::new("acme2").unwrap());
        assert!(!acme2.key_prefix().starts_with(&keys.key_prefix()));
        assert!(!acme2.path_prefix().starts_with(&keys.path_prefix()));
    }

    #[test]
    fn whatever_could_leave_the_prefix_is_refused() {
        let keys = acme();
        for bad in [
            "",
            "..",
            "../globex/x",
            "a/../../globex",
            "a/..",
            "/etc/passwd",
            "a\\..\\b",
            "a\0b",
            "a\nb",
            "a\rb",
            "\u{7f}",
        ] {
            let err = keys.key(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidKey { .. }), "{bad:?}: {err}");
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
            assert!(keys.path(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "./a",
            "a/./b",
            "a//b",
            "C:/x",
            "c:x",
            "%2e%2e/globex/x",
            "%2E%2E%2Fglobex",
            "a/%2e%2e",
            "%2fetc/passwd",
            "a%5c..%5cb",
            "%252e%252e/x",
            "a%00b",
        ] {
            let err = keys.path(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidKey { .. }), "{bad:?}: {err}");
        }
        let long = "a".repeat(MAX_PATH_LEN);
        assert!(keys.path(&long).is_err());
        // The message names the key, escaped.
        let err = keys.key("a\0b").unwrap_err().to_string();
        assert!(err.contains("\"a\\0b\"") && err.contains("NUL"), "{err}");
    }

    #[tokio::test]
    async fn the_tenant_in_scope_or_an_error() {
        let err = tenant_key("x").unwrap_err();
        assert!(matches!(err, Error::NoTenantInScope), "{err}");
        assert!(matches!(tenant_path("x"), Err(Error::NoTenantInScope)));
        let globex = Tenant::new(SchemaName::new("globex").unwrap());
        let (key, path) = scope::run(globex, async {
            (tenant_key("k").unwrap(), tenant_path("p/q").unwrap())
        })
        .await;
        assert_eq!(
            (key.as_str(), path.as_str()),
            ("t/globex/k", "tenants/globex/p/q")
        );
        assert_eq!(
            scope::run(Tenant::public(), async { tenant_key("k").unwrap() }).await,
            "t/public/k"
        );
    }
}
