//! The `nodes` phase: node preparation over SSH (swap, kernel modules, sysctls, containerd,
//! the Kubernetes packages at `cluster.kubernetes_version`, held), from
//! [`kubeadm_boot::prepare`]. Its own phase so that `homelab up --until nodes` prepares
//! machines without making a cluster, and a failed preparation is resumed on its own.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use homelab_ssh::{Cmd, Pool, Target};
use kubeadm_boot::cluster as boot;

use crate::cluster::{fetched_packages, runner, steps_plan, steps_report, vms_missing};
use crate::error::Error;
use crate::inputs;
use crate::lab::Lab;
use crate::phase::{Check, Events, Phase, PhasePlan, PhaseReport, PhaseStatus, StatusItem};

/// The phase's name.
pub const NAME: &str = "nodes";

/// How long `status` waits for one node's SSH (a node that is down must not hold it up).
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// The Kubernetes packages whose installed versions say whether a node is prepared (with the
/// configured containerd package).
const KUBE_PACKAGES: [&str; 3] = ["kubeadm", "kubelet", "kubectl"];

/// The `nodes` phase (`cluster.provider = "libvirt"`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NodesPhase;

/// What the package database of one node says: `(package, version)` of each installed one.
fn installed(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (name, version, state) = (f.next()?, f.next()?, f.next()?);
            // db:Status-Abbrev: wanted action (`i`nstall, `h`old, ...), then the state: `i`
            // is installed and configured; anything else is not there or half-done.
            (state.as_bytes().get(1) == Some(&b'i')).then(|| (name.to_owned(), version.to_owned()))
        })
        .collect()
}

/// One node as `status` shows it, from its installed packages: prepared when containerd
/// (package `containerd`) and the Kubernetes packages are installed, the latter at `wanted`.
/// A containerd older than the release supports is a warning in the detail.
fn node_item(
    name: &str,
    wanted: &kubeadm_boot::kubeadm::Version,
    containerd: &str,
    packages: &[(String, String)],
) -> StatusItem {
    let version = |p: &str| {
        packages
            .iter()
            .find(|(n, _)| n == p)
            .map(|(_, v)| v.as_str())
    };
    let all: Vec<&str> = std::iter::once(containerd).chain(KUBE_PACKAGES).collect();
    let missing: Vec<&str> = all
        .iter()
        .copied()
        .filter(|p| version(p).is_none())
        .collect();
    let mut detail = all
        .iter()
        .map(|p| format!("{p} {}", version(p).unwrap_or("-")))
        .collect::<Vec<_>>()
        .join(" | ");
    if let Some(v) = version(containerd)
        && let Err(warning) = kubeadm_boot::prepare::containerd_supported(wanted, v)
    {
        detail.push_str(" | warning: ");
        detail.push_str(&warning);
    }
    let wanted_text = format!("{}.{}.{}", wanted.major, wanted.minor, wanted.patch);
    // Debian revisions of pkgs.k8s.io packages: `1.33.5-1.1`.
    let off: Vec<&str> = KUBE_PACKAGES
        .iter()
        .copied()
        .filter(|p| version(p).is_some_and(|v| v.split('-').next() != Some(&wanted_text)))
        .collect();
    let (state, healthy) = if !missing.is_empty() {
        (
            format!("not prepared (missing {})", missing.join(", ")),
            false,
        )
    } else if !off.is_empty() {
        (format!("{} not at {wanted_text}", off.join(", ")), false)
    } else {
        ("prepared".to_owned(), true)
    };
    StatusItem {
        name: name.to_owned(),
        state,
        detail,
        healthy,
    }
}

/// Reports kubeadm, kubelet and kubectl installed from a node bundle (no package) as the
/// package query would (`name version ii`), from the release the node's bundle mark names
/// (reading it is cheap; asking three large binaries their version is not, on slow nodes).
fn bundle_versions() -> String {
    format!(
        "v=$(head -n1 {} 2>/dev/null) && [ -n \"$v\" ] && for b in kubeadm kubelet kubectl; do echo \"$b ${{v#v}} ii\"; done; true",
        kubeadm_boot::bundle::INSTALLED_MARK
    )
}

async fn node_packages(
    pool: &Pool,
    target: &Target,
    containerd: &str,
    bundle: bool,
    limit: Duration,
) -> Result<Vec<(String, String)>, String> {
    let query = if bundle {
        format!(
            "dpkg-query -W -f='${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n' {} 2>/dev/null; {}",
            homelab_ssh::shell_quote(containerd),
            bundle_versions(),
        )
    } else {
        format!(
            "dpkg-query -W -f='${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n' {} {} 2>/dev/null; true",
            homelab_ssh::shell_quote(containerd),
            KUBE_PACKAGES.join(" ")
        )
    };
    let cmd = Cmd::new(query).timeout(limit);
    match tokio::time::timeout(limit * 2, pool.run(target, &cmd)).await {
        Ok(Ok(out)) => Ok(installed(&out.stdout_text())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {:?}", limit * 2)),
    }
}

/// Each node's prepared state, read over SSH in parallel, with a pool that gives up quickly
/// on a node that does not answer.
async fn status(lab: &Lab) -> PhaseStatus {
    let limit = status_limit(lab).await;
    let mut options = inputs::ssh_options(&lab.config, false);
    options.connect_timeout = limit;
    options.attempts = 1;
    match Pool::new(options) {
        Ok(pool) => status_with(lab, &pool, limit).await,
        Err(e) => PhaseStatus {
            phase: NAME,
            items: Vec::new(),
            error: Some(e.to_string()),
        },
    }
}

/// How long one node may take to answer `status`: [`STATUS_TIMEOUT`], or the VM layer's
/// longer limit when the VMs run under software emulation (a node busy running Kubernetes
/// there is slow to log in, not down).
async fn status_limit(lab: &Lab) -> Duration {
    if crate::vms::emulated(lab).await {
        crate::vms::PROBE_TIMEOUT_EMULATED
    } else {
        STATUS_TIMEOUT
    }
}

/// Each node's prepared state, over `pool`'s connections, each within `limit`. A node whose
/// VM libvirt reports not running is reported so at once (its SSH is not waited for).
async fn status_with(lab: &Lab, pool: &Pool, limit: Duration) -> PhaseStatus {
    let wanted = inputs::kube_version(&lab.config);
    let containerd = lab.config.packages.containerd.as_str();
    let bundle = lab.config.packages.bundle.is_some();
    let targets = inputs::targets(&lab.config);
    let vm_states: std::collections::BTreeMap<String, &str> = crate::vms::domain_states(lab)
        .await
        .unwrap_or_default()
        .into_iter()
        .collect();
    let items = futures::future::join_all(targets.iter().map(|t| {
        let wanted = &wanted;
        let vm_state = vm_states.get(&t.name).copied();
        async move {
            if let Some(state) = vm_state.filter(|s| *s != "running") {
                return StatusItem {
                    name: t.name.clone(),
                    state: format!("VM {state}"),
                    detail: "not asked: its VM does not run (homelab up --only vms)".into(),
                    healthy: false,
                };
            }
            match node_packages(pool, t, containerd, bundle, limit).await {
                Ok(packages) => node_item(&t.name, wanted, containerd, &packages),
                Err(e) => StatusItem {
                    name: t.name.clone(),
                    state: "unreachable".into(),
                    detail: e,
                    healthy: false,
                },
            }
        }
    }))
    .await;
    PhaseStatus {
        phase: NAME,
        items,
        error: None,
    }
}

impl Phase for NodesPhase {
    fn name(&self) -> &'static str {
        NAME
    }

    fn plan<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, Result<PhasePlan, Error>> {
        async move {
            if let Some(why) = vms_missing(lab).await {
                return Ok(PhasePlan::pending(
                    NAME,
                    format!("{why}; every node-preparation step runs once they are"),
                ));
            }
            let plan = inputs::bootstrap_plan(&lab.config)?;
            let bundle = lab.node_bundle()?;
            let packages = inputs::package_source(&lab.config).with_bundle(bundle.clone());
            let reports = boot::plan_preparation(&runner(lab)?, &plan, &packages).await?;
            let mut phase_plan = steps_plan(NAME, reports);
            if let Some(bundle) = &bundle {
                for image in crate::bundle::mirrored_images(&lab.config, bundle).await? {
                    if image.present {
                        phase_plan.unchanged += 1;
                    } else {
                        phase_plan.changes.push(crate::Change {
                            action: "push".into(),
                            object: format!("image {}", image.reference),
                            detail: Some(match &image.replaces {
                                None => format!("built from the node bundle, to {}", image.mirror),
                                Some(old) => format!(
                                    "built from the node bundle ({}), to {}, which holds {old} under that tag",
                                    image.digest, image.mirror
                                ),
                            }),
                        });
                    }
                }
            }
            Ok(phase_plan)
        }
        .boxed()
    }

    fn apply<'a>(
        &'a self,
        lab: &'a Lab,
        events: Events<'a>,
    ) -> BoxFuture<'a, Result<PhaseReport, Error>> {
        async move {
            let plan = inputs::bootstrap_plan(&lab.config)?;
            let runner = runner(lab)?;
            let boot_events = |event: boot::Event| {
                if !matches!(event, boot::Event::Checking { .. }) {
                    events(crate::phase::Event::Progress {
                        phase: NAME,
                        message: event.to_string(),
                    });
                }
            };
            let packages = fetched_packages(lab, &plan.cluster.version).await?;
            // The cluster's images on the mirrors before any node pulls them.
            let mut pushed = 0;
            if let Some(bundle) = &packages.bundle {
                let images = crate::bundle::mirrored_images(&lab.config, bundle).await?;
                pushed = crate::bundle::publish(&images, bundle, events).await?;
            }
            let steps = boot::prepare_nodes(&runner, &plan, &packages, &boot_events).await?;
            // The connections of the preparation are still open: reused.
            let limit = status_limit(lab).await;
            for item in status_with(lab, &*lab.ssh_pool()?, limit).await.items {
                if let Some((_, warning)) = item.detail.split_once("warning: ") {
                    events(crate::phase::Event::Progress {
                        phase: NAME,
                        message: format!("{}: warning: {warning}", item.name),
                    });
                }
            }
            let mut report = steps_report(NAME, &steps);
            report.changed += pushed;
            Ok(report)
        }
        .boxed()
    }

    fn status<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, PhaseStatus> {
        status(lab).boxed()
    }

    fn verify<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, Vec<Check>> {
        async move {
            status(lab)
                .await
                .items
                .into_iter()
                .map(|item| {
                    let check = format!("prepared {}", item.name);
                    if item.healthy {
                        Check::pass(NAME, check, item.detail)
                    } else {
                        Check::fail(
                            NAME,
                            check,
                            format!("{}: {}", item.state, item.detail),
                            "run `homelab up --only nodes` (`homelab upgrade` when the versions differ on a running cluster)",
                        )
                    }
                })
                .collect()
        }
        .boxed()
    }

    fn hint(&self, error: &Error) -> String {
        if let Error::SigningKey(kubeadm_boot::signing_key::KeyError::Download { url, .. }) = error
        {
            return format!(
                "this machine cannot download the package repository's signing key ({url}): \
                 point [packages] repository (and its key_fingerprint) at a mirror it reaches, \
                 then run `homelab up` again (the VMs report unchanged)"
            );
        }
        "fix the cause above, then run `homelab up` again: the VMs and every step already \
         done report unchanged (or `homelab up --from nodes`)"
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_prepared_when_every_package_is_installed_at_the_version() {
        let v = |s: &str| -> kubeadm_boot::kubeadm::Version { s.parse().unwrap() };
        // The Kubernetes packages are held (`hi`).
        let out = "containerd 1.7.24~ds1-1 ii \nkubeadm 1.33.5-1.1 hi \nkubelet 1.33.5-1.1 hi \nkubectl 1.33.5-1.1 hi \n";
        let item = node_item("cp", &v("1.33.5"), "containerd", &installed(out));
        assert!(item.healthy, "{item:?}");
        assert_eq!(item.state, "prepared");
        assert_eq!(
            item.detail,
            "containerd 1.7.24~ds1-1 | kubeadm 1.33.5-1.1 | kubelet 1.33.5-1.1 | kubectl 1.33.5-1.1"
        );
        // A package half-installed (dpkg interrupted) is not installed.
        let half = out.replace("kubelet 1.33.5-1.1 hi", "kubelet 1.33.5-1.1 hU");
        let item = node_item("cp", &v("1.33.5"), "containerd", &installed(&half));
        assert_eq!(item.state, "not prepared (missing kubelet)");
        assert!(!item.healthy);
        // Another version: named.
        let item = node_item("cp", &v("1.33.6"), "containerd", &installed(out));
        assert_eq!(item.state, "kubeadm, kubelet, kubectl not at 1.33.6");
        // Nothing at all; another containerd package.
        let item = node_item("w1", &v("1.33.5"), "containerd.io", &[]);
        assert_eq!(
            item.state,
            "not prepared (missing containerd.io, kubeadm, kubelet, kubectl)"
        );
        // Debian 12's containerd: prepared, with a warning.
        let old = out.replace("1.7.24~ds1-1", "1.6.20~ds1-1+b1");
        let item = node_item("cp", &v("1.33.5"), "containerd", &installed(&old));
        assert!(item.healthy);
        assert!(
            item.detail
                .contains("warning: containerd 1.6.20 is older than Kubernetes 1.33 supports"),
            "{}",
            item.detail
        );
    }
}
