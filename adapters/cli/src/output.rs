//! What the commands print: text for people, or one JSON document with `--json`; progress
//! bars only for people; tables with aligned columns.

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

    /// Whether JSON is printed.
    pub(crate) fn is_json(self) -> bool {
        self.json
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
        "shard": r.shard.as_str(),
        "domains": r.domains,
    })
}

/// `rows` under `headers`, each column as wide as its widest cell, separated by two
/// spaces, with a rule under the headers; no trailing spaces. Control characters in cells
/// are escaped (`\n`), so one row stays one line.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c)).collect())
        .collect();
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            out.extend(std::iter::repeat_n(' ', pad));
        }
        out.truncate(out.trim_end().len());
        out
    };
    let mut lines = vec![line(&mut headers.iter().copied())];
    lines.push(line(
        &mut widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    ));
    for row in &cells {
        lines.push(line(&mut row.iter().map(String::as_str)));
    }
    lines.join("\n")
}

/// `text` with control characters escaped.
fn printable(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect()
    } else {
        text.to_owned()
    }
}

/// `n` and the noun, singular or plural: "1 schema", "2 schemas".
pub(crate) fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_line_up() {
        let rows = vec![
            vec!["a".to_owned(), "1".to_owned(), "x".to_owned()],
            vec!["longer_name".to_owned(), "22".to_owned(), String::new()],
            vec!["two\nlines".to_owned(), "3".to_owned(), "é".to_owned()],
        ];
        let text = table(&["SCHEMA", "V", "NOTE"], &rows);
        assert_eq!(
            text,
            "SCHEMA       V   NOTE\n\
             -----------  --  ----\n\
             a            1   x\n\
             longer_name  22\n\
             two\\nlines   3   é"
        );
    }

    #[test]
    fn counts() {
        assert_eq!(count(1, "row"), "1 row");
        assert_eq!(count(0, "row"), "0 rows");
        assert_eq!(count(2, "schema"), "2 schemas");
    }
}
