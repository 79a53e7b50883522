//! How a [`SchemaRouter`] is made: its databases and its search-path policy.

use std::sync::Arc;

use deadpool_postgres::Pool;

use super::pool::{RouterPool, SearchPathMode};
use super::SchemaRouter;
use crate::checkout::TenantStates;
use crate::databases::Databases;
use crate::schema::SchemaName;
use crate::shard::ShardName;

/// Builds a [`SchemaRouter`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct SchemaRouterBuilder {
    databases: Databases,
    mode: SearchPathMode,
    affinity: bool,
    extra_schemas: Vec<SchemaName>,
    track: Option<bool>,
    groups: Vec<Pool>,
    states: Option<TenantStates>,
    pooler_statements: bool,
    reset_settings: bool,
    implicit_transactions: bool,
}

impl SchemaRouter {
    /// A router over `pool` with the default policy: search path `"<schema>", public`.
    #[must_use]
    pub fn new(pool: Pool) -> Self {
        Self::builder(pool).build()
    }

    /// A builder to set extra shared schemas or the search-path memory.
    pub fn builder(pool: Pool) -> SchemaRouterBuilder {
        Self::over(Databases::new(pool))
    }

    /// A builder over databases configured once for the router and the registry.
    pub(crate) fn over(databases: Databases) -> SchemaRouterBuilder {
        SchemaRouterBuilder {
            databases,
            mode: SearchPathMode::Session,
            affinity: true,
            extra_schemas: Vec::new(),
            track: None,
            groups: Vec::new(),
            states: None,
            pooler_statements: false,
            reset_settings: false,
            implicit_transactions: false,
        }
    }
}

impl SchemaRouterBuilder {
    /// Another database (shard): tenants whose [`Tenant::shard`](crate::Tenant::shard) names
    /// it get their connections from `pool`. The name [`DEFAULT_SHARD`](crate::DEFAULT_SHARD)
    /// is the router's own pool: a shard given that name is ignored.
    pub fn shard(mut self, name: impl Into<ShardName>, pool: Pool) -> Self {
        self.databases.add(name.into(), pool);
        self
    }

    /// Shared schemas put on the search path after `public`, e.g. one holding extensions.
    pub fn extra_schemas(mut self, schemas: impl IntoIterator<Item = SchemaName>) -> Self {
        self.extra_schemas = schemas.into_iter().collect();
        self
    }

    /// How the search path reaches the server (default: [`SearchPathMode::Session`]).
    pub fn mode(mut self, mode: SearchPathMode) -> Self {
        self.mode = mode;
        self
    }

    /// Whether a connection released on a schema goes straight to a request waiting for that
    /// schema when the pool is exhausted (default: yes; session mode with search-path memory
    /// only). Saves the switch for busy tenants; see BENCHMARKS.md.
    pub fn schema_affinity(mut self, yes: bool) -> Self {
        self.affinity = yes;
        self
    }

    /// Transaction mode: run statements as named prepared statements, cached per connection
    /// (one per schema and SQL text, as in session mode), where the pooler keeps them across
    /// server connections — PgBouncer 1.21 and later with `max_prepared_statements` > 0 (its
    /// default since 1.24). Default: off (every statement unnamed, parsed each time).
    ///
    /// Whether the pooler keeps them is asked once per pooled connection, in a transaction
    /// of its own: a statement prepared there shows under a name the pooler gave it
    /// (`PGBOUNCER_<n>`) in `pg_prepared_statements`, not under the client's. A connection
    /// whose pooler does not (PgBouncer 1.18, `max_prepared_statements = 0`, no pooler at all)
    /// keeps running its statements unnamed, as when this is off: a named statement left on
    /// a server connection such a pooler shares could be run by another client (see
    /// [`RouterStats::pooler_probes_unsupported`](super::RouterStats::pooler_probes_unsupported)).
    ///
    /// A statement is prepared inside its first transaction, on its tenant's path, under a
    /// text marked with its schema, so the pooler shares it only with clients preparing it
    /// for the same schema. Nothing else changes: each statement still runs in a transaction
    /// of its own that sets the path locally. Ignored in session mode.
    ///
    /// The pooler keeps a bounded number of statements per server connection (PgBouncer's
    /// `max_prepared_statements`, 200 by default) and parses an evicted one again when it is
    /// next used: with many tenants, each schema's statements are texts of their own, so
    /// give it at least tenants × statement texts, or leave this off (BENCHMARKS.md: at
    /// 1,000 tenants and 200, slower than unnamed statements; a tie with 2,000; at one
    /// tenant, 1.2–1.4× their throughput).
    ///
    /// Set aside once tenant roles are in use ([`TenantRoles`](crate::TenantRoles)): every
    /// statement then runs unnamed. A statement the pooler keeps lives on a server connection
    /// other clients' transactions run on, where another tenant's SQL (a function's dynamic
    /// SQL) can `DEALLOCATE` it and `PREPARE` its own text under the same name, which the next
    /// `Bind` would run under this tenant's role and path.
    pub fn pooler_prepared_statements(mut self, yes: bool) -> Self {
        self.pooler_statements = yes;
        self
    }

    /// Every checkout starts from the connection's startup settings (`true`), or only one
    /// after a scope whose SQL was seen leaving settings (`false`, the default).
    ///
    /// By default a checkout that finds its connection on its path sends nothing, and the
    /// resets (`RESET ALL; RESET SESSION AUTHORIZATION; RESET ROLE`) go out only when the
    /// scope before it sent SQL that leaves settings on the session: `SET`, `set_config(…,
    /// false)`, `EXECUTE`, `CALL`… What a *function or trigger* sets for the session
    /// (`SELECT login_as($1)` whose body calls `set_config('app.user', $1, false)`) is not in
    /// the SQL text, so it reaches the connection's next checkout, the same tenant's or
    /// another's (the temporary tables it creates are dropped by every checkout's first
    /// switch, `DISCARD TEMP`, with or without this, as are held cursors and sequence state). With `true`, every checkout switches,
    /// and its switch begins with the resets (in the first statement's own message when it
    /// is cached); the library's own work (registry, migrations) resets first as well, and
    /// drops temporary tables, in every router of the process.
    /// This is what the sqlx driver's `SqlxRouterBuilder::reset_settings` does by default,
    /// since sqlx does not read the SQL sent through it.
    ///
    /// What a scope sets itself stays for the rest of that scope. It costs a switch on
    /// checkouts that would have had none (one tenant, or a hot tenant's connections) and
    /// the resets' work on the server: a fifth to a third of the throughput with one tenant, a
    /// sixth with 1,000 (BENCHMARKS.md §14).
    /// Give connection-wide settings in the URL's `options`, which `RESET ALL` keeps, not in
    /// a `SET` of a pool hook.
    ///
    /// In transaction mode, where the SQL's own session settings are refused but a function's
    /// are not seen, every transaction begins `BEGIN READ WRITE` (`READ ONLY` for a read-only
    /// tenant) with the resets in the same message, so what a function or another client of
    /// the pooler left on the server connection is undone (the undoing commits with the
    /// transaction); no extra round trip. The library's own work behind a pooler is not
    /// reset: a reset sent on its own would reach whichever server connection is free.
    pub fn reset_settings(mut self, yes: bool) -> Self {
        self.reset_settings = yes;
        self
    }

    /// Transaction mode: a plain query outside [`ConnectionScope::transaction`] runs in the
    /// implicit transaction of its own message (`true`) or in `BEGIN` … `COMMIT` (`false`,
    /// the default here; a [`Tenancy`](crate::Tenancy) over a Citus coordinator turns it on).
    ///
    /// With `true`, a statement at hand (its text seen before on the router) is sent behind
    /// `SELECT set_config(…, true)` of the tenant's timeout and path, the leftovers undone
    /// (`DISCARD TEMP`, `CLOSE ALL`, `DISCARD SEQUENCES`), the role's `set_config` and the
    /// schema's existence check, each an unnamed `Parse`/`Bind`/`Execute`, and one `Sync`: one
    /// implicit transaction whose settings end with it, and no `BEGIN` or `COMMIT`. What
    /// holds with `BEGIN` holds here: should anything ahead of the statement fail, PostgreSQL
    /// skips the rest up to the `Sync`, so the statement never runs on another path, and a
    /// failure at commit (a deferred constraint) is the statement's error.
    ///
    /// It pays through a Citus coordinator, which runs an explicit transaction block on the
    /// worker with `BEGIN` and `COMMIT` round trips of its own, and routes a statement in an
    /// implicit transaction in one hop: 1.5–1.6× the throughput there (BEGIN's 0.24–0.30 of
    /// a plain distributed schema's, 0.35–0.46 this way). Directly to PostgreSQL and through
    /// PgBouncer the two shapes measure within a few percent of each other, either way
    /// (BENCHMARKS.md §27). The path reads as `SET` shows it. Only plain queries go this way
    /// (text beginning `SELECT`, `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `WITH`, `VALUES` or
    /// `TABLE`); `LOCK TABLE`, DDL and the like keep `BEGIN`, as do read-only tenants,
    /// routers with [`reset_settings`](Self::reset_settings), a text's first run and
    /// [`ConnectionScope::transaction`]. Ignored in session mode.
    ///
    /// [`ConnectionScope::transaction`]: crate::ConnectionScope::transaction
    pub fn implicit_transactions(mut self, yes: bool) -> Self {
        self.implicit_transactions = yes;
        self
    }

    /// Turns the per-connection search-path memory off (`false`), or leaves it to the pool
    /// (`true`, the default; session mode only).
    ///
    /// The memory is on only when the pool's recycling method keeps session state: with
    /// `Clean` or custom recycling SQL, which may reset the search path, it stays off even
    /// when asked for. Turn it off when something else may change `search_path` on the
    /// pool's connections behind the router's back (server-side code that calls
    /// `set_config`): every checkout then switches.
    pub fn track_search_path(mut self, track: bool) -> Self {
        self.track = Some(track);
        self
    }

    /// Splits the default database's connections into groups, each tenant with a home
    /// group: `more` are further pools to the same database, built like the router's own
    /// (which is the first group). A tenant's connections always come from its home group
    /// (by a stable hash of its schema name, the same in every process); when that group is
    /// busy, the request waits for it, even if another group has a connection idle.
    ///
    /// Each PostgreSQL backend keeps catalog entries (and, here, prepared statements) for
    /// every tenant table it has touched, and never lets go of them: with many tenants and
    /// one group, every pooled backend ends up holding all of them. With `n` groups a backend
    /// serves a `1/n` share of the tenants, so its private memory stays near a share's
    /// (BENCHMARKS.md: T = 1,000, 4 groups of 4: 29 → 10 MiB private per backend), and
    /// each tenant's statements are cached on fewer connections. The price: a group's
    /// connections serve only its tenants, so one very busy tenant is limited to its group's
    /// share of the pool. Borrowing another group's idle connection was measured and left
    /// out: under load it happens often enough that every backend soon holds every tenant's
    /// entries again. The pools' recycling method decides the search-path memory for all
    /// groups alike (give them the same configuration).
    pub fn connection_groups(mut self, more: impl IntoIterator<Item = Pool>) -> Self {
        self.groups.extend(more);
        self
    }

    /// The registry's tenant states, read at every checkout (see [`checkout`](crate::checkout)):
    /// a router built by hand over the database of a [`Tenancy`](crate::Tenancy) then serves
    /// each tenant in the state the registry has for it, as the `Tenancy`'s own router does.
    /// Without them, a tenant is served in the state its [`Tenant`](crate::Tenant) value
    /// carries.
    ///
    /// ```no_run
    /// # async fn demo(tenancy: tenant_schemas::Tenancy) {
    /// use tenant_schemas::SchemaRouter;
    /// let router = SchemaRouter::builder(tenancy.router().pool().clone())
    ///     .tenant_states(tenancy.tenant_states())
    ///     .build();
    /// # }
    /// ```
    pub fn tenant_states(mut self, states: TenantStates) -> Self {
        self.states = Some(states);
        self
    }

    /// Finishes the router.
    #[must_use]
    pub fn build(self) -> SchemaRouter {
        let default = std::ptr::from_ref(self.databases.default().manager());
        SchemaRouter {
            databases: self.databases.map(|pool| {
                let mut pools = vec![pool.clone()];
                if std::ptr::eq(pool.manager(), default) {
                    pools.extend(self.groups.iter().cloned());
                }
                let track =
                    self.track != Some(false) && pools.iter().all(recycling_keeps_session_state);
                let keeps_statements = pools.iter().all(recycling_keeps_statements);
                Arc::new(
                    RouterPool::new(
                        pools,
                        self.mode,
                        self.extra_schemas.clone(),
                        track,
                        self.affinity,
                        self.pooler_statements,
                    )
                    .recycling_keeps_statements(keeps_statements)
                    .resetting_settings(self.reset_settings)
                    .implicit_transactions(self.implicit_transactions),
                )
            }),
            states: self.states,
        }
    }
}

/// deadpool-postgres keeps its manager's configuration private; its `Debug` output is the
/// only place the recycling method shows. If that output ever changes, this returns false
/// and the router switches on every checkout: slower, never wrong.
fn recycling_keeps_session_state(pool: &Pool) -> bool {
    let manager = format!("{:?}", pool.manager());
    manager.contains("recycling_method: Fast") || manager.contains("recycling_method: Verified")
}

/// Whether `pool`'s recycling keeps the server's prepared statements, which the connection's
/// statement cache refers to: `Fast`, `Verified` and `Clean` do; a `Custom` query may not
/// (`DISCARD ALL`), and the router then empties the cache at every checkout (as above: when
/// the output cannot be read, slower, never wrong).
fn recycling_keeps_statements(pool: &Pool) -> bool {
    let manager = format!("{:?}", pool.manager());
    recycling_keeps_session_state(pool) || manager.contains("recycling_method: Clean")
}
