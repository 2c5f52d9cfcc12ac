//! What the user wants: a NAT network, a storage pool, a base image and nodes.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The whole desired state of one cluster's virtual machines.
///
/// Built with [`VmClusterSpec::new`] and its setters (or read from its serialized form); the
/// fields stay readable and writable.
///
/// ```
/// use libvirt_vm::{Access, BaseImage, DiskFormat, NetworkSpec, PoolSpec, VmClusterSpec, VmSpec};
///
/// let spec = VmClusterSpec::new(
///     "lab",
///     NetworkSpec::new("lab", "virbr-lab", "192.168.122.0/24".parse()?, "192.168.122.1".parse()?),
///     PoolSpec::new("lab", "/var/lib/libvirt/images/lab"),
///     BaseImage::new("/var/lib/libvirt/images/debian-12.qcow2", DiskFormat::Qcow2),
///     Access::new("debian", vec!["ssh-ed25519 AAAAC3Nz... me@laptop".into()]),
/// )
/// .node(VmSpec::new("cp-1", "192.168.122.10".parse()?).vcpus(4).memory_mib(8192))
/// .node(VmSpec::new("worker-1", "192.168.122.11".parse()?));
/// assert_eq!(spec.nodes[1].vcpus, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VmClusterSpec {
    /// Ownership id written into every object this library creates; `destroy` only touches
    /// objects that carry it. Usually the cluster name.
    pub cluster_id: String,
    /// The NAT network.
    pub network: NetworkSpec,
    /// The directory storage pool holding overlays and seeds.
    pub pool: PoolSpec,
    /// The base image every node's overlay is made on.
    pub base_image: BaseImage,
    /// Virtualization type.
    pub domain_type: DomainTypeChoice,
    /// How nodes boot.
    pub boot: BootMode,
    /// Login user and keys cloud-init installs.
    pub access: Access,
    /// The nodes.
    pub nodes: Vec<VmSpec>,
}

/// A libvirt NAT network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NetworkSpec {
    /// Network name.
    pub name: String,
    /// Linux bridge name (at most 15 characters).
    pub bridge: String,
    /// Address range of the network.
    pub cidr: Ipv4Net,
    /// The host's address on the network; the nodes' gateway and DNS server.
    pub gateway: Ipv4Addr,
}

/// A directory storage pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PoolSpec {
    /// Pool name.
    pub name: String,
    /// Directory of the pool on the hypervisor host.
    pub path: PathBuf,
}

/// Disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// QEMU copy-on-write.
    Qcow2,
    /// Raw bytes.
    Raw,
}

impl DiskFormat {
    /// The name libvirt and qemu-img use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qcow2 => "qcow2",
            Self::Raw => "raw",
        }
    }
}

/// The base image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BaseImage {
    /// Path of the image on the hypervisor host.
    pub path: PathBuf,
    /// Its format.
    pub format: DiskFormat,
}

/// Which virtualization the domains use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainTypeChoice {
    /// Hardware virtualization when the host really runs KVM guests, else emulation.
    Auto,
    /// Hardware virtualization.
    Kvm,
    /// Software emulation (TCG), with a small translation cache.
    Qemu,
}

/// The domain type after resolving [`DomainTypeChoice::Auto`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    /// Hardware virtualization.
    Kvm,
    /// Software emulation.
    Qemu,
    /// libvirt's test driver (`test:///...` connections).
    Test,
}

impl DomainType {
    /// The value of `<domain type=...>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Qemu => "qemu",
            Self::Test => "test",
        }
    }
}

/// How a node boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// From the overlay disk's boot loader.
    Disk,
    /// Direct kernel boot: the kernel and initrd are files on the hypervisor host.
    Kernel {
        /// Kernel image.
        kernel: PathBuf,
        /// Initial ramdisk.
        initrd: Option<PathBuf>,
        /// Kernel command line.
        cmdline: String,
    },
}

/// The login cloud-init sets up on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Access {
    /// User name (created with passwordless sudo).
    pub user: String,
    /// Public keys in OpenSSH format (`ssh-ed25519 AAAA... comment`).
    pub authorized_keys: Vec<String>,
}

/// One virtual machine: [`VmSpec::new`] gives a worker of the default topology (2 vCPUs,
/// 4 GiB of memory, a 30 GiB disk, the MAC address derived from its address); the setters
/// change each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VmSpec {
    /// Domain name and host name.
    pub name: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Size of the node's disk (its overlay) in bytes.
    pub disk_bytes: u64,
    /// MAC address of its interface.
    pub mac: Mac,
    /// Static address on the network.
    pub ip: Ipv4Addr,
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The locally administered QEMU-prefixed address derived from an IPv4 address:
    /// `52:54:00` followed by the last three octets, stable across runs.
    pub fn from_ip(ip: Ipv4Addr) -> Self {
        let o = ip.octets();
        Self([0x52, 0x54, 0x00, o[1], o[2], o[3]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl VmClusterSpec {
    /// The cluster `cluster_id` on `network` and `pool`, its nodes' overlays made on
    /// `base_image`, with `access` on every node; no nodes yet ([`VmClusterSpec::node`] adds
    /// them), [`DomainTypeChoice::Auto`] and [`BootMode::Disk`].
    pub fn new(
        cluster_id: impl Into<String>,
        network: NetworkSpec,
        pool: PoolSpec,
        base_image: BaseImage,
        access: Access,
    ) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            network,
            pool,
            base_image,
            domain_type: DomainTypeChoice::Auto,
            boot: BootMode::Disk,
            access,
            nodes: Vec::new(),
        }
    }

    /// Adds a node.
    #[must_use]
    pub fn node(mut self, node: VmSpec) -> Self {
        self.nodes.push(node);
        self
    }

    /// Adds nodes.
    #[must_use]
    pub fn nodes(mut self, nodes: impl IntoIterator<Item = VmSpec>) -> Self {
        self.nodes.extend(nodes);
        self
    }

    /// Sets the virtualization type.
    #[must_use]
    pub fn domain_type(mut self, domain_type: DomainTypeChoice) -> Self {
        self.domain_type = domain_type;
        self
    }

    /// Sets how the nodes boot.
    #[must_use]
    pub fn boot(mut self, boot: BootMode) -> Self {
        self.boot = boot;
        self
    }
}

impl NetworkSpec {
    /// The NAT network `name` on the Linux bridge `bridge` (at most 15 characters), over
    /// `cidr`, with the host at `gateway`.
    pub fn new(
        name: impl Into<String>,
        bridge: impl Into<String>,
        cidr: Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Self {
        Self {
            name: name.into(),
            bridge: bridge.into(),
            cidr,
            gateway,
        }
    }
}

impl PoolSpec {
    /// The directory pool `name` at `path` on the hypervisor host.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
        }
    }
}

impl BaseImage {
    /// The image at `path` on the hypervisor host, in `format`.
    pub fn new(path: impl Into<PathBuf>, format: DiskFormat) -> Self {
        Self {
            path: path.into(),
            format,
        }
    }
}

impl Access {
    /// The login `user` (passwordless sudo), reached with `authorized_keys` (OpenSSH format).
    pub fn new(user: impl Into<String>, authorized_keys: Vec<String>) -> Self {
        Self {
            user: user.into(),
            authorized_keys,
        }
    }
}

impl VmSpec {
    /// The node `name` at `ip`, sized as a worker of the default topology: 2 vCPUs, 4 GiB of
    /// memory, a 30 GiB disk, and [`Mac::from_ip`] as its MAC address.
    pub fn new(name: impl Into<String>, ip: Ipv4Addr) -> Self {
        Self {
            name: name.into(),
            vcpus: 2,
            memory_mib: 4096,
            disk_bytes: 30 << 30,
            mac: Mac::from_ip(ip),
            ip,
        }
    }

    /// Sets the virtual CPUs.
    #[must_use]
    pub fn vcpus(mut self, vcpus: u32) -> Self {
        self.vcpus = vcpus;
        self
    }

    /// Sets the memory, in MiB.
    #[must_use]
    pub fn memory_mib(mut self, memory_mib: u64) -> Self {
        self.memory_mib = memory_mib;
        self
    }

    /// Sets the disk's size, in bytes.
    #[must_use]
    pub fn disk_bytes(mut self, disk_bytes: u64) -> Self {
        self.disk_bytes = disk_bytes;
        self
    }

    /// Sets the MAC address (instead of the one derived from the address).
    #[must_use]
    pub fn mac(mut self, mac: Mac) -> Self {
        self.mac = mac;
        self
    }

    /// Volume name of the node's overlay disk.
    pub fn disk_volume(&self) -> String {
        format!("{}.qcow2", self.name)
    }

    /// Volume name of the node's cloud-init seed.
    pub fn seed_volume(&self) -> String {
        format!("{}-seed.img", self.name)
    }
}

/// SHA-256 of a value's canonical JSON, hex encoded: the fingerprint stored in the objects'
/// metadata and compared on the next plan.
pub(crate) fn fingerprint<T: Serialize>(value: &T) -> String {
    // Serializing these plain data types cannot fail; an empty input would still hash.
    let json = serde_json::to_vec(value).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_from_ip_is_stable_and_local() {
        let mac = Mac::from_ip(Ipv4Addr::new(192, 168, 122, 10));
        assert_eq!(mac.to_string(), "52:54:00:a8:7a:0a");
        assert_eq!(mac.0[0] & 0b11, 0b10, "locally administered unicast");
    }

    #[test]
    fn fingerprint_changes_with_content() {
        let a = fingerprint(&("x", 1));
        assert_eq!(a, fingerprint(&("x", 1)));
        assert_ne!(a, fingerprint(&("x", 2)));
        assert_eq!(a.len(), 64);
    }
}
