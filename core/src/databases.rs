//! The PostgreSQL databases tenants live on: the default one, which holds the registry, and
//! any number of named others (shards).
//!
//! A tenant's [`ShardName`] says which database its schema is on. The router and the registry
//! both look databases up through one map type, so the default database has one name
//! everywhere: [`ShardName::DEFAULT`], stored as [`DEFAULT_SHARD`] in the registry.
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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use deadpool_postgres::{Object, Pool};

use crate::error::{Error, Result};
use crate::schema::SchemaName;

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

/// The default database's name, for handing out references to it.
static DEFAULT_NAME: ShardName = ShardName::DEFAULT;

/// The databases of one application, each with a `T`: its pool, or what the router keeps for
/// it. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Databases<T = Pool> {
    default: T,
    others: Arc<BTreeMap<ShardName, T>>,
}

impl<T> Databases<T> {
    /// Only the default database.
    pub(crate) fn new(default: T) -> Self {
        Self {
            default,
            others: Arc::default(),
        }
    }

    /// Adds (or replaces) another database. The default database is not replaced: a shard
    /// named [`DEFAULT_SHARD`] is ignored, as it always was.
    pub(crate) fn add(&mut self, name: ShardName, value: T)
    where
        T: Clone,
    {
        if !name.is_default() {
            Arc::make_mut(&mut self.others).insert(name, value);
        }
    }

    /// The default database's value.
    pub(crate) fn default(&self) -> &T {
        &self.default
    }

    /// The value of database `shard`; [`Error::UnknownShard`] when there is no such database.
    pub(crate) fn get(&self, shard: &ShardName) -> Result<&T> {
        if shard.is_default() {
            return Ok(&self.default);
        }
        self.others.get(shard).ok_or_else(|| Error::UnknownShard {
            shard: shard.to_string(),
        })
    }

    /// Every database, the default one first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ShardName, &T)> {
        std::iter::once((&DEFAULT_NAME, &self.default)).chain(self.others.iter())
    }

    /// Whether there is any database besides the default one.
    pub(crate) fn has_others(&self) -> bool {
        !self.others.is_empty()
    }

    /// The same databases, each with `f` of its value.
    pub(crate) fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Databases<U> {
        Databases {
            default: f(&self.default),
            others: Arc::new(
                self.others
                    .iter()
                    .map(|(name, value)| (name.clone(), f(value)))
                    .collect(),
            ),
        }
    }
}

impl Databases<Pool> {
    /// A connection to database `shard`, for work on `schema`.
    pub(crate) async fn connect(&self, shard: &ShardName, schema: &SchemaName) -> Result<Object> {
        connect(self.get(shard)?, schema).await
    }
}

/// A connection from `pool` for work on `schema`; [`Error::Pool`] when none can be had.
/// Once a read-only tenant has been served, the connection may have been left read-only
/// by its session: that is undone first, so the registry and migrations can write.
pub(crate) async fn connect(pool: &Pool, schema: &SchemaName) -> Result<Object> {
    let conn = pool
        .get()
        .await
        .map_err(|source| Error::pool(schema, source))?;
    if crate::router::session::read_only_sessions_seen() {
        conn.batch_execute("SET default_transaction_read_only TO off")
            .await
            .map_err(|e| Error::db("making the session writable", schema, e))?;
    }
    Ok(conn)
}
