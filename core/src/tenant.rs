//! The tenant a request belongs to.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::schema::SchemaName;
use crate::shard::ShardName;

/// The registry's id of a tenant.
pub type TenantId = i64;

/// A tenant: the schema its data lives in, and what the registry knows of it.
///
/// Cheap to clone. Resolvers return it, the scope carries it, handlers read it.
///
/// ```
/// use tenant_schemas::{SchemaName, Tenant};
///
/// let acme = Tenant::new(SchemaName::new("acme").unwrap()).with_name("Acme Inc.");
/// assert_eq!(acme.schema().as_str(), "acme");
/// assert_eq!(acme.name(), "Acme Inc.");
/// assert_eq!(acme.id(), None); // not from the registry
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Tenant {
    schema: SchemaName,
    name: Arc<str>,
    id: Option<TenantId>,
    #[cfg_attr(feature = "serde", serde(default))]
    shard: ShardName,
    status: TenantStatus,
    #[cfg_attr(feature = "serde", serde(default))]
    max_connections: Option<u32>,
    #[cfg_attr(feature = "serde", serde(default))]
    statement_timeout_ms: Option<u32>,
    /// Role mode: its role as the registry has it. Never trusted from a value made or
    /// deserialized elsewhere: the checkout reads the registry's.
    #[cfg_attr(feature = "serde", serde(skip))]
    role: Option<Arc<str>>,
}

impl Tenant {
    /// A tenant living in `schema`, named after it.
    #[must_use]
    pub fn new(schema: SchemaName) -> Self {
        Self {
            name: schema.shared(),
            schema,
            id: None,
            shard: ShardName::DEFAULT,
            status: TenantStatus::Active,
            max_connections: None,
            statement_timeout_ms: None,
            role: None,
        }
    }

    /// The public tenant: the main site, living in `public`.
    #[must_use]
    pub fn public() -> Self {
        Self::new(SchemaName::public())
    }

    /// Sets the display name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Role mode: the tenant's role, as the registry has it (`None` otherwise, or for a
    /// tenant not read from the registry). See [`TenantRoles`](crate::TenantRoles).
    #[must_use]
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }

    pub(crate) fn with_role(mut self, role: Option<&str>) -> Self {
        self.role = role.map(Arc::from);
        self
    }

    /// Sets the registry id.
    #[must_use]
    pub fn with_id(mut self, id: TenantId) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the database (shard) the tenant lives on (by default, the default database).
    #[must_use]
    pub fn with_shard(mut self, shard: impl Into<ShardName>) -> Self {
        self.shard = shard.into();
        self
    }

    /// Sets its state (by default [`TenantStatus::Active`]). A router with the registry's
    /// states serves the tenant in the stricter of this and the registry's state (see
    /// [`checkout`](crate::checkout)).
    #[must_use]
    pub fn with_status(mut self, status: TenantStatus) -> Self {
        self.status = status;
        self
    }

    /// Its state: how requests for it are answered and whether its sessions may write.
    #[must_use]
    pub fn status(&self) -> TenantStatus {
        self.status
    }

    /// Sets its own connection limit (`None`: the tenancy's
    /// [default](crate::TenantLimits::max_connections)). Only the registry's value counts
    /// at checkout ([`Tenancy::set_max_connections`](crate::Tenancy::set_max_connections)).
    #[must_use]
    pub fn with_max_connections(mut self, limit: Option<u32>) -> Self {
        self.max_connections = limit.map(|n| n.max(1));
        self
    }

    /// Its own connection limit, when the registry has one.
    #[must_use]
    pub fn max_connections(&self) -> Option<u32> {
        self.max_connections
    }

    /// Sets its own `statement_timeout` (`None`: the tenancy's
    /// [default](crate::TenantLimits::statement_timeout)), in whole milliseconds (at least
    /// 10). Only the registry's value counts at checkout
    /// ([`Tenancy::set_statement_timeout`](crate::Tenancy::set_statement_timeout)).
    #[must_use]
    pub fn with_statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout_ms = timeout.map(duration_ms);
        self
    }

    /// Its own `statement_timeout`, when the registry has one.
    #[must_use]
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.statement_timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
    }

    /// The database (shard) the tenant lives on.
    #[must_use]
    pub fn shard(&self) -> &ShardName {
        &self.shard
    }

    /// The schema the tenant's data lives in.
    #[must_use]
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// The display name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The registry id, when the tenant came from the registry.
    #[must_use]
    pub fn id(&self) -> Option<TenantId> {
        self.id
    }

    /// Whether this is the public tenant.
    #[must_use]
    pub fn is_public(&self) -> bool {
        self.schema.is_public()
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("schema", &self.schema.as_str())
            .field("name", &&*self.name)
            .field("id", &self.id)
            .field("shard", &self.shard)
            .field("status", &self.status)
            .finish()
    }
}

/// How much of the shared pool one tenant may take at a time, so one tenant's flood of slow
/// requests cannot take every connection from the others (see
/// [`TenancyBuilder::tenant_limits`](crate::TenancyBuilder::tenant_limits)). Limits count
/// checkouts in this process, through every router and driver of one
/// [`Tenancy`](crate::Tenancy).
///
/// ```
/// use std::time::Duration;
/// use tenant_schemas::TenantLimits;
///
/// let limits = TenantLimits::new()
///     .max_connections(4) // at most 4 of the pool's connections for one tenant
///     .max_waiting(16) // at most 16 more checkouts waiting for one of those
///     .max_wait(Duration::from_secs(2)); // each waiting at most 2 s
/// assert_eq!(limits.get_max_connections(), Some(4));
/// assert_eq!(TenantLimits::new().get_max_connections(), None); // no limit
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct TenantLimits {
    max_connections: Option<u32>,
    max_waiting: Option<u32>,
    max_wait: Duration,
    statement_timeout_ms: Option<u32>,
}

/// The shortest tenant `statement_timeout`, in milliseconds. A session keeps the last
/// tenant's timeout until the next switch, whose first statement (the one that sets the next
/// tenant's) runs under it: 10 ms leaves that `SET` room even on a loaded server.
pub(crate) const MIN_STATEMENT_TIMEOUT_MS: u32 = 10;

/// A duration in whole milliseconds as PostgreSQL's `statement_timeout` takes it: at least
/// [`MIN_STATEMENT_TIMEOUT_MS`] (zero would mean no timeout), at most `i32::MAX`.
pub(crate) fn duration_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis())
        .unwrap_or(u32::MAX)
        .clamp(MIN_STATEMENT_TIMEOUT_MS, i32::MAX as u32)
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self::new()
    }
}

impl TenantLimits {
    /// No limit (the default).
    pub const fn new() -> Self {
        Self {
            max_connections: None,
            max_waiting: None,
            max_wait: Duration::from_secs(5),
            statement_timeout_ms: None,
        }
    }

    /// At most `n` (≥ 1) connections checked out for one tenant at a time; more checkouts
    /// wait for one of them, in their order of arrival.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = Some(n.max(1));
        self
    }

    /// At most `n` checkouts of one tenant waiting for one of its
    /// [`max_connections`](Self::max_connections); more are refused at once with
    /// [`Error::TenantBusy`](crate::Error::TenantBusy) (503 with `Retry-After` in the
    /// adapters). Unlimited by default.
    pub fn max_waiting(mut self, n: u32) -> Self {
        self.max_waiting = Some(n);
        self
    }

    /// How long a checkout waits for one of its tenant's connections before
    /// [`Error::TenantBusy`](crate::Error::TenantBusy) (default 5 s).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// The `statement_timeout` of every tenant's sessions that has none of its own
    /// ([`Tenancy::set_statement_timeout`](crate::Tenancy::set_statement_timeout)), in whole
    /// milliseconds (at least 10): one tenant's runaway query is cancelled by the server
    /// instead of holding a connection. Set in the switch's message (no extra round trip);
    /// without it, the database's or role's setting applies. The shared `public` schema
    /// asked for by name and the library's own work are not limited.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout_ms = Some(duration_ms(timeout));
        self
    }

    /// The default `statement_timeout` of tenants' sessions, if any.
    #[must_use]
    pub fn get_statement_timeout(&self) -> Option<Duration> {
        self.statement_timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
    }

    /// The per-tenant connection limit, if any.
    #[must_use]
    pub fn get_max_connections(&self) -> Option<u32> {
        self.max_connections
    }

    /// The limit of waiting checkouts, if any.
    #[must_use]
    pub fn get_max_waiting(&self) -> Option<u32> {
        self.max_waiting
    }

    /// How long a checkout waits for one of its tenant's connections.
    #[must_use]
    pub fn get_max_wait(&self) -> Duration {
        self.max_wait
    }
}

/// Which tenant a credential (a session, a token) was issued for, as the application reads
/// it from the credential: the tenant a user signed in to. A credential is only good for
/// that tenant: presented on another tenant's host (a session cookie shared across
/// subdomains, a token copied from one site to another) it is refused, the classic
/// cross-tenant session reuse. See
/// [`RequestResolverBuilder::credential_tenant`](crate::request::RequestResolverBuilder::credential_tenant)
/// (every request, every adapter) and [`scope::check_claim`](crate::scope::check_claim)
/// (in a handler, once the application has loaded its session).
///
/// ```
/// use tenant_schemas::{SchemaName, Tenant, TenantClaim};
///
/// let acme = Tenant::new(SchemaName::new("acme")?).with_id(7);
/// assert!(TenantClaim::Schema(SchemaName::new("acme")?).matches(&acme));
/// assert!(TenantClaim::Id(7).matches(&acme));
/// assert!(!TenantClaim::Schema(SchemaName::new("globex")?).matches(&acme));
/// // A tenant not read from the registry has no id: an id never matches it.
/// assert!(!TenantClaim::Id(7).matches(&Tenant::new(SchemaName::new("acme")?)));
/// # Ok::<(), tenant_schemas::SchemaNameError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TenantClaim {
    /// Issued for the tenant in this schema.
    Schema(SchemaName),
    /// Issued for the tenant with this registry id (an id survives a schema rename; a
    /// tenant deleted and re-created under the same schema gets a new one).
    Id(TenantId),
}

impl TenantClaim {
    /// Whether the credential was issued for `tenant`.
    #[must_use]
    pub fn matches(&self, tenant: &Tenant) -> bool {
        match self {
            Self::Schema(schema) => schema == tenant.schema(),
            Self::Id(id) => tenant.id() == Some(*id),
        }
    }
}

impl fmt::Display for TenantClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Schema(schema) => write!(f, "schema `{schema}`"),
            Self::Id(id) => write!(f, "tenant id {id}"),
        }
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.schema.as_str())
    }
}

/// A registered tenant's state: whether and how it is served.
///
/// | state | requests (every adapter) | its connections |
/// |---|---|---|
/// | `Active` | served | read and write |
/// | `ReadOnly` | served | `default_transaction_read_only`: writes fail with [`Error::TenantReadOnly`](crate::Error::TenantReadOnly) (403) |
/// | `Maintenance` | 503 with `Retry-After` | — |
/// | `Suspended` | 403 (configurable: [`suspended_status`](crate::request::RequestResolverBuilder::suspended_status)) | — |
/// | `Archived` | 404, as an unknown host; the schema is kept | — |
///
/// Changed with [`Tenancy::set_status`](crate::Tenancy::set_status): every instance
/// listening for changes follows within moments. Connections are checked out in the state
/// the registry has, not the one a [`Tenant`] value carries (see
/// [`checkout`](crate::checkout)): a value built with [`Tenant::with_status`] can only be
/// stricter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
#[non_exhaustive]
pub enum TenantStatus {
    /// Served normally.
    Active,
    /// Served, but its sessions cannot write.
    ReadOnly,
    /// Not served for a while: requests are answered 503 with `Retry-After`.
    Maintenance,
    /// Not served: requests are answered 403 (or the configured status).
    Suspended,
    /// Not served and not found: requests are answered 404; the schema is kept.
    Archived,
}

impl TenantStatus {
    /// Every state, in the order above.
    pub const ALL: [Self; 5] = [
        Self::Active,
        Self::ReadOnly,
        Self::Maintenance,
        Self::Suspended,
        Self::Archived,
    ];

    /// The value stored in the registry (`active`, `read_only`, `maintenance`, `suspended`,
    /// `archived`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::ReadOnly => "read_only",
            Self::Maintenance => "maintenance",
            Self::Suspended => "suspended",
            Self::Archived => "archived",
        }
    }

    /// Whether requests for the tenant are served (active or read-only).
    #[must_use]
    pub fn is_served(self) -> bool {
        matches!(self, Self::Active | Self::ReadOnly)
    }

    /// A value read from the registry; one this version does not know (written by a newer
    /// one) is taken as [`Suspended`](Self::Suspended): not served, rather than served wrongly.
    pub(crate) fn from_db(value: &str) -> Self {
        value.parse().unwrap_or(Self::Suspended)
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for TenantStatus {
    type Err = String;

    /// Parses a state as stored (`read_only`) or as typed on a command line (`read-only`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normalized = s.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == normalized)
            .ok_or_else(|| {
                format!(
                    "unknown tenant state `{s}` (one of: active, read-only, maintenance, suspended, archived)"
                )
            })
    }
}

/// A tenant as the registry holds it, with its domains.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TenantRecord {
    /// The registry id.
    pub id: TenantId,
    /// The tenant's schema.
    pub schema: SchemaName,
    /// The display name.
    pub name: String,
    /// When the tenant was created.
    pub created_at: SystemTime,
    /// Its state: whether and how it is served.
    pub status: TenantStatus,
    /// How many tenant migrations its schema has applied.
    pub version: i32,
    /// Its domains; the primary one first.
    pub domains: Vec<String>,
    /// The database (shard) its schema lives on ([`ShardName::DEFAULT`] for the registry's
    /// own).
    #[cfg_attr(feature = "serde", serde(default))]
    pub shard: ShardName,
    /// Its own connection limit, over the tenancy's default
    /// ([`Tenancy::set_max_connections`](crate::Tenancy::set_max_connections)).
    #[cfg_attr(feature = "serde", serde(default))]
    pub max_connections: Option<u32>,
    /// Its storage quota in bytes ([`Tenancy::set_storage_quota`](crate::Tenancy::set_storage_quota)).
    #[cfg_attr(feature = "serde", serde(default))]
    pub storage_quota: Option<u64>,
    /// Its own `statement_timeout`, over the tenancy's default
    /// ([`Tenancy::set_statement_timeout`](crate::Tenancy::set_statement_timeout)).
    #[cfg_attr(feature = "serde", serde(default))]
    pub statement_timeout: Option<Duration>,
    /// Role mode: its own role ([`TenantRoles`](crate::TenantRoles)), `None` before it has one.
    #[cfg_attr(feature = "serde", serde(default))]
    pub role: Option<String>,
}

impl TenantRecord {
    /// The tenant as resolvers and scopes carry it.
    #[must_use]
    pub fn tenant(&self) -> Tenant {
        Tenant::new(self.schema.clone())
            .with_name(self.name.as_str())
            .with_id(self.id)
            .with_shard(&self.shard)
            .with_status(self.status)
            .with_max_connections(self.max_connections)
            .with_statement_timeout(self.statement_timeout)
            .with_role(self.role.as_deref())
    }

    /// The primary domain, if the tenant has any domain.
    pub fn primary_domain(&self) -> Option<&str> {
        self.domains.first().map(String::as_str)
    }
}

/// A registered tenant as a background job carries it: its registry id, its schema and the
/// database (shard) it lives on. Small, cheap to clone, and (feature `serde`) serializable as
/// `{"id": 7, "schema": "acme", "shard": "default"}`; a schema name that fails validation
/// is a deserialize error.
///
/// Made with [`Tenant::to_ref`] (a tenant from the registry: the one in a request's scope)
/// or from a [`TenantRecord`]; restored with [`Tenancy::run_ref`](crate::Tenancy::run_ref).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TenantRef {
    pub(crate) id: TenantId,
    pub(crate) schema: SchemaName,
    #[cfg_attr(feature = "serde", serde(default))]
    pub(crate) shard: ShardName,
}

impl TenantRef {
    /// The tenant with registry id `id`, in `schema` on database `shard`, e.g. read back
    /// from a job queue's own columns.
    #[must_use]
    pub fn new(id: TenantId, schema: SchemaName, shard: impl Into<ShardName>) -> Self {
        Self {
            id,
            schema,
            shard: shard.into(),
        }
    }

    /// The tenant's registry id.
    #[must_use]
    pub fn id(&self) -> TenantId {
        self.id
    }

    /// The tenant's schema when the reference was made.
    #[must_use]
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// The database (shard) the tenant lived on when the reference was made.
    #[must_use]
    pub fn shard(&self) -> &ShardName {
        &self.shard
    }
}

impl fmt::Display for TenantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (id {}", self.schema, self.id)?;
        if !self.shard.is_default() {
            write!(f, ", database {}", self.shard)?;
        }
        f.write_str(")")
    }
}

impl From<&TenantRecord> for TenantRef {
    fn from(record: &TenantRecord) -> Self {
        Self::new(record.id, record.schema.clone(), &record.shard)
    }
}
