//! Parsing manifests and checking their digests.

use kube::api::DynamicObject;
use sha2::{Digest, Sha256};

use crate::ManifestError;

/// The objects of a multi-document YAML manifest, in file order (empty documents skipped).
///
/// # Errors
/// A document is not YAML, or not an object with apiVersion, kind and metadata.name.
pub fn parse(source_name: &str, text: &str) -> Result<Vec<DynamicObject>, ManifestError> {
    use serde::Deserialize;
    let mut objects = Vec::new();
    for (i, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let err = |source| ManifestError::Parse {
            source_name: source_name.to_owned(),
            index: i + 1,
            source,
        };
        let value = serde_norway::Value::deserialize(document).map_err(err)?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_norway::from_value(value).map_err(err)?;
        let typed = object
            .types
            .as_ref()
            .is_some_and(|t| !t.kind.is_empty() && !t.api_version.is_empty());
        if !typed || object.metadata.name.as_deref().is_none_or(str::is_empty) {
            return Err(ManifestError::NotAnObject {
                source_name: source_name.to_owned(),
                index: i + 1,
            });
        }
        objects.push(object);
    }
    Ok(objects)
}

/// The sha256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks `bytes` against a pinned sha256 (hex, either case, optionally `sha256:`-prefixed).
///
/// # Errors
/// [`ManifestError::Digest`] when the digests differ.
pub fn check_sha256(source_name: &str, bytes: &[u8], expected: &str) -> Result<(), ManifestError> {
    let actual = sha256_hex(bytes);
    let wanted = expected
        .trim()
        .trim_start_matches("sha256:")
        .to_ascii_lowercase();
    if actual == wanted {
        Ok(())
    } else {
        Err(ManifestError::Digest {
            source_name: source_name.to_owned(),
            expected: wanted,
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::fmt::Write as _;

    #[test]
    fn documents_are_objects_in_file_order_and_empty_ones_are_skipped() {
        let text = "---\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n# only a comment\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: b\n  namespace: a\n";
        let objects = parse("m.yaml", text).unwrap();
        let names: Vec<_> = objects
            .iter()
            .map(|o| {
                format!(
                    "{} {}",
                    o.types.as_ref().unwrap().kind,
                    o.metadata.name.as_deref().unwrap()
                )
            })
            .collect();
        assert_eq!(names, ["Namespace a", "Deployment b"]);
    }

    #[test]
    fn a_document_that_is_not_an_object_is_named_by_its_number() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\nkind: ConfigMap\nmetadata:\n  name: x\n";
        let err = parse("m.yaml", text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.yaml: document 2: not a Kubernetes object (apiVersion, kind and metadata.name are needed)"
        );
        assert!(
            matches!(err, ManifestError::NotAnObject { index: 2, .. }),
            "{err:?}"
        );
        let err = parse("m.yaml", "a: [1,\n").unwrap_err();
        assert!(err.to_string().starts_with("m.yaml: document 1: "), "{err}");
        // The YAML parser's own error is kept.
        assert!(
            std::error::Error::source(&err)
                .and_then(|e| e.downcast_ref::<serde_norway::Error>())
                .is_some(),
            "{err:?}"
        );
        let err = parse(
            "m.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: \"\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
    }

    #[test]
    fn a_digest_is_checked_in_either_case_with_or_without_its_prefix() {
        let digest = sha256_hex(b"abc");
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        check_sha256("f", b"abc", &digest).unwrap();
        check_sha256("f", b"abc", &format!("sha256:{}", digest.to_uppercase())).unwrap();
        let err = check_sha256("f", b"abd", &digest).unwrap_err();
        assert!(matches!(err, ManifestError::Digest { ref expected, .. } if *expected == digest));
    }

    proptest! {
        /// A manifest written from objects parses back to the same objects, whatever the
        /// names and however many documents (and empty ones) there are.
        #[test]
        fn written_objects_parse_back(
            names in proptest::collection::vec("[a-z][a-z0-9-]{0,20}", 0..6),
            empty in proptest::collection::vec(any::<bool>(), 6),
        ) {
            let mut text = String::new();
            for (i, name) in names.iter().enumerate() {
                if empty[i] {
                    text.push_str("---\n");
                }
                writeln!(
                    text,
                    "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name:?}\ndata:\n  k: \"{i}\""
                )
                .unwrap();
            }
            let objects = parse("p", &text).unwrap();
            prop_assert_eq!(objects.len(), names.len());
            for (i, (object, name)) in objects.iter().zip(&names).enumerate() {
                prop_assert_eq!(object.metadata.name.as_deref(), Some(name.as_str()));
                let want = i.to_string();
                prop_assert_eq!(object.data["data"]["k"].as_str(), Some(want.as_str()));
            }
        }
    }
}
