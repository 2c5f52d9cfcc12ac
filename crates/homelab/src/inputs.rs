//! `homelab.toml` → each layer's own input types. The one place that knows both the
//! configuration and the layers; the layers take their inputs without knowing the file.

use std::path::PathBuf;
use std::time::Duration;

use homelab_config::{Config, DomainType, NodeRole, expand_home};
use homelab_ssh::{HostKeyPolicy, SshOptions, Target};
use kubeadm_boot::bootstrap::{BootstrapPlan, Node};
use kubeadm_boot::cluster::{API_PORT, CRI_SOCKET};
use kubeadm_boot::kubeadm::{KubeadmNode, KubeadmSpec, Version};
use kubeadm_boot::prepare::{PackageSource, RegistryHosts};
use libvirt_vm::image::{ImageFiles, ImageRecipe};
use libvirt_vm::{
    Access, BaseImage, BootMode, DiskFormat, DomainTypeChoice, Mac, NetworkSpec, PoolSpec,
    VmClusterSpec, VmSpec,
};

use crate::error::Error;

/// The port SSH listens on, on every node homelab makes.
pub const SSH_PORT: u16 = 22;

/// The image the scheduled etcd backup copies snapshots to S3 with (`[backups.s3]`).
pub const RCLONE_IMAGE: &str = "docker.io/rclone/rclone:1.68.2";

/// The VM layer's spec of `config`; `authorized_keys` are the public keys (the contents of
/// `ssh.public_key`) installed on the nodes.
pub fn vm_spec(config: &Config, authorized_keys: Vec<String>) -> VmClusterSpec {
    let lv = &config.libvirt;
    let boot = match (&lv.kernel, built_image(config)) {
        (Some(kernel), _) => BootMode::Kernel {
            kernel: kernel.clone(),
            initrd: lv.initrd.clone(),
            cmdline: lv.kernel_cmdline.clone(),
        },
        (None, Some(files)) => BootMode::Kernel {
            kernel: files.kernel,
            initrd: Some(files.initrd),
            cmdline: lv.kernel_cmdline.clone(),
        },
        (None, None) => BootMode::Disk,
    };
    let format = if lv.base_image.extension().is_some_and(|e| e == "qcow2") {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    };
    VmClusterSpec::new(
        &config.cluster.name,
        NetworkSpec::new(
            &config.network.name,
            &config.network.bridge,
            config.network.nat_cidr,
            config.network.gateway,
        ),
        PoolSpec::new(&lv.pool_name, &lv.pool_path),
        BaseImage::new(&lv.base_image, format),
        Access::new(&config.ssh.user, authorized_keys),
    )
    .domain_type(match lv.domain_type {
        DomainType::Auto => DomainTypeChoice::Auto,
        DomainType::Kvm => DomainTypeChoice::Kvm,
        DomainType::Qemu => DomainTypeChoice::Qemu,
    })
    .boot(boot)
    .nodes(config.nodes.iter().map(|n| {
        VmSpec::new(&n.name, n.ip)
            .vcpus(n.vcpus)
            .memory_mib(n.memory.0)
            .disk_bytes(n.disk.bytes())
            .mac(n.mac.map_or_else(|| Mac::from_ip(n.ip), |m| Mac(m.0)))
    }))
}

/// The base image homelab builds (when `libvirt.build_base_image` is on).
pub fn built_image(config: &Config) -> Option<ImageFiles> {
    config
        .libvirt
        .build_base_image
        .then(|| ImageFiles::beside(&config.libvirt.base_image))
}

/// The recipe of the built image.
pub fn image_recipe(config: &Config) -> ImageRecipe {
    ImageRecipe::debian_bookworm(&config.libvirt.image_mirror)
}

/// The public key installed on the nodes (`ssh.public_key`), read from its file.
///
/// # Errors
/// The file cannot be read; the message says how to make a key.
pub fn authorized_key(config: &Config) -> Result<String, Error> {
    let path = expand_home(&config.ssh.public_key);
    let private = expand_home(&config.ssh.private_key);
    let key = std::fs::read_to_string(&path)
        .map(|key| key.trim().to_owned())
        .map_err(|source| Error::Key {
            path: path.clone(),
            private: private.clone(),
            source,
        })?;
    // It goes into every node's cloud-init seed: it must be a public key, never (by a slip of
    // the path) the private one. The contents are not repeated.
    if homelab_ssh::PublicKey::from_openssh(&key).is_err() {
        return Err(Error::Key {
            path,
            private,
            source: std::io::Error::other(
                "not an OpenSSH public key (`ssh-ed25519 AAAA…`); is it the private key?",
            ),
        });
    }
    Ok(key)
}

/// The Kubernetes release of the configuration.
pub fn kube_version(config: &Config) -> Version {
    let kv = config.cluster.kubernetes_version;
    Version {
        major: kv.major,
        minor: kv.minor,
        patch: kv.patch,
    }
}

/// How the cluster layer logs in: the configuration's key and `known_hosts`. Host keys must
/// be known (the VM layer records them) unless `trust_new_hosts`.
pub fn ssh_options(config: &Config, trust_new_hosts: bool) -> SshOptions {
    SshOptions {
        private_key: expand_home(&config.ssh.private_key),
        known_hosts: expand_home(&config.ssh.known_hosts),
        policy: if trust_new_hosts {
            HostKeyPolicy::TrustOnFirstUse
        } else {
            HostKeyPolicy::Strict
        },
        connect_timeout: Duration::from_secs(15),
        attempts: 3,
    }
}

/// Every node as an SSH target, in the configuration's order.
pub fn targets(config: &Config) -> Vec<Target> {
    config
        .nodes
        .iter()
        .map(|n| Target {
            name: n.name.clone(),
            address: n.ip.to_string(),
            port: SSH_PORT,
            user: config.ssh.user.clone(),
        })
        .collect()
}

/// Which nodes a command works on when its user narrows or replaces the configuration's
/// list (the per-layer tools' `--user`, `--node NAME=ADDRESS[:PORT]` and `--only NAME`).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct NodeSelection {
    /// Log in as this user instead of `ssh.user`.
    pub user: Option<String>,
    /// These machines instead of the configuration's nodes (`NAME=ADDRESS[:PORT]`); the first
    /// is the control plane.
    pub nodes: Vec<String>,
    /// Only these nodes (by name) of the list.
    pub only: Vec<String>,
}

impl NodeSelection {
    /// Every node of the configuration.
    pub fn all() -> Self {
        Self::default()
    }

    /// With a login user.
    #[must_use]
    pub fn user(mut self, user: Option<String>) -> Self {
        self.user = user;
        self
    }

    /// With machines that replace the configuration's nodes.
    #[must_use]
    pub fn nodes(mut self, nodes: Vec<String>) -> Self {
        self.nodes = nodes;
        self
    }

    /// Narrowed to these node names.
    #[must_use]
    pub fn only(mut self, only: Vec<String>) -> Self {
        self.only = only;
        self
    }
}

/// The nodes a command works on, and which of them is the control plane.
#[derive(Debug, Clone)]
pub struct SelectedNodes {
    /// The SSH targets, in order (narrowed by `only`).
    pub targets: Vec<Target>,
    /// The control-plane node's name (the configuration's, or the first `--node`).
    pub control_plane: String,
}

/// Parses `NAME=ADDRESS[:PORT]` (IPv6 addresses in brackets: `cp=[fd00::10]:2222`).
fn node_override(spec: &str, user: &str) -> Result<Target, Error> {
    let refuse = |reason: &str| Error::NodeOverride {
        flag: "--node",
        value: spec.to_owned(),
        reason: reason.to_owned(),
    };
    let (name, addr) = spec
        .split_once('=')
        .ok_or_else(|| refuse("expected NAME=ADDRESS[:PORT]"))?;
    if name.is_empty() || addr.is_empty() {
        return Err(refuse("expected NAME=ADDRESS[:PORT]"));
    }
    let (address, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| refuse("an IPv6 address in brackets needs its closing `]`"))?;
        match tail.strip_prefix(':') {
            Some(p) => (host.to_owned(), Some(p)),
            None if tail.is_empty() => (host.to_owned(), None),
            None => return Err(refuse("expected `:PORT` after `]`")),
        }
    } else if addr.matches(':').count() > 1 {
        // A bare IPv6 address: no port.
        (addr.to_owned(), None)
    } else {
        match addr.rsplit_once(':') {
            Some((a, p)) => (a.to_owned(), Some(p)),
            None => (addr.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| refuse(&format!("`{p}` is not a port (1-65535)")))?,
        None => SSH_PORT,
    };
    Ok(Target {
        name: name.to_owned(),
        address,
        port,
        user: user.to_owned(),
    })
}

/// The nodes `selection` asks for: the configuration's (or the `--node` machines), narrowed
/// to `only`.
///
/// # Errors
/// A `--node` does not parse, an `--only` names no node of the list, or there is no control
/// plane.
pub fn select_nodes(config: &Config, selection: &NodeSelection) -> Result<SelectedNodes, Error> {
    let user = selection.user.as_deref().unwrap_or(&config.ssh.user);
    let (mut targets, control_plane) = if selection.nodes.is_empty() {
        let targets: Vec<Target> = targets(config)
            .into_iter()
            .map(|t| Target {
                user: user.to_owned(),
                ..t
            })
            .collect();
        let cp = config
            .nodes
            .iter()
            .find(|n| n.role == NodeRole::ControlPlane)
            .map(|n| n.name.clone())
            .ok_or(Error::NoControlPlane)?;
        (targets, cp)
    } else {
        let targets = selection
            .nodes
            .iter()
            .map(|spec| node_override(spec, user))
            .collect::<Result<Vec<_>, _>>()?;
        let cp = targets[0].name.clone();
        (targets, cp)
    };
    for name in &selection.only {
        if !targets.iter().any(|t| &t.name == name) {
            return Err(Error::NodeOverride {
                flag: "--only",
                value: name.clone(),
                reason: format!(
                    "no such node (nodes: {})",
                    targets
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    if !selection.only.is_empty() {
        targets.retain(|t| selection.only.contains(&t.name));
    }
    Ok(SelectedNodes {
        targets,
        control_plane,
    })
}

/// The cluster layer's plan: the kubeadm cluster, its first control plane and the other
/// nodes as workers.
///
/// # Errors
/// No node has the control-plane role (validation already refuses such a file).
pub fn bootstrap_plan(config: &Config) -> Result<BootstrapPlan, Error> {
    bootstrap_plan_for(config, &select_nodes(config, &NodeSelection::all())?)
}

/// The cluster layer's plan for the nodes a command selected ([`select_nodes`]).
///
/// # Errors
/// A node's address is not IPv4, or the control plane is not among the selected nodes.
pub fn bootstrap_plan_for(
    config: &Config,
    selected: &SelectedNodes,
) -> Result<BootstrapPlan, Error> {
    let mut control_plane = None;
    let mut workers = Vec::new();
    for target in &selected.targets {
        let address = target.address.parse().map_err(|_| Error::NodeAddress {
            node: target.name.clone(),
            address: target.address.clone(),
        })?;
        let node = Node {
            target: target.clone(),
            spec: KubeadmNode::new(&target.name, address),
        };
        if control_plane.is_none() && target.name == selected.control_plane {
            control_plane = Some(node);
        } else {
            workers.push(node);
        }
    }
    let control_plane = control_plane
        .ok_or_else(|| Error::ControlPlaneNotSelected(selected.control_plane.clone()))?;
    let cluster = KubeadmSpec::new(
        &config.cluster.name,
        kube_version(config),
        format!("{}:{API_PORT}", control_plane.spec.address),
    )
    .pod_cidr(config.network.pod_cidr)
    .service_cidr(config.network.service_cidr)
    .cri_socket(CRI_SOCKET)
    .slow_nodes(config.cluster.slow_nodes);
    Ok(BootstrapPlan {
        cluster,
        control_plane,
        workers,
    })
}

/// Where the nodes get the Kubernetes packages from (`[packages]`), and containerd's mirror
/// for each registry in `[packages] mirrors`; the signing key is not fetched yet
/// ([`PackageSource::fetch_key`]) and the bundle not opened yet ([`crate::bundle::open`]).
pub fn package_source(config: &Config) -> PackageSource {
    let hosts = config
        .packages
        .mirrors
        .iter()
        .map(|(registry, mirror)| RegistryHosts {
            registry: registry.clone(),
            hosts_toml: harbor_client::node::hosts_toml(
                registry,
                mirror,
                &harbor_client::node::MirrorTls::System,
            ),
        })
        .collect();
    PackageSource::new(
        config.packages.repository.clone(),
        config.packages.key_fingerprint.clone(),
    )
    .with_containerd_package(config.packages.containerd.clone())
    .with_registry_hosts(hosts)
}

/// The kubeconfig file of the cluster (`cluster.kubeconfig`, `~` expanded).
pub fn kubeconfig_path(config: &Config) -> PathBuf {
    expand_home(&config.cluster.kubeconfig)
}

/// The platform layer's input: the fixed addresses, Harbor's URL and which optional
/// components the features deploy.
pub fn platform_spec(config: &Config) -> platform::components::PlatformSpec {
    let ips = &config.network.load_balancer_ips;
    platform::components::PlatformSpec::new(ips.ingress, ips.argocd, config.harbor.url.clone())
        .harbor_address(Some(std::net::SocketAddr::new(
            std::net::IpAddr::V4(ips.harbor),
            url::Url::parse(&config.harbor.url)
                .ok()
                .and_then(|u| u.port_or_known_default())
                .unwrap_or(443),
        )))
        .external_secrets(config.features.external_secrets)
        .secret_objects(crate::secrets::external_objects(config))
        .runners(
            config.features.runners
                && config
                    .github
                    .as_ref()
                    .is_some_and(|g| !g.runners.is_empty()),
        )
}

/// The registry wiring of `[harbor]`: its project, a pull-only robot and the pull Secret
/// in `harbor.pull_namespaces`, containerd trusting the homelab CA.
///
/// # Errors
/// `harbor.url` has no host.
pub fn registry_wiring(config: &Config) -> Result<platform::registry::RegistryWiring, Error> {
    Ok(platform::registry::RegistryWiring::new(
        &config.harbor.url,
        &config.harbor.project,
        &config.harbor.pull_namespaces,
    )?)
}

/// The GitOps repository scaffold's input (`gitops::scaffold`), or `None` without
/// `[gitops] repo_url` (the Applications point at that repository).
pub fn gitops_spec(config: &Config) -> Option<gitops::scaffold::Spec> {
    let gitops_config = config.gitops.clone().filter(|g| !g.repo_url.is_empty())?;
    let v = &config.versions;
    let versions = [
        ("metallb", v.metallb.as_str()),
        ("ingress_nginx", v.ingress_nginx.as_str()),
        ("cert_manager", v.cert_manager.as_str()),
        ("external_secrets", v.external_secrets.as_str()),
        ("harbor", v.harbor.as_str()),
        (
            "actions_runner_controller",
            v.actions_runner_controller.as_str(),
        ),
        ("local_path_provisioner", v.local_path_provisioner.as_str()),
        ("kube_prometheus_stack", v.kube_prometheus_stack.as_str()),
        ("loki", v.loki.as_str()),
        ("alloy", v.alloy.as_str()),
        ("tekton_pipelines", v.tekton_pipelines.as_str()),
        ("tekton_triggers", v.tekton_triggers.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let lb = &config.network.load_balancer_ips;
    let runners = if config.features.runners {
        config
            .github
            .iter()
            .flat_map(|g| g.runners.iter())
            .map(|r| gitops::scaffold::Runner {
                repository: r.name.clone(),
                min: r.min,
                max: r.max,
            })
            .collect()
    } else {
        Vec::new()
    };
    Some(gitops::scaffold::Spec {
        repo_url: gitops_config.repo_url,
        branch: gitops_config.branch,
        metallb_range: config.network.metallb_range.to_string(),
        ingress_ip: lb.ingress.to_string(),
        harbor_ip: lb.harbor.to_string(),
        harbor_url: config.harbor.url.clone(),
        argocd_ip: lb.argocd.to_string(),
        versions,
        external_secrets: config.features.external_secrets,
        secret_objects: crate::secrets::external_objects(config),
        github_owner: config
            .github
            .as_ref()
            .map(|g| g.owner.clone())
            .unwrap_or_default(),
        runners,
        etcd_backup: config
            .features
            .backups
            .then(|| gitops::scaffold::EtcdBackup {
                schedule: config.backups.schedule.clone(),
                node_dir: config.backups.node_dir.clone(),
                keep: config.backups.keep,
                etcd_image: kubeadm_boot::prepare::etcd_image(&kube_version(config), None),
                shell_image: "docker.io/library/busybox:1.36".into(),
                s3: config
                    .backups
                    .s3
                    .as_ref()
                    .map(|s3| gitops::scaffold::S3Copy {
                        endpoint: s3.endpoint.clone(),
                        bucket: s3.bucket.clone(),
                        prefix: s3.prefix.clone(),
                        region: s3.region.clone(),
                        secret: esc_secrets::declared::BACKUP_S3_SECRET.into(),
                        image: RCLONE_IMAGE.into(),
                    }),
            }),
        monitoring: config.features.monitoring.then(|| monitoring(config)),
        cicd: config.features.cicd,
    })
}

/// The monitoring stack's input: Grafana's login comes from ESC when there is an `[esc]`
/// (`esc_secrets` declares it with `features.monitoring`); otherwise the chart generates one.
pub fn monitoring(config: &Config) -> gitops::scaffold::Monitoring {
    gitops::scaffold::Monitoring {
        grafana_admin_secret: config.esc.is_some().then(|| "grafana-admin".into()),
    }
}

/// Grafana's web interface as `homelab open grafana` forwards it, its login where this
/// configuration puts it.
pub fn grafana_ui(config: &Config) -> platform::open::Ui {
    platform::open::Ui::grafana(monitoring(config).grafana_login().0)
}

/// The `web-postgres` template of application `name`: its Ingress answers `host` (else
/// `<name>.<gitops.apps_domain>`), its images are in Harbor's project
/// (`<harbor host>/<harbor.project>/<name>-frontend:0.1.0`, `-backend`).
///
/// # Errors
/// `host` is not a DNS name, or `harbor.url` does not parse.
pub fn web_postgres(
    config: &Config,
    name: &str,
    host: Option<&str>,
) -> Result<gitops::templates::WebPostgres, Error> {
    let domain = config
        .gitops
        .as_ref()
        .map_or("homelab.lan", |g| g.apps_domain.as_str());
    let host = host.map_or_else(|| format!("{name}.{domain}"), str::to_owned);
    if host.len() > 253
        || host
            .split('.')
            .any(|label| !homelab_config::is_dns_label(label))
    {
        return Err(Error::Template(format!(
            "host `{host}` is not a DNS name (dot-separated labels)"
        )));
    }
    let registry = platform::registry::registry_of(&config.harbor.url)?;
    let version = kube_version(config).to_string();
    // With External Secrets reading ESC, the login comes from ESC; else a Job makes it once.
    let credentials = match &config.esc {
        Some(_) if config.features.external_secrets => gitops::templates::Credentials::Esc {
            store: esc_secrets::deliver::STORE_NAME.into(),
            path: format!("apps.{name}.postgres"),
        },
        _ => gitops::templates::Credentials::Generated {
            kubectl_image: format!("docker.io/alpine/k8s:{}", version.trim_start_matches('v')),
        },
    };
    // Built and delivered by Tekton when the platform runs it; the pipeline commits to the
    // GitOps repository over https with a token.
    let cicd = match (&config.gitops, config.features.cicd) {
        (Some(gitops), true) => {
            if !gitops.repo_url.starts_with("https://") && !gitops.repo_url.starts_with("http://") {
                return Err(Error::Template(format!(
                    "features.cicd: the pipeline commits new image digests to gitops.repo_url \
                     over https with a token, and `{}` is not an https URL",
                    gitops.repo_url
                )));
            }
            Some(gitops::templates::Cicd::new(
                &gitops.repo_url,
                &gitops.branch,
                &registry,
            ))
        }
        _ => None,
    };
    Ok(gitops::templates::WebPostgres::new(name, &host)
        .images_in(&format!("{registry}/{}", config.harbor.project))
        .with_credentials(credentials)
        // Scraped and on a dashboard when the platform runs the monitoring stack.
        .with_monitoring(config.features.monitoring)
        .with_cicd(cicd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_web_template_takes_its_host_images_and_login_source_from_the_config() {
        use gitops::templates::Credentials;
        let mut config = Config::default();
        let t = web_postgres(&config, "shop", None).unwrap();
        assert_eq!(t.host, "shop.homelab.lan");
        assert_eq!(
            t.frontend_image,
            "harbor.homelab.lan/homelab/shop-frontend:0.1.0"
        );
        assert!(matches!(t.credentials, Credentials::Generated { .. }));
        assert!(!t.monitoring);
        config.features.monitoring = true;
        assert!(web_postgres(&config, "shop", None).unwrap().monitoring);
        assert_eq!(
            web_postgres(&config, "shop", Some("shop.example.org"))
                .unwrap()
                .host,
            "shop.example.org"
        );
        let err = web_postgres(&config, "shop", Some("shop_app.lan"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shop_app.lan"), "{err}");
        // Delivered by Tekton with features.cicd, into the GitOps repository over https.
        assert!(t.cicd.is_none());
        config.features.cicd = true;
        config.gitops = Some(homelab_config::GitopsConfig {
            repo_url: "https://git.example/lab/gitops.git".into(),
            ..homelab_config::GitopsConfig::default()
        });
        let cicd = web_postgres(&config, "shop", None).unwrap().cicd.unwrap();
        assert_eq!(
            (cicd.gitops_repo.as_str(), cicd.registry.as_str()),
            ("https://git.example/lab/gitops.git", "harbor.homelab.lan")
        );
        config.gitops.as_mut().unwrap().repo_url = "git@git.example:lab/gitops.git".into();
        let err = web_postgres(&config, "shop", None).unwrap_err().to_string();
        assert!(
            err.contains("git@git.example:lab/gitops.git") && err.contains("https"),
            "{err}"
        );
        config.gitops = None;
        config.esc = Some(homelab_config::EscConfig {
            organization: "acme".into(),
            ..homelab_config::EscConfig::default()
        });
        config.features.external_secrets = true;
        match web_postgres(&config, "shop", None).unwrap().credentials {
            Credentials::Esc { store, path } => {
                assert_eq!(
                    (store.as_str(), path.as_str()),
                    ("pulumi-esc", "apps.shop.postgres")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_public_key_must_be_a_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.ssh.public_key = dir.path().join("id.pub");
        config.ssh.private_key = dir.path().join("id");
        let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        std::fs::write(&config.ssh.public_key, private).unwrap();
        let err = authorized_key(&config).unwrap_err().to_string();
        assert!(err.contains("not an OpenSSH public key"), "{err}");
        assert!(!err.contains("b3BlbnNzaC1rZXkt"), "{err}");
        std::fs::write(
            &config.ssh.public_key,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMdYkEU1eDGbrzYsYK6wI0xZ3wu0tw6UOIiOZA6m95Gv me@lab\n",
        )
        .unwrap();
        assert!(
            authorized_key(&config)
                .unwrap()
                .starts_with("ssh-ed25519 AAAA")
        );
    }

    #[test]
    fn node_overrides_parse_names_addresses_and_ports() {
        let config = Config::default();
        let picked = select_nodes(
            &config,
            &NodeSelection::all().user(Some("ops".into())).nodes(vec![
                "cp=10.0.0.5".into(),
                "w1=10.0.0.6:2222".into(),
                "w2=[fd00::7]:2200".into(),
                "w3=fd00::8".into(),
            ]),
        )
        .unwrap();
        let got: Vec<(&str, &str, u16, &str)> = picked
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t.address.as_str(), t.port, t.user.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("cp", "10.0.0.5", 22, "ops"),
                ("w1", "10.0.0.6", 2222, "ops"),
                ("w2", "fd00::7", 2200, "ops"),
                ("w3", "fd00::8", 22, "ops"),
            ]
        );
        assert_eq!(picked.control_plane, "cp");
        for (bad, why) in [
            ("cp", "expected NAME=ADDRESS[:PORT]"),
            ("=10.0.0.1", "expected NAME=ADDRESS[:PORT]"),
            ("cp=10.0.0.1:x", "`x` is not a port"),
            ("cp=10.0.0.1:0", "`0` is not a port"),
            ("cp=10.0.0.1:70000", "`70000` is not a port"),
            ("cp=[fd00::1", "closing `]`"),
        ] {
            let err = select_nodes(&config, &NodeSelection::all().nodes(vec![bad.into()]))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("--node {bad}: ")), "{err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn only_narrows_the_configured_nodes_and_names_the_choices() {
        let config = Config::default();
        let picked = select_nodes(
            &config,
            &NodeSelection::all().only(vec!["k8s-worker-2".into()]),
        )
        .unwrap();
        assert_eq!(picked.targets.len(), 1);
        assert_eq!(picked.targets[0].address, "192.168.122.12");
        assert_eq!(picked.control_plane, "k8s-cp-1");
        let err = select_nodes(&config, &NodeSelection::all().only(vec!["w9".into()]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--only w9: no such node (nodes: k8s-cp-1, k8s-worker-1, k8s-worker-2)"
        );
    }

    proptest! {
        /// Any name, IPv4 address and port given as NAME=ADDRESS:PORT comes back as it was.
        #[test]
        fn node_overrides_round_trip(
            name in "[a-z][a-z0-9-]{0,20}",
            ip in any::<std::net::Ipv4Addr>(),
            port in 1u16..,
        ) {
            let t = node_override(&format!("{name}={ip}:{port}"), "u").unwrap();
            prop_assert_eq!(t.name, name);
            prop_assert_eq!(t.address, ip.to_string());
            prop_assert_eq!(t.port, port);
        }
    }

    #[test]
    fn the_default_converts_to_the_reference_topology() {
        let config = Config::default();
        let spec = vm_spec(&config, vec!["ssh-ed25519 AAAA k".into()]);
        assert_eq!(spec.cluster_id, "homelab");
        assert_eq!(spec.nodes.len(), 3);
        assert_eq!(spec.nodes[0].memory_mib, 8192);
        assert_eq!(spec.nodes[0].disk_bytes, 50 << 30);
        assert_eq!(spec.nodes[1].mac.to_string(), "52:54:00:a8:7a:0b");
        assert_eq!(spec.base_image.format, DiskFormat::Qcow2);
        match spec.boot {
            BootMode::Kernel {
                kernel, cmdline, ..
            } => {
                assert!(
                    kernel
                        .to_string_lossy()
                        .ends_with("debian-12-base.qcow2.vmlinuz")
                );
                assert!(cmdline.contains("root=/dev/vda"));
            }
            BootMode::Disk => panic!("the built image boots its kernel directly"),
        }
        let mut own_image = Config::default();
        own_image.libvirt.build_base_image = false;
        assert_eq!(vm_spec(&own_image, vec![]).boot, BootMode::Disk);
    }

    #[test]
    fn the_cluster_plan_has_the_control_plane_first_and_the_pinned_endpoint() {
        let plan = bootstrap_plan(&Config::default()).unwrap();
        assert_eq!(plan.control_plane.spec.name, "k8s-cp-1");
        assert_eq!(plan.cluster.control_plane_endpoint, "192.168.122.10:6443");
        assert_eq!(plan.cluster.pod_cidr.to_string(), "10.244.0.0/16");
        assert_eq!(plan.cluster.service_cidr.to_string(), "10.96.0.0/12");
        let workers: Vec<&str> = plan.workers.iter().map(|w| w.spec.name.as_str()).collect();
        assert_eq!(workers, ["k8s-worker-1", "k8s-worker-2"]);
        assert!(
            plan.workers
                .iter()
                .all(|w| w.target.port == 22 && w.target.user == "homelab")
        );
        let mut none = Config::default();
        for n in &mut none.nodes {
            n.role = NodeRole::Worker;
        }
        assert!(matches!(bootstrap_plan(&none), Err(Error::NoControlPlane)));
    }
}
