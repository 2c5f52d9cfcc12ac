//! Fixtures shared by the unit tests.

use std::net::Ipv4Addr;

use crate::spec::{Access, BaseImage, DiskFormat, NetworkSpec, PoolSpec, VmClusterSpec, VmSpec};

/// A two-node cluster on 192.168.150.0/24.
pub(crate) fn sample_spec() -> VmClusterSpec {
    let node = |name: &str, last: u8, vcpus, memory_mib| {
        VmSpec::new(name, Ipv4Addr::new(192, 168, 150, last))
            .vcpus(vcpus)
            .memory_mib(memory_mib)
            .disk_bytes(20 << 30)
    };
    VmClusterSpec::new(
        "lab",
        NetworkSpec::new(
            "lab",
            "virbr-lab",
            "192.168.150.0/24".parse().unwrap(),
            Ipv4Addr::new(192, 168, 150, 1),
        ),
        PoolSpec::new("lab", "/var/lib/libvirt/images/lab"),
        BaseImage::new("/var/lib/libvirt/images/lab/base.qcow2", DiskFormat::Qcow2),
        Access::new(
            "ops",
            vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2VrZXlmb3J0ZXN0c29ubHkxMjM0NTY3ODkwMTI ops@laptop".into()],
        ),
    )
    .nodes([node("n1", 10, 2, 2048), node("n2", 11, 1, 1024)])
}
