//! `homelab.toml` → the VM layer's spec (feature `vm`).

use libvirt_vm::image::{ImageFiles, ImageRecipe};
use libvirt_vm::{
    Access, BaseImage, BootMode, ClusterSpec, DiskFormat, DomainTypeChoice, Mac, NetworkSpec,
    NodeSpec, PoolSpec,
};

use crate::model::{Config, DomainType};

impl Config {
    /// The VM layer's spec of this configuration. `authorized_keys` are the public keys
    /// (file contents of `ssh.public_key`) installed on the nodes.
    pub fn vm_spec(&self, authorized_keys: Vec<String>) -> ClusterSpec {
        let lv = &self.libvirt;
        let boot = match (&lv.kernel, self.built_image()) {
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
        ClusterSpec {
            cluster_id: self.cluster.name.clone(),
            network: NetworkSpec {
                name: self.network.name.clone(),
                bridge: self.network.bridge.clone(),
                cidr: self.network.nat_cidr,
                gateway: self.network.gateway,
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
                user: self.ssh.user.clone(),
                authorized_keys,
            },
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeSpec {
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

    /// The image the tools build (when `libvirt.build_base_image` is on).
    pub fn built_image(&self) -> Option<ImageFiles> {
        self.libvirt
            .build_base_image
            .then(|| ImageFiles::beside(&self.libvirt.base_image))
    }

    /// The recipe of the built image.
    pub fn image_recipe(&self) -> ImageRecipe {
        ImageRecipe::debian_bookworm(&self.libvirt.image_mirror)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_converts_to_the_reference_topology() {
        let spec = Config::default().vm_spec(vec!["ssh-ed25519 AAAA k".into()]);
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
        assert_eq!(own_image.vm_spec(vec![]).boot, BootMode::Disk);
    }
}
