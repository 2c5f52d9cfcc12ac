//! Pulumi property paths, as ESC's `esc env get` and `?property=` take them: `a.b[0]`,
//! `a["x.y"].c`, `["key with spaces"]`. One type parses and prints them; printing then
//! parsing gives the same path back.

use std::fmt;
use std::str::FromStr;

/// One step of a [`PropertyPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// An object's key.
    Key(String),
    /// An array's element.
    Index(usize),
}

/// A path to a value inside an environment.
///
/// ```
/// use esc_secrets::PropertyPath;
/// use esc_secrets::path::Segment;
///
/// let path: PropertyPath = r#"harbor["admin.password"]"#.parse()?;
/// assert_eq!(path.segments()[1], Segment::Key("admin.password".into()));
/// // Built or parsed, it prints the way ESC takes it, and parses back the same.
/// let built = PropertyPath::root("harbor").key("admin.password");
/// assert_eq!(built, path);
/// assert_eq!(built.to_string().parse::<PropertyPath>()?, built);
/// // A path that does not parse says where.
/// let err = "harbor..password".parse::<PropertyPath>().unwrap_err();
/// assert_eq!(err.position, 7);
/// # Ok::<(), esc_secrets::path::PathError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PropertyPath(Vec<Segment>);

/// A property path that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("property path `{path}`: {message} at character {}", position + 1)]
pub struct PathError {
    /// The text.
    pub path: String,
    /// Where (0-based, in characters).
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

impl PropertyPath {
    /// A path from its segments; `None` when empty or when it starts with an index (an
    /// environment's values are an object).
    pub fn new(segments: Vec<Segment>) -> Option<Self> {
        match segments.first() {
            Some(Segment::Key(_)) => Some(Self(segments)),
            _ => None,
        }
    }

    /// A path of one key.
    pub fn root(key: impl Into<String>) -> Self {
        Self(vec![Segment::Key(key.into())])
    }

    /// Its segments.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// This path with `key` after it.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.push(Segment::Key(key.into()));
        self
    }

    /// This path with `index` after it.
    #[must_use]
    pub fn index(mut self, index: usize) -> Self {
        self.0.push(Segment::Index(index));
        self
    }
}

/// A key printed without brackets: not empty, none of `.[]"\`, no whitespace or control
/// characters.
fn bare(key: &str) -> bool {
    !key.is_empty()
        && key.chars().all(|c| {
            !matches!(c, '.' | '[' | ']' | '"' | '\\') && !c.is_whitespace() && !c.is_control()
        })
}

impl fmt::Display for PropertyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if bare(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(key)?;
                }
                Segment::Key(key) => {
                    f.write_str("[\"")?;
                    for c in key.chars() {
                        match c {
                            '"' => f.write_str("\\\"")?,
                            '\\' => f.write_str("\\\\")?,
                            '\n' => f.write_str("\\n")?,
                            '\t' => f.write_str("\\t")?,
                            c => write!(f, "{c}")?,
                        }
                    }
                    f.write_str("\"]")?;
                }
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl FromStr for PropertyPath {
    type Err = PathError;

    fn from_str(text: &str) -> Result<Self, PathError> {
        let chars: Vec<char> = text.chars().collect();
        let fail = |position: usize, message: &str| PathError {
            path: text.to_owned(),
            position,
            message: message.to_owned(),
        };
        let mut segments = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '[' => {
                    i += 1;
                    if chars.get(i) == Some(&'"') {
                        i += 1;
                        let mut key = String::new();
                        loop {
                            match chars.get(i) {
                                None => return Err(fail(i, "unterminated quoted key")),
                                Some('"') => break,
                                Some('\\') => {
                                    let escaped = match chars.get(i + 1) {
                                        Some('"') => '"',
                                        Some('\\') => '\\',
                                        Some('n') => '\n',
                                        Some('t') => '\t',
                                        _ => return Err(fail(i, "unknown escape")),
                                    };
                                    key.push(escaped);
                                    i += 2;
                                }
                                Some(c) => {
                                    key.push(*c);
                                    i += 1;
                                }
                            }
                        }
                        i += 1;
                        if chars.get(i) != Some(&']') {
                            return Err(fail(i, "expected `]` after the quoted key"));
                        }
                        i += 1;
                        segments.push(Segment::Key(key));
                    } else {
                        let start = i;
                        while chars.get(i).is_some_and(char::is_ascii_digit) {
                            i += 1;
                        }
                        if start == i || chars.get(i) != Some(&']') {
                            return Err(fail(
                                start,
                                "expected an index (digits) or a quoted key in brackets",
                            ));
                        }
                        let digits: String = chars[start..i].iter().collect();
                        let index = digits
                            .parse()
                            .map_err(|_| fail(start, "index out of range"))?;
                        if segments.is_empty() {
                            return Err(fail(start, "a path starts with a key, not an index"));
                        }
                        segments.push(Segment::Index(index));
                        i += 1;
                    }
                }
                '.' if segments.is_empty() => return Err(fail(i, "a path cannot start with `.`")),
                c => {
                    if c == '.' {
                        i += 1;
                    } else if !segments.is_empty() {
                        return Err(fail(i, "expected `.` or `[`"));
                    }
                    let start = i;
                    while chars.get(i).is_some_and(|c| {
                        !matches!(c, '.' | '[' | ']' | '"' | '\\')
                            && !c.is_whitespace()
                            && !c.is_control()
                    }) {
                        i += 1;
                    }
                    if start == i {
                        return Err(fail(i, "expected a key"));
                    }
                    segments.push(Segment::Key(chars[start..i].iter().collect()));
                }
            }
        }
        Self::new(segments).ok_or_else(|| fail(0, "empty path"))
    }
}

impl serde::Serialize for PropertyPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(text: &str) -> PropertyPath {
        text.parse().unwrap()
    }

    #[test]
    fn dotted_indexed_and_quoted_segments() {
        assert_eq!(
            p(r#"harbor.robots[2]["pull.secret"]"#).segments(),
            [
                Segment::Key("harbor".into()),
                Segment::Key("robots".into()),
                Segment::Index(2),
                Segment::Key("pull.secret".into())
            ]
        );
        assert_eq!(p(r#"["a b"].c"#).to_string(), r#"["a b"].c"#);
        assert_eq!(p(r#"["plain"]"#).to_string(), "plain");
        assert_eq!(p("a.0").segments()[1], Segment::Key("0".into()));
    }

    #[test]
    fn bad_paths_say_where() {
        for (text, message) in [
            ("", "empty path"),
            (".a", "a path cannot start with `.`"),
            ("[0]", "a path starts with a key, not an index"),
            ("a..b", "expected a key"),
            (
                "a[x]",
                "expected an index (digits) or a quoted key in brackets",
            ),
            (r#"a["b"#, "unterminated quoted key"),
            (r#"a["b"c"#, "expected `]` after the quoted key"),
            ("a b", "expected `.` or `[`"),
        ] {
            let err = text.parse::<PropertyPath>().unwrap_err();
            assert_eq!(err.message, message, "{text}");
        }
        assert_eq!(
            "a..b".parse::<PropertyPath>().unwrap_err().to_string(),
            "property path `a..b`: expected a key at character 3"
        );
    }

    fn segment() -> impl Strategy<Value = Segment> {
        prop_oneof![
            any::<String>().prop_map(Segment::Key),
            "[a-z_][a-z0-9_-]{0,8}".prop_map(Segment::Key),
            (0usize..1000).prop_map(Segment::Index),
        ]
    }

    proptest! {
        #[test]
        fn printing_then_parsing_gives_the_path_back(
            first in any::<String>(),
            rest in proptest::collection::vec(segment(), 0..6),
        ) {
            let mut segments = vec![Segment::Key(first)];
            segments.extend(rest);
            let path = PropertyPath::new(segments).unwrap();
            let text = path.to_string();
            prop_assert_eq!(text.parse::<PropertyPath>().unwrap(), path);
        }

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in any::<String>()) {
            if let Ok(path) = text.parse::<PropertyPath>() {
                prop_assert_eq!(path.to_string().parse::<PropertyPath>().unwrap(), path);
            }
        }
    }
}
