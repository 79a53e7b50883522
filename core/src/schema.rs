//! Validated PostgreSQL schema names.
//!
//! ```
//! use tenant_schemas::SchemaName;
//!
//! let acme = SchemaName::new("acme").unwrap();
//! assert_eq!(acme.as_str(), "acme");
//! assert_eq!(acme.quoted(), "\"acme\"");
//! assert!(SchemaName::new("Robert'); DROP TABLE students;--").is_err());
//! assert!(SchemaName::new("public").is_err()); // only through SchemaName::public()
//! assert!(SchemaName::public().is_public());
//! ```

use std::fmt;
use std::sync::Arc;

/// The longest identifier PostgreSQL keeps without truncating (NAMEDATALEN - 1).
pub const MAX_SCHEMA_NAME_LEN: usize = 63;

const PUBLIC: &str = "public";
const RESERVED: &[&str] = &["information_schema", "pg_catalog", "pg_toast"];

/// A schema name that is safe to use as a tenant's schema.
///
/// 1–63 bytes of `[a-z_][a-z0-9_]*`, not starting with `pg_`, and not one of
/// `information_schema`, `pg_catalog`, `pg_toast` or `public` (the latter only through
/// [`SchemaName::public`]). Cloning is cheap (a reference count). It is still quoted with
/// [`SchemaName::quoted`] wherever SQL is built, and passed as a bind parameter where it can be.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemaName(Arc<str>);

/// Why a schema name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schema name `{name}`: {reason}")]
pub struct SchemaNameError {
    name: String,
    reason: &'static str,
}

impl SchemaNameError {
    /// The refused name (cut to 100 bytes, with control characters escaped, so it is safe to log).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What was wrong with it.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl SchemaName {
    /// Validates `name` as a tenant schema name.
    pub fn new(name: &str) -> Result<Self, SchemaNameError> {
        validate(name)?;
        Ok(Self(Arc::from(name)))
    }

    /// The shared `public` schema, used by the public tenant and for shared tables.
    pub fn public() -> Self {
        thread_local! {
            static PUBLIC_NAME: SchemaName = SchemaName(Arc::from(PUBLIC));
        }
        PUBLIC_NAME.with(Clone::clone)
    }

    /// A name read back from the registry, where `public` stands for the public tenant.
    pub(crate) fn from_registry(name: &str) -> Result<Self, SchemaNameError> {
        if name == PUBLIC {
            Ok(Self::public())
        } else {
            Self::new(name)
        }
    }

    /// Whether this is the `public` schema.
    #[must_use]
    pub fn is_public(&self) -> bool {
        &*self.0 == PUBLIC
    }

    /// The bare name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, shared (a tenant named after its schema holds the same allocation).
    pub(crate) fn shared(&self) -> Arc<str> {
        self.0.clone()
    }

    /// The name as a quoted SQL identifier, e.g. `"acme"`.
    ///
    /// Validation already excludes every character that would need escaping; quoting keeps
    /// names that are SQL keywords (`user`, `order`) usable.
    #[must_use]
    pub fn quoted(&self) -> String {
        let mut quoted = String::with_capacity(self.0.len() + 2);
        quoted.push('"');
        quoted.push_str(&self.0);
        quoted.push('"');
        quoted
    }
}

fn validate(name: &str) -> Result<(), SchemaNameError> {
    let fail = |reason| {
        Err(SchemaNameError {
            name: printable(name),
            reason,
        })
    };
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return fail("it is empty");
    };
    if bytes.len() > MAX_SCHEMA_NAME_LEN {
        return fail("it is longer than 63 bytes");
    }
    if !(first.is_ascii_lowercase() || first == b'_') {
        return fail("it must start with a lowercase letter a-z or `_`");
    }
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return fail("only lowercase letters a-z, digits and `_` are allowed");
    }
    if name.starts_with("pg_") {
        return fail("names starting with `pg_` are reserved by PostgreSQL");
    }
    if RESERVED.contains(&name) {
        return fail("it is a PostgreSQL system schema");
    }
    if name == PUBLIC {
        return fail("`public` is the shared schema; use SchemaName::public()");
    }
    Ok(())
}

/// A bounded, escaped copy of untrusted input for error messages and logs.
pub(crate) fn printable(input: &str) -> String {
    let mut out: String = input
        .chars()
        .take(100)
        .flat_map(char::escape_debug)
        .collect();
    if input.chars().count() > 100 {
        out.push('…');
    }
    out
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: width, fill and alignment (`{:<24}`) apply, as for a `str`.
        f.pad(&self.0)
    }
}

impl fmt::Debug for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SchemaName({:?})", &*self.0)
    }
}

impl AsRef<str> for SchemaName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for SchemaName {
    type Err = SchemaNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for SchemaName {
    type Error = SchemaNameError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for SchemaName {
    type Error = SchemaNameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

/// The value of `search_path` for a schema: `"<schema>", public` plus extra shared schemas,
/// or `public` plus extras for the public schema.
pub(crate) fn search_path(schema: &SchemaName, extras: &[SchemaName]) -> Arc<str> {
    let mut path = schema.quoted();
    if !schema.is_public() {
        path.push_str(", public");
    }
    for extra in extras {
        if extra != schema && !extra.is_public() {
            path.push_str(", ");
            path.push_str(&extra.quoted());
        }
    }
    Arc::from(path)
}

/// A statement that fails with `invalid_schema_name` (3F000) when `schema` is missing.
pub(crate) fn existence_check(schema: &SchemaName) -> String {
    format!("SELECT '{}'::pg_catalog.regnamespace", schema.quoted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in [
            "a",
            "acme",
            "_private",
            "tenant_42",
            "t1",
            "x_",
            "user",
            "order",
            "pgx",
            "p_g",
            "pg",
            "public1",
            "publicx",
            "information",
            "abc_def_ghi",
            "z9",
            "__",
            "a123456789",
            &"a".repeat(63),
        ] {
            assert!(SchemaName::new(name).is_ok(), "{name} should be valid");
        }
    }

    #[test]
    fn invalid_names() {
        for name in [
            "",
            "Acme",
            "ACME",
            "1acme",
            "9",
            "acme-corp",
            "acme corp",
            " acme",
            "acme;",
            "acme\"",
            "a\"; DROP SCHEMA public; --",
            "acme'",
            "acme.other",
            "acme\0",
            "acme\n",
            "ácme",
            "straße",
            "pg_",
            "pg_temp",
            "pg_toast",
            "pg_catalog",
            "information_schema",
            "public",
            "$user",
            "acme$",
            "a/b",
            "a\\b",
            "*",
            "-",
            &"a".repeat(64),
        ] {
            let err = SchemaName::new(name).expect_err(name);
            assert!(!err.reason().is_empty());
        }
    }

    #[test]
    fn public_is_only_reached_by_name() {
        assert!(SchemaName::public().is_public());
        assert_eq!(SchemaName::public().as_str(), "public");
        assert!(!SchemaName::new("acme").unwrap().is_public());
    }

    #[test]
    fn error_names_the_input_safely() {
        let err = SchemaName::new("bad\u{0}name").unwrap_err();
        assert_eq!(err.name(), "bad\\0name");
        assert!(err.to_string().contains("bad\\0name"));
        let long = "X".repeat(1000);
        assert!(SchemaName::new(&long).unwrap_err().name().len() < 110);
    }

    #[test]
    fn display_honors_width_and_alignment() {
        let acme = SchemaName::new("acme").unwrap();
        assert_eq!(format!("{acme}"), "acme");
        assert_eq!(format!("[{acme:<8}]"), "[acme    ]");
        assert_eq!(format!("[{acme:>8}]"), "[    acme]");
        assert_eq!(format!("[{acme:-^8}]"), "[--acme--]");
        assert_eq!(format!("[{acme:.2}]"), "[ac]");
        assert_eq!(format!("[{:<8}]", SchemaName::public()), "[public  ]");
    }

    #[test]
    fn search_path_rendering() {
        let acme = SchemaName::new("acme").unwrap();
        let ext = SchemaName::new("extensions").unwrap();
        assert_eq!(&*search_path(&acme, &[]), "\"acme\", public");
        assert_eq!(
            &*search_path(&acme, std::slice::from_ref(&ext)),
            "\"acme\", public, \"extensions\""
        );
        assert_eq!(
            &*search_path(&SchemaName::public(), &[ext]),
            "\"public\", \"extensions\""
        );
    }
}
