//! The one error type of the composition library.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong, named by the input that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] homelab_config::LoadError),
    /// The public key to install on the nodes cannot be read.
    #[error(
        "cannot read ssh.public_key {} ({source}); create a key pair with: ssh-keygen -t ed25519 -N '' -f {}",
        path.display(),
        private.display()
    )]
    Key {
        /// The public key file.
        path: PathBuf,
        /// The private key file it belongs to.
        private: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No node has the control-plane role.
    #[error("no node has role = \"control-plane\"")]
    NoControlPlane,
    /// The VM layer failed.
    #[error(transparent)]
    Vms(#[from] libvirt_vm::Error),
    /// The cluster layer failed.
    #[error(transparent)]
    Cluster(Box<kubeadm_boot::cluster::ClusterError>),
    /// The upgrade stopped.
    #[error(transparent)]
    Upgrade(Box<kubeadm_boot::upgrade::UpgradeError>),
    /// The package repository's signing key could not be had or is not the pinned one.
    #[error(transparent)]
    SigningKey(#[from] kubeadm_boot::signing_key::KeyError),
    /// An SSH connection failed.
    #[error(transparent)]
    Ssh(#[from] homelab_ssh::SshError),
    /// A downloaded artifact could not be had or did not match its digest.
    #[error(transparent)]
    Artifact(#[from] crate::lock::ArtifactError),
    /// The platform layer failed.
    #[error(transparent)]
    Platform(#[from] platform::PlatformError),
    /// Pulumi ESC refused or could not be reached.
    #[error(transparent)]
    Esc(Box<esc_secrets::EscError>),
    /// The declared secrets could not be delivered.
    #[error(transparent)]
    Deliver(Box<esc_secrets::deliver::DeliverError>),
    /// The secrets phase needs `[esc]`.
    #[error("homelab.toml has no [esc] section (organization, project, environment, token)")]
    NoEsc,
    /// A secret `homelab.toml` refers to cannot be read.
    #[error("{key}: {source}")]
    Secret {
        /// The key naming it, e.g. `harbor.admin_password`.
        key: &'static str,
        /// Why.
        source: homelab_config::SecretError,
    },
    /// A phase took longer than `phases.<name>.timeout`.
    #[error("phase {phase} did not finish within {} (phases.{phase}.timeout)", humanize(*after))]
    Timeout {
        /// The phase.
        phase: &'static str,
        /// Its time limit.
        after: Duration,
    },
    /// `--from`, `--only` or `--until` named a phase the pipeline does not have.
    #[error("no phase named `{name}`; the phases are, in order: {}", known.join(", "))]
    UnknownPhase {
        /// The name given.
        name: String,
        /// The pipeline's phases.
        known: Vec<&'static str>,
    },
    /// The phase selection is contradictory.
    #[error("{0}")]
    Selection(String),
    /// An application template cannot be made from what was given.
    #[error("application template: {0}")]
    Template(String),
    /// A node given on the command line (`--node`, `--only`) is not usable.
    #[error("{flag} {value}: {reason}")]
    NodeOverride {
        /// The flag (`--node`, `--only`).
        flag: &'static str,
        /// What was given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A value could not be written back into `homelab.toml`.
    #[error("cannot update {}: {source}", path.display())]
    ConfigEdit {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A node's address cannot be what kubeadm advertises.
    #[error("node {node}: address {address} is not an IPv4 address (kubeadm advertises it)")]
    NodeAddress {
        /// The node.
        node: String,
        /// Its address.
        address: String,
    },
    /// The control-plane node is not among the selected ones.
    #[error("the control plane {0} is not among the selected nodes (--only?)")]
    ControlPlaneNotSelected(String),
    /// The offline node bundle is unusable.
    #[error(transparent)]
    Bundle(#[from] kubeadm_boot::bundle::BundleError),
    /// A registry (a mirror the bundle's images go to) refused or failed.
    #[error(transparent)]
    Registry(#[from] harbor_client::registry::RegistryError),
    /// A manifest could not be read.
    #[error(transparent)]
    Manifest(#[from] kubeadm_boot::cni::CniError),
    /// A step of an etcd restore failed.
    #[error("restoring etcd: {0}")]
    RestoreSteps(#[source] Box<kubeadm_boot::steps::RunError>),
    /// The cluster did not come back after an etcd restore.
    #[error("after restoring etcd: {0}")]
    RestoreNodes(#[source] Box<kubeadm_boot::nodes::NodesError>),
    /// An etcd snapshot failed or could not be read.
    #[error(transparent)]
    Backup(#[from] kubeadm_boot::backup::BackupError),
    /// The Kind provider: a tool is missing, `kind` or the container engine failed, or a
    /// cluster was left alone.
    #[error(transparent)]
    Kind(#[from] crate::kind::KindError),
    /// The `[backups.s3]` bucket could not be listed.
    #[error("listing {url}: {source}")]
    Bucket {
        /// `s3://bucket/prefix` at the endpoint.
        url: String,
        /// The S3 client's error.
        source: Box<object_store::Error>,
    },
    /// A worker thread stopped (a libvirt call panicked).
    #[error("a worker stopped: {0}")]
    Worker(#[source] tokio::task::JoinError),
    /// A URL given in the configuration does not parse.
    #[error("{what} {url}: {source}")]
    Url {
        /// What the URL is for (`mirror`).
        what: &'static str,
        /// The URL.
        url: String,
        /// The parser's error.
        source: url::ParseError,
    },
}

pub(crate) fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else if secs > 0 {
        format!("{secs}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl From<kubeadm_boot::cluster::ClusterError> for Error {
    fn from(e: kubeadm_boot::cluster::ClusterError) -> Self {
        Self::Cluster(Box::new(e))
    }
}

impl From<kubeadm_boot::upgrade::UpgradeError> for Error {
    fn from(e: kubeadm_boot::upgrade::UpgradeError) -> Self {
        Self::Upgrade(Box::new(e))
    }
}

impl From<esc_secrets::EscError> for Error {
    fn from(e: esc_secrets::EscError) -> Self {
        Self::Esc(Box::new(e))
    }
}

impl From<esc_secrets::deliver::DeliverError> for Error {
    fn from(e: esc_secrets::deliver::DeliverError) -> Self {
        Self::Deliver(Box::new(e))
    }
}
