//! The checkout: the one place where a tenant becomes a connection.
//!
//! Whatever brought a tenant into scope — a resolver from the registry, a
//! [`StaticResolver`](crate::StaticResolver) or [`SubdomainResolver`](crate::SubdomainResolver),
//! [`Tenant::new`], [`scope::run_in_schema`](crate::scope::run_in_schema), a background job —
//! its *state* is not taken from the [`Tenant`] value someone built. When the router has the
//! registry's [`TenantStates`] (every router a [`Tenancy`](crate::Tenancy) makes does), the
//! checkout reads the tenant's state from the registry (cached by schema name, and forgotten
//! when the registry changes: at once in this process, within moments in every process
//! listening for changes, and after the cache's
//! [negative TTL](crate::CacheConfig::negative_ttl) otherwise):
//!
//! | the registry has | the `Tenant` value | the checkout |
//! |---|---|---|
//! | a row in a state that is not served | anything | [`Error::TenantNotServed`] with the registry's state |
//! | a row, served | not served | [`Error::TenantNotServed`] with the value's state (the stricter one wins) |
//! | a row, read-only | anything served | read-only: writes fail with [`Error::TenantReadOnly`] |
//! | a row, active | read-only | read-only (the stricter one wins) |
//! | a row on another database (shard) than the value's | anything | [`Error::SchemaMissing`]: a schema of that name on the value's database is not this tenant's |
//! | a row with another id than the value's | from the registry (has an id) | [`Error::TenantGone`]: the tenant it was resolved to was deleted and the schema re-used |
//! | no row | from the registry (has an id) | [`Error::SchemaMissing`]: its tenant was deleted or renamed since it was resolved |
//! | no row | without an id (`Tenant::new`, a resolver that invents tenants) | served as the value says, if the schema exists ([`Error::SchemaMissing`] otherwise) |
//!
//! The shared `public` schema asked for by name ([`SchemaRouter::public`],
//! [`SchemaRouter::connection_for_schema`] with `public`) is always served read and write; the public
//! *tenant* in scope (the main site's requests) is checked like any other tenant.
//!
//! A router without the registry's states — [`SchemaRouter::new`] over a pool, with no
//! [`SchemaRouterBuilder::tenant_states`] — has no states to read: it serves a tenant in the
//! state its [`Tenant`] value carries (its application decides the states). Attach the
//! states of the [`Tenancy`](crate::Tenancy) with
//! [`Tenancy::tenant_states`](crate::Tenancy::tenant_states) when building such a router over
//! the same database.
//!
//! Besides the state, the checkout takes the schema's gate (which deletion and rename honour),
//! and the switch checks the schema's existence; see [`SchemaRouter`].
//!
//! # For drivers that hand out a raw connection
//!
//! A driver that cannot see the statements sent through the connections it hands out (sqlx
//! hands out a `&mut PgConnection`) translates this protocol with [`DriverCheckout`]:
//! [`DriverCheckout::begin`] reads the state as above and registers the checkout with the
//! schema's gate for the connection's whole life; the driver switches (with the existence
//! check, and `default_transaction_read_only` as [`DriverCheckout::read_only`] says) and
//! tells it the connection's backend with [`DriverCheckout::attach_backend`]. A deletion or
//! schema rename through [`Tenancy`](crate::Tenancy) in this process waits for such
//! checkouts to end, for at most its grace period
//! ([`TenancyBuilder::held_connection_grace`](crate::TenancyBuilder::held_connection_grace)),
//! then terminates their backends (`pg_terminate_backend`): a connection held across a
//! deletion can afterwards reach nothing, neither the dropped schema's name nor `public`.
//!
//! [`SchemaRouter`]: crate::SchemaRouter
//! [`SchemaRouter::new`]: crate::SchemaRouter::new
//! [`SchemaRouter::public`]: crate::SchemaRouter::public
//! [`SchemaRouter::connection_for_schema`]: crate::SchemaRouter::connection_for_schema
//! [`SchemaRouterBuilder::tenant_states`]: crate::SchemaRouterBuilder::tenant_states

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::leftovers::{LEFT_OBJECTS, SESSION_RESETS};
use crate::registry::Registry;
use crate::resolve::CoherentCache;
use crate::router::session::{self, NameRef};
use crate::schema::SchemaName;
use crate::tenant::{Tenant, TenantLimits, TenantStatus};

/// The tenants' states as the registry holds them, cached by schema name and kept coherent
/// with the registry by the [`Tenancy`](crate::Tenancy) that made it (its changes, and those
/// its change listener hears).
///
/// Cheap to clone. Get it from [`Tenancy::tenant_states`](crate::Tenancy::tenant_states);
/// give it to a router built by hand with
/// [`SchemaRouterBuilder::tenant_states`](crate::SchemaRouterBuilder::tenant_states).
#[derive(Clone)]
pub struct TenantStates {
    by_schema: CoherentCache<SchemaName, Option<Tenant>>,
    registry: Registry,
    limits: TenantLimits,
    slots: Arc<Mutex<HashMap<SchemaName, Arc<TenantSlots>>>>,
}

/// A tenant's share of the pool at one moment ([`TenantStates::usage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantUsage {
    /// Its connection limit ([`TenantLimits::max_connections`]).
    pub limit: u32,
    /// Connections checked out for it.
    pub in_use: u32,
    /// Checkouts waiting for one of them.
    pub waiting: u32,
}

/// The limit of a tenant without one: its checkouts are counted, never refused.
const UNLIMITED: u32 = 1 << 28;

/// One tenant's share of the pool under [`TenantLimits`]: its connections, and how many
/// checkouts wait for one.
#[derive(Debug)]
struct TenantSlots {
    permits: Arc<Semaphore>,
    /// The limit, and the permits still to forget when they come back (a limit lowered
    /// while they were held): one lock, so a permit returned while the limit changes is
    /// counted once.
    size: Mutex<SlotSize>,
    waiting: AtomicU32,
}

#[derive(Debug)]
struct SlotSize {
    limit: u32,
    owed: u32,
}

impl TenantSlots {
    fn new(limit: u32) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(limit as usize)),
            size: Mutex::new(SlotSize { limit, owed: 0 }),
            waiting: AtomicU32::new(0),
        })
    }

    fn size(&self) -> std::sync::MutexGuard<'_, SlotSize> {
        self.size.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn limit(&self) -> u32 {
        self.size().limit
    }

    /// Changes the limit, the connections held counting against the new one: raised, the
    /// difference is added (less what lowering left owed); lowered, free permits are
    /// forgotten and the rest as held ones come back.
    fn resize(&self, limit: u32) {
        let mut size = self.size();
        if limit > size.limit {
            let more = limit - size.limit;
            let paid = more.min(size.owed);
            size.owed -= paid;
            self.permits.add_permits((more - paid) as usize);
        } else {
            let fewer = size.limit - limit;
            let forgotten =
                u32::try_from(self.permits.forget_permits(fewer as usize)).unwrap_or(fewer);
            size.owed += fewer - forgotten.min(fewer);
        }
        size.limit = limit;
    }

    /// Connections held under the limit.
    fn in_use(&self) -> u32 {
        let size = self.size();
        let free = u32::try_from(self.permits.available_permits()).unwrap_or(u32::MAX);
        (size.limit + size.owed).saturating_sub(free)
    }
}

/// A checkout's share of its tenant's connections ([`TenantLimits::max_connections`]),
/// held as long as the connection: a permit of the tenant's semaphore, forgotten when it
/// comes back if the limit was lowered meanwhile.
#[derive(Debug)]
pub(crate) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<TenantSlots>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, slots: &Arc<TenantSlots>) -> Self {
        Self {
            permit: Some(permit),
            slots: slots.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut size = self.slots.size();
        if let Some(permit) = self.permit.take() {
            if size.owed > 0 {
                size.owed -= 1;
                permit.forget();
            } else {
                drop(permit);
            }
        }
    }
}

/// Counts a checkout waiting for its tenant's slot while it waits.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for TenantStates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantStates")
            .field("cached", &self.by_schema.entry_count())
            .finish_non_exhaustive()
    }
}

impl TenantStates {
    pub(crate) fn new(
        by_schema: CoherentCache<SchemaName, Option<Tenant>>,
        registry: Registry,
        limits: TenantLimits,
    ) -> Self {
        Self {
            by_schema,
            registry,
            limits,
            slots: Arc::default(),
        }
    }

    /// The limits every tenant's checkouts are held to
    /// ([`TenancyBuilder::tenant_limits`](crate::TenancyBuilder::tenant_limits)).
    pub fn limits(&self) -> TenantLimits {
        self.limits
    }

    /// `schema`'s share of the pool right now: connections checked out under its limit and
    /// checkouts waiting for one (`None` without a limit, or before its first checkout).
    #[must_use]
    pub fn usage(&self, schema: &SchemaName) -> Option<TenantUsage> {
        let slots = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(schema)
            .cloned()?;
        if slots.limit() == UNLIMITED {
            return None;
        }
        Some(TenantUsage {
            limit: slots.limit(),
            in_use: slots.in_use(),
            waiting: slots.waiting.load(Ordering::Relaxed),
        })
    }

    /// A share of `schema`'s connections under the limits: at once when one is free, else
    /// after the checkouts that waited before it (at most [`TenantLimits::max_wait`]), or
    /// [`Error::TenantBusy`]. A tenant without a limit gets a share that is always free,
    /// counted so that a limit set while it holds connections counts them. The public
    /// tenant (the main site) is limited like the others; the shared `public` schema asked
    /// for by name never comes here ([`admit_by_name`]).
    async fn slot(&self, schema: &SchemaName, own: Option<u32>) -> Result<Option<Slot>> {
        let limit = own
            .or(self.limits.get_max_connections())
            .map_or(UNLIMITED, |limit| limit.min(UNLIMITED));
        let slots = {
            let mut all = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let slots = all
                .entry(schema.clone())
                .or_insert_with(|| TenantSlots::new(limit));
            if slots.limit() != limit {
                // The limit changed: the connections held count against the new one.
                slots.resize(limit);
            }
            slots.clone()
        };
        // While others wait, tokio hands released permits to them first: no overtaking.
        if let Ok(permit) = slots.permits.clone().try_acquire_owned() {
            return Ok(Some(Slot::new(permit, &slots)));
        }
        let busy = || Error::TenantBusy {
            schema: schema.clone(),
            limit: slots.limit(),
        };
        let before = slots.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&slots.waiting);
        if self
            .limits
            .get_max_waiting()
            .is_some_and(|max| before >= max)
        {
            return Err(busy());
        }
        match tokio::time::timeout(
            self.limits.get_max_wait(),
            slots.permits.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(Some(Slot::new(permit, &slots))),
            _ => Err(busy()),
        }
    }

    /// The registered tenant living in `schema`, with its state; `None` when the registry
    /// has no tenant there. A lookup that raced an invalidation of the schema is not cached.
    pub async fn registered(&self, schema: &SchemaName) -> Result<Option<Tenant>> {
        let registry = &self.registry;
        self.by_schema
            // Boxed: the registry's query (kilobytes of future) runs only on a miss, and
            // would otherwise be moved with every checkout's future.
            .get_or_try_insert_with(schema, || {
                Box::pin(async move { registry.tenant_in(schema).await })
            })
            .await
            .map(|(tenant, _)| tenant)
            .map_err(|source| Error::Lookup {
                key: schema.to_string(),
                source,
            })
    }

    /// The state `tenant` is served in, read from the registry (see the [module](self)):
    /// [`TenantStatus::Active`] or [`TenantStatus::ReadOnly`], or the error that refuses it.
    pub async fn admit(&self, tenant: &Tenant) -> Result<TenantStatus> {
        let registered = self.registered(tenant.schema()).await?;
        admit(tenant, Some(registered.as_ref()))
    }
}

/// A driver's checkout of a tenant's schema (see the [module](self)): the state it is served
/// in, and its registration with the schema's gate, held until it is dropped. Keep it beside
/// the connection it was made for, and drop it with it.
#[derive(Debug)]
#[must_use = "the checkout is registered only while it lives"]
pub struct DriverCheckout {
    schema: SchemaName,
    status: TenantStatus,
    hold: Arc<Hold>,
    _name: NameRef,
    /// The tenant's share of the pool under its limits (see [`TenantLimits`]).
    _slot: Option<Slot>,
    /// Its sessions' `statement_timeout` in milliseconds, if it has one.
    statement_timeout_ms: Option<u32>,
    /// Role mode: its role, quoted.
    role: Option<Arc<str>>,
    /// See [`Admission::guard_statements`].
    guard_statements: bool,
}

/// One driver checkout as deletions see it.
#[derive(Debug, Default)]
struct Hold {
    state: Mutex<HoldState>,
}

#[derive(Debug, Default)]
struct HoldState {
    /// The backend process of the connection, once the driver attached it.
    pid: Option<i32>,
    /// A deletion or rename of the schema gave up waiting and terminated the backend (or
    /// would have, had it been attached).
    cut_off: bool,
}

/// The driver checkouts alive, by schema name; [`RELEASED`] is told when one ends.
static HOLDS: LazyLock<Mutex<HashMap<SchemaName, Vec<Arc<Hold>>>>> =
    LazyLock::new(Default::default);
static RELEASED: LazyLock<Notify> = LazyLock::new(Notify::new);

fn holds() -> std::sync::MutexGuard<'static, HashMap<SchemaName, Vec<Arc<Hold>>>> {
    HOLDS.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DriverCheckout {
    /// Admits `tenant` (its state read from `states`, the registry's, when given; from the
    /// value otherwise, see the [module](self)) and registers the checkout with its schema's
    /// gate: waits while a deletion or rename of the schema runs in this process
    /// ([`Error::SchemaMissing`] if it does not end within 10 s). The public *tenant* (the
    /// main site's requests, [`Tenant::public`] in scope) is checked like any other; for the
    /// shared `public` schema asked for by name, use [`begin_for_schema`](Self::begin_for_schema).
    ///
    /// Under the tenancy's [`TenantLimits`] it then waits for a share of the tenant's
    /// connections, held as long as the checkout ([`Error::TenantBusy`] when it cannot).
    pub async fn begin(states: Option<&TenantStates>, tenant: &Tenant) -> Result<Self> {
        let admission = admit_tenant(states, tenant).await?;
        Ok(Self::register(tenant.schema().clone(), admission.status)
            .await?
            .holding(admission))
    }

    /// The checkout of a schema asked for by name, as
    /// [`SchemaRouter::connection_for_schema`](crate::SchemaRouter::connection_for_schema)
    /// makes it: the shared `public` schema read and write whatever the public tenant's state,
    /// another schema in the state the registry has for it (see [`begin`](Self::begin)).
    pub async fn begin_for_schema(
        states: Option<&TenantStates>,
        schema: &SchemaName,
    ) -> Result<Self> {
        let admission = admit_by_name(states, schema).await?;
        Ok(Self::register(schema.clone(), admission.status)
            .await?
            .holding(admission))
    }

    fn holding(mut self, admission: Admission) -> Self {
        self._slot = admission.slot;
        self.statement_timeout_ms = admission.statement_timeout_ms;
        self.role = admission.role;
        self.guard_statements = admission.guard_statements;
        self
    }

    /// Registers a checkout of `schema`, admitted in `status`, with the schema's gate (see
    /// [`begin`](Self::begin)); also for the core's own handles that cannot see what runs
    /// on them (a [`ConnectionScope`](crate::ConnectionScope)'s raw client).
    pub(crate) async fn register(schema: SchemaName, status: TenantStatus) -> Result<Self> {
        // Registered while the gate is held shared: a deletion that closes the gate after
        // this finds the registration, one that closed it before has ended when this runs.
        let (name, entered) = session::enter_name(&schema).await?;
        let hold = Arc::new(Hold::default());
        holds()
            .entry(schema.clone())
            .or_default()
            .push(hold.clone());
        drop(entered);
        Ok(Self {
            schema,
            status,
            hold,
            _name: name,
            _slot: None,
            statement_timeout_ms: None,
            role: None,
            guard_statements: false,
        })
    }

    /// The schema checked out.
    #[must_use]
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// The state the tenant is served in: [`TenantStatus::Active`] or
    /// [`TenantStatus::ReadOnly`].
    #[must_use]
    pub fn status(&self) -> TenantStatus {
        self.status
    }

    /// Whether the session must be made read-only (`default_transaction_read_only`).
    #[must_use]
    pub fn read_only(&self) -> bool {
        self.status == TenantStatus::ReadOnly
    }

    /// The tenant's `statement_timeout` ([`TenantLimits::statement_timeout`], or its own in
    /// the registry), which a driver sets with the switch: `None` when it has none.
    #[must_use]
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.statement_timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
    }

    /// The value a session-mode switch gives `statement_timeout`: the tenant's in
    /// milliseconds, `DEFAULT` (the database's or role's) once any tenant's sessions had
    /// one in this process, or `None` (left as it is: nothing set it).
    #[must_use]
    pub fn statement_timeout_setting(&self) -> Option<String> {
        timeout_setting(self.statement_timeout_ms)
    }

    /// Role mode ([`TenantRoles`](crate::TenantRoles)): the tenant's role, quoted as an
    /// identifier, which a driver sets with the switch (`SET ROLE`, `SET LOCAL ROLE` in a
    /// transaction). `None` for the public tenant, the shared `public` schema by name, and
    /// without role mode.
    #[must_use]
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }

    /// Whether a named statement prepared on a pooled connection outside this checkout may
    /// run for it: not when the tenancy gives its tenants roles ([`TenantRoles`](crate::TenantRoles);
    /// for all its checkouts, the public tenant's included), unless it keeps statements
    /// across tenants
    /// ([`TenantRoles::keep_statements_across_tenants`](crate::TenantRoles::keep_statements_across_tenants)).
    /// Then only a statement the driver prepared for this checkout, or for an earlier one of
    /// the same schema with no other schema's checkout in between, may.
    ///
    /// A prepared statement belongs to the session, not to a role: another tenant's SQL — a
    /// function's dynamic SQL, where no SQL reader sees it — can list the session's
    /// statements (`pg_prepared_statements`), `DEALLOCATE` one by name and `PREPARE` its own
    /// text under the same name, which this checkout's next `Bind` of the name would run under
    /// its role and on its path (an unqualified text is analysed again there). So in role mode
    /// a driver closes, by name, the statements another schema's checkout could have replaced
    /// before it uses any, prepares its own switch afresh each time rather than by SQL
    /// `PREPARE` once per connection, and names nothing a pooler keeps on its server
    /// connections. Without roles nothing but the SQL reader separates tenants, and SQL that
    /// could do this could write anywhere itself.
    #[must_use]
    pub fn may_share_statements(&self) -> bool {
        !self.guard_statements
    }

    /// The role statement of a session-mode switch: `SET ROLE <role>` in role mode, `RESET
    /// ROLE` for a checkout without a role once any session of this process was given one
    /// (the connection may be pooled under a tenant's), `None` otherwise.
    #[must_use]
    pub fn role_setting(&self) -> Option<String> {
        role_setting(self.role.as_deref())
    }

    /// The role statement of a transaction-mode switch, inside the transaction: `SET LOCAL
    /// ROLE <role>`, or `SET LOCAL ROLE NONE` without one once roles were seen.
    #[must_use]
    pub fn local_role_setting(&self) -> Option<String> {
        local_role_setting(self.role.as_deref())
    }

    /// What a session-mode switch of a driver that does not read its users' SQL (sqlx's raw
    /// connections) sends first, in the same message as the rest of its switch, each
    /// statement followed by `; `. With `reset`: `RESET ALL` and `RESET SESSION
    /// AUTHORIZATION`, so that no setting an earlier checkout's SQL made (`SET work_mem …`,
    /// `SET app.token …`, `set_config(…, false)`, `SET SESSION AUTHORIZATION`) reaches this
    /// one.
    /// Then `statement_timeout` when
    /// [`statement_timeout_setting`](Self::statement_timeout_setting) says (before the rest:
    /// each statement runs under the timeout in force when it starts, so only the resets and
    /// this `SET` run under the last tenant's), and the [role](Self::role_setting), or `RESET
    /// ROLE` with `reset` when the checkout has none (a `SET ROLE` an earlier checkout left).
    ///
    /// `RESET ALL` returns every setting to its value at connection start: the server's,
    /// database's and role's defaults and the connection's startup options, which is where
    /// settings meant for every checkout belong (a pool's per-connection hook that runs `SET`
    /// sees them undone at the first checkout). It also resets the search path: set the
    /// tenant's again before anything that runs a prepared statement (a statement run on
    /// another path than the one it was last run on can be planned again).
    #[must_use]
    pub fn session_prefix(&self, reset: bool) -> String {
        let mut sql = String::new();
        if reset {
            for statement in SESSION_RESETS {
                sql.push_str(statement);
                sql.push_str("; ");
            }
        }
        if let Some(timeout) = self.statement_timeout_setting() {
            sql.push_str(&format!("SET statement_timeout TO {timeout}; "));
        }
        match self.role_setting() {
            Some(role) => {
                sql.push_str(&role);
                sql.push_str("; ");
            }
            None if reset => sql.push_str("RESET ROLE; "),
            None => {}
        }
        sql
    }

    /// A transaction-mode switch: the `BEGIN` (`READ ONLY` for a read-only tenant, `READ
    /// WRITE` with `reset`) and, in the same message, with `reset` the resets of
    /// [`session_prefix`](Self::session_prefix) and `RESET ROLE` (what an earlier client of
    /// the server connection set for the session — another tenant's `SET app.user_id …`, a
    /// function's `set_config(…, false)` — is undone, and the undoing commits with the
    /// transaction), then the tenant's `SET LOCAL statement_timeout` (without `reset`, when
    /// it has none, `TO DEFAULT`: a timeout the last user left must not cancel what follows),
    /// then `DISCARD TEMP` (temporary tables the server connection's last user
    /// left — another tenant's function, or another client of the pooler — would otherwise
    /// stand in for the tenant's tables: `pg_temp` is searched before the path), `CLOSE ALL`
    /// (a cursor held open past its transaction would let the tenant fetch rows the last
    /// user's query read) and `DISCARD SEQUENCES` (`lastval()` would give the last user's
    /// id), then `SET LOCAL search_path TO <path>` and in role mode the [local
    /// role](Self::local_role_setting). `path` is the search path, e.g. `"acme", public`,
    /// built from validated, quoted names.
    #[must_use]
    pub fn local_begin(&self, path: &str, reset: bool) -> String {
        format!(
            "BEGIN{}; {}",
            begin_access(self.read_only(), reset),
            local_start(path, self.statement_timeout_ms, self.role.as_deref(), reset)
        )
    }

    /// The statements a driver that does not read its users' SQL sends first on the
    /// connection, before its existence check, in the same message: the
    /// [`session_prefix`](Self::session_prefix) with its resets (`RESET ALL`, the timeout,
    /// the role), `SET search_path TO <path>`, and `default_transaction_read_only` as the
    /// state says (always set, so a read-only session never reaches the next tenant). `path`
    /// is the search path, e.g. `"acme", public`, built from validated, quoted names.
    #[must_use]
    pub fn session_settings(&self, path: &str) -> String {
        format!(
            "{}SET search_path TO {path}; SET default_transaction_read_only TO {}",
            self.session_prefix(true),
            if self.read_only() { "on" } else { "off" }
        )
    }

    /// Records the backend process (`pg_backend_pid()`) of the connection switched for this
    /// checkout, so a deletion that gives up waiting can terminate it.
    /// [`Error::SchemaMissing`] when a deletion or rename of the schema has already cut this
    /// checkout off: close the connection, it may be on a path whose schema is gone.
    pub fn attach_backend(&self, pid: i32) -> Result<()> {
        let mut state = self
            .hold
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if state.cut_off {
            return Err(Error::SchemaMissing {
                schema: self.schema.clone(),
            });
        }
        state.pid = Some(pid);
        Ok(())
    }

    /// Whether a deletion or rename of the schema cut this checkout off (its backend was
    /// terminated).
    #[must_use]
    pub fn is_cut_off(&self) -> bool {
        self.hold
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cut_off
    }
}

/// What a piece of SQL text may do beyond its own result, read as the core's router reads
/// the SQL sent through a [`ConnectionScope`](crate::ConnectionScope): a small lexer that
/// skips comments, strings and quoted names and, when in doubt, answers "may".
///
/// For drivers that see the SQL they send (SeaORM hands its driver a `Statement`): refuse
/// what a read-only tenant must not run ([`SqlEffects::refuse_read_write`]), and do
/// not trust the session after a statement that [`changes_session`](Self::changes_session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqlEffects {
    /// A statement may change session state (`SET`, `RESET`, `DISCARD`, `set_config(…)`,
    /// `DO`, `CALL`, `EXECUTE`, transaction control …): the search path and the read-only
    /// setting the checkout made can no longer be trusted afterwards.
    pub changes_session: bool,
    /// A statement begins, ends or marks a transaction (`BEGIN`, `START`, `COMMIT`, `END`,
    /// `ROLLBACK`, `ABORT`, `SAVEPOINT`, `RELEASE`, `PREPARE TRANSACTION`).
    pub controls_transaction: bool,
    /// A statement may make a read-only tenant's transaction writable (`BEGIN READ WRITE`,
    /// `SET TRANSACTION READ WRITE`, `SET SESSION CHARACTERISTICS …`, any mention of
    /// `transaction_read_only`, `DO`, `CALL`, a large-object writer …).
    pub escapes_read_only: bool,
    /// A statement may make a setting that outlives its transaction (`SET` without `LOCAL`,
    /// `RESET`, `set_config(…)` unless its last argument is `true`, a `DO` block or new
    /// function that may): behind a transaction pooler it would stay on the server
    /// connection for the next client ([`refuse_session_settings`](Self::refuse_session_settings)).
    pub outlives_transaction: bool,
    /// A statement may drop or rename a schema (`DROP SCHEMA`, `ALTER SCHEMA`, `DROP OWNED`):
    /// the tenant's own, maybe, whose unqualified names would then resolve in `public`.
    /// Verify the schema again before the next statement, and tell the process
    /// ([`schemas_changed`]) once it committed.
    pub changes_schemas: bool,
}

/// Tells every connection of this process that a schema may have been dropped or renamed:
/// each verifies its schema again before its next statement, as after a deletion through a
/// `Tenancy`. The core's router calls it after SQL it reads as [`SqlEffects::changes_schemas`];
/// a driver that sees its SQL calls it after such SQL committed.
pub fn schemas_changed() {
    crate::router::session::everything_changed();
}

impl SqlEffects {
    /// Reads `sql` (one statement or several separated by `;`). The answer for a text is
    /// remembered per thread, so a text run again is not read again.
    #[must_use]
    pub fn of(sql: &str) -> Self {
        let effects = crate::sql::effects(sql);
        Self {
            changes_session: effects.session,
            controls_transaction: effects.transaction_control,
            escapes_read_only: effects.escapes_read_only,
            outlives_transaction: effects.session_settings,
            changes_schemas: effects.changes_schemas,
        }
    }
}

impl SqlEffects {
    /// For a tenant served in `status`, refuses SQL with these effects that could make its
    /// transaction writable, before it is sent, as the core's router does
    /// ([`Error::TenantReadOnly`], 403): a `BEGIN READ WRITE` sent alone, followed by a write
    /// and a `COMMIT` in later calls, would commit. Anything is let through for a tenant
    /// served read and write.
    pub fn refuse_read_write(self, schema: &SchemaName, status: TenantStatus) -> Result<()> {
        if status == TenantStatus::ReadOnly && self.escapes_read_only {
            return Err(Error::read_only_refused(
                schema,
                "SQL that controls transactions or how they write (BEGIN, START TRANSACTION, \
                 SET TRANSACTION, SET SESSION CHARACTERISTICS, COMMIT, DO, CALL, \
                 transaction_read_only …) or a large-object writer (lo_from_bytea, lo_unlink …)",
            ));
        }
        Ok(())
    }

    /// For a driver in transaction mode (behind a transaction pooler), refuses SQL that may
    /// make a setting outliving its transaction, before it is sent, as the core's router
    /// does ([`Error::NotInTransactionMode`]).
    pub fn refuse_session_settings(self) -> Result<()> {
        if self.outlives_transaction {
            return Err(Error::session_settings_refused());
        }
        Ok(())
    }
}

impl Drop for DriverCheckout {
    fn drop(&mut self) {
        let mut holds = holds();
        if let Some(list) = holds.get_mut(&self.schema) {
            list.retain(|h| !Arc::ptr_eq(h, &self.hold));
            if list.is_empty() {
                holds.remove(&self.schema);
            }
        }
        drop(holds);
        RELEASED.notify_waiters();
    }
}

/// For a deletion or rename of `schema` that holds its gate closed: waits until no driver
/// checkout of it is alive, for at most `grace`; then cuts the remaining ones off and
/// terminates their backends through `conn` (a connection to the schema's database; only
/// backends connected to that database), waiting (up to 5 s each) until they have exited.
/// Returns how many backends it terminated.
pub(crate) async fn cut_off_drivers(
    schema: &SchemaName,
    grace: Duration,
    conn: &tokio_postgres::Client,
) -> Result<usize> {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let released = RELEASED.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if !holds().contains_key(schema) {
            return Ok(0);
        }
        if tokio::time::timeout_at(deadline, released).await.is_err() {
            break;
        }
    }
    let pids: Vec<i32> = holds()
        .get(schema)
        .map(|list| {
            list.iter()
                .filter_map(|hold| {
                    let mut state = hold.state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.cut_off = true;
                    state.pid
                })
                .collect()
        })
        .unwrap_or_default();
    if pids.is_empty() {
        return Ok(0);
    }
    tracing::warn!(%schema, backends = pids.len(), ?grace, "terminating connections still checked out for a schema being deleted or renamed");
    conn.query_typed(
        "SELECT pg_catalog.pg_terminate_backend(a.pid, 5000) FROM pg_catalog.pg_stat_activity a \
         WHERE a.pid = ANY($1::int4[]) AND a.datname = pg_catalog.current_database()",
        &[(&pids, tokio_postgres::types::Type::INT4_ARRAY)],
    )
    .await
    .map_err(|e| Error::db("terminating connections held for the schema", schema, e))?;
    Ok(pids.len())
}

/// Whether the tenancy of `states` guards statements ([`Admission::guard_statements`]): it
/// gives its tenants roles and does not keep statements across tenants.
fn guards_statements(states: &TenantStates) -> bool {
    states
        .registry
        .roles()
        .is_some_and(|roles| !roles.keeps_statements_across_tenants())
}

/// The state `tenant` is served in: the registry's (with `states`) and the value's, the
/// stricter one winning. Every door's checkout of a tenant comes through here.
pub(crate) async fn admit_tenant(
    states: Option<&TenantStates>,
    tenant: &Tenant,
) -> Result<Admission> {
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    let admitted = admit_in(states, tenant).await;
    #[cfg(feature = "metrics")]
    crate::metrics::checkout(
        tenant.schema(),
        started.elapsed(),
        &admitted,
        // A schema the registry does not know (a host a resolver made up) gets no label of
        // its own: such names cannot use up the labels of the tenants that exist.
        states.is_none() || matches!(&admitted, Ok(a) if a.registered),
    );
    admitted
}

/// [`admit_tenant`] without its metrics.
async fn admit_in(states: Option<&TenantStates>, tenant: &Tenant) -> Result<Admission> {
    let Some(states) = states else {
        return Ok(Admission {
            status: admit(tenant, None)?,
            slot: None,
            statement_timeout_ms: None,
            role: None,
            guard_statements: false,
            registered: false,
        });
    };
    let registered = states.registered(tenant.schema()).await?;
    let status = admit(tenant, Some(registered.as_ref()))?;
    // Role mode: the registry's role, never the value's; none is no way in.
    let role = match states.registry.roles() {
        Some(_) if !tenant.schema().is_public() => {
            match registered.as_ref().and_then(Tenant::role) {
                Some(role) => {
                    crate::databases::note_roles();
                    Some(Arc::<str>::from(crate::roles::quote(role)))
                }
                None => {
                    return Err(Error::NoTenantRole {
                        schema: tenant.schema().clone(),
                    })
                }
            }
        }
        _ => None,
    };
    let own = registered.as_ref().and_then(Tenant::max_connections);
    let slot = states.slot(tenant.schema(), own).await?;
    let statement_timeout_ms = registered
        .as_ref()
        .and_then(Tenant::statement_timeout)
        .or(states.limits.get_statement_timeout())
        .map(crate::tenant::duration_ms);
    if statement_timeout_ms.is_some() {
        crate::databases::note_statement_timeout();
    }
    Ok(Admission {
        status,
        slot,
        statement_timeout_ms,
        role,
        guard_statements: guards_statements(states),
        registered: registered.is_some(),
    })
}

/// What a checkout was admitted with: the state the tenant is served in, its share of the
/// pool under the limits (held as long as the connection), and its sessions'
/// `statement_timeout` in milliseconds.
pub(crate) struct Admission {
    pub(crate) status: TenantStatus,
    pub(crate) slot: Option<Slot>,
    pub(crate) statement_timeout_ms: Option<u32>,
    /// Role mode: the tenant's role, quoted as an identifier.
    pub(crate) role: Option<Arc<str>>,
    /// The tenancy gives its tenants roles ([`TenantRoles`](crate::TenantRoles)) and
    /// connections do not keep statements across tenants
    /// ([`TenantRoles::keep_statements_across_tenants`](crate::TenantRoles::keep_statements_across_tenants)):
    /// for every checkout of it, the public tenant's and the shared `public` schema's
    /// included, no statement prepared on a connection during another schema's checkout may
    /// run (see [`DriverCheckout::may_share_statements`]).
    pub(crate) guard_statements: bool,
    /// The registry has a tenant in the schema (read by the metrics).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) registered: bool,
}

/// The value a session's switch gives `statement_timeout` for a tenant with `ms` (see
/// [`DriverCheckout::statement_timeout_setting`]).
pub(crate) fn timeout_setting(ms: Option<u32>) -> Option<String> {
    match ms {
        Some(ms) => Some(ms.to_string()),
        None if crate::databases::statement_timeouts_seen() => Some("DEFAULT".into()),
        None => None,
    }
}

/// See [`DriverCheckout::role_setting`]; `role` quoted.
pub(crate) fn role_setting(role: Option<&str>) -> Option<String> {
    match role {
        Some(role) => Some(format!("SET ROLE {role}")),
        None if crate::databases::roles_seen() => Some("RESET ROLE".into()),
        None => None,
    }
}

/// The access mode a transaction-mode `BEGIN` states: `READ ONLY` for a read-only tenant;
/// with `reset`, `READ WRITE` (a transaction begun under a `default_transaction_read_only`
/// the server connection's last user left on would stay read-only after `RESET ALL`).
pub(crate) fn begin_access(read_only: bool, reset: bool) -> &'static str {
    if read_only {
        " READ ONLY"
    } else if reset {
        " READ WRITE"
    } else {
        ""
    }
}

/// What a transaction-mode transaction sends right behind its `BEGIN`, in the same message:
/// with `reset`, [`SESSION_RESETS`] and `RESET ROLE` (they commit with the transaction and
/// stay on the server connection, which is what they are for), then the tenant's `SET LOCAL
/// statement_timeout` (without `reset` and without a timeout of the tenant's, `TO DEFAULT`),
/// the [`LEFT_OBJECTS`] undone, and the rest of the [`local_settings`]: the path and the role.
pub(crate) fn local_start(
    path: &str,
    timeout_ms: Option<u32>,
    role: Option<&str>,
    reset: bool,
) -> String {
    local_start_statements(path, timeout_ms, role, reset).join("; ")
}

/// The statements of [`local_start`], in order (each one, for a `Parse` of its own).
pub(crate) fn local_start_statements(
    path: &str,
    timeout_ms: Option<u32>,
    role: Option<&str>,
    reset: bool,
) -> Vec<String> {
    let mut statements = Vec::with_capacity(10);
    if reset {
        statements.extend(SESSION_RESETS.map(str::to_owned));
        statements.push("RESET ROLE".to_owned());
    }
    // The timeout before the rest: each statement runs under the timeout in force when it
    // starts. Without the resets, a `statement_timeout` the server connection's last user left
    // (a function's `set_config(…, false)`, another client of the pooler) would cancel
    // `DISCARD TEMP` of its many temporary tables, and every transaction on that server
    // connection after it: in its place the tenant's timeout, or the connection's default.
    match timeout_ms {
        Some(ms) => statements.push(format!("SET LOCAL statement_timeout TO {ms}")),
        None if !reset => statements.push("SET LOCAL statement_timeout TO DEFAULT".to_owned()),
        None => {}
    }
    statements.extend(LEFT_OBJECTS.map(str::to_owned));
    statements.push(format!("SET LOCAL search_path TO {path}"));
    statements.extend(local_role_setting(role));
    statements
}

/// The statements ahead of a transaction-mode statement run in its message's implicit
/// transaction ([`implicit_transactions`](crate::SchemaRouterBuilder::implicit_transactions)),
/// in order: what [`local_start_statements`] sends without `reset`, with `set_config(…, true)`
/// for each `SET LOCAL` (outside a transaction block `SET LOCAL` warns, and the warning goes to
/// the server's log). The timeout and the path in the first, before [`LEFT_OBJECTS`]; the
/// role (`role` quoted, as for [`local_role_setting`]) last.
pub(crate) fn implicit_start_statements(
    path: &str,
    timeout_ms: Option<u32>,
    role: Option<&str>,
) -> Vec<String> {
    let mut statements = Vec::with_capacity(6);
    let timeout = timeout_ms.map_or_else(|| "NULL".to_owned(), |ms| format!("'{ms}'"));
    statements.push(format!(
        "SELECT pg_catalog.set_config('statement_timeout', {timeout}, true), \
         pg_catalog.set_config('search_path', {}, true)",
        path_as_shown(path)
    ));
    statements.extend(LEFT_OBJECTS.map(str::to_owned));
    let role = match role {
        Some(role) => Some(unquote(role)),
        None if crate::databases::roles_seen() => Some("none".to_owned()),
        None => None,
    };
    if let Some(role) = role {
        statements.push(format!(
            "SELECT pg_catalog.set_config('role', {}, true)",
            crate::roles::literal(&role)
        ));
    }
    statements
}

/// An expression of `path` (a search path as the library writes it for `SET`: quoted
/// identifiers and `public`, separated by `, `) as `SET search_path` stores it, each schema
/// quoted only where PostgreSQL quotes it (`acme, public`; `"user", public`), for
/// `current_setting('search_path')` to read the same whichever way the path was set. A name
/// PostgreSQL is known to write as it is ([`shown_unquoted`]) goes into one literal with its
/// neighbours (`'acme, public'`); any other is left to the server's `quote_ident`. The
/// literal is what the server parses fastest: a call of `quote_ident` per name cost the
/// implicit shape about a tenth of its throughput directly (BENCHMARKS.md §12, §29).
fn path_as_shown(path: &str) -> String {
    let mut parts = Vec::new();
    let mut text = String::with_capacity(path.len());
    for (i, element) in path.split(", ").enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        let name = unquote(element);
        if !element.starts_with('"') || shown_unquoted(&name) {
            text.push_str(&name);
            continue;
        }
        if !text.is_empty() {
            parts.push(crate::roles::literal(&text));
            text.clear();
        }
        parts.push(format!(
            "pg_catalog.quote_ident({})",
            crate::roles::literal(&name)
        ));
    }
    if !text.is_empty() || parts.is_empty() {
        parts.push(crate::roles::literal(&text));
    }
    parts.join(" || ")
}

/// The keywords PostgreSQL's `quote_ident` quotes: every category but the unreserved ones
/// (`SELECT word FROM pg_get_keywords() WHERE catcode <> 'U' ORDER BY word` on PostgreSQL
/// 15). Sorted, for a binary search. A keyword a later version adds goes unquoted in
/// [`path_as_shown`]: the path is the same (a search path's names are not keywords to the
/// server), only `current_setting('search_path')` reads without the quotes `SET` shows.
#[rustfmt::skip]
const QUOTED_KEYWORDS: [&str; 151] = [
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric",
    "authorization", "between", "bigint", "binary", "bit", "boolean", "both", "case", "cast",
    "char", "character", "check", "coalesce", "collate", "collation", "column", "concurrently",
    "constraint", "create", "cross", "current_catalog", "current_date", "current_role",
    "current_schema", "current_time", "current_timestamp", "current_user", "dec", "decimal",
    "default", "deferrable", "desc", "distinct", "do", "else", "end", "except", "exists",
    "extract", "false", "fetch", "float", "for", "foreign", "freeze", "from", "full", "grant",
    "greatest", "group", "grouping", "having", "ilike", "in", "initially", "inner", "inout",
    "int", "integer", "intersect", "interval", "into", "is", "isnull", "join", "lateral",
    "leading", "least", "left", "like", "limit", "localtime", "localtimestamp", "national",
    "natural", "nchar", "none", "normalize", "not", "notnull", "null", "nullif", "numeric",
    "offset", "on", "only", "or", "order", "out", "outer", "overlaps", "overlay", "placing",
    "position", "precision", "primary", "real", "references", "returning", "right", "row",
    "select", "session_user", "setof", "similar", "smallint", "some", "substring", "symmetric",
    "table", "tablesample", "then", "time", "timestamp", "to", "trailing", "treat", "trim",
    "true", "union", "unique", "user", "using", "values", "varchar", "variadic", "verbose",
    "when", "where", "window", "with", "xmlattributes", "xmlconcat", "xmlelement", "xmlexists",
    "xmlforest", "xmlnamespaces", "xmlparse", "xmlpi", "xmlroot", "xmlserialize", "xmltable",
];

/// Whether PostgreSQL's `quote_ident` writes `name` as it is: lowercase letters, digits and
/// underscores, beginning with a letter or an underscore, and not one of the
/// [`QUOTED_KEYWORDS`].
fn shown_unquoted(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && QUOTED_KEYWORDS.binary_search(&name).is_err()
}

/// A quoted identifier's name (`"a""b"` is `a"b`); anything else as it is.
fn unquote(identifier: &str) -> String {
    match identifier
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(inner) => inner.replace("\"\"", "\""),
        None => identifier.to_owned(),
    }
}

/// The `SET LOCAL`s of a transaction-mode switch, in order: the search path `path`, the
/// tenant's `statement_timeout` (`timeout_ms`) and, in role mode, its `role` (quoted); each
/// ends with the transaction, so nothing is left to reset. Sent again, alone, to set the path
/// back inside a transaction.
pub(crate) fn local_settings(path: &str, timeout_ms: Option<u32>, role: Option<&str>) -> String {
    let mut sql = format!("SET LOCAL search_path TO {path}");
    if let Some(ms) = timeout_ms {
        sql.push_str(&format!("; SET LOCAL statement_timeout TO {ms}"));
    }
    if let Some(role) = local_role_setting(role) {
        sql.push_str("; ");
        sql.push_str(&role);
    }
    sql
}

/// See [`DriverCheckout::local_role_setting`]; `role` quoted.
pub(crate) fn local_role_setting(role: Option<&str>) -> Option<String> {
    match role {
        Some(role) => Some(format!("SET LOCAL ROLE {role}")),
        None if crate::databases::roles_seen() => Some("SET LOCAL ROLE NONE".into()),
        None => None,
    }
}

/// The state a schema asked for by name is served in: the shared `public` schema always read
/// and write, another as [`admit_tenant`] says for a tenant of that name.
pub(crate) async fn admit_by_name(
    states: Option<&TenantStates>,
    schema: &SchemaName,
) -> Result<Admission> {
    if schema.is_public() {
        let admitted = Ok(Admission {
            status: TenantStatus::Active,
            slot: None,
            statement_timeout_ms: None,
            role: None,
            guard_statements: states.is_some_and(guards_statements),
            registered: true,
        });
        #[cfg(feature = "metrics")]
        crate::metrics::checkout(schema, std::time::Duration::ZERO, &admitted, true);
        admitted
    } else {
        admit_tenant(states, &Tenant::new(schema.clone())).await
    }
}

/// The state `asked` is served in, given what the registry has in its schema
/// (`registered`: `None` when there are no states to read, `Some(None)` when the registry has
/// no tenant there). See the [module](self).
pub(crate) fn admit(asked: &Tenant, registered: Option<Option<&Tenant>>) -> Result<TenantStatus> {
    let schema = asked.schema();
    let registry_status = match registered {
        None => None,
        Some(None) => {
            if asked.id().is_some() {
                // Resolved from the registry, which no longer has a tenant there.
                return Err(Error::SchemaMissing {
                    schema: schema.clone(),
                });
            }
            None
        }
        Some(Some(row)) => {
            if row.shard() != asked.shard() {
                // The registry places the tenant on another database than the one this
                // checkout would connect to (a value built by name says the default one): a
                // schema of that name there is not this tenant's.
                return Err(Error::SchemaMissing {
                    schema: schema.clone(),
                });
            }
            if let Some(id) = asked.id() {
                if row.id() != Some(id) {
                    return Err(Error::TenantGone {
                        id,
                        schema: schema.clone(),
                    });
                }
            }
            Some(row.status())
        }
    };
    let not_served = |status: TenantStatus| Error::TenantNotServed {
        schema: schema.clone(),
        status,
    };
    if let Some(status) = registry_status {
        if !status.is_served() {
            return Err(not_served(status));
        }
    }
    if !asked.status().is_served() {
        return Err(not_served(asked.status()));
    }
    if registry_status == Some(TenantStatus::ReadOnly) || asked.status() == TenantStatus::ReadOnly {
        Ok(TenantStatus::ReadOnly)
    } else {
        Ok(TenantStatus::Active)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The path as `SET` shows it: one literal where every name is shown as it is, the
    /// server's `quote_ident` for the others.
    #[test]
    fn path_as_shown_writes_plain_names_as_one_literal() {
        assert!(QUOTED_KEYWORDS.windows(2).all(|w| w[0] < w[1]), "sorted");
        for (path, shown) in [
            ("\"acme\", public", "'acme, public'"),
            ("public", "'public'"),
            ("\"_t1\", public, \"abort\"", "'_t1, public, abort'"),
            (
                "\"user\", public",
                "pg_catalog.quote_ident('user') || ', public'",
            ),
            (
                "\"a\", public, \"select\", \"b\"",
                "'a, public, ' || pg_catalog.quote_ident('select') || ', b'",
            ),
            (
                "\"1a\", \"order\"",
                "pg_catalog.quote_ident('1a') || ', ' || pg_catalog.quote_ident('order')",
            ),
        ] {
            assert_eq!(path_as_shown(path), shown, "{path}");
        }
    }

    fn tenant(status: TenantStatus) -> Tenant {
        Tenant::new(SchemaName::new("acme").unwrap()).with_status(status)
    }

    /// What drivers that see their SQL are told: the core router's reading, and its refusal
    /// for read-only tenants only.
    #[test]
    fn sql_effects_for_drivers() {
        let acme = SchemaName::new("acme").unwrap();
        for sql in [
            "BEGIN READ WRITE",
            "SET TRANSACTION READ WRITE",
            "SELECT set_config('transaction_read_only', 'off', false)",
        ] {
            let effects = SqlEffects::of(sql);
            assert!(effects.escapes_read_only, "{sql}");
            assert!(matches!(
                effects.refuse_read_write(&acme, TenantStatus::ReadOnly),
                Err(Error::TenantReadOnly { .. })
            ));
            effects
                .refuse_read_write(&acme, TenantStatus::Active)
                .unwrap();
        }
        let begin = SqlEffects::of("/* x */ begin");
        assert!(begin.controls_transaction && begin.changes_session);
        let set = SqlEffects::of("SET search_path TO public");
        assert!(set.changes_session && !set.controls_transaction && !set.escapes_read_only);
        let select = SqlEffects::of("SELECT 'BEGIN; SET search_path TO x'");
        assert!(!select.changes_session && !select.controls_transaction);
        select
            .refuse_read_write(&acme, TenantStatus::ReadOnly)
            .unwrap();
    }

    #[test]
    fn the_stricter_state_wins_and_the_registry_decides_first() {
        use TenantStatus::*;
        for registry in TenantStatus::ALL {
            for value in TenantStatus::ALL {
                let row = tenant(registry).with_id(1);
                let got = admit(&tenant(value), Some(Some(&row)));
                match (registry.is_served(), value.is_served()) {
                    (false, _) => assert!(
                        matches!(got, Err(Error::TenantNotServed { status, .. }) if status == registry)
                    ),
                    (true, false) => assert!(
                        matches!(got, Err(Error::TenantNotServed { status, .. }) if status == value)
                    ),
                    (true, true) => {
                        let expected = if registry == ReadOnly || value == ReadOnly {
                            ReadOnly
                        } else {
                            Active
                        };
                        assert_eq!(got.unwrap(), expected);
                    }
                }
            }
        }
    }

    #[test]
    fn a_registered_tenant_whose_row_is_gone_or_replaced_is_refused() {
        let resolved = tenant(TenantStatus::Active).with_id(7);
        assert!(matches!(
            admit(&resolved, Some(None)),
            Err(Error::SchemaMissing { .. })
        ));
        let recreated = tenant(TenantStatus::Active).with_id(8);
        assert!(matches!(
            admit(&resolved, Some(Some(&recreated))),
            Err(Error::TenantGone { id: 7, .. })
        ));
        // Placed on another database than the one the value names.
        let elsewhere = tenant(TenantStatus::Active).with_id(7).with_shard("b");
        assert!(matches!(
            admit(&tenant(TenantStatus::Active), Some(Some(&elsewhere))),
            Err(Error::SchemaMissing { .. })
        ));
        assert_eq!(
            admit(&elsewhere, Some(Some(&elsewhere))).unwrap(),
            TenantStatus::Active
        );
        // Unregistered, without an id: as the value says.
        assert_eq!(
            admit(&tenant(TenantStatus::Active), Some(None)).unwrap(),
            TenantStatus::Active
        );
        // No states to read: as the value says.
        assert!(admit(&tenant(TenantStatus::Suspended), None).is_err());
        assert_eq!(
            admit(&tenant(TenantStatus::ReadOnly).with_id(7), None).unwrap(),
            TenantStatus::ReadOnly
        );
    }
}
