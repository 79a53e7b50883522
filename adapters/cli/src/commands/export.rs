//! `export` and `restore`: a tenant's data as one file.

use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};
use tenant_schemas::{Host, NewTenant, SchemaName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};

use crate::connect::Context;
use crate::error::{CliError, CliResult};
use crate::output::Output;

pub(crate) async fn export(
    ctx: &Context,
    out: Output,
    schema: &SchemaName,
    path: &Path,
) -> CliResult {
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(|e| CliError::config(format!("cannot create {}: {e}", path.display())))?;
    let mut writer = BufWriter::new(file);
    let tables = match ctx.tenancy.export_tenant(schema, &mut writer).await {
        Ok(tables) => tables,
        Err(e) => {
            // A partial file is no export.
            drop(writer);
            let _ = tokio::fs::remove_file(path).await;
            return Err(e.into());
        }
    };
    writer
        .shutdown()
        .await
        .map_err(|e| CliError::failed(format!("writing {}: {e}", path.display())))?;
    let checksum = sha256(path).await?;
    let rows: i64 = tables.iter().map(|t| t.rows).sum();
    out.print(
        &format!(
            "exported {schema} to {}: {rows} rows in {} tables\nsha256:{checksum}",
            path.display(),
            tables.len()
        ),
        &json!({
            "schema": schema.as_str(),
            "file": path.display().to_string(),
            "tables": tables.iter().map(|t| json!({"table": t.table, "rows": t.rows})).collect::<Vec<_>>(),
            "rows": rows,
            "sha256": checksum,
        }),
    );
    Ok(())
}

pub(crate) async fn restore(
    ctx: &Context,
    out: Output,
    path: &Path,
    schema: SchemaName,
    name: Option<String>,
    domains: Vec<Host>,
) -> CliResult {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| CliError::config(format!("cannot read {}: {e}", path.display())))?;
    let mut new = NewTenant::new(schema);
    if let Some(name) = name {
        new = new.name(name);
    }
    for domain in domains {
        new = new.domain(domain);
    }
    let record = ctx
        .tenancy
        .restore_tenant(&mut BufReader::new(file), new)
        .await?;
    out.print(
        &format!(
            "restored {} as {} (version {})",
            path.display(),
            record.schema,
            record.version
        ),
        &json!({
            "schema": record.schema.as_str(),
            "file": path.display().to_string(),
            "version": record.version,
            "domains": record.domains,
        }),
    );
    Ok(())
}

/// The file's SHA-256, hex.
async fn sha256(path: &Path) -> CliResult<String> {
    let read = |e: std::io::Error| CliError::failed(format!("reading {}: {e}", path.display()));
    let mut file = tokio::fs::File::open(path).await.map_err(read)?;
    let (mut hasher, mut buf) = (Sha256::new(), vec![0u8; 64 * 1024]);
    loop {
        let n = file.read(&mut buf).await.map_err(read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
