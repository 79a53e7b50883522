//! Citus as a deployment mode: tenants as distributed schemas on a Citus coordinator.
//!
//! When the default database is a Citus coordinator (the `citus` extension is installed
//! there; detected when the [`Tenancy`] is built, or set with
//! [`TenancyBuilder::citus`](crate::TenancyBuilder::citus)), each tenant is created as a
//! *distributed schema* (schema-based sharding): the creating transaction runs
//! `SET LOCAL citus.enable_schema_based_sharding = on` before its `CREATE SCHEMA`, so the
//! schema and every table its migrations make live together on one worker, chosen by Citus.
//! The rest of the creation (migrations, registry rows, the announcement) is the same single
//! transaction as on plain PostgreSQL: a failed migration leaves neither schema nor row.
//!
//! The registry and the shared tables in `public` stay ordinary tables of the coordinator
//! (Citus calls them local tables): the registry is small, read through the coordinator
//! anyway, and a reference table would turn every registry write into a two-phase commit
//! across all nodes (measured: 3.4 ms instead of 0.28 ms per insert with two workers).
//! Tenants' statements go through the coordinator with the usual `search_path`; Citus routes
//! each to the worker holding the tenant.
//!
//! On Citus, [`Tenancy::move_tenant`] moves a tenant to another worker with
//! `citus_schema_move` (online, by logical replication, under a cut-over fence that keeps
//! every acknowledged write: see `tenancy/citus.rs` and docs/scaling.md), [`Tenancy::rebalance`]
//! runs the moves of Citus' rebalancer plan the same way, and [`Registry::placements`] says
//! where each tenant lives.
//!
//! ```no_run
//! use tenant_schemas::{CitusNode, SchemaName, Tenancy, TransferMode};
//!
//! # async fn demo(tenancy: Tenancy) -> tenant_schemas::Result<()> {
//! let acme = SchemaName::new("acme")?;
//! let to: CitusNode = "10.0.0.12:5432".parse()?;
//! let report = tenancy.move_tenant(&acme, &to, TransferMode::Auto).await?;
//! println!("{acme} moved to {} in {:?}", report.to, report.took);
//! # Ok(()) }
//! ```
//!
//! The value types are here; [`Registry`]'s side (mode, placements, nodes) is in
//! `registry/citus.rs`, [`Tenancy`]'s (moves, rebalancing) in `tenancy/citus.rs`.
//!
//! [`Tenancy`]: crate::Tenancy
//! [`Tenancy::move_tenant`]: crate::Tenancy::move_tenant
//! [`Tenancy::rebalance`]: crate::Tenancy::rebalance
//! [`Registry`]: crate::Registry
//! [`Registry::placements`]: crate::Registry::placements

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::schema::SchemaName;

/// A node of a Citus cluster, as its metadata names it (`pg_dist_node`): host and port.
///
/// Parsed from `host:port` (`[::1]:5432` for an IPv6 address).
///
/// ```
/// use tenant_schemas::CitusNode;
///
/// let node: CitusNode = "10.0.0.12:5432".parse().unwrap();
/// assert_eq!(node.host(), "10.0.0.12");
/// assert_eq!(node.port(), 5432);
/// assert_eq!(node.to_string(), "10.0.0.12:5432");
/// assert!("10.0.0.12".parse::<CitusNode>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CitusNode {
    host: String,
    port: u16,
}

impl CitusNode {
    /// The node at `host` and `port`.
    #[must_use]
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// Its host name or address.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Its port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for CitusNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for CitusNode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Citus {
            reason: format!("`{s}` is not a node address: write it as host:port"),
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Self::new(host, port))
    }
}

/// How Citus copies a tenant's tables to another node (`citus.shard_transfer_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransferMode {
    /// Logical replication, online (reads and writes go on; writes wait only during the
    /// cut-over). Refused by Citus when a table has neither a primary key nor a replica
    /// identity, since its `UPDATE`s and `DELETE`s would fail during the copy.
    #[default]
    Auto,
    /// Logical replication even for tables without a primary key or replica identity
    /// (their `UPDATE`s and `DELETE`s fail while the copy runs; inserts and reads go on).
    ForceLogical,
    /// A plain copy while the tenant's writes wait (reads go on): for when logical
    /// replication is not available (`wal_level` below `logical`).
    BlockWrites,
}

impl TransferMode {
    /// The value Citus knows it by.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::ForceLogical => "force_logical",
            Self::BlockWrites => "block_writes",
        }
    }
}

impl FromStr for TransferMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "force_logical" | "force-logical" => Ok(Self::ForceLogical),
            "block_writes" | "block-writes" => Ok(Self::BlockWrites),
            _ => Err(Error::Citus {
                reason: format!(
                    "`{s}` is not a transfer mode: auto, force_logical or block_writes"
                ),
            }),
        }
    }
}

/// Where a distributed schema lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The schema.
    pub schema: SchemaName,
    /// The node holding its tables; `None` for a schema without tables (Citus places a
    /// distributed schema with its first table).
    pub node: Option<CitusNode>,
}

/// What [`Tenancy::move_tenant`](crate::Tenancy::move_tenant) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveReport {
    /// The tenant.
    pub schema: SchemaName,
    /// Where it was.
    pub from: CitusNode,
    /// Where it is now.
    pub to: CitusNode,
    /// Whether it moved (`false` when it was already on `to`).
    pub moved: bool,
    /// How long the move took (the copy and the cut-over).
    pub took: Duration,
    /// How long writes to the tenant through the coordinator waited at the cut-over: from
    /// when the move asked to block them (see
    /// [`Tenancy::move_tenant`](crate::Tenancy::move_tenant)) until it committed. Reads are
    /// not held.
    pub writes_held: Duration,
}

/// What [`Tenancy::rebalance`](crate::Tenancy::rebalance) did: the tenants it moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebalanceReport {
    /// Each tenant moved, with where it was and where it is now.
    pub moved: Vec<(SchemaName, CitusNode, CitusNode)>,
    /// How long the rebalance took.
    pub took: Duration,
}
