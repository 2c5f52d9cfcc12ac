//! Errors of the VM layer; each names the object and the operation that failed.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// libvirt could not be reached.
    #[cfg(feature = "libvirt")]
    #[error("cannot connect to libvirt at {uri}: {source}")]
    Connect {
        /// The connection URI.
        uri: String,
        /// libvirt's error.
        source: virt::error::Error,
    },
    /// A libvirt call failed.
    #[cfg(feature = "libvirt")]
    #[error("libvirt: cannot {action}: {source}")]
    Libvirt {
        /// What was being done, naming the object, e.g. "define domain k8s-cp-1".
        action: String,
        /// libvirt's error.
        source: virt::error::Error,
    },
    /// XML could not be produced.
    #[error(transparent)]
    Xml(#[from] crate::xml::XmlError),
    /// A cloud-init seed could not be built.
    #[error(transparent)]
    Seed(#[from] crate::seed::SeedError),
    /// The plan has conflicts: objects in the way that are not ours.
    #[error("refusing to apply: {}", .0.join("; "))]
    Conflicts(Vec<String>),
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Nodes did not become ready in time.
    #[error("{} not ready after {:.0?}:\n{}", if .nodes.len() == 1 { "node" } else { "nodes" }, .elapsed, .nodes.join("\n"))]
    NotReady {
        /// How long was waited.
        elapsed: Duration,
        /// One line per node that is not ready: name, what was last seen, console log path.
        nodes: Vec<String>,
    },
    /// Preflight checks failed.
    #[error("preflight failed:\n  {}", .0.join("\n  "))]
    Preflight(Vec<String>),
    /// The base image could not be built.
    #[error("image build: {0}")]
    Image(String),
    /// The spec is unusable.
    #[error("invalid VM spec: {0}")]
    Spec(String),
    /// A worker task of this crate stopped before it answered (it panicked or was
    /// cancelled).
    #[cfg(feature = "libvirt")]
    #[error("the {what} worker stopped: {source}")]
    Worker {
        /// Which (`libvirt`, `image build`, `apply`, `seed`).
        what: &'static str,
        /// Why.
        source: tokio::task::JoinError,
    },
    /// The SSH private key of the readiness check cannot be used.
    #[cfg(feature = "ssh")]
    #[error(transparent)]
    Ssh(#[from] homelab_ssh::SshError),
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(feature = "libvirt")]
pub(crate) fn libvirt(action: impl Into<String>) -> impl FnOnce(virt::error::Error) -> Error {
    let action = action.into();
    move |source| Error::Libvirt { action, source }
}
