//! Problems found in a configuration, each named by key path and, when the key is in the
//! file, by line and column.

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::path::KeyPath;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; the configuration is still used.
    Warning,
    /// The configuration cannot be used.
    Error,
}

/// A 1-based line and column in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    /// Line, starting at 1.
    pub line: usize,
    /// Column in characters, starting at 1.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `source`.
    pub fn from_offset(source: &str, offset: usize) -> Self {
        let offset = offset.min(source.len());
        let before = source.get(..offset).unwrap_or(source);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self { line, column }
    }
}

/// Where each line of a text starts, to turn many byte offsets into locations without
/// scanning the text from its start each time (a file with thousands of diagnostics would
/// otherwise take quadratic time).
#[derive(Debug, Clone)]
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, starts }
    }

    /// The location of byte `offset`; the same as [`Location::from_offset`].
    pub(crate) fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&start| start <= offset);
        let line_start = self.starts[line - 1];
        let column = self
            .text
            .get(line_start..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        Location { line, column }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Another key a problem involves, e.g. the first node that has the same address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Related {
    /// The other key.
    pub path: KeyPath,
    /// Where it is in the file, if it is in the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The key the problem is about.
    pub path: KeyPath,
    /// What is wrong, naming the bad value.
    pub message: String,
    /// How to fix it, when there is something specific to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Where the key is in the file; `None` when the value comes from the defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Other keys the problem involves.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Related>,
}

impl Diagnostic {
    /// An error about `path`.
    pub fn error(path: KeyPath, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            path,
            message: message.into(),
            help: None,
            location: None,
            related: Vec::new(),
        }
    }

    /// A warning about `path`.
    pub fn warning(path: KeyPath, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(path, message)
        }
    }

    /// Adds advice on how to fix the problem.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Names another key involved in the problem.
    #[must_use]
    pub fn with_related(mut self, path: KeyPath) -> Self {
        self.related.push(Related {
            path,
            location: None,
        });
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Writes the problem as `file:line:col: error: path: message`, then help and related
    /// keys on indented lines.
    pub fn render(&self, source_name: &str) -> String {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = match self.location {
            Some(loc) => format!(
                "{source_name}:{loc}: {severity}: {}: {}",
                self.path, self.message
            ),
            None => format!(
                "{source_name}: {severity}: {} (not set in the file; default value): {}",
                self.path, self.message
            ),
        };
        for related in &self.related {
            match related.location {
                Some(loc) => _ = write!(out, "\n    see {} at {source_name}:{loc}", related.path),
                None => _ = write!(out, "\n    see {} (default value)", related.path),
            }
        }
        if let Some(help) = &self.help {
            _ = write!(out, "\n    help: {help}");
        }
        out
    }
}

/// Every problem found in one configuration source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The file name (or `<embedded default>`) the locations refer to.
    pub source_name: String,
    /// The problems, in file order (problems without a location last).
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// The errors of the report.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// The warnings of the report.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }

    /// Whether the report holds at least one error.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.diagnostics {
            writeln!(f, "{}", diagnostic.render(&self.source_name))?;
        }
        let errors = self.errors().count();
        let warnings = self.warnings().count();
        write!(
            f,
            "{}: {errors} error{}, {warnings} warning{}",
            self.source_name,
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" },
        )
    }
}

impl std::error::Error for Report {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The line index places every offset where scanning the text would.
        #[test]
        fn the_line_index_agrees_with_a_scan(text in "(\\PC|\n){0,200}", offsets in proptest::collection::vec(0usize..260, 1..20)) {
            let index = LineIndex::new(&text);
            for offset in offsets {
                // Offsets inside a character are not asked for; the scan would slice mid-char.
                let offset = (0..=offset.min(text.len())).rev().find(|o| text.is_char_boundary(*o)).unwrap_or(0);
                prop_assert_eq!(index.location(offset), Location::from_offset(&text, offset));
            }
        }
    }

    #[test]
    fn location_counts_lines_and_characters() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(
            Location::from_offset(src, 0),
            Location { line: 1, column: 1 }
        );
        // Offset of "=" on line 2: "bé " is 4 bytes but 3 characters.
        let offset = src.find("= 2").unwrap();
        assert_eq!(
            Location::from_offset(src, offset),
            Location { line: 2, column: 4 }
        );
        assert_eq!(
            Location::from_offset(src, 10_000),
            Location { line: 3, column: 1 }
        );
    }

    #[test]
    fn render_names_file_line_column_and_path() {
        let mut d = Diagnostic::error(KeyPath::parse("nodes[1].ip").unwrap(), "bad")
            .with_help("fix it")
            .with_related(KeyPath::parse("network.nat_cidr").unwrap());
        d.location = Some(Location { line: 3, column: 6 });
        let text = d.render("homelab.toml");
        assert!(
            text.starts_with("homelab.toml:3:6: error: nodes[1].ip: bad"),
            "{text}"
        );
        assert!(
            text.contains("see network.nat_cidr (default value)"),
            "{text}"
        );
        assert!(text.contains("help: fix it"), "{text}");
    }
}
