//! What the commands print: text for people, or one JSON document with `--json`; progress
//! bars only for people.

use std::process::ExitCode;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tenant_schemas::{Progress, TenantRecord};

/// Where a command's result goes.
#[derive(Clone, Copy)]
pub(crate) struct Output {
    json: bool,
}

impl Output {
    /// JSON when `json`, text otherwise.
    pub(crate) fn new(json: bool) -> Self {
        Self { json }
    }

    /// Prints `text`, or `value` with `--json`.
    pub(crate) fn print(self, text: &str, value: &Value) {
        if self.json {
            println!("{value}");
        } else {
            println!("{text}");
        }
    }

    /// A bar for a run over a known number of schemas, and the callback that moves it;
    /// neither with `--json`.
    pub(crate) fn progress_bar(self) -> (Option<Progress>, Option<ProgressBar>) {
        if self.json {
            return (None, None);
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} schemas {elapsed_precise} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let b = bar.clone();
        let progress: Progress = Arc::new(move |done, total| {
            b.set_length(total as u64);
            b.set_position(done as u64);
        });
        (Some(progress), Some(bar))
    }

    /// A spinner counting schemas, for runs whose length is not known up front; none with
    /// `--json`.
    pub(crate) fn spinner(self) -> Option<ProgressBar> {
        (!self.json).then(|| {
            ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {pos} schemas {elapsed_precise}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            )
        })
    }
}

/// A tenant's registry row as JSON.
pub(crate) fn record_json(r: &TenantRecord) -> Value {
    json!({
        "schema": r.schema.as_str(),
        "name": r.name,
        "status": r.status.as_str(),
        "version": r.version,
        "domains": r.domains,
    })
}

/// Exit code 0 when nothing failed, 1 when some schema did.
pub(crate) fn exit_code(all_ok: bool) -> ExitCode {
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
