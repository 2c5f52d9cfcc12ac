//! Plans, applies and destroys the reference topology (a control plane and two workers) on
//! libvirt's built-in test driver: no daemon, no disk images, nothing left behind. Point it
//! at `qemu:///system` instead (first argument) to see the plan for a real host; it then
//! only plans.
//!
//! ```sh
//! cargo run -p libvirt-vm --example plan_three_vms
//! cargo run -p libvirt-vm --example plan_three_vms -- qemu:///system
//! ```

use std::net::Ipv4Addr;

use libvirt_vm::{
    Access, BaseImage, DiskFormat, Hypervisor, NetworkSpec, PoolSpec, VmClusterSpec, VmSpec,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let uri = std::env::args().nth(1);
    // The test driver's pretend pool holds 100 GiB: its disks are cut to a fifth.
    let disk = |gib: u64| if uri.is_none() { gib / 5 } else { gib };
    let pool = tempfile::tempdir()?;
    let node = |name: &str, last: u8, vcpus: u32, gib: u64, disk_gib: u64| {
        VmSpec::new(name, Ipv4Addr::new(192, 168, 122, last))
            .vcpus(vcpus)
            .memory_mib(gib * 1024)
            .disk_bytes(disk_gib << 30)
    };
    let spec = VmClusterSpec::new(
        "example",
        NetworkSpec::new(
            "example-net",
            "virbr-example",
            "192.168.122.0/24".parse()?,
            Ipv4Addr::new(192, 168, 122, 1),
        ),
        PoolSpec::new("example-pool", pool.path()),
        BaseImage::new(pool.path().join("base.qcow2"), DiskFormat::Qcow2),
        Access::new(
            "ops",
            vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPKwqvs4Ks4WnEvVfVRhbVRqVNtiZl8kgEP/ECvgo2AS example".into()],
        ),
    )
    .nodes([
        node("cp", 10, 4, 8, disk(50)),
        node("worker-1", 11, 2, 4, disk(30)),
        node("worker-2", 12, 2, 4, disk(30)),
    ]);

    // A private test-driver hypervisor (an empty node description), unless a URI was given.
    let test_driver = uri.is_none();
    let uri = uri.unwrap_or_else(|| {
        let node_xml = pool.path().join("node.xml");
        let _ = std::fs::write(&node_xml, "<node></node>\n");
        format!("test://{}", node_xml.display())
    });
    let hv = Hypervisor::connect(&uri)?;
    println!("{}", hv.plan(&spec)?);
    if !test_driver {
        return Ok(());
    }
    hv.apply(&spec, &|event| println!("{event}"))?;
    let again = hv.plan(&spec)?;
    println!("after apply: {again}");
    assert!(again.is_noop(), "a second plan has nothing to do");
    for known in hv.known_hosts(&spec)? {
        println!("{} will present {}", known.ip, known.host_key);
    }
    hv.destroy(&spec, &|event| println!("{event}"))?;
    Ok(())
}
