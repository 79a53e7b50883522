//! What an erasure removes: each table of a tenant's schema and its rows.

use super::export::{schema_tables, snapshot};
use super::Registry;
use crate::error::{Error, Result};
use crate::receipt::TableRows;
use crate::tenant::TenantRecord;

impl Registry {
    /// Every table of `tenant`'s schema (plain and partitioned; the migration history
    /// included) with its rows, by name, counted in one snapshot on the tenant's database.
    pub(crate) async fn table_rows(&self, tenant: &TenantRecord) -> Result<Vec<TableRows>> {
        let schema = &tenant.schema;
        let db = |e| Error::db("counting a tenant's rows", schema, e);
        let mut conn = self.databases.connect(&tenant.shard, schema).await?;
        let tx = snapshot(&mut conn).await.map_err(db)?;
        let tables = schema_tables(&tx, schema, true).await.map_err(db)?;
        let mut out = Vec::with_capacity(tables.len());
        for table in tables {
            let sql = format!(
                "SELECT pg_catalog.count(*) FROM {}.\"{}\"",
                schema.quoted(),
                table.replace('"', "\"\"")
            );
            let rows: i64 = tx.query_one(&sql, &[]).await.map_err(db)?.get(0);
            out.push(TableRows { table, rows });
        }
        tx.commit().await.map_err(db)?;
        Ok(out)
    }
}
