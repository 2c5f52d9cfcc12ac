//! `homelab.toml` → each layer's own input types. The one place that knows both the
//! configuration and the layers; the layers take their inputs without knowing the file.

use std::path::PathBuf;
use std::time::Duration;

use homelab_config::{Config, DomainType, NodeRole, expand_home};
use homelab_ssh::{HostKeyPolicy, SshOptions, Target};
use kubeadm_boot::bootstrap::{Node, Plan as BootstrapPlan};
use kubeadm_boot::cluster::{API_PORT, CRI_SOCKET};
use kubeadm_boot::kubeadm::{ClusterSpec as KubeadmCluster, NodeSpec as KubeadmNode, Version};
use kubeadm_boot::prepare::PackageSource;
use libvirt_vm::image::{ImageFiles, ImageRecipe};
use libvirt_vm::{
    Access, BaseImage, BootMode, ClusterSpec as VmCluster, DiskFormat, DomainTypeChoice, Mac,
    NetworkSpec, NodeSpec as VmNode, PoolSpec,
};

use crate::error::Error;

/// The port SSH listens on, on every node homelab makes.
pub const SSH_PORT: u16 = 22;

/// The VM layer's spec of `config`; `authorized_keys` are the public keys (the contents of
/// `ssh.public_key`) installed on the nodes.
pub fn vm_spec(config: &Config, authorized_keys: Vec<String>) -> VmCluster {
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
    VmCluster {
        cluster_id: config.cluster.name.clone(),
        network: NetworkSpec {
            name: config.network.name.clone(),
            bridge: config.network.bridge.clone(),
            cidr: config.network.nat_cidr,
            gateway: config.network.gateway,
        },
        pool: PoolSpec {
            name: lv.pool_name.clone(),
            path: lv.pool_path.clone(),
        },
        base_image: BaseImage {
            path: lv.base_image.clone(),
            format,
        },
        domain_type: match lv.domain_type {
            DomainType::Auto => DomainTypeChoice::Auto,
            DomainType::Kvm => DomainTypeChoice::Kvm,
            DomainType::Qemu => DomainTypeChoice::Qemu,
        },
        boot,
        access: Access {
            user: config.ssh.user.clone(),
            authorized_keys,
        },
        nodes: config
            .nodes
            .iter()
            .map(|n| VmNode {
                name: n.name.clone(),
                vcpus: n.vcpus,
                memory_mib: n.memory.0,
                disk_bytes: n.disk.bytes(),
                mac: n.mac.map_or_else(|| Mac::from_ip(n.ip), |m| Mac(m.0)),
                ip: n.ip,
            })
            .collect(),
    }
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
    std::fs::read_to_string(&path)
        .map(|key| key.trim().to_owned())
        .map_err(|source| Error::Key {
            path,
            private: expand_home(&config.ssh.private_key),
            source,
        })
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

/// The cluster layer's plan: the kubeadm cluster, its first control plane and the other
/// nodes as workers.
///
/// # Errors
/// No node has the control-plane role (validation already refuses such a file).
pub fn bootstrap_plan(config: &Config) -> Result<BootstrapPlan, Error> {
    let mut control_plane = None;
    let mut workers = Vec::new();
    for (node, target) in config.nodes.iter().zip(targets(config)) {
        let n = Node {
            target,
            spec: KubeadmNode {
                name: node.name.clone(),
                address: node.ip,
            },
        };
        if control_plane.is_none() && node.role == NodeRole::ControlPlane {
            control_plane = Some(n);
        } else {
            workers.push(n);
        }
    }
    let control_plane = control_plane.ok_or(Error::NoControlPlane)?;
    let cluster = KubeadmCluster {
        name: config.cluster.name.clone(),
        version: kube_version(config),
        control_plane_endpoint: format!("{}:{API_PORT}", control_plane.spec.address),
        pod_cidr: config.network.pod_cidr,
        service_cidr: config.network.service_cidr,
        image_repository: None,
        cri_socket: CRI_SOCKET.into(),
    };
    Ok(BootstrapPlan {
        cluster,
        control_plane,
        workers,
    })
}

/// Where the nodes get the Kubernetes packages from (`[packages]`); the signing key is not
/// fetched yet ([`PackageSource::fetch_key`]).
pub fn package_source(config: &Config) -> PackageSource {
    PackageSource::new(
        config.packages.repository.clone(),
        config.packages.key_fingerprint.clone(),
    )
}

/// The kubeconfig file of the cluster (`cluster.kubeconfig`, `~` expanded).
pub fn kubeconfig_path(config: &Config) -> PathBuf {
    expand_home(&config.cluster.kubeconfig)
}

#[cfg(test)]
mod tests {
    use super::*;

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
