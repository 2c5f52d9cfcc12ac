//! The `vms` phase: libvirt network, pool, disks, cloud-init seeds and domains
//! (`libvirt-vm`), until every node answers SSH with cloud-init done.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use homelab_config::expand_home;
use libvirt_vm::preflight::Status as Preflight;
use libvirt_vm::provision::{self, UpOptions};
use libvirt_vm::wait::{ReadyTarget, Seen};
use libvirt_vm::{Hypervisor, NodeStatus, VmClusterSpec};

use crate::error::Error;
use crate::inputs;
use crate::lab::Lab;
use crate::phase::{
    Change, Check, Event, Events, Phase, PhasePlan, PhaseReport, PhaseStatus, StatusItem, relaying,
};

/// The phase's name.
pub const NAME: &str = "vms";

/// How long `status` and `verify` wait for a node's SSH login.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The same under software emulation: a node busy running Kubernetes there takes longer than
/// [`PROBE_TIMEOUT`] to log a user in (measured: a three-node cluster under TCG, just Ready,
/// missed the 5 s limit on two nodes). A node whose SSH is down still fails at once.
pub const PROBE_TIMEOUT_EMULATED: Duration = Duration::from_secs(30);

/// The `vms` phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct VmsPhase;

/// The VM layer's spec of the lab (reads the public key to install).
///
/// # Errors
/// The public key cannot be read.
pub fn spec(lab: &Lab) -> Result<VmClusterSpec, Error> {
    Ok(inputs::vm_spec(
        &lab.config,
        vec![inputs::authorized_key(&lab.config)?],
    ))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, libvirt_vm::Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(Error::Worker)?
        .map_err(Error::from)
}

/// Whether the nodes' VMs run under software emulation (the configured domain type resolved
/// as the VM layer resolves it: `qemu`, or `auto` on a host whose KVM cannot run guests).
/// `false` when libvirt cannot be asked (the cluster layer then keeps its defaults).
pub async fn emulated(lab: &Lab) -> bool {
    let Ok(spec) = spec(lab) else { return false };
    let uri = lab.libvirt_uri().to_owned();
    let choice = spec.domain_type;
    blocking(move || Hypervisor::connect(&uri)?.resolve_domain_type(choice))
        .await
        .is_ok_and(|t| t == libvirt_vm::DomainType::Qemu)
}

/// The VM layer's plan (no change made).
///
/// # Errors
/// The public key cannot be read, or libvirt cannot be reached.
pub async fn libvirt_plan(lab: &Lab) -> Result<libvirt_vm::VmPlan, Error> {
    let spec = spec(lab)?;
    let uri = lab.libvirt_uri().to_owned();
    blocking(move || Hypervisor::connect(&uri)?.plan(&spec)).await
}

fn changes(plan: &libvirt_vm::VmPlan) -> (Vec<Change>, usize) {
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for a in &plan.actions {
        if a.change.is_noop() {
            unchanged += 1;
            continue;
        }
        let detail = match &a.change {
            libvirt_vm::Change::Update { reasons } | libvirt_vm::Change::Replace { reasons } => {
                Some(reasons.join("; "))
            }
            libvirt_vm::Change::Conflict { reason } | libvirt_vm::Change::Keep { reason } => {
                Some(reason.clone())
            }
            _ => None,
        };
        changes.push(Change {
            action: a.change.label().to_owned(),
            object: format!("{} {}", a.kind, a.name),
            detail,
        });
    }
    (changes, unchanged)
}

/// Logs in to every node (recorded host key, the configured key) and runs `true`, all at
/// once, each within [`PROBE_TIMEOUT`] ([`PROBE_TIMEOUT_EMULATED`] under software
/// emulation); what was seen, per node, in `spec` order.
async fn probe_nodes(lab: &Lab, spec: &VmClusterSpec) -> Vec<Result<(), String>> {
    let uri = lab.libvirt_uri().to_owned();
    let owned = spec.clone();
    let known = blocking(move || Hypervisor::connect(&uri)?.known_hosts(&owned))
        .await
        .unwrap_or_default();
    let key_path = expand_home(&lab.config.ssh.private_key);
    let key = match homelab_ssh::load_key(&key_path) {
        Ok(key) => key,
        Err(e) => {
            let why = format!("ssh.private_key: {e}");
            return spec.nodes.iter().map(|_| Err(why.clone())).collect();
        }
    };
    let targets = provision::ready_targets(spec, &known, &key_path);
    let limit = if emulated(lab).await {
        PROBE_TIMEOUT_EMULATED
    } else {
        PROBE_TIMEOUT
    };
    futures::future::join_all(spec.nodes.iter().map(|n| {
        let target: Option<ReadyTarget> = targets.iter().find(|t| t.name == n.name).cloned();
        let key = key.clone();
        async move {
            let Some(mut target) = target else {
                return Err("no host key recorded for it (it was not made by homelab)".into());
            };
            target.ready_command = "true".into();
            // The banner may take most of the limit (a busy emulated node forks its sshd
            // slowly: 5 s was seen not to be enough right after sshd started).
            let probe = libvirt_vm::wait::probe_within(&target, &key, limit.mul_f32(0.8));
            match tokio::time::timeout(limit, probe).await {
                Ok(Seen::Ready) => Ok(()),
                Ok(seen) => Err(seen.to_string()),
                Err(_) => Err(format!("no login within {}s", limit.as_secs())),
            }
        }
    }))
    .await
}

fn node_state(s: &NodeStatus) -> &'static str {
    if !s.defined {
        "absent"
    } else if !s.owned {
        "not ours"
    } else if s.running {
        "running"
    } else {
        "shut off"
    }
}

/// Each node's domain state as libvirt reports it (`running`, `shut off`, `absent`, `not
/// ours`), without probing SSH.
pub(crate) async fn domain_states(lab: &Lab) -> Result<Vec<(String, &'static str)>, Error> {
    let (_, nodes) = read_status(lab).await?;
    Ok(nodes
        .iter()
        .map(|s| (s.name.clone(), node_state(s)))
        .collect())
}

async fn read_status(lab: &Lab) -> Result<(VmClusterSpec, Vec<NodeStatus>), Error> {
    let spec = spec(lab)?;
    let uri = lab.libvirt_uri().to_owned();
    let owned = spec.clone();
    let nodes = blocking(move || Hypervisor::connect(&uri)?.status(&owned)).await?;
    Ok((spec, nodes))
}

impl Phase for VmsPhase {
    fn name(&self) -> &'static str {
        NAME
    }

    fn plan<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, Result<PhasePlan, Error>> {
        async move {
            let plan = libvirt_plan(lab).await?;
            let (changes, unchanged) = changes(&plan);
            Ok(PhasePlan {
                phase: NAME,
                changes,
                unchanged,
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
            let config = &lab.config;
            let spec = spec(lab)?;
            let image = inputs::built_image(config)
                .filter(|files| config.libvirt.kernel.is_none() || !files.image.exists())
                .map(|files| (inputs::image_recipe(config), files));
            let options = UpOptions {
                uri: lab.libvirt_uri().to_owned(),
                image,
                work_dir: lab.options.work_dir.clone(),
                wait: true,
                timeout: config.phases.vms.timeout.0,
                private_key: expand_home(&config.ssh.private_key),
                known_hosts: Some(expand_home(&config.ssh.known_hosts)),
            };
            let report = provision::up(&spec, &options, &|event| {
                if !event.is_passed_check() {
                    events(Event::Progress {
                        phase: NAME,
                        message: event.to_string(),
                    });
                }
            })
            .await?;
            let (changes, unchanged) = changes(&report.plan);
            Ok(PhaseReport {
                phase: NAME,
                changed: changes.len(),
                unchanged,
            })
        }
        .boxed()
    }

    fn status<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, PhaseStatus> {
        async move {
            let (spec, nodes) = match read_status(lab).await {
                Ok(read) => read,
                Err(e) => {
                    return PhaseStatus {
                        phase: NAME,
                        items: Vec::new(),
                        error: Some(e.to_string()),
                    };
                }
            };
            let logins = probe_nodes(lab, &spec).await;
            let items = nodes
                .iter()
                .zip(&spec.nodes)
                .zip(logins)
                .map(|((s, n), login)| {
                    let running = s.running && s.owned;
                    let ssh = match (&login, running) {
                        (_, false) => "ssh: -".to_owned(),
                        (Ok(()), true) => "ssh: ok".to_owned(),
                        (Err(why), true) => format!("ssh: {why}"),
                    };
                    StatusItem {
                        name: s.name.clone(),
                        state: node_state(s).into(),
                        detail: format!("{} | {ssh}", n.ip),
                        healthy: running && login.is_ok(),
                    }
                })
                .collect();
            PhaseStatus {
                phase: NAME,
                items,
                error: None,
            }
        }
        .boxed()
    }

    fn verify<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, Vec<Check>> {
        async move {
            let mut checks = Vec::new();
            let spec = match spec(lab) {
                Ok(spec) => spec,
                Err(e) => {
                    return vec![Check::fail(
                        NAME,
                        "ssh key",
                        e.to_string(),
                        "create the key pair named by ssh.private_key and ssh.public_key",
                    )];
                }
            };
            for c in provision::check(&spec, lab.libvirt_uri()).await {
                checks.push(match c.status {
                    Preflight::Fail => Check::fail(
                        NAME,
                        c.name,
                        c.detail,
                        c.fix.unwrap_or_else(|| "see the detail".into()),
                    ),
                    Preflight::Ok | Preflight::Warn => Check::pass(NAME, c.name, c.detail),
                });
            }
            match read_status(lab).await {
                Ok((spec, nodes)) => {
                    let logins = probe_nodes(lab, &spec).await;
                    for (s, login) in nodes.iter().zip(logins) {
                        checks.push(if s.running && s.owned {
                            Check::pass(NAME, format!("vm {}", s.name), "running")
                        } else {
                            Check::fail(
                                NAME,
                                format!("vm {}", s.name),
                                node_state(s),
                                "run `homelab up --only vms`",
                            )
                        });
                        checks.push(match login {
                            Ok(()) => Check::pass(NAME, format!("ssh {}", s.name), "login works"),
                            Err(why) => Check::fail(
                                NAME,
                                format!("ssh {}", s.name),
                                why,
                                format!(
                                    "start it (virsh start {}), read its console (homelab-vm console-log {}), then `homelab up --only vms`",
                                    s.name, s.name
                                ),
                            ),
                        });
                    }
                }
                Err(e) => checks.push(Check::fail(
                    NAME,
                    "nodes",
                    e.to_string(),
                    "make libvirt reachable (see the libvirt check)",
                )),
            }
            checks
        }
        .boxed()
    }
}

/// What `destroy` would remove: every object this cluster owns (others with the same names
/// are listed as kept).
///
/// # Errors
/// libvirt cannot be reached or read.
pub async fn destroy_plan(lab: &Lab) -> Result<libvirt_vm::VmPlan, Error> {
    // Ownership decides what goes, not the nodes' first-boot settings: no key is needed.
    let spec = inputs::vm_spec(&lab.config, Vec::new());
    let uri = lab.libvirt_uri().to_owned();
    blocking(move || Hypervisor::connect(&uri)?.destroy_plan(&spec)).await
}

/// Removes every object this cluster owns, and nothing else; `events` is told of each.
///
/// # Errors
/// A libvirt call fails (what was removed before stays removed; run it again).
pub async fn destroy(lab: &Lab, events: Events<'_>) -> Result<libvirt_vm::VmPlan, Error> {
    let spec = inputs::vm_spec(&lab.config, Vec::new());
    let uri = lab.libvirt_uri().to_owned();
    relaying(NAME, events, |tx| {
        blocking(move || {
            Hypervisor::connect(&uri)?.destroy(&spec, &move |e| {
                let _ = tx.send(e.to_string());
            })
        })
    })
    .await
}

/// What libvirt at `libvirt.uri` says of the configuration's network: the other networks and
/// host routes that overlap `network.nat_cidr`, each with its fix (`up` refuses to start
/// while an active one does). `None` when libvirt cannot be reached from here.
pub fn network_collisions(config: &homelab_config::Config) -> Option<Vec<Check>> {
    let spec = inputs::vm_spec(config, Vec::new());
    let hv = Hypervisor::connect(&config.libvirt.uri).ok()?;
    Some(
        libvirt_vm::preflight::preflight(&spec, &config.libvirt.uri, Some(&hv), None)
            .into_iter()
            .filter(|c| c.name == "network" && c.status != Preflight::Ok)
            .map(|c| {
                Check::fail(
                    NAME,
                    c.name,
                    c.detail,
                    c.fix
                        .unwrap_or_else(|| "choose another network.nat_cidr".into()),
                )
            })
            .collect(),
    )
}
