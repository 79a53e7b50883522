#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod connect;
mod databases;
mod doctor;
mod error;
mod host;
mod jobs;
mod migrate;
mod registry;
mod resolve;
mod router;
mod schema;
#[cfg(feature = "serde")]
mod serde_support;
mod sql;
mod tenancy;
mod tenant;

pub mod citus;
pub mod keys;
pub mod report;
pub mod request;
pub mod scope;
#[cfg(feature = "testing")]
pub mod testing;

pub use citus::{CitusNode, MoveReport, Placement, RebalanceReport, TransferMode};
#[cfg(feature = "tls")]
pub use connect::TlsHandshake;
pub use connect::{ConnectionSettings, SslMode, TlsConnector, DATABASE_URL};
pub use databases::{ShardName, DEFAULT_SHARD};
pub use doctor::{DoctorReport, Finding};
pub use error::{Error, ErrorKind, Result};
pub use host::{Host, HostError, HostErrorKind, HostKind, MAX_HOST_LEN, MAX_LABEL_LEN};
pub use jobs::TenantRef;
pub use migrate::{
    Baselined, Migration, MigrationReport, Outcome, Progress, RunOptions, SchemaReport,
    TenantMigrations, HISTORY_TABLE, NO_TRANSACTION_MARKER,
};
pub use registry::{DropSchema, ImportSource, NewTenant, Registry, CHANNEL};
pub use report::{ReportOptions, SCHEMA_PLACEHOLDER};
pub use resolve::{
    CacheConfig, CachedResolver, RegistryResolver, StaticResolver, SubdomainResolver,
    TenantResolver,
};
pub use router::{
    ConnectionScope, RouterStats, SchemaRouter, SchemaRouterBuilder, SearchPathMode,
    TenantTransaction, ToScopedStatement,
};
pub use schema::{SchemaName, SchemaNameError, MAX_SCHEMA_NAME_LEN};
pub use tenancy::{Tenancy, TenancyBuilder, TenantEvent};
pub use tenant::{Tenant, TenantId, TenantRecord, TenantStatus};

/// Re-exported so implementing [`TenantResolver`] needs no extra dependency.
pub use async_trait::async_trait;
/// The pool this crate works with, re-exported so versions match.
pub use deadpool_postgres;
/// The driver this crate works with, re-exported so versions match.
pub use tokio_postgres;
