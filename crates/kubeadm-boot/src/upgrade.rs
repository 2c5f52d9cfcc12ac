//! kubeadm upgrades, one node at a time, control plane first, as kubeadm's documented
//! procedure goes: new package channel, new kubeadm, `kubeadm upgrade apply` (control plane)
//! or `kubeadm upgrade node` (others), drain, new kubelet and kubectl, kubelet restarted,
//! uncordon, and a wait until the node is Ready at the new version.
//!
//! Before anything changes, the pre-checks read the cluster through the API: every node
//! Ready, no node newer than the target, and the target at most one minor release above the
//! oldest node (kubeadm cannot skip minors). Then, unless the plan says otherwise, an etcd
//! snapshot of the control plane is taken and checked ([`crate::backup`]): no snapshot, no
//! upgrade. Afterwards, the post-check waits until every node is Ready at the target
//! version. Re-running a finished upgrade changes nothing.

use std::time::{Duration, Instant};

use kube::Client;

use crate::bootstrap::Node;
use crate::event::{Event, Events};
use crate::kubeadm::Version;
use crate::nodes::{self, NodeState, NodesError};
use crate::prepare::{PackageSource, held_install, package_version, repository_steps};
use crate::ssh::Cmd;
use crate::steps::{Change, Check, Outcome, Report, RunError, Runner, Step};

/// The upgrade cannot start or did not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The cluster is not in a state to upgrade from.
    #[error("pre-check failed: {0}")]
    PreCheck(String),
    /// Steps failed on a node.
    #[error(transparent)]
    Steps(#[from] RunError),
    /// The API failed, or a node did not come back Ready.
    #[error(transparent)]
    Nodes(#[from] NodesError),
    /// The etcd snapshot taken before anything changes failed: nothing was upgraded.
    #[error(
        "no upgrade without a good etcd snapshot, and this one failed (nothing was changed): {0}; \
         fix it, or upgrade without one (--skip-backup)"
    )]
    Backup(#[source] Box<crate::backup::BackupError>),
}

/// What to upgrade.
#[derive(Debug, Clone)]
pub struct UpgradePlan {
    /// The release to reach.
    pub target: Version,
    /// Where packages come from.
    pub source: PackageSource,
    /// The node `kubeadm upgrade apply` runs on.
    pub control_plane: Node,
    /// The other nodes, upgraded one at a time after it.
    pub workers: Vec<Node>,
    /// Time allowed to drain a node.
    pub drain_timeout: Duration,
    /// Time allowed for a node to be Ready at the new version after its kubelet restarts.
    pub ready_timeout: Duration,
    /// The etcd snapshot taken first; `None` upgrades without one (asked for explicitly).
    pub backup: Option<crate::backup::Backups>,
}

fn parse_kubelet(v: &str) -> Option<Version> {
    v.parse().ok()
}

/// The pre-checks, on the nodes as the API reports them.
///
/// ```
/// use k8s_openapi::api::core::v1::Node;
/// use kubeadm_boot::nodes::NodeState;
/// use kubeadm_boot::upgrade::pre_check;
///
/// let node = |name: &str, kubelet: &str, ready: &str| -> NodeState {
///     let node: Node = serde_json::from_value(serde_json::json!({
///         "metadata": { "name": name },
///         "status": {
///             "conditions": [{ "type": "Ready", "status": ready }],
///             "nodeInfo": { "kubeletVersion": kubelet },
///         },
///     }))
///     .unwrap();
///     NodeState::of(&node)
/// };
/// let nodes = [node("cp1", "v1.32.4", "True"), node("w1", "v1.32.4", "True")];
/// assert!(pre_check(&nodes, &"1.33.2".parse()?).is_ok());
/// // kubeadm upgrades one minor release at a time, and every node must be Ready first.
/// let err = pre_check(&nodes, &"1.34.0".parse()?).unwrap_err().to_string();
/// assert!(err.contains("at most v1.33.x"), "{err}");
/// let err = pre_check(&[node("cp1", "v1.32.4", "False")], &"1.33.2".parse()?).unwrap_err();
/// assert!(err.to_string().contains("not Ready: cp1"), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`UpgradeError::PreCheck`] saying which nodes and why.
pub fn pre_check(nodes: &[NodeState], target: &Version) -> Result<(), UpgradeError> {
    let mut problems = Vec::new();
    if nodes.is_empty() {
        problems.push("the cluster has no nodes".to_owned());
    }
    let not_ready: Vec<String> = nodes
        .iter()
        .filter(|n| !n.ready)
        .map(|n| format!("{} ({})", n.name, n.message))
        .collect();
    if !not_ready.is_empty() {
        problems.push(format!("not Ready: {}", not_ready.join(", ")));
    }
    let mut oldest: Option<Version> = None;
    for n in nodes {
        match parse_kubelet(&n.kubelet_version) {
            None => problems.push(format!(
                "{}: cannot read kubelet version {:?}",
                n.name, n.kubelet_version
            )),
            Some(v) if v > *target => problems.push(format!(
                "{} runs {v}, newer than the target {target}: downgrades are not supported",
                n.name
            )),
            Some(v) => oldest = Some(oldest.map_or(v, |o| o.min(v))),
        }
    }
    if let Some(oldest) = oldest
        && (target.major != oldest.major || target.minor > oldest.minor + 1)
    {
        problems.push(format!(
            "the oldest node runs {oldest}; kubeadm upgrades one minor release at a time, so the target can be at most v{}.{}.x, not {target}",
            oldest.major,
            oldest.minor + 1
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(UpgradeError::PreCheck(problems.join("; ")))
    }
}

fn kubeadm_package_step(target: &Version) -> Step {
    let v = package_version(target);
    Step::command(
        "kubeadm-package",
        &format!("install kubeadm {v} (held)"),
        &format!("kubeadm version -o short 2>/dev/null | grep -qx 'v{v}'"),
        &held_install(&["kubeadm"], &v),
    )
}

/// The steps that bring the control plane's components to `target`: package channel,
/// kubeadm, `kubeadm upgrade apply` (skipped when the API server already runs `target`).
pub fn control_plane_steps(target: &Version, source: &PackageSource) -> Vec<Step> {
    let mut steps = repository_steps(target, source);
    steps.extend([
        kubeadm_package_step(target),
        Step {
            name: "kubeadm-upgrade-apply".into(),
            description: format!("`kubeadm upgrade apply {target}` (control-plane components)"),
            check: Check::Command(
                Cmd::new(format!(
                    "grep -q 'image: .*/kube-apiserver:{target}$' /etc/kubernetes/manifests/kube-apiserver.yaml"
                ))
                .sudo(),
            ),
            changes: vec![Change::Run(
                Cmd::new(format!(
                    "kubeadm upgrade plan {target} >/dev/null && kubeadm upgrade apply --yes {target}"
                ))
                .sudo()
                .timeout(Duration::from_secs(20 * 60)),
            )],
        },
    ]);
    steps
}

fn kubelet_check(target: &Version) -> String {
    format!("kubelet --version 2>/dev/null | grep -qx 'Kubernetes {target}'")
}

/// The steps that upgrade another node's kubeadm and its local configuration
/// (`kubeadm upgrade node`, skipped once its kubelet runs `target`).
pub fn node_steps(target: &Version, source: &PackageSource) -> Vec<Step> {
    let mut steps = repository_steps(target, source);
    steps.extend([
        kubeadm_package_step(target),
        Step {
            name: "kubeadm-upgrade-node".into(),
            description: "`kubeadm upgrade node` (the node's kubelet configuration)".into(),
            check: Check::Command(Cmd::new(kubelet_check(target)).sudo()),
            changes: vec![Change::Run(
                Cmd::new("kubeadm upgrade node")
                    .sudo()
                    .timeout(Duration::from_secs(10 * 60)),
            )],
        },
    ]);
    steps
}

/// The kubelet and kubectl upgrade, done while the node is drained.
pub fn kubelet_steps(target: &Version) -> Vec<Step> {
    let v = package_version(target);
    vec![Step {
        name: "kubelet-package".into(),
        description: format!("install kubelet and kubectl {v} (held) and restart the kubelet"),
        check: Check::Command(
            Cmd::new(format!(
                "{} && systemctl is-active --quiet kubelet",
                kubelet_check(target)
            ))
            .sudo(),
        ),
        changes: vec![Change::Run(
            Cmd::new(format!(
                "( {} ) && systemctl daemon-reload && systemctl restart kubelet",
                held_install(&["kubelet", "kubectl"], &v)
            ))
            .sudo()
            .timeout(Duration::from_secs(10 * 60)),
        )],
    }]
}

fn report(
    host: &str,
    step: &str,
    outcome: Outcome,
    description: String,
    started: Instant,
) -> Report {
    Report {
        host: host.to_owned(),
        step: step.to_owned(),
        outcome,
        description,
        millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// Upgrades one node: its kubeadm steps, then (when its kubelet is not at the target yet)
/// drain, kubelet, uncordon, and a wait for Ready at the target.
async fn upgrade_node(
    runner: &Runner,
    client: &Client,
    plan: &UpgradePlan,
    node: &Node,
    steps: Vec<Step>,
    events: Events<'_>,
) -> Result<Vec<Report>, UpgradeError> {
    let name = node.spec.name.as_str();
    let host = node.target.name.as_str();
    let target = plan.target.to_string();
    let mut reports = runner
        .run(vec![(node.target.clone(), steps)], events)
        .await?;
    let state = nodes::list(client)
        .await?
        .into_iter()
        .find(|n| n.name == name)
        .ok_or_else(|| UpgradeError::PreCheck(format!("node {name} is not registered")))?;
    let mut emit = |r: Report| {
        events(Event::Step(r.clone()));
        reports.push(r);
    };
    if state.kubelet_version != target {
        let started = Instant::now();
        let what = format!("drain {name} (DaemonSet and static pods stay)");
        if runner.dry_run {
            emit(report(host, "drain", Outcome::WouldChange, what, started));
            emit(report(
                host,
                "kubelet-package",
                Outcome::WouldChange,
                format!("install kubelet and kubectl {target} and restart the kubelet"),
                started,
            ));
            emit(report(
                host,
                "uncordon",
                Outcome::WouldChange,
                format!("uncordon {name}"),
                started,
            ));
            return Ok(reports);
        }
        nodes::drain(client, name, plan.drain_timeout).await?;
        emit(report(host, "drain", Outcome::Changed, what, started));
        let kubelet = runner
            .run(
                vec![(node.target.clone(), kubelet_steps(&plan.target))],
                events,
            )
            .await?;
        reports.extend(kubelet);
    }
    let started = Instant::now();
    let cordoned = nodes::list(client)
        .await?
        .into_iter()
        .any(|n| n.name == name && n.unschedulable);
    let what = format!("uncordon {name}");
    if cordoned {
        if runner.dry_run {
            let r = report(host, "uncordon", Outcome::WouldChange, what, started);
            events(Event::Step(r.clone()));
            reports.push(r);
            return Ok(reports);
        }
        nodes::set_unschedulable(client, name, false).await?;
    }
    let r = report(
        host,
        "uncordon",
        if cordoned {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        },
        what,
        started,
    );
    events(Event::Step(r.clone()));
    reports.push(r);
    if !runner.dry_run {
        nodes::wait_nodes_ready(
            client,
            &[name.to_owned()],
            Some(&target),
            plan.ready_timeout,
            &|_| {},
        )
        .await?;
    }
    Ok(reports)
}

/// The snapshot before the upgrade (a dry run only says it would take one), then the
/// retention of this cluster's snapshots.
async fn snapshot(
    runner: &Runner,
    node: &Node,
    backups: &crate::backup::Backups,
) -> Result<Report, UpgradeError> {
    let started = Instant::now();
    let host = node.target.name.as_str();
    if runner.dry_run {
        return Ok(report(
            host,
            "etcd-snapshot",
            Outcome::WouldChange,
            format!("take an etcd snapshot into {}", backups.dir.display()),
            started,
        ));
    }
    let (taken, _) = backups
        .take(runner.pool(), &node.target)
        .await
        .map_err(|e| UpgradeError::Backup(Box::new(e)))?;
    Ok(report(
        host,
        "etcd-snapshot",
        Outcome::Changed,
        taken.to_string(),
        started,
    ))
}

/// Runs the upgrade: pre-checks, the control plane, each worker in turn, post-check.
///
/// # Errors
/// A pre-check fails (nothing changed), a step fails, or a node does not come back Ready
/// at the target.
pub async fn upgrade(
    runner: &Runner,
    client: &Client,
    plan: &UpgradePlan,
    events: Events<'_>,
) -> Result<Vec<Report>, UpgradeError> {
    pre_check(&nodes::list(client).await?, &plan.target)?;
    let mut reports = Vec::new();
    if let Some(backups) = &plan.backup {
        let r = snapshot(runner, &plan.control_plane, backups).await?;
        events(Event::Step(r.clone()));
        reports.push(r);
    }
    reports.extend(
        upgrade_node(
            runner,
            client,
            plan,
            &plan.control_plane,
            control_plane_steps(&plan.target, &plan.source),
            events,
        )
        .await?,
    );
    for worker in &plan.workers {
        reports.extend(
            upgrade_node(
                runner,
                client,
                plan,
                worker,
                node_steps(&plan.target, &plan.source),
                events,
            )
            .await?,
        );
    }
    if !runner.dry_run {
        let mut names = vec![plan.control_plane.spec.name.clone()];
        names.extend(plan.workers.iter().map(|w| w.spec.name.clone()));
        nodes::wait_nodes_ready(
            client,
            &names,
            Some(&plan.target.to_string()),
            plan.ready_timeout,
            &|_| {},
        )
        .await?;
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str, ready: bool, version: &str) -> NodeState {
        NodeState {
            name: name.into(),
            ready,
            message: if ready {
                "Ready=True".into()
            } else {
                "Ready=False (KubeletNotReady): PLEG is not healthy".into()
            },
            kubelet_version: version.into(),
            container_runtime: "containerd://1.7.24".into(),
            unschedulable: false,
        }
    }

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn pre_check_allows_one_minor_or_a_patch() {
        let nodes = [state("cp", true, "v1.32.9"), state("w1", true, "v1.32.9")];
        pre_check(&nodes, &v("1.33.5")).unwrap();
        pre_check(&nodes, &v("1.32.10")).unwrap();
        pre_check(&nodes, &v("1.32.9")).unwrap();
    }

    #[test]
    fn pre_check_refuses_skips_downgrades_and_unready_nodes() {
        let nodes = [state("cp", true, "v1.31.2"), state("w1", false, "v1.32.0")];
        let err = pre_check(&nodes, &v("1.33.5")).unwrap_err().to_string();
        assert!(
            err.contains("not Ready: w1 (Ready=False (KubeletNotReady): PLEG is not healthy)"),
            "{err}"
        );
        assert!(err.contains("the oldest node runs v1.31.2"), "{err}");
        assert!(err.contains("at most v1.32.x, not v1.33.5"), "{err}");
        let err = pre_check(&[state("cp", true, "v1.33.5")], &v("1.33.4"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cp runs v1.33.5, newer than the target v1.33.4"),
            "{err}"
        );
        assert!(pre_check(&[], &v("1.33.4")).is_err());
    }

    #[test]
    fn steps_are_skipped_once_done() {
        let target = v("1.33.5");
        let cp = control_plane_steps(&target, &PackageSource::default());
        let names: Vec<&str> = cp.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "kubernetes-key",
                "kubernetes-repository",
                "kubeadm-package",
                "kubeadm-upgrade-apply"
            ]
        );
        assert!(
            matches!(&cp[3].check, Check::Command(c) if c.line.contains("kube-apiserver:v1.33.5$"))
        );
        assert!(
            cp[1].description.contains("core:/stable:/v1.33/deb/"),
            "{}",
            cp[1].description
        );
        let node = node_steps(&target, &PackageSource::default());
        assert!(
            matches!(&node[3].check, Check::Command(c) if c.line.contains("'Kubernetes v1.33.5'"))
        );
        let kubelet = kubelet_steps(&target);
        assert!(
            matches!(&kubelet[0].changes[0], Change::Run(c) if c.line.contains("kubelet='1.33.5-*' kubectl='1.33.5-*'") && c.line.ends_with("systemctl restart kubelet"))
        );
    }
}
