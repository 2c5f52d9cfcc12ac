//! Node preparation as steps: swap off (now and in fstab), the `overlay` and `br_netfilter`
//! modules (loaded and persistent), sysctls for bridged traffic and forwarding, containerd
//! with its configuration written as TOML (systemd cgroups, registry mirrors under
//! /etc/containerd/certs.d), and kubeadm/kubelet/kubectl from the package channel of the
//! configured release, held, with the kubelet enabled.

use serde::Serialize;

use crate::bundle::{NodeBundle, bundle_steps};
use crate::kubeadm::Version;
use crate::signing_key::{KeyError, SigningKey};
use crate::ssh::{Cmd, shell_quote};
use crate::steps::{Change, Check, Step};

/// The OpenPGP fingerprint of the key that signs the Kubernetes package repository
/// (`pkgs.k8s.io`, the OBS project `isv:kubernetes`), the same for every channel.
pub const KUBERNETES_KEY_FINGERPRINT: &str = "DE15B14486CD377B9E876E1A234654DA9A296436";

/// Where the apt keyring of the repository is written on the nodes (armored: apt reads a
/// `.asc` keyring as it is, so the nodes need no `gpg`).
pub const KEYRING_PATH: &str = "/etc/apt/keyrings/kubernetes-apt-keyring.asc";

/// Where the Kubernetes packages come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageSource {
    /// Base URL of the repository; the channel (`v1.33`) and `/deb/` are appended.
    /// Override it for an offline mirror.
    pub base_url: String,
    /// The pinned fingerprint of the repository's signing key.
    pub key_fingerprint: String,
    /// The signing key, fetched on the host and checked against `key_fingerprint`
    /// ([`PackageSource::fetch_key`]). Without it, the key step fails and says so.
    #[serde(skip)]
    pub key: Option<SigningKey>,
    /// The apt package that provides containerd: Debian's `containerd`, or another source's
    /// (`containerd.io` from Docker's repository, set up on the image) when Debian's is older
    /// than the Kubernetes release needs ([`containerd_supported`]).
    pub containerd_package: String,
    /// Where kubeadm's images come from (`imageRepository`); `None`: registry.k8s.io. The
    /// sandbox (pause) image containerd uses comes from there too.
    pub image_repository: Option<String>,
    /// Install kubeadm, kubelet, kubectl and the CNI plugins from this offline bundle instead
    /// of the package repository (which is then not configured on the nodes).
    #[serde(skip)]
    pub bundle: Option<NodeBundle>,
    /// containerd host files (`/etc/containerd/certs.d/<registry>/hosts.toml`): pulls of each
    /// registry go to a mirror first (an air-gapped lab's own registry).
    pub registry_hosts: Vec<RegistryHosts>,
}

/// containerd's host configuration for one registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryHosts {
    /// The registry as images name it (`registry.k8s.io`, `ghcr.io`).
    pub registry: String,
    /// The `hosts.toml` text (for example from `harbor_client::node::hosts_toml`).
    pub hosts_toml: String,
}

impl Default for PackageSource {
    fn default() -> Self {
        Self::new(
            "https://pkgs.k8s.io/core:/stable:",
            KUBERNETES_KEY_FINGERPRINT,
        )
    }
}

impl PackageSource {
    /// The repository at `base_url`, its key pinned to `key_fingerprint`.
    pub fn new(base_url: impl Into<String>, key_fingerprint: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            key_fingerprint: key_fingerprint.into(),
            key: None,
            containerd_package: "containerd".into(),
            image_repository: None,
            bundle: None,
            registry_hosts: Vec::new(),
        }
    }

    /// With kubeadm, kubelet, kubectl and the CNI plugins from an offline bundle.
    #[must_use]
    pub fn with_bundle(mut self, bundle: Option<NodeBundle>) -> Self {
        self.bundle = bundle;
        self
    }

    /// With containerd's pulls of these registries sent to mirrors first.
    #[must_use]
    pub fn with_registry_hosts(mut self, hosts: Vec<RegistryHosts>) -> Self {
        self.registry_hosts = hosts;
        self
    }

    /// With containerd from another package.
    #[must_use]
    pub fn with_containerd_package(mut self, package: impl Into<String>) -> Self {
        self.containerd_package = package.into();
        self
    }

    /// With kubeadm's images (and the pause image) from a mirror.
    #[must_use]
    pub fn with_image_repository(mut self, repository: Option<String>) -> Self {
        self.image_repository = repository;
        self
    }

    /// The apt repository URL of a release's channel.
    pub fn repository(&self, version: &Version) -> String {
        format!(
            "{}/{}/deb/",
            self.base_url.trim_end_matches('/'),
            version.channel()
        )
    }

    /// Where the channel's signing key is published.
    pub fn key_url(&self, version: &Version) -> String {
        format!("{}Release.key", self.repository(version))
    }

    /// Downloads the channel's signing key on this machine and keeps it when its fingerprint
    /// is the pinned one.
    ///
    /// # Errors
    /// The download fails, or the key is not the pinned one (both fingerprints are named).
    pub async fn fetch_key(
        &mut self,
        http: &reqwest::Client,
        version: &Version,
    ) -> Result<(), KeyError> {
        let key =
            crate::signing_key::fetch(http, &self.key_url(version), &self.key_fingerprint).await?;
        self.key = Some(key);
        Ok(())
    }
}

/// The modules Kubernetes networking needs.
pub const MODULES: &[&str] = &["overlay", "br_netfilter"];

/// The sysctls Kubernetes networking needs.
pub const SYSCTLS: &[(&str, &str)] = &[
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
    ("net.ipv4.ip_forward", "1"),
];

/// containerd's configuration: CRI plugin with systemd cgroups and per-registry host files.
pub fn containerd_config(sandbox_image: &str) -> String {
    let mut runc_options = toml::Table::new();
    runc_options.insert("SystemdCgroup".into(), true.into());
    let mut runc = toml::Table::new();
    runc.insert("runtime_type".into(), "io.containerd.runc.v2".into());
    runc.insert("options".into(), runc_options.into());
    let mut runtimes = toml::Table::new();
    runtimes.insert("runc".into(), runc.into());
    let mut containerd = toml::Table::new();
    containerd.insert("runtimes".into(), runtimes.into());
    let mut registry = toml::Table::new();
    registry.insert("config_path".into(), "/etc/containerd/certs.d".into());
    let mut cri = toml::Table::new();
    // The pod sandbox image of this Kubernetes release: without it containerd uses its own
    // built-in default, pulled from registry.k8s.io whatever mirror kubeadm is told to use,
    // and kubeadm's preflight warns about the difference.
    cri.insert("sandbox_image".into(), sandbox_image.into());
    cri.insert("containerd".into(), containerd.into());
    cri.insert("registry".into(), registry.into());
    // Where the pod network's plugins are: the distribution packages, the node bundle and
    // Flannel's installer all put them in /opt/cni/bin (some containerd builds default to
    // another directory).
    let mut cni = toml::Table::new();
    cni.insert("bin_dir".into(), "/opt/cni/bin".into());
    cni.insert("conf_dir".into(), "/etc/cni/net.d".into());
    cri.insert("cni".into(), cni.into());
    let mut plugins = toml::Table::new();
    plugins.insert("io.containerd.grpc.v1.cri".into(), cri.into());
    let mut root = toml::Table::new();
    root.insert("version".into(), 2.into());
    root.insert("plugins".into(), plugins.into());
    format!(
        "# Written by homelab: edits are replaced on the next run.\n{}",
        toml::to_string(&root).unwrap_or_default()
    )
}

/// The pause image tag kubeadm uses for a release (kubeadm's `PauseVersion`); releases this
/// table does not know get the newest it does, and the `sandbox-image` step compares it with
/// what the installed kubeadm says.
pub fn pause_version(version: &Version) -> &'static str {
    match (version.major, version.minor) {
        (1, ..=30) => "3.9",
        (1, 31..=33) => "3.10",
        _ => "3.10.1",
    }
}

/// The pod sandbox image of `version`, from `image_repository` or registry.k8s.io.
pub fn pause_image(version: &Version, image_repository: Option<&str>) -> String {
    format!(
        "{}/pause:{}",
        image_repository
            .unwrap_or("registry.k8s.io")
            .trim_end_matches('/'),
        pause_version(version)
    )
}

/// The etcd image kubeadm deploys with `version` (kubeadm's `SupportedEtcdVersion`: 3.5.21-0
/// for 1.30 to 1.33 as of kubeadm 1.33.5, 3.6.4-0 from 1.34), from `image_repository` or
/// registry.k8s.io. Its `etcdctl` takes the scheduled snapshots.
pub fn etcd_image(version: &Version, image_repository: Option<&str>) -> String {
    let tag = match (version.major, version.minor) {
        (1, ..=33) => "3.5.21-0",
        _ => "3.6.4-0",
    };
    format!(
        "{}/etcd:{tag}",
        image_repository
            .unwrap_or("registry.k8s.io")
            .trim_end_matches('/')
    )
}

/// The oldest containerd of each series (`(major, minor, patch)`) a Kubernetes release
/// supports, from the container runtime requirements of its release notes; empty when no
/// requirement is known.
fn containerd_minimums(version: &Version) -> &'static [(u32, u32, u32)] {
    match (version.major, version.minor) {
        (1, 32..) => &[(1, 6, 36), (1, 7, 24), (2, 0, 4)],
        _ => &[],
    }
}

/// Whether `containerd_version` (as `containerd --version` or the package says it:
/// `1.6.20~ds1-1+b1`, `v1.7.24`) is one Kubernetes `version` supports.
///
/// # Errors
/// A message naming the version, what is supported and what to do.
pub fn containerd_supported(version: &Version, containerd_version: &str) -> Result<(), String> {
    let minimums = containerd_minimums(version);
    let numbers: Vec<u32> = containerd_version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map_while(|n| n.parse().ok())
        .collect();
    let [major, minor, patch] = numbers[..] else {
        return Err(format!(
            "cannot read the containerd version `{containerd_version}`"
        ));
    };
    if minimums.is_empty() {
        return Ok(());
    }
    let ok = minimums
        .iter()
        .any(|&(ma, mi, pa)| (major, minor) == (ma, mi) && patch >= pa)
        || minimums
            .iter()
            .all(|&(ma, mi, _)| (major, minor) > (ma, mi));
    if ok {
        return Ok(());
    }
    let supported = minimums
        .iter()
        .map(|(a, b, c)| format!("{a}.{b}.{c}+"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(format!(
        "containerd {major}.{minor}.{patch} is older than Kubernetes {}.{} supports ({supported}); \
         install a newer one (for example containerd.io from Docker's apt repository on the image) \
         and set [packages] containerd = \"containerd.io\"",
        version.major, version.minor
    ))
}

/// The steps that prepare a node for kubeadm, in order.
pub fn node_steps(version: &Version, source: &PackageSource) -> Vec<Step> {
    let modules = MODULES.join("\n") + "\n";
    let sysctls = SYSCTLS
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let sysctl_check = SYSCTLS
        .iter()
        .map(|(k, v)| format!("[ \"$(sysctl -n {k} 2>/dev/null)\" = {v} ]"))
        .collect::<Vec<_>>()
        .join(" && ");
    let modules_loaded = MODULES
        .iter()
        .map(|m| format!("[ -d /sys/module/{m} ]"))
        .collect::<Vec<_>>()
        .join(" && ");
    vec![
        Step::command(
            "swap-off",
            "turn swap off and comment it out of /etc/fstab",
            "[ -z \"$(swapon --show --noheadings)\" ] && ! grep -Eq '^[^#]\\S*\\s+\\S+\\s+swap\\s' /etc/fstab",
            "swapoff -a && sed -ri 's/^([^#]\\S*\\s+\\S+\\s+swap\\s)/# homelab: swap off for the kubelet: \\1/' /etc/fstab",
        ),
        Step::file(
            "modules-persistent",
            "/etc/modules-load.d/homelab-k8s.conf",
            modules,
            0o644,
            None,
        ),
        Step::command(
            "modules-loaded",
            "load the overlay and br_netfilter modules",
            &modules_loaded,
            &MODULES
                .iter()
                .map(|m| format!("modprobe {m}"))
                .collect::<Vec<_>>()
                .join(" && "),
        ),
        Step::file(
            "sysctl",
            "/etc/sysctl.d/99-homelab-k8s.conf",
            sysctls,
            0o644,
            Some(Cmd::new("sysctl --system >/dev/null").sudo()),
        ),
        Step {
            name: "sysctl-live".into(),
            description: "apply the bridge and forwarding sysctls now".into(),
            check: Check::Command(Cmd::new(sysctl_check).sudo()),
            changes: vec![Change::Run(Cmd::new("sysctl --system >/dev/null").sudo())],
        },
        Step::command(
            "containerd-installed",
            &format!("install containerd (package {})", source.containerd_package),
            // Installed *and configured*: a run killed inside dpkg leaves the binary unpacked
            // and the package half-configured, which the re-run must finish.
            &format!(
                "dpkg-query -W -f='${{Status}}' {} 2>/dev/null | grep -qx 'install ok installed'",
                shell_quote(&source.containerd_package)
            ),
            &apt_install(&shell_quote(&source.containerd_package)),
        ),
        Step::file(
            "containerd-config",
            "/etc/containerd/config.toml",
            containerd_config(&pause_image(version, source.image_repository.as_deref())),
            0o644,
            Some(
                Cmd::new("mkdir -p /etc/containerd/certs.d && systemctl restart containerd").sudo(),
            ),
        ),
    ]
    .into_iter()
    .chain(registry_hosts_steps(source))
    .chain(std::iter::once(prerequisites_step(source)))
    .chain(install_steps(version, source))
    .chain([
        sandbox_image_step(version, source),
        kubelet_waits_step(),
        Step::command(
            "kubelet-enabled",
            "enable the kubelet",
            "systemctl is-enabled --quiet kubelet",
            "systemctl enable kubelet",
        ),
    ])
    .collect()
}

/// Where kubeadm writes the kubelet's configuration (in `init`, `join` and upgrades).
pub const KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";

/// A systemd drop-in that keeps the kubelet from starting until kubeadm has written its
/// configuration ([`KUBELET_CONFIG`]). Without it the packaged kubelet starts at once, fails
/// for want of that file and is restarted every 10 s until `kubeadm init` or `join`: each
/// start of the 80 MB program costs a fast machine little, but an emulated node seconds of
/// CPU, a third of a core spent on a loop that can only fail. kubeadm (re)starts the kubelet
/// itself once the file is there; the unit stays enabled, as its preflight wants.
fn kubelet_waits_step() -> Step {
    let path = "/etc/systemd/system/kubelet.service.d/05-homelab-wait-for-kubeadm.conf";
    let contents = format!(
        "# homelab: the kubelet starts once kubeadm has configured it (init, join).\n\
         [Unit]\nConditionPathExists={KUBELET_CONFIG}\n"
    );
    // Done when the drop-in is there, systemd has read it, and an unconfigured kubelet is
    // not running or waiting to be restarted (a run killed after the upload is finished).
    let check = format!(
        "printf '%s' {} | cmp -s - {path} && \
         [ \"$(systemctl show -p NeedDaemonReload --value kubelet)\" != yes ] && \
         {{ [ -e {KUBELET_CONFIG} ] || \
            {{ s=$(systemctl show -p ActiveState --value kubelet); \
               [ \"$s\" != active ] && [ \"$s\" != activating ] && [ \"$s\" != reloading ]; }}; }}",
        shell_quote(&contents)
    );
    Step {
        name: "kubelet-waits-for-kubeadm".into(),
        description: format!(
            "hold the kubelet until kubeadm has configured it, so that it does not restart in a \
             loop before init or join ({path})"
        ),
        check: Check::Command(Cmd::new(check).sudo()),
        changes: vec![
            Change::Upload {
                path: path.into(),
                contents: contents.into_bytes(),
                mode: 0o644,
                owner: None,
            },
            Change::Run(
                Cmd::new(format!(
                    "systemctl daemon-reload && {{ [ -e {KUBELET_CONFIG} ] || systemctl stop kubelet; }}"
                ))
                .sudo(),
            ),
        ],
    }
}

/// What kubeadm's preflight needs beside kubeadm (and, for the package repository, what apt
/// needs to reach it; for a bundle, what the kubelet package would have pulled in).
fn prerequisites_step(source: &PackageSource) -> Step {
    let mut packages = vec!["ca-certificates", "conntrack", "socat", "ethtool"];
    if source.bundle.is_some() {
        packages.extend(["iptables", "iproute2"]);
    }
    let list = packages.join(" ");
    Step::command(
        "kubernetes-prerequisites",
        &format!("install what kubeadm's preflight needs ({list})"),
        &format!(
            "dpkg-query -W -f='${{Status}}\\n' {list} 2>/dev/null | grep -c '^install ok installed$' | grep -qx {}",
            packages.len()
        ),
        &apt_install(&list),
    )
}

/// kubeadm, kubelet, kubectl (and the CNI plugins): from the bundle when there is one,
/// otherwise from the package repository.
fn install_steps(version: &Version, source: &PackageSource) -> Vec<Step> {
    match &source.bundle {
        Some(bundle) => bundle_steps(version, bundle).unwrap_or_else(|e| {
            vec![Step::command(
                "bundle-version",
                "the node bundle's release",
                "false",
                &format!("echo {} >&2; exit 1", shell_quote(&e.to_string())),
            )]
        }),
        None => repository_steps(version, source)
            .into_iter()
            .chain(std::iter::once(packages_step(version)))
            .collect(),
    }
}

/// One `hosts.toml` per mirrored registry (read by containerd on every pull; no restart).
fn registry_hosts_steps(source: &PackageSource) -> Vec<Step> {
    source
        .registry_hosts
        .iter()
        .map(|h| {
            let mut step = Step::file(
                &format!("registry-hosts-{}", h.registry),
                &format!("/etc/containerd/certs.d/{}/hosts.toml", h.registry),
                h.hosts_toml.clone(),
                0o644,
                None,
            );
            step.description = format!("send containerd's pulls of {} to its mirror", h.registry);
            step
        })
        .collect()
}

/// Checks that containerd's sandbox image is the pause image of the installed kubeadm (`kubeadm
/// config images list`). The containerd configuration takes it from [`pause_image`]; when the
/// two differ (a release newer than that table), this step fails and names both, rather than
/// letting every pod pull a pause image kubeadm does not expect.
fn sandbox_image_step(version: &Version, source: &PackageSource) -> Step {
    let repository = source
        .image_repository
        .as_deref()
        .map_or(String::new(), |r| {
            format!(" --image-repository {}", shell_quote(r))
        });
    let want = format!(
        "want=$(kubeadm config images list --kubernetes-version {version}{repository} 2>/dev/null | grep '/pause:')"
    );
    let have =
        "have=$(sed -n 's/^ *sandbox_image = \"\\(.*\\)\"$/\\1/p' /etc/containerd/config.toml)";
    Step::command(
        "sandbox-image",
        &format!(
            "check that containerd's sandbox image is kubeadm {version}'s pause image ({})",
            pause_image(version, source.image_repository.as_deref())
        ),
        &format!("{want}; {have}; [ -n \"$want\" ] && [ \"$want\" = \"$have\" ]"),
        &format!(
            "{want}; {have}; [ -n \"$want\" ] || want='none: kubeadm config images list printed no pause image'; \
             echo \"containerd's sandbox_image is '$have', but kubeadm {version} uses '$want': \
             homelab's pause table is behind this release, please report it\" >&2; exit 1"
        ),
    )
}

/// kubeadm, kubelet and kubectl at the configured release, held, on a node that has none of
/// them; a node with another version is refused with "run homelab upgrade" (only `upgrade`
/// moves versions, control plane first, as the version skew policy requires).
fn packages_step(version: &Version) -> Step {
    let pkg_version = package_version(version);
    Step::command(
        "kubernetes-packages",
        &format!(
            "install kubeadm, kubelet and kubectl {pkg_version} and hold them (on a node \
             without them; another version is left to `upgrade`)"
        ),
        &format!(
            "kubeadm version -o short 2>/dev/null | grep -qx 'v{pkg_version}' && apt-mark showhold | grep -qx kubelet"
        ),
        &format!(
            "if v=$(kubeadm version -o short 2>/dev/null) && [ \"$v\" != 'v{pkg_version}' ]; then \
             echo \"kubeadm $v is installed and the configuration says v{pkg_version}: \
             preparation never moves versions, as the version skew policy needs the control plane \
             first and nodes drained: run homelab upgrade\" >&2; exit 1; fi; {}",
            held_install(&["kubeadm", "kubelet", "kubectl"], &pkg_version)
        ),
    )
}

/// The steps that point apt at the package channel of `version` (replacing another
/// channel's entry, as upgrades to a new minor release need): the repository's signing key
/// (fetched and checked on the host, see [`PackageSource::fetch_key`]) written as an armored
/// keyring, then the source list, then the package lists refreshed. Nothing runs on the node
/// but apt: the base image has neither `curl` nor `gpg`.
pub fn repository_steps(version: &Version, source: &PackageSource) -> Vec<Step> {
    let repo = source.repository(version);
    let channel = version.channel();
    let key = match &source.key {
        Some(key) => {
            let mut step = Step::file("kubernetes-key", KEYRING_PATH, key.armored(), 0o644, None);
            step.description = format!(
                "write the package signing key {} to {KEYRING_PATH}",
                key.fingerprint()
            );
            step
        }
        None => Step::command(
            "kubernetes-key",
            "the package signing key (fetched on the host)",
            &format!("[ -s {KEYRING_PATH} ]"),
            &format!(
                "echo {} >&2; exit 1",
                shell_quote(&format!(
                    "the signing key of {repo} was not fetched: the host fetches it and checks its fingerprint ({}) before the nodes get it",
                    source.key_fingerprint
                ))
            ),
        ),
    };
    let mut list = Step::file(
        "kubernetes-repository",
        "/etc/apt/sources.list.d/kubernetes.list",
        format!("deb [signed-by={KEYRING_PATH}] {repo} /\n"),
        0o644,
        Some(Cmd::new("DEBIAN_FRONTEND=noninteractive apt-get update -qq").sudo()),
    );
    list.description = format!("add the Kubernetes {channel} package repository ({repo})");
    vec![key, list]
}

/// Installs `packages` (an apt argument list) non-interactively: first finishes what an
/// interrupted earlier run left half-configured (`dpkg --configure -a`; without it apt refuses
/// every install after a run was killed inside dpkg), then refreshes the package lists, then
/// installs. While another apt or dpkg holds its locks (unattended upgrades, or the remote
/// half of an interrupted run, which outlives its SSH connection), it tries again every 2 s
/// for up to 5 minutes. Runs in a subshell: the caller's shell goes on whatever happens.
pub fn apt_install(packages: &str) -> String {
    format!(
        "( export DEBIAN_FRONTEND=noninteractive; n=0; \
         until err=$( {{ dpkg --configure -a && apt-get update -qq && \
         apt-get -o DPkg::Lock::Timeout=300 install -y -qq {packages}; }} 2>&1 >/dev/null ); do \
         n=$((n+1)); \
         case \"$err\" in *'Could not get lock'*|*'locked by another process'*) \
         if [ $n -lt 150 ]; then sleep 2; continue; fi ;; esac; \
         printf '%s\\n' \"$err\" >&2; exit 1; \
         done )"
    )
}

/// Installs `packages` at `version` the way the kubeadm upgrade documentation does: the
/// package lists refreshed first (a new patch release is not known before), the holds lifted
/// for the install only, and the packages held again on every exit path, the failed install
/// included. Exits with the install's status.
pub fn held_install(packages: &[&str], version: &str) -> String {
    let names = packages.join(" ");
    let pinned: Vec<String> = packages
        .iter()
        .map(|p| format!("{p}='{version}-*'"))
        .collect();
    format!(
        "apt-mark unhold {names} >/dev/null 2>&1; \
         {install}; \
         rc=$?; apt-mark hold {names} >/dev/null 2>&1; exit $rc",
        install = apt_install(&pinned.join(" "))
    )
}

/// The package version string of a release (`1.33.5`).
pub fn package_version(version: &Version) -> String {
    format!("{}.{}.{}", version.major, version.minor, version.patch)
}

/// What a node is, read before anything changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeFacts {
    /// `PRETTY_NAME` of /etc/os-release.
    pub os: String,
    /// CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Tools kubeadm's nodes need that are missing.
    pub missing: Vec<String>,
}

/// The command whose output [`parse_facts`] reads.
pub const FACTS_COMMAND: &str = "grep '^PRETTY_NAME=' /etc/os-release; echo cpus=$(nproc); grep '^MemTotal:' /proc/meminfo; \
     for t in systemctl apt-get curl gpg modprobe sysctl swapon; do command -v $t >/dev/null || echo missing=$t; done";

/// Reads the output of [`FACTS_COMMAND`].
pub fn parse_facts(output: &str) -> NodeFacts {
    let mut facts = NodeFacts::default();
    for line in output.lines() {
        if let Some(v) = line.strip_prefix("PRETTY_NAME=") {
            v.trim_matches('"').clone_into(&mut facts.os);
        } else if let Some(v) = line.strip_prefix("cpus=") {
            facts.cpus = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("MemTotal:") {
            facts.memory_mib = v
                .split_whitespace()
                .next()
                .and_then(|k| k.parse::<u64>().ok())
                .unwrap_or(0)
                / 1024;
        } else if let Some(v) = line.strip_prefix("missing=") {
            facts.missing.push(v.trim().to_owned());
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_config_is_toml_with_systemd_cgroups_and_mirrors() {
        let text = containerd_config("registry.k8s.io/pause:3.10");
        let doc: toml::Table = toml::from_str(&text).unwrap();
        let cri = &doc["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(
            cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
            Some(true)
        );
        assert_eq!(
            cri["registry"]["config_path"].as_str(),
            Some("/etc/containerd/certs.d")
        );
        assert_eq!(doc["version"].as_integer(), Some(2));
        assert_eq!(
            cri["sandbox_image"].as_str(),
            Some("registry.k8s.io/pause:3.10")
        );
    }

    #[test]
    fn the_pause_image_follows_the_release_and_the_mirror() {
        let v = |s: &str| -> Version { s.parse().unwrap() };
        assert_eq!(
            pause_image(&v("1.33.5"), None),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(pause_image(&v("1.30.2"), None), "registry.k8s.io/pause:3.9");
        assert_eq!(
            pause_image(&v("1.33.5"), Some("harbor.lan/k8s/")),
            "harbor.lan/k8s/pause:3.10"
        );
    }

    #[test]
    fn containerd_older_than_the_release_supports_is_named() {
        let v133: Version = "1.33.5".parse().unwrap();
        let err = containerd_supported(&v133, "1.6.20~ds1-1+b1").unwrap_err();
        assert!(
            err.contains("containerd 1.6.20 is older than Kubernetes 1.33 supports (1.6.36+, 1.7.24+, 2.0.4+)"),
            "{err}"
        );
        assert!(
            err.contains("[packages] containerd = \"containerd.io\""),
            "{err}"
        );
        for ok in ["1.6.36", "v1.7.24", "1.7.27-1", "2.0.4", "2.1.0", "3.0.0"] {
            containerd_supported(&v133, ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for old in ["1.7.23", "2.0.3", "1.5.99"] {
            assert!(containerd_supported(&v133, old).is_err(), "{old}");
        }
        // No requirement known for older releases.
        containerd_supported(&"1.29.0".parse().unwrap(), "1.6.20").unwrap();
        assert!(containerd_supported(&v133, "garbage").is_err());
    }

    #[test]
    fn steps_follow_the_configured_release_and_source() {
        let version: Version = "1.33.5".parse().unwrap();
        let mirror = PackageSource::new("http://mirror.lan/k8s/", KUBERNETES_KEY_FINGERPRINT);
        let steps = node_steps(&version, &mirror);
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.first(), Some(&"swap-off"));
        assert_eq!(names.last(), Some(&"kubelet-enabled"));
        // After the packages (whose kubelet would start at once), before it is enabled.
        let at = |name: &str| names.iter().position(|n| *n == name).unwrap();
        assert!(at("kubernetes-packages") < at("kubelet-waits-for-kubeadm"));
        assert_eq!(at("kubelet-waits-for-kubeadm") + 1, at("kubelet-enabled"));
        let repo = steps
            .iter()
            .find(|s| s.name == "kubernetes-repository")
            .unwrap();
        assert!(
            repo.description
                .contains("http://mirror.lan/k8s/v1.33/deb/"),
            "{}",
            repo.description
        );
        let pkgs = steps
            .iter()
            .find(|s| s.name == "kubernetes-packages")
            .unwrap();
        match &pkgs.changes[0] {
            Change::Run(cmd) => assert!(
                cmd.line.contains("kubeadm='1.33.5-*'") && cmd.line.contains("apt-mark hold"),
                "{}",
                cmd.line
            ),
            Change::Upload { .. } | Change::UploadFile { .. } => panic!("expected a command"),
        }
        assert_eq!(
            PackageSource::default().repository(&version),
            "https://pkgs.k8s.io/core:/stable:/v1.33/deb/"
        );
    }

    #[test]
    fn swap_lines_in_fstab_are_commented_out_and_then_found_done() {
        let dir = tempfile::tempdir().unwrap();
        let fstab = dir.path().join("fstab");
        std::fs::write(
            &fstab,
            "UUID=1 / ext4 defaults 0 1\n/swap.img none swap sw 0 0\n# /old none swap sw 0 0\nUUID=2 /home ext4 defaults 0 2\n",
        )
        .unwrap();
        let step = &node_steps(&"1.33.5".parse().unwrap(), &PackageSource::default())[0];
        let on_file = |line: &str| {
            line.replace("/etc/fstab", fstab.to_str().unwrap())
                .replace("swapoff -a && ", "")
        };
        let (Check::Command(check), Change::Run(apply)) = (&step.check, &step.changes[0]) else {
            panic!("swap-off is a command step");
        };
        // Only the fstab half of the check: this machine's own swap is not touched.
        let fstab_check = on_file(check.line.split(" && ").nth(1).unwrap());
        let run = |line: &str| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(line)
                .status()
                .unwrap()
                .success()
        };
        assert!(!run(&fstab_check), "an active swap line is detected");
        assert!(run(&on_file(&apply.line)));
        assert!(run(&fstab_check), "after the change the check passes");
        let text = std::fs::read_to_string(&fstab).unwrap();
        assert!(
            text.contains("# homelab: swap off for the kubelet: /swap.img none swap sw 0 0"),
            "{text}"
        );
        assert!(
            text.contains("UUID=1 / ext4 defaults 0 1\nUUID=2") || text.contains("UUID=2 /home"),
            "{text}"
        );
        assert!(run(&on_file(&apply.line)), "idempotent");
        assert_eq!(std::fs::read_to_string(&fstab).unwrap(), text);
    }

    /// The check and the change of `kubelet-waits-for-kubeadm`, run by `sh` against a
    /// stand-in `systemctl` whose answers each case sets (the paths moved into a directory).
    #[test]
    fn the_kubelet_waits_for_kubeadm_and_a_half_done_change_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let step = kubelet_waits_step();
        let (Check::Command(check), [Change::Upload { path, contents, .. }, Change::Run(apply)]) =
            (&step.check, step.changes.as_slice())
        else {
            panic!("an upload and a command: {step:?}");
        };
        assert!(
            String::from_utf8_lossy(contents)
                .contains("ConditionPathExists=/var/lib/kubelet/config.yaml"),
        );
        std::fs::create_dir(d.join("bin")).unwrap();
        // `systemctl show -p P --value kubelet` prints the file named P; `stop` and
        // `daemon-reload` change them as systemd would; every call is logged.
        homelab_testkit::stand_in(
            &d.join("bin"),
            "systemctl",
            &format!(
                "echo \"$*\" >> {0}/calls\n\
                 case \"$1\" in show) cat {0}/$3;; stop) echo inactive > {0}/ActiveState;; \
                 daemon-reload) echo no > {0}/NeedDaemonReload;; esac\n",
                d.display()
            ),
        );
        let file = d.join("drop-in.conf");
        let config = d.join("config.yaml");
        let local = |line: &str| {
            line.replace(path.as_str(), file.to_str().unwrap())
                .replace(KUBELET_CONFIG, config.to_str().unwrap())
        };
        let set = |reload: &str, state: &str| {
            std::fs::write(d.join("NeedDaemonReload"), format!("{reload}\n")).unwrap();
            std::fs::write(d.join("ActiveState"), format!("{state}\n")).unwrap();
        };
        let run = |line: &str| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(local(line))
                .env(
                    "PATH",
                    format!(
                        "{}:{}",
                        d.join("bin").display(),
                        std::env::var("PATH").unwrap()
                    ),
                )
                .status()
                .unwrap()
                .success()
        };
        // Freshly installed: no drop-in, the kubelet in its restart loop.
        set("no", "activating");
        assert!(!run(&check.line), "no drop-in yet");
        // Killed after the upload: systemd has not read the drop-in.
        std::fs::write(&file, local(&String::from_utf8_lossy(contents))).unwrap();
        set("yes", "activating");
        assert!(!run(&check.line), "the drop-in is not loaded");
        // Killed after the reload: the loop still runs.
        set("no", "activating");
        assert!(!run(&check.line), "the kubelet still restarts in a loop");
        assert!(run(&apply.line));
        assert!(run(&check.line), "held after the change");
        let calls = std::fs::read_to_string(d.join("calls")).unwrap();
        assert!(calls.contains("daemon-reload\nstop kubelet\n"), "{calls}");
        // Configured by kubeadm and running: done, and a change would not stop it.
        std::fs::write(&config, "kind: KubeletConfiguration\n").unwrap();
        set("no", "active");
        assert!(run(&check.line), "a configured kubelet runs");
        std::fs::remove_file(d.join("calls")).unwrap();
        assert!(run(&apply.line));
        assert_eq!(
            std::fs::read_to_string(d.join("calls")).unwrap(),
            "daemon-reload\n"
        );
        // Another drop-in text (an older homelab's) is not done.
        std::fs::write(&file, "[Unit]\n").unwrap();
        assert!(!run(&check.line), "a different drop-in");
    }

    #[test]
    fn facts_are_parsed() {
        let out = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\ncpus=2\nMemTotal:        2014212 kB\nmissing=curl\nmissing=gpg\n";
        let facts = parse_facts(out);
        assert_eq!(facts.os, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!((facts.cpus, facts.memory_mib), (2, 1967));
        assert_eq!(facts.missing, ["curl", "gpg"]);
    }
}
