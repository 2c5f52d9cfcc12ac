//! Reading `homelab.toml`: syntax, types, unknown keys and semantic rules, all problems at
//! once, each located by key path and line:column.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use toml_edit::{Item, Table, Value};

use crate::diagnostic::{Diagnostic, LineIndex, Location, Report};
use crate::model::Config;
use crate::path::{KeyPath, Segment};
use crate::validate::validate;

/// The commented default configuration, as `homelab config init` writes it.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// The name diagnostics use for the embedded default.
pub const EMBEDDED_NAME: &str = "<embedded default>";

/// The file name looked for in the working directory when no file is given.
pub const DEFAULT_FILE_NAME: &str = "homelab.toml";

/// Type errors found beyond this many stop the search for more (the file is likely not a
/// homelab configuration at all).
const MAX_TYPE_ERRORS: usize = 64;

/// A configuration that passed validation, with the warnings it raised.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Warnings (never errors) found while reading it.
    pub warnings: Vec<Diagnostic>,
    /// Where it came from: a file path or [`EMBEDDED_NAME`].
    pub source_name: String,
}

/// Where the configuration is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file on disk.
    File(PathBuf),
    /// The default compiled into the tools.
    Embedded,
}

impl ConfigSource {
    /// The given file if any; else `./homelab.toml` when it exists; else the embedded default.
    pub fn discover(explicit: Option<&Path>) -> Self {
        match explicit {
            Some(path) => Self::File(path.to_owned()),
            None if Path::new(DEFAULT_FILE_NAME).is_file() => Self::File(DEFAULT_FILE_NAME.into()),
            None => Self::Embedded,
        }
    }

    /// A name for messages: the path, or [`EMBEDDED_NAME`].
    pub fn name(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Embedded => EMBEDDED_NAME.to_owned(),
        }
    }

    /// Reads, parses and validates the configuration.
    ///
    /// # Errors
    /// The file cannot be read, or the configuration has errors (all of them are in the
    /// [`Report`]).
    pub fn load(&self) -> Result<Loaded, LoadError> {
        match self {
            Self::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
                    path: path.clone(),
                    source,
                })?;
                Ok(parse_str(&self.name(), &text)?)
            }
            Self::Embedded => Ok(parse_str(EMBEDDED_NAME, EMBEDDED_DEFAULT)?),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration has errors.
    #[error("{0}")]
    Invalid(#[from] Report),
}

/// Parses and validates configuration text. `source_name` is used in messages.
///
/// Every problem is collected: a syntax error stops at once (nothing after it can be read
/// reliably), but type errors, unknown keys and rule violations are all reported together.
///
/// # Errors
/// A [`Report`] with every error and warning when at least one error is found.
pub fn parse_str(source_name: &str, text: &str) -> Result<Loaded, Report> {
    let report = |diagnostics| Report {
        source_name: source_name.to_owned(),
        diagnostics,
    };
    let document = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let mut d = Diagnostic::error(
                KeyPath::root(),
                format!("TOML syntax error: {}", e.message().trim()),
            );
            d.location = e.span().map(|span| Location::from_offset(text, span.start));
            return Err(report(vec![d]));
        }
    };
    let mut table: toml::Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(e) => {
            let mut d = Diagnostic::error(
                KeyPath::root(),
                format!("TOML syntax error: {}", e.message().trim()),
            );
            d.location = e.span().map(|span| Location::from_offset(text, span.start));
            return Err(report(vec![d]));
        }
    };

    let (config, type_errors, unknown) = deserialize_collecting(&mut table);
    let mut diagnostics = type_errors;
    let schema = crate::schema_json();
    for path in unknown {
        diagnostics.push(unknown_key(schema, path));
    }
    let bad_paths: Vec<KeyPath> = diagnostics.iter().map(|d| d.path.clone()).collect();
    diagnostics.extend(
        validate(&config)
            .into_iter()
            // A value that failed to parse was replaced by its default; rules that look at
            // it would only repeat the problem in a misleading way.
            .filter(|d| {
                !bad_paths.iter().any(|bad| {
                    d.path.starts_with(bad) || d.related.iter().any(|r| r.path.starts_with(bad))
                })
            }),
    );
    let lines = LineIndex::new(text);
    for d in &mut diagnostics {
        let is_unknown = d.message.starts_with("unknown key");
        d.location = locate_exact(&document, &lines, &d.path, is_unknown);
        for related in &mut d.related {
            related.location = locate_exact(&document, &lines, &related.path, false);
        }
        if d.location.is_none() {
            // The problem is about a default value, but another key it involves was written
            // in the file: that edit is what the user can act on, so report it there.
            if let Some(written) = d.related.iter_mut().find(|r| r.location.is_some()) {
                std::mem::swap(&mut d.path, &mut written.path);
                std::mem::swap(&mut d.location, &mut written.location);
            } else {
                d.location = locate_ancestor(&document, &lines, &d.path);
            }
        }
    }
    // File order (stable: rule order among problems at one place); problems with no place
    // in the file come last.
    diagnostics.sort_by_key(|d| (d.location.is_none(), d.location));
    if diagnostics.iter().any(Diagnostic::is_error) {
        Err(report(diagnostics))
    } else {
        Ok(Loaded {
            config,
            warnings: diagnostics,
            source_name: source_name.to_owned(),
        })
    }
}

/// Deserializes `table` into a [`Config`], collecting every type error: after each error the
/// offending value is removed (its default takes its place) and deserialization is retried.
/// Returns the config, the type errors and the paths of unknown keys.
fn deserialize_collecting(table: &mut toml::Table) -> (Config, Vec<Diagnostic>, Vec<KeyPath>) {
    let mut errors = Vec::new();
    loop {
        let mut unknown = Vec::new();
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
        let deserializer = serde_ignored::Deserializer::new(table.clone(), &mut record);
        match serde_path_to_error::deserialize::<_, Config>(deserializer) {
            Ok(config) => return (config, errors, unknown),
            Err(e) => {
                let path = error_path(e.path());
                let message = e.inner().message().trim().to_owned();
                let removed = remove_value(table, &path);
                errors.push(Diagnostic::error(path, message));
                if !removed || errors.len() >= MAX_TYPE_ERRORS {
                    // Nothing more can be learned; report what was found on the defaults.
                    return (Config::default(), errors, unknown);
                }
            }
        }
    }
}

fn error_path(path: &serde_path_to_error::Path) -> KeyPath {
    let mut out = KeyPath::root();
    for segment in path {
        match segment {
            serde_path_to_error::Segment::Map { key } => out.push(Segment::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => out.push(Segment::Index(*index)),
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> KeyPath {
    fn walk(path: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
        match path {
            serde_ignored::Path::Root => {}
            serde_ignored::Path::Seq { parent, index } => {
                walk(parent, out);
                out.push(Segment::Index(*index));
            }
            serde_ignored::Path::Map { parent, key } => {
                walk(parent, out);
                out.push(Segment::Key(key.clone()));
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut segments = Vec::new();
    walk(path, &mut segments);
    KeyPath::from(segments)
}

/// Removes the value at `path` so that its default is used. A bad element of an array takes
/// the whole array with it (removing one element would shift the indices of later errors).
fn remove_value(table: &mut toml::Table, path: &KeyPath) -> bool {
    let mut target = path.clone();
    while matches!(target.last(), Some(Segment::Index(_))) {
        target = target.parent();
    }
    let Some(Segment::Key(key)) = target.last().cloned() else {
        return false;
    };
    match table_at(table, target.parent().segments()) {
        Some(parent) => parent.remove(&key).is_some(),
        None => false,
    }
}

/// The table at `segments` below `table` (keys, each optionally followed by array indices).
fn table_at<'a>(table: &'a mut toml::Table, segments: &[Segment]) -> Option<&'a mut toml::Table> {
    let Some((first, mut rest)) = segments.split_first() else {
        return Some(table);
    };
    let Segment::Key(key) = first else {
        return None;
    };
    let mut value = table.get_mut(key)?;
    while let Some((Segment::Index(i), tail)) = rest.split_first() {
        value = value.as_array_mut()?.get_mut(*i)?;
        rest = tail;
    }
    table_at(value.as_table_mut()?, rest)
}

/// The location of the key (`want_key`) or value at `path`, if the path is in the file.
fn locate_exact(
    doc: &toml_edit::Document<&str>,
    lines: &LineIndex<'_>,
    path: &KeyPath,
    want_key: bool,
) -> Option<Location> {
    let (key_span, value_span) = spans(doc, path)?;
    let span = if want_key {
        key_span.or(value_span)
    } else {
        value_span.or(key_span)
    }?;
    Some(lines.location(span.start))
}

/// The location of the nearest ancestor of `path` that is in the file (e.g. the `[[nodes]]`
/// header of a node that lacks a required key).
fn locate_ancestor(
    doc: &toml_edit::Document<&str>,
    lines: &LineIndex<'_>,
    path: &KeyPath,
) -> Option<Location> {
    let mut prefix = path.parent();
    while !prefix.is_root() {
        if let Some(location) = locate_exact(doc, lines, &prefix, false) {
            return Some(location);
        }
        prefix = prefix.parent();
    }
    None
}

enum Cursor<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

/// The spans of the key and of the value at `path`, if the path exists in the document.
type Spans = (Option<Range<usize>>, Option<Range<usize>>);

fn spans(doc: &toml_edit::Document<&str>, path: &KeyPath) -> Option<Spans> {
    let mut cursor = Cursor::Table(doc.as_table());
    let mut key_span = None;
    for segment in path.segments() {
        cursor = match (segment, cursor) {
            (Segment::Key(k), Cursor::Table(t)) => {
                let (key, item) = t.get_key_value(k)?;
                key_span = key.span();
                Cursor::Item(item)
            }
            (Segment::Key(k), Cursor::Item(item)) => {
                let (key, item) = item.as_table_like()?.get_key_value(k)?;
                key_span = key.span();
                Cursor::Item(item)
            }
            (Segment::Key(k), Cursor::Value(Value::InlineTable(t))) => {
                let (key, item) = t.get_key_value(k)?;
                key_span = key.span();
                Cursor::Item(item)
            }
            (Segment::Index(i), Cursor::Item(Item::ArrayOfTables(array))) => {
                let table = array.get(*i)?;
                key_span = table.span();
                Cursor::Table(table)
            }
            (
                Segment::Index(i),
                Cursor::Item(Item::Value(Value::Array(array))) | Cursor::Value(Value::Array(array)),
            ) => {
                let value = array.get(*i)?;
                key_span = value.span();
                Cursor::Value(value)
            }
            _ => return None,
        };
    }
    let value_span = match cursor {
        Cursor::Item(Item::Value(v)) | Cursor::Value(v) => v.span(),
        // An array of tables is where its first table is.
        Cursor::Item(Item::ArrayOfTables(array)) => array.get(0).and_then(Table::span),
        Cursor::Item(_) | Cursor::Table(_) => None,
    };
    Some((key_span, value_span))
}

/// A diagnostic for an unknown key, suggesting the closest known key at the same place.
fn unknown_key(schema: &Json, path: KeyPath) -> Diagnostic {
    let name = match path.last() {
        Some(Segment::Key(k)) => k.clone(),
        _ => path.to_string(),
    };
    let known = known_keys(schema, &path.parent());
    let mut d = Diagnostic::error(path, format!("unknown key `{name}`"));
    let best = known
        .iter()
        .map(|k| (strsim::normalized_damerau_levenshtein(&name, k), k))
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((_, suggestion)) = best {
        d = d.with_help(format!("did you mean `{suggestion}`?"));
    } else if !known.is_empty() {
        let list: Vec<&str> = known.iter().map(String::as_str).collect();
        d = d.with_help(format!("expected one of: {}", list.join(", ")));
    }
    d
}

/// The keys the schema allows in the table at `path`.
fn known_keys(schema: &Json, path: &KeyPath) -> BTreeSet<String> {
    let mut current = vec![schema];
    for segment in path.segments() {
        let mut next = Vec::new();
        for node in current {
            for s in alternatives(schema, node) {
                let child = match segment {
                    Segment::Key(k) => s.get("properties").and_then(|p| p.get(k)),
                    Segment::Index(_) => s.get("items"),
                };
                if let Some(child) = child {
                    next.push(child);
                }
            }
        }
        current = next;
    }
    current
        .into_iter()
        .flat_map(|node| alternatives(schema, node))
        .filter_map(|s| s.get("properties").and_then(Json::as_object))
        .flat_map(|props| props.keys().cloned())
        .collect()
}

/// `node` with `$ref` resolved, plus the members of its `anyOf`/`oneOf`/`allOf`.
fn alternatives<'a>(root: &'a Json, node: &'a Json) -> Vec<&'a Json> {
    let mut out = Vec::new();
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        if out.len() > 32 {
            break;
        }
        let resolved = n
            .get("$ref")
            .and_then(Json::as_str)
            .and_then(|r| r.strip_prefix("#"))
            .and_then(|pointer| root.pointer(pointer))
            .unwrap_or(n);
        out.push(resolved);
        for combinator in ["anyOf", "oneOf", "allOf"] {
            if let Some(members) = resolved.get(combinator).and_then(Json::as_array) {
                stack.extend(members);
            }
        }
    }
    out
}
