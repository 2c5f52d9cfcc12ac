//! The `cluster` phase: kubeadm init and joins on the prepared nodes (the `nodes` phase), the
//! admin kubeconfig, the pod network and every node `Ready` (`kubeadm-boot`). With `cluster.provider = "existing"`
//! the phase of the same name only reads the cluster the kubeconfig names.

use futures::FutureExt;
use futures::future::BoxFuture;
use kubeadm_boot::cluster::{self as boot, PodNetwork};
use kubeadm_boot::nodes::{self, NodeState};
use kubeadm_boot::prepare::PackageSource;
use kubeadm_boot::steps::{Outcome, Report, Runner};

use crate::error::Error;
use crate::inputs;
use crate::lab::Lab;
use crate::lock::{self, LockFile};
use crate::phase::{
    Change, Check, Event, Events, Phase, PhasePlan, PhaseReport, PhaseStatus, StatusItem,
};

/// The phase's name.
pub const NAME: &str = "cluster";

/// The `cluster` phase of `cluster.provider = "libvirt"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterPhase;

/// The `cluster` phase of `cluster.provider = "existing"`: nothing to make, only to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExistingCluster;

pub(crate) fn runner(lab: &Lab) -> Result<Runner, Error> {
    let mut runner = Runner::new(lab.ssh_pool()?);
    runner.parallelism = lab.options.parallelism;
    Ok(runner)
}

/// The package source of `[packages]` with its signing key fetched on this machine and
/// checked against the pinned fingerprint.
///
/// # Errors
/// The key cannot be downloaded or is not the pinned one.
pub async fn fetched_packages(
    lab: &Lab,
    version: &kubeadm_boot::kubeadm::Version,
) -> Result<PackageSource, Error> {
    let mut packages = inputs::package_source(&lab.config);
    if let Some(bundle) = lab.node_bundle()? {
        // From the bundle: no package repository, so no key to fetch.
        return Ok(packages.with_bundle(Some(bundle)));
    }
    packages.fetch_key(&reqwest::Client::new(), version).await?;
    Ok(packages)
}

/// The cluster layer's plan of the whole cluster: `cluster.slow_nodes` is also on when the
/// VMs run under software emulation.
async fn cluster_plan(lab: &Lab) -> Result<kubeadm_boot::bootstrap::BootstrapPlan, Error> {
    let mut plan = inputs::bootstrap_plan(&lab.config)?;
    if !plan.cluster.slow_nodes
        && lab.config.cluster.provider == homelab_config::ClusterProvider::Libvirt
        && crate::vms::emulated(lab).await
    {
        plan.cluster.slow_nodes = true;
    }
    Ok(plan)
}

/// Flannel's release manifest of `versions.flannel`, checked against the pin in
/// `homelab.toml` or the digest `homelab.lock` recorded (recorded on first use).
///
/// # Errors
/// The download fails or the digest differs.
pub async fn pod_network(lab: &Lab, events: Events<'_>) -> Result<PodNetwork, Error> {
    let url = lab
        .config
        .versions
        .flannel_manifest
        .clone()
        .unwrap_or_else(|| {
            kubeadm_boot::cni::flannel_manifest_url(lab.config.versions.flannel.as_str())
        });
    // Offline: the bundle's copy (checked against SHA256SUMS when the bundle was opened, and
    // against the pin when there is one).
    if let Some(bundle) = lab.node_bundle()? {
        let file = bundle.file(crate::bundle::FLANNEL_MANIFEST)?;
        let bytes = std::fs::read(&file.local).map_err(|source| {
            Error::Bundle(kubeadm_boot::bundle::BundleError::Read {
                path: file.local.clone(),
                source,
            })
        })?;
        if let Some(pin) = &lab.config.versions.flannel_manifest_sha256
            && !pin.trim().eq_ignore_ascii_case(&file.sha256)
        {
            return Err(Error::Artifact(crate::lock::ArtifactError::Mismatch {
                url: file.local.display().to_string(),
                expected: pin.trim().to_ascii_lowercase(),
                actual: file.sha256.clone(),
                origin: "the pin in homelab.toml".into(),
                hint: "The bundle holds another Flannel manifest than the pinned one: make the bundle from the pinned release, or update the pin.".into(),
            }));
        }
        return Ok(PodNetwork::new(file.local.display().to_string(), bytes));
    }
    let mut lock = LockFile::load(&lab.lock_path())?;
    let fetched = lock::fetch(
        &reqwest::Client::new(),
        &url,
        lab.config.versions.flannel_manifest_sha256.as_deref(),
        &mut lock,
        lab.options.update_lock,
    )
    .await?;
    if fetched.recorded {
        events(Event::Progress {
            phase: NAME,
            message: format!(
                "recorded sha256 {} of {url} in {} (commit it beside homelab.toml)",
                fetched.sha256,
                lock.path().display()
            ),
        });
    }
    Ok(PodNetwork::new(url, fetched.bytes))
}

/// Whether every node's VM runs, as libvirt says (the cluster cannot be planned before). Only
/// libvirt is asked: no SSH probe (the phases that follow connect anyway).
pub(crate) async fn vms_missing(lab: &Lab) -> Option<String> {
    match crate::vms::domain_states(lab).await {
        Err(e) => Some(e.to_string()),
        Ok(states) => {
            let down: Vec<String> = states
                .iter()
                .filter(|(_, state)| *state != "running")
                .map(|(name, state)| format!("{name} ({state})"))
                .collect();
            (!down.is_empty()).then(|| format!("nodes not running yet: {}", down.join(", ")))
        }
    }
}

fn node_item(n: &NodeState) -> StatusItem {
    StatusItem {
        name: n.name.clone(),
        state: if n.ready { "Ready" } else { "NotReady" }.into(),
        detail: format!(
            "kubelet {} | {}{}",
            n.kubelet_version,
            n.container_runtime,
            if n.unschedulable { " | cordoned" } else { "" }
        ),
        healthy: n.ready && !n.unschedulable,
    }
}

/// The cluster's nodes as `status` shows them; `wanted` are the nodes that must be there
/// (missing ones are listed as such).
async fn node_status(lab: &Lab, wanted: &[String]) -> PhaseStatus {
    let listed = match lab.kube_client().await {
        Ok(client) => nodes::list(&client).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match listed {
        Ok(found) => {
            let mut items: Vec<StatusItem> = found.iter().map(node_item).collect();
            for name in wanted {
                if !found.iter().any(|n| &n.name == name) {
                    items.push(StatusItem {
                        name: name.clone(),
                        state: "missing".into(),
                        detail: "not registered with the API server".into(),
                        healthy: false,
                    });
                }
            }
            PhaseStatus {
                phase: NAME,
                items,
                error: None,
            }
        }
        Err(error) => PhaseStatus {
            phase: NAME,
            items: Vec::new(),
            error: Some(error),
        },
    }
}

/// The checks of a running cluster: the API answers; every wanted node is registered and
/// `Ready`; every kubelet runs `version` (when given).
async fn cluster_checks(lab: &Lab, wanted: &[String], version: Option<String>) -> Vec<Check> {
    let client = match lab.kube_client().await {
        Ok(client) => client,
        Err(e) => {
            return vec![Check::fail(
                NAME,
                "kubeconfig",
                e.to_string(),
                "run `homelab up --only cluster` (it merges the context), or set cluster.kubeconfig and cluster.context",
            )];
        }
    };
    let mut checks = Vec::new();
    match client.apiserver_version().await {
        Ok(v) => checks.push(Check::pass(
            NAME,
            "API server",
            format!("answers, {}", v.git_version),
        )),
        Err(e) => {
            checks.push(Check::fail(
                NAME,
                "API server",
                e.to_string(),
                "check the control plane: `homelab-boot exec --only <control plane> -- sudo crictl ps`",
            ));
            return checks;
        }
    }
    let found = match nodes::list(&client).await {
        Ok(found) => found,
        Err(e) => {
            checks.push(Check::fail(
                NAME,
                "nodes",
                e.to_string(),
                "see the API server check",
            ));
            return checks;
        }
    };
    let names: Vec<String> = if wanted.is_empty() {
        found.iter().map(|n| n.name.clone()).collect()
    } else {
        wanted.to_vec()
    };
    for name in &names {
        let check = format!("node {name}");
        checks.push(match found.iter().find(|n| &n.name == name) {
            None => Check::fail(
                NAME,
                check,
                "not registered with the API server",
                "run `homelab up --only cluster` (joins the nodes missing)",
            ),
            Some(n) if !n.ready => Check::fail(
                NAME,
                check,
                n.message.clone(),
                format!("look at its kubelet: homelab-boot exec --only {name} -- sudo journalctl -u kubelet -n 50"),
            ),
            Some(n) => match &version {
                Some(v) if &n.kubelet_version != v => Check::fail(
                    NAME,
                    check,
                    format!("Ready, kubelet {} (configured: {v})", n.kubelet_version),
                    "run `homelab upgrade`",
                ),
                _ => Check::pass(NAME, check, format!("Ready, kubelet {}", n.kubelet_version)),
            },
        });
    }
    checks
}

/// Where a version reached by an upgrade was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// `cluster.kubernetes_version` in this file now says it.
    File(std::path::PathBuf),
    /// The file already said it.
    AlreadyThere(std::path::PathBuf),
    /// The embedded default is in use: there is no file to write it into.
    Embedded,
}

/// Writes `version` into the lab's `homelab.toml` as `cluster.kubernetes_version` (comments
/// and everything else kept), so that configuration and cluster cannot silently disagree
/// after an upgrade to a version the file did not name: preparation would otherwise try to
/// install the older packages on a node the upgrade moved.
///
/// # Errors
/// The file cannot be read or written, or the result would not be valid.
pub fn record_kubernetes_version(
    lab: &Lab,
    version: &kubeadm_boot::kubeadm::Version,
) -> Result<Recorded, Error> {
    let Some(path) = &lab.config_file else {
        return Ok(Recorded::Embedded);
    };
    let edit_err = |source: Box<dyn std::error::Error + Send + Sync>| Error::ConfigEdit {
        path: path.clone(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(|e| edit_err(Box::new(e)))?;
    let wanted = format!("{}.{}.{}", version.major, version.minor, version.patch);
    if lab.config.cluster.kubernetes_version.to_string() == wanted {
        return Ok(Recorded::AlreadyThere(path.clone()));
    }
    let updated = homelab_config::edit::set_string(&text, "cluster.kubernetes_version", &wanted)
        .map_err(|e| edit_err(Box::new(e)))?;
    // Written beside it, then renamed: a crash leaves the old file or the new one.
    let tmp = path.with_extension("toml.homelab-tmp");
    std::fs::write(&tmp, updated)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| edit_err(Box::new(e)))?;
    Ok(Recorded::File(path.clone()))
}

/// Upgrades the cluster to `cluster.kubernetes_version`, node by node, control plane first,
/// after the pre-checks (every node Ready, no downgrade, one minor release at most) and an
/// etcd snapshot of the control plane (`[backups]`; refused when it fails, unless
/// `skip_backup`). With `dry_run`, only checks and reports what would change.
///
/// # Errors
/// A pre-check, a step, a drain or a `Ready` wait failed.
pub async fn upgrade(
    lab: &Lab,
    dry_run: bool,
    drain_timeout: std::time::Duration,
    skip_backup: bool,
    events: Events<'_>,
) -> Result<Vec<kubeadm_boot::steps::Report>, Error> {
    let plan = inputs::bootstrap_plan(&lab.config)?;
    let upgrade = kubeadm_boot::upgrade::UpgradePlan {
        target: inputs::kube_version(&lab.config),
        source: fetched_packages(lab, &inputs::kube_version(&lab.config)).await?,
        control_plane: plan.control_plane,
        workers: plan.workers,
        drain_timeout,
        ready_timeout: lab.config.phases.cluster.timeout.0,
        backup: crate::backup::upgrade_backups(lab, skip_backup, events),
    };
    let client = lab.kube_client().await?;
    let mut runner = runner(lab)?;
    runner.dry_run = dry_run;
    let reports = kubeadm_boot::upgrade::upgrade(&runner, &client, &upgrade, &|e| {
        if let boot::Event::Step(_) = e {
            events(Event::Progress {
                phase: NAME,
                message: e.to_string(),
            });
        }
    })
    .await?;
    Ok(reports)
}

/// A phase's plan from the dry-run reports of its steps (each step that would change is a
/// change: "run HOST: STEP").
pub(crate) fn steps_plan(phase: &'static str, reports: Vec<Report>) -> PhasePlan {
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for r in reports {
        if r.outcome == Outcome::Unchanged {
            unchanged += 1;
        } else {
            changes.push(Change {
                action: "run".into(),
                object: format!("{}: {}", r.host, r.step),
                detail: Some(r.description),
            });
        }
    }
    PhasePlan {
        phase,
        changes,
        unchanged,
        pending: None,
    }
}

/// A phase's report from the reports of the steps it ran.
pub(crate) fn steps_report(phase: &'static str, steps: &[Report]) -> PhaseReport {
    let changed = steps
        .iter()
        .filter(|r| r.outcome != Outcome::Unchanged)
        .count();
    PhaseReport {
        phase,
        changed,
        unchanged: steps.len() - changed,
    }
}

fn node_names(lab: &Lab) -> Vec<String> {
    lab.config.nodes.iter().map(|n| n.name.clone()).collect()
}

impl Phase for ClusterPhase {
    fn name(&self) -> &'static str {
        NAME
    }

    fn plan<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, Result<PhasePlan, Error>> {
        async move {
            if let Some(why) = vms_missing(lab).await {
                return Ok(PhasePlan::pending(
                    NAME,
                    format!("{why}; kubeadm init and the joins run once they are"),
                ));
            }
            let plan = cluster_plan(lab).await?;
            let reports = boot::plan_bootstrap(&runner(lab)?, &plan).await?;
            Ok(steps_plan(NAME, reports))
        }
        .boxed()
    }

    fn apply<'a>(
        &'a self,
        lab: &'a Lab,
        events: Events<'a>,
    ) -> BoxFuture<'a, Result<PhaseReport, Error>> {
        async move {
            let plan = cluster_plan(lab).await?;
            let runner = runner(lab)?;
            let kubeconfig = inputs::kubeconfig_path(&lab.config);
            let boot_events = |event: boot::Event| {
                if !matches!(event, boot::Event::Checking { .. }) {
                    events(Event::Progress {
                        phase: NAME,
                        message: event.to_string(),
                    });
                }
            };
            let (steps, client) =
                boot::bootstrap_nodes(&runner, &plan, &kubeconfig, &boot_events).await?;
            // Fetched only now: the nodes are prepared and joined whatever the download.
            let network = pod_network(lab, events).await?;
            let ready_timeout = lab.config.phases.cluster.timeout.0;
            boot::up_network(&client, &plan, &network, ready_timeout, &boot_events).await?;
            Ok(steps_report(NAME, &steps))
        }
        .boxed()
    }

    fn status<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, PhaseStatus> {
        async move { node_status(lab, &node_names(lab)).await }.boxed()
    }

    fn verify<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, Vec<Check>> {
        async move {
            let version = format!("v{}", lab.config.cluster.kubernetes_version);
            cluster_checks(lab, &node_names(lab), Some(version)).await
        }
        .boxed()
    }

    fn hint(&self, error: &Error) -> String {
        let stage = match error {
            Error::Cluster(e) => format!(" (it stopped at: {})", e.stage()),
            _ => String::new(),
        };
        format!(
            "fix the cause above{stage}, then run `homelab up` again: the VMs and every step \
             already done report unchanged (or `homelab up --from cluster`)"
        )
    }
}

impl Phase for ExistingCluster {
    fn name(&self) -> &'static str {
        NAME
    }

    fn plan<'a>(&'a self, _lab: &'a Lab) -> BoxFuture<'a, Result<PhasePlan, Error>> {
        async move {
            Ok(PhasePlan {
                phase: NAME,
                changes: Vec::new(),
                unchanged: 0,
                pending: None,
            })
        }
        .boxed()
    }

    fn apply<'a>(
        &'a self,
        lab: &'a Lab,
        events: Events<'a>,
    ) -> BoxFuture<'a, Result<PhaseReport, Error>> {
        async move {
            // The cluster is the user's: only check that it answers.
            let client = lab.kube_client().await?;
            let version =
                client
                    .apiserver_version()
                    .await
                    .map_err(|e| boot::ClusterError::Client {
                        path: inputs::kubeconfig_path(&lab.config),
                        context: lab.config.cluster.context_name().to_owned(),
                        source: e.into(),
                    })?;
            events(Event::Progress {
                phase: NAME,
                message: format!(
                    "existing cluster (context {}): Kubernetes {}",
                    lab.config.cluster.context_name(),
                    version.git_version
                ),
            });
            Ok(PhaseReport {
                phase: NAME,
                changed: 0,
                unchanged: 0,
            })
        }
        .boxed()
    }

    fn status<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, PhaseStatus> {
        async move { node_status(lab, &[]).await }.boxed()
    }

    fn verify<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, Vec<Check>> {
        async move { cluster_checks(lab, &[], None).await }.boxed()
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn an_upgrade_to_another_version_is_written_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("homelab.toml");
        std::fs::write(
            &path,
            "# my lab\n[cluster]\nname = \"lab\"\nkubernetes_version = \"1.33.5\" # pinned\n",
        )
        .unwrap();
        let lab = Lab::load(Some(&path)).unwrap();
        let v: kubeadm_boot::kubeadm::Version = "1.33.6".parse().unwrap();
        assert_eq!(
            record_kubernetes_version(&lab, &v).unwrap(),
            Recorded::File(path.clone())
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# my lab\n[cluster]\nname = \"lab\"\nkubernetes_version = \"1.33.6\" # pinned\n"
        );
        let lab = Lab::load(Some(&path)).unwrap();
        assert_eq!(
            record_kubernetes_version(&lab, &v).unwrap(),
            Recorded::AlreadyThere(path.clone())
        );
        let embedded = Lab::new(homelab_config::Config::default());
        assert_eq!(
            record_kubernetes_version(&embedded, &v).unwrap(),
            Recorded::Embedded
        );
    }
}
