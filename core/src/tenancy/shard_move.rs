//! Moving a tenant to another database (no Citus): [`Tenancy::move_to_shard`]. Its SQL is
//! in `registry/shard_move.rs`, its report ([`ShardMoveReport`]) in `receipt.rs`.

use std::time::Instant;

use super::Tenancy;
use crate::error::Result;
use crate::receipt::ShardMoveReport;
use crate::router::session;
use crate::schema::SchemaName;
use crate::shard::ShardName;

impl Tenancy {
    /// Moves the tenant in `schema` to the database `to_shard` (one added with
    /// [`TenancyBuilder::shard`](crate::TenancyBuilder::shard), or
    /// [`DEFAULT_SHARD`](crate::DEFAULT_SHARD)) online, by PostgreSQL's logical replication
    /// of its schema: its requests are served from the source meanwhile, and its writes wait
    /// only during a short cut-over ([`ShardMoveReport::writes_held`]). Returns at once, with
    /// [`ShardMoveReport::moved`] `false`, when the tenant is there already.
    ///
    /// 1. Refused ([`Error::ShardMove`](crate::Error::ShardMove) naming the reason, or
    ///    [`Error::Refused`](crate::Error::Refused), [`Error::TenantNotFound`](crate::Error::TenantNotFound),
    ///    [`Error::UnknownShard`](crate::Error::UnknownShard)) before anything is made: the
    ///    public schema; a source whose `wal_level` is not `logical`; a schema of that name
    ///    on the target; a table without a primary key or replica identity (named; its
    ///    updates and deletes could not be replicated: nothing is altered silently); a
    ///    tenant not at the latest tenant migration, or a migration set with
    ///    [no-transaction steps](crate::Migration::no_transaction); a migration run (or
    ///    another move) in progress; objects outside the schema that depend on objects in it
    ///    ([`Error::OutsideDependents`](crate::Error::OutsideDependents), naming each: a view
    ///    in `public` or in another tenant's schema on its table, a foreign key referencing
    ///    it, a table inheriting from it …), which could not be moved and which dropping the
    ///    source schema would destroy. The move holds the migration lock throughout, so no
    ///    migration changes the schema meanwhile.
    /// 2. The schema is created on the target with the tenant migrations, emptied, and
    ///    nothing is registered yet.
    /// 3. A publication of the schema and a replication slot on the source, a subscription
    ///    on the target (copying the rows); the move waits until every table is copied and
    ///    the target has caught up.
    /// 4. The cut-over: this process holds the schema's statements back (as a deletion does,
    ///    drivers' checkouts cut off after the grace), the source's tables are locked
    ///    against writes (`EXCLUSIVE`: other processes' writers wait, readers go on), the
    ///    target catches up with the last write, every table's rows are counted on both
    ///    sides and must be equal, the sequences' positions are copied (replication does
    ///    not carry them), outside dependents are looked for again (the source's tables
    ///    held as the drop holds them; one found gives the move up), the source schema is
    ///    dropped in the locking transaction, the
    ///    registry row names the target (announced), and the locking transaction commits.
    ///    Writers that waited on the locks then fail (the schema is gone) rather than
    ///    write where nobody reads: an acknowledged write is never lost. Statements held
    ///    back in this process go on afterwards against the target once their tenant is
    ///    resolved again (a [`Tenant`](crate::Tenant) value taken before the move still
    ///    names the source, where the schema is now missing:
    ///    [`Error::SchemaMissing`](crate::Error::SchemaMissing)).
    /// 5. The subscription, publication and slot are dropped; the hooks hear
    ///    [`TenantEvent::MovedToShard`](crate::TenantEvent::MovedToShard).
    ///
    /// Any failure before the registry switch removes what the move made (subscription,
    /// publication, slot, target schema) and leaves the tenant served from the source as
    /// before; so does dropping the returned future half-way (in the background then).
    ///
    /// Needs a superuser (PostgreSQL 15: `CREATE SUBSCRIPTION`), `wal_level = logical` on
    /// the source, a free replication slot and WAL sender there, and the target server
    /// able to connect to the source: with the settings given to
    /// [`TenancyBuilder::replication_source`](crate::TenancyBuilder::replication_source)
    /// (set by [`Tenancy::builder_from_url`] and
    /// [`TenancyBuilder::shard_url`](crate::TenancyBuilder::shard_url)), otherwise as the
    /// source server describes its connection, without a password. The registry's pool and
    /// the shards' pools must reach their servers directly or through a pooler in session
    /// pooling: the move holds the migration lock (a session advisory lock) and prepares
    /// its statements by name, and through transaction pooling neither would stay on one
    /// server connection.
    ///
    /// **If the process dies during a move**, the publication, slot and subscription it
    /// made are left, named `tsmove_<hash of the schema>_<random>`, and the target schema
    /// (commented `tenant-schemas: a move in progress copies here`) too; the tenant is
    /// still served from the registry's database for it (the registry switch and the
    /// source drop are the last steps). A left slot retains the source's WAL, so do not
    /// leave it: the next `move_to_shard` of the same schema (to any database) removes
    /// all of them first, on every database, and a half-copied target schema on a database
    /// the registry does not place the tenant on. By hand: `DROP SUBSCRIPTION` (after
    /// `ALTER SUBSCRIPTION … DISABLE` and `… SET (slot_name = NONE)`) on the target,
    /// `DROP PUBLICATION` and `pg_drop_replication_slot` on the source, all named
    /// `tsmove_%`. Should it die between the registry switch and the commit of the
    /// source's transaction, the tenant is on the target and the source's schema (rolled
    /// back, a stale copy) is left: drop it by hand.
    ///
    /// ```no_run
    /// use tenant_schemas::{SchemaName, ShardName};
    ///
    /// # async fn demo(tenancy: tenant_schemas::Tenancy) -> tenant_schemas::Result<()> {
    /// let report = tenancy
    ///     .move_to_shard(&SchemaName::new("acme")?, &ShardName::new("eu"))
    ///     .await?;
    /// println!("{} rows moved, writes held {:?}", report.total_rows(), report.writes_held);
    /// # Ok(()) }
    /// ```
    pub async fn move_to_shard(
        &self,
        schema: &SchemaName,
        to_shard: &ShardName,
    ) -> Result<ShardMoveReport> {
        let registry = &self.inner.registry;
        let from = registry.get(schema).await.map(|r| r.shard);
        let source_settings = from
            .as_ref()
            .ok()
            .and_then(|shard| self.inner.sources.get(shard));
        let prepared = match registry
            .prepare_move(schema, to_shard, source_settings)
            .await?
        {
            Ok(prepared) => prepared,
            Err(already_there) => return Ok(already_there),
        };
        // The cut-over: statements for the schema in this process finish first; new ones
        // wait until the move is over.
        let fenced = Instant::now();
        let closed = session::close(schema).await;
        if let Err(e) =
            crate::checkout::cut_off_drivers(schema, self.inner.grace, prepared.source()).await
        {
            drop(closed);
            let mut prepared = prepared;
            prepared.cleanup.take().run().await;
            return Err(e);
        }
        let record = prepared.record.clone();
        let started = prepared.started();
        let (moved, cleanup) = registry.finish_move(prepared, fenced).await;
        if moved.is_ok() {
            self.forget(&record).await;
        }
        // Dropping the gate bumps the schema's epoch: every connection checks it again.
        drop(closed);
        cleanup.run().await;
        let mut report = moved?;
        report.took = started.elapsed();
        // Role mode: the role's privileges on the source database go with the schema; the
        // role itself too when the target is on another cluster (kept on this one).
        if let Some(role) = &record.role {
            match registry.databases().connect(&report.from, schema).await {
                Ok(conn) => crate::registry::drop_role(&conn, schema, role).await,
                Err(e) => tracing::warn!(schema = %schema, error = %e, "source role not dropped"),
            }
        }
        self.emit(super::TenantEvent::MovedToShard {
            schema: schema.clone(),
            from: report.from.clone(),
            to: report.to.clone(),
        })
        .await;
        tracing::info!(schema = %schema, from = %report.from, to = %report.to, took = ?report.took,
            writes_held = ?report.writes_held, "tenant moved to another database");
        Ok(report)
    }
}
