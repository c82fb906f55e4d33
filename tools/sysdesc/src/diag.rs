//! Diagnostics: located messages, as data and rendered for people.

use std::ops::Range;
use std::path::{Path, PathBuf};

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor};

/// How bad a diagnostic is. Only errors make a description invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Error,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// A secondary location that explains a diagnostic (e.g. "first granted here").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub line: usize,
    pub column: usize,
    /// Byte range in the source.
    pub span: Range<usize>,
    pub message: String,
}

/// One located message about a description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Byte range in the source.
    pub span: Range<usize>,
    /// The plain reason, without location or severity.
    pub message: String,
    pub notes: Vec<Note>,
}

impl std::fmt::Display for Diagnostic {
    /// `file:line:column: error: reason`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.severity,
            self.message
        )
    }
}

/// Every diagnostic about one file, with the file's text for rendering.
#[derive(Clone, Debug)]
pub struct Report {
    pub file: PathBuf,
    pub source: String,
    /// Sorted by position; errors and warnings mixed.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }

    /// Renders every diagnostic as `file:line:column: severity: reason` followed by a snippet
    /// of the source, with ANSI colours if `color`.
    pub fn render(&self, color: bool) -> String {
        let mut out = termcolor::Buffer::no_color();
        if color {
            out = termcolor::Buffer::ansi();
        }
        self.write_to(&mut out, color);
        String::from_utf8_lossy(out.as_slice()).into_owned()
    }

    /// Prints [`Report::render`] to stderr, in colour when stderr is a terminal (and neither
    /// `NO_COLOR` is set nor `TERM=dumb`). Prints nothing for an empty report.
    pub fn eprint(&self) {
        eprint!("{}", self.render(stderr_wants_color()));
    }

    fn write_to(&self, out: &mut termcolor::Buffer, color: bool) {
        use std::io::Write;
        use termcolor::WriteColor;
        let file = SimpleFile::new(self.file.display().to_string(), self.source.as_str());
        let config = term::Config::default();
        for d in &self.diagnostics {
            if color {
                let _ = out.set_color(termcolor::ColorSpec::new().set_bold(true));
                let _ = write!(out, "{}:{}:{}: ", d.file.display(), d.line, d.column);
                let mut spec = termcolor::ColorSpec::new();
                spec.set_bold(true).set_fg(Some(match d.severity {
                    Severity::Error => termcolor::Color::Red,
                    Severity::Warning => termcolor::Color::Yellow,
                }));
                let _ = out.set_color(&spec);
                let _ = write!(out, "{}", d.severity);
                let _ = out.set_color(termcolor::ColorSpec::new().set_bold(true));
                let _ = writeln!(out, ": {}", d.message);
                let _ = out.reset();
            } else {
                let _ = writeln!(out, "{d}");
            }
            let mut labels = vec![Label::primary((), clamp(&d.span, &self.source))];
            for n in &d.notes {
                labels.push(
                    Label::secondary((), clamp(&n.span, &self.source)).with_message(&n.message),
                );
            }
            let cs = match d.severity {
                Severity::Error => CsDiagnostic::error(),
                Severity::Warning => CsDiagnostic::warning(),
            }
            .with_message(&d.message)
            .with_labels(labels);
            // codespan's rich view starts with a `error: reason` header line that would repeat
            // the line above; keep only the snippet that follows it.
            let mut snippet = if color {
                termcolor::Buffer::ansi()
            } else {
                termcolor::Buffer::no_color()
            };
            let _ = term::emit_to_write_style(&mut snippet, &config, &file, &cs);
            let bytes = snippet.as_slice();
            let body = bytes
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes, |i| &bytes[i + 1..]);
            let _ = out.write_all(body);
        }
    }
}

impl std::fmt::Display for Report {
    /// One `file:line:column: severity: reason` line per diagnostic, without snippets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

/// Whether diagnostics written to stderr should be coloured.
pub fn stderr_wants_color() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

fn clamp(span: &Range<usize>, source: &str) -> Range<usize> {
    let start = span.start.min(source.len());
    let end = span.end.clamp(start, source.len());
    start..end
}

/// A diagnostic before its position is turned into a line and column.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub severity: Severity,
    pub span: Range<usize>,
    pub message: String,
    pub notes: Vec<(Range<usize>, String)>,
}

impl Pending {
    pub fn error(span: Range<usize>, message: impl Into<String>) -> Self {
        Pending {
            severity: Severity::Error,
            span,
            message: message.into(),
            notes: Vec::new(),
        }
    }

    pub fn warning(span: Range<usize>, message: impl Into<String>) -> Self {
        Pending {
            severity: Severity::Warning,
            ..Pending::error(span, message)
        }
    }

    pub fn note(mut self, span: Range<usize>, message: impl Into<String>) -> Self {
        self.notes.push((span, message.into()));
        self
    }
}

/// Turns byte offsets into 1-based lines and character columns.
pub(crate) struct LineIndex<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(source: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { source, starts }
    }

    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let column = self
            .source
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, column + 1)
    }

    pub fn finish(&self, file: &Path, pending: Pending) -> Diagnostic {
        let (line, column) = self.line_column(pending.span.start);
        Diagnostic {
            severity: pending.severity,
            file: file.to_path_buf(),
            line,
            column,
            span: pending.span,
            message: pending.message,
            notes: pending
                .notes
                .into_iter()
                .map(|(span, message)| {
                    let (line, column) = self.line_column(span.start);
                    Note {
                        line,
                        column,
                        span,
                        message,
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_columns() {
        let index = LineIndex::new("ab\nµc\n\nd");
        assert_eq!(index.line_column(0), (1, 1));
        assert_eq!(index.line_column(1), (1, 2));
        assert_eq!(index.line_column(3), (2, 1));
        // 'µ' is two bytes but one column.
        assert_eq!(index.line_column(5), (2, 2));
        assert_eq!(index.line_column(7), (3, 1));
        assert_eq!(index.line_column(8), (4, 1));
        assert_eq!(index.line_column(100), (4, 2));
    }
}
