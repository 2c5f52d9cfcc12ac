//! `[cluster] provider = "kind"`: the cluster is a Kind cluster (Kubernetes in containers) on
//! this machine, made by the `kind` CLI from a typed configuration: one node per `[[nodes]]`
//! entry and role, the ingress controller's ports 80 and 443 mapped from the control-plane
//! node to the host, the pod and service networks of `[network]`, and containerd reading
//! registry hosts from `/etc/containerd/certs.d` with the Harbor registry's `hosts.toml` in
//! every node. The admin kubeconfig is merged into `cluster.kubeconfig` under the cluster's
//! context, and the later phases (secrets, platform) run on it as on any other target.
//! `homelab destroy` deletes the Kind cluster only when its nodes carry this cluster's
//! [`OWNER_LABEL`], which homelab gives the nodes it creates.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::phase::{Change, Check, Event, Events, Phase, PhasePlan, PhaseReport, PhaseStatus};
use crate::{Error, Lab, inputs};

/// What went wrong with the Kind provider; each names the command, file or cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KindError {
    /// `kind` or the container engine is not on the PATH.
    #[error("{missing} not found: {INSTALL_HINT}")]
    Missing {
        /// What is missing (`kind`, `docker or podman`, or both).
        missing: String,
    },
    /// A command could not be started or talked to.
    #[error("{command}: {source}")]
    Run {
        /// The command line.
        command: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A command exited with a failure.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on standard error.
        stderr: String,
    },
    /// The Kind configuration could not be written as YAML.
    #[error("the Kind configuration: {0}")]
    Config(#[source] serde_norway::Error),
    /// Kind's kubeconfig names no API server.
    #[error("kind's kubeconfig names no server")]
    NoServer,
    /// Kind's kubeconfig is not YAML.
    #[error("kind's kubeconfig does not parse: {0}")]
    Kubeconfig(#[source] serde_norway::Error),
    /// Merging it into the user's kubeconfig failed.
    #[error("merging the kubeconfig into {path}: {source}")]
    Merge {
        /// The user's kubeconfig.
        path: PathBuf,
        /// Why.
        #[source]
        source: kubeadm_boot::kubeconfig::KubeconfigError,
    },
    /// The cluster was not deleted: homelab cannot show that it made it.
    #[error("kind cluster {cluster} left alone: {why}")]
    LeftAlone {
        /// The cluster.
        cluster: String,
        /// Why.
        why: String,
    },
}

/// The Kubernetes node label homelab gives the nodes of the Kind clusters it creates (value:
/// the cluster's name); `homelab destroy` deletes only a cluster whose nodes carry it.
pub const OWNER_LABEL: &str = "homelab.dev/cluster";

/// The node image of a Kubernetes release (`kindest/node:v1.33.5`).
pub fn node_image(version: &str) -> String {
    format!("kindest/node:v{}", version.trim_start_matches('v'))
}

/// A Kind cluster configuration (`kind.x-k8s.io/v1alpha4` `Cluster`, the fields homelab
/// writes, named as in Kind's `pkg/apis/config/v1alpha4`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KindCluster {
    /// `Cluster`.
    pub kind: String,
    /// `kind.x-k8s.io/v1alpha4`.
    pub api_version: String,
    /// The cluster's name (its context is `kind-<name>` in Kind's own kubeconfig).
    pub name: String,
    /// The nodes, control plane first.
    pub nodes: Vec<KindNode>,
    /// Pod and service networks.
    pub networking: KindNetworking,
    /// TOML patches of every node's containerd configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containerd_config_patches: Vec<String>,
}

/// One node container of a [`KindCluster`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KindNode {
    /// `control-plane` or `worker`.
    pub role: String,
    /// The node image.
    pub image: String,
    /// Kubernetes labels of the node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Ports of the node container published on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_port_mappings: Vec<PortMapping>,
}

/// A port of a node container published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port in the node container.
    pub container_port: u16,
    /// The port on the host.
    pub host_port: u16,
    /// `TCP`.
    pub protocol: String,
}

/// A [`KindCluster`]'s networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KindNetworking {
    /// The pod network.
    pub pod_subnet: String,
    /// The service network.
    pub service_subnet: String,
}

/// containerd reads each registry's `hosts.toml` from `/etc/containerd/certs.d` (Kind's
/// documented way to give nodes registry mirrors).
pub const CONTAINERD_CONFIG_PATH_PATCH: &str =
    "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"";

/// The Kind configuration of `config`: a control-plane node (labelled `ingress-ready` with
/// ports 80 and 443 published, as Kind's ingress guide has it) and one worker per
/// `[[nodes]]` worker, at `cluster.kubernetes_version`, every node labelled with
/// [`OWNER_LABEL`].
pub fn cluster_config(config: &homelab_config::Config) -> KindCluster {
    let image = node_image(&config.cluster.kubernetes_version.to_string());
    let owner = BTreeMap::from([(OWNER_LABEL.to_owned(), config.cluster.name.clone())]);
    let mut control_plane_labels = owner.clone();
    control_plane_labels.insert("ingress-ready".into(), "true".into());
    let port = |p: u16| PortMapping {
        container_port: p,
        host_port: p,
        protocol: "TCP".into(),
    };
    let mut nodes = vec![KindNode {
        role: "control-plane".into(),
        image: image.clone(),
        labels: control_plane_labels,
        extra_port_mappings: vec![port(80), port(443)],
    }];
    let workers = config
        .nodes
        .iter()
        .filter(|n| n.role == homelab_config::NodeRole::Worker)
        .count();
    nodes.extend((0..workers).map(|_| KindNode {
        role: "worker".into(),
        image: image.clone(),
        labels: owner.clone(),
        extra_port_mappings: Vec::new(),
    }));
    KindCluster {
        kind: "Cluster".into(),
        api_version: "kind.x-k8s.io/v1alpha4".into(),
        name: config.cluster.name.clone(),
        nodes,
        networking: KindNetworking {
            pod_subnet: config.network.pod_cidr.to_string(),
            service_subnet: config.network.service_cidr.to_string(),
        },
        containerd_config_patches: vec![CONTAINERD_CONFIG_PATH_PATCH.into()],
    }
}

/// The `hosts.toml` every node gets for the Harbor registry of `[harbor] url` (its path on
/// the node, and the text), or `None` when the URL has no host.
pub fn registry_hosts(config: &homelab_config::Config) -> Option<(String, String)> {
    let registry = platform::registry::registry_of(&config.harbor.url).ok()?;
    let text = harbor_client::node::hosts_toml(
        &registry,
        &format!("https://{registry}"),
        &harbor_client::node::MirrorTls::System,
    );
    Some((harbor_client::node::hosts_toml_path(&registry), text))
}

/// The programs the Kind provider runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// `kind`.
    pub kind: PathBuf,
    /// The container engine Kind's nodes run in (`docker` or `podman`).
    pub engine: PathBuf,
}

/// What to install when a tool is missing.
pub const INSTALL_HINT: &str = "the Kind provider needs `kind` (https://kind.sigs.k8s.io/docs/user/quick-start/#installation) and a container engine, `docker` or `podman`, on the PATH";

fn on_path(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Tools {
    /// `kind` and `docker` (else `podman`) from the directories of `path` (`$PATH`).
    ///
    /// # Errors
    /// One is missing: the error names it and says what to install.
    pub fn find(path: Option<&OsStr>) -> Result<Self, Error> {
        let kind = on_path("kind", path);
        let engine = on_path("docker", path).or_else(|| on_path("podman", path));
        match (kind, engine) {
            (Some(kind), Some(engine)) => Ok(Self { kind, engine }),
            (kind, engine) => {
                let missing: Vec<&str> = [
                    kind.is_none().then_some("kind"),
                    engine.is_none().then_some("docker or podman"),
                ]
                .into_iter()
                .flatten()
                .collect();
                Err(KindError::Missing {
                    missing: missing.join(" and "),
                }
                .into())
            }
        }
    }

    /// From `$PATH`.
    ///
    /// # Errors
    /// As [`Tools::find`].
    pub fn from_env() -> Result<Self, Error> {
        Self::find(std::env::var_os("PATH").as_deref())
    }

    async fn run(
        &self,
        program: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, Error> {
        let shown = format!("{} {}", program.display(), args.join(" "));
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| KindError::Run {
                command: shown.clone(),
                source,
            })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .await
                .map_err(|source| KindError::Run {
                    command: shown.clone(),
                    source,
                })?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| KindError::Run {
                command: shown.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(KindError::Failed {
                command: shown,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            }
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The Kind clusters that exist (`kind get clusters`).
    ///
    /// # Errors
    /// `kind` fails.
    pub async fn clusters(&self) -> Result<Vec<String>, Error> {
        let out = self.run(&self.kind, &["get", "clusters"], None).await?;
        Ok(names(&out))
    }

    /// Creates the cluster of `config` (`kind create cluster --config -`), its kubeconfig
    /// written to `kubeconfig` (not the user's file: homelab merges it afterwards), waiting
    /// up to five minutes for the control plane.
    ///
    /// # Errors
    /// The configuration cannot be written, or `kind` fails.
    pub async fn create(&self, config: &KindCluster, kubeconfig: &Path) -> Result<(), Error> {
        let yaml = serde_norway::to_string(config).map_err(KindError::Config)?;
        let kubeconfig = kubeconfig.display().to_string();
        self.run(
            &self.kind,
            &[
                "create",
                "cluster",
                "--name",
                &config.name,
                "--config",
                "-",
                "--kubeconfig",
                &kubeconfig,
                "--wait",
                "5m",
            ],
            Some(&yaml),
        )
        .await?;
        Ok(())
    }

    /// The cluster's admin kubeconfig (`kind get kubeconfig`).
    ///
    /// # Errors
    /// `kind` fails.
    pub async fn kubeconfig(&self, name: &str) -> Result<String, Error> {
        self.run(&self.kind, &["get", "kubeconfig", "--name", name], None)
            .await
    }

    /// The node containers (`kind get nodes`).
    ///
    /// # Errors
    /// `kind` fails.
    pub async fn nodes(&self, name: &str) -> Result<Vec<String>, Error> {
        let out = self
            .run(&self.kind, &["get", "nodes", "--name", name], None)
            .await?;
        Ok(names(&out))
    }

    /// Writes `text` to `path` in node container `node` (through the engine's `exec`).
    ///
    /// # Errors
    /// The engine fails.
    pub async fn write_file(&self, node: &str, path: &str, text: &str) -> Result<(), Error> {
        let dir = Path::new(path)
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let script = format!(
            "mkdir -p {} && cat > {}",
            homelab_ssh::shell_quote(&dir),
            homelab_ssh::shell_quote(path)
        );
        self.run(
            &self.engine,
            &["exec", "-i", node, "sh", "-c", &script],
            Some(text),
        )
        .await?;
        Ok(())
    }

    /// Deletes the cluster (`kind delete cluster`).
    ///
    /// # Errors
    /// `kind` fails.
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        self.run(&self.kind, &["delete", "cluster", "--name", name], None)
            .await?;
        Ok(())
    }
}

/// The API server's address in a kubeconfig's first cluster.
fn server_of(kubeconfig: &str) -> Result<String, Error> {
    let doc: serde_norway::Value =
        serde_norway::from_str(kubeconfig).map_err(KindError::Kubeconfig)?;
    doc["clusters"][0]["cluster"]["server"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| KindError::NoServer.into())
}

const NAME: &str = "cluster";

/// The Kind provider's phase, in the place of the VM, node and cluster phases.
#[derive(Debug, Clone, Copy)]
pub struct KindPhase;

impl Phase for KindPhase {
    fn name(&self) -> &'static str {
        NAME
    }

    fn plan<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, Result<PhasePlan, Error>> {
        async move {
            let tools = Tools::from_env()?;
            let name = &lab.config.cluster.name;
            let exists = tools.clusters().await?.contains(name);
            let changes = if exists {
                Vec::new()
            } else {
                let config = cluster_config(&lab.config);
                vec![Change {
                    action: "create".into(),
                    object: format!("kind cluster {name}"),
                    detail: Some(format!(
                        "{} nodes, {}",
                        config.nodes.len(),
                        config.nodes[0].image
                    )),
                }]
            };
            Ok(PhasePlan {
                phase: NAME,
                unchanged: usize::from(exists),
                changes,
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
            let tools = Tools::from_env()?;
            let config = cluster_config(&lab.config);
            let name = config.name.clone();
            let say = |message: String| {
                events(Event::Progress {
                    phase: NAME,
                    message,
                });
            };
            let created = !tools.clusters().await?.contains(&name);
            if created {
                say(format!(
                    "kind create cluster {name} ({} nodes)",
                    config.nodes.len()
                ));
                let dir = tempfile::tempdir().map_err(|source| KindError::Run {
                    command: "a temporary directory for kind's kubeconfig".into(),
                    source,
                })?;
                tools
                    .create(&config, &dir.path().join("kubeconfig"))
                    .await?;
            }
            // The registry's hosts.toml in every node (again on every run: a node that was
            // recreated gets it too).
            if let Some((path, text)) = registry_hosts(&lab.config) {
                for node in tools.nodes(&name).await? {
                    tools.write_file(&node, &path, &text).await?;
                }
            }
            let admin = tools.kubeconfig(&name).await?;
            let file = inputs::kubeconfig_path(&lab.config);
            let context = lab.config.cluster.context_name();
            kubeadm_boot::kubeconfig::merge_into_file(&file, &admin, context, &server_of(&admin)?)
                .map_err(|source| KindError::Merge {
                    path: file.clone(),
                    source,
                })?;
            say(format!(
                "kubeconfig: context {context} in {}",
                file.display()
            ));
            // Then as any cluster homelab did not make: it must answer.
            let report = crate::cluster::ExistingCluster.apply(lab, events).await?;
            Ok(PhaseReport {
                changed: usize::from(created),
                unchanged: usize::from(!created),
                ..report
            })
        }
        .boxed()
    }

    fn status<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, PhaseStatus> {
        crate::cluster::ExistingCluster.status(lab)
    }

    fn verify<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, Vec<Check>> {
        crate::cluster::ExistingCluster.verify(lab)
    }
}

/// The names `kind get …` prints, one a line.
fn names(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Deletes the lab's Kind cluster when homelab made it: it exists and the API server reports
/// its nodes with [`OWNER_LABEL`] set to the cluster's name. Returns whether it was deleted.
///
/// # Errors
/// The tools are missing, `kind` fails, or the cluster exists but is not provably homelab's
/// (the error says why it was left alone).
pub async fn destroy(lab: &Lab) -> Result<bool, Error> {
    let tools = Tools::from_env()?;
    let name = &lab.config.cluster.name;
    if !tools.clusters().await?.contains(name) {
        return Ok(false);
    }
    let client = lab.kube_client().await?;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let listed = nodes
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|e| KindError::LeftAlone {
            cluster: name.clone(),
            why: format!("its nodes cannot be read to check it is homelab's: {e}"),
        })?;
    let owned = !listed.items.is_empty()
        && listed
            .items
            .iter()
            .all(|n| n.metadata.labels.as_ref().and_then(|l| l.get(OWNER_LABEL)) == Some(name));
    if !owned {
        return Err(KindError::LeftAlone {
            cluster: name.clone(),
            why: format!(
                "its nodes do not carry {OWNER_LABEL}={name}, so homelab did not create it"
            ),
        }
        .into());
    }
    tools.delete(name).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded default as Kind reads it (one control plane, two workers), against the
    /// committed file; `HOMELAB_UPDATE_GOLDEN=1` rewrites it.
    #[test]
    fn the_default_lab_is_one_control_plane_and_two_workers() {
        let config = cluster_config(&homelab_config::Config::default());
        let yaml = serde_norway::to_string(&config).unwrap();
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/kind-cluster.yaml");
        if std::env::var_os("HOMELAB_UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &yaml).unwrap();
        }
        assert_eq!(yaml, std::fs::read_to_string(&golden).unwrap());
        let roles: Vec<&str> = config.nodes.iter().map(|n| n.role.as_str()).collect();
        assert_eq!(roles, ["control-plane", "worker", "worker"]);
        assert!(
            config
                .nodes
                .iter()
                .all(|n| n.labels[OWNER_LABEL] == "homelab")
        );
        assert_eq!(config.nodes[0].extra_port_mappings.len(), 2);
        // It reads back as the same typed configuration.
        let back: KindCluster = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn a_missing_tool_is_named_with_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let err = Tools::find(Some(empty.path().as_os_str()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("kind and docker or podman not found"), "{err}");
        assert!(
            err.contains("https://kind.sigs.k8s.io/docs/user/quick-start/#installation"),
            "{err}"
        );
        let registry = registry_hosts(&homelab_config::Config::default()).unwrap();
        assert_eq!(
            registry.0,
            "/etc/containerd/certs.d/harbor.homelab.lan/hosts.toml"
        );
        assert!(
            registry
                .1
                .contains("server = \"https://harbor.homelab.lan\""),
            "{}",
            registry.1
        );
    }
}
