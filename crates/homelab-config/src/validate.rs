//! Semantic checks of a [`Config`]: every rule runs and every problem is collected.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::diagnostic::Diagnostic;
use crate::model::{Config, NodeRole, PhaseSettings};
use crate::path::KeyPath;
use crate::secret::SecretRef;

/// kubeadm's preflight minimum for a control-plane node.
pub const MIN_CONTROL_PLANE_VCPUS: u32 = 2;
/// The smallest control-plane VM kubeadm's preflight accepts, in MiB. kubeadm wants 1700 MB
/// of memory *as the guest kernel reports it* (`MemTotal`), which is 80–120 MiB less than the
/// VM's size: a 1700 MiB VM reports 1622 MB and fails preflight (seen on Debian 12 guests).
pub const MIN_CONTROL_PLANE_MEMORY_MIB: u64 = 1900;
/// Smallest memory a worker can run the kubelet, containerd and system pods with, in MiB.
pub const MIN_WORKER_MEMORY_MIB: u64 = 1024;
/// Smallest node disk that holds the OS, container images and etcd, in MiB.
pub const MIN_DISK_MIB: u64 = 10 * 1024;
/// The oldest Kubernetes minor release the tools install.
pub const MIN_KUBERNETES_MINOR: u32 = 29;

fn p(text: &str) -> KeyPath {
    KeyPath::parse(text).unwrap_or_default()
}

/// Runs every semantic rule on `config` and returns all problems (errors and warnings).
pub fn validate(config: &Config) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    cluster(config, &mut out);
    nodes(config, &mut out);
    network(config, &mut out);
    ssh(config, &mut out);
    libvirt(config, &mut out);
    packages(config, &mut out);
    harbor(config, &mut out);
    backups(config, &mut out);
    versions(config, &mut out);
    integrations(config, &mut out);
    phases(config, &mut out);
    out
}

/// A DNS-1123 label: lower-case letters, digits and `-`, 1–63 characters, alphanumeric ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn label_problem(value: &str) -> String {
    if value.is_empty() {
        "is required".into()
    } else {
        format!("`{value}` is not a DNS label (a-z, 0-9 and '-', at most 63, no '-' at either end)")
    }
}

fn cluster(config: &Config, out: &mut Vec<Diagnostic>) {
    if !is_dns_label(&config.cluster.name) {
        out.push(Diagnostic::error(
            p("cluster.name"),
            label_problem(&config.cluster.name),
        ));
    }
    let version = config.cluster.kubernetes_version;
    if version.major != 1 || version.minor < MIN_KUBERNETES_MINOR {
        out.push(
            Diagnostic::error(
                p("cluster.kubernetes_version"),
                format!("Kubernetes {version} is not supported"),
            )
            .with_help(format!("use 1.{MIN_KUBERNETES_MINOR}.0 or newer")),
        );
    }
}

fn nodes(config: &Config, out: &mut Vec<Diagnostic>) {
    if config.nodes.is_empty() {
        out.push(Diagnostic::error(
            p("nodes"),
            "at least one node is required",
        ));
        return;
    }
    if !config
        .nodes
        .iter()
        .any(|n| n.role == NodeRole::ControlPlane)
    {
        let mut d = Diagnostic::error(p("nodes"), "no node has role = \"control-plane\"")
            .with_help("set role = \"control-plane\" on the first node");
        for i in 0..config.nodes.len() {
            d = d.with_related(KeyPath::root().key("nodes").index(i).key("role"));
        }
        out.push(d);
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ips: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut macs = HashMap::new();
    for (i, node) in config.nodes.iter().enumerate() {
        let at = |key: &str| KeyPath::root().key("nodes").index(i).key(key);
        if !is_dns_label(&node.name) {
            out.push(Diagnostic::error(at("name"), label_problem(&node.name)));
        } else if let Some(first) = names.insert(&node.name, i) {
            names.insert(&node.name, first);
            out.push(
                Diagnostic::error(
                    at("name"),
                    format!("node name `{}` is used twice", node.name),
                )
                .with_related(KeyPath::root().key("nodes").index(first).key("name")),
            );
        }
        let (min_cpu, min_mem) = match node.role {
            NodeRole::ControlPlane => (MIN_CONTROL_PLANE_VCPUS, MIN_CONTROL_PLANE_MEMORY_MIB),
            NodeRole::Worker => (1, MIN_WORKER_MEMORY_MIB),
        };
        if node.vcpus < min_cpu {
            out.push(Diagnostic::error(
                at("vcpus"),
                format!(
                    "{} vCPU is below the minimum of {min_cpu} for a {} node (kubeadm preflight)",
                    node.vcpus,
                    role_name(node.role)
                ),
            ));
        }
        if node.memory.0 < min_mem {
            out.push(Diagnostic::error(
                at("memory"),
                format!(
                    "{} is below the minimum of {min_mem}MiB for a {} node",
                    node.memory,
                    role_name(node.role)
                ),
            ));
        }
        if node.disk.0 < MIN_DISK_MIB {
            out.push(Diagnostic::error(
                at("disk"),
                format!(
                    "{} is below the minimum of 10GiB (OS, images and etcd)",
                    node.disk
                ),
            ));
        }
        node_ip(config, i, node.ip, &mut ips, out);
        if let Some(mac) = node.mac {
            if let Some(first) = macs.insert(mac, i) {
                out.push(
                    Diagnostic::error(at("mac"), format!("MAC address {mac} is used twice"))
                        .with_related(KeyPath::root().key("nodes").index(first).key("mac")),
                );
            }
            if mac.0[0] & 1 == 1 {
                out.push(Diagnostic::error(
                    at("mac"),
                    format!("{mac} is a multicast address"),
                ));
            }
        }
    }
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::ControlPlane => "control-plane",
        NodeRole::Worker => "worker",
    }
}

fn node_ip(
    config: &Config,
    i: usize,
    ip: Ipv4Addr,
    seen: &mut HashMap<Ipv4Addr, usize>,
    out: &mut Vec<Diagnostic>,
) {
    let path = KeyPath::root().key("nodes").index(i).key("ip");
    let net = &config.network;
    if ip.is_unspecified() {
        out.push(Diagnostic::error(path, "is required"));
        return;
    }
    if let Some(first) = seen.get(&ip) {
        out.push(
            Diagnostic::error(path.clone(), format!("address {ip} is used by two nodes"))
                .with_related(KeyPath::root().key("nodes").index(*first).key("ip")),
        );
    } else {
        seen.insert(ip, i);
    }
    if let Some(problem) = host_address_problem(net.nat_cidr, ip) {
        out.push(
            Diagnostic::error(path.clone(), format!("node address {ip} {problem}"))
                .with_related(p("network.nat_cidr")),
        );
    }
    if ip == net.gateway {
        out.push(
            Diagnostic::error(
                path.clone(),
                format!("node address {ip} is network.gateway"),
            )
            .with_related(p("network.gateway")),
        );
    }
    if net.metallb_range.contains(ip) {
        out.push(
            Diagnostic::error(
                path,
                format!(
                    "node address {ip} lies inside network.metallb_range {}",
                    net.metallb_range
                ),
            )
            .with_related(p("network.metallb_range")),
        );
    }
}

/// Why `ip` cannot be a host on `net`, if it cannot.
fn host_address_problem(net: Ipv4Net, ip: Ipv4Addr) -> Option<String> {
    if !net.contains(&ip) {
        Some(format!("is outside network.nat_cidr {net}"))
    } else if net.prefix_len() < 31 && ip == net.network() {
        Some(format!("is the network address of {net}"))
    } else if net.prefix_len() < 31 && ip == net.broadcast() {
        Some(format!("is the broadcast address of {net}"))
    } else {
        None
    }
}

fn network(config: &Config, out: &mut Vec<Diagnostic>) {
    let net = &config.network;
    if !is_dns_label(&net.name) {
        out.push(Diagnostic::error(
            p("network.name"),
            label_problem(&net.name),
        ));
    }
    if net.bridge.is_empty()
        || net.bridge.len() > 15
        || !net
            .bridge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        out.push(Diagnostic::error(
            p("network.bridge"),
            format!(
                "`{}` is not a Linux interface name (1-15 characters: letters, digits, '-', '_')",
                net.bridge
            ),
        ));
    }
    for (key, cidr) in [
        ("network.nat_cidr", net.nat_cidr),
        ("network.pod_cidr", net.pod_cidr),
        ("network.service_cidr", net.service_cidr),
    ] {
        if cidr.trunc() != cidr {
            out.push(
                Diagnostic::error(p(key), format!("{cidr} has host bits set"))
                    .with_help(format!("did you mean {}?", cidr.trunc())),
            );
        }
    }
    if net.nat_cidr.prefix_len() > 29 {
        out.push(Diagnostic::error(
            p("network.nat_cidr"),
            format!("{} is too small for a gateway and nodes", net.nat_cidr),
        ));
    }
    if let Some(problem) = host_address_problem(net.nat_cidr, net.gateway) {
        out.push(
            Diagnostic::error(p("network.gateway"), format!("{} {problem}", net.gateway))
                .with_related(p("network.nat_cidr")),
        );
    }
    let overlaps = [
        (
            "network.pod_cidr",
            net.pod_cidr,
            "network.service_cidr",
            net.service_cidr,
        ),
        (
            "network.pod_cidr",
            net.pod_cidr,
            "network.nat_cidr",
            net.nat_cidr,
        ),
        (
            "network.service_cidr",
            net.service_cidr,
            "network.nat_cidr",
            net.nat_cidr,
        ),
    ];
    for (a_key, a, b_key, b) in overlaps {
        if a.contains(&b.network()) || b.contains(&a.network()) {
            out.push(
                Diagnostic::error(p(a_key), format!("{a_key} {a} and {b_key} {b} overlap"))
                    .with_related(p(b_key)),
            );
        }
    }
    if net.service_cidr.prefix_len() < 12 {
        out.push(Diagnostic::error(
            p("network.service_cidr"),
            format!(
                "{} is larger than /12, which kube-apiserver refuses",
                net.service_cidr
            ),
        ));
    }
    // Flannel gives every node a /24 out of the pod network.
    let node_subnets = 1u64 << 24u8.saturating_sub(net.pod_cidr.prefix_len()).min(32);
    if net.pod_cidr.prefix_len() > 24 || node_subnets < config.nodes.len() as u64 {
        out.push(Diagnostic::error(
            p("network.pod_cidr"),
            format!(
                "{} has room for {} node subnets (/24 each) but there are {} nodes",
                net.pod_cidr,
                if net.pod_cidr.prefix_len() > 24 {
                    0
                } else {
                    node_subnets
                },
                config.nodes.len()
            ),
        ));
    }
    load_balancers(config, out);
}

fn load_balancers(config: &Config, out: &mut Vec<Diagnostic>) {
    let net = &config.network;
    let range = net.metallb_range;
    if range.is_empty() {
        out.push(Diagnostic::error(
            p("network.metallb_range"),
            format!("{range} is empty: the first address is after the last"),
        ));
    }
    for (end, ip) in [("first", range.start), ("last", range.end)] {
        if let Some(problem) = host_address_problem(net.nat_cidr, ip) {
            out.push(
                Diagnostic::error(
                    p("network.metallb_range"),
                    format!("the {end} address {ip} of network.metallb_range {problem}"),
                )
                .with_related(p("network.nat_cidr")),
            );
        }
    }
    if range.contains(net.gateway) {
        out.push(
            Diagnostic::error(
                p("network.metallb_range"),
                format!(
                    "network.metallb_range {range} contains network.gateway {}",
                    net.gateway
                ),
            )
            .with_related(p("network.gateway")),
        );
    }
    let lbs = [
        ("ingress", net.load_balancer_ips.ingress),
        ("harbor", net.load_balancer_ips.harbor),
        ("argocd", net.load_balancer_ips.argocd),
    ];
    for (i, (key, ip)) in lbs.iter().enumerate() {
        let path = p("network.load_balancer_ips").key(*key);
        if !range.contains(*ip) {
            out.push(
                Diagnostic::error(
                    path.clone(),
                    format!("load-balancer address {ip} is outside network.metallb_range {range}"),
                )
                .with_related(p("network.metallb_range")),
            );
        }
        if let Some((other, _)) = lbs[..i].iter().find(|(_, other)| other == ip) {
            out.push(
                Diagnostic::error(
                    path,
                    format!("{ip} is both the {other} and the {key} address"),
                )
                .with_related(p("network.load_balancer_ips").key(*other)),
            );
        }
    }
}

fn ssh(config: &Config, out: &mut Vec<Diagnostic>) {
    let user = &config.ssh.user;
    let valid_user = !user.is_empty()
        && user.len() <= 32
        && user.as_bytes()[0].is_ascii_lowercase()
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid_user {
        out.push(Diagnostic::error(
            p("ssh.user"),
            format!("`{user}` is not a valid login name (lower-case letter first, then a-z, 0-9, '-', '_')"),
        ));
    } else if user == "root" {
        out.push(
            Diagnostic::warning(p("ssh.user"), "logging in as root")
                .with_help("use an unprivileged user; the tools use sudo where needed"),
        );
    }
    for (key, path) in [
        ("ssh.private_key", &config.ssh.private_key),
        ("ssh.public_key", &config.ssh.public_key),
        ("ssh.known_hosts", &config.ssh.known_hosts),
    ] {
        if path.as_os_str().is_empty() {
            out.push(Diagnostic::error(p(key), "is required"));
        }
    }
    if config.ssh.private_key == config.ssh.public_key {
        out.push(
            Diagnostic::error(p("ssh.public_key"), "is the same file as ssh.private_key")
                .with_related(p("ssh.private_key")),
        );
    }
}

fn libvirt(config: &Config, out: &mut Vec<Diagnostic>) {
    let lv = &config.libvirt;
    match lv.uri.split_once("://") {
        Some((scheme, _)) if scheme.ends_with("+tcp") => out.push(
            Diagnostic::warning(
                p("libvirt.uri"),
                "a +tcp libvirt connection is not encrypted: the cloud-init seeds, which hold \
                 every node's SSH host private key, would cross the network in clear text",
            )
            .with_help("use qemu+ssh://user@host/system or qemu+tls://host/system"),
        ),
        Some((scheme, _)) if !scheme.is_empty() => {}
        _ => out.push(
            Diagnostic::error(
                p("libvirt.uri"),
                format!("`{}` is not a libvirt URI", lv.uri),
            )
            .with_help("e.g. qemu:///system, qemu+ssh://user@host/system or test:///default"),
        ),
    }
    if !is_dns_label(&lv.pool_name) {
        out.push(Diagnostic::error(
            p("libvirt.pool_name"),
            label_problem(&lv.pool_name),
        ));
    }
    if !lv.pool_path.is_absolute() {
        out.push(Diagnostic::error(
            p("libvirt.pool_path"),
            format!("`{}` must be an absolute path", lv.pool_path.display()),
        ));
    }
    for (key, path) in [
        ("libvirt.base_image", Some(&lv.base_image)),
        ("libvirt.kernel", lv.kernel.as_ref()),
        ("libvirt.initrd", lv.initrd.as_ref()),
    ] {
        if let Some(path) = path
            && !path.is_absolute()
        {
            out.push(Diagnostic::error(
                p(key),
                format!("`{}` must be an absolute path", path.display()),
            ));
        }
    }
    if lv.initrd.is_some() && lv.kernel.is_none() {
        out.push(
            Diagnostic::error(
                p("libvirt.initrd"),
                "an initrd needs libvirt.kernel as well",
            )
            .with_related(p("libvirt.kernel")),
        );
    }
    if lv.build_base_image {
        url_check(
            "libvirt.image_mirror",
            &lv.image_mirror,
            &["http", "https", "file"],
            out,
        );
    }
}

fn packages(config: &Config, out: &mut Vec<Diagnostic>) {
    let pk = &config.packages;
    url_check(
        "packages.repository",
        &pk.repository,
        &["https", "http"],
        out,
    );
    let digits: String = pk
        .key_fingerprint
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if digits.len() != 40 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        out.push(
            Diagnostic::error(
                p("packages.key_fingerprint"),
                format!(
                    "`{}` is not an OpenPGP fingerprint (40 hex digits)",
                    pk.key_fingerprint
                ),
            )
            .with_help("`gpg --show-keys Release.key` prints it"),
        );
    }
    // A Debian package name (policy 5.6.1): it goes into an apt command line.
    let name_ok = pk.containerd.len() >= 2
        && pk
            .containerd
            .starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && pk
            .containerd
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if !name_ok {
        out.push(
            Diagnostic::error(
                p("packages.containerd"),
                format!("`{}` is not a Debian package name", pk.containerd),
            )
            .with_help("for example \"containerd\" (Debian) or \"containerd.io\" (Docker)"),
        );
    }
    for (registry, mirror) in &pk.mirrors {
        let key = p("packages.mirrors").key(registry.clone());
        // A registry host as image references name it: `name[.name…][:port]`.
        let (host, port) = registry.split_once(':').unwrap_or((registry, "1"));
        let host_ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
            })
            && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !host_ok {
            out.push(
                Diagnostic::error(key.clone(), format!("`{registry}` is not a registry host"))
                    .with_help(
                        "as image references name it: registry.k8s.io, ghcr.io, harbor.lan:8443",
                    ),
            );
        }
        for problem in url_problems(mirror, &["http", "https"]) {
            let d = Diagnostic::error(key.clone(), problem.message);
            out.push(match problem.help {
                Some(help) => d.with_help(help),
                None => d,
            });
        }
    }
}

fn harbor(config: &Config, out: &mut Vec<Diagnostic>) {
    let h = &config.harbor;
    url_check("harbor.url", &h.url, &["https", "http"], out);
    let project_ok = !h.project.is_empty()
        && h.project.len() <= 255
        && h.project
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && h.project.as_bytes()[0].is_ascii_alphanumeric();
    if !project_ok {
        out.push(Diagnostic::error(
            p("harbor.project"),
            format!(
                "`{}` is not a Harbor project name (lower-case letters, digits, '.', '_', '-')",
                h.project
            ),
        ));
    }
    for (i, ns) in h.pull_namespaces.iter().enumerate() {
        if !is_dns_label(ns) {
            out.push(Diagnostic::error(
                p(&format!("harbor.pull_namespaces[{i}]")),
                format!("namespace {}", label_problem(ns)),
            ));
        } else if h.pull_namespaces[..i].contains(ns) {
            out.push(Diagnostic::error(
                p(&format!("harbor.pull_namespaces[{i}]")),
                format!("namespace `{ns}` is listed twice"),
            ));
        }
    }
}

/// Somewhere to put snapshots, and at least one kept.
fn backups(config: &Config, out: &mut Vec<Diagnostic>) {
    let b = &config.backups;
    if b.dir.trim().is_empty() {
        out.push(Diagnostic::error(
            p("backups.dir"),
            "is required: the directory etcd snapshots are copied into",
        ));
    }
    if b.keep == 0 {
        out.push(Diagnostic::error(
            p("backups.keep"),
            "must be at least 1: the snapshot taken before an upgrade would be removed at once",
        ));
    }
    if b.schedule.split_whitespace().count() != 5 {
        out.push(Diagnostic::error(
            p("backups.schedule"),
            format!(
                "`{}` is not a cron schedule of five fields (minute hour day month weekday), e.g. \"0 3 * * *\"",
                b.schedule
            ),
        ));
    }
    if !b.node_dir.starts_with('/') || b.node_dir.contains(['\'', '"', '\n']) {
        out.push(Diagnostic::error(
            p("backups.node_dir"),
            format!("`{}` is not an absolute path on the node", b.node_dir),
        ));
    }
    if b.max_age.0 < std::time::Duration::from_secs(3600) {
        out.push(Diagnostic::error(
            p("backups.max_age"),
            format!(
                "{} would remove a snapshot before it could be used: at least 1h",
                b.max_age
            ),
        ));
    }
    if let Some(s3) = &b.s3 {
        backups_s3(config, s3, out);
    }
}

/// A bucket name S3 accepts (3–63 of lowercase letters, digits, dots and hyphens, starting
/// and ending with a letter or digit), a plain prefix, an https endpoint unless plain HTTP
/// was asked for.
fn backups_s3(config: &Config, s3: &crate::model::BackupsS3, out: &mut Vec<Diagnostic>) {
    let schemes: &[&str] = if s3.plain_http {
        &["https", "http"]
    } else {
        &["https"]
    };
    if !s3.plain_http
        && s3.endpoint.starts_with("http://")
        && url_problems(&s3.endpoint, &["http"]).is_empty()
    {
        out.push(
            Diagnostic::error(
                p("backups.s3.endpoint"),
                "an http:// endpoint would carry the snapshots unencrypted",
            )
            .with_help("use https, or set backups.s3.plain_http = true"),
        );
    } else {
        url_check("backups.s3.endpoint", &s3.endpoint, schemes, out);
    }
    let bucket = &s3.bucket;
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&bucket.len())
        || !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        || !edge_ok(bucket.chars().next())
        || !edge_ok(bucket.chars().last())
    {
        out.push(Diagnostic::error(
            p("backups.s3.bucket"),
            format!(
                "`{bucket}` is not a bucket name: 3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit"
            ),
        ));
    }
    let prefix = &s3.prefix;
    if prefix.starts_with('/')
        || prefix.ends_with('/')
        || prefix.contains("//")
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        out.push(Diagnostic::error(
            p("backups.s3.prefix"),
            format!(
                "`{prefix}` is not a key prefix: letters, digits and - _ . /, no leading, trailing or double /"
            ),
        ));
    }
    if s3.region.trim().is_empty() || s3.region.contains(char::is_whitespace) {
        out.push(Diagnostic::error(
            p("backups.s3.region"),
            format!("`{}` is not a region name", s3.region),
        ));
    }
    if !config.features.backups {
        out.push(
            Diagnostic::warning(
                p("backups.s3"),
                "is set but features.backups is off: only the scheduled snapshots are copied to it",
            )
            .with_related(p("features.backups")),
        );
    }
}

/// A release tag (`v3.2.0`) where one is meant, and digests that are sha256 hex.
fn versions(config: &Config, out: &mut Vec<Diagnostic>) {
    let v = &config.versions;
    let release = v.argocd.as_str();
    let tag = release.strip_prefix('v').is_some_and(|rest| {
        rest.split('.').count() == 3
            && rest
                .split('.')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    if !tag {
        out.push(
            Diagnostic::error(
                p("versions.argocd"),
                format!("`{release}` is not an Argo CD release tag (vMAJOR.MINOR.PATCH)"),
            )
            .with_help(format!(
                "versions.argocd names the Argo CD release the bootstrap installs, such as \"{}\"; the argo-cd Helm chart's version goes in versions.argocd_chart",
                crate::model::ARGOCD_RELEASE
            )),
        );
    }
    for (key, source) in [
        ("versions.flannel_manifest", &v.flannel_manifest),
        ("versions.argocd_manifest", &v.argocd_manifest),
    ] {
        if let Some(source) = source
            && !(source.starts_with("https://")
                || source.starts_with("http://")
                || source.starts_with('/'))
        {
            out.push(
                Diagnostic::error(
                    p(key),
                    format!("`{source}` is neither an http(s):// URL nor an absolute path"),
                )
                .with_help("give the URL of a mirror, or the absolute path of a local copy of the release's manifest"),
            );
        }
    }
    for (key, pin) in [
        ("versions.argocd_manifest_sha256", &v.argocd_manifest_sha256),
        (
            "versions.flannel_manifest_sha256",
            &v.flannel_manifest_sha256,
        ),
    ] {
        if let Some(pin) = pin {
            let hex = pin.trim().trim_start_matches("sha256:");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(Diagnostic::error(
                    p(key),
                    format!("`{pin}` is not a sha256 digest (64 hexadecimal digits)"),
                ));
            }
        }
    }
}

/// Checks that `value` is a URL with one of `schemes` and no credentials in it.
fn url_check(key: &str, value: &str, schemes: &[&str], out: &mut Vec<Diagnostic>) {
    if value.is_empty() {
        out.push(Diagnostic::error(p(key), "is required"));
        return;
    }
    for problem in url_problems(value, schemes) {
        let d = Diagnostic::error(p(key), problem.message);
        out.push(match problem.help {
            Some(help) => d.with_help(help),
            None => d,
        });
    }
}

/// One thing wrong with a URL; never holds its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlProblem {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

/// What is wrong with `value` as a URL of one of `schemes`: it does not parse (reported with
/// its user-info masked), has another scheme, or carries credentials (a password, or any
/// user name on an http(s) URL: a token as user name is a credential too). Every place that
/// takes a URL (this file, command-line flags, the GitOps scaffold) checks it with this.
pub fn url_problems(value: &str, schemes: &[&str]) -> Vec<UrlProblem> {
    let mut problems = Vec::new();
    match url::Url::parse(value) {
        Ok(url) => {
            if !schemes.contains(&url.scheme()) {
                problems.push(UrlProblem {
                    message: format!(
                        "scheme `{}` is not one of {}",
                        url.scheme(),
                        schemes.join(", ")
                    ),
                    help: None,
                });
            }
            let http = matches!(url.scheme(), "http" | "https");
            if url.password().is_some() || (http && !url.username().is_empty()) {
                // Never repeat the URL: it holds a credential.
                problems.push(UrlProblem {
                    message: "the URL carries credentials (user-info before @)".into(),
                    help: Some(
                        "remove user:password@; credentials come from secret references".into(),
                    ),
                });
            }
        }
        Err(e) => problems.push(UrlProblem {
            message: format!("`{}` is not a URL: {e}", without_userinfo(value)),
            help: None,
        }),
    }
    problems
}

/// `text` with whatever sits between `scheme://` and `@` masked: a URL that does not parse
/// may still carry a password or token there.
pub fn without_userinfo(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return text.to_owned();
    };
    let authority_end = text[start..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |i| start + i);
    match text[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &text[..start], &text[start + at..]),
        None => text.to_owned(),
    }
}

fn non_empty(key: &str, value: &str, why: &str, out: &mut Vec<Diagnostic>) {
    if value.trim().is_empty() {
        out.push(Diagnostic::error(p(key), format!("is required {why}")));
    }
}

fn integrations(config: &Config, out: &mut Vec<Diagnostic>) {
    esc(config, out);
    github(config, out);
    if let Some(gitops) = &config.gitops {
        gitops_url(&gitops.repo_url, out);
        non_empty("gitops.branch", &gitops.branch, "", out);
        let path = std::path::Path::new(&gitops.path);
        if path.is_absolute()
            || path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            out.push(Diagnostic::error(
                p("gitops.path"),
                format!(
                    "`{}` must be a path inside the repository (relative, no '..')",
                    gitops.path
                ),
            ));
        }
        let domain = &gitops.apps_domain;
        if domain.len() > 200 || domain.split('.').any(|label| !is_dns_label(label)) {
            out.push(Diagnostic::error(
                p("gitops.apps_domain"),
                format!("`{domain}` is not a DNS domain (dot-separated labels, e.g. homelab.lan)"),
            ));
        }
    }
}

fn esc(config: &Config, out: &mut Vec<Diagnostic>) {
    match &config.esc {
        Some(esc) => {
            let why = "for Pulumi ESC";
            non_empty("esc.organization", &esc.organization, why, out);
            non_empty("esc.project", &esc.project, why, out);
            non_empty("esc.environment", &esc.environment, why, out);
            secret_ref_check("esc.token", &esc.token, out);
            url_check("esc.api_url", &esc.api_url, &["https", "http"], out);
        }
        None if config.features.external_secrets => out.push(
            Diagnostic::error(
                p("esc"),
                "features.external_secrets is on but there is no [esc] section",
            )
            .with_related(p("features.external_secrets")),
        ),
        None => {}
    }
}

fn github(config: &Config, out: &mut Vec<Diagnostic>) {
    let Some(gh) = &config.github else {
        if config.features.runners {
            out.push(
                Diagnostic::error(
                    p("github"),
                    "features.runners is on but there is no [github] section",
                )
                .with_related(p("features.runners")),
            );
        }
        return;
    };
    if config.features.runners {
        non_empty(
            "github.owner",
            &gh.owner,
            "when features.runners is on",
            out,
        );
        if gh.runners.is_empty() {
            out.push(
                Diagnostic::error(
                    p("github.runners"),
                    "features.runners is on but no [[github.runners]] is listed",
                )
                .with_related(p("features.runners")),
            );
        }
    }
    secret_ref_check("github.token", &gh.token, out);
    let mut seen = HashMap::new();
    for (i, runner) in gh.runners.iter().enumerate() {
        let at = |key: &str| p("github.runners").index(i).key(key);
        let name_ok = !runner.name.is_empty()
            && runner.name.len() <= 100
            && runner
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            out.push(Diagnostic::error(
                at("name"),
                format!("`{}` is not a GitHub repository name", runner.name),
            ));
        } else if let Some(first) = seen.insert(runner.name.to_ascii_lowercase(), i) {
            out.push(
                Diagnostic::error(
                    at("name"),
                    format!("repository `{}` is listed twice", runner.name),
                )
                .with_related(p("github.runners").index(first).key("name")),
            );
        }
        if runner.max == 0 {
            out.push(Diagnostic::error(at("max"), "must be at least 1"));
        }
        if runner.min > runner.max {
            out.push(
                Diagnostic::error(
                    at("min"),
                    format!("min = {} is more than max = {}", runner.min, runner.max),
                )
                .with_related(at("max")),
            );
        }
    }
}

fn gitops_url(value: &str, out: &mut Vec<Diagnostic>) {
    if value.is_empty() {
        out.push(Diagnostic::error(p("gitops.repo_url"), "is required"));
        return;
    }
    for problem in git_url_problems(value) {
        let d = Diagnostic::error(p("gitops.repo_url"), problem.message);
        out.push(match problem.help {
            Some(help) => d.with_help(help),
            None => d,
        });
    }
}

/// What is wrong with `value` as a Git repository URL: the scp-like ssh form
/// (`git@github.com:owner/repo.git`) or a URL of https, http, ssh, git or file, without
/// credentials ([`url_problems`]).
pub fn git_url_problems(value: &str) -> Vec<UrlProblem> {
    // scp-like ssh form: git@github.com:owner/repo.git
    if let Some((user_host, repo)) = value.split_once(':')
        && !user_host.contains('/')
        && user_host.contains('@')
        && !repo.starts_with("//")
    {
        if repo.is_empty() {
            return vec![UrlProblem {
                message: format!("`{value}` names no repository"),
                help: None,
            }];
        }
        return Vec::new();
    }
    url_problems(value, &["https", "http", "ssh", "git", "file"])
}

fn secret_ref_check(key: &str, secret: &SecretRef, out: &mut Vec<Diagnostic>) {
    if let SecretRef::File(path) = secret
        && path.as_os_str().is_empty()
    {
        out.push(Diagnostic::error(p(key), "the secret file path is empty"));
    }
}

fn phases(config: &Config, out: &mut Vec<Diagnostic>) {
    let phases: [(&str, PhaseSettings); 5] = [
        ("vms", config.phases.vms),
        ("nodes", config.phases.nodes),
        ("cluster", config.phases.cluster),
        ("platform", config.phases.platform),
        ("gitops", config.phases.gitops),
    ];
    for (name, phase) in phases {
        if phase.timeout.0.as_secs() == 0 {
            out.push(Diagnostic::error(
                p("phases").key(name).key("timeout"),
                "must be at least one second",
            ));
        }
        if phase.retries > 10 {
            out.push(Diagnostic::warning(
                p("phases").key(name).key("retries"),
                format!(
                    "{} retries will hide a real failure for a long time",
                    phase.retries
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Node;
    use crate::types::Mebibytes;

    fn errors_at(config: &Config) -> Vec<String> {
        validate(config)
            .into_iter()
            .filter(Diagnostic::is_error)
            .map(|d| d.path.to_string())
            .collect()
    }

    #[test]
    fn default_is_clean() {
        assert_eq!(validate(&Config::default()), vec![]);
    }

    #[test]
    fn manifest_sources_are_urls_or_absolute_paths() {
        let mut c = Config::default();
        c.versions.flannel_manifest = Some("/srv/mirror/kube-flannel.yml".into());
        c.versions.argocd_manifest = Some("https://mirror.lan/argocd/install.yaml".into());
        assert_eq!(errors_at(&c), Vec::<String>::new());
        c.versions.flannel_manifest = Some("kube-flannel.yml".into());
        c.versions.argocd_manifest = Some("ftp://mirror.lan/install.yaml".into());
        assert_eq!(
            errors_at(&c),
            ["versions.flannel_manifest", "versions.argocd_manifest"]
        );
        let text = validate(&c)[0].message.clone();
        assert!(text.contains("`kube-flannel.yml`"), "{text}");
    }

    #[test]
    fn an_s3_copy_needs_an_https_endpoint_a_bucket_name_and_a_plain_prefix() {
        let mut c = Config::default();
        c.features.backups = true;
        c.backups.s3 = Some(crate::model::BackupsS3 {
            endpoint: "https://s3.example.net".into(),
            bucket: "homelab-backups".into(),
            ..crate::model::BackupsS3::default()
        });
        assert_eq!(validate(&c), vec![]);
        let s3 = c.backups.s3.as_mut().unwrap();
        s3.endpoint = "http://minio.lan:9000".into();
        s3.bucket = "Backups_2026".into();
        s3.prefix = "/etcd/".into();
        s3.region = String::new();
        assert_eq!(
            errors_at(&c),
            [
                "backups.s3.endpoint",
                "backups.s3.bucket",
                "backups.s3.prefix",
                "backups.s3.region"
            ]
        );
        let endpoint = validate(&c).into_iter().next().unwrap();
        assert!(
            format!("{endpoint:?}").contains("plain_http"),
            "{endpoint:?}"
        );
        let s3 = c.backups.s3.as_mut().unwrap();
        s3.plain_http = true;
        s3.bucket = "backups".into();
        s3.prefix = "lab/etcd".into();
        s3.region = "garage".into();
        assert_eq!(validate(&c), vec![]);
        // Credentials belong in the Secret, never in the URL (and are not repeated).
        c.backups.s3.as_mut().unwrap().endpoint = "http://AKIAEXAMPLE:hunter2@minio.lan".into();
        let all = format!("{:?}", validate(&c));
        assert!(
            all.contains("credentials") && !all.contains("hunter2"),
            "{all}"
        );
        // Without the feature nothing copies to it: said, not refused.
        c.backups.s3.as_mut().unwrap().endpoint = "http://minio.lan".into();
        c.features.backups = false;
        let found = validate(&c);
        assert!(found.iter().all(|d| !d.is_error()), "{found:?}");
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn backups_need_a_directory_and_keep_one() {
        let mut c = Config::default();
        c.backups.dir = " ".into();
        c.backups.keep = 0;
        c.backups.max_age = crate::HumanDuration(std::time::Duration::from_secs(60));
        let paths: Vec<String> = validate(&c)
            .into_iter()
            .map(|d| d.path.to_string())
            .collect();
        assert_eq!(paths, ["backups.dir", "backups.keep", "backups.max_age"]);
        let mut c = Config::default();
        c.backups.schedule = "daily".into();
        c.backups.node_dir = "backups".into();
        let paths: Vec<String> = validate(&c)
            .into_iter()
            .map(|d| d.path.to_string())
            .collect();
        assert_eq!(paths, ["backups.schedule", "backups.node_dir"]);
    }

    #[test]
    fn pull_namespaces_are_namespace_names_listed_once() {
        let mut c = Config::default();
        c.harbor.pull_namespaces = vec!["apps".into(), "Apps".into(), "apps".into()];
        assert_eq!(
            errors_at(&c),
            ["harbor.pull_namespaces[1]", "harbor.pull_namespaces[2]"]
        );
        let messages: Vec<String> = validate(&c).into_iter().map(|d| d.message).collect();
        assert!(
            messages[0].contains("`Apps` is not a DNS label"),
            "{messages:?}"
        );
        assert_eq!(messages[1], "namespace `apps` is listed twice");
    }

    #[test]
    fn argocd_names_a_release_and_pins_are_digests() {
        let mut c = Config::default();
        // The old meaning of the key: the Helm chart's version.
        c.versions.argocd = crate::PinnedVersion::new_unchecked("9.1.0");
        c.versions.argocd_manifest_sha256 = Some("abc".into());
        c.versions.flannel_manifest_sha256 = Some(format!("sha256:{}", "A".repeat(64)));
        let diags = validate(&c);
        assert_eq!(
            diags.iter().map(|d| d.path.to_string()).collect::<Vec<_>>(),
            ["versions.argocd", "versions.argocd_manifest_sha256"]
        );
        assert!(
            diags[0]
                .help
                .as_deref()
                .unwrap()
                .contains("versions.argocd_chart"),
            "{diags:?}"
        );
        // The default release has a known digest; another release has none until pinned.
        let mut c = Config::default();
        assert_eq!(c.versions.argocd_pin(), Some(crate::ARGOCD_MANIFEST_SHA256));
        c.versions.argocd = crate::PinnedVersion::new_unchecked("v3.2.1");
        assert_eq!(c.versions.argocd_pin(), None);
        c.versions.argocd_manifest_sha256 = Some("0".repeat(64));
        assert_eq!(c.versions.argocd_pin(), Some("0".repeat(64).as_str()));
        assert!(errors_at(&c).is_empty());
    }

    #[test]
    fn control_plane_minimums() {
        let mut c = Config::default();
        c.nodes[0].vcpus = 1;
        c.nodes[0].memory = Mebibytes(1699);
        c.nodes[0].disk = Mebibytes(1024);
        assert_eq!(
            errors_at(&c),
            ["nodes[0].vcpus", "nodes[0].memory", "nodes[0].disk"]
        );
        // A worker may have one vCPU.
        let mut c = Config::default();
        c.nodes[1].vcpus = 1;
        assert!(errors_at(&c).is_empty());
    }

    #[test]
    fn duplicates_name_both_places() {
        let mut c = Config::default();
        c.nodes[2].name = c.nodes[1].name.clone();
        c.nodes[2].ip = c.nodes[1].ip;
        let diags = validate(&c);
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert!(
            diags
                .iter()
                .all(|d| d.related[0].path.to_string().starts_with("nodes[1]."))
        );
    }

    #[test]
    fn network_rules() {
        let mut c = Config::default();
        c.network.pod_cidr = "10.96.0.0/16".parse().unwrap();
        c.network.gateway = "192.168.123.1".parse().unwrap();
        c.network.load_balancer_ips.harbor = "192.168.122.200".parse().unwrap();
        c.nodes[1].ip = "192.168.122.120".parse().unwrap();
        assert_eq!(
            errors_at(&c),
            [
                "nodes[1].ip",
                "network.gateway",
                "network.pod_cidr",
                "network.load_balancer_ips.harbor"
            ]
        );
    }

    #[test]
    fn no_control_plane() {
        let mut c = Config::default();
        c.nodes.retain(|n| n.role == NodeRole::Worker);
        assert_eq!(errors_at(&c), ["nodes"]);
        c.nodes.clear();
        assert_eq!(errors_at(&c), ["nodes"]);
    }

    #[test]
    fn features_need_their_sections() {
        let mut c = Config::default();
        c.features.external_secrets = true;
        c.features.runners = true;
        assert_eq!(errors_at(&c), ["esc", "github"]);
    }

    #[test]
    fn url_with_password_is_refused_without_echo() {
        let mut c = Config {
            gitops: Some(crate::model::GitopsConfig {
                repo_url: "https://me:hunter2@example.com/x.git".into(),
                ..Default::default()
            }),
            ..Config::default()
        };
        let diags = validate(&c);
        assert_eq!(diags.len(), 1);
        assert!(!diags[0].message.contains("hunter2"));
        c.gitops.as_mut().unwrap().repo_url = "git@github.com:me/gitops.git".into();
        assert!(validate(&c).is_empty());
    }

    #[test]
    fn missing_node_fields_are_required() {
        let mut c = Config::default();
        c.nodes.push(Node::default());
        assert_eq!(errors_at(&c), ["nodes[3].name", "nodes[3].ip"]);
    }
}
