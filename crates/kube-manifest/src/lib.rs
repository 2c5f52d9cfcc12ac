//! Kubernetes manifests for tools that install software into a cluster.
//!
//! - [`parse`]: a multi-document YAML manifest (a release file, a kustomize build) into
//!   objects, each checked to be a Kubernetes object, errors naming the document.
//! - [`check_sha256`]: a downloaded manifest against its pinned digest.
//! - [`apply`]: server-side apply with one field manager, in dependency order: namespaces,
//!   then CustomResourceDefinitions, waited on (by watching) until the API server reports
//!   them `Established`, then everything else; each object's resource and scope from API
//!   discovery; the result says which objects the apply changed, so a re-run can report
//!   "nothing to do".
//!
//! The crate knows no particular software: Flannel (kubeadm-boot) and the platform's
//! components (platform) are both applied through it.
//!
//! ```
//! let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: lab}\n---\n\
//!             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: lab}\n";
//! let objects = kube_manifest::parse("lab.yaml", text)?;
//! let kinds: Vec<&str> = objects.iter().filter_map(|o| o.types.as_ref()).map(|t| t.kind.as_str()).collect();
//! assert_eq!(kinds, ["Namespace", "ConfigMap"]);
//! // A document that is not a Kubernetes object is refused, naming the document.
//! let err = kube_manifest::parse("bad.yaml", "just: data\n").unwrap_err();
//! assert!(err.to_string().contains("bad.yaml"));
//! # Ok::<(), kube_manifest::ManifestError>(())
//! ```
#![warn(missing_docs)]

mod apply;
mod parse;

pub use apply::{Applied, ApplyOptions, apply, crds_established, label};
pub use parse::{check_sha256, parse, sha256_hex};

/// What went wrong with a manifest or its apply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// A document of the manifest is not YAML, or not of an object's shape.
    #[error("{source_name}: document {index}: {source}")]
    Parse {
        /// Manifest name (URL or file).
        source_name: String,
        /// 1-based document number.
        index: usize,
        /// The YAML parser's error.
        source: serde_norway::Error,
    },
    /// A document of the manifest has no apiVersion, kind or metadata.name.
    #[error(
        "{source_name}: document {index}: not a Kubernetes object (apiVersion, kind and metadata.name are needed)"
    )]
    NotAnObject {
        /// Manifest name (URL or file).
        source_name: String,
        /// 1-based document number.
        index: usize,
    },
    /// The manifest's digest is not the pinned one.
    #[error(
        "{source_name}: sha256 is {actual}, but {expected} is pinned: the file is not the release it claims to be (or the pin is for another version)"
    )]
    Digest {
        /// Manifest name (URL or file).
        source_name: String,
        /// The pinned digest.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// An object's apiVersion is malformed.
    #[error("{kind} {name}: {source}")]
    ApiVersion {
        /// Kind.
        kind: String,
        /// `namespace/name` or `name`.
        name: String,
        /// kube's parse of the apiVersion.
        source: kube::core::gvk::ParseGroupVersionError,
    },
    /// The API server refused an object or could not be reached.
    #[error("applying {kind} {name}: {source}")]
    Apply {
        /// Kind.
        kind: String,
        /// `namespace/name` or `name`.
        name: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A non-forced apply set fields another field manager owns to other values.
    #[error(
        "{kind} {name}: {message} (another tool manages these fields: apply with force to take them over, or leave them out)"
    )]
    Conflict {
        /// Kind.
        kind: String,
        /// `namespace/name` or `name`.
        name: String,
        /// The API server's account of the conflict: each manager and its fields.
        message: String,
    },
    /// The object has a field its type's schema does not declare (a misspelling, a field
    /// of another version of the CRD, or a CRD older than the object).
    #[error(
        "{kind} {name}: {api_version} {kind} has no field {field} (misspelt, or written for another version of {kind}'s definition)"
    )]
    UnknownField {
        /// Kind.
        kind: String,
        /// `namespace/name` or `name`.
        name: String,
        /// The apiVersion the object was applied as.
        api_version: String,
        /// The field's path (`.spec.colur`).
        field: String,
    },
    /// A CustomResourceDefinition did not become `Established` in time.
    #[error(
        "CustomResourceDefinition {name} is not Established after {waited_secs}s ({last}); its custom resources cannot be applied"
    )]
    NotEstablished {
        /// The CRD.
        name: String,
        /// How long was waited.
        waited_secs: u64,
        /// Its last conditions, or why none were seen.
        last: String,
    },
}
