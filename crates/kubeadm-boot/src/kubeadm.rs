//! kubeadm's configuration files as types: InitConfiguration, ClusterConfiguration,
//! JoinConfiguration (`kubeadm.k8s.io/v1beta3` before Kubernetes 1.31, `v1beta4` from 1.31)
//! and KubeletConfiguration, all rendered from one typed spec.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// A Kubernetes release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Major (1).
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for Version {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ConfigError::Version(s.to_owned());
        let parts: Vec<u32> = s
            .trim()
            .trim_start_matches('v')
            .split('.')
            .map(|p| p.parse().map_err(|_| err()))
            .collect::<Result<_, _>>()?;
        match parts[..] {
            [major, minor, patch] => Ok(Self {
                major,
                minor,
                patch,
            }),
            _ => Err(err()),
        }
    }
}

impl Version {
    /// The kubeadm configuration API for this release.
    pub fn api(&self) -> KubeadmApi {
        if (self.major, self.minor) >= (1, 31) {
            KubeadmApi::V1Beta4
        } else {
            KubeadmApi::V1Beta3
        }
    }

    /// The pkgs.k8s.io channel, e.g. `v1.33`.
    pub fn channel(&self) -> String {
        format!("v{}.{}", self.major, self.minor)
    }
}

/// The kubeadm configuration API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KubeadmApi {
    /// `kubeadm.k8s.io/v1beta3` (Kubernetes 1.22–1.30).
    V1Beta3,
    /// `kubeadm.k8s.io/v1beta4` (Kubernetes 1.31 and later).
    V1Beta4,
}

impl KubeadmApi {
    /// The `apiVersion` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1Beta3 => "kubeadm.k8s.io/v1beta3",
            Self::V1Beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }
}

/// A kubeadm configuration problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not MAJOR.MINOR.PATCH.
    #[error("`{0}` is not a Kubernetes version (MAJOR.MINOR.PATCH)")]
    Version(String),
    /// A bootstrap token must look like `abcdef.0123456789abcdef`.
    #[error(
        "a bootstrap token is six characters [a-z0-9], a dot, then sixteen (the token itself is not shown)"
    )]
    Token,
    /// The YAML could not be written.
    #[error("cannot write kubeadm YAML: {0}")]
    Yaml(#[source] serde_norway::Error),
}

/// A kubeadm bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`); never printed.
#[derive(Clone)]
pub struct BootstrapToken(SecretString);

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BootstrapToken([REDACTED])")
    }
}

impl BootstrapToken {
    /// Parses and checks the format.
    ///
    /// # Errors
    /// The text is not a token.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let ok = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        match text.trim().split_once('.') {
            Some((id, secret)) if ok(id, 6) && ok(secret, 16) => {
                Ok(Self(SecretString::from(text.trim().to_owned())))
            }
            _ => Err(ConfigError::Token),
        }
    }

    /// A new random token.
    pub fn generate() -> Self {
        use rand::RngExt;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect()
        };
        let token = format!("{}.{}", pick(6), pick(16));
        Self(SecretString::from(token))
    }

    /// The public id part (before the dot), safe to show.
    pub fn id(&self) -> &str {
        self.0.expose_secret().split('.').next().unwrap_or("")
    }

    /// The whole token, for writing into a 0600 file or standard input.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for BootstrapToken {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

/// The containerd socket kubeadm talks to on every node.
pub const CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";

/// The pod network [`KubeadmSpec::new`] gives (Flannel's default).
pub const DEFAULT_POD_CIDR: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 244, 0, 0), 16);

/// The service network [`KubeadmSpec::new`] gives (kubeadm's default).
pub const DEFAULT_SERVICE_CIDR: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 96, 0, 0), 12);

/// The one typed description of a kubeadm cluster that all configuration files come from.
///
/// Built with [`KubeadmSpec::new`] and its setters; the fields stay readable and writable.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KubeadmSpec {
    /// Cluster name (`clusterName`).
    pub name: String,
    /// Kubernetes release.
    pub version: Version,
    /// `host:port` every node reaches the API server at.
    pub control_plane_endpoint: String,
    /// Pod network.
    pub pod_cidr: Ipv4Net,
    /// Service network.
    pub service_cidr: Ipv4Net,
    /// Registry the control-plane images come from, when not the default.
    pub image_repository: Option<String>,
    /// Container runtime socket.
    pub cri_socket: String,
    /// The nodes are slow (software emulation, or small boards): etcd gets a longer heartbeat
    /// and election timeout, kubeadm waits longer for the control plane, and the control
    /// plane's probes are relaxed ([`SLOW_NODE_PATCHES`]) so that a loaded node is not taken
    /// for a dead one and restarted in a loop.
    pub slow_nodes: bool,
}

impl KubeadmSpec {
    /// The cluster `name` at Kubernetes `version`, its API server reached at
    /// `control_plane_endpoint` (`host:port`); with the project's defaults: pods on
    /// [`DEFAULT_POD_CIDR`], services on [`DEFAULT_SERVICE_CIDR`], kubeadm's image registry,
    /// containerd ([`CRI_SOCKET`]), nodes not slow.
    pub fn new(
        name: impl Into<String>,
        version: Version,
        control_plane_endpoint: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            version,
            control_plane_endpoint: control_plane_endpoint.into(),
            pod_cidr: DEFAULT_POD_CIDR,
            service_cidr: DEFAULT_SERVICE_CIDR,
            image_repository: None,
            cri_socket: CRI_SOCKET.into(),
            slow_nodes: false,
        }
    }

    /// Sets the pod network.
    #[must_use]
    pub fn pod_cidr(mut self, pod_cidr: Ipv4Net) -> Self {
        self.pod_cidr = pod_cidr;
        self
    }

    /// Sets the service network.
    #[must_use]
    pub fn service_cidr(mut self, service_cidr: Ipv4Net) -> Self {
        self.service_cidr = service_cidr;
        self
    }

    /// Sets the registry the control-plane images come from (`None`: kubeadm's default).
    #[must_use]
    pub fn image_repository(mut self, image_repository: Option<String>) -> Self {
        self.image_repository = image_repository;
        self
    }

    /// Sets the container runtime socket.
    #[must_use]
    pub fn cri_socket(mut self, cri_socket: impl Into<String>) -> Self {
        self.cri_socket = cri_socket.into();
        self
    }

    /// Sets whether the nodes are slow (see the field).
    #[must_use]
    pub fn slow_nodes(mut self, slow_nodes: bool) -> Self {
        self.slow_nodes = slow_nodes;
        self
    }
}

/// Where the kubeadm patches for slow nodes are written (`patches.directory`).
pub const PATCHES_DIR: &str = "/etc/kubernetes/homelab/patches";

/// Strategic-merge patches kubeadm applies to the control plane's static pods on slow nodes
/// (file name: kubeadm's `target[suffix][+patchtype].yaml`): each component's liveness,
/// readiness and startup probes wait up to a minute per probe and tolerate several minutes of
/// failures before the kubelet restarts it. Measured under software emulation: with kubeadm's
/// defaults, etcd's fsyncs and the API server's start took long enough that the kubelet killed
/// a working API server while the pod network started.
pub const SLOW_NODE_PATCHES: &[(&str, &str)] = &[
    ("etcd0+strategic.yaml", "etcd"),
    ("kube-apiserver0+strategic.yaml", "kube-apiserver"),
    (
        "kube-controller-manager0+strategic.yaml",
        "kube-controller-manager",
    ),
    ("kube-scheduler0+strategic.yaml", "kube-scheduler"),
];

/// The patch for one control-plane container on slow nodes.
pub fn slow_node_patch(container: &str) -> String {
    format!(
        "# Written by homelab: relaxed probes for slow nodes.\n\
         spec:\n\
         \x20 containers:\n\
         \x20 - name: {container}\n\
         \x20   livenessProbe:\n\
         \x20     timeoutSeconds: 60\n\
         \x20     periodSeconds: 20\n\
         \x20     failureThreshold: 30\n\
         \x20   startupProbe:\n\
         \x20     timeoutSeconds: 60\n\
         \x20     periodSeconds: 20\n\
         \x20     failureThreshold: 60\n"
    )
}

/// One node's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KubeadmNode {
    /// Node name.
    pub name: String,
    /// Its address (the API server advertises it on a control plane; the kubelet's node-ip).
    pub address: Ipv4Addr,
}

impl KubeadmNode {
    /// The node `name` at `address`.
    pub fn new(name: impl Into<String>, address: Ipv4Addr) -> Self {
        Self {
            name: name.into(),
            address,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    api_version: &'static str,
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ExtraArgs {
    Map(std::collections::BTreeMap<String, String>),
    List(Vec<Arg>),
}

#[derive(Serialize)]
struct Arg {
    name: String,
    value: String,
}

fn extra_args(api: KubeadmApi, args: &[(&str, String)]) -> ExtraArgs {
    match api {
        KubeadmApi::V1Beta3 => ExtraArgs::Map(
            args.iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        ),
        KubeadmApi::V1Beta4 => ExtraArgs::List(
            args.iter()
                .map(|(k, v)| Arg {
                    name: (*k).to_owned(),
                    value: v.clone(),
                })
                .collect(),
        ),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeRegistration {
    name: String,
    cri_socket: String,
    kubelet_extra_args: ExtraArgs,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitConfiguration {
    #[serde(flatten)]
    meta: Meta,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bootstrap_tokens: Vec<TokenXml>,
    node_registration: NodeRegistration,
    #[serde(rename = "localAPIEndpoint")]
    local_api_endpoint: LocalApiEndpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    patches: Option<Patches>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeouts: Option<Timeouts>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Patches {
    directory: &'static str,
}

/// v1beta4's `timeouts` (v1beta3 has only `apiServer.timeoutForControlPlane`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Timeouts {
    control_plane_component_health_check: &'static str,
    kubelet_health_check: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenXml {
    token: String,
    ttl: &'static str,
    usages: [&'static str; 2],
    groups: [&'static str; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LocalApiEndpoint {
    advertise_address: String,
    bind_port: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterConfiguration {
    #[serde(flatten)]
    meta: Meta,
    cluster_name: String,
    kubernetes_version: String,
    control_plane_endpoint: String,
    networking: Networking,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd: Option<Etcd>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_server: Option<ApiServer>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Etcd {
    local: LocalEtcd,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LocalEtcd {
    extra_args: ExtraArgs,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiServer {
    timeout_for_control_plane: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Networking {
    pod_subnet: String,
    service_subnet: String,
    dns_domain: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfiguration {
    #[serde(flatten)]
    meta: Meta,
    cgroup_driver: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinConfiguration {
    #[serde(flatten)]
    meta: Meta,
    discovery: Discovery,
    node_registration: NodeRegistration,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Discovery {
    bootstrap_token: BootstrapDiscovery,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BootstrapDiscovery {
    api_server_endpoint: String,
    token: String,
    ca_cert_hashes: Vec<String>,
}

fn yaml<T: Serialize>(doc: &T) -> Result<String, ConfigError> {
    serde_norway::to_string(doc).map_err(ConfigError::Yaml)
}

fn registration(spec: &KubeadmSpec, node: &KubeadmNode) -> NodeRegistration {
    NodeRegistration {
        name: node.name.clone(),
        cri_socket: spec.cri_socket.clone(),
        kubelet_extra_args: extra_args(
            spec.version.api(),
            &[("node-ip", node.address.to_string())],
        ),
    }
}

fn kubelet() -> KubeletConfiguration {
    KubeletConfiguration {
        meta: Meta {
            api_version: "kubelet.config.k8s.io/v1beta1",
            kind: "KubeletConfiguration",
        },
        cgroup_driver: "systemd",
    }
}

/// The file for `kubeadm init --config`: InitConfiguration, ClusterConfiguration and
/// KubeletConfiguration. It holds the bootstrap token: upload it with mode 0600.
///
/// # Errors
/// YAML serialization fails (not expected).
pub fn init_config(
    spec: &KubeadmSpec,
    node: &KubeadmNode,
    token: Option<&BootstrapToken>,
) -> Result<String, ConfigError> {
    let api = spec.version.api();
    let init = InitConfiguration {
        meta: Meta {
            api_version: api.as_str(),
            kind: "InitConfiguration",
        },
        bootstrap_tokens: token
            .map(|t| TokenXml {
                token: t.expose().to_owned(),
                ttl: "2h0m0s",
                usages: ["signing", "authentication"],
                groups: ["system:bootstrappers:kubeadm:default-node-token"],
            })
            .into_iter()
            .collect(),
        node_registration: registration(spec, node),
        local_api_endpoint: LocalApiEndpoint {
            advertise_address: node.address.to_string(),
            bind_port: 6443,
        },
        patches: spec.slow_nodes.then_some(Patches {
            directory: PATCHES_DIR,
        }),
        timeouts: (spec.slow_nodes && api == KubeadmApi::V1Beta4).then_some(Timeouts {
            control_plane_component_health_check: "15m0s",
            kubelet_health_check: "15m0s",
        }),
    };
    let cluster = ClusterConfiguration {
        meta: Meta {
            api_version: api.as_str(),
            kind: "ClusterConfiguration",
        },
        cluster_name: spec.name.clone(),
        kubernetes_version: spec.version.to_string(),
        control_plane_endpoint: spec.control_plane_endpoint.clone(),
        networking: Networking {
            pod_subnet: spec.pod_cidr.to_string(),
            service_subnet: spec.service_cidr.to_string(),
            dns_domain: "cluster.local",
        },
        image_repository: spec.image_repository.clone(),
        // A single member: a long election timeout costs nothing, and etcd's request timeout
        // (5 s + twice the election timeout) then outlasts a slow disk's fsync.
        etcd: spec.slow_nodes.then(|| Etcd {
            local: LocalEtcd {
                extra_args: extra_args(
                    api,
                    &[
                        ("heartbeat-interval", "500".to_owned()),
                        ("election-timeout", "5000".to_owned()),
                    ],
                ),
            },
        }),
        api_server: (spec.slow_nodes && api == KubeadmApi::V1Beta3).then_some(ApiServer {
            timeout_for_control_plane: "15m0s",
        }),
    };
    Ok(format!(
        "{}---\n{}---\n{}",
        yaml(&init)?,
        yaml(&cluster)?,
        yaml(&kubelet())?
    ))
}

/// The file for `kubeadm join --config` on a worker: the JoinConfiguration alone (kubeadm
/// ignores every other document in a join file; a joining kubelet takes the cluster's
/// `kubelet-config`, which init wrote with the systemd cgroup driver). It holds the token:
/// upload it 0600.
///
/// # Errors
/// YAML serialization fails (not expected).
pub fn join_config(
    spec: &KubeadmSpec,
    node: &KubeadmNode,
    token: &BootstrapToken,
    ca_cert_hash: &str,
) -> Result<String, ConfigError> {
    let join = JoinConfiguration {
        meta: Meta {
            api_version: spec.version.api().as_str(),
            kind: "JoinConfiguration",
        },
        discovery: Discovery {
            bootstrap_token: BootstrapDiscovery {
                api_server_endpoint: spec.control_plane_endpoint.clone(),
                token: token.expose().to_owned(),
                ca_cert_hashes: vec![ca_cert_hash.to_owned()],
            },
        },
        node_registration: registration(spec, node),
    };
    yaml(&join)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::testing::cluster_spec as spec;

    #[test]
    fn api_version_follows_the_release() {
        assert_eq!(spec(30).version.api(), KubeadmApi::V1Beta3);
        assert_eq!(spec(31).version.api(), KubeadmApi::V1Beta4);
        assert_eq!("v1.33.5".parse::<Version>().unwrap().channel(), "v1.33");
        assert!("1.33".parse::<Version>().is_err());
    }

    #[test]
    fn the_join_file_is_the_join_configuration_alone() {
        let node = KubeadmNode::new("w1", Ipv4Addr::new(192, 168, 122, 11));
        for minor in [30, 33] {
            let text = join_config(
                &spec(minor),
                &node,
                &BootstrapToken::generate(),
                "sha256:00",
            )
            .unwrap();
            let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&text)
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .collect();
            assert_eq!(docs.len(), 1, "{text}");
            assert_eq!(docs[0]["kind"].as_str(), Some("JoinConfiguration"));
        }
    }

    #[test]
    fn tokens_have_the_kubeadm_format_and_never_print() {
        let t = BootstrapToken::generate();
        assert!(BootstrapToken::parse(t.expose()).is_ok());
        assert_eq!(t.id().len(), 6);
        assert!(!format!("{t:?}").contains(t.expose()));
        for bad in [
            "abcdef0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde!",
        ] {
            assert!(
                matches!(BootstrapToken::parse(bad), Err(ConfigError::Token)),
                "{bad}"
            );
        }
        let err = BootstrapToken::parse("abcdef.0123456789ABCDEF")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("0123456789"), "{err}");
    }

    /// The oracle: surrounding whitespace (as printed by `kubeadm token create`) aside,
    /// exactly 23 characters, the seventh a dot, every other one in `[a-z0-9]`.
    fn has_token_format(text: &str) -> bool {
        let chars: Vec<char> = text.trim().chars().collect();
        chars.len() == 23
            && chars.iter().enumerate().all(|(i, c)| {
                if i == 6 {
                    *c == '.'
                } else {
                    matches!(c, 'a'..='z' | '0'..='9')
                }
            })
    }

    proptest! {
        #[test]
        fn token_parser_accepts_exactly_the_format(id in "[a-z0-9]{6}", secret in "[a-z0-9]{16}", junk in "\\PC{0,30}") {
            let token = format!("{id}.{secret}");
            prop_assert!(BootstrapToken::parse(&token).is_ok());
            let valid = junk.len() == 23 && junk.as_bytes()[6] == b'.' && junk.bytes().enumerate().all(|(i, b)| i == 6 || b.is_ascii_lowercase() || b.is_ascii_digit());
            prop_assert_eq!(BootstrapToken::parse(&junk).is_ok(), valid);
        }

        /// Near misses: a valid token with one character replaced, removed or added, at any
        /// position, by any character (letters of both cases, digits, the dot, punctuation,
        /// whitespace and non-ASCII). The parser accepts exactly the results that still have
        /// the format, judged by an oracle written independently of the parser.
        #[test]
        fn token_parser_rejects_every_near_miss(
            id in "[a-z0-9]{6}",
            secret in "[a-z0-9]{16}",
            edit in 0u8..3,
            at in any::<prop::sample::Index>(),
            with in prop_oneof![
                prop::char::range('a', 'z'),
                prop::char::range('A', 'Z'),
                prop::char::range('0', '9'),
                prop::sample::select(vec!['.', '-', '_', ':', '/', ' ', '\t', '\n', 'é', 'ｚ', '\u{0}']),
            ],
        ) {
            let mut chars: Vec<char> = format!("{id}.{secret}").chars().collect();
            match edit {
                0 => { let i = at.index(chars.len()); chars[i] = with; }
                1 => { chars.remove(at.index(chars.len())); }
                _ => chars.insert(at.index(chars.len() + 1), with),
            }
            let text: String = chars.iter().collect();
            prop_assert_eq!(BootstrapToken::parse(&text).is_ok(), has_token_format(&text), "{:?}", text);
        }

        #[test]
        fn rendered_config_parses_back(minor in 25u32..40, third in 0u8..=255, pod_prefix in 8u8..=24) {
            let mut s = spec(minor);
            s.pod_cidr = Ipv4Net::new(Ipv4Addr::new(10, third, 0, 0), pod_prefix).unwrap().trunc();
            let node = KubeadmNode { name: "cp".into(), address: Ipv4Addr::new(192, 168, 122, 10) };
            let text = init_config(&s, &node, Some(&BootstrapToken::generate())).unwrap();
            let docs: Vec<serde_norway::Value> = text.split("---\n").map(|d| serde_norway::from_str(d).unwrap()).collect();
            prop_assert_eq!(docs.len(), 3);
            prop_assert_eq!(docs[0]["apiVersion"].as_str(), Some(s.version.api().as_str()));
            prop_assert_eq!(docs[1]["networking"]["podSubnet"].as_str().map(str::to_owned), Some(s.pod_cidr.to_string()));
            prop_assert_eq!(docs[1]["kubernetesVersion"].as_str().map(str::to_owned), Some(s.version.to_string()));
            prop_assert_eq!(docs[2]["cgroupDriver"].as_str(), Some("systemd"));
            prop_assert_eq!(docs[0]["localAPIEndpoint"]["advertiseAddress"].as_str(), Some("192.168.122.10"));
        }
    }
}
