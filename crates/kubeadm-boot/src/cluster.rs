//! The whole cluster sequence in one call, as [`up`]: node preparation, `kubeadm init` and
//! the joins, the admin kubeconfig merged into the user's file, the pod network applied, and
//! every node `Ready`. Each part is idempotent, so a second call changes nothing, and a call
//! after a failure continues from what is already done.
//!
//! ```no_run
//! # async fn example(plan: kubeadm_boot::bootstrap::BootstrapPlan, runner: kubeadm_boot::steps::Runner,
//! #                  manifest: Vec<u8>) -> Result<(), kubeadm_boot::cluster::ClusterError> {
//! use kubeadm_boot::cluster::{self, PodNetwork, UpInput};
//! use kubeadm_boot::prepare::PackageSource;
//!
//! let input = UpInput::new(plan, "/root/.kube/config".into(), PodNetwork::new("kube-flannel.yml", manifest))
//!     .with_packages(PackageSource::default());
//! let report = cluster::up(&runner, &input, &|event| eprintln!("{event}")).await?;
//! println!("{} steps changed", report.changed());
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bootstrap::{self, BootstrapError, BootstrapPlan};
use crate::cni::{self, CniError};
use crate::kubeconfig::KubeconfigError;
use crate::nodes::{self, NodeState, NodesError};
use crate::prepare::{PackageSource, node_steps};
use crate::steps::{self, Outcome, Report, RunError, Runner};

/// The port every kubeadm control plane serves the API on.
pub const API_PORT: u16 = 6443;

pub use crate::kubeadm::CRI_SOCKET;

/// The pod network's manifest, already fetched and checked by the caller (the digest pin and
/// where the bytes come from are the caller's business).
#[derive(Clone)]
pub struct PodNetwork {
    /// Where the manifest came from (for messages).
    pub source: String,
    /// Its bytes.
    pub manifest: Vec<u8>,
}

impl PodNetwork {
    /// A manifest read from `source`.
    pub fn new(source: impl Into<String>, manifest: Vec<u8>) -> Self {
        Self {
            source: source.into(),
            manifest,
        }
    }
}

impl fmt::Debug for PodNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodNetwork")
            .field("source", &self.source)
            .field("bytes", &self.manifest.len())
            .finish()
    }
}

/// Everything [`up`] needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UpInput {
    /// The cluster, its control plane and workers.
    pub plan: BootstrapPlan,
    /// Where the Kubernetes packages come from.
    pub packages: PackageSource,
    /// The kubeconfig file the cluster's context is merged into.
    pub kubeconfig: PathBuf,
    /// The pod network.
    pub pod_network: PodNetwork,
    /// How long the nodes may take to become `Ready` once the pod network is applied.
    pub ready_timeout: Duration,
}

impl UpInput {
    /// The input with the default package repository and a ten-minute `Ready` wait.
    pub fn new(plan: BootstrapPlan, kubeconfig: PathBuf, pod_network: PodNetwork) -> Self {
        Self {
            plan,
            packages: PackageSource::default(),
            kubeconfig,
            pod_network,
            ready_timeout: Duration::from_secs(10 * 60),
        }
    }

    /// Another package repository (a mirror).
    #[must_use]
    pub fn with_packages(mut self, packages: PackageSource) -> Self {
        self.packages = packages;
        self
    }

    /// Another `Ready` wait.
    #[must_use]
    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }
}

pub use crate::event::{Event, Events, Stage};

/// What [`up`] did.
#[derive(Debug, Clone)]
pub struct UpReport {
    /// Every step's outcome, preparation and bootstrap.
    pub steps: Vec<Report>,
    /// The pod network's objects, as applied.
    pub applied: Vec<String>,
    /// The nodes at the end.
    pub nodes: Vec<NodeState>,
}

impl UpReport {
    /// How many steps changed something.
    pub fn changed(&self) -> usize {
        self.steps
            .iter()
            .filter(|r| r.outcome != Outcome::Unchanged)
            .count()
    }
}

/// Why [`up`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Node preparation failed on some hosts.
    #[error("preparing the nodes: {0}")]
    Prepare(#[source] RunError),
    /// `kubeadm init` or a join failed.
    #[error("bootstrapping the cluster: {0}")]
    Bootstrap(#[source] BootstrapError),
    /// The admin kubeconfig could not be fetched or merged.
    #[error("merging the admin kubeconfig into {path}: {source}")]
    Kubeconfig {
        /// The user's kubeconfig file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The cluster's context cannot be used.
    #[error("context {context} in {path}: {source}")]
    Client {
        /// The kubeconfig file.
        path: PathBuf,
        /// The context.
        context: String,
        /// Why.
        source: ClientError,
    },
    /// The pod network could not be applied.
    #[error("the pod network from {source_name}: {source}")]
    PodNetwork {
        /// Where the manifest came from.
        source_name: String,
        /// Why.
        #[source]
        source: CniError,
    },
    /// The nodes did not become `Ready`.
    #[error(transparent)]
    Nodes(#[from] NodesError),
}

impl ClusterError {
    /// The stage that failed.
    pub fn stage(&self) -> Stage {
        match self {
            Self::Prepare(_) => Stage::Prepare,
            Self::Bootstrap(_) => Stage::Bootstrap,
            Self::Kubeconfig { .. } | Self::Client { .. } => Stage::Kubeconfig,
            Self::PodNetwork { .. } => Stage::PodNetwork,
            Self::Nodes(_) => Stage::Ready,
        }
    }

    /// The step failures, when steps failed (to show what was done before).
    pub fn run_error(&self) -> Option<&RunError> {
        match self {
            Self::Prepare(e) | Self::Bootstrap(BootstrapError::Steps(e)) => Some(e),
            _ => None,
        }
    }
}

/// The node preparation steps of every node of `plan`, control plane first.
pub fn preparation(
    plan: &BootstrapPlan,
    packages: &PackageSource,
) -> Vec<(crate::ssh::Target, Vec<steps::Step>)> {
    let steps = node_steps(&plan.cluster.version, packages);
    std::iter::once(&plan.control_plane)
        .chain(&plan.workers)
        .map(|n| (n.target.clone(), steps.clone()))
        .collect()
}

/// Node preparation as a dry run: what would change on each node, changing nothing.
///
/// # Errors
/// A node cannot be reached, or a check cannot run.
pub async fn plan_preparation(
    runner: &Runner,
    plan: &BootstrapPlan,
    packages: &PackageSource,
) -> Result<Vec<Report>, ClusterError> {
    let mut dry = runner.clone();
    dry.dry_run = true;
    dry.run(preparation(plan, packages), &|_| {})
        .await
        .map_err(ClusterError::Prepare)
}

/// The bootstrap (kubeadm init, joins) as a dry run, as it would run on prepared nodes.
///
/// # Errors
/// A node cannot be reached, or a check cannot run.
pub async fn plan_bootstrap(
    runner: &Runner,
    plan: &BootstrapPlan,
) -> Result<Vec<Report>, ClusterError> {
    let mut dry = runner.clone();
    dry.dry_run = true;
    bootstrap::bootstrap(&dry, plan, &|_| {})
        .await
        .map_err(ClusterError::Bootstrap)
}

/// Node preparation and the bootstrap as a dry run: what would change, changing nothing.
/// The bootstrap's reports are those of a cluster whose nodes are already prepared.
///
/// # Errors
/// A node cannot be reached, or a check cannot run.
pub async fn plan(
    runner: &Runner,
    plan: &BootstrapPlan,
    packages: &PackageSource,
) -> Result<Vec<Report>, ClusterError> {
    let mut reports = plan_preparation(runner, plan, packages).await?;
    reports.extend(plan_bootstrap(runner, plan).await?);
    Ok(reports)
}

/// The API server URL of the cluster of `plan`.
pub fn server_url(plan: &BootstrapPlan) -> String {
    format!("https://{}:{API_PORT}", plan.control_plane.spec.address)
}

/// Fetches the control plane's admin kubeconfig and merges it into `kubeconfig` under a
/// context named after the cluster (other contexts are kept; the file is written 0600).
///
/// # Errors
/// The control plane cannot be reached, has no admin.conf, or the file cannot be written.
pub async fn merge_kubeconfig(
    runner: &Runner,
    plan: &BootstrapPlan,
    kubeconfig: &Path,
) -> Result<(), ClusterError> {
    let wrap = |source: Box<dyn std::error::Error + Send + Sync>| ClusterError::Kubeconfig {
        path: kubeconfig.to_owned(),
        source,
    };
    let session = bootstrap::control_plane_session(runner.pool(), plan)
        .await
        .map_err(|e| wrap(Box::new(e)))?;
    let admin = bootstrap::admin_kubeconfig(&session)
        .await
        .map_err(|e| wrap(Box::new(e)))?;
    crate::kubeconfig::merge_into_file(kubeconfig, &admin, &plan.cluster.name, &server_url(plan))
        .map_err(|e: KubeconfigError| wrap(Box::new(e)))
}

/// Why a client could not be made from a kubeconfig.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The file cannot be read, or has no such context, or its credentials do not load.
    #[error(transparent)]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// The client could not be built from it.
    #[error(transparent)]
    Client(#[from] kube::Error),
}

/// A client for `context` in the kubeconfig file `path`.
///
/// # Errors
/// The file cannot be read or has no such context.
pub async fn client(path: &Path, context: &str) -> Result<kube::Client, ClusterError> {
    let fail = |source: ClientError| ClusterError::Client {
        path: path.to_owned(),
        context: context.to_owned(),
        source,
    };
    let file = kube::config::Kubeconfig::read_from(path).map_err(|e| fail(e.into()))?;
    let config = kube::Config::from_custom_kubeconfig(
        file,
        &kube::config::KubeConfigOptions {
            context: Some(context.to_owned()),
            ..kube::config::KubeConfigOptions::default()
        },
    )
    .await
    .map_err(|e| fail(e.into()))?;
    kube::Client::try_from(config).map_err(|e| fail(e.into()))
}

/// Applies the pod network (its pod CIDR set to the cluster's) by server-side apply.
///
/// # Errors
/// The manifest does not parse, or the API server refuses an object.
pub async fn apply_pod_network(
    client: &kube::Client,
    plan: &BootstrapPlan,
    network: &PodNetwork,
) -> Result<Vec<String>, ClusterError> {
    let fail = |source: CniError| ClusterError::PodNetwork {
        source_name: network.source.clone(),
        source,
    };
    let text = String::from_utf8_lossy(&network.manifest);
    let mut objects = cni::parse_manifest(&network.source, &text).map_err(fail)?;
    cni::set_pod_network(&mut objects, plan.cluster.pod_cidr).map_err(fail)?;
    cni::apply(client, &objects).await.map_err(fail)
}

/// Prepares every node (control plane first in the list; nodes in parallel).
///
/// # Errors
/// A step failed on some node ([`ClusterError::Prepare`]).
pub async fn prepare_nodes(
    runner: &Runner,
    plan: &BootstrapPlan,
    packages: &PackageSource,
    events: Events<'_>,
) -> Result<Vec<Report>, ClusterError> {
    events(Event::Stage(Stage::Prepare));
    runner
        .run(preparation(plan, packages), events)
        .await
        .map_err(ClusterError::Prepare)
}

/// Bootstraps the prepared nodes (kubeadm init, joins) and merges the admin kubeconfig.
/// Returns every step's report and a client for the new cluster's context.
///
/// # Errors
/// The first stage that fails ([`ClusterError::stage`]); everything before it stays done.
pub async fn bootstrap_nodes(
    runner: &Runner,
    plan: &BootstrapPlan,
    kubeconfig: &Path,
    events: Events<'_>,
) -> Result<(Vec<Report>, kube::Client), ClusterError> {
    events(Event::Stage(Stage::Bootstrap));
    let steps = bootstrap::bootstrap(runner, plan, events)
        .await
        .map_err(ClusterError::Bootstrap)?;
    events(Event::Stage(Stage::Kubeconfig));
    merge_kubeconfig(runner, plan, kubeconfig).await?;
    let client = client(kubeconfig, &plan.cluster.name).await?;
    Ok((steps, client))
}

/// The first part of [`up`]: prepare every node ([`prepare_nodes`]), bootstrap and merge the
/// kubeconfig ([`bootstrap_nodes`]). Returns every step's report and a client for the new
/// cluster's context.
///
/// # Errors
/// The first stage that fails ([`ClusterError::stage`]); everything before it stays done.
pub async fn up_nodes(
    runner: &Runner,
    plan: &BootstrapPlan,
    packages: &PackageSource,
    kubeconfig: &Path,
    events: Events<'_>,
) -> Result<(Vec<Report>, kube::Client), ClusterError> {
    let mut steps = prepare_nodes(runner, plan, packages, events).await?;
    let (more, client) = bootstrap_nodes(runner, plan, kubeconfig, events).await?;
    steps.extend(more);
    Ok((steps, client))
}

/// The second part of [`up`]: apply the pod network and wait until every node is `Ready`.
/// Returns the applied objects and the nodes.
///
/// # Errors
/// The manifest is refused, or the nodes are not `Ready` within `ready_timeout`.
pub async fn up_network(
    client: &kube::Client,
    plan: &BootstrapPlan,
    network: &PodNetwork,
    ready_timeout: Duration,
    events: Events<'_>,
) -> Result<(Vec<String>, Vec<NodeState>), ClusterError> {
    events(Event::Stage(Stage::PodNetwork));
    let applied = apply_pod_network(client, plan, network).await?;
    for object in &applied {
        events(Event::Applied(object.clone()));
    }
    events(Event::Stage(Stage::Ready));
    let names: Vec<String> = std::iter::once(&plan.control_plane)
        .chain(&plan.workers)
        .map(|n| n.spec.name.clone())
        .collect();
    let nodes = nodes::wait_nodes_ready(client, &names, None, ready_timeout, events).await?;
    Ok((applied, nodes))
}

/// The whole sequence: prepare every node, bootstrap, merge the kubeconfig, apply the pod
/// network, wait until every node is `Ready` ([`up_nodes`], then [`up_network`]).
///
/// # Errors
/// The first stage that fails ([`ClusterError::stage`]); everything before it stays done.
pub async fn up(
    runner: &Runner,
    input: &UpInput,
    events: Events<'_>,
) -> Result<UpReport, ClusterError> {
    let plan = &input.plan;
    let (steps, client) =
        up_nodes(runner, plan, &input.packages, &input.kubeconfig, events).await?;
    let (applied, nodes) = up_network(
        &client,
        plan,
        &input.pod_network,
        input.ready_timeout,
        events,
    )
    .await?;
    Ok(UpReport {
        steps,
        applied,
        nodes,
    })
}
