//! The connection to libvirt: reads live state, applies plans, destroys.
//!
//! libvirt's API is blocking; async callers run these methods in
//! `tokio::task::spawn_blocking`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use crate::error::{Error, Result, libvirt};
use crate::event::{Event, Events};
use crate::plan::{
    self, Action, Change, Desired, DesiredNode, Live, LiveDomain, LiveNetwork, LivePool,
    ObjectKind, VmPlan, desired,
};
use crate::seed::{self, HostKey};
use crate::spec::{DomainType, DomainTypeChoice, VmClusterSpec, VmSpec, fingerprint};
use crate::xml::{self, OwnerMeta};

/// `VIR_NETWORK_XML_INACTIVE`: the persistent definition, which holds the metadata.
const NETWORK_XML_INACTIVE: u32 = 1;
/// `VIR_DOMAIN_XML_INACTIVE`.
const DOMAIN_XML_INACTIVE: u32 = 2;
/// `VIR_DOMAIN_AFFECT_LIVE`.
const DOMAIN_AFFECT_LIVE: u32 = 1;
/// How long a running guest gets to release its seed disk once asked to.
const SEED_DETACH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A node's SSH identity as recorded on its domain: what `known_hosts` should say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnownHost {
    /// Node name.
    pub node: String,
    /// Its address.
    pub ip: String,
    /// Its host public key (`ssh-ed25519 AAAA...`).
    pub host_key: String,
}

impl KnownHost {
    /// The `known_hosts` line for this node.
    pub fn line(&self) -> String {
        format!("{} {}", self.ip, self.host_key)
    }
}

/// State of one node as libvirt reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Whether a domain of that name exists.
    pub defined: bool,
    /// Whether it is ours.
    pub owned: bool,
    /// Whether it runs.
    pub running: bool,
    /// The address recorded for it.
    pub ip: Option<String>,
}

/// A libvirt connection.
pub struct Hypervisor {
    conn: Connect,
    uri: String,
}

impl std::fmt::Debug for Hypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hypervisor")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

/// Whether a URI names a libvirt on this machine (no host part).
pub fn is_local_uri(uri: &str) -> bool {
    uri.split_once("://")
        .is_some_and(|(_, rest)| rest.starts_with('/') && !uri.contains('+'))
}

impl Hypervisor {
    /// Opens a connection.
    ///
    /// # Errors
    /// libvirt cannot be reached at `uri`.
    pub fn connect(uri: &str) -> Result<Self> {
        // libvirt prints every error to stderr by default; ours are returned instead.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).map_err(|source| Error::Connect {
            uri: uri.to_owned(),
            source,
        })?;
        Ok(Self {
            conn,
            uri: uri.to_owned(),
        })
    }

    /// The underlying libvirt connection, for what this library does not cover.
    pub fn connection(&self) -> &Connect {
        &self.conn
    }

    /// The connection URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Resolves the domain type: the test driver's own type on `test://` connections;
    /// `auto` picks `kvm` only when the host's KVM can really run guests (on this machine:
    /// /dev/kvm and a CPU with vmx/svm; on a remote host: libvirt offers kvm), else `qemu`.
    ///
    /// # Errors
    /// libvirt's capabilities cannot be read.
    pub fn resolve_domain_type(&self, choice: DomainTypeChoice) -> Result<DomainType> {
        if self.uri.starts_with("test:") {
            return Ok(DomainType::Test);
        }
        match choice {
            DomainTypeChoice::Kvm => Ok(DomainType::Kvm),
            DomainTypeChoice::Qemu => Ok(DomainType::Qemu),
            DomainTypeChoice::Auto if is_local_uri(&self.uri) => {
                // Decided from this machine directly: asking libvirt for its capabilities
                // takes seconds on some hosts, and a /dev/kvm without vmx/svm (a paravirtual
                // KVM) is offered by libvirt but cannot run Linux guests.
                Ok(
                    if Path::new("/dev/kvm").exists() && host_cpu_has_virtualization() {
                        DomainType::Kvm
                    } else {
                        DomainType::Qemu
                    },
                )
            }
            DomainTypeChoice::Auto => {
                let caps = self
                    .conn
                    .capabilities()
                    .map_err(libvirt("read host capabilities"))?;
                let offers_kvm =
                    caps.contains("<domain type='kvm'") || caps.contains("<domain type=\"kvm\"");
                Ok(if offers_kvm {
                    DomainType::Kvm
                } else {
                    DomainType::Qemu
                })
            }
        }
    }

    /// What libvirt has of the objects `spec` names, plus every domain.
    ///
    /// # Errors
    /// A libvirt call fails.
    pub fn live(&self, spec: &VmClusterSpec) -> Result<Live> {
        let mut live = Live::default();
        if let Ok(net) = self.conn.lookup_network_by_name(&spec.network.name) {
            let xml = persistent_network_xml(&net)
                .map_err(libvirt(format!("read network {}", spec.network.name)))?;
            live.networks.insert(
                spec.network.name.clone(),
                LiveNetwork {
                    owner: xml::read_owner_meta(&xml),
                    active: net.is_active().unwrap_or(false),
                    dhcp_hosts: xml::network_dhcp_hosts(&xml),
                },
            );
        }
        if let Ok(pool) = self.conn.lookup_storage_pool_by_name(&spec.pool.name) {
            live.pools.insert(
                spec.pool.name.clone(),
                Self::live_pool(&pool, &spec.pool.name)?,
            );
        }
        let domains = self
            .conn
            .list_all_domains(0)
            .map_err(libvirt("list domains"))?;
        for dom in domains {
            let name = dom.name().map_err(libvirt("read a domain's name"))?;
            let xml = dom
                .xml_desc(DOMAIN_XML_INACTIVE)
                .map_err(libvirt(format!("read domain {name}")))?;
            live.domains.insert(
                name,
                LiveDomain {
                    owner: xml::read_owner_meta(&xml),
                    active: dom.is_active().unwrap_or(false),
                    disks: xml::domain_disk_files(&xml),
                },
            );
        }
        Ok(live)
    }

    fn live_pool(pool: &StoragePool, name: &str) -> Result<LivePool> {
        let xml = pool
            .xml_desc(0)
            .map_err(libvirt(format!("read pool {name}")))?;
        let path = pool_path(&xml).unwrap_or_default();
        let active = pool.is_active().unwrap_or(false);
        let mut volumes = BTreeMap::new();
        if active {
            // Pick up files created behind libvirt's back (or removed).
            let _ = pool.refresh(0);
            for vol in pool
                .list_all_volumes(0)
                .map_err(libvirt(format!("list volumes of pool {name}")))?
            {
                let vol_name = vol.name().map_err(libvirt("read a volume's name"))?;
                let capacity = vol.info().map_or(0, |i| i.capacity);
                volumes.insert(vol_name, capacity);
            }
        }
        Ok(LivePool {
            path: path.into(),
            active,
            volumes,
        })
    }

    /// The plan that makes libvirt match `spec`.
    ///
    /// # Errors
    /// A libvirt call fails.
    pub fn plan(&self, spec: &VmClusterSpec) -> Result<VmPlan> {
        let kind = self.resolve_domain_type(spec.domain_type)?;
        Ok(plan::plan(&desired(spec, kind), &self.live(spec)?))
    }

    /// The plan that removes everything this cluster owns.
    ///
    /// # Errors
    /// A libvirt call fails.
    pub fn destroy_plan(&self, spec: &VmClusterSpec) -> Result<VmPlan> {
        let kind = self.resolve_domain_type(spec.domain_type)?;
        Ok(plan::destroy_plan(&desired(spec, kind), &self.live(spec)?))
    }

    /// Plans and applies: only the difference is changed. `events` is told of each action
    /// that does something before it is done.
    ///
    /// # Errors
    /// The plan has conflicts, or a libvirt call fails (everything done before it stays
    /// done; running apply again continues from there).
    pub fn apply(&self, spec: &VmClusterSpec, events: Events<'_>) -> Result<VmPlan> {
        let kind = self.resolve_domain_type(spec.domain_type)?;
        let live = self.live(spec)?;
        let want = desired(spec, kind);
        let plan = plan::plan(&want, &live);
        // A stopped pool hides its volumes, so the node actions planned behind it are
        // guesses: start it first, then plan the rest from what it holds.
        if let Some(start) = plan::pool_start(&plan)
            && plan.conflicts().next().is_none()
        {
            let first = VmPlan {
                actions: vec![start.clone()],
            };
            self.execute(spec, kind, &want, &live, &first, events)?;
            let live = self.live(spec)?;
            let rest = plan::plan(&want, &live);
            self.execute(spec, kind, &want, &live, &rest, events)?;
            let mut actions = vec![start];
            actions.extend(rest.actions);
            return Ok(VmPlan { actions });
        }
        self.execute(spec, kind, &want, &live, &plan, events)?;
        Ok(plan)
    }

    /// Retires the cloud-init seed of every node of `spec` whose domain this cluster made from
    /// the seed `spec` wants: the domain's definition loses the seed disk and records
    /// [`plan::SEED_RETIRED`](crate::plan::SEED_RETIRED), the disk is detached from the running domain, and the volume —
    /// which holds the node's SSH host private key — is removed. Returns the volumes removed,
    /// as delete actions (`events` is told of each first).
    ///
    /// Call it only once every node is ready with cloud-init turned off
    /// ([`crate::wait::CLOUD_INIT_DONE`]): a node that boots without its seed while cloud-init
    /// is still on would take itself for a new instance and make new host keys. A node whose
    /// guest does not release the disk keeps the volume until it next stops; the next apply
    /// removes it then.
    ///
    /// # Errors
    /// A libvirt call fails (what was done stays done; running it again continues).
    pub fn retire_seeds(&self, spec: &VmClusterSpec, events: Events<'_>) -> Result<Vec<Action>> {
        let kind = self.resolve_domain_type(spec.domain_type)?;
        let want = desired(spec, kind);
        let live = self.live(spec)?;
        let volumes = live
            .pools
            .get(&spec.pool.name)
            .map(|p| p.volumes.clone())
            .unwrap_or_default();
        let mut removed = Vec::new();
        for node in &spec.nodes {
            let (Some(domain), Some(wanted)) = (
                live.domains.get(&node.name),
                want.nodes.iter().find(|n| n.name == node.name),
            ) else {
                continue;
            };
            let Some(owner) = domain
                .owner
                .clone()
                .filter(|o| o.cluster == spec.cluster_id)
            else {
                continue;
            };
            // A node still to be replaced keeps its seed: the next apply makes it anew.
            if owner.extra.get("seed") != Some(&wanted.seed) {
                continue;
            }
            let volume = node.seed_volume();
            if !owner.extra.contains_key(xml::SEED_RETIRED) {
                let mut marked = owner.clone();
                marked
                    .extra
                    .insert(xml::SEED_RETIRED.into(), volume.clone());
                self.define_domain(spec, kind, node, Some(wanted), None, Some(marked))?;
            } else if !volumes.contains_key(&volume) {
                continue;
            }
            let action = Action {
                kind: ObjectKind::Volume,
                name: volume,
                change: Change::Delete,
            };
            events(Event::Action(action.clone()));
            if self.remove_seed_volume(spec, node)? {
                removed.push(action);
            }
        }
        Ok(removed)
    }

    /// Detaches a node's seed disk from its running domain (the persistent definition no
    /// longer has it), then removes the volume. Returns whether the volume is gone; a guest
    /// that does not release the disk in time keeps it until the domain stops.
    fn remove_seed_volume(&self, spec: &VmClusterSpec, node: &VmSpec) -> Result<bool> {
        let file = xml::volume_path(&spec.pool, &node.seed_volume());
        if let Ok(dom) = self.conn.lookup_domain_by_name(&node.name)
            && dom.is_active().unwrap_or(false)
        {
            let attached = |dom: &Domain| {
                dom.xml_desc(0)
                    .map_or(true, |x| xml::domain_disk_files(&x).contains(&file))
            };
            if attached(&dom) {
                let disk = xml::seed_disk_xml(spec, node)?;
                match dom.detach_device_flags(&disk, DOMAIN_AFFECT_LIVE) {
                    Ok(()) => {}
                    // The test driver cannot detach, and nothing of it holds the file.
                    Err(e)
                        if e.code().is(virt::error::ErrorNumber::NoSupport)
                            && self.uri.starts_with("test:") => {}
                    Err(e) => {
                        tracing::warn!(
                            node = %node.name,
                            "the seed disk could not be detached from the running domain ({e}); its volume stays until the node next stops"
                        );
                        return Ok(false);
                    }
                }
                // The guest acknowledges the unplug (PCIe hot-plug takes ~5 s).
                let started = std::time::Instant::now();
                while attached(&dom) && !self.uri.starts_with("test:") {
                    if started.elapsed() > SEED_DETACH_TIMEOUT {
                        tracing::warn!(
                            node = %node.name,
                            "the guest has not released its seed disk after {}s; the volume stays until the node next stops",
                            SEED_DETACH_TIMEOUT.as_secs()
                        );
                        return Ok(false);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
            }
        }
        self.remove_volume(spec, &node.seed_volume())?;
        // The test driver's volumes are in memory; the file its upload fallback wrote is not.
        if self.uri.starts_with("test:") {
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        action: "remove seed",
                        path: file.into(),
                        source,
                    });
                }
            }
        }
        Ok(true)
    }

    /// Removes every object this cluster owns; others are left alone and reported as kept.
    ///
    /// # Errors
    /// A libvirt call fails.
    pub fn destroy(&self, spec: &VmClusterSpec, events: Events<'_>) -> Result<VmPlan> {
        let kind = self.resolve_domain_type(spec.domain_type)?;
        let live = self.live(spec)?;
        let want = desired(spec, kind);
        let plan = plan::destroy_plan(&want, &live);
        self.execute(spec, kind, &want, &live, &plan, events)?;
        Ok(plan)
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one match over every kind of action, in plan order"
    )]
    fn execute(
        &self,
        spec: &VmClusterSpec,
        kind: DomainType,
        want: &Desired,
        live: &Live,
        plan: &VmPlan,
        events: Events<'_>,
    ) -> Result<()> {
        let conflicts: Vec<String> = plan
            .conflicts()
            .map(|a| match &a.change {
                Change::Conflict { reason } => format!("{} {}: {reason}", a.kind, a.name),
                _ => String::new(),
            })
            .collect();
        if !conflicts.is_empty() {
            return Err(Error::Conflicts(conflicts));
        }
        // Domains go first: a replaced or deleted node stops before its disks are touched.
        for a in &plan.actions {
            if a.kind == ObjectKind::Domain
                && matches!(a.change, Change::Replace { .. } | Change::Delete)
            {
                events(Event::Action(a.clone()));
                self.remove_domain(&a.name)?;
            }
        }
        let mut host_keys: HashMap<String, HostKey> = HashMap::new();
        let pool_created = plan
            .actions
            .iter()
            .any(|a| a.kind == ObjectKind::Pool && a.change == Change::Create);
        for a in &plan.actions {
            // Deleted domains are gone already; replaced ones were reported when removed.
            if a.change.is_noop() || (a.kind == ObjectKind::Domain && a.change == Change::Delete) {
                continue;
            }
            if !(a.kind == ObjectKind::Domain && matches!(a.change, Change::Replace { .. })) {
                events(Event::Action(a.clone()));
            }
            match (a.kind, &a.change) {
                (ObjectKind::Network, Change::Create | Change::Replace { .. }) => {
                    self.recreate_network(spec, pool_created || network_records_pool(live, spec))?;
                }
                (ObjectKind::Network, Change::Start) => {
                    let net = self.network(&a.name)?;
                    net.create()
                        .map_err(libvirt(format!("start network {}", a.name)))?;
                }
                (ObjectKind::Network, Change::Delete) => self.remove_network(&a.name)?,
                (ObjectKind::Network, Change::Update { .. }) => {
                    let current = live
                        .networks
                        .get(&a.name)
                        .map(|n| n.dhcp_hosts.clone())
                        .unwrap_or_default();
                    self.update_dhcp_hosts(spec, &current)?;
                    // A stopped network with changed hosts is planned as one update: start it
                    // too, or the next plan would still have work to do.
                    let net = self.network(&a.name)?;
                    if !net.is_active().unwrap_or(false) {
                        net.create()
                            .map_err(libvirt(format!("start network {}", a.name)))?;
                    }
                }
                (ObjectKind::Pool, Change::Create) => self.create_pool(spec)?,
                (ObjectKind::Pool, Change::Start) => {
                    self.pool(&a.name)?
                        .create(0)
                        .map_err(libvirt(format!("start pool {}", a.name)))?;
                }
                (ObjectKind::Pool, Change::Delete) => self.remove_pool(&a.name)?,
                (ObjectKind::Volume, Change::Delete) => {
                    match spec.nodes.iter().find(|n| n.seed_volume() == a.name) {
                        // A retired seed left behind: released from the running domain first.
                        Some(node) => {
                            self.remove_seed_volume(spec, node)?;
                        }
                        None => self.remove_volume(spec, &a.name)?,
                    }
                }
                (ObjectKind::Volume, Change::Update { .. }) => self.grow_overlay(spec, &a.name)?,
                (ObjectKind::Volume, Change::Create | Change::Replace { .. }) => {
                    // A create too: a pool that was stopped when the plan was made hid its
                    // volumes, and a file left there by an interrupted run would make
                    // libvirt refuse the new volume.
                    self.remove_volume(spec, &a.name)?;
                    let node = node_of_volume(spec, &a.name)
                        .ok_or_else(|| Error::Spec(format!("no node owns volume {}", a.name)))?;
                    if a.name == node.disk_volume() {
                        self.create_overlay(spec, node)?;
                    } else {
                        let key = HostKey::generate(&node.name)?;
                        self.create_seed(spec, node, &key)?;
                        host_keys.insert(node.name.clone(), key);
                    }
                }
                (ObjectKind::Domain, Change::Create | Change::Replace { .. }) => {
                    let node = spec
                        .nodes
                        .iter()
                        .find(|n| n.name == a.name)
                        .ok_or_else(|| Error::Spec(format!("no node named {}", a.name)))?;
                    let key = host_keys.get(&node.name).map(|k| k.public_openssh.clone());
                    let wanted = want.nodes.iter().find(|n| n.name == a.name);
                    self.define_domain(spec, kind, node, wanted, key, None)?;
                    self.start_domain(&a.name)?;
                }
                (ObjectKind::Domain, Change::Update { .. }) => {
                    let node = spec
                        .nodes
                        .iter()
                        .find(|n| n.name == a.name)
                        .ok_or_else(|| Error::Spec(format!("no node named {}", a.name)))?;
                    let previous = live.domains.get(&a.name).and_then(|d| d.owner.clone());
                    let wanted = want.nodes.iter().find(|n| n.name == a.name);
                    self.define_domain(spec, kind, node, wanted, None, previous)?;
                    let dom = self.domain(&a.name)?;
                    if !dom.is_active().unwrap_or(false) {
                        self.start_domain(&a.name)?;
                    }
                }
                (ObjectKind::Domain, Change::Start) => self.start_domain(&a.name)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn network(&self, name: &str) -> Result<virt::network::Network> {
        self.conn
            .lookup_network_by_name(name)
            .map_err(libvirt(format!("find network {name}")))
    }

    fn pool(&self, name: &str) -> Result<StoragePool> {
        self.conn
            .lookup_storage_pool_by_name(name)
            .map_err(libvirt(format!("find pool {name}")))
    }

    fn domain(&self, name: &str) -> Result<Domain> {
        self.conn
            .lookup_domain_by_name(name)
            .map_err(libvirt(format!("find domain {name}")))
    }

    fn recreate_network(&self, spec: &VmClusterSpec, record_pool: bool) -> Result<()> {
        let name = &spec.network.name;
        if self.conn.lookup_network_by_name(name).is_ok() {
            self.remove_network(name)?;
        }
        let mut owner = OwnerMeta {
            cluster: spec.cluster_id.clone(),
            spec: fingerprint(&spec.network),
            extra: BTreeMap::new(),
        };
        if record_pool {
            owner.extra.insert("pool".into(), spec.pool.name.clone());
        }
        let net = self
            .conn
            .define_network_xml(&xml::network_xml(spec, &owner)?)
            .map_err(libvirt(format!("define network {name}")))?;
        net.create()
            .map_err(libvirt(format!("start network {name}")))?;
        net.set_autostart(true)
            .map_err(libvirt(format!("set autostart on network {name}")))?;
        Ok(())
    }

    /// Adds and removes DHCP host entries of a running network in place (and in its
    /// persistent definition): the nodes keep their connection.
    fn update_dhcp_hosts(&self, spec: &VmClusterSpec, current: &[String]) -> Result<()> {
        const ADD_LAST: u32 = 3;
        const DELETE: u32 = 2;
        const SECTION_IP_DHCP_HOST: u32 = 4;
        const AFFECT_LIVE: u32 = 1;
        const AFFECT_CONFIG: u32 = 2;
        let name = &spec.network.name;
        let net = self.network(name)?;
        let flags = if net.is_active().unwrap_or(false) {
            AFFECT_LIVE | AFFECT_CONFIG
        } else {
            AFFECT_CONFIG
        };
        let wanted: Vec<(String, &crate::spec::VmSpec)> = spec
            .nodes
            .iter()
            .map(|n| {
                (
                    xml::dhcp_host_key(&n.mac.to_string(), &n.ip.to_string(), &n.name),
                    n,
                )
            })
            .collect();
        for key in current {
            if !wanted.iter().any(|(k, _)| k == key) {
                let mut parts = key.split(' ');
                let (mac, ip, host) = (
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or(""),
                );
                let element = format!("<host mac='{mac}' name='{host}' ip='{ip}'/>");
                net.update(DELETE, SECTION_IP_DHCP_HOST, -1, &element, flags)
                    .map_err(libvirt(format!(
                        "remove DHCP host {host} from network {name}"
                    )))?;
            }
        }
        for (key, node) in &wanted {
            if !current.contains(key) {
                net.update(
                    ADD_LAST,
                    SECTION_IP_DHCP_HOST,
                    -1,
                    &xml::dhcp_host_xml(node)?,
                    flags,
                )
                .map_err(libvirt(format!(
                    "add DHCP host {} to network {name}",
                    node.name
                )))?;
            }
        }
        Ok(())
    }

    fn remove_network(&self, name: &str) -> Result<()> {
        let net = self.network(name)?;
        if net.is_active().unwrap_or(false) {
            net.destroy()
                .map_err(libvirt(format!("stop network {name}")))?;
        }
        net.undefine()
            .map_err(libvirt(format!("undefine network {name}")))
    }

    fn create_pool(&self, spec: &VmClusterSpec) -> Result<()> {
        let name = &spec.pool.name;
        let pool = self
            .conn
            .define_storage_pool_xml(&xml::pool_xml(&spec.pool)?, 0)
            .map_err(libvirt(format!("define pool {name}")))?;
        // Creates the directory; an existing one is fine.
        if let Err(e) = pool.build(0)
            && !e.code().is(virt::error::ErrorNumber::NoSupport)
            && !Path::new(&spec.pool.path).is_dir()
        {
            return Err(libvirt(format!(
                "build pool {name} at {}",
                spec.pool.path.display()
            ))(e));
        }
        pool.create(0)
            .map_err(libvirt(format!("start pool {name}")))?;
        pool.set_autostart(true)
            .map_err(libvirt(format!("set autostart on pool {name}")))?;
        // Record that this cluster created the pool, so destroy may remove it.
        if let Ok(net) = self.conn.lookup_network_by_name(&spec.network.name)
            && let Ok(xml) = persistent_network_xml(&net)
            && let Some(mut owner) = xml::read_owner_meta(&xml)
            && owner.cluster == spec.cluster_id
            && owner.extra.get("pool") != Some(name)
        {
            owner.extra.insert("pool".into(), name.clone());
            self.conn
                .define_network_xml(&xml::network_xml(spec, &owner)?)
                .map_err(libvirt(format!(
                    "record pool {name} on network {}",
                    spec.network.name
                )))?;
        }
        Ok(())
    }

    fn remove_pool(&self, name: &str) -> Result<()> {
        let pool = self.pool(name)?;
        if pool.is_active().unwrap_or(false) {
            pool.destroy()
                .map_err(libvirt(format!("stop pool {name}")))?;
        }
        pool.undefine()
            .map_err(libvirt(format!("undefine pool {name}")))
    }

    fn create_overlay(&self, spec: &VmClusterSpec, node: &VmSpec) -> Result<()> {
        let pool = self.pool(&spec.pool.name)?;
        StorageVol::create_xml(&pool, &xml::overlay_volume_xml(node, spec)?, 0).map_err(
            libvirt(format!(
                "create overlay {} on {}",
                node.disk_volume(),
                spec.base_image.path.display()
            )),
        )?;
        Ok(())
    }

    fn grow_overlay(&self, spec: &VmClusterSpec, volume: &str) -> Result<()> {
        let node = node_of_volume(spec, volume)
            .ok_or_else(|| Error::Spec(format!("no node owns volume {volume}")))?;
        let vol = self.volume(spec, volume)?;
        vol.resize(node.disk_bytes, 0).map_err(libvirt(format!(
            "resize volume {volume} to {} bytes",
            node.disk_bytes
        )))
    }

    fn create_seed(&self, spec: &VmClusterSpec, node: &VmSpec, key: &HostKey) -> Result<()> {
        let docs = seed::documents(spec, node, key)?;
        let image = seed::fat_image(&node.name, &docs)?;
        let pool = self.pool(&spec.pool.name)?;
        let name = node.seed_volume();
        let vol =
            StorageVol::create_xml(&pool, &xml::seed_volume_xml(node, image.len() as u64)?, 0)
                .map_err(libvirt(format!("create seed volume {name}")))?;
        match self.upload(&vol, &image) {
            Ok(()) => Ok(()),
            // The test driver has no upload; on this machine the pool directory is a plain
            // directory, so the file is written in place.
            Err(e)
                if e.code().is(virt::error::ErrorNumber::NoSupport) && is_local_uri(&self.uri) =>
            {
                // 0600 like the volume libvirt makes: the seed holds the node's host
                // private key.
                let path = Path::new(&spec.pool.path).join(&name);
                write_private(&path, &image).map_err(|source| Error::Io {
                    action: "write seed",
                    path,
                    source,
                })
            }
            Err(e) => Err(libvirt(format!("upload seed volume {name}"))(e)),
        }
    }

    fn upload(&self, vol: &StorageVol, data: &[u8]) -> std::result::Result<(), virt::error::Error> {
        let stream = Stream::new(&self.conn, 0)?;
        vol.upload(&stream, 0, data.len() as u64, 0)?;
        let mut sent = 0;
        while sent < data.len() {
            match usize::try_from(stream.send(&data[sent..])?) {
                Ok(n) if n > 0 => sent += n,
                _ => break,
            }
        }
        stream.finish()
    }

    fn volume(&self, spec: &VmClusterSpec, name: &str) -> Result<StorageVol> {
        let pool = self.pool(&spec.pool.name)?;
        pool.lookup_storage_vol_by_name(name)
            .map_err(libvirt(format!("find volume {name}")))
    }

    fn remove_volume(&self, spec: &VmClusterSpec, name: &str) -> Result<()> {
        match self.volume(spec, name) {
            Ok(vol) => vol
                .delete(0)
                .map_err(libvirt(format!("delete volume {name}"))),
            // Already gone (e.g. removed by hand): nothing to do.
            Err(_) => Ok(()),
        }
    }

    fn define_domain(
        &self,
        spec: &VmClusterSpec,
        kind: DomainType,
        node: &VmSpec,
        wanted: Option<&DesiredNode>,
        new_host_key: Option<String>,
        previous: Option<OwnerMeta>,
    ) -> Result<()> {
        let wanted =
            wanted.ok_or_else(|| Error::Spec(format!("node {} is not wanted", node.name)))?;
        let mut extra = previous.map(|p| p.extra).unwrap_or_default();
        extra.insert("seed".into(), wanted.seed.clone());
        extra.insert("ip".into(), node.ip.to_string());
        if let Some(key) = new_host_key {
            extra.insert("host-key".into(), key);
        }
        let owner = OwnerMeta {
            cluster: spec.cluster_id.clone(),
            spec: wanted.spec.clone(),
            extra,
        };
        let uuid = self
            .conn
            .lookup_domain_by_name(&node.name)
            .ok()
            .and_then(|d| d.uuid_string().ok());
        self.conn
            .define_domain_xml(&xml::domain_xml(spec, node, kind, &owner, uuid.as_deref())?)
            .map_err(libvirt(format!("define domain {}", node.name)))?;
        Ok(())
    }

    fn start_domain(&self, name: &str) -> Result<()> {
        let dom = self.domain(name)?;
        if !dom.is_active().unwrap_or(false) {
            dom.create()
                .map_err(libvirt(format!("start domain {name}")))?;
        }
        dom.set_autostart(true)
            .map_err(libvirt(format!("set autostart on domain {name}")))
    }

    fn remove_domain(&self, name: &str) -> Result<()> {
        let Ok(dom) = self.conn.lookup_domain_by_name(name) else {
            return Ok(());
        };
        if dom.is_active().unwrap_or(false) {
            dom.destroy()
                .map_err(libvirt(format!("stop domain {name}")))?;
        }
        dom.undefine()
            .map_err(libvirt(format!("undefine domain {name}")))
    }

    /// The host keys recorded on this cluster's domains, for `known_hosts`.
    ///
    /// # Errors
    /// A libvirt call fails.
    pub fn known_hosts(&self, spec: &VmClusterSpec) -> Result<Vec<KnownHost>> {
        let live = self.live(spec)?;
        Ok(spec
            .nodes
            .iter()
            .filter_map(|n| {
                let owner = live.domains.get(&n.name)?.owner.as_ref()?;
                if owner.cluster != spec.cluster_id {
                    return None;
                }
                Some(KnownHost {
                    node: n.name.clone(),
                    ip: owner.extra.get("ip")?.clone(),
                    host_key: owner.extra.get("host-key")?.clone(),
                })
            })
            .collect())
    }

    /// Each wanted node's state.
    ///
    /// # Errors
    /// A libvirt call fails.
    pub fn status(&self, spec: &VmClusterSpec) -> Result<Vec<NodeStatus>> {
        let live = self.live(spec)?;
        Ok(spec
            .nodes
            .iter()
            .map(|n| {
                let d = live.domains.get(&n.name);
                let owner = d.and_then(|d| d.owner.as_ref());
                NodeStatus {
                    name: n.name.clone(),
                    defined: d.is_some(),
                    owned: owner.is_some_and(|o| o.cluster == spec.cluster_id),
                    running: d.is_some_and(|d| d.active),
                    ip: owner.and_then(|o| o.extra.get("ip").cloned()),
                }
            })
            .collect())
    }

    /// A domain's state as text (e.g. "running", "shut off"), or "absent".
    pub fn domain_state(&self, name: &str) -> String {
        match self.conn.lookup_domain_by_name(name) {
            Err(_) => "absent".into(),
            Ok(dom) => match dom.is_active() {
                Ok(true) => "running".into(),
                Ok(false) => "shut off".into(),
                Err(e) => format!("unknown ({e})"),
            },
        }
    }
}

/// The persistent definition of a network (which holds the metadata); drivers that do not
/// tell persistent and live definitions apart (the test driver) give the only one they have.
fn persistent_network_xml(
    net: &virt::network::Network,
) -> std::result::Result<String, virt::error::Error> {
    net.xml_desc(NETWORK_XML_INACTIVE)
        .or_else(|_| net.xml_desc(0))
}

fn network_records_pool(live: &Live, spec: &VmClusterSpec) -> bool {
    live.networks
        .get(&spec.network.name)
        .and_then(|n| n.owner.as_ref())
        .and_then(|o| o.extra.get("pool"))
        .is_some_and(|p| p == &spec.pool.name)
}

fn node_of_volume<'a>(spec: &'a VmClusterSpec, volume: &str) -> Option<&'a VmSpec> {
    spec.nodes
        .iter()
        .find(|n| n.disk_volume() == volume || n.seed_volume() == volume)
}

fn pool_path(xml: &str) -> Option<String> {
    let start = xml.find("<target>")?;
    let rest = &xml[start..];
    let open = rest.find("<path>")? + "<path>".len();
    let close = rest.find("</path>")?;
    Some(rest.get(open..close)?.trim().to_owned())
}

/// Whether this machine's CPU exposes hardware virtualization (vmx or svm).
pub fn host_cpu_has_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    })
}

/// Writes `data` to `path` readable by its owner only, whatever the umask and whether the file
/// existed.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(data)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_uris() {
        assert!(is_local_uri("qemu:///system"));
        assert!(is_local_uri("test:///default"));
        assert!(!is_local_uri("qemu+ssh://root@host/system"));
        assert!(!is_local_uri("qemu://host/system"));
    }

    #[test]
    fn pool_path_is_read() {
        let xml = "<pool type='dir'><name>p</name><source></source><target>\n<path>/var/lib/x</path>\n</target></pool>";
        assert_eq!(pool_path(xml).as_deref(), Some("/var/lib/x"));
    }
}
