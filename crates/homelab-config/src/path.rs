//! Key paths such as `nodes[1].ip` that name one place in a configuration.

use std::fmt;

use serde::{Serialize, Serializer};

/// One step of a [`KeyPath`]: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A key of a table, e.g. `network`.
    Key(String),
    /// An index into an array, e.g. the `1` of `nodes[1]`.
    Index(usize),
}

/// A path from the root of the configuration to one value, printed as `nodes[1].ip`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The empty path: the document itself.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// Parses a dotted path such as `nodes[1].ip` or `network.nat_cidr`.
    ///
    /// Returns `None` when the text is not a well-formed path.
    pub fn parse(text: &str) -> Option<Self> {
        let mut segments = Vec::new();
        if text.is_empty() {
            return Some(Self::root());
        }
        for part in text.split('.') {
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if key.is_empty() {
                return None;
            }
            segments.push(Segment::Key(key.to_owned()));
            while !rest.is_empty() {
                let close = rest.find(']')?;
                let index = rest.get(1..close)?.parse().ok()?;
                segments.push(Segment::Index(index));
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return None;
                }
            }
        }
        Some(Self(segments))
    }

    /// This path extended by a table key.
    #[must_use]
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.into()));
        next
    }

    /// This path extended by an array index.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }

    /// The path without its last segment (the root stays the root).
    #[must_use]
    pub fn parent(&self) -> Self {
        let mut parent = self.clone();
        parent.0.pop();
        parent
    }

    /// The segments from the root down.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// Whether this is the root path.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `self` equals `other` or lies below it.
    pub fn starts_with(&self, other: &KeyPath) -> bool {
        self.0.starts_with(&other.0)
    }

    /// The last segment, if any.
    pub fn last(&self) -> Option<&Segment> {
        self.0.last()
    }

    pub(crate) fn push(&mut self, segment: Segment) {
        self.0.push(segment);
    }
}

impl From<Vec<Segment>> for KeyPath {
    fn from(segments: Vec<Segment>) -> Self {
        Self(segments)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

impl Serialize for KeyPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn displays_keys_and_indices() {
        let path = KeyPath::root().key("nodes").index(1).key("ip");
        assert_eq!(path.to_string(), "nodes[1].ip");
        assert_eq!(path.parent().to_string(), "nodes[1]");
        assert_eq!(KeyPath::root().to_string(), "(document)");
    }

    #[test]
    fn parse_rejects_malformed_paths() {
        for bad in ["a..b", "a[", "a[x]", "[1]", "a[1]b", "."] {
            assert_eq!(KeyPath::parse(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(
            segs in proptest::collection::vec(
                prop_oneof![
                    "[a-z_][a-z0-9_]{0,8}".prop_map(Segment::Key),
                    (0usize..50).prop_map(Segment::Index),
                ],
                1..6,
            )
        ) {
            // A path always starts with a key.
            let mut segs = segs;
            if matches!(segs[0], Segment::Index(_)) {
                segs.insert(0, Segment::Key("root".into()));
            }
            let path = KeyPath::from(segs);
            prop_assert_eq!(KeyPath::parse(&path.to_string()), Some(path));
        }
    }
}
