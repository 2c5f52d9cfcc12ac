//! kubeadm configuration files compared with reviewed files in tests/golden/ (one set per
//! API version). `UPDATE_GOLDEN=1` rewrites them after an intended change.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::PathBuf;

use kubeadm_boot::kubeadm::{
    BootstrapToken, KubeadmNode, KubeadmSpec, Version, init_config, join_config,
};

fn check(name: &str, actual: &str) {
    homelab_testkit::check_golden(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden"),
        name,
        actual,
    );
}

fn spec(minor: u32) -> KubeadmSpec {
    KubeadmSpec::new(
        "homelab",
        Version {
            major: 1,
            minor,
            patch: 4,
        },
        "192.168.122.10:6443",
    )
    .image_repository(Some("harbor.homelab.lan/k8s".into()))
}

#[test]
fn init_and_join_per_api_version() {
    let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
    let cp = KubeadmNode::new("k8s-cp-1", Ipv4Addr::new(192, 168, 122, 10));
    let worker = KubeadmNode::new("k8s-worker-1", Ipv4Addr::new(192, 168, 122, 11));
    let hash = "sha256:9f0c4e0c1d7f2a8a0b7a0e8b5f8b6b7f9e3d2c1b0a9f8e7d6c5b4a3928170615";
    for (minor, api) in [(30, "v1beta3"), (33, "v1beta4")] {
        check(
            &format!("init-{api}.yaml"),
            &init_config(&spec(minor), &cp, Some(&token)).unwrap(),
        );
        check(
            &format!("join-{api}.yaml"),
            &join_config(&spec(minor), &worker, &token, hash).unwrap(),
        );
    }
}

/// The real kubeadm of the pinned release (built from its Go module) accepts every
/// configuration homelab writes for it: unknown fields, misspelt keys and invalid values are
/// errors to `kubeadm config validate`, which the golden files cannot catch.
#[test]
fn the_real_kubeadm_accepts_the_init_and_join_files() {
    let kubeadm = homelab_testkit::control_plane::kube_bin_dir()
        .unwrap()
        .join("kubeadm");
    assert!(
        kubeadm.exists(),
        "{} is not built: run scripts/kube-tools.sh kubeadm (make test does)",
        kubeadm.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
    let node = KubeadmNode::new("cp", Ipv4Addr::new(192, 168, 122, 10));
    for slow in [false, true] {
        let mut spec = spec(33);
        spec.version.patch = 5;
        spec.slow_nodes = slow;
        for (name, text) in [
            (
                "init.yaml",
                init_config(&spec, &node, Some(&token)).unwrap(),
            ),
            (
                "join.yaml",
                join_config(&spec, &node, &token, &format!("sha256:{}", "0".repeat(64))).unwrap(),
            ),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, &text).unwrap();
            let out = std::process::Command::new(&kubeadm)
                .args(["config", "validate", "--config"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "kubeadm refuses {name} (slow nodes: {slow}): {}{}\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
