//! What [`Tenancy::erase_tenant`](crate::Tenancy::erase_tenant) removed: the receipt an
//! operator keeps when a customer's data is erased.

use std::time::{Duration, SystemTime};

use crate::schema::SchemaName;
use crate::shard::ShardName;
use crate::tenant::TenantRecord;

/// The receipt of an erasure: the tenant as it was, every table of its schema with the rows
/// it held, the prefixes of its [tenant-aware keys](crate::keys) (entries the library cannot
/// reach: purge them in the stores that hold them), when and how long, and the checksum of
/// the export taken before, if the operator gave one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ErasureReceipt {
    /// The tenant's registry row as it was (its id, name, domains, state, database).
    pub tenant: TenantRecord,
    /// Each table of its schema (the migration history included; materialized views too)
    /// and its rows, by name: each row erased counted once.
    pub tables: Vec<TableRows>,
    /// The prefix of its cache keys ([`TenantKeys::key_prefix`](crate::keys::TenantKeys::key_prefix)).
    pub key_prefix: String,
    /// The prefix of its object-storage paths
    /// ([`TenantKeys::path_prefix`](crate::keys::TenantKeys::path_prefix)).
    pub path_prefix: String,
    /// When the schema and the registry rows were removed.
    pub erased_at: SystemTime,
    /// How long the erasure took.
    pub took: Duration,
    /// The checksum of the export taken before the erasure, as given.
    pub export_checksum: Option<String>,
}

impl ErasureReceipt {
    /// The rows removed, every table together.
    #[must_use]
    pub fn rows(&self) -> i64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// A table and how many rows it held.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TableRows {
    /// The table's name in its schema.
    pub table: String,
    /// Its rows.
    pub rows: i64,
}

/// How much a tenant's schema holds ([`Tenancy::usage`](crate::Tenancy::usage)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SchemaUsage {
    /// The tenant's schema.
    pub schema: crate::schema::SchemaName,
    /// The database (shard) it lives on.
    pub shard: crate::shard::ShardName,
    /// Its state.
    pub status: crate::tenant::TenantStatus,
    /// Bytes on disk: every table, materialized view, index and TOAST table of the schema
    /// (`pg_total_relation_size`, summed).
    pub bytes: u64,
    /// Its tables.
    pub tables: u64,
    /// Its storage quota, if it has one.
    pub storage_quota: Option<u64>,
}

impl SchemaUsage {
    /// Whether the schema holds more than its quota.
    #[must_use]
    pub fn over_quota(&self) -> bool {
        self.storage_quota.is_some_and(|q| self.bytes > q)
    }
}

/// What [`Tenancy::move_to_shard`](crate::Tenancy::move_to_shard) did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ShardMoveReport {
    /// The tenant.
    pub schema: SchemaName,
    /// The database it was on.
    pub from: ShardName,
    /// The database it is on now.
    pub to: ShardName,
    /// Whether it moved (`false` when it was on `to` already).
    pub moved: bool,
    /// Each table of its schema (the migration history included) and its rows, as counted
    /// on both databases, equal, at the cut-over.
    pub rows: Vec<TableRows>,
    /// How long the move took (the build of the target, the copy, the catch-up and the
    /// cut-over).
    pub took: Duration,
    /// How long the cut-over held the tenant's writes: from when this process held back
    /// the tenant's statements until the source schema was dropped. Writes of other
    /// processes waited (on the table locks) at most as long; reads of other processes
    /// went on until the drop.
    pub writes_held: Duration,
}

impl ShardMoveReport {
    /// The rows moved, every table together.
    #[must_use]
    pub fn total_rows(&self) -> i64 {
        self.rows.iter().map(|t| t.rows).sum()
    }
}
