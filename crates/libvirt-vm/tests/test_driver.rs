//! plan / apply / destroy against libvirt's own test driver (a private in-memory hypervisor
//! per test, no daemon): idempotency, ownership, changes, and convergence.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::Path;

use libvirt_vm::{
    Access, BaseImage, Change, DiskFormat, Error, Hypervisor, NetworkSpec, ObjectKind, PoolSpec,
    VmClusterSpec, VmPlan, VmSpec,
};
use proptest::prelude::*;
use tempfile::TempDir;

/// A private test-driver hypervisor whose pool directory is a real temporary directory.
struct TestHost {
    dir: TempDir,
    hv: Hypervisor,
}

impl TestHost {
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let node_xml = dir.path().join("node.xml");
        std::fs::write(&node_xml, "<node></node>\n").unwrap();
        std::fs::create_dir(dir.path().join("pool")).unwrap();
        let hv = Hypervisor::connect(&format!("test://{}", node_xml.display())).unwrap();
        Self { dir, hv }
    }

    fn pool_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("pool")
    }

    fn spec(&self, nodes: &[(&str, u8, u32)]) -> VmClusterSpec {
        VmClusterSpec::new(
            "lab",
            NetworkSpec::new(
                "lab-net",
                "virbr-lab",
                "192.168.150.0/24".parse().unwrap(),
                Ipv4Addr::new(192, 168, 150, 1),
            ),
            PoolSpec::new("lab-pool", self.pool_dir()),
            BaseImage::new(self.pool_dir().join("base.qcow2"), DiskFormat::Qcow2),
            Access::new(
                "ops",
                vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPKwqvs4Ks4WnEvVfVRhbVRqVNtiZl8kgEP/ECvgo2AS t".into()],
            ),
        )
        .nodes(nodes.iter().map(|(name, last, vcpus)| {
            VmSpec::new(*name, Ipv4Addr::new(192, 168, 150, *last))
                .vcpus(*vcpus)
                .memory_mib(1024)
                .disk_bytes(10 << 30)
        }))
    }

    fn apply(&self, spec: &VmClusterSpec) -> (VmPlan, Vec<String>) {
        let seen = std::sync::Mutex::new(Vec::new());
        let plan = self
            .hv
            .apply(spec, &|e| seen.lock().unwrap().push(e.to_string()))
            .unwrap();
        (plan, seen.into_inner().unwrap())
    }
}

fn labels(plan: &VmPlan) -> Vec<String> {
    plan.actions
        .iter()
        .map(|a| format!("{} {} {}", a.change.label(), a.kind, a.name))
        .collect()
}

#[test]
fn apply_creates_everything_then_is_a_no_op() {
    let host = TestHost::new();
    let spec = host.spec(&[("cp", 10, 2), ("w1", 11, 1)]);
    assert_eq!(
        labels(&host.hv.plan(&spec).unwrap()),
        [
            "create network lab-net",
            "create pool lab-pool",
            "create volume cp.qcow2",
            "create volume cp-seed.img",
            "create domain cp",
            "create volume w1.qcow2",
            "create volume w1-seed.img",
            "create domain w1",
        ]
    );
    let (_, done) = host.apply(&spec);
    assert_eq!(done.len(), 8);
    let second = host.hv.plan(&spec).unwrap();
    assert!(second.is_noop(), "{second}");
    let (_, done) = host.apply(&spec);
    assert!(done.is_empty(), "second apply did {done:?}");
    let status = host.hv.status(&spec).unwrap();
    assert!(
        status.iter().all(|s| s.defined && s.owned && s.running),
        "{status:?}"
    );
}

#[test]
fn seeds_are_fat_images_with_the_node_settings_and_host_keys_are_recorded() {
    let host = TestHost::new();
    let spec = host.spec(&[("cp", 10, 2)]);
    host.apply(&spec);
    let image = std::fs::read(host.pool_dir().join("cp-seed.img")).unwrap();
    // It holds the node's host private key: its owner alone reads it.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(host.pool_dir().join("cp-seed.img"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "seed mode {mode:o}");
    let mut cursor = std::io::Cursor::new(image);
    let fs = fatfs::FileSystem::new(&mut cursor, fatfs::FsOptions::new()).unwrap();
    assert_eq!(fs.volume_label().trim(), "cidata");
    let mut user_data = String::new();
    fs.root_dir()
        .open_file("user-data")
        .unwrap()
        .read_to_string(&mut user_data)
        .unwrap();
    let mut network = String::new();
    fs.root_dir()
        .open_file("network-config")
        .unwrap()
        .read_to_string(&mut network)
        .unwrap();
    assert!(network.contains("192.168.150.10/24"), "{network}");
    let known = host.hv.known_hosts(&spec).unwrap();
    assert_eq!(known.len(), 1);
    assert_eq!(known[0].ip, "192.168.150.10");
    assert!(known[0].host_key.starts_with("ssh-ed25519 "));
    assert!(
        user_data.contains(known[0].host_key.split(' ').nth(1).unwrap()),
        "seed carries the recorded host key"
    );
}

#[test]
fn foreign_objects_are_refused_by_name_and_kept_by_destroy() {
    let host = TestHost::new();
    let spec = host.spec(&[("cp", 10, 2)]);
    // Someone else's domain with the node's name, and an unowned network with ours.
    let conn = host.hv.connection();
    conn.define_domain_xml("<domain type='test'><name>cp</name><memory unit='MiB'>128</memory><os><type>hvm</type></os></domain>")
        .unwrap();
    conn.define_network_xml("<network><name>lab-net</name><bridge name='virbr9'/></network>")
        .unwrap();
    let plan = host.hv.plan(&spec).unwrap();
    let conflicts: Vec<String> = plan
        .conflicts()
        .map(|a| format!("{} {}", a.kind, a.name))
        .collect();
    assert_eq!(conflicts, ["network lab-net", "domain cp"]);
    let err = host.hv.apply(&spec, &|_| {}).unwrap_err();
    match err {
        Error::Conflicts(c) => assert!(
            c.iter()
                .any(|c| c.contains("domain cp") && c.contains("not created by homelab")),
            "{c:?}"
        ),
        other => panic!("expected conflicts, got {other}"),
    }
    let destroyed = host.hv.destroy(&spec, &|_| {}).unwrap();
    assert!(
        destroyed
            .actions
            .iter()
            .all(|a| matches!(a.change, Change::Keep { .. })),
        "{destroyed}"
    );
    assert!(conn.lookup_domain_by_name("cp").is_ok());
    assert!(conn.lookup_network_by_name("lab-net").is_ok());
}

#[test]
fn destroy_removes_only_what_this_cluster_owns() {
    let host = TestHost::new();
    let spec = host.spec(&[("cp", 10, 2), ("w1", 11, 1)]);
    host.apply(&spec);
    // Another cluster on the same host.
    let mut other = host.spec(&[("other", 20, 1)]);
    other.cluster_id = "other".into();
    other.network.name = "other-net".into();
    other.pool.name = "other-pool".into();
    other.pool.path = host.dir.path().join("other");
    std::fs::create_dir(&other.pool.path).unwrap();
    host.apply(&other);

    let plan = host.hv.destroy(&spec, &|_| {}).unwrap();
    let mut deleted: Vec<String> = plan
        .actions
        .iter()
        .filter(|a| a.change == Change::Delete)
        .map(|a| format!("{} {}", a.kind, a.name))
        .collect();
    deleted.sort();
    assert_eq!(
        deleted,
        [
            "domain cp",
            "domain w1",
            "network lab-net",
            "pool lab-pool",
            "volume cp-seed.img",
            "volume cp.qcow2",
            "volume w1-seed.img",
            "volume w1.qcow2"
        ]
    );
    assert!(host.hv.destroy_plan(&spec).unwrap().actions.is_empty());
    let status = host.hv.status(&other).unwrap();
    assert!(
        status[0].running && status[0].owned,
        "the other cluster is untouched"
    );
    assert!(host.hv.plan(&other).unwrap().is_noop());
}

#[test]
fn changes_are_applied_in_place_or_by_replacement() {
    let host = TestHost::new();
    let spec = host.spec(&[("cp", 10, 2), ("w1", 11, 1)]);
    host.apply(&spec);
    let keys_before = host.hv.known_hosts(&spec).unwrap();

    // (Growing a disk is covered by the real-VM suite: the test driver cannot resize.)
    let changed = host.spec(&[("cp", 10, 4), ("w1", 12, 1)]);
    let plan = host.hv.plan(&changed).unwrap();
    let find = |kind: ObjectKind, name: &str| {
        plan.actions
            .iter()
            .find(|a| a.kind == kind && a.name == name)
            .unwrap()
            .change
            .clone()
    };
    assert!(matches!(
        find(ObjectKind::Domain, "cp"),
        Change::Update { .. }
    ));
    assert_eq!(find(ObjectKind::Volume, "cp.qcow2"), Change::Unchanged);
    match find(ObjectKind::Domain, "w1") {
        Change::Replace { reasons } => assert!(reasons[0].contains("first-boot"), "{reasons:?}"),
        other => panic!("expected replace, got {other:?}"),
    }
    host.apply(&changed);
    assert!(host.hv.plan(&changed).unwrap().is_noop());
    let keys_after = host.hv.known_hosts(&changed).unwrap();
    assert_eq!(
        keys_after[0].host_key, keys_before[0].host_key,
        "an in-place change keeps the host key"
    );
    assert_ne!(
        keys_after[1].host_key, keys_before[1].host_key,
        "a new node has a new host key"
    );
    assert_eq!(keys_after[1].ip, "192.168.150.12");
}

/// The persistent definition of a domain (what the next boot uses).
fn persistent_xml(host: &TestHost, name: &str) -> String {
    const INACTIVE: u32 = 2;
    host.hv
        .connection()
        .lookup_domain_by_name(name)
        .unwrap()
        .xml_desc(INACTIVE)
        .unwrap()
}

#[test]
fn retired_seeds_leave_the_pool_and_the_definitions_and_stay_retired() {
    let host = TestHost::new();
    let spec = host.spec(&[("cp", 10, 2), ("w1", 11, 1)]);
    host.apply(&spec);
    let keys = host.hv.known_hosts(&spec).unwrap();
    let told = std::sync::Mutex::new(Vec::new());
    let removed = host
        .hv
        .retire_seeds(&spec, &|e| told.lock().unwrap().push(e.to_string()))
        .unwrap();
    let told = told.into_inner().unwrap();
    assert_eq!(
        labels(&VmPlan { actions: removed }),
        ["delete volume cp-seed.img", "delete volume w1-seed.img"]
    );
    assert_eq!(
        told,
        ["delete volume cp-seed.img", "delete volume w1-seed.img"]
    );
    for node in ["cp", "w1"] {
        assert!(!host.pool_dir().join(format!("{node}-seed.img")).exists());
        let xml = persistent_xml(&host, node);
        let disks = libvirt_vm::xml::domain_disk_files(&xml);
        assert!(!disks.iter().any(|d| d.ends_with("-seed.img")), "{disks:?}");
        let meta = libvirt_vm::xml::read_owner_meta(&xml).unwrap();
        assert_eq!(
            meta.extra.get(libvirt_vm::xml::SEED_RETIRED),
            Some(&format!("{node}-seed.img"))
        );
    }
    // Settled: nothing to plan, nothing more to retire, the host keys are still known.
    let plan = host.hv.plan(&spec).unwrap();
    assert!(plan.is_noop(), "{plan}");
    assert!(!labels(&plan).iter().any(|l| l.contains("seed")), "{plan}");
    assert!(host.hv.retire_seeds(&spec, &|_| {}).unwrap().is_empty());
    assert_eq!(host.hv.known_hosts(&spec).unwrap(), keys);

    // A change in place keeps the node retired; a first-boot change makes a new node with
    // a new seed, which is retired again later.
    let changed = host.spec(&[("cp", 10, 4), ("w1", 12, 1)]);
    let (_, done) = host.apply(&changed);
    assert_eq!(
        done,
        [
            "replace domain w1",
            "change network lab-net",
            "change domain cp",
            "replace volume w1.qcow2",
            "replace volume w1-seed.img",
        ]
    );
    let disks = |node| libvirt_vm::xml::domain_disk_files(&persistent_xml(&host, node));
    assert!(!disks("cp").iter().any(|d| d.ends_with("cp-seed.img")));
    assert!(disks("w1").iter().any(|d| d.ends_with("w1-seed.img")));
    assert!(host.pool_dir().join("w1-seed.img").exists());
    assert!(host.hv.plan(&changed).unwrap().is_noop());
    let removed = host.hv.retire_seeds(&changed, &|_| {}).unwrap();
    assert_eq!(
        labels(&VmPlan { actions: removed }),
        ["delete volume w1-seed.img"]
    );

    // Destroy leaves nothing in the pool directory but what the test put there.
    host.hv.destroy(&changed, &|_| {}).unwrap();
    let left: Vec<_> = std::fs::read_dir(host.pool_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn adding_a_node_updates_the_network_in_place() {
    let host = TestHost::new();
    host.apply(&host.spec(&[("cp", 10, 2)]));
    let bigger = host.spec(&[("cp", 10, 2), ("w1", 11, 1)]);
    let plan = host.hv.plan(&bigger).unwrap();
    match &plan.actions[0].change {
        Change::Update { reasons } => assert_eq!(reasons, &["DHCP host entries changed"]),
        other => panic!("expected an in-place network update, got {other:?}"),
    }
    host.apply(&bigger);
    let xml = host
        .hv
        .connection()
        .lookup_network_by_name("lab-net")
        .unwrap()
        .xml_desc(0)
        .unwrap();
    assert_eq!(
        libvirt_vm::xml::network_dhcp_hosts(&xml),
        [
            "52:54:00:a8:96:0a 192.168.150.10 cp",
            "52:54:00:a8:96:0b 192.168.150.11 w1"
        ]
    );
    assert!(host.hv.plan(&bigger).unwrap().is_noop());
    host.apply(&host.spec(&[("cp", 10, 2)]));
    let xml = host
        .hv
        .connection()
        .lookup_network_by_name("lab-net")
        .unwrap()
        .xml_desc(0)
        .unwrap();
    assert_eq!(
        libvirt_vm::xml::network_dhcp_hosts(&xml),
        ["52:54:00:a8:96:0a 192.168.150.10 cp"]
    );
}

#[test]
fn an_interrupted_apply_converges() {
    let host = TestHost::new();
    let spec = host.spec(&[("cp", 10, 2)]);
    // Stop after the volumes, before the domain is defined (as a killed process would).
    let conn = host.hv.connection();
    let partial = host.spec(&[]);
    host.apply(&partial);
    let pool = conn.lookup_storage_pool_by_name("lab-pool").unwrap();
    virt::storage_vol::StorageVol::create_xml(
        &pool,
        "<volume><name>cp.qcow2</name><capacity>1024</capacity></volume>",
        0,
    )
    .unwrap();
    let plan = host.hv.plan(&spec).unwrap();
    assert!(
        labels(&plan).contains(&"replace volume cp.qcow2".to_owned()),
        "{plan}"
    );
    host.apply(&spec);
    assert!(host.hv.plan(&spec).unwrap().is_noop());
    // A stopped node is started again.
    conn.lookup_domain_by_name("cp").unwrap().destroy().unwrap();
    assert_eq!(
        labels(&host.hv.plan(&spec).unwrap()).last().unwrap(),
        "start domain cp"
    );
    host.apply(&spec);
    assert_eq!(host.hv.domain_state("cp"), "running");
}

#[test]
fn a_stopped_network_whose_hosts_changed_converges_in_one_apply() {
    let host = TestHost::new();
    host.apply(&host.spec(&[("cp", 10, 2)]));
    let conn = host.hv.connection();
    conn.lookup_network_by_name("lab-net")
        .unwrap()
        .destroy()
        .unwrap();
    let bigger = host.spec(&[("cp", 10, 2), ("w1", 11, 1)]);
    host.apply(&bigger);
    let again = host.hv.plan(&bigger).unwrap();
    assert!(again.is_noop(), "{again}");
    assert!(
        conn.lookup_network_by_name("lab-net")
            .unwrap()
            .is_active()
            .unwrap()
    );
}

#[test]
fn volumes_hidden_by_a_stopped_pool_do_not_block_the_apply() {
    let host = TestHost::new();
    let spec = host.spec(&[("cp", 10, 2)]);
    host.apply(&spec);
    // The node's domain is gone (an interrupted re-create), its volumes are still in the
    // pool, and the pool is stopped: the plan cannot see them.
    let conn = host.hv.connection();
    let dom = conn.lookup_domain_by_name("cp").unwrap();
    dom.destroy().unwrap();
    dom.undefine().unwrap();
    conn.lookup_storage_pool_by_name("lab-pool")
        .unwrap()
        .destroy()
        .unwrap();
    let plan = host.hv.plan(&spec).unwrap();
    assert!(
        labels(&plan).contains(&"create volume cp.qcow2".to_owned()),
        "{plan}"
    );
    host.apply(&spec);
    assert!(host.hv.plan(&spec).unwrap().is_noop());
    assert_eq!(host.hv.domain_state("cp"), "running");
}

#[test]
fn domain_xml_in_libvirt_uses_file_disks_and_metadata() {
    let host = TestHost::new();
    let spec = host.spec(&[("cp", 10, 2)]);
    host.apply(&spec);
    let conn = host.hv.connection();
    let xml = conn
        .lookup_domain_by_name("cp")
        .unwrap()
        .xml_desc(0)
        .unwrap();
    assert!(xml.contains("<disk type='file' device='disk'>"), "{xml}");
    assert!(!xml.contains("type='volume'"));
    let pool = host.pool_dir();
    assert!(xml.contains(&format!("{}", Path::new(&pool).join("cp.qcow2").display())));
    let meta = libvirt_vm::xml::read_owner_meta(&xml).unwrap();
    assert_eq!(meta.cluster, "lab");
}

proptest! {
    // Failures are persisted next to this file, and the seeds checked in there re-run first.
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// Any sequence of desired specs converges on the real (test-driver) libvirt: after each
    /// apply, a second apply changes nothing, and exactly the wanted nodes exist.
    #[test]
    fn sequences_of_specs_converge(
        steps in prop::collection::vec(
            prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), (10u8..13, 1u32..3), 0..3),
            1..4,
        )
    ) {
        let host = TestHost::new();
        for step in &steps {
            // Addresses must be unique within a spec.
            let mut used = std::collections::HashSet::new();
            let nodes: Vec<(&str, u8, u32)> = step
                .iter()
                .filter(|(_, (ip, _))| used.insert(*ip))
                .map(|(name, (ip, cpus))| (*name, *ip, *cpus))
                .collect();
            let spec = host.spec(&nodes);
            host.apply(&spec);
            let (_, again) = host.apply(&spec);
            prop_assert!(again.is_empty(), "second apply did {:?}", again);
            let status = host.hv.status(&spec).unwrap();
            prop_assert!(status.iter().all(|s| s.running && s.owned));
        }
        let last = host.spec(&[]);
        host.hv.destroy(&last, &|_| {}).unwrap();
        prop_assert!(host.hv.destroy_plan(&last).unwrap().actions.is_empty());
    }
}
