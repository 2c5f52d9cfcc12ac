//! libvirt XML built from typed structs (serialized with quick-xml + serde), and the reading
//! of this library's ownership metadata back out of live XML.

use std::collections::BTreeMap;
use std::path::Path;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use serde::Serialize;

use crate::spec::{BootMode, DomainType, PoolSpec, VmClusterSpec, VmSpec};

/// XML namespace of this library's `<metadata>` elements.
pub const METADATA_NS: &str = "http://homelab.invalid/xmlns/libvirt-vm/1";

/// Size of QEMU's TCG translation-block cache under software emulation, in MiB. The default
/// (1 GiB on 64-bit hosts) is far more than small nodes need.
pub const TCG_TB_CACHE_MIB: u64 = 128;

/// The ownership entry that marks a node whose cloud-init seed is retired: cloud-init has
/// finished and is turned off on the node, the seed disk is gone from the domain's
/// definition, and its volume (which holds the node's host private key) is removed. Its
/// value is the seed volume's name.
pub const SEED_RETIRED: &str = "seed-retired";

/// Ownership and fingerprints this library records on the objects it creates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerMeta {
    /// The cluster id that owns the object.
    pub cluster: String,
    /// Fingerprint of the spec the object was defined from.
    pub spec: String,
    /// Other recorded values (e.g. `seed`, `host-key`, `pool`).
    pub extra: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    #[serde(rename = "hl:owner")]
    owner: OwnerXml<'a>,
}

#[derive(Serialize)]
struct OwnerXml<'a> {
    #[serde(rename = "@xmlns:hl")]
    ns: &'static str,
    #[serde(rename = "hl:cluster")]
    cluster: &'a str,
    #[serde(rename = "hl:spec")]
    spec: &'a str,
    #[serde(rename = "hl:entry", skip_serializing_if = "Vec::is_empty")]
    entries: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    #[serde(rename = "@key")]
    key: &'a str,
    #[serde(rename = "$text")]
    value: &'a str,
}

impl OwnerMeta {
    fn xml(&self) -> Metadata<'_> {
        Metadata {
            owner: OwnerXml {
                ns: METADATA_NS,
                cluster: &self.cluster,
                spec: &self.spec,
                entries: self
                    .extra
                    .iter()
                    .map(|(k, v)| Entry { key: k, value: v })
                    .collect(),
            },
        }
    }
}

/// Reads [`OwnerMeta`] out of any libvirt XML document (domain or network), whatever prefix
/// libvirt gave the namespace. Returns `None` when the object carries no metadata of ours.
pub fn read_owner_meta(xml: &str) -> Option<OwnerMeta> {
    let mut reader = quick_xml::reader::NsReader::from_str(xml);
    let mut meta: Option<OwnerMeta> = None;
    // The element being read (local name, `key` attribute) and its text so far.
    let mut current: Option<(String, Option<String>)> = None;
    let mut text = String::new();
    loop {
        match reader.read_resolved_event() {
            Ok((ResolveResult::Bound(ns), Event::Start(e)))
                if ns.as_ref() == METADATA_NS.as_bytes() =>
            {
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if local == "owner" {
                    meta = Some(OwnerMeta::default());
                } else {
                    let key =
                        e.try_get_attribute("key").ok().flatten().and_then(|a| {
                            a.unescape_value().ok().map(std::borrow::Cow::into_owned)
                        });
                    current = Some((local, key));
                    text.clear();
                }
            }
            Ok((_, Event::Text(t))) if current.is_some() => {
                text.push_str(&t.decode().unwrap_or_default());
            }
            Ok((_, Event::GeneralRef(r))) if current.is_some() => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                } else if let Ok(name) = r.decode()
                    && let Some(value) = quick_xml::escape::resolve_predefined_entity(&name)
                {
                    text.push_str(value);
                }
            }
            Ok((_, Event::End(_))) => {
                if let (Some(m), Some((local, key))) = (meta.as_mut(), current.take()) {
                    let value = std::mem::take(&mut text);
                    match (local.as_str(), key) {
                        ("cluster", _) => m.cluster = value,
                        ("spec", _) => m.spec = value,
                        ("entry", Some(k)) => {
                            m.extra.insert(k, value);
                        }
                        _ => {}
                    }
                }
            }
            Ok((_, Event::Eof)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    meta.filter(|m| !m.cluster.is_empty())
}

/// XML could not be produced.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {root} XML: {source}")]
pub struct XmlError {
    root: &'static str,
    source: quick_xml::SeError,
}

fn to_xml<T: Serialize>(root: &'static str, value: &T) -> Result<String, XmlError> {
    let mut out = String::new();
    let err = |source| XmlError { root, source };
    let mut ser = quick_xml::se::Serializer::with_root(&mut out, Some(root)).map_err(err)?;
    ser.indent(' ', 2);
    value.serialize(ser).map_err(err)?;
    out.push('\n');
    Ok(out)
}

// ---------- network ----------

#[derive(Serialize)]
struct NetworkXml<'a> {
    name: &'a str,
    metadata: Metadata<'a>,
    forward: Forward,
    bridge: Bridge<'a>,
    ip: IpXml,
}

#[derive(Serialize)]
struct Forward {
    #[serde(rename = "@mode")]
    mode: &'static str,
}

#[derive(Serialize)]
struct Bridge<'a> {
    #[serde(rename = "@name")]
    name: &'a str,
    #[serde(rename = "@stp")]
    stp: &'static str,
    #[serde(rename = "@delay")]
    delay: u32,
}

#[derive(Serialize)]
struct IpXml {
    #[serde(rename = "@address")]
    address: String,
    #[serde(rename = "@netmask")]
    netmask: String,
    dhcp: Dhcp,
}

#[derive(Serialize)]
struct Dhcp {
    host: Vec<DhcpHostXml>,
}

#[derive(Serialize)]
struct DhcpHostXml {
    #[serde(rename = "@mac")]
    mac: String,
    #[serde(rename = "@name")]
    name: String,
    #[serde(rename = "@ip")]
    ip: String,
}

/// A node's DHCP host entry, as compared by the planner: `mac ip name`.
pub fn dhcp_host_key(mac: &str, ip: &str, name: &str) -> String {
    format!("{} {ip} {name}", mac.to_ascii_lowercase())
}

/// The `<host .../>` element of a node, for `virNetworkUpdate`.
///
/// # Errors
/// Only if serialization fails.
pub fn dhcp_host_xml(node: &VmSpec) -> Result<String, XmlError> {
    let xml = to_xml(
        "host",
        &DhcpHostXml {
            mac: node.mac.to_string(),
            name: node.name.clone(),
            ip: node.ip.to_string(),
        },
    )?;
    Ok(xml.trim().to_owned())
}

/// The DHCP host entries of a live network's XML, as [`dhcp_host_key`] strings.
pub fn network_dhcp_hosts(xml: &str) -> Vec<String> {
    let mut reader = quick_xml::reader::Reader::from_str(xml);
    let mut hosts = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Empty(e) | Event::Start(e)) if e.name().as_ref() == b"host" => {
                let attr = |name: &str| {
                    e.try_get_attribute(name)
                        .ok()
                        .flatten()
                        .and_then(|a| a.unescape_value().ok().map(std::borrow::Cow::into_owned))
                        .unwrap_or_default()
                };
                hosts.push(dhcp_host_key(&attr("mac"), &attr("ip"), &attr("name")));
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    hosts
}

/// The network's XML. Nodes configure their static addresses themselves (cloud-init); the
/// DHCP server only answers the nodes' own MAC addresses with their own addresses (no range),
/// so nothing else on the network can take a node's address.
///
/// # Errors
/// Only if serialization fails, which the fixed structure rules out in practice.
pub fn network_xml(spec: &VmClusterSpec, owner: &OwnerMeta) -> Result<String, XmlError> {
    let net = &spec.network;
    to_xml(
        "network",
        &NetworkXml {
            name: &net.name,
            metadata: owner.xml(),
            forward: Forward { mode: "nat" },
            bridge: Bridge {
                name: &net.bridge,
                stp: "on",
                delay: 0,
            },
            ip: IpXml {
                address: net.gateway.to_string(),
                netmask: net.cidr.netmask().to_string(),
                dhcp: Dhcp {
                    host: spec
                        .nodes
                        .iter()
                        .map(|n| DhcpHostXml {
                            mac: n.mac.to_string(),
                            name: n.name.clone(),
                            ip: n.ip.to_string(),
                        })
                        .collect(),
                },
            },
        },
    )
}

// ---------- pool and volumes ----------

#[derive(Serialize)]
struct PoolXml<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    name: &'a str,
    target: PathTarget<'a>,
}

#[derive(Serialize)]
struct PathTarget<'a> {
    path: &'a str,
}

/// The storage pool's XML (a directory pool).
/// # Errors
/// Only if serialization fails.
pub fn pool_xml(pool: &PoolSpec) -> Result<String, XmlError> {
    to_xml(
        "pool",
        &PoolXml {
            kind: "dir",
            name: &pool.name,
            target: PathTarget {
                path: &pool.path.to_string_lossy(),
            },
        },
    )
}

#[derive(Serialize)]
struct VolumeXml<'a> {
    name: &'a str,
    capacity: Capacity,
    target: VolTarget,
    #[serde(rename = "backingStore", skip_serializing_if = "Option::is_none")]
    backing: Option<Backing>,
}

#[derive(Serialize)]
struct Capacity {
    #[serde(rename = "@unit")]
    unit: &'static str,
    #[serde(rename = "$text")]
    value: u64,
}

#[derive(Serialize)]
struct VolTarget {
    format: Format,
    permissions: Permissions,
}

#[derive(Serialize)]
struct Format {
    #[serde(rename = "@type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Permissions {
    mode: &'static str,
}

#[derive(Serialize)]
struct Backing {
    path: String,
    format: Format,
}

/// XML of a node's qcow2 overlay on the base image.
/// # Errors
/// Only if serialization fails.
pub fn overlay_volume_xml(node: &VmSpec, spec: &VmClusterSpec) -> Result<String, XmlError> {
    to_xml(
        "volume",
        &VolumeXml {
            name: &node.disk_volume(),
            capacity: Capacity {
                unit: "bytes",
                value: node.disk_bytes,
            },
            target: VolTarget {
                format: Format { kind: "qcow2" },
                permissions: Permissions { mode: "0600" },
            },
            backing: Some(Backing {
                path: spec.base_image.path.to_string_lossy().into_owned(),
                format: Format {
                    kind: spec.base_image.format.as_str(),
                },
            }),
        },
    )
}

/// XML of a node's raw cloud-init seed volume of `size` bytes.
/// # Errors
/// Only if serialization fails.
pub fn seed_volume_xml(node: &VmSpec, size: u64) -> Result<String, XmlError> {
    to_xml(
        "volume",
        &VolumeXml {
            name: &node.seed_volume(),
            capacity: Capacity {
                unit: "bytes",
                value: size,
            },
            target: VolTarget {
                format: Format { kind: "raw" },
                permissions: Permissions { mode: "0600" },
            },
            backing: None,
        },
    )
}

// ---------- domain ----------

#[derive(Serialize)]
struct DomainXml<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uuid: Option<&'a str>,
    metadata: Metadata<'a>,
    memory: Capacity,
    vcpu: u32,
    os: Os,
    features: Features,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu: Option<Cpu>,
    clock: Clock,
    on_poweroff: &'static str,
    on_reboot: &'static str,
    on_crash: &'static str,
    devices: Devices,
}

#[derive(Serialize)]
struct Os {
    #[serde(rename = "type")]
    kind: OsType,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    initrd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmdline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    boot: Option<BootDev>,
}

#[derive(Serialize)]
struct OsType {
    #[serde(rename = "@arch")]
    arch: &'static str,
    #[serde(rename = "@machine", skip_serializing_if = "Option::is_none")]
    machine: Option<&'static str>,
    #[serde(rename = "$text")]
    value: &'static str,
}

#[derive(Serialize)]
struct BootDev {
    #[serde(rename = "@dev")]
    dev: &'static str,
}

#[derive(Serialize)]
struct Features {
    acpi: (),
    apic: (),
    #[serde(skip_serializing_if = "Option::is_none")]
    tcg: Option<Tcg>,
}

#[derive(Serialize)]
struct Tcg {
    #[serde(rename = "tb-cache")]
    tb_cache: Capacity,
}

#[derive(Serialize)]
struct Cpu {
    #[serde(rename = "@mode")]
    mode: &'static str,
}

#[derive(Serialize)]
struct Clock {
    #[serde(rename = "@offset")]
    offset: &'static str,
}

#[derive(Serialize)]
struct Devices {
    disk: Vec<Disk>,
    interface: Interface,
    serial: Serial,
    console: Console,
    rng: Rng,
}

#[derive(Serialize)]
struct Disk {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@device")]
    device: &'static str,
    driver: Driver,
    source: FileSource,
    target: DiskTarget,
    #[serde(skip_serializing_if = "Option::is_none")]
    readonly: Option<()>,
}

#[derive(Serialize)]
struct Driver {
    #[serde(rename = "@name")]
    name: &'static str,
    #[serde(rename = "@type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct FileSource {
    #[serde(rename = "@file")]
    file: String,
}

#[derive(Serialize)]
struct DiskTarget {
    #[serde(rename = "@dev")]
    dev: &'static str,
    #[serde(rename = "@bus")]
    bus: &'static str,
}

#[derive(Serialize)]
struct Interface {
    #[serde(rename = "@type")]
    kind: &'static str,
    mac: MacXml,
    source: NetSource,
    model: Model,
}

#[derive(Serialize)]
struct MacXml {
    #[serde(rename = "@address")]
    address: String,
}

#[derive(Serialize)]
struct NetSource {
    #[serde(rename = "@network")]
    network: String,
}

#[derive(Serialize)]
struct Model {
    #[serde(rename = "@type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Serial {
    #[serde(rename = "@type")]
    kind: &'static str,
    target: SerialTarget,
    log: Log,
}

#[derive(Serialize)]
struct SerialTarget {
    #[serde(rename = "@port")]
    port: u32,
}

#[derive(Serialize)]
struct Log {
    #[serde(rename = "@file")]
    file: String,
    #[serde(rename = "@append")]
    append: &'static str,
}

#[derive(Serialize)]
struct Console {
    #[serde(rename = "@type")]
    kind: &'static str,
    target: ConsoleTarget,
}

#[derive(Serialize)]
struct ConsoleTarget {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@port")]
    port: u32,
}

#[derive(Serialize)]
struct Rng {
    #[serde(rename = "@model")]
    model: &'static str,
    backend: RngBackend,
}

#[derive(Serialize)]
struct RngBackend {
    #[serde(rename = "@model")]
    model: &'static str,
    #[serde(rename = "$text")]
    path: &'static str,
}

/// Where a node's serial console is logged on the hypervisor host.
pub fn console_log_path(node: &str) -> String {
    format!("/var/log/libvirt/qemu/{node}-serial.log")
}

/// The path a volume gets in the pool.
pub fn volume_path(pool: &PoolSpec, volume: &str) -> String {
    Path::new(&pool.path)
        .join(volume)
        .to_string_lossy()
        .into_owned()
}

fn file_disk(file: String, dev: &'static str, format: &'static str, readonly: bool) -> Disk {
    Disk {
        kind: "file",
        device: "disk",
        driver: Driver {
            name: "qemu",
            kind: format,
        },
        source: FileSource { file },
        target: DiskTarget { dev, bus: "virtio" },
        readonly: readonly.then_some(()),
    }
}

fn seed_disk(spec: &VmClusterSpec, node: &VmSpec) -> Disk {
    file_disk(
        volume_path(&spec.pool, &node.seed_volume()),
        "vdb",
        "raw",
        true,
    )
}

/// The `<disk>` element of a node's seed, as a device to detach from a running domain.
///
/// # Errors
/// Only if serialization fails.
pub fn seed_disk_xml(spec: &VmClusterSpec, node: &VmSpec) -> Result<String, XmlError> {
    to_xml("disk", &seed_disk(spec, node))
}

/// A node's domain XML: virtio disk (overlay) and, until it is retired ([`SEED_RETIRED`] in
/// `owner`), the seed; virtio network on the cluster's
/// network, serial console logged to [`console_log_path`], `<disk type='file'>` (never
/// `type='volume'`, so AppArmor's helper can resolve the paths).
/// `uuid` is the existing domain's when it is redefined (libvirt matches name and UUID).
///
/// # Errors
/// Only if serialization fails.
#[allow(clippy::too_many_lines, reason = "one XML document, field by field")]
pub fn domain_xml(
    spec: &VmClusterSpec,
    node: &VmSpec,
    kind: DomainType,
    owner: &OwnerMeta,
    uuid: Option<&str>,
) -> Result<String, XmlError> {
    let (kernel, initrd, cmdline, boot) = match &spec.boot {
        BootMode::Disk => (None, None, None, Some(BootDev { dev: "hd" })),
        BootMode::Kernel {
            kernel,
            initrd,
            cmdline,
        } => (
            Some(kernel.to_string_lossy().into_owned()),
            initrd.as_ref().map(|p| p.to_string_lossy().into_owned()),
            Some(cmdline.clone()),
            None,
        ),
    };
    let (machine, cpu, tcg) = match kind {
        DomainType::Kvm => (
            Some("q35"),
            Some(Cpu {
                mode: "host-passthrough",
            }),
            None,
        ),
        DomainType::Qemu => (
            Some("q35"),
            None,
            Some(Tcg {
                tb_cache: Capacity {
                    unit: "MiB",
                    value: TCG_TB_CACHE_MIB,
                },
            }),
        ),
        DomainType::Test => (None, None, None),
    };
    let mut disks = vec![file_disk(
        volume_path(&spec.pool, &node.disk_volume()),
        "vda",
        "qcow2",
        false,
    )];
    if !owner.extra.contains_key(SEED_RETIRED) {
        disks.push(seed_disk(spec, node));
    }
    to_xml(
        "domain",
        &DomainXml {
            kind: kind.as_str(),
            name: &node.name,
            uuid,
            metadata: owner.xml(),
            memory: Capacity {
                unit: "MiB",
                value: node.memory_mib,
            },
            vcpu: node.vcpus,
            os: Os {
                kind: OsType {
                    arch: "x86_64",
                    machine,
                    value: "hvm",
                },
                kernel,
                initrd,
                cmdline,
                boot,
            },
            features: Features {
                acpi: (),
                apic: (),
                tcg,
            },
            cpu,
            clock: Clock { offset: "utc" },
            on_poweroff: "destroy",
            on_reboot: "restart",
            on_crash: "destroy",
            devices: Devices {
                disk: disks,
                interface: Interface {
                    kind: "network",
                    mac: MacXml {
                        address: node.mac.to_string(),
                    },
                    source: NetSource {
                        network: spec.network.name.clone(),
                    },
                    model: Model { kind: "virtio" },
                },
                serial: Serial {
                    kind: "pty",
                    target: SerialTarget { port: 0 },
                    log: Log {
                        file: console_log_path(&node.name),
                        append: "on",
                    },
                },
                console: Console {
                    kind: "pty",
                    target: ConsoleTarget {
                        kind: "serial",
                        port: 0,
                    },
                },
                rng: Rng {
                    model: "virtio",
                    backend: RngBackend {
                        model: "random",
                        path: "/dev/urandom",
                    },
                },
            },
        },
    )
}

/// The disk file paths of a live domain's XML (`<disk><source file=...>`).
pub fn domain_disk_files(xml: &str) -> Vec<String> {
    let mut reader = quick_xml::reader::Reader::from_str(xml);
    let mut in_disk = false;
    let mut files = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) if e.name().as_ref() == b"disk" => in_disk = true,
            Ok(Event::End(e)) if e.name().as_ref() == b"disk" => in_disk = false,
            Ok(Event::Empty(e) | Event::Start(e)) if in_disk && e.name().as_ref() == b"source" => {
                if let Ok(Some(attr)) = e.try_get_attribute("file")
                    && let Ok(value) = attr.unescape_value()
                {
                    files.push(value.into_owned());
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_meta_round_trips_through_xml() {
        let mut owner = OwnerMeta {
            cluster: "lab".into(),
            spec: "abc".into(),
            extra: BTreeMap::new(),
        };
        owner
            .extra
            .insert("host-key".into(), "ssh-ed25519 AAAA <x>".into());
        let xml = to_xml(
            "network",
            &NetworkOnlyMeta {
                metadata: owner.xml(),
            },
        )
        .unwrap();
        assert_eq!(read_owner_meta(&xml), Some(owner));
    }

    #[derive(Serialize)]
    struct NetworkOnlyMeta<'a> {
        metadata: Metadata<'a>,
    }

    #[test]
    fn metadata_with_another_prefix_is_read() {
        let xml = format!(
            "<domain><metadata><x:owner xmlns:x='{METADATA_NS}'><x:cluster>c</x:cluster><x:spec>s</x:spec></x:owner>\
             <other:owner xmlns:other='http://example.com/x'><other:cluster>evil</other:cluster></other:owner></metadata></domain>"
        );
        let meta = read_owner_meta(&xml).unwrap();
        assert_eq!((meta.cluster.as_str(), meta.spec.as_str()), ("c", "s"));
        assert_eq!(read_owner_meta("<domain><name>x</name></domain>"), None);
    }

    #[test]
    fn disk_files_are_listed() {
        let xml = "<domain><devices><disk type='file'><source file='/a.qcow2'/></disk><disk type='file'><source file='/b&amp;.img'/></disk><interface><source network='n'/></interface></devices></domain>";
        assert_eq!(domain_disk_files(xml), ["/a.qcow2", "/b&.img"]);
    }
}
