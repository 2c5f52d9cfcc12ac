//! Image references: `registry[:port]/repository[:tag][@digest]`, as the distribution spec
//! and container tools write them. The registry part is required here: homelab never guesses
//! a default registry.

use std::fmt;
use std::str::FromStr;

/// A reference that could not be parsed; says which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image reference {input:?}: {reason}")]
pub struct ReferenceError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A content digest, `sha256:<64 hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        ))
    }

    /// The digest of a finished SHA-256 hash.
    pub fn from_sha256(hash: [u8; 32]) -> Self {
        Self(format!("sha256:{}", hex::encode(hash)))
    }

    /// A digest from its hex part (as in `blobs/sha256/<hex>`).
    ///
    /// # Errors
    /// Not 64 lower-case hex digits.
    pub fn from_sha256_hex(hex: &str) -> Result<Self, ReferenceError> {
        format!("sha256:{hex}").parse()
    }

    /// The whole digest, `sha256:…`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, h)| h)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ReferenceError {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| err("only sha256 digests are supported (sha256:<64 hex digits>)"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err("a sha256 digest has 64 lower-case hex digits"));
        }
        Ok(Self(s.to_owned()))
    }
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// Repository path, possibly nested (`project/team/app`).
    pub repository: String,
    /// Tag, if given.
    pub tag: Option<String>,
    /// Digest, if given (it wins over the tag when both are).
    pub digest: Option<Digest>,
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+ separated by '.', '_', '__' or '-'+ ; checked loosely as the spec's grammar.
    !c.is_empty()
        && c.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
}

fn valid_tag(t: &str) -> bool {
    (1..=128).contains(&t.len())
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Reference {
    /// What the registry is asked for: the digest when known, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_ref()
            .map(Digest::as_str)
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same repository at another tag.
    #[must_use]
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ReferenceError {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|e| err(&e.reason))?)),
            None => (s, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| err("expected registry/repository[:tag]; the registry is required"))?;
        if registry.is_empty()
            || !registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(err(
                "the registry must be a host name or address, with an optional port",
            ));
        }
        // A ':' after the last '/' separates the tag.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        if repository.len() > 255 || !repository.split('/').all(valid_component) {
            return Err(err(
                "repository path components are lower-case letters and digits, separated by '.', '_' or '-'",
            ));
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(err(
                "a tag is 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
            ));
        }
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// A list of image references, one per line: blank lines and `#` comments are skipped. A
/// reference that does not parse is reported with its 1-based line number.
///
/// # Errors
/// The first line that is not a reference: `(line, why)`.
pub fn parse_list(text: &str) -> Result<Vec<Reference>, (usize, ReferenceError)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim()))
        .filter(|(_, l)| !l.is_empty())
        .map(|(line, l)| l.parse().map_err(|e| (line, e)))
        .collect()
}

/// An OCI image layout on disk with an optional tag, written `DIR:TAG` (`DIR` alone: no
/// tag). A colon followed by a path (`./a:b/c`) belongs to the directory's name.
pub fn split_layout(text: &str) -> (std::path::PathBuf, Option<String>) {
    match text.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => {
            (std::path::PathBuf::from(dir), Some(tag.to_owned()))
        }
        _ => (std::path::PathBuf::from(text), None),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_skip_blanks_and_comments_and_name_the_bad_line() {
        let list = super::parse_list(
            "# mirrored for the lab\n\nregistry.k8s.io/pause:3.10  # kubeadm's\nghcr.io/a/b:1\n",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].to_string(), "ghcr.io/a/b:1");
        let (line, err) = super::parse_list("ghcr.io/a/b:1\nnot a reference\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(err.to_string().contains("not a reference"), "{err}");
    }

    #[test]
    fn layouts_may_carry_a_tag() {
        use std::path::PathBuf;
        assert_eq!(
            super::split_layout("/tmp/img:v1"),
            (PathBuf::from("/tmp/img"), Some("v1".into()))
        );
        assert_eq!(
            super::split_layout("/tmp/img"),
            (PathBuf::from("/tmp/img"), None)
        );
        assert_eq!(
            super::split_layout("./a:b/c"),
            (PathBuf::from("./a:b/c"), None)
        );
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_usual_forms() {
        let r: Reference = "127.0.0.1:5000/library/busybox:1.36".parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("1.36"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r: Reference = format!("harbor.lan/p/team/app@{d}").parse().unwrap();
        assert_eq!(r.repository, "p/team/app");
        assert_eq!(r.reference(), d);
        let r: Reference = "harbor.lan/p/app".parse().unwrap();
        assert_eq!(r.reference(), "latest");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (input, part) in [
            ("busybox", "registry is required"),
            ("h/Upper", "lower-case"),
            ("h/app:-bad", "a tag is"),
            ("h/app@sha256:abc", "64 lower-case hex"),
            ("h/app@md5:abc", "only sha256"),
        ] {
            let e = input.parse::<Reference>().unwrap_err().to_string();
            assert!(e.contains(part) && e.contains(input), "{input}: {e}");
        }
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9._-]{0,8}[a-z0-9])?"
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(
            host in "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5})?(:[1-9][0-9]{0,4})?",
            path in proptest::collection::vec(component(), 1..4),
            tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            digest in proptest::option::of("[0-9a-f]{64}"),
        ) {
            let r = Reference {
                registry: host,
                repository: path.join("/"),
                tag,
                digest: digest.map(|d| Digest::from_sha256_hex(&d).unwrap()),
            };
            let text = r.to_string();
            prop_assert_eq!(text.parse::<Reference>().unwrap(), r);
        }

        #[test]
        fn any_input_parses_or_names_itself(input in ".{0,60}") {
            if let Err(e) = input.parse::<Reference>() {
                prop_assert_eq!(e.input, input);
            }
        }
    }
}
