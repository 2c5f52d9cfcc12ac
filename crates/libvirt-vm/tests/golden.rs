//! The XML this crate sends to libvirt, compared with reviewed files in tests/golden/.
//! Run with `UPDATE_GOLDEN=1` to rewrite them after an intended change (then review the diff).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use libvirt_vm::xml::{self, OwnerMeta};
use libvirt_vm::{
    Access, BaseImage, BootMode, DiskFormat, DomainType, NetworkSpec, PoolSpec, VmClusterSpec,
    VmSpec,
};

fn spec() -> VmClusterSpec {
    VmClusterSpec::new(
        "homelab",
        NetworkSpec::new(
            "homelab",
            "virbr-homelab",
            "192.168.122.0/24".parse().unwrap(),
            Ipv4Addr::new(192, 168, 122, 1),
        ),
        PoolSpec::new("homelab", "/var/lib/libvirt/images/homelab"),
        BaseImage::new(
            "/var/lib/libvirt/images/homelab/debian-12-base.qcow2",
            DiskFormat::Qcow2,
        ),
        Access::new("homelab", vec![]),
    )
    .node(
        VmSpec::new("k8s-cp-1", Ipv4Addr::new(192, 168, 122, 10))
            .vcpus(4)
            .memory_mib(8192)
            .disk_bytes(50 << 30),
    )
}

fn owner() -> OwnerMeta {
    let mut extra = BTreeMap::new();
    extra.insert(
        "host-key".into(),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGolden k8s-cp-1 host key".into(),
    );
    extra.insert("ip".into(), "192.168.122.10".into());
    OwnerMeta {
        cluster: "homelab".into(),
        spec: "0123abcd".into(),
        extra,
    }
}

fn check(name: &str, actual: &str) {
    homelab_testkit::check_golden(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden"),
        name,
        actual,
    );
    // What we send must be what we read back.
    if name.starts_with("domain") || name.starts_with("network") {
        assert_eq!(xml::read_owner_meta(actual), Some(owner()));
    }
}

#[test]
fn network() {
    check("network.xml", &xml::network_xml(&spec(), &owner()).unwrap());
}

#[test]
fn pool_and_volumes() {
    let s = spec();
    check("pool.xml", &xml::pool_xml(&s.pool).unwrap());
    check(
        "volume-overlay.xml",
        &xml::overlay_volume_xml(&s.nodes[0], &s).unwrap(),
    );
    check(
        "volume-seed.xml",
        &xml::seed_volume_xml(&s.nodes[0], 1 << 20).unwrap(),
    );
}

#[test]
fn domain_kvm_and_qemu() {
    let s = spec();
    check(
        "domain-kvm.xml",
        &xml::domain_xml(&s, &s.nodes[0], DomainType::Kvm, &owner(), None).unwrap(),
    );
    check(
        "domain-qemu.xml",
        &xml::domain_xml(&s, &s.nodes[0], DomainType::Qemu, &owner(), None).unwrap(),
    );
}

#[test]
fn domain_direct_kernel_boot() {
    let mut s = spec();
    s.boot = BootMode::Kernel {
        kernel: "/var/lib/libvirt/images/homelab/vmlinuz".into(),
        initrd: Some("/var/lib/libvirt/images/homelab/initrd.img".into()),
        cmdline: "root=/dev/vda console=ttyS0".into(),
    };
    let xml = xml::domain_xml(
        &s,
        &s.nodes[0],
        DomainType::Qemu,
        &owner(),
        Some("4dea22b3-1d52-d8f3-2516-782e98ab3fa0"),
    )
    .unwrap();
    check("domain-kernel.xml", &xml);
}
