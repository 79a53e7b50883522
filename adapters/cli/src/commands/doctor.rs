//! `doctor`: the registry checked against the schemas (only reads); `--fix` repairs what is
//! safe. Each finding is printed as the core words it (`Display for Finding`).

use serde_json::{json, Value};

use crate::connect::Context;
use crate::error::{CliError, CliResult};
use crate::output::Output;

pub(crate) async fn run(ctx: &Context, out: Output, fix: bool) -> CliResult {
    let report = ctx.tenancy.doctor(fix).await?;
    let mut lines: Vec<String> = report
        .findings
        .iter()
        .map(|f| {
            format!(
                "{} {f}",
                if report.repaired.contains(f) {
                    "repaired"
                } else {
                    "found   "
                }
            )
        })
        .collect();
    for (f, e) in &report.repair_failures {
        lines.push(format!("repair failed for {f}: {e}"));
    }
    if lines.is_empty() {
        lines.push("no problems found".into());
    }
    let findings: Vec<Value> = report
        .findings
        .iter()
        .map(|f| json!({"finding": f.to_string(), "repaired": report.repaired.contains(f)}))
        .collect();
    out.print(
        &lines.join("\n"),
        &json!({"healthy": report.is_healthy(), "findings": findings}),
    );
    if report.is_healthy() {
        Ok(())
    } else {
        Err(CliError::Failed(None))
    }
}
