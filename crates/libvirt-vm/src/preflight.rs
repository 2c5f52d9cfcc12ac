//! Checks before anything changes: libvirt reachable, a usable virtualization type, the pool
//! directory and image access, free memory and disk, and a NAT network that collides with
//! nothing. Each failure says which command fixes it.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::hypervisor::{Hypervisor, host_cpu_has_virtualization, is_local_uri};
use crate::spec::{BootMode, DomainType, DomainTypeChoice, VmClusterSpec};
use crate::xml;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but worth knowing.
    Warn,
    /// Will not work.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// The command (or change) that fixes a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// `[ok  ] name: detail`, `[warn] …` or `[FAIL] …`, and the fix on a line of its own.
impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(f, "[{mark}] {}: {}", self.name, self.detail)?;
        match &self.fix {
            Some(fix) => write!(f, "\n       fix: {fix}"),
            None => Ok(()),
        }
    }
}

impl Check {
    fn new(name: &str, status: Status, detail: impl Into<String>, fix: Option<String>) -> Self {
        Self {
            name: name.to_owned(),
            status,
            detail: detail.into(),
            fix,
        }
    }
}

/// Runs every check. `hv` is `None` when the connection itself failed (`connect_error`).
pub fn preflight(
    spec: &VmClusterSpec,
    uri: &str,
    hv: Option<&Hypervisor>,
    connect_error: Option<&str>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let Some(hv) = hv else {
        checks.push(Check::new(
            "libvirt",
            Status::Fail,
            format!("cannot connect to {uri}: {}", connect_error.unwrap_or("unknown error")),
            Some(
                "start the daemons (`systemctl start libvirtd`, or `virtlogd -d && libvirtd -d` without systemd) \
                 and make sure you may use them (`usermod -aG libvirt $USER`, then log in again)"
                    .into(),
            ),
        ));
        return checks;
    };
    checks.push(Check::new(
        "libvirt",
        Status::Ok,
        format!("connected to {uri}"),
        None,
    ));
    checks.push(virtualization(spec, hv));
    let local = is_local_uri(uri);
    if local && !uri.starts_with("test:") {
        checks.extend(kvm_device());
    }
    if local {
        checks.push(pool_directory(spec));
        checks.extend(image_access(spec));
        checks.push(disk_space(spec));
    }
    checks.push(memory(spec, hv));
    checks.extend(network(spec, hv, local));
    checks
}

fn virtualization(spec: &VmClusterSpec, hv: &Hypervisor) -> Check {
    if hv.uri().starts_with("test:") {
        return Check::new("virtualization", Status::Ok, "libvirt test driver", None);
    }
    // On this machine the emulator is looked for directly (libvirt's capabilities take
    // seconds to compute on some hosts); on a remote host libvirt is asked.
    let (has_qemu, has_kvm) = if is_local_uri(hv.uri()) {
        let qemu = ["/usr/bin/qemu-system-x86_64", "/usr/libexec/qemu-kvm"]
            .iter()
            .any(|p| Path::new(p).exists());
        (
            qemu,
            qemu && Path::new("/dev/kvm").exists() && host_cpu_has_virtualization(),
        )
    } else {
        let caps = hv.connection().capabilities().unwrap_or_default();
        let has = |t: &str| {
            caps.contains(&format!("<domain type='{t}'"))
                || caps.contains(&format!("<domain type=\"{t}\""))
        };
        (has("qemu") || has("kvm"), has("kvm"))
    };
    if !has_qemu {
        return Check::new(
            "virtualization",
            Status::Fail,
            "no QEMU system emulator for x86_64",
            Some("apt-get install qemu-system-x86, then restart libvirtd".into()),
        );
    }
    match (spec.domain_type, hv.resolve_domain_type(spec.domain_type)) {
        (DomainTypeChoice::Kvm, _) if !has_kvm => Check::new(
            "virtualization",
            Status::Fail,
            "libvirt.domain_type = \"kvm\" but this host's KVM cannot run guests (no /dev/kvm or no vmx/svm CPU flag)",
            Some("set libvirt.domain_type = \"auto\" or \"qemu\" (software emulation), or enable nested virtualization".into()),
        ),
        (_, Ok(DomainType::Qemu)) => Check::new(
            "virtualization",
            Status::Warn,
            "software emulation (TCG): nodes boot in about a minute instead of seconds",
            None,
        ),
        (_, Ok(kind)) => Check::new("virtualization", Status::Ok, format!("domain type {}", kind.as_str()), None),
        (_, Err(e)) => Check::new("virtualization", Status::Fail, e.to_string(), None),
    }
}

/// Without udev, /dev/kvm stays root-only. libvirt then sees KVM when it probes QEMU (as
/// root) but not when it checks the cache (as the qemu user), throws its capability cache
/// away on every call and probes QEMU again: a minute or more per domain definition.
fn kvm_device() -> Option<Check> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/dev/kvm").ok()?;
    let kvm_gid = std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|groups| {
            groups
                .lines()
                .find(|l| l.starts_with("kvm:"))
                .and_then(|l| l.split(':').nth(2))
                .and_then(|g| g.parse::<u32>().ok())
        });
    let group_rw = meta.mode() & 0o060 == 0o060;
    if kvm_gid.is_some_and(|gid| gid == meta.gid()) && group_rw {
        return Some(Check::new(
            "kvm device",
            Status::Ok,
            "/dev/kvm is usable by the kvm group",
            None,
        ));
    }
    Some(Check::new(
        "kvm device",
        Status::Warn,
        format!(
            "/dev/kvm has mode {:04o} and group id {} (udev did not set it up): libvirt will re-probe QEMU on every call, taking minutes",
            meta.mode() & 0o7777,
            meta.gid()
        ),
        Some("chgrp kvm /dev/kvm && chmod 0660 /dev/kvm".into()),
    ))
}

fn pool_directory(spec: &VmClusterSpec) -> Check {
    let path = &spec.pool.path;
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match std::fs::metadata(existing) {
        Ok(m) if m.permissions().readonly() => Check::new(
            "pool directory",
            Status::Fail,
            format!("{} is read-only", existing.display()),
            Some(format!("mkdir -p {} (as root)", path.display())),
        ),
        Ok(_) if path.exists() => Check::new(
            "pool directory",
            Status::Ok,
            format!("{} exists", path.display()),
            None,
        ),
        Ok(_) => Check::new(
            "pool directory",
            Status::Ok,
            format!(
                "{} will be created under {}",
                path.display(),
                existing.display()
            ),
            None,
        ),
        Err(e) => Check::new(
            "pool directory",
            Status::Fail,
            format!("cannot inspect {}: {e}", existing.display()),
            Some(format!("mkdir -p {}", path.display())),
        ),
    }
}

/// QEMU runs as an unprivileged user: every directory above the images must be searchable by
/// others, and AppArmor/SELinux must allow the paths.
fn image_access(spec: &VmClusterSpec) -> Vec<Check> {
    let mut files = vec![spec.base_image.path.clone()];
    if let BootMode::Kernel { kernel, initrd, .. } = &spec.boot {
        files.push(kernel.clone());
        files.extend(initrd.clone());
    }
    let mut checks = Vec::new();
    for file in &files {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let closed = file
                .ancestors()
                .skip(1)
                .filter(|dir| dir.exists())
                .find(|dir| {
                    std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 == 0)
                });
            if let Some(dir) = closed {
                checks.push(Check::new(
                    "image access",
                    Status::Fail,
                    format!(
                        "{} is not searchable by the qemu user, so {} cannot be opened",
                        dir.display(),
                        file.display()
                    ),
                    Some(format!("chmod o+x {}", dir.display())),
                ));
            }
        }
    }
    if checks.is_empty() {
        checks.push(Check::new(
            "image access",
            Status::Ok,
            format!(
                "{} reachable by the qemu user",
                files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None,
        ));
    }
    if std::fs::read_to_string("/sys/fs/selinux/enforce").is_ok_and(|s| s.trim() == "1") {
        checks.push(Check::new(
            "SELinux",
            Status::Warn,
            "SELinux is enforcing: images outside /var/lib/libvirt/images need the virt_image_t label",
            Some(format!(
                "semanage fcontext -a -t virt_image_t '{}(/.*)?' && restorecon -R {}",
                spec.pool.path.display(),
                spec.pool.path.display()
            )),
        ));
    }
    let images_dir = Path::new("/var/lib/libvirt/images");
    if Path::new("/sys/kernel/security/apparmor").exists()
        && !spec.pool.path.starts_with(images_dir)
    {
        checks.push(Check::new(
            "AppArmor",
            Status::Warn,
            format!(
                "{} is outside /var/lib/libvirt/images; libvirt's AppArmor helper allows disk paths it is given, \
                 but a site policy may not",
                spec.pool.path.display()
            ),
            Some("keep libvirt.pool_path under /var/lib/libvirt/images, or add the path to /etc/apparmor.d/local/abstractions/libvirt-qemu".into()),
        ));
    }
    checks
}

fn available_bytes(path: &Path) -> Option<u64> {
    let dir = path.ancestors().find(|p| p.exists())?;
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

fn disk_space(spec: &VmClusterSpec) -> Check {
    // Overlays are thin: budget the base image (if it is still to be built) and what each
    // node writes at first (packages, images): 4 GiB each.
    let need = (3u64 << 30) + spec.nodes.len() as u64 * (4 << 30);
    match available_bytes(&spec.pool.path) {
        Some(free) if free < need => Check::new(
            "disk space",
            Status::Fail,
            format!(
                "{} GiB free under {}, about {} GiB needed",
                free >> 30,
                spec.pool.path.display(),
                need >> 30
            ),
            Some("free space there, or set libvirt.pool_path to a larger filesystem".into()),
        ),
        Some(free) => Check::new(
            "disk space",
            Status::Ok,
            format!("{} GiB free", free >> 30),
            None,
        ),
        None => Check::new(
            "disk space",
            Status::Warn,
            "could not measure free space",
            None,
        ),
    }
}

/// `MemAvailable` of this machine: free memory plus what the page cache would give back
/// (libvirt's free-memory figure counts only never-used pages).
fn local_available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

fn memory(spec: &VmClusterSpec, hv: &Hypervisor) -> Check {
    let need: u64 = spec.nodes.iter().map(|n| n.memory_mib << 20).sum();
    let available = if is_local_uri(hv.uri()) && !hv.uri().starts_with("test:") {
        local_available_memory().ok_or_else(|| "cannot read /proc/meminfo".to_owned())
    } else {
        hv.connection().free_memory().map_err(|e| e.to_string())
    };
    match available {
        Ok(free) if free < need => Check::new(
            "memory",
            Status::Fail,
            format!(
                "{} MiB available, the nodes need {} MiB",
                free >> 20,
                need >> 20
            ),
            Some("lower nodes[].memory, remove a node, or stop other VMs".into()),
        ),
        Ok(free) => Check::new(
            "memory",
            Status::Ok,
            format!("{} MiB available, {} MiB needed", free >> 20, need >> 20),
            None,
        ),
        Err(e) => Check::new(
            "memory",
            Status::Warn,
            format!("could not read free memory: {e}"),
            None,
        ),
    }
}

/// The IPv4 routes of this machine: (destination network, interface).
fn host_routes() -> Vec<(Ipv4Net, String)> {
    std::fs::read_to_string("/proc/net/route")
        .map(|table| parse_routes(&table))
        .unwrap_or_default()
}

/// The routes of a `/proc/net/route` table (addresses in the kernel's little-endian hex),
/// without the default route.
fn parse_routes(table: &str) -> Vec<(Ipv4Net, String)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let dest = Ipv4Addr::from(dest.swap_bytes());
            let prefix = u8::try_from(mask.count_ones()).ok()?;
            let iface = (*f.first()?).to_owned();
            if prefix == 0 {
                return None;
            }
            Ipv4Net::new(dest, prefix).ok().map(|n| (n, iface))
        })
        .collect()
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn network(spec: &VmClusterSpec, hv: &Hypervisor, local: bool) -> Vec<Check> {
    let mut checks = Vec::new();
    let cidr = spec.network.cidr;
    let conn = hv.connection();
    for net in conn.list_all_networks(0).unwrap_or_default() {
        let name = net.name().unwrap_or_default();
        if name == spec.network.name {
            continue;
        }
        let xml = net.xml_desc(0).unwrap_or_default();
        if let Some(other) = network_cidr(&xml)
            && overlaps(other, cidr)
        {
            let active = net.is_active().unwrap_or(false);
            checks.push(Check::new(
                "network",
                if active { Status::Fail } else { Status::Warn },
                format!("libvirt network `{name}` ({}) uses {other}, which overlaps {cidr}", if active { "active" } else { "inactive" }),
                Some(format!(
                    "choose another network.nat_cidr, or stop that network: virsh net-destroy {name} && virsh net-autostart --disable {name}"
                )),
            ));
        }
    }
    if local {
        let ours = xml::read_owner_meta(
            &conn
                .lookup_network_by_name(&spec.network.name)
                .and_then(|n| n.xml_desc(0))
                .unwrap_or_default(),
        )
        .is_some_and(|o| o.cluster == spec.cluster_id);
        for (route, iface) in host_routes() {
            if overlaps(route, cidr)
                && !(ours && iface == spec.network.bridge)
                && !checks.iter().any(|c| c.detail.contains(&route.to_string()))
            {
                checks.push(Check::new(
                    "network",
                    Status::Fail,
                    format!("this host already routes {route} via {iface}, which overlaps {cidr}"),
                    Some("choose another network.nat_cidr".into()),
                ));
            }
        }
    }
    if checks.is_empty() {
        checks.push(Check::new(
            "network",
            Status::Ok,
            format!("{cidr} is free"),
            None,
        ));
    }
    checks
}

/// The network of a libvirt network's `<ip address=.. netmask=..|prefix=..>`.
fn network_cidr(xml: &str) -> Option<Ipv4Net> {
    let start = xml.find("<ip ")?;
    let tag = &xml[start..start + xml[start..].find('>')?];
    let attr = |name: &str| {
        let key = format!("{name}=");
        let at = tag.find(&key)? + key.len();
        let quote = tag[at..].chars().next()?;
        let rest = &tag[at + 1..];
        Some(rest[..rest.find(quote)?].to_owned())
    };
    let address: Ipv4Addr = attr("address")?.parse().ok()?;
    let prefix = match attr("prefix") {
        Some(p) => p.parse().ok()?,
        None => {
            u8::try_from(u32::from(attr("netmask")?.parse::<Ipv4Addr>().ok()?).count_ones()).ok()?
        }
    };
    Ipv4Net::new(address, prefix).ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_cidr_reads_netmask_and_prefix() {
        let xml = "<network><name>default</name><ip address='192.168.122.1' netmask='255.255.255.0'><dhcp/></ip></network>";
        assert_eq!(network_cidr(xml), Some("192.168.122.0/24".parse().unwrap()));
        let xml = "<network><ip address=\"10.1.2.1\" prefix=\"16\"/></network>";
        assert_eq!(network_cidr(xml), Some("10.1.0.0/16".parse().unwrap()));
        assert_eq!(network_cidr("<network/>"), None);
    }

    #[test]
    fn routes_parse() {
        // A table as the kernel writes it: a default route, a /24 on a bridge, a /16, and a
        // host route; then a malformed line.
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            virbr0\t007AA8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            tun0\t0101010A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
            broken\tzz\n";
        let routes: Vec<(String, String)> = parse_routes(table)
            .into_iter()
            .map(|(net, iface)| (net.to_string(), iface))
            .collect();
        assert_eq!(
            routes,
            [
                ("192.168.122.0/24".to_owned(), "virbr0".to_owned()),
                ("172.17.0.0/16".to_owned(), "docker0".to_owned()),
                ("10.1.1.1/32".to_owned(), "tun0".to_owned()),
            ]
        );
        // This machine's own table parses without a panic, and only into real networks.
        for (net, iface) in host_routes() {
            assert!(!iface.is_empty() && net.prefix_len() > 0, "{net} {iface}");
        }
    }

    #[test]
    fn overlapping_test_network_is_reported_with_its_fix() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("node.xml");
        std::fs::write(&node, "<node/>").unwrap();
        let uri = format!("test://{}", node.display());
        let hv = Hypervisor::connect(&uri).unwrap();
        hv.connection()
            .define_network_xml("<network><name>default</name><bridge name='virbr0'/><ip address='192.168.150.1' netmask='255.255.255.0'/></network>")
            .unwrap()
            .create()
            .unwrap();
        let spec = crate::testing::sample_spec();
        let checks = preflight(&spec, &uri, Some(&hv), None);
        let net = checks
            .iter()
            .find(|c| c.name == "network" && c.status == Status::Fail)
            .unwrap();
        assert!(net.detail.contains("`default`"), "{net:?}");
        assert!(
            net.fix
                .as_deref()
                .unwrap()
                .contains("virsh net-destroy default")
        );
        let failed = preflight(&spec, "qemu:///nowhere", None, Some("no daemon"));
        assert_eq!(failed[0].status, Status::Fail);
        assert!(failed[0].fix.as_deref().unwrap().contains("libvirtd"));
    }
}
