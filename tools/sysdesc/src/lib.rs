//! Parser and validator of Bulkhead system descriptions (`systems/*.toml`).
//!
//! A description declares the partitions, the cyclic schedule, the devices and their owners,
//! and the channels, notifications and shared regions between partitions. [`check_str`] and
//! [`check_file`] parse and validate one, returning the resolved [`System`] when it is valid and
//! a [`Report`] of every diagnostic found (each with file, line, column and message). The format
//! is documented in `docs/system-description.md`.
//!
//! ```
//! use bulkhead_sysdesc::{check_str, Programs};
//! let text = r#"
//! [system]
//! name = "tiny"
//! arch = ["x86_64"]
//!
//! [partitions.a]
//! memory = "64 KiB"
//! threads = [{ name = "main", priority = 1 }]
//!
//! [schedule]
//! major-frame = "10 ms"
//! windows = [{ partition = "a", length = "10 ms" }]
//! "#;
//! let outcome = check_str("tiny.toml", text, &Programs::known(["a"]));
//! let system = outcome.system.expect("valid");
//! assert_eq!(system.schedule.windows[0].length_ns, 10_000_000);
//! ```

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

mod diag;
pub mod model;
mod raw;
pub mod schema;
mod settings;
pub mod units;
mod validate;

pub use diag::{Diagnostic, Note, Report, Severity, stderr_wants_color};
pub use model::*;
pub use schema::{ConfigSchema, KeySchema, KeyType, Programs};
/// The TOML crate the model's `config` tables come from.
pub use toml;
pub use validate::{DEFAULT_STACK, NOTIFICATION_BITS};

/// Page size every memory budget, stack and region size must be a multiple of.
pub const PAGE_SIZE: u64 = 4096;
/// Highest thread priority (priorities are `0..=MAX_PRIORITY`, larger is more urgent).
pub const MAX_PRIORITY: u8 = 63;
/// Largest message of a call/reply channel, in bytes.
pub const MAX_MESSAGE_SIZE: u64 = 4096;
/// Longest name of a partition, device, channel, region, thread or notification.
pub const MAX_NAME_LEN: usize = 32;

/// The result of checking one description.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The resolved system; `Some` exactly when the report has no errors.
    pub system: Option<System>,
    /// Every error and warning found, sorted by position.
    pub report: Report,
}

impl Outcome {
    /// The system, or the report if the description has errors (warnings are dropped).
    pub fn into_result(self) -> Result<System, Report> {
        match self.system {
            Some(system) if !self.report.has_errors() => Ok(system),
            _ => Err(self.report),
        }
    }
}

/// Parses and validates description text; `file` is only used in diagnostics.
pub fn check_str(file: impl Into<PathBuf>, text: &str, programs: &Programs) -> Outcome {
    let file = file.into();
    let index = diag::LineIndex::new(text);
    let (system, mut pending) = match toml::from_str::<raw::RawSystem>(text) {
        Ok(raw) => validate::validate(&raw, programs),
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = toml_message(e.message().trim_end(), text.get(span.clone()));
            (None, vec![diag::Pending::error(span, message)])
        }
    };
    pending.sort_by(|a, b| {
        (a.span.start, a.span.end, &a.message).cmp(&(b.span.start, b.span.end, &b.message))
    });
    pending.dedup_by(|a, b| a.span == b.span && a.message == b.message);
    let diagnostics = pending
        .into_iter()
        .map(|p| index.finish(&file, p))
        .collect();
    Outcome {
        system,
        report: Report {
            file,
            source: text.to_owned(),
            diagnostics,
        },
    }
}

/// Makes the TOML parser's terser messages say what they are about.
fn toml_message(message: &str, spanned: Option<&str>) -> String {
    let mut message = message
        .replace("expected i64", "expected an integer")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table")
        .replace("invalid type: map,", "invalid type: table,")
        .replace("invalid type: sequence,", "invalid type: array,");
    // serde names the internal struct (`expected struct RawHealth`); a user needs "a table".
    if let Some(at) = message.find("expected struct Raw") {
        let end = message[at + "expected struct ".len()..]
            .find(|c: char| !c.is_alphanumeric())
            .map_or(message.len(), |i| at + "expected struct ".len() + i);
        message.replace_range(at..end, "expected a table");
    }
    match spanned {
        Some(key) if message == "duplicate key" => {
            format!(
                "duplicate key \"{}\"",
                key.trim_matches(['[', ']', '"', '\''])
            )
        }
        _ => message,
    }
}

/// Reads, parses and validates a description file.
pub fn check_file(path: &Path, programs: &Programs) -> std::io::Result<Outcome> {
    let text = std::fs::read_to_string(path)?;
    Ok(check_str(path, &text, programs))
}

/// Reads a description and returns the system, or a report (also for an unreadable file).
pub fn load(path: &Path, programs: &Programs) -> Result<System, Report> {
    match check_file(path, programs) {
        Ok(outcome) => outcome.into_result(),
        Err(e) => Err(Report {
            file: path.to_path_buf(),
            source: String::new(),
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                span: 0..0,
                message: format!("cannot read the description: {e}"),
                notes: Vec::new(),
            }],
        }),
    }
}
