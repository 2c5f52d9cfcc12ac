//! The bootstrap steps' shell, run for real against a scripted kubeadm, kubectl and systemctl
//! that keep the node's files in a temporary directory and the cluster's objects in a state
//! directory. kubeadm writes admin.conf early in `init` (its kubeconfig phase): an init that
//! died after it must be finished on the next run, not skipped; a join that failed half-way
//! leaves files kubeadm's join preflight refuses, so the next join must reset first.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use kubeadm_boot::bootstrap::{init_steps_in, join_step_in};
use kubeadm_boot::kubeadm::{BootstrapToken, ClusterSpec, NodeSpec};
use kubeadm_boot::steps::{Change, Check, Step};

/// kubeadm as far as the steps use it. `$STATE/die-after` makes `init` stop after that phase.
const KUBEADM: &str = r#"#!/bin/sh
echo "$*" >> "$STATE/log"
K=$KDIR
obj() { mkdir -p "$STATE/objects/$1/${2%/*}"; : > "$STATE/objects/$1/$2"; }
die() { [ "$(cat "$STATE/die-after" 2>/dev/null)" = "$1" ] && { echo "kubeadm stand-in: stopped after $1" >&2; exit 1; }; true; }
case "$1 $2" in
  "init --config")
    [ -e "$K/manifests/kube-apiserver.yaml" ] && { echo "[preflight] FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml: already exists" >&2; exit 1; }
    mkdir -p "$K/pki" "$K/manifests"; : > "$K/pki/ca.crt"; : > "$K/admin.conf"; die kubeconfig || exit 1
    : > "$K/manifests/etcd.yaml"; : > "$K/manifests/kube-apiserver.yaml"
    : > "$K/kubelet.conf"; : > "$STATE/kubelet-running"; : > "$STATE/api-up"; die wait-control-plane || exit 1
    obj kube-system configmap/kubeadm-config; obj kube-system configmap/kubelet-config
    obj kube-public configmap/cluster-info; obj kube-system deployment/coredns; obj kube-system daemonset/kube-proxy ;;
  "init phase")
    case "$3 $4" in
      "etcd local") : > "$K/manifests/etcd.yaml" ;;
      "control-plane all") : > "$K/manifests/kube-apiserver.yaml" ;;
      "kubelet-start --config") : > "$K/kubelet.conf"; : > "$STATE/kubelet-running"; : > "$STATE/api-up" ;;
      "upload-config all") obj kube-system configmap/kubeadm-config; obj kube-system configmap/kubelet-config ;;
      "bootstrap-token --config") obj kube-public configmap/cluster-info ;;
      "addon coredns") obj kube-system deployment/coredns ;;
      "addon kube-proxy") obj kube-system daemonset/kube-proxy ;;
    esac ;;
  "reset -f") rm -rf "$K/kubelet.conf" "$K/bootstrap-kubelet.conf" "$K/pki" "$K/manifests"; mkdir -p "$K/manifests" ;;
  "join --config")
    for f in kubelet.conf bootstrap-kubelet.conf pki/ca.crt; do
      [ -e "$K/$f" ] && { echo "[preflight] FileAvailable: $K/$f already exists" >&2; exit 1; }
    done
    mkdir -p "$K/pki"; : > "$K/pki/ca.crt"; : > "$K/bootstrap-kubelet.conf"; die bootstrap || exit 1
    : > "$K/kubelet.conf"; rm -f "$K/bootstrap-kubelet.conf" ;;
  *) echo "kubeadm stand-in: $* not scripted" >&2; exit 2 ;;
esac
"#;

/// kubectl `get` of objects (and `--raw /readyz`) against the state directory.
const KUBECTL: &str = r#"#!/bin/sh
ns=default; raw=""; res=""
while [ $# -gt 0 ]; do
  case "$1" in
    --kubeconfig) [ -f "$2" ] || { echo "kubeconfig $2 missing" >&2; exit 1; }; shift 2 ;;
    --request-timeout=*) shift ;;
    -n) ns=$2; shift 2 ;;
    get) shift ;;
    --raw) raw=$2; shift 2 ;;
    -o) shift 2 ;;
    *) res="$res $1"; shift ;;
  esac
done
[ -e "$STATE/api-up" ] || { echo "connection refused" >&2; exit 1; }
[ -n "$raw" ] && exit 0
for r in $res; do [ -e "$STATE/objects/$ns/$r" ] || { echo "NotFound: $r" >&2; exit 1; }; done
"#;

const SYSTEMCTL: &str = r#"#!/bin/sh
[ "$1 $2 $3" = "is-active --quiet kubelet" ] && { [ -e "$STATE/kubelet-running" ]; exit; }
echo "systemctl stand-in: $* not scripted" >&2; exit 2
"#;

struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["bin", "state", "k/homelab"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        for (name, script) in [
            ("kubeadm", KUBEADM),
            ("kubectl", KUBECTL),
            ("systemctl", SYSTEMCTL),
        ] {
            let path = dir.path().join("bin").join(name);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(dir.path().join("state/log"), "").unwrap();
        Self { dir }
    }

    fn k(&self) -> String {
        self.dir.path().join("k").display().to_string()
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn sh(&self, line: &str) -> (bool, String) {
        let out = Command::new("sh")
            .arg("-c")
            .arg(line)
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.path("bin").display()),
            )
            .env("STATE", self.path("state"))
            .env("KDIR", self.k())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Whether the step's check says the node is in the wanted state.
    fn done(&self, step: &Step) -> bool {
        let Check::Command(cmd) = &step.check else {
            panic!("{} is checked by a command", step.name)
        };
        self.sh(&cmd.line).0
    }

    /// Runs the step's changes as the engine would (uploads written to their paths).
    fn apply(&self, step: &Step) -> (bool, String) {
        for change in &step.changes {
            match change {
                Change::Upload { path, contents, .. } => {
                    std::fs::create_dir_all(Path::new(path).parent().unwrap()).unwrap();
                    std::fs::write(path, contents).unwrap();
                }
                Change::Run(cmd) => return self.sh(&cmd.line),
            }
        }
        (true, String::new())
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("state/log"))
            .unwrap()
            .lines()
            .map(|l| {
                // Without the config path, which differs per test.
                l.split(" --config").next().unwrap().trim().to_owned()
            })
            .collect()
    }

    fn clear_log(&self) {
        std::fs::write(self.path("state/log"), "").unwrap();
    }
}

fn cluster() -> ClusterSpec {
    ClusterSpec {
        name: "lab".into(),
        version: "1.33.5".parse().unwrap(),
        control_plane_endpoint: "192.168.122.10:6443".into(),
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        image_repository: None,
        cri_socket: "unix:///run/containerd/containerd.sock".into(),
    }
}

fn cp() -> NodeSpec {
    NodeSpec {
        name: "cp".into(),
        address: "192.168.122.10".parse().unwrap(),
    }
}

fn init(node: &Node) -> Step {
    init_steps_in(&node.k(), &cluster(), &cp())
        .unwrap()
        .remove(1)
}

#[test]
fn a_fresh_control_plane_runs_kubeadm_init_once() {
    let node = Node::new();
    let step = init(&node);
    assert!(!node.done(&step));
    let (ok, stderr) = node.apply(&step);
    assert!(ok, "{stderr}");
    assert_eq!(node.log(), ["init"]);
    assert!(node.done(&step), "a finished init is done");
}

#[test]
fn an_init_that_died_after_writing_admin_conf_is_finished_phase_by_phase() {
    let node = Node::new();
    let step = init(&node);
    std::fs::write(node.path("state/die-after"), "kubeconfig").unwrap();
    assert!(!node.apply(&step).0, "the first init dies");
    assert!(node.path("k/admin.conf").exists());
    std::fs::remove_file(node.path("state/die-after")).unwrap();
    node.clear_log();
    // admin.conf is there, but the cluster lacks what joins need: not done.
    assert!(!node.done(&step));
    let (ok, stderr) = node.apply(&step);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("did not finish on an earlier run"),
        "{stderr}"
    );
    assert_eq!(
        node.log(),
        [
            "init phase etcd local",
            "init phase control-plane all",
            "init phase kubelet-start",
            "init phase upload-config all",
            "init phase mark-control-plane",
            "init phase bootstrap-token",
            "init phase kubelet-finalize all",
            "init phase addon coredns",
            "init phase addon kube-proxy",
        ]
    );
    assert!(node.done(&step));
}

#[test]
fn an_init_that_died_with_the_api_up_runs_only_the_missing_phases() {
    let node = Node::new();
    let step = init(&node);
    std::fs::write(node.path("state/die-after"), "wait-control-plane").unwrap();
    assert!(!node.apply(&step).0);
    std::fs::remove_file(node.path("state/die-after")).unwrap();
    node.clear_log();
    assert!(!node.done(&step));
    let (ok, stderr) = node.apply(&step);
    assert!(ok, "{stderr}");
    assert_eq!(
        node.log(),
        [
            "init phase upload-config all",
            "init phase mark-control-plane",
            "init phase bootstrap-token",
            "init phase kubelet-finalize all",
            "init phase addon coredns",
            "init phase addon kube-proxy",
        ]
    );
    assert!(node.done(&step));
    // Finished: the next run changes nothing.
    node.clear_log();
    assert!(node.done(&step));
    assert!(node.log().is_empty());
}

fn worker() -> NodeSpec {
    NodeSpec {
        name: "w1".into(),
        address: "192.168.122.11".parse().unwrap(),
    }
}

fn join(node: &Node, member: bool) -> Step {
    join_step_in(
        &node.k(),
        &cluster(),
        &worker(),
        &BootstrapToken::generate(),
        "sha256:00",
        member,
    )
    .unwrap()
}

#[test]
fn a_half_joined_node_is_reset_then_joined() {
    let node = Node::new();
    std::fs::write(node.path("state/die-after"), "bootstrap").unwrap();
    let (ok, _) = node.apply(&join(&node, false));
    assert!(!ok, "the first join dies after writing pki/ca.crt");
    assert!(node.path("k/pki/ca.crt").exists());
    assert!(
        !node.path("k/homelab/kubeadm-join.yaml").exists(),
        "the join file (it holds the token) is removed even when the join failed"
    );
    std::fs::remove_file(node.path("state/die-after")).unwrap();
    node.clear_log();
    let step = join(&node, false);
    assert!(!node.done(&step), "not registered: it joins");
    let (ok, stderr) = node.apply(&step);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("holds what an earlier join left ( bootstrap-kubelet.conf pki/ca.crt )"),
        "{stderr}"
    );
    let log = node.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[0].starts_with("reset -f --cri-socket"), "{log:?}");
    assert_eq!(log[1], "join");
    assert!(node.path("k/kubelet.conf").exists());
}

#[test]
fn a_clean_node_joins_without_reset_and_a_member_is_left_alone() {
    let node = Node::new();
    let step = join(&node, false);
    let (ok, stderr) = node.apply(&step);
    assert!(ok, "{stderr}");
    assert_eq!(node.log(), ["join"]);
    node.clear_log();
    // Registered with the cluster and holding kubelet.conf: nothing to do.
    assert!(node.done(&join(&node, true)));
    // Holding kubelet.conf of a cluster that does not know it (rebuilt): reset and join.
    let step = join(&node, false);
    assert!(!node.done(&step));
    assert!(node.apply(&step).0);
    assert_eq!(node.log()[1], "join");
    assert!(node.log()[0].starts_with("reset -f"));
}
