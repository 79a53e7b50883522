//! Objects outside a tenant's schema that depend on objects in it, which `DROP SCHEMA …
//! CASCADE` would destroy with it: a view in `public` or in another tenant's schema
//! selecting from its table, a foreign key of another schema's table referencing it, a
//! table of another schema inheriting from it (or a partition of its partitioned table), a
//! column, default, function or view using its type or function … Deleting, erasing and
//! moving a tenant look for them first and refuse ([`Error::OutsideDependents`]) unless
//! asked to drop them too.

use tokio_postgres::types::Type;

use crate::error::{Error, Result};
use crate::schema::SchemaName;

/// Each object outside schema `$1` that depends on an object in it, with what it depends
/// on, as `pg_identify_object` names them (type and schema-qualified identity): rows of
/// `pg_depend` whose referenced object is a relation, type, function, constraint, collation,
/// operator, operator class or family, text search object or conversion of the schema, or
/// the schema itself (an extension installed into it), and whose dependent object does not
/// belong to the schema. Left out: internal
/// dependencies (a view's rule on its view, a table's TOAST table and row type, the
/// triggers of a foreign key) and extension membership, which are parts of the object they
/// depend on, publication membership (a publication only loses the table) and the schema's
/// default privileges. A view's
/// rule is named as its view. The schema of an object without one of its own (a rule,
/// trigger, policy, default) is its table's; of an operator class member, its family's.
/// One row per dependent object: what it depends on joined with `, `.
const OUTSIDE_DEPENDENTS: &str = "
WITH ns AS (
    SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = $1
), inside(classid, objid) AS (
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, c.oid
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = $1
    UNION ALL
    SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid
    FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname = $1
    UNION ALL
    SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = $1
    UNION ALL
    SELECT 'pg_catalog.pg_constraint'::pg_catalog.regclass, k.oid
    FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_namespace n ON n.oid = k.connamespace
    WHERE n.nspname = $1
    UNION ALL
    SELECT 'pg_catalog.pg_collation'::pg_catalog.regclass, o.oid
    FROM pg_catalog.pg_collation o JOIN pg_catalog.pg_namespace n ON n.oid = o.collnamespace
    WHERE n.nspname = $1
    UNION ALL
    SELECT 'pg_catalog.pg_operator'::pg_catalog.regclass, o.oid
    FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
    WHERE n.nspname = $1
    UNION ALL
    SELECT 'pg_catalog.pg_opclass'::pg_catalog.regclass, o.oid
    FROM pg_catalog.pg_opclass o JOIN pg_catalog.pg_namespace n ON n.oid = o.opcnamespace
    WHERE n.nspname = $1
    UNION ALL
    SELECT 'pg_catalog.pg_opfamily'::pg_catalog.regclass, o.oid
    FROM pg_catalog.pg_opfamily o JOIN pg_catalog.pg_namespace n ON n.oid = o.opfnamespace
    WHERE n.nspname = $1
    UNION ALL
    SELECT 'pg_catalog.pg_ts_config'::pg_catalog.regclass, o.oid
    FROM pg_catalog.pg_ts_config o JOIN pg_catalog.pg_namespace n ON n.oid = o.cfgnamespace
    WHERE n.nspname = $1
    UNION ALL
    SELECT 'pg_catalog.pg_ts_dict'::pg_catalog.regclass, o.oid
    FROM pg_catalog.pg_ts_dict o JOIN pg_catalog.pg_namespace n ON n.oid = o.dictnamespace
    WHERE n.nspname = $1
    UNION ALL
    SELECT 'pg_catalog.pg_ts_parser'::pg_catalog.regclass, o.oid
    FROM pg_catalog.pg_ts_parser o JOIN pg_catalog.pg_namespace n ON n.oid = o.prsnamespace
    WHERE n.nspname = $1
    UNION ALL
    SELECT 'pg_catalog.pg_ts_template'::pg_catalog.regclass, o.oid
    FROM pg_catalog.pg_ts_template o JOIN pg_catalog.pg_namespace n ON n.oid = o.tmplnamespace
    WHERE n.nspname = $1
    UNION ALL
    SELECT 'pg_catalog.pg_conversion'::pg_catalog.regclass, o.oid
    FROM pg_catalog.pg_conversion o JOIN pg_catalog.pg_namespace n ON n.oid = o.connamespace
    WHERE n.nspname = $1
    UNION ALL
    -- The schema itself: an extension installed into it goes with it.
    SELECT 'pg_catalog.pg_namespace'::pg_catalog.regclass, n.oid
    FROM pg_catalog.pg_namespace n
    WHERE n.nspname = $1
), dependents AS (
    SELECT d.classid, d.objid, d.objsubid, d.refclassid, d.refobjid,
        CASE d.classid
            WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass THEN
                (SELECT r.ev_class FROM pg_catalog.pg_rewrite r WHERE r.oid = d.objid)
            WHEN 'pg_catalog.pg_trigger'::pg_catalog.regclass THEN
                (SELECT t.tgrelid FROM pg_catalog.pg_trigger t WHERE t.oid = d.objid)
            WHEN 'pg_catalog.pg_policy'::pg_catalog.regclass THEN
                (SELECT p.polrelid FROM pg_catalog.pg_policy p WHERE p.oid = d.objid)
            WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass THEN
                (SELECT a.adrelid FROM pg_catalog.pg_attrdef a WHERE a.oid = d.objid)
        END AS on_table,
        CASE d.classid
            WHEN 'pg_catalog.pg_amop'::pg_catalog.regclass THEN
                (SELECT a.amopfamily FROM pg_catalog.pg_amop a WHERE a.oid = d.objid)
            WHEN 'pg_catalog.pg_amproc'::pg_catalog.regclass THEN
                (SELECT a.amprocfamily FROM pg_catalog.pg_amproc a WHERE a.oid = d.objid)
        END AS in_family,
        d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND EXISTS (
            SELECT 1 FROM pg_catalog.pg_rewrite r
            WHERE r.oid = d.objid AND r.rulename = '_RETURN') AS view_rule
    FROM pg_catalog.pg_depend d
    JOIN inside i ON i.classid = d.refclassid AND i.objid = d.refobjid
    WHERE d.deptype NOT IN ('i', 'e', 'x')
      AND d.classid NOT IN ('pg_catalog.pg_publication_rel'::pg_catalog.regclass,
                            'pg_catalog.pg_publication_namespace'::pg_catalog.regclass,
                            'pg_catalog.pg_default_acl'::pg_catalog.regclass)
), outside AS (
    SELECT DISTINCT o.type || ' ' || o.identity AS dependent,
           r.type || ' ' || r.identity AS referenced
    FROM dependents d
    CROSS JOIN LATERAL pg_catalog.pg_identify_object(
        CASE WHEN d.view_rule THEN 'pg_catalog.pg_class'::pg_catalog.regclass ELSE d.classid END,
        CASE WHEN d.view_rule THEN d.on_table ELSE d.objid END,
        CASE WHEN d.view_rule THEN 0 ELSE d.objsubid END) o
    CROSS JOIN LATERAL pg_catalog.pg_identify_object(d.refclassid, d.refobjid, 0) r
    -- Compared with the schema by its oid, or by its name as `pg_identify_object` reads it
    -- (the catalog as it is now): renamed while this runs, the schema is still itself.
    WHERE CASE
            WHEN d.on_table IS NOT NULL THEN
                (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid = d.on_table)
                    IS DISTINCT FROM (SELECT ns.oid FROM ns)
            WHEN d.in_family IS NOT NULL THEN
                (SELECT f.opfnamespace FROM pg_catalog.pg_opfamily f WHERE f.oid = d.in_family)
                    IS DISTINCT FROM (SELECT ns.oid FROM ns)
            ELSE pg_catalog.quote_ident(
                    (pg_catalog.pg_identify_object(d.classid, d.objid, 0)).schema)
                IS DISTINCT FROM (SELECT ns.oid::pg_catalog.regnamespace::pg_catalog.text FROM ns)
          END
)
SELECT dependent || ' depends on ' || pg_catalog.string_agg(referenced, ', ' ORDER BY referenced)
FROM outside
GROUP BY dependent
ORDER BY 1";

/// What would destroy the dependents: the refusal's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropping {
    /// [`Tenancy::delete_tenant`](crate::Tenancy::delete_tenant) with
    /// [`DropSchema::Yes`](crate::DropSchema::Yes).
    Delete,
    /// [`Tenancy::erase_tenant`](crate::Tenancy::erase_tenant).
    Erase,
    /// [`Tenancy::move_to_shard`](crate::Tenancy::move_to_shard) (the source schema).
    Move,
}

impl Dropping {
    fn action(self) -> &'static str {
        match self {
            Self::Delete => "deleted",
            Self::Erase => "erased",
            Self::Move => "moved",
        }
    }

    fn instead(self) -> &'static str {
        match self {
            Self::Delete => {
                "drop those objects first, or delete with `DropSchema::WithDependents` to drop \
                 them with the schema"
            }
            Self::Erase => {
                "drop those objects first, or erase with `EraseOptions::with_dependents(true)` \
                 to drop them with the schema"
            }
            Self::Move => {
                "they cannot be moved with the schema: drop them first (and create them again \
                 on the target)"
            }
        }
    }
}

/// Each object outside `schema` that depends on an object in it, with what it depends on
/// (e.g. `view public.all_notes depends on table acme.notes`), looked up through `client`
/// on the schema's database.
pub(crate) async fn outside_dependents(
    client: &tokio_postgres::Client,
    schema: &SchemaName,
) -> std::result::Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query_typed(OUTSIDE_DEPENDENTS, &[(&schema.as_str(), Type::TEXT)])
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// [`Error::OutsideDependents`] when objects outside `schema` depend on objects in it.
pub(crate) async fn refuse_outside_dependents(
    client: &tokio_postgres::Client,
    schema: &SchemaName,
    dropping: Dropping,
) -> Result<()> {
    let dependents = outside_dependents(client, schema)
        .await
        .map_err(|e| Error::db("looking for objects depending on the schema", schema, e))?;
    if dependents.is_empty() {
        return Ok(());
    }
    Err(Error::OutsideDependents {
        schema: schema.clone(),
        action: dropping.action(),
        dependents,
        instead: dropping.instead(),
    })
}

/// [`refuse_outside_dependents`] in `tx`, the transaction that drops the schema, once it
/// holds the schema's tables and views (`ACCESS EXCLUSIVE`, as the drop takes them; held
/// until `tx` ends): a transaction that was creating a view on one of them, a foreign key to
/// it or a child of it has committed by then and its object is seen, and none can be created
/// between this look and the drop. (A view on a view locks only the view, not its tables:
/// it must be locked here too, or the drop would wait for it and then drop it. Materialized
/// views cannot be locked with `LOCK`, and objects depending on the schema's types or
/// functions take no lock on them: one created in the moment between this look and the
/// drop would still go with it.)
pub(crate) async fn lock_and_refuse(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &SchemaName,
    dropping: Dropping,
) -> Result<()> {
    let db = |e| Error::db("locking the schema's tables", schema, e);
    let tables: Vec<String> = tx
        .query_typed(
            "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)
             FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v')
             ORDER BY c.relname",
            &[(&schema.as_str(), Type::TEXT)],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if !tables.is_empty() {
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            tables.join(", ")
        ))
        .await
        .map_err(db)?;
    }
    refuse_outside_dependents(tx.client(), schema, dropping).await
}
