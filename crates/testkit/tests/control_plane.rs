//! The real control plane fixture itself: it starts, serves discovery and the pinned
//! version, is gone when dropped, and its binaries come from the build cache.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use homelab_testkit::control_plane::{ControlPlane, kube_bin_dir};

fn alive(pid: u32) -> bool {
    // A killed child that was waited for has no /proc entry; a zombie would show state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.split_whitespace().nth(2) != Some("Z"))
}

#[tokio::test]
async fn starts_serves_discovery_and_tears_down() {
    let plane = ControlPlane::start().await.unwrap();
    let client = plane.client().await.unwrap();
    // The version is the one the Go module pins.
    let go_mod =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("kube/go.mod")).unwrap();
    let pinned = go_mod
        .lines()
        .find_map(|l| l.strip_prefix("require k8s.io/kubernetes "))
        .unwrap()
        .trim();
    assert_eq!(plane.version, pinned);
    // Discovery lists the built-in groups, as a real server does.
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let groups: Vec<String> = discovery.groups().map(|g| g.name().to_owned()).collect();
    for group in [
        "",
        "apps",
        "apiextensions.k8s.io",
        "rbac.authorization.k8s.io",
    ] {
        assert!(groups.iter().any(|g| g == group), "{group:?} in {groups:?}");
    }
    // It answers with the admin's identity, as a member of system:masters.
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    let names: Vec<String> = namespaces
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.iter().any(|n| n == "kube-system"), "{names:?}");
    let (etcd, apiserver) = plane.pids();
    let kubeconfig = plane.kubeconfig();
    assert!(alive(etcd) && alive(apiserver));
    drop(plane);
    assert!(!alive(etcd), "etcd still runs");
    assert!(!alive(apiserver), "kube-apiserver still runs");
    assert!(!kubeconfig.exists(), "the fixture's files are removed");
}

#[test]
fn binaries_come_from_the_cache() {
    // Built once per machine and version (make test builds them before the tests run);
    // asking again reuses them without building.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kube-tools.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("kube-apiserver")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("building"), "rebuilt: {stderr}");
    let dir = kube_bin_dir().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        dir.to_str().unwrap()
    );
    assert!(dir.join("kube-apiserver").is_file());
}
