//! The home lab's platform layer: what runs on the cluster once it exists.
//!
//! - [`argocd`]: Argo CD bootstrapped from its release manifest by server-side apply (the
//!   Application health check merged into `argocd-cm`, CRDs waited on until `Established`,
//!   workloads until rolled out), then the repository credentials and the root Application
//!   that deploys everything else from the GitOps repository.
//! - [`checks`]: deep readiness as data — a CRD Established, a workload rolled out, an
//!   admission webhook's Service with ready endpoints, a server-side dry-run create its
//!   webhook accepts, the fixed load-balancer address given, a condition `True`, Harbor's
//!   health — each asked once by [`checks::Check::evaluate`].
//! - [`components`]: the platform's components, their waves (the GitOps repository's) and
//!   their checks, one table.
//! - [`node_pull`]: every node pulls a probe image from Harbor through its own containerd,
//!   with the pull robot's login (the end-to-end check of [`registry`]).
//! - [`registry`]: Harbor's project and pull-only robot, the pull Secrets, and containerd on
//!   every node trusting Harbor with the homelab CA (over SSH).
//! - [`verify`]: end-to-end checks from the user's side — nodes Ready, DNS from a pod, HTTP
//!   through the ingress, the served certificate chaining to the homelab CA, Harbor's health.
//! - [`wait`]: the waves followed in order, each re-checked when a watched object changes,
//!   never on a fixed sleep; status of every component.
//!
//! The crate takes its own inputs ([`components::PlatformSpec`], [`argocd::Bootstrap`]); the
//! `homelab` crate builds them from `homelab.toml`.
//!
//! ```
//! use platform::open::Ui;
//!
//! // Where `homelab open argocd` serves Argo CD, and how its login is read (never the
//! // password itself).
//! let ui = Ui::argocd();
//! assert_eq!(ui.url(), "https://localhost:8080");
//! assert!(ui.login.to_string().contains("argocd-initial-admin-secret"));
//! ```
#![warn(missing_docs)]

pub mod argocd;
pub mod checks;
pub mod components;
pub mod event;
pub mod node_pull;
pub mod open;
pub mod registry;
pub mod verify;
pub mod wait;

pub use event::{Event, Events};

/// The field manager of everything this crate applies.
pub const FIELD_MANAGER: &str = "homelab-platform";

/// What went wrong bringing the platform up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// A manifest is not what it should be.
    #[error("{0}")]
    Manifest(String),
    /// An object could not be built from JSON.
    #[error("{what}: {source}")]
    Json {
        /// The object.
        what: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The Harbor URL does not parse (it is not repeated: it may hold a password).
    #[error("the Harbor URL does not parse: {source}")]
    HarborUrl {
        /// The parser's error.
        source: url::ParseError,
    },
    /// The GitOps repository's files could not be made.
    #[error(transparent)]
    Scaffold(#[from] gitops::scaffold::ScaffoldError),
    /// Applying failed.
    #[error(transparent)]
    Apply(#[from] kube_manifest::ManifestError),
    /// A call to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The client's error.
        source: kube::Error,
    },
    /// A call to Harbor failed.
    #[error("Harbor: {action}: {source}")]
    Harbor {
        /// What was being done.
        action: String,
        /// Harbor's answer.
        source: Box<harbor_client::harbor::HarborError>,
    },
    /// Steps on the nodes failed.
    #[error("on the nodes: {0}")]
    Nodes(kubeadm_boot::steps::RunError),
    /// A component did not become ready in time.
    #[error(
        "{component} (wave {wave}) is not ready after {}s: {check}: {detail}",
        waited.as_secs()
    )]
    NotReady {
        /// The component.
        component: String,
        /// Its wave.
        wave: i64,
        /// The check that failed, in words.
        check: String,
        /// What it last saw.
        detail: String,
        /// How long was waited.
        waited: std::time::Duration,
    },
}
