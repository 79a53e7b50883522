#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

// Where code goes (the layout rule; see also `tenancy/mod.rs` and `registry/mod.rs`):
//
// - a tenant operation's public method lives in `tenancy/<op>.rs` (an `impl Tenancy`
//   block), its SQL in `registry/<op>.rs` (an `impl Registry` block or free functions);
// - its value types (reports, options, references) live in a leaf module that imports
//   nothing above `tenant.rs`: `citus.rs`, `tenant.rs`, `shard.rs`, `schema.rs`, `host.rs`
//   ... (`report`'s options stay beside their only user, `tenancy/report.rs`; the doctor's
//   findings beside the checks that make them, `registry/doctor.rs`);
// - no `impl Tenancy` outside `tenancy/`, no `impl Registry` outside `registry/`;
// - imports run downwards: leaves (`error`, `schema`, `host`, `shard`, `tenant`,
//   `scope` (`tenant_scope.rs`), `sql`, `leftovers`, `citus`, `keys`, `receipt`) <-
//   `connect`, `databases`, `migrate` <- `registry` <- `router`, `resolve` <- `tenancy` <-
//   `request`.

mod connect;
mod databases;
mod error;
mod host;
mod leftovers;
mod migrate;
mod receipt;
mod registry;
mod resolve;
mod roles;
mod router;
mod schema;
#[cfg(feature = "serde")]
mod serde_support;
mod shard;
mod sql;
mod tenancy;
mod tenant;

pub mod checkout;
pub mod citus;
pub mod keys;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod request;
// The task-local tenant scope: public as `scope`, in a file named for which scope it is
// (`request/request_scope.rs` is the other one, a request's).
#[path = "tenant_scope.rs"]
pub mod scope;
#[cfg(feature = "testing")]
pub mod testing;

pub use tenancy::report;

pub use citus::{CitusNode, MoveReport, Placement, RebalanceReport, TransferMode};
#[cfg(feature = "tls")]
pub use connect::TlsHandshake;
pub use connect::{ConnectionSettings, SslMode, TlsConnector, DATABASE_URL};
pub use error::{Error, ErrorKind, Result};
pub use host::{Host, HostError, HostErrorKind, HostKind, MAX_HOST_LEN, MAX_LABEL_LEN};
pub use migrate::{
    Baselined, Drift, DryRun, Migration, MigrationReport, Outcome, Progress, RunOptions,
    SchemaReport, SchemaStatus, TenantMigrations, HISTORY_TABLE, NO_TRANSACTION_MARKER,
};
pub use receipt::{ErasureReceipt, SchemaUsage, ShardMoveReport, TableRows};
pub use registry::{DoctorReport, DropSchema, Finding, ImportSource, NewTenant, Registry, CHANNEL};
pub use report::{ReportOptions, SCHEMA_PLACEHOLDER};
pub use resolve::{
    CacheConfig, CachedResolver, RegistryResolver, StaticResolver, SubdomainResolver,
    TenantResolver,
};
pub use roles::{TenantRoles, DEFAULT_TENANT_GROUP};
pub use router::{
    ConnectionScope, RouterStats, SchemaRouter, SchemaRouterBuilder, SearchPathMode,
    TenantTransaction, ToScopedStatement,
};
pub use schema::{SchemaName, SchemaNameError, MAX_SCHEMA_NAME_LEN};
pub use shard::{ShardName, DEFAULT_SHARD};
pub use tenancy::{EraseOptions, ImportDryRun, Tenancy, TenancyBuilder, TenantEvent};
pub use tenant::{
    Tenant, TenantClaim, TenantId, TenantLimits, TenantRecord, TenantRef, TenantStatus,
};

/// Re-exported so implementing [`TenantResolver`] needs no extra dependency.
pub use async_trait::async_trait;
/// The pool this crate works with, re-exported so versions match.
pub use deadpool_postgres;
/// The driver this crate works with, re-exported so versions match.
pub use tokio_postgres;
