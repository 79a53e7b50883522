//! The name of a database tenants live on (a shard): a value type, below everything that
//! looks databases up.
//!
//! ```
//! use tenant_schemas::{ShardName, DEFAULT_SHARD};
//!
//! let eu = ShardName::new("eu");
//! assert_eq!(eu, "eu");
//! assert!(!eu.is_default());
//! assert!(ShardName::new(DEFAULT_SHARD).is_default());
//! assert_eq!(ShardName::default(), ShardName::DEFAULT);
//! ```

use std::fmt;
use std::sync::Arc;

/// The name the registry gives the default database (the one holding the registry).
pub const DEFAULT_SHARD: &str = "default";

/// The name of a database tenants live on (a shard).
///
/// [`ShardName::DEFAULT`] (spelled [`DEFAULT_SHARD`], `"default"`) is the database holding
/// the registry; any other name is one added with
/// [`TenancyBuilder::shard`](crate::TenancyBuilder::shard) or
/// [`SchemaRouterBuilder::shard`](crate::SchemaRouterBuilder::shard). Cheap to clone.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardName(
    /// `None` for the default database, so that it has one representation.
    Option<Arc<str>>,
);

impl ShardName {
    /// The default database, holding the registry.
    pub const DEFAULT: Self = Self(None);

    /// The database called `name`; [`DEFAULT_SHARD`] names the default one.
    #[must_use]
    pub fn new(name: &str) -> Self {
        if name == DEFAULT_SHARD {
            Self::DEFAULT
        } else {
            Self(Some(Arc::from(name)))
        }
    }

    /// Whether this is the default database.
    #[must_use]
    pub fn is_default(&self) -> bool {
        self.0.is_none()
    }

    /// The name, as the registry stores it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_deref().unwrap_or(DEFAULT_SHARD)
    }
}

impl From<&str> for ShardName {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for ShardName {
    fn from(name: String) -> Self {
        Self::new(&name)
    }
}

impl From<&Self> for ShardName {
    fn from(name: &Self) -> Self {
        name.clone()
    }
}

impl AsRef<str> for ShardName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for ShardName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShardName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for ShardName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShardName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
