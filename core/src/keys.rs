//! Tenant-aware keys: cache keys and object-storage paths prefixed with the tenant, so
//! one tenant's entries and files never mix with another's.
//!
//! [`tenant_key`] and [`tenant_path`] use the tenant in [`scope`](crate::scope::run) and fail
//! outside one ([`Error::NoTenantInScope`]): there is no unprefixed fallback. A key or path
//! that could leave its prefix once a store, a proxy or a file system interprets it is
//! refused with [`Error::InvalidKey`] instead of being cleaned up (a cleaned-up path may
//! still name another tenant's file):
//!
//! - `..` segments, an absolute path (a leading `/`), a backslash, NUL or another control
//!   character — and, for paths, `.` and empty segments and a drive letter;
//! - any of these once percent-decoded, as often as decoding changes something (`%2e%2e/`,
//!   `..%2f`, `%2f…`, `%5c`, `%252e%252e`), and a percent-encoding that does not decode to
//!   UTF-8 (the overlong `%c0%ae`, which a lax decoder reads as `.`);
//! - any of these once Unicode-normalized (NFKC, as many systems normalize names) or read
//!   with the slash look-alikes NFKC leaves alone (`∕` U+2215, `⁄` U+2044, `⧸`, `╱` … as
//!   `/`; `⧵`, `⧹`, `╲` … as `\`): `．．/`, `‥/`, `..／`, `..∕`, `＼` are refused. Other
//!   non-ASCII characters are kept (`résumé.pdf` is a fine name).
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
    /// or a `..` segment, as written, percent-decoded or Unicode-normalized (see the
    /// [module](self)).
    pub fn key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(format!("{}{key}", self.key_prefix()))
    }

    /// `path` under the tenant's [path prefix](Self::path_prefix); [`Error::InvalidKey`] for
    /// what [`key`](Self::key) refuses, and also for `.` or empty segments (`a//b`), a drive
    /// letter (`C:`), a percent-encoded or Unicode look-alike form of any of these (`%2e%2e`,
    /// `．．`), and a result longer than [`MAX_PATH_LEN`].
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
    check(key, key_problem)
}

fn check_path(path: &str) -> Result<()> {
    check(path, path_problem)
}

/// `s` as written, then every form a store, a proxy or a file system may read it as must
/// pass `problem`.
fn check(s: &str, problem: fn(&str) -> Option<&'static str>) -> Result<()> {
    if let Some(reason) = problem(s) {
        return Err(invalid(s, reason));
    }
    if problem(&folded(s)).is_some() {
        return Err(invalid(
            s,
            "Unicode-normalized (NFKC) or with its slash look-alikes read as `/` or `\\`, \
             it could leave the tenant's prefix",
        ));
    }
    // A store or proxy that decodes percent-escapes sees the decoded form: every decoding
    // (`%252e`, encoded twice, too) must pass as well.
    let mut current = s.to_owned();
    loop {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(&current).collect();
        let Ok(decoded) = String::from_utf8(bytes) else {
            return Err(invalid(
                s,
                "percent-decoded, it is not UTF-8 (an overlong form such as `%c0%ae` reads \
                 as `.` to a lax decoder)",
            ));
        };
        if decoded == current {
            return Ok(());
        }
        if problem(&decoded).is_some() || problem(&folded(&decoded)).is_some() {
            return Err(invalid(
                s,
                "percent-decoded, it could leave the tenant's prefix",
            ));
        }
        current = decoded;
    }
}

/// Characters that look like `/` and that NFKC leaves alone.
const SLASH_LOOK_ALIKES: &[char] = &[
    '\u{2215}', // ∕ DIVISION SLASH
    '\u{2044}', // ⁄ FRACTION SLASH
    '\u{29F8}', // ⧸ BIG SOLIDUS
    '\u{2571}', // ╱ BOX DRAWINGS LIGHT DIAGONAL UPPER RIGHT TO LOWER LEFT
    '\u{27CB}', // ⟋ MATHEMATICAL RISING DIAGONAL
    '\u{0338}', // ̸ COMBINING LONG SOLIDUS OVERLAY
    '\u{2CC6}', // ⳇ COPTIC SMALL LETTER OLD COPTIC ESH
    '\u{3033}', // 〳 VERTICAL KANA REPEAT MARK UPPER HALF
];

/// Characters that look like `\` and that NFKC leaves alone.
const BACKSLASH_LOOK_ALIKES: &[char] = &[
    '\u{29F5}', // ⧵ REVERSE SOLIDUS OPERATOR
    '\u{29F9}', // ⧹ BIG REVERSE SOLIDUS
    '\u{2572}', // ╲ BOX DRAWINGS LIGHT DIAGONAL UPPER LEFT TO LOWER RIGHT
    '\u{27CD}', // ⟍ MATHEMATICAL FALLING DIAGONAL
];

/// `s` in NFKC (`．` → `.`, `‥` → `..`, `／` → `/`, `＼` → `\`), with the slash look-alikes
/// read as what they look like. ASCII is its own form.
fn folded(s: &str) -> std::borrow::Cow<'_, str> {
    use unicode_normalization::UnicodeNormalization;
    if s.is_ascii() {
        return s.into();
    }
    s.nfkc()
        .map(|c| {
            if SLASH_LOOK_ALIKES.contains(&c) {
                '/'
            } else if BACKSLASH_LOOK_ALIKES.contains(&c) {
                '\\'
            } else {
                c
            }
        })
        .collect::<String>()
        .into()
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

    #[test]
    fn encoded_and_look_alike_traversal_is_refused_in_keys_and_paths() {
        let keys = acme();
        for bad in [
            // Percent-encoded, once or twice.
            "%2e%2e/globex/x",
            "%2E%2E%2Fglobex",
            "..%2f",
            "..%2fglobex/x",
            "%2f",
            "%2fetc/passwd",
            "%5c",
            "a%5c..%5cb",
            "%252e%252e/x",
            "a%00b",
            // Unicode look-alikes: NFKC turns them into `..` or `/`, or they look like `/`.
            "．．",
            "．．/globex/x",
            "‥",
            "‥/globex",
            "..／",
            "..／globex",
            "..∕globex",
            "..⁄globex",
            "..⧸globex",
            "／etc/passwd",
            "＼x",
            "a⧵..⧵b",
            // The same, percent-encoded (UTF-8).
            "%ef%bc%8e%ef%bc%8e/globex",
            "%e2%80%a5/globex",
            "..%ef%bc%8f",
            "..%e2%88%95",
            // Overlong UTF-8 for `.` and `/`: not UTF-8, refused.
            "%c0%ae%c0%ae",
            "%c0%ae%c0%ae/globex",
            "..%c0%af",
            "%e0%80%ae%e0%80%ae/x",
            "%ff",
        ] {
            let err = keys.key(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidKey { .. }), "{bad:?}: {err}");
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
            let err = keys.path(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidKey { .. }), "{bad:?}: {err}");
        }
        // Paths only: `.` segments and drive letters in look-alike form.
        for bad in ["a/．/b", "．/a", "a/%ef%bc%8e/b", "C：/x"] {
            assert!(keys.path(bad).is_err(), "{bad:?}");
        }
        // The reason says which reading it failed.
        let err = keys.key("..%2fglobex").unwrap_err().to_string();
        assert!(err.contains("percent-decoded"), "{err}");
        let err = keys.key("..∕globex").unwrap_err().to_string();
        assert!(err.contains("NFKC"), "{err}");
        let err = keys.key("%c0%ae%c0%ae").unwrap_err().to_string();
        assert!(err.contains("not UTF-8"), "{err}");
        // What cannot leave the prefix is kept as written.
        for good in [
            "résumé.pdf",
            "日本語/ファイル.txt",
            "a%2fb",
            "50%off.png",
            "½.txt",
            "file..name.txt",
            "a.b/c．d",
        ] {
            assert_eq!(keys.path(good).unwrap(), format!("tenants/acme/{good}"));
            assert_eq!(keys.key(good).unwrap(), format!("t/acme/{good}"));
        }
    }

    /// What a lax consumer may make of a stored name: percent-decoded as often as it
    /// changes (overlong `.` and `/` read as such), NFKC-normalized, slash look-alikes and
    /// backslashes read as `/`; then resolved. `None` when it leaves `prefix`.
    fn lax_resolve(full: &str, prefix: &str) -> Option<String> {
        use unicode_normalization::UnicodeNormalization;
        let mut current = full.to_owned();
        loop {
            let mut bytes: Vec<u8> = percent_encoding::percent_decode_str(&current).collect();
            for (overlong, ascii) in [
                (&[0xc0, 0xae][..], b'.'),
                (&[0xc0, 0xaf][..], b'/'),
                (&[0xe0, 0x80, 0xae][..], b'.'),
                (&[0xe0, 0x80, 0xaf][..], b'/'),
            ] {
                while let Some(i) = bytes.windows(overlong.len()).position(|w| w == overlong) {
                    bytes.splice(i..i + overlong.len(), [ascii]);
                }
            }
            let decoded = String::from_utf8_lossy(&bytes).into_owned();
            if decoded == current {
                break;
            }
            current = decoded;
        }
        let read: String = current
            .nfkc()
            .map(|c| {
                if c == '\\' || SLASH_LOOK_ALIKES.contains(&c) || BACKSLASH_LOOK_ALIKES.contains(&c)
                {
                    '/'
                } else {
                    c
                }
            })
            .collect();
        if read.starts_with('/') {
            return None;
        }
        let mut stack: Vec<&str> = Vec::new();
        for segment in read.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    stack.pop()?;
                }
                s => stack.push(s),
            }
        }
        let resolved = stack.join("/") + "/";
        resolved.starts_with(prefix).then_some(resolved)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever pieces a key or path is made of, an accepted one stays under its
        /// tenant's prefix however a lax consumer reads it.
        #[test]
        fn an_accepted_key_or_path_stays_under_its_prefix(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "a", "é", "..", ".", "/", "\\", "%", "%2e", "%2E", "%2f", "%5c", "%25",
                    "%c0%ae", "%c0", "%ae", "．", "‥", "／", "∕", "⁄", "＼", "%ef%bc%8e",
                    "%e2%80%a5", ":", "C", "½", "\u{338}",
                ]),
                1..8,
            )
        ) {
            let s: String = pieces.concat();
            let keys = acme();
            if let Ok(full) = keys.path(&s) {
                proptest::prop_assert!(
                    lax_resolve(&full, "tenants/acme/").is_some(),
                    "path {:?} accepted as {:?}", s, full
                );
            }
            if let Ok(full) = keys.key(&s) {
                proptest::prop_assert!(
                    lax_resolve(&full, "t/acme/").is_some(),
                    "key {:?} accepted as {:?}", s, full
                );
            }
        }
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
