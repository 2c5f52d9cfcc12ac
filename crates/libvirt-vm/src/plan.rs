//! The planner: compares the desired objects with what libvirt has and decides, per object,
//! create / change / replace / start / unchanged / delete — or refuses to touch an object
//! that belongs to someone else. Pure: no libvirt calls, so it is tested exhaustively.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::spec::{DomainType, VmClusterSpec, fingerprint};
use crate::xml;
pub use crate::xml::{OwnerMeta, SEED_RETIRED, read_owner_meta};

/// Kind of a libvirt object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// A virtual network.
    Network,
    /// A storage pool.
    Pool,
    /// A storage volume (overlay or seed).
    Volume,
    /// A domain (virtual machine).
    Domain,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Network => "network",
            Self::Pool => "pool",
            Self::Volume => "volume",
            Self::Domain => "domain",
        })
    }
}

/// What the plan does to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum Change {
    /// The object does not exist and is created.
    Create,
    /// The object exists and is changed in place.
    Update {
        /// What differs.
        reasons: Vec<String>,
    },
    /// The object is deleted and created again.
    Replace {
        /// Why it cannot be changed in place.
        reasons: Vec<String>,
    },
    /// The object is defined but not running; it is started.
    Start,
    /// Nothing to do.
    Unchanged,
    /// The object is ours but no longer wanted; it is deleted.
    Delete,
    /// The object is in the way and is not ours (or cannot be changed); nothing is done and
    /// apply refuses to run.
    Conflict {
        /// Why.
        reason: String,
    },
    /// The object is not ours; destroy leaves it alone.
    Keep {
        /// Why.
        reason: String,
    },
}

impl Change {
    /// Whether applying this change does anything.
    pub fn is_noop(&self) -> bool {
        matches!(self, Self::Unchanged | Self::Keep { .. })
    }

    /// A one-word label for tables.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update { .. } => "change",
            Self::Replace { .. } => "replace",
            Self::Start => "start",
            Self::Unchanged => "unchanged",
            Self::Delete => "delete",
            Self::Conflict { .. } => "conflict",
            Self::Keep { .. } => "keep",
        }
    }
}

/// One object and what happens to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    /// Object kind.
    pub kind: ObjectKind,
    /// Object name (volumes: the volume name inside the pool).
    pub name: String,
    /// The change.
    #[serde(flatten)]
    pub change: Change,
}

/// The plan: actions in the order apply performs them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VmPlan {
    /// The actions.
    pub actions: Vec<Action>,
}

impl VmPlan {
    /// Whether applying the plan changes nothing.
    pub fn is_noop(&self) -> bool {
        self.actions.iter().all(|a| a.change.is_noop())
    }

    /// The conflicts that keep the plan from being applied.
    pub fn conflicts(&self) -> impl Iterator<Item = &Action> {
        self.actions
            .iter()
            .filter(|a| matches!(a.change, Change::Conflict { .. }))
    }

    /// Counts per change label, e.g. `{"create": 7, "unchanged": 2}`.
    pub fn summary(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for action in &self.actions {
            *counts.entry(action.change.label()).or_default() += 1;
        }
        counts
    }
}

impl fmt::Display for VmPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for a in &self.actions {
            write!(f, "{:>9}  {:<7} {}", a.change.label(), a.kind, a.name)?;
            match &a.change {
                Change::Update { reasons } | Change::Replace { reasons } => {
                    write!(f, " ({})", reasons.join("; "))?;
                }
                Change::Conflict { reason } | Change::Keep { reason } => write!(f, " ({reason})")?,
                _ => {}
            }
            writeln!(f)?;
        }
        let summary: Vec<String> = self
            .summary()
            .into_iter()
            .map(|(label, n)| format!("{n} {label}"))
            .collect();
        write!(f, "plan: {}", summary.join(", "))
    }
}

// ---------- inputs ----------

/// What is wanted, reduced to what the planner compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Ownership id.
    pub cluster: String,
    /// Network name and fingerprint of its definition.
    pub network: (String, String),
    /// The network's DHCP host entries (`mac ip name`), applied to a running network in place.
    pub dhcp_hosts: Vec<String>,
    /// Pool name and directory.
    pub pool: (String, PathBuf),
    /// The nodes.
    pub nodes: Vec<DesiredNode>,
}

/// One wanted node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredNode {
    /// Domain name.
    pub name: String,
    /// Fingerprint of the domain definition (changes are applied in place).
    pub spec: String,
    /// Fingerprint of the first-boot configuration (changes need a new node).
    pub seed: String,
    /// Overlay volume name.
    pub disk_volume: String,
    /// Seed volume name.
    pub seed_volume: String,
    /// Wanted disk size in bytes.
    pub disk_bytes: u64,
}

/// What libvirt has, reduced to what the planner compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// Networks by name.
    pub networks: BTreeMap<String, LiveNetwork>,
    /// Pools by name.
    pub pools: BTreeMap<String, LivePool>,
    /// Domains by name.
    pub domains: BTreeMap<String, LiveDomain>,
}

/// A network libvirt has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNetwork {
    /// Our metadata, if any.
    pub owner: Option<OwnerMeta>,
    /// Running.
    pub active: bool,
    /// Its DHCP host entries (`mac ip name`).
    pub dhcp_hosts: Vec<String>,
}

/// A pool libvirt has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePool {
    /// Its directory.
    pub path: PathBuf,
    /// Running.
    pub active: bool,
    /// Volume capacities by name (only known when the pool is active).
    pub volumes: BTreeMap<String, u64>,
}

/// A domain libvirt has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveDomain {
    /// Our metadata, if any.
    pub owner: Option<OwnerMeta>,
    /// Running.
    pub active: bool,
    /// Files of its disks.
    pub disks: Vec<String>,
}

fn sorted(items: &[String]) -> Vec<&String> {
    let mut v: Vec<&String> = items.iter().collect();
    v.sort();
    v
}

fn is_ours(owner: Option<&OwnerMeta>, cluster: &str) -> bool {
    owner.is_some_and(|o| o.cluster == cluster)
}

fn foreign(owner: Option<&OwnerMeta>) -> String {
    match owner {
        Some(o) => format!("it belongs to cluster `{}`", o.cluster),
        None => "it was not created by homelab".to_owned(),
    }
}

/// The planner's view of `spec`.
pub fn desired(spec: &VmClusterSpec, kind: DomainType) -> Desired {
    Desired {
        cluster: spec.cluster_id.clone(),
        network: (spec.network.name.clone(), fingerprint(&spec.network)),
        dhcp_hosts: spec
            .nodes
            .iter()
            .map(|n| xml::dhcp_host_key(&n.mac.to_string(), &n.ip.to_string(), &n.name))
            .collect(),
        pool: (spec.pool.name.clone(), spec.pool.path.clone()),
        nodes: spec
            .nodes
            .iter()
            .map(|n| DesiredNode {
                name: n.name.clone(),
                spec: fingerprint(&(
                    n.vcpus,
                    n.memory_mib,
                    n.mac,
                    &spec.network.name,
                    &spec.boot,
                    kind,
                    &spec.pool.path,
                )),
                seed: fingerprint(&(
                    &spec.cluster_id,
                    &n.name,
                    n.ip,
                    spec.network.cidr,
                    spec.network.gateway,
                    &spec.access,
                    &spec.base_image,
                )),
                disk_volume: n.disk_volume(),
                seed_volume: n.seed_volume(),
                disk_bytes: n.disk_bytes,
            })
            .collect(),
    }
}

/// The actions that make `live` match `desired`.
pub fn plan(desired: &Desired, live: &Live) -> VmPlan {
    let mut actions = Vec::new();
    let push = |actions: &mut Vec<Action>, kind, name: &str, change| {
        actions.push(Action {
            kind,
            name: name.to_owned(),
            change,
        });
    };

    // Network.
    let (net_name, net_fp) = &desired.network;
    let change = match live.networks.get(net_name) {
        None => Change::Create,
        Some(n) if !is_ours(n.owner.as_ref(), &desired.cluster) => Change::Conflict {
            reason: format!("network exists and {}", foreign(n.owner.as_ref())),
        },
        Some(n) if n.owner.as_ref().is_some_and(|o| &o.spec != net_fp) => Change::Replace {
            reasons: vec!["network definition changed".into()],
        },
        Some(n) if sorted(&n.dhcp_hosts) != sorted(&desired.dhcp_hosts) => Change::Update {
            reasons: vec!["DHCP host entries changed".into()],
        },
        Some(n) if !n.active => Change::Start,
        Some(_) => Change::Unchanged,
    };
    push(&mut actions, ObjectKind::Network, net_name, change);

    // Pool.
    let (pool_name, pool_path) = &desired.pool;
    let live_pool = live.pools.get(pool_name);
    let change = match live_pool {
        None => Change::Create,
        Some(p) if &p.path != pool_path => Change::Conflict {
            reason: format!(
                "pool exists with directory {}, not {}",
                p.path.display(),
                pool_path.display()
            ),
        },
        Some(p) if !p.active => Change::Start,
        Some(_) => Change::Unchanged,
    };
    push(&mut actions, ObjectKind::Pool, pool_name, change);

    // Nodes.
    for node in &desired.nodes {
        for (kind, name, change) in plan_node(desired, live, node) {
            push(&mut actions, kind, &name, change);
        }
    }

    // Our domains that are no longer wanted.
    for (name, d) in &live.domains {
        if is_ours(d.owner.as_ref(), &desired.cluster)
            && !desired.nodes.iter().any(|n| &n.name == name)
        {
            push(&mut actions, ObjectKind::Domain, name, Change::Delete);
            for vol in owned_volumes(d, desired, live) {
                push(&mut actions, ObjectKind::Volume, &vol, Change::Delete);
            }
        }
    }
    VmPlan { actions }
}

/// The volume and domain actions of one wanted node.
fn plan_node(
    desired: &Desired,
    live: &Live,
    node: &DesiredNode,
) -> Vec<(ObjectKind, String, Change)> {
    let live_pool = live.pools.get(&desired.pool.0);
    let volume = |name: &str| live_pool.and_then(|p| p.volumes.get(name)).copied();
    let domain = live.domains.get(&node.name);
    let mut node_actions: Vec<(ObjectKind, String, Change)> = Vec::new();
    match domain {
        Some(d) if !is_ours(d.owner.as_ref(), &desired.cluster) => {
            node_actions.push((
                ObjectKind::Domain,
                node.name.clone(),
                Change::Conflict {
                    reason: format!("domain exists and {}", foreign(d.owner.as_ref())),
                },
            ));
        }
        None => {
            // A volume without its domain is left over from an interrupted apply: its
            // first-boot state no longer matches, so it is made again.
            for vol in [&node.disk_volume, &node.seed_volume] {
                let change = if volume(vol).is_some() {
                    Change::Replace {
                        reasons: vec!["left over without its domain".into()],
                    }
                } else {
                    Change::Create
                };
                node_actions.push((ObjectKind::Volume, vol.clone(), change));
            }
            node_actions.push((ObjectKind::Domain, node.name.clone(), Change::Create));
        }
        Some(d) => {
            let owner = d.owner.clone().unwrap_or_default();
            // Once cloud-init has finished and the seed is retired, the node no longer has
            // (or needs) its seed volume.
            let retired = owner.extra.contains_key(SEED_RETIRED);
            let mut replace = Vec::new();
            if owner.extra.get("seed") != Some(&node.seed) {
                replace.push(
                    "first-boot settings changed (user, keys, address): cloud-init applies them only to a new node"
                        .to_owned(),
                );
            }
            if live_pool.is_some_and(|p| p.active) {
                for vol in [&node.disk_volume, &node.seed_volume] {
                    if volume(vol).is_none() && !(retired && vol == &node.seed_volume) {
                        replace.push(format!("volume {vol} is missing"));
                    }
                }
            }
            if let Some(current) = volume(&node.disk_volume)
                && current > node.disk_bytes
            {
                replace.push(format!(
                    "disk shrinks from {current} to {} bytes",
                    node.disk_bytes
                ));
            }
            if replace.is_empty() {
                let disk_change = match volume(&node.disk_volume) {
                    Some(current) if current < node.disk_bytes => Change::Update {
                        reasons: vec![format!(
                            "disk grows from {current} to {} bytes",
                            node.disk_bytes
                        )],
                    },
                    _ => Change::Unchanged,
                };
                node_actions.push((ObjectKind::Volume, node.disk_volume.clone(), disk_change));
                node_actions.extend(
                    seed_change(retired, volume(&node.seed_volume).is_some())
                        .map(|change| (ObjectKind::Volume, node.seed_volume.clone(), change)),
                );
                let change = if owner.spec != node.spec {
                    Change::Update {
                        reasons: vec![if d.active {
                            "definition changed (takes effect at the next restart)".into()
                        } else {
                            "definition changed".into()
                        }],
                    }
                } else if !d.active {
                    Change::Start
                } else {
                    Change::Unchanged
                };
                node_actions.push((ObjectKind::Domain, node.name.clone(), change));
            } else {
                for vol in [&node.disk_volume, &node.seed_volume] {
                    node_actions.push((
                        ObjectKind::Volume,
                        vol.clone(),
                        Change::Replace {
                            reasons: replace.clone(),
                        },
                    ));
                }
                node_actions.push((
                    ObjectKind::Domain,
                    node.name.clone(),
                    Change::Replace { reasons: replace },
                ));
            }
        }
    }
    node_actions
}

/// What becomes of the seed volume of a node that is kept: nothing, or — once the seed is
/// retired — nothing to list, unless the volume outlived the retirement (an apply stopped
/// between its two steps): it holds the node's host private key, so it goes.
fn seed_change(retired: bool, present: bool) -> Option<Change> {
    match (retired, present) {
        (false, _) => Some(Change::Unchanged),
        (true, true) => Some(Change::Delete),
        (true, false) => None,
    }
}

/// The volumes of an owned domain that live in the cluster's pool: its disks, and a retired
/// seed volume that outlived its retirement.
fn owned_volumes(domain: &LiveDomain, desired: &Desired, live: &Live) -> Vec<String> {
    let (pool_name, pool_path) = &desired.pool;
    let Some(pool) = live.pools.get(pool_name) else {
        return Vec::new();
    };
    let retired_seed = domain
        .owner
        .as_ref()
        .and_then(|o| o.extra.get(SEED_RETIRED))
        .filter(|name| pool.volumes.contains_key(*name) || !pool.active)
        .cloned();
    let mut volumes: Vec<String> = domain
        .disks
        .iter()
        .filter_map(|file| {
            let path = std::path::Path::new(file);
            (path.parent() == Some(pool_path.as_path()))
                .then(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
                .flatten()
        })
        .filter(|name| pool.volumes.contains_key(name) || !pool.active)
        .collect();
    if let Some(seed) = retired_seed
        && !volumes.contains(&seed)
    {
        volumes.push(seed);
    }
    volumes
}

/// The plan's action that starts a stopped pool, if any. A stopped pool cannot list its
/// volumes, so `Hypervisor::apply` starts it first and plans the nodes again from what it
/// then holds.
pub fn pool_start(plan: &VmPlan) -> Option<Action> {
    plan.actions
        .iter()
        .find(|a| a.kind == ObjectKind::Pool && a.change == Change::Start)
        .cloned()
}

/// The actions that remove everything this cluster owns: its domains and their volumes, and
/// the network (and the pool, when the network records that this tool created it). Objects
/// with the same names that are not ours are listed as kept.
pub fn destroy_plan(desired: &Desired, live: &Live) -> VmPlan {
    let mut actions = Vec::new();
    for (name, d) in &live.domains {
        if is_ours(d.owner.as_ref(), &desired.cluster) {
            actions.push(Action {
                kind: ObjectKind::Domain,
                name: name.clone(),
                change: Change::Delete,
            });
            for vol in owned_volumes(d, desired, live) {
                actions.push(Action {
                    kind: ObjectKind::Volume,
                    name: vol,
                    change: Change::Delete,
                });
            }
        } else if desired.nodes.iter().any(|n| &n.name == name) {
            actions.push(Action {
                kind: ObjectKind::Domain,
                name: name.clone(),
                change: Change::Keep {
                    reason: foreign(d.owner.as_ref()),
                },
            });
        }
    }
    let (net_name, _) = &desired.network;
    let mut pool_owned = false;
    if let Some(n) = live.networks.get(net_name) {
        if is_ours(n.owner.as_ref(), &desired.cluster) {
            pool_owned = n
                .owner
                .as_ref()
                .and_then(|o| o.extra.get("pool"))
                .is_some_and(|p| p == &desired.pool.0);
            actions.push(Action {
                kind: ObjectKind::Network,
                name: net_name.clone(),
                change: Change::Delete,
            });
        } else {
            actions.push(Action {
                kind: ObjectKind::Network,
                name: net_name.clone(),
                change: Change::Keep {
                    reason: foreign(n.owner.as_ref()),
                },
            });
        }
    }
    let (pool_name, _) = &desired.pool;
    if live.pools.contains_key(pool_name) {
        actions.push(Action {
            kind: ObjectKind::Pool,
            name: pool_name.clone(),
            change: if pool_owned {
                Change::Delete
            } else {
                Change::Keep {
                    reason: "not created by this cluster's apply".into(),
                }
            },
        });
    }
    VmPlan { actions }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owner(cluster: &str, spec: &str, seed: &str) -> OwnerMeta {
        let mut o = OwnerMeta {
            cluster: cluster.into(),
            spec: spec.into(),
            extra: BTreeMap::new(),
        };
        o.extra.insert("seed".into(), seed.into());
        o
    }

    fn desired(nodes: &[(&str, &str, &str, u64)]) -> Desired {
        Desired {
            cluster: "lab".into(),
            network: ("net".into(), "netfp".into()),
            dhcp_hosts: nodes
                .iter()
                .map(|(name, ..)| format!("mac-{name} ip-{name} {name}"))
                .collect(),
            pool: ("pool".into(), PathBuf::from("/p")),
            nodes: nodes
                .iter()
                .map(|(name, spec, seed, disk)| DesiredNode {
                    name: (*name).into(),
                    spec: (*spec).into(),
                    seed: (*seed).into(),
                    disk_volume: format!("{name}.qcow2"),
                    seed_volume: format!("{name}-seed.img"),
                    disk_bytes: *disk,
                })
                .collect(),
        }
    }

    /// A model of libvirt, independent of the planner: what exists, including what the planner
    /// cannot see (a seed volume's first-boot contents, volumes of a stopped pool). Actions
    /// are applied with the effect each libvirt operation of `Hypervisor::execute` has, not
    /// by copying the wanted state, so a wrong kind of change leaves the model wrong.
    #[derive(Debug, Clone, Default)]
    struct Model {
        networks: BTreeMap<String, LiveNetwork>,
        pools: BTreeMap<String, ModelPool>,
        domains: BTreeMap<String, LiveDomain>,
        /// Domain name → the first-boot settings of the seed it was created with (read from
        /// the seed volume when the domain was made; the volume may be gone since).
        booted: BTreeMap<String, Option<String>>,
    }

    #[derive(Debug, Clone)]
    struct ModelPool {
        path: PathBuf,
        active: bool,
        /// Volume name → (capacity, the first-boot settings a seed volume was built from).
        volumes: BTreeMap<String, (u64, Option<String>)>,
    }

    const SEED_BYTES: u64 = 1 << 20;

    impl Model {
        /// What the planner is shown: the view `Hypervisor::live` reads from libvirt
        /// (volumes of a stopped pool cannot be listed).
        fn observe(&self) -> Live {
            Live {
                networks: self.networks.clone(),
                pools: self
                    .pools
                    .iter()
                    .map(|(name, p)| {
                        let volumes = if p.active {
                            p.volumes
                                .iter()
                                .map(|(v, (size, _))| (v.clone(), *size))
                                .collect()
                        } else {
                            BTreeMap::new()
                        };
                        (
                            name.clone(),
                            LivePool {
                                path: p.path.clone(),
                                active: p.active,
                                volumes,
                            },
                        )
                    })
                    .collect(),
                domains: self.domains.clone(),
            }
        }

        fn node<'a>(desired: &'a Desired, name: &str) -> &'a DesiredNode {
            desired
                .nodes
                .iter()
                .find(|n| n.name == name || n.disk_volume == name || n.seed_volume == name)
                .unwrap()
        }

        /// Performs the plan as `Hypervisor::execute` does: replaced and deleted domains are
        /// removed first, then every other action in order.
        #[allow(
            clippy::too_many_lines,
            reason = "one match over every kind of action, as execute has"
        )]
        fn apply(&mut self, desired: &Desired, plan: &VmPlan) {
            assert_eq!(plan.conflicts().count(), 0, "{plan}");
            let pool_created = plan
                .actions
                .iter()
                .any(|a| a.kind == ObjectKind::Pool && a.change == Change::Create);
            for a in &plan.actions {
                if a.kind == ObjectKind::Domain
                    && matches!(a.change, Change::Replace { .. } | Change::Delete)
                {
                    self.domains.remove(&a.name);
                }
            }
            for a in &plan.actions {
                match (a.kind, &a.change) {
                    (_, Change::Conflict { .. } | Change::Keep { .. } | Change::Unchanged)
                    | (ObjectKind::Domain, Change::Delete) => {}
                    (ObjectKind::Network, Change::Create | Change::Replace { .. }) => {
                        // Defined anew from the spec; the pool is recorded when this apply
                        // created it or the old definition recorded it.
                        let recorded = self
                            .networks
                            .remove(&a.name)
                            .and_then(|n| n.owner)
                            .is_some_and(|o| o.extra.get("pool") == Some(&desired.pool.0));
                        let mut o = OwnerMeta {
                            cluster: desired.cluster.clone(),
                            spec: desired.network.1.clone(),
                            extra: BTreeMap::new(),
                        };
                        if pool_created || recorded {
                            o.extra.insert("pool".into(), desired.pool.0.clone());
                        }
                        self.networks.insert(
                            a.name.clone(),
                            LiveNetwork {
                                owner: Some(o),
                                active: true,
                                dhcp_hosts: desired.dhcp_hosts.clone(),
                            },
                        );
                    }
                    (ObjectKind::Network, Change::Start) => {
                        self.networks.get_mut(&a.name).unwrap().active = true;
                    }
                    (ObjectKind::Network, Change::Update { .. }) => {
                        // The DHCP host entries are edited; a stopped network is started.
                        let n = self.networks.get_mut(&a.name).unwrap();
                        n.dhcp_hosts.clone_from(&desired.dhcp_hosts);
                        n.active = true;
                    }
                    (ObjectKind::Network, Change::Delete) => {
                        self.networks.remove(&a.name);
                    }
                    (ObjectKind::Pool, Change::Create) => {
                        self.pools.insert(
                            a.name.clone(),
                            ModelPool {
                                path: desired.pool.1.clone(),
                                active: true,
                                volumes: BTreeMap::new(),
                            },
                        );
                    }
                    (ObjectKind::Pool, Change::Start) => {
                        self.pools.get_mut(&a.name).unwrap().active = true;
                    }
                    (ObjectKind::Pool, Change::Delete) => {
                        self.pools.remove(&a.name);
                    }
                    (ObjectKind::Pool, other) => panic!("no pool operation for {other:?}"),
                    (ObjectKind::Volume, Change::Delete) => {
                        if let Some(p) = self.pools.get_mut(&desired.pool.0) {
                            p.volumes.remove(&a.name);
                        }
                    }
                    (ObjectKind::Volume, Change::Update { .. }) => {
                        // Grown to the node's size; the contents stay.
                        let n = Self::node(desired, &a.name);
                        let p = self.pools.get_mut(&desired.pool.0).unwrap();
                        p.volumes.get_mut(&a.name).unwrap().0 = n.disk_bytes;
                    }
                    (ObjectKind::Volume, Change::Create | Change::Replace { .. }) => {
                        // execute removes whatever has the name (a stopped pool hides its
                        // volumes from the plan), then creates; libvirt refuses to create a
                        // volume over an existing one.
                        let n = Self::node(desired, &a.name);
                        let volume = if a.name == n.disk_volume {
                            (n.disk_bytes, None)
                        } else {
                            (SEED_BYTES, Some(n.seed.clone()))
                        };
                        let p = self.pools.get_mut(&desired.pool.0).unwrap();
                        p.volumes.remove(&a.name);
                        let existed = p.volumes.insert(a.name.clone(), volume);
                        assert!(existed.is_none(), "libvirt: volume {} exists", a.name);
                    }
                    (ObjectKind::Volume, other) => panic!("no volume operation for {other:?}"),
                    (ObjectKind::Domain, Change::Create | Change::Replace { .. }) => {
                        let n = Self::node(desired, &a.name);
                        let booted = self
                            .pools
                            .get(&desired.pool.0)
                            .and_then(|p| p.volumes.get(&n.seed_volume))
                            .and_then(|(_, seed)| seed.clone());
                        self.booted.insert(a.name.clone(), booted);
                        let mut o = owner(&desired.cluster, &n.spec, &n.seed);
                        o.extra.insert("ip".into(), n.name.clone());
                        self.domains.insert(
                            a.name.clone(),
                            LiveDomain {
                                owner: Some(o),
                                active: true,
                                disks: vec![
                                    format!("{}/{}", desired.pool.1.display(), n.disk_volume),
                                    format!("{}/{}", desired.pool.1.display(), n.seed_volume),
                                ],
                            },
                        );
                    }
                    (ObjectKind::Domain, Change::Update { .. }) => {
                        // Redefined from the spec, keeping what it recorded; started if stopped.
                        let n = Self::node(desired, &a.name);
                        let d = self.domains.get_mut(&a.name).unwrap();
                        let o = d.owner.as_mut().unwrap();
                        o.spec.clone_from(&n.spec);
                        o.extra.insert("seed".into(), n.seed.clone());
                        d.active = true;
                    }
                    (ObjectKind::Domain, Change::Start) => {
                        self.domains.get_mut(&a.name).unwrap().active = true;
                    }
                }
            }
        }

        /// Retires the seeds as `Hypervisor::retire_seeds` does once every node is ready: the
        /// domain is redefined without its seed disk and marked, then the volume is removed.
        fn retire(&mut self, desired: &Desired) {
            for n in &desired.nodes {
                let Some(d) = self.domains.get_mut(&n.name) else {
                    continue;
                };
                let Some(o) = d.owner.as_mut() else { continue };
                if o.cluster != desired.cluster || o.extra.get("seed") != Some(&n.seed) {
                    continue;
                }
                o.extra.insert(SEED_RETIRED.into(), n.seed_volume.clone());
                d.disks.retain(|f| !f.ends_with(&n.seed_volume));
                if let Some(p) = self.pools.get_mut(&desired.pool.0) {
                    p.volumes.remove(&n.seed_volume);
                }
            }
        }

        /// Whether the model is what `desired` asks for, judged from the model itself (what
        /// the nodes really booted with), not from the planner.
        fn check(&self, desired: &Desired) -> Result<(), String> {
            let net = self.networks.get(&desired.network.0).ok_or("no network")?;
            if !(net.active
                && net
                    .owner
                    .as_ref()
                    .is_some_and(|o| o.cluster == desired.cluster && o.spec == desired.network.1)
                && sorted(&net.dhcp_hosts) == sorted(&desired.dhcp_hosts))
            {
                return Err(format!("network is not as wanted: {net:?}"));
            }
            let pool = self.pools.get(&desired.pool.0).ok_or("no pool")?;
            if !(pool.active && pool.path == desired.pool.1) {
                return Err(format!("pool is not as wanted: {pool:?}"));
            }
            for n in &desired.nodes {
                let d = self
                    .domains
                    .get(&n.name)
                    .ok_or(format!("no domain {}", n.name))?;
                if !(d.active
                    && d.owner
                        .as_ref()
                        .is_some_and(|o| o.cluster == desired.cluster && o.spec == n.spec))
                {
                    return Err(format!("domain {} is not as wanted: {d:?}", n.name));
                }
                match pool.volumes.get(&n.disk_volume) {
                    Some((size, _)) if *size == n.disk_bytes => {}
                    other => return Err(format!("disk of {}: {other:?}", n.name)),
                }
                match self.booted.get(&n.name) {
                    Some(Some(seed)) if seed == &n.seed => {}
                    other => {
                        return Err(format!(
                            "{} booted from seed {other:?}, wanted {}",
                            n.name, n.seed
                        ));
                    }
                }
                let retired = d
                    .owner
                    .as_ref()
                    .is_some_and(|o| o.extra.contains_key(SEED_RETIRED));
                match (retired, pool.volumes.get(&n.seed_volume)) {
                    (false, Some(_)) | (true, None) => {}
                    (false, None) => return Err(format!("{}: seed volume missing", n.name)),
                    (true, Some(_)) => {
                        return Err(format!("{}: seed retired but its volume is left", n.name));
                    }
                }
                if retired && d.disks.iter().any(|f| f.ends_with(&n.seed_volume)) {
                    return Err(format!("{}: retired seed still a disk", n.name));
                }
            }
            for (name, d) in &self.domains {
                if is_ours(d.owner.as_ref(), &desired.cluster)
                    && !desired.nodes.iter().any(|n| &n.name == name)
                {
                    return Err(format!("domain {name} is no longer wanted but exists"));
                }
            }
            Ok(())
        }
    }

    /// Applies a plan to a fresh model holding `live` (for the example tests below).
    fn simulate(desired: &Desired, live: &mut Live, plan: &VmPlan) {
        let mut model = Model {
            networks: live.networks.clone(),
            pools: live
                .pools
                .iter()
                .map(|(name, p)| {
                    (
                        name.clone(),
                        ModelPool {
                            path: p.path.clone(),
                            active: p.active,
                            volumes: p
                                .volumes
                                .iter()
                                .map(|(v, s)| (v.clone(), (*s, None)))
                                .collect(),
                        },
                    )
                })
                .collect(),
            domains: live.domains.clone(),
            booted: BTreeMap::new(),
        };
        model.apply(desired, plan);
        *live = model.observe();
    }

    #[test]
    fn empty_host_creates_everything_in_order() {
        let d = desired(&[("a", "s", "x", 10)]);
        let p = plan(&d, &Live::default());
        let got: Vec<(ObjectKind, &str, &str)> = p
            .actions
            .iter()
            .map(|a| (a.kind, a.name.as_str(), a.change.label()))
            .collect();
        assert_eq!(
            got,
            [
                (ObjectKind::Network, "net", "create"),
                (ObjectKind::Pool, "pool", "create"),
                (ObjectKind::Volume, "a.qcow2", "create"),
                (ObjectKind::Volume, "a-seed.img", "create"),
                (ObjectKind::Domain, "a", "create"),
            ]
        );
    }

    #[test]
    fn foreign_objects_are_conflicts_and_destroy_keeps_them() {
        let d = desired(&[("a", "s", "x", 10)]);
        let mut live = Live::default();
        live.networks.insert(
            "net".into(),
            LiveNetwork {
                owner: None,
                active: true,
                dhcp_hosts: vec![],
            },
        );
        live.domains.insert(
            "a".into(),
            LiveDomain {
                owner: Some(owner("other", "s", "x")),
                active: true,
                disks: vec![],
            },
        );
        let p = plan(&d, &live);
        assert_eq!(p.conflicts().count(), 2);
        assert!(p.to_string().contains("belongs to cluster `other`"));
        let destroy = destroy_plan(&d, &live);
        assert!(
            destroy
                .actions
                .iter()
                .all(|a| matches!(a.change, Change::Keep { .. })),
            "{destroy}"
        );
    }

    #[test]
    fn seed_change_replaces_spec_change_updates_disk_growth_resizes() {
        let before = desired(&[("a", "s1", "x1", 10), ("b", "s1", "x1", 10)]);
        let mut live = Live::default();
        let first = plan(&before, &live);
        simulate(&before, &mut live, &first);
        let after = desired(&[("a", "s2", "x1", 20), ("b", "s1", "x2", 10)]);
        let p = plan(&after, &live);
        let label = |kind, name: &str| {
            p.actions
                .iter()
                .find(|a| a.kind == kind && a.name == name)
                .unwrap()
                .change
                .label()
        };
        assert_eq!(label(ObjectKind::Domain, "a"), "change");
        assert_eq!(label(ObjectKind::Volume, "a.qcow2"), "change");
        assert_eq!(label(ObjectKind::Domain, "b"), "replace");
        assert_eq!(label(ObjectKind::Volume, "b.qcow2"), "replace");
    }

    #[test]
    fn removed_node_is_deleted_with_its_volumes() {
        let before = desired(&[("a", "s", "x", 10), ("b", "s", "x", 10)]);
        let mut live = Live::default();
        let first = plan(&before, &live);
        simulate(&before, &mut live, &first);
        let after = desired(&[("a", "s", "x", 10)]);
        let p = plan(&after, &live);
        let deleted: Vec<&str> = p
            .actions
            .iter()
            .filter(|a| a.change == Change::Delete)
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(deleted, ["b", "b.qcow2", "b-seed.img"]);
    }

    fn node_strategy() -> impl Strategy<Value = (String, String, String, u64)> {
        (
            prop::sample::select(vec!["a", "b", "c", "d"]),
            prop::sample::select(vec!["s1", "s2"]),
            prop::sample::select(vec!["x1", "x2"]),
            prop::sample::select(vec![10u64, 20, 30]),
        )
            .prop_map(|(n, s, x, d)| (n.to_owned(), s.to_owned(), x.to_owned(), d))
    }

    fn spec_strategy() -> impl Strategy<Value = Desired> {
        prop::collection::btree_map(
            prop::sample::select(vec!["a", "b", "c", "d"]),
            node_strategy(),
            0..4,
        )
        .prop_map(|m| {
            let nodes: Vec<(String, String, String, u64)> = m
                .into_iter()
                .map(|(name, (_, s, x, d))| (name.to_owned(), s, x, d))
                .collect();
            let refs: Vec<(&str, &str, &str, u64)> = nodes
                .iter()
                .map(|(a, b, c, d)| (a.as_str(), b.as_str(), c.as_str(), *d))
                .collect();
            desired(&refs)
        })
    }

    /// A host as an earlier run, a crash or a user may have left it: any mix of this
    /// cluster's objects, stopped or running, defined from older settings, with volumes
    /// missing or left over. (Foreign objects are conflicts, tested above.)
    fn host_strategy() -> impl Strategy<Value = Model> {
        let network = proptest::option::of((
            prop::sample::select(vec!["netfp", "oldfp"]),
            any::<bool>(),
            prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d"]), 0..3),
            any::<bool>(),
        ));
        let domain = proptest::option::of((
            prop::sample::select(vec!["s1", "s2"]),
            prop::sample::select(vec!["x1", "x2"]),
            any::<bool>(),
            any::<bool>(),
        ));
        let volumes = (
            proptest::option::of(prop::sample::select(vec![10u64, 20, 30])),
            proptest::option::of(prop::sample::select(vec!["x1", "x2"])),
        );
        (
            network,
            proptest::option::of(any::<bool>()),
            prop::collection::vec((domain, volumes), 4),
        )
            .prop_map(|(network, pool, nodes)| {
                let mut m = Model::default();
                if let Some((fp, active, hosts, records_pool)) = network {
                    let mut o = owner("lab", fp, "");
                    if records_pool {
                        o.extra.insert("pool".into(), "pool".into());
                    }
                    m.networks.insert(
                        "net".into(),
                        LiveNetwork {
                            owner: Some(o),
                            active,
                            dhcp_hosts: hosts
                                .iter()
                                .map(|n| format!("mac-{n} ip-{n} {n}"))
                                .collect(),
                        },
                    );
                }
                // Without a pool there are no disks, so no domains either.
                let Some(pool_active) = pool else { return m };
                let mut volumes = BTreeMap::new();
                for (name, (domain, (disk, seed))) in ["a", "b", "c", "d"].into_iter().zip(nodes) {
                    if let Some(size) = disk {
                        volumes.insert(format!("{name}.qcow2"), (size, None));
                    }
                    // A seed volume holds what its domain was created from (apply makes both
                    // together and removes the domain first); one without a domain is a
                    // leftover of any run.
                    let seed = match (&domain, seed) {
                        (Some((_, domain_seed, _, _)), Some(_)) => Some(*domain_seed),
                        (_, seed) => seed,
                    };
                    if let Some(seed) = seed {
                        volumes.insert(
                            format!("{name}-seed.img"),
                            (SEED_BYTES, Some(seed.to_owned())),
                        );
                    }
                    // Volumes disappear only through a running pool (libvirt cannot delete
                    // from a stopped one): a node's domain behind a stopped pool has both.
                    if let Some((_, domain_seed, _, _)) = &domain
                        && !pool_active
                    {
                        volumes.entry(format!("{name}.qcow2")).or_insert((10, None));
                        volumes
                            .entry(format!("{name}-seed.img"))
                            .or_insert((SEED_BYTES, Some((*domain_seed).to_owned())));
                    }
                    if let Some((spec, seed, active, retired)) = domain {
                        // A retired node: its seed disk is gone from the definition; the
                        // volume may have outlived it (an apply stopped in between).
                        let mut o = owner("lab", spec, seed);
                        let mut disks = vec![format!("/p/{name}.qcow2")];
                        if retired {
                            o.extra
                                .insert(SEED_RETIRED.into(), format!("{name}-seed.img"));
                        } else {
                            disks.push(format!("/p/{name}-seed.img"));
                        }
                        m.booted.insert(name.into(), Some(seed.to_owned()));
                        m.domains.insert(
                            name.into(),
                            LiveDomain {
                                owner: Some(o),
                                active,
                                disks,
                            },
                        );
                    }
                }
                m.pools.insert(
                    "pool".into(),
                    ModelPool {
                        path: PathBuf::from("/p"),
                        active: pool_active,
                        volumes,
                    },
                );
                m
            })
    }

    proptest! {
        /// Destroy, from whatever this cluster left on the host (a retired seed volume that
        /// outlived its retirement included), removes every domain and each one's volumes.
        #[test]
        fn destroy_from_any_host_removes_every_domains_volumes(
            host in host_strategy(),
            d in spec_strategy(),
        ) {
            let mut model = host;
            let had_domains: Vec<String> = model.domains.keys().cloned().collect();
            let destroy = destroy_plan(&d, &model.observe());
            model.apply(&d, &destroy);
            prop_assert!(model.domains.is_empty(), "{:?}", model.domains);
            if let Some(pool) = model.pools.get(&d.pool.0).filter(|p| p.active) {
                for name in had_domains {
                    for vol in [format!("{name}.qcow2"), format!("{name}-seed.img")] {
                        prop_assert!(!pool.volumes.contains_key(&vol), "{} left by destroy", vol);
                    }
                }
            }
        }

        /// From whatever this cluster left on the host, and through any sequence of specs:
        /// one apply of the plan makes the model what the spec asks for (judged on the model,
        /// including what each node really booted with), planning again is a no-op, and
        /// destroy removes everything.
        #[test]
        fn any_sequence_of_specs_converges(
            host in host_strategy(),
            specs in prop::collection::vec((spec_strategy(), any::<bool>()), 1..6),
        ) {
            let mut model = host;
            for (d, retire) in &specs {
                // As Hypervisor::apply does: a stopped pool is started first, then the rest is
                // planned from what it holds.
                let mut p = plan(d, &model.observe());
                prop_assert_eq!(p.conflicts().count(), 0);
                if let Some(start) = pool_start(&p) {
                    model.apply(d, &VmPlan { actions: vec![start] });
                    p = plan(d, &model.observe());
                }
                model.apply(d, &p);
                if let Err(e) = model.check(d) {
                    return Err(TestCaseError::fail(format!("after one apply: {e}\nplan:\n{p}")));
                }
                let again = plan(d, &model.observe());
                prop_assert!(again.is_noop(), "second plan not a no-op:\n{}", again);
                // Every node ready: the seeds are retired, and nothing is left to do.
                if *retire {
                    model.retire(d);
                    if let Err(e) = model.check(d) {
                        return Err(TestCaseError::fail(format!("after retiring: {e}")));
                    }
                    let again = plan(d, &model.observe());
                    prop_assert!(again.is_noop(), "plan after retiring:\n{}", again);
                }
            }
            // Destroy removes every domain, its volumes and the network.
            let (last, _) = specs.last().unwrap();
            let destroy = destroy_plan(last, &model.observe());
            let had_domains: Vec<String> = model.domains.keys().cloned().collect();
            model.apply(last, &destroy);
            prop_assert!(model.domains.is_empty(), "{:?}", model.domains);
            if let Some(pool) = model.pools.get(&last.pool.0).filter(|p| p.active) {
                for name in had_domains {
                    for vol in [format!("{name}.qcow2"), format!("{name}-seed.img")] {
                        prop_assert!(!pool.volumes.contains_key(&vol), "{} left by destroy", vol);
                    }
                }
            }
            prop_assert!(model.networks.is_empty());
            // A second destroy has nothing left to do (a pool this cluster did not create is
            // only listed as kept).
            let again = destroy_plan(last, &model.observe());
            prop_assert!(again.is_noop(), "{}", again);
        }
    }
}
