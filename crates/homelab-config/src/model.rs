//! The configuration model: what `homelab.toml` holds.
//!
//! Every section has a `Default` equal to the embedded default file, so a file only needs the
//! keys it changes. Layer crates never see these types: each layer has its own spec types and
//! the bins convert.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::secret::SecretRef;
use crate::types::{
    HumanDuration, IpRange, KubeVersion, MacAddress, Mebibytes, PinnedVersion, Quantity,
};

/// The whole of `homelab.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[schemars(
    title = "homelab.toml",
    description = "Configuration of a homelab Kubernetes platform."
)]
pub struct Config {
    /// Cluster identity and Kubernetes release.
    pub cluster: ClusterConfig,
    /// How the tools log in to the nodes.
    pub ssh: SshConfig,
    /// Addresses: the NAT network, the Kubernetes CIDRs and the load-balancer pool.
    pub network: NetworkConfig,
    /// Where and how the virtual machines run.
    pub libvirt: LibvirtConfig,
    /// Pinned versions of every platform component.
    pub versions: ComponentVersions,
    /// Where the nodes get the Kubernetes packages from.
    pub packages: PackagesConfig,
    /// The Harbor registry.
    pub harbor: HarborConfig,
    /// Pulumi ESC, the source of secrets (needed when `features.external_secrets` is on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub esc: Option<EscConfig>,
    /// GitHub owner and self-hosted runners (needed when `features.runners` is on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubConfig>,
    /// The GitOps manifests repository ArgoCD follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitopsConfig>,
    /// Where etcd snapshots go and how many are kept.
    pub backups: BackupsConfig,
    /// Timeouts and retries of each phase.
    pub phases: Phases,
    /// Optional parts of the platform.
    pub features: Features,
    /// The machines of the cluster (`[[nodes]]`, one table per node).
    pub nodes: Vec<Node>,
}

/// Cluster identity and Kubernetes release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ClusterConfig {
    /// Cluster name: a DNS label; names the kubeconfig context and the libvirt objects.
    pub name: String,
    /// The Kubernetes release (MAJOR.MINOR.PATCH). Drives the package channel, kubeadm's
    /// `kubernetesVersion` and the upgrade target.
    pub kubernetes_version: KubeVersion,
    /// Where the cluster comes from: `libvirt` (homelab makes the VMs and the kubeadm
    /// cluster) or `existing` (a cluster you already have, such as Kind or k3s: the VM, node
    /// and cluster phases are skipped and the later phases use `kubeconfig` and `context`).
    pub provider: ClusterProvider,
    /// The kubeconfig file: where `libvirt` merges the new cluster's context, and where
    /// `existing` reads it.
    pub kubeconfig: PathBuf,
    /// The context in `kubeconfig` (default: the cluster's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The nodes are slow (small boards, or VMs without hardware virtualisation): etcd and
    /// the control plane's probes are given more time, so that a loaded node is not restarted
    /// in a loop. Set on its own when the VMs run under software emulation (libvirt domain
    /// type `qemu`, or `auto` on a host whose KVM cannot run guests).
    pub slow_nodes: bool,
}

impl ClusterConfig {
    /// The kubeconfig context of the cluster: `context`, else the cluster's name.
    pub fn context_name(&self) -> &str {
        self.context.as_deref().unwrap_or(&self.name)
    }
}

/// Where the cluster comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterProvider {
    /// VMs on libvirt, made into a cluster with kubeadm.
    #[default]
    Libvirt,
    /// A cluster that exists already, reached through `cluster.kubeconfig`.
    Existing,
    /// A Kind cluster (Kubernetes in containers) on this machine, made with the `kind` CLI:
    /// one control plane and a worker per `[[nodes]]` worker.
    Kind,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: "homelab".into(),
            kubernetes_version: KubeVersion {
                major: 1,
                minor: 33,
                patch: 5,
            },
            provider: ClusterProvider::Libvirt,
            kubeconfig: PathBuf::from("~/.kube/config"),
            context: None,
            slow_nodes: false,
        }
    }
}

/// Where the nodes get kubeadm, kubelet and kubectl from: an apt repository with one channel
/// per minor release (`<repository>/v1.33/deb/`), signed by a key whose fingerprint is pinned
/// here (the host fetches the key and checks it; the nodes get it over SSH), or an offline
/// node bundle on this machine (`bundle`), with the cluster's images pulled from mirrors
/// (`mirrors`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PackagesConfig {
    /// Base URL of the repository (a mirror, for offline installs).
    pub repository: String,
    /// The OpenPGP fingerprint of the repository's signing key (40 hex digits; spaces allowed).
    pub key_fingerprint: String,
    /// The apt package that provides containerd: Debian's `containerd`, or `containerd.io`
    /// from Docker's repository (set up on the image) when Debian's is older than the
    /// Kubernetes release supports.
    pub containerd: String,
    /// An offline node bundle (a directory with `VERSION`, `SHA256SUMS`, `bin/`, `cni/`,
    /// `images/`; `scripts/node-bundle.sh` makes one): kubeadm, kubelet, kubectl and the CNI
    /// plugins are installed from it over SSH instead of from `repository`, the cluster's
    /// images are built from it and pushed to `mirrors`, and Flannel's manifest is read from
    /// it. `~` is expanded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<PathBuf>,
    /// Registries whose pulls go to a mirror first, on every node (containerd's
    /// `hosts.toml`): `{ "registry.k8s.io" = "http://192.168.122.1:5000" }`. With a bundle,
    /// the images of each mirrored registry are pushed to its mirror.
    pub mirrors: std::collections::BTreeMap<String, String>,
}

impl Default for PackagesConfig {
    fn default() -> Self {
        Self {
            repository: "https://pkgs.k8s.io/core:/stable:".into(),
            key_fingerprint: "DE15B14486CD377B9E876E1A234654DA9A296436".into(),
            containerd: "containerd".into(),
            bundle: None,
            mirrors: std::collections::BTreeMap::new(),
        }
    }
}

/// SSH access to the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SshConfig {
    /// The login user created on every node by cloud-init (with passwordless sudo).
    pub user: String,
    /// Private key used to log in (`~` is expanded).
    pub private_key: PathBuf,
    /// Public key installed on the nodes (`~` is expanded).
    pub public_key: PathBuf,
    /// known_hosts file the tools record node host keys in (trust on first use).
    pub known_hosts: PathBuf,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            user: "homelab".into(),
            private_key: "~/.ssh/id_ed25519".into(),
            public_key: "~/.ssh/id_ed25519.pub".into(),
            known_hosts: "~/.config/homelab/known_hosts".into(),
        }
    }
}

/// Role of a node in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    /// Runs the Kubernetes control plane (API server, etcd, scheduler, controller manager).
    ControlPlane,
    /// Runs workloads.
    Worker,
}

/// One machine of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Node {
    /// Host name and libvirt domain name: a DNS label, unique.
    pub name: String,
    /// `control-plane` or `worker`.
    pub role: NodeRole,
    /// Virtual CPUs (the control plane needs at least 2).
    pub vcpus: u32,
    /// Memory, e.g. "8GiB" (the control plane needs at least 1900MiB: kubeadm wants 1700 MB as the guest reports it).
    pub memory: Mebibytes,
    /// Disk size of the node's overlay, e.g. "50GiB".
    pub disk: Mebibytes,
    /// Static IPv4 address inside `network.nat_cidr`.
    pub ip: Ipv4Addr,
    /// MAC address of the node's interface; derived from the IP when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddress>,
}

impl Default for Node {
    fn default() -> Self {
        Self {
            name: String::new(),
            role: NodeRole::Worker,
            vcpus: 2,
            memory: Mebibytes::gib(4),
            disk: Mebibytes::gib(30),
            ip: Ipv4Addr::UNSPECIFIED,
            mac: None,
        }
    }
}

fn default_nodes() -> Vec<Node> {
    let worker = |name: &str, last: u8| Node {
        name: name.into(),
        role: NodeRole::Worker,
        vcpus: 2,
        memory: Mebibytes::gib(4),
        disk: Mebibytes::gib(30),
        ip: Ipv4Addr::new(192, 168, 122, last),
        mac: None,
    };
    vec![
        Node {
            name: "k8s-cp-1".into(),
            role: NodeRole::ControlPlane,
            vcpus: 4,
            memory: Mebibytes::gib(8),
            disk: Mebibytes::gib(50),
            ip: Ipv4Addr::new(192, 168, 122, 10),
            mac: None,
        },
        worker("k8s-worker-1", 11),
        worker("k8s-worker-2", 12),
    ]
}

/// Addresses of the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct NetworkConfig {
    /// Name of the libvirt NAT network.
    pub name: String,
    /// Linux bridge of the NAT network (at most 15 characters).
    pub bridge: String,
    /// The NAT network the nodes live on.
    #[schemars(with = "String")]
    pub nat_cidr: Ipv4Net,
    /// Gateway (the host's address on the NAT network), also the nodes' DNS server.
    pub gateway: Ipv4Addr,
    /// Pod network (Flannel), must not overlap the service or NAT networks.
    #[schemars(with = "String")]
    pub pod_cidr: Ipv4Net,
    /// Service network, must not overlap the pod or NAT networks.
    #[schemars(with = "String")]
    pub service_cidr: Ipv4Net,
    /// Addresses MetalLB hands to LoadBalancer services, inside `nat_cidr`.
    pub metallb_range: IpRange,
    /// Fixed load-balancer addresses, inside `metallb_range`.
    pub load_balancer_ips: LoadBalancerIps,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            name: "homelab".into(),
            bridge: "virbr-homelab".into(),
            nat_cidr: Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 122, 0), 24),
            gateway: Ipv4Addr::new(192, 168, 122, 1),
            pod_cidr: Ipv4Net::new_assert(Ipv4Addr::new(10, 244, 0, 0), 16),
            service_cidr: Ipv4Net::new_assert(Ipv4Addr::new(10, 96, 0, 0), 12),
            metallb_range: IpRange {
                start: Ipv4Addr::new(192, 168, 122, 100),
                end: Ipv4Addr::new(192, 168, 122, 150),
            },
            load_balancer_ips: LoadBalancerIps::default(),
        }
    }
}

/// Fixed LoadBalancer addresses of the platform's front doors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct LoadBalancerIps {
    /// The ingress controller.
    pub ingress: Ipv4Addr,
    /// Harbor.
    pub harbor: Ipv4Addr,
    /// ArgoCD's server.
    pub argocd: Ipv4Addr,
}

impl Default for LoadBalancerIps {
    fn default() -> Self {
        Self {
            ingress: Ipv4Addr::new(192, 168, 122, 100),
            harbor: Ipv4Addr::new(192, 168, 122, 101),
            argocd: Ipv4Addr::new(192, 168, 122, 102),
        }
    }
}

/// Virtualization type of the domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    /// `kvm` when the host's KVM really runs guests, else `qemu`.
    Auto,
    /// Hardware virtualization.
    Kvm,
    /// Software emulation (TCG).
    Qemu,
}

/// Where and how the virtual machines run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct LibvirtConfig {
    /// libvirt connection URI, e.g. `qemu:///system` or `qemu+ssh://host/system`.
    pub uri: String,
    /// Name of the storage pool (a directory pool).
    pub pool_name: String,
    /// Directory of the storage pool.
    pub pool_path: PathBuf,
    /// Base image the node overlays are made on (qcow2 or raw).
    pub base_image: PathBuf,
    /// Build the base image with debootstrap when it does not exist (with its kernel and
    /// initrd beside it, booted directly).
    pub build_base_image: bool,
    /// Debian mirror the base image is built from (an offline mirror works).
    pub image_mirror: String,
    /// Kernel for direct kernel boot; unset: boot the image's own boot loader, or the
    /// built image's kernel when `build_base_image` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk for direct kernel boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line for direct kernel boot.
    pub kernel_cmdline: String,
    /// `auto`, `kvm` or `qemu`.
    pub domain_type: DomainType,
}

impl Default for LibvirtConfig {
    fn default() -> Self {
        Self {
            uri: "qemu:///system".into(),
            pool_name: "homelab".into(),
            pool_path: "/var/lib/libvirt/images/homelab".into(),
            base_image: "/var/lib/libvirt/images/homelab/debian-12-base.qcow2".into(),
            build_base_image: true,
            image_mirror: "http://deb.debian.org/debian".into(),
            kernel: None,
            initrd: None,
            kernel_cmdline: "root=/dev/vda rw console=ttyS0 net.ifnames=0".into(),
            domain_type: DomainType::Auto,
        }
    }
}

/// Pinned versions of the platform's components (never "latest").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ComponentVersions {
    /// Flannel CNI.
    pub flannel: PinnedVersion,
    /// sha256 of Flannel's release manifest (kube-flannel.yml) of that version; the manifest
    /// is applied only when it matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flannel_manifest_sha256: Option<String>,
    /// Where Flannel's manifest is read from instead of that release on GitHub: an
    /// `http(s)://` URL of a mirror, or an absolute path on this machine (offline installs).
    /// Checked like the download: against the pin, else the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flannel_manifest: Option<String>,
    /// MetalLB.
    pub metallb: PinnedVersion,
    /// ingress-nginx Helm chart.
    pub ingress_nginx: PinnedVersion,
    /// cert-manager.
    pub cert_manager: PinnedVersion,
    /// External Secrets Operator Helm chart.
    pub external_secrets: PinnedVersion,
    /// The Argo CD release the platform bootstrap installs (its `manifests/install.yaml`), a
    /// tag such as `v3.2.0`.
    pub argocd: PinnedVersion,
    /// The argo-cd Helm chart whose appVersion is that release (9.1.0 ships v3.2.0), for
    /// when Argo CD manages itself from the GitOps repository.
    pub argocd_chart: PinnedVersion,
    /// sha256 of that release's `install.yaml`; the bootstrap applies it only when it
    /// matches. Without it, the digest homelab knows for its default release
    /// ([`ComponentVersions::argocd_pin`]), else the one `homelab.lock` recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argocd_manifest_sha256: Option<String>,
    /// Where Argo CD's `install.yaml` is read from instead of that release's tag on GitHub:
    /// an `http(s)://` URL of a mirror, or an absolute path on this machine (offline
    /// installs). Checked like the download: against the pin, else the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argocd_manifest: Option<String>,
    /// Harbor Helm chart.
    pub harbor: PinnedVersion,
    /// Actions Runner Controller (gha-runner-scale-set) charts.
    pub actions_runner_controller: PinnedVersion,
    /// local-path-provisioner.
    pub local_path_provisioner: PinnedVersion,
    /// kube-prometheus-stack Helm chart (Prometheus, Alertmanager, Grafana, the Prometheus
    /// operator; `features.monitoring`).
    pub kube_prometheus_stack: PinnedVersion,
    /// Loki Helm chart (grafana-community; `features.monitoring`).
    pub loki: PinnedVersion,
    /// Grafana Alloy Helm chart, the log shipper (`features.monitoring`).
    pub alloy: PinnedVersion,
    /// Tekton Pipelines release (`features.cicd`).
    pub tekton_pipelines: PinnedVersion,
    /// Tekton Triggers release, with its interceptors (`features.cicd`).
    pub tekton_triggers: PinnedVersion,
}

/// The Argo CD release of the embedded default (the appVersion of the argo-cd chart 9.1.0).
pub const ARGOCD_RELEASE: &str = "v3.2.0";

/// sha256 of [`ARGOCD_RELEASE`]'s `manifests/install.yaml`, the bytes of the file at that tag
/// (as GitHub serves it raw, and as the Go module proxy serves it in the module
/// `github.com/argoproj/argo-cd/v3`).
pub const ARGOCD_MANIFEST_SHA256: &str =
    "51299a0ff760849a4b92bb6c0044875bc17f0725c0a475203cd555457b2e38a4";

fn pinned(text: &str) -> PinnedVersion {
    // Only called with the literals below; a unit test parses every one of them.
    PinnedVersion::new_unchecked(text)
}

impl ComponentVersions {
    /// The digest Argo CD's install manifest must have: the pin in the file, else the one
    /// homelab knows for [`ARGOCD_RELEASE`], else none (the lock file records it).
    pub fn argocd_pin(&self) -> Option<&str> {
        self.argocd_manifest_sha256
            .as_deref()
            .or_else(|| (self.argocd.as_str() == ARGOCD_RELEASE).then_some(ARGOCD_MANIFEST_SHA256))
    }
}

impl Default for ComponentVersions {
    fn default() -> Self {
        Self {
            flannel: pinned("v0.27.4"),
            flannel_manifest_sha256: None,
            flannel_manifest: None,
            metallb: pinned("v0.15.2"),
            ingress_nginx: pinned("4.13.3"),
            cert_manager: pinned("v1.19.1"),
            external_secrets: pinned("0.20.4"),
            argocd: pinned(ARGOCD_RELEASE),
            argocd_chart: pinned("9.1.0"),
            argocd_manifest_sha256: None,
            argocd_manifest: None,
            harbor: pinned("1.18.0"),
            actions_runner_controller: pinned("0.13.0"),
            local_path_provisioner: pinned("v0.0.32"),
            kube_prometheus_stack: pinned("88.5.3"),
            loki: pinned("18.11.0"),
            alloy: pinned("1.11.1"),
            tekton_pipelines: pinned("v1.15.0"),
            tekton_triggers: pinned("v0.37.0"),
        }
    }
}

/// The Harbor registry deployed on the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct HarborConfig {
    /// External URL of Harbor.
    pub url: String,
    /// Project the platform's images live in.
    pub project: String,
    /// Harbor's admin password.
    pub admin_password: SecretRef,
    /// Namespaces that pull the project's images: each gets the pull Secret `harbor-pull`
    /// of a pull-only robot account (created when missing).
    pub pull_namespaces: Vec<String>,
    /// Persistent volume sizes.
    pub storage: HarborStorage,
}

impl Default for HarborConfig {
    fn default() -> Self {
        Self {
            url: "https://harbor.homelab.lan".into(),
            project: "homelab".into(),
            admin_password: SecretRef::Env("HARBOR_ADMIN_PASSWORD".into()),
            pull_namespaces: vec!["default".into()],
            storage: HarborStorage::default(),
        }
    }
}

/// etcd snapshots: taken before every upgrade and by `homelab backup create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct BackupsConfig {
    /// Directory on this host the snapshots are copied into (mode 0600 files); a relative
    /// path is relative to the configuration file's directory.
    pub dir: String,
    /// Snapshots kept (the newest; older ones are removed after each new snapshot).
    pub keep: u32,
    /// Snapshots older than this are removed whatever their number.
    pub max_age: HumanDuration,
    /// With `features.backups`: when the control plane snapshots etcd itself (cron, UTC), a
    /// `CronJob` of the GitOps repository.
    pub schedule: String,
    /// With `features.backups`: where those snapshots are kept on the control-plane node
    /// (the newest `keep`).
    pub node_dir: String,
    /// With `features.backups`: an S3-compatible bucket each scheduled snapshot is also
    /// copied to, off the node (the newest `keep` are kept there too).
    pub s3: Option<BackupsS3>,
}

/// An S3-compatible bucket for the scheduled etcd snapshots. Its credentials are never in
/// this file: they are the Secret `kube-system/etcd-backup-s3` (keys `access_key_id`,
/// `secret_access_key`), which the secrets layer delivers from ESC's `backups.s3` object
/// (`accessKeyId`, `secretAccessKey`) or which is created by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct BackupsS3 {
    /// The service's URL (`https://s3.eu-central-1.amazonaws.com`, another S3-compatible service's).
    pub endpoint: String,
    /// The bucket (it must exist).
    pub bucket: String,
    /// The key prefix the snapshots are written under (`etcd` → `etcd/etcd-<time>.db`).
    pub prefix: String,
    /// The region the service expects in signatures.
    pub region: String,
    /// Allow an `http://` endpoint (the snapshot travels unencrypted).
    pub plain_http: bool,
}

impl Default for BackupsS3 {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            bucket: String::new(),
            prefix: "etcd".into(),
            region: "us-east-1".into(),
            plain_http: false,
        }
    }
}

impl Default for BackupsConfig {
    fn default() -> Self {
        Self {
            dir: "backups".into(),
            keep: 7,
            max_age: HumanDuration(std::time::Duration::from_secs(30 * 24 * 3600)),
            schedule: "0 3 * * *".into(),
            node_dir: "/var/backups/etcd".into(),
            s3: None,
        }
    }
}

/// Persistent volume sizes of Harbor's parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct HarborStorage {
    /// Image blobs.
    pub registry: Quantity,
    /// PostgreSQL.
    pub database: Quantity,
    /// Redis.
    pub redis: Quantity,
    /// Job service logs.
    pub jobservice: Quantity,
    /// Trivy's vulnerability database.
    pub trivy: Quantity,
}

fn quantity(text: &str) -> Quantity {
    // Only called with the literals below; a unit test parses every one of them.
    Quantity::new_unchecked(text)
}

impl Default for HarborStorage {
    fn default() -> Self {
        Self {
            registry: quantity("50Gi"),
            database: quantity("5Gi"),
            redis: quantity("1Gi"),
            jobservice: quantity("1Gi"),
            trivy: quantity("5Gi"),
        }
    }
}

/// Pulumi ESC, where the platform's secrets come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct EscConfig {
    /// Pulumi organization.
    pub organization: String,
    /// ESC project.
    pub project: String,
    /// ESC environment within the project.
    pub environment: String,
    /// Pulumi access token.
    pub token: SecretRef,
    /// The Pulumi Cloud API (a self-hosted service's URL instead).
    pub api_url: String,
}

impl Default for EscConfig {
    fn default() -> Self {
        Self {
            organization: String::new(),
            project: "homelab".into(),
            environment: "dev".into(),
            token: SecretRef::Env("PULUMI_ACCESS_TOKEN".into()),
            api_url: "https://api.pulumi.com".into(),
        }
    }
}

/// GitHub account and self-hosted runners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct GithubConfig {
    /// User or organization that owns the repositories.
    pub owner: String,
    /// Token (or GitHub App key) Actions Runner Controller registers runners with.
    pub token: SecretRef,
    /// One runner scale set per repository (`[[github.runners]]`).
    pub runners: Vec<RunnerRepo>,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            owner: String::new(),
            token: SecretRef::Env("GITHUB_TOKEN".into()),
            runners: Vec::new(),
        }
    }
}

/// Runners for one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct RunnerRepo {
    /// Repository name (without the owner).
    pub name: String,
    /// Runners kept idle.
    pub min: u32,
    /// Upper bound of runners.
    pub max: u32,
}

impl Default for RunnerRepo {
    fn default() -> Self {
        Self {
            name: String::new(),
            min: 0,
            max: 3,
        }
    }
}

/// The GitOps repository ArgoCD follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct GitopsConfig {
    /// Clone URL (https or ssh); never with credentials in it.
    pub repo_url: String,
    /// Branch ArgoCD tracks.
    pub branch: String,
    /// Directory inside the repository holding the root application.
    pub path: String,
    /// The DNS domain applications answer under: `homelab-gitops add-app NAME --template`
    /// gives the application's Ingress the host `NAME.<apps_domain>`.
    pub apps_domain: String,
}

impl Default for GitopsConfig {
    fn default() -> Self {
        Self {
            repo_url: String::new(),
            branch: "main".into(),
            path: "bootstrap".into(),
            apps_domain: "homelab.lan".into(),
        }
    }
}

/// Timeout and retries of one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PhaseSettings {
    /// How long the phase may take before it fails.
    pub timeout: HumanDuration,
    /// How often a failed step is retried (with backoff).
    pub retries: u32,
}

impl PhaseSettings {
    const fn minutes(minutes: u64, retries: u32) -> Self {
        Self {
            timeout: HumanDuration(Duration::from_secs(minutes * 60)),
            retries,
        }
    }
}

impl Default for PhaseSettings {
    fn default() -> Self {
        Self::minutes(20, 2)
    }
}

/// Timeouts and retries per phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Phases {
    /// Creating the VMs and waiting for SSH.
    pub vms: PhaseSettings,
    /// Preparing the nodes: swap, modules, sysctls, containerd, the Kubernetes packages.
    pub nodes: PhaseSettings,
    /// kubeadm init/join, the kubeconfig, the pod network, every node Ready.
    pub cluster: PhaseSettings,
    /// The declared secrets from Pulumi ESC into the cluster (with `[esc]`).
    pub secrets: PhaseSettings,
    /// Platform components, wave by wave.
    pub platform: PhaseSettings,
    /// GitOps bootstrap and sync.
    pub gitops: PhaseSettings,
}

impl Default for Phases {
    fn default() -> Self {
        Self {
            vms: PhaseSettings::minutes(20, 2),
            nodes: PhaseSettings::minutes(30, 2),
            cluster: PhaseSettings::minutes(30, 2),
            secrets: PhaseSettings::minutes(5, 3),
            platform: PhaseSettings::minutes(30, 3),
            gitops: PhaseSettings::minutes(20, 3),
        }
    }
}

/// Optional parts of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent on/off switches of the file"
)]
pub struct Features {
    /// External Secrets Operator fed from Pulumi ESC (needs `[esc]`).
    pub external_secrets: bool,
    /// GitHub Actions runners (needs `[github]` with runners).
    pub runners: bool,
    /// Monitoring: kube-prometheus-stack (Prometheus, Alertmanager, Grafana), Loki and the
    /// Alloy log shipper, through the GitOps repository (needs `[gitops]`).
    pub monitoring: bool,
    /// Backups of etcd and volumes.
    pub backups: bool,
    /// CI/CD: Tekton Pipelines and Triggers through the GitOps repository (needs `[gitops]`).
    pub cicd: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster: ClusterConfig::default(),
            ssh: SshConfig::default(),
            network: NetworkConfig::default(),
            libvirt: LibvirtConfig::default(),
            versions: ComponentVersions::default(),
            packages: PackagesConfig::default(),
            harbor: HarborConfig::default(),
            esc: None,
            github: None,
            gitops: None,
            backups: BackupsConfig::default(),
            phases: Phases::default(),
            features: Features::default(),
            nodes: default_nodes(),
        }
    }
}

impl Config {
    /// The nodes with the control-plane role.
    pub fn control_plane_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .filter(|n| n.role == NodeRole::ControlPlane)
    }

    /// The nodes with the worker role.
    pub fn worker_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == NodeRole::Worker)
    }
}
