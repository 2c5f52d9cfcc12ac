//! Fixtures shared by the unit tests.

use std::net::Ipv4Addr;

use crate::spec::{
    Access, BaseImage, BootMode, DiskFormat, DomainTypeChoice, Mac, NetworkSpec, PoolSpec,
    VmClusterSpec, VmSpec,
};

/// A two-node cluster on 192.168.150.0/24.
pub(crate) fn sample_spec() -> VmClusterSpec {
    let node = |name: &str, last: u8, vcpus, memory_mib| VmSpec {
        name: name.into(),
        vcpus,
        memory_mib,
        disk_bytes: 20 << 30,
        mac: Mac::from_ip(Ipv4Addr::new(192, 168, 150, last)),
        ip: Ipv4Addr::new(192, 168, 150, last),
    };
    VmClusterSpec {
        cluster_id: "lab".into(),
        network: NetworkSpec {
            name: "lab".into(),
            bridge: "virbr-lab".into(),
            cidr: "192.168.150.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(192, 168, 150, 1),
        },
        pool: PoolSpec {
            name: "lab".into(),
            path: "/var/lib/libvirt/images/lab".into(),
        },
        base_image: BaseImage {
            path: "/var/lib/libvirt/images/lab/base.qcow2".into(),
            format: DiskFormat::Qcow2,
        },
        domain_type: DomainTypeChoice::Auto,
        boot: BootMode::Disk,
        access: Access {
            user: "ops".into(),
            authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2VrZXlmb3J0ZXN0c29ubHkxMjM0NTY3ODkwMTI ops@laptop".into()],
        },
        nodes: vec![node("n1", 10, 2, 2048), node("n2", 11, 1, 1024)],
    }
}
