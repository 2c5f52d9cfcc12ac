//! `[cluster] provider = "kind"` through the `homelab` binary, with stand-ins for `kind` and
//! `docker` on the PATH that record their arguments and input (the CLI contract), and a
//! real API server (started on loopback) as the cluster `kind get kubeconfig` hands over.
//! A real Kind run needs `kind` and a container engine, which these machines do not have.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use assert_cmd::Command;
use homelab_testkit::control_plane::ControlPlane;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use tempfile::TempDir;

const KIND: &str = r#"#!/bin/sh
# Stand-in for kind: records its arguments, keeps the clusters in a file.
echo "kind $*" >> "$STANDIN/log"
state="$STANDIN/clusters"
touch "$state"
case "$1 $2" in
  "get clusters") cat "$state" ;;
  "create cluster") cat > "$STANDIN/config.yaml"; echo "$4" >> "$state" ;;
  "get kubeconfig") cat "$STANDIN/admin.kubeconfig" ;;
  "get nodes") if grep -qx "$4" "$state"; then echo "$4-control-plane"; echo "$4-worker"; fi ;;
  "delete cluster") grep -vx "$4" "$state" > "$state.new" || true; mv "$state.new" "$state" ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac
"#;

const DOCKER: &str = r#"#!/bin/sh
# Stand-in for docker: records its arguments and what it was given on stdin.
echo "docker $*" >> "$STANDIN/log"
cat > "$STANDIN/stdin-$3"
"#;

struct Rig {
    dir: TempDir,
    plane: ControlPlane,
}

impl Rig {
    async fn new() -> Self {
        let plane = ControlPlane::start().await.unwrap();
        let dir = TempDir::new().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for (name, text) in [("kind", KIND), ("docker", DOCKER)] {
            homelab_testkit::stand_in(&bin, name, text);
        }
        std::fs::copy(plane.kubeconfig(), dir.path().join("admin.kubeconfig")).unwrap();
        std::fs::write(
            dir.path().join("homelab.toml"),
            format!(
                "[cluster]\nprovider = \"kind\"\nkubeconfig = \"{}\"\n",
                dir.path().join("kube/config").display()
            ),
        )
        .unwrap();
        Self { dir, plane }
    }

    /// `homelab` with `PATH` set to `path`.
    fn homelab(&self, path: &str) -> Command {
        let mut cmd = Command::cargo_bin("homelab").unwrap();
        cmd.current_dir(self.dir.path())
            .env_remove("HOMELAB_CONFIG")
            .env_remove("KUBECONFIG")
            .env("STANDIN", self.dir.path())
            .env("PATH", path)
            .timeout(std::time::Duration::from_secs(120));
        cmd
    }

    /// The stand-ins first, then the system's programs their scripts use.
    fn bin(&self) -> String {
        format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display())
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    async fn node(&self, name: &str, owner: Option<&str>) {
        let client = self.plane.client().await.unwrap();
        let mut labels = serde_json::Map::new();
        if let Some(owner) = owner {
            labels.insert(homelab::kind::OWNER_LABEL.into(), owner.into());
        }
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": labels } }))
        .unwrap();
        Api::<Node>::all(client)
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn up_creates_the_kind_cluster_once_hands_over_its_kubeconfig_and_destroy_deletes_it() {
    let rig = Rig::new().await;
    rig.homelab(&rig.bin())
        .args(["up", "--yes"])
        .assert()
        .success();
    let log = rig.log();
    let kubeconfig = rig.dir.path().join("kube/config");
    assert!(
        log.contains(&format!(
            "kind create cluster --name homelab --config - --kubeconfig {} --wait 5m",
            // kind writes its own kubeconfig into a temporary file, never the user's.
            log.iter()
                .find_map(|l| l.split("--kubeconfig ").nth(1))
                .map(|rest| rest.split(' ').next().unwrap().to_owned())
                .filter(|p| !p.starts_with(&kubeconfig.display().to_string()))
                .unwrap()
        )),
        "{log:#?}"
    );
    // The configuration kind was given is the typed one, byte for byte.
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/homelab/tests/golden/kind-cluster.yaml");
    assert_eq!(
        std::fs::read_to_string(rig.dir.path().join("config.yaml")).unwrap(),
        std::fs::read_to_string(golden).unwrap()
    );
    // Every node got the registry's hosts.toml.
    for node in ["homelab-control-plane", "homelab-worker"] {
        assert!(
            log.iter().any(|l| l.starts_with(&format!(
                "docker exec -i {node} sh -c mkdir -p '/etc/containerd/certs.d/harbor.homelab.lan'"
            ))),
            "{log:#?}"
        );
        let hosts = std::fs::read_to_string(rig.dir.path().join(format!("stdin-{node}"))).unwrap();
        assert!(
            hosts.contains("server = \"https://harbor.homelab.lan\""),
            "{hosts}"
        );
    }
    // The kubeconfig is merged under the cluster's context, and the cluster answers there.
    let merged = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(merged.contains("current-context: homelab"), "{merged}");

    // Again: nothing is created a second time.
    rig.homelab(&rig.bin())
        .args(["up", "--yes"])
        .assert()
        .success();
    let creates = rig
        .log()
        .iter()
        .filter(|l| l.starts_with("kind create"))
        .count();
    assert_eq!(creates, 1);

    // destroy deletes only a cluster whose nodes carry homelab's label.
    rig.node("homelab-control-plane", Some("homelab")).await;
    rig.node("stranger", None).await;
    let out = rig
        .homelab(&rig.bin())
        .args(["destroy", "--yes"])
        .assert()
        .failure();
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(err.contains("kind cluster homelab left alone"), "{err}");
    assert!(!rig.log().iter().any(|l| l.starts_with("kind delete")));
    Api::<Node>::all(rig.plane.client().await.unwrap())
        .delete("stranger", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    rig.homelab(&rig.bin())
        .args(["destroy", "--yes"])
        .assert()
        .success();
    assert!(
        rig.log()
            .contains(&"kind delete cluster --name homelab".to_owned())
    );
    let out = rig
        .homelab(&rig.bin())
        .args(["destroy", "--yes"])
        .assert()
        .success();
    let said = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(said.contains("no kind cluster homelab"), "{said}");
}

#[tokio::test]
async fn without_kind_up_says_what_to_install() {
    let rig = Rig::new().await;
    let empty = rig.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    // Only an empty directory: whatever this machine has installed is not found.
    let out = rig
        .homelab(&empty.display().to_string())
        .args(["up", "--yes"])
        .assert()
        .failure();
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(
        err.contains("kind and docker or podman not found")
            && err.contains("https://kind.sigs.k8s.io/docs/user/quick-start/#installation"),
        "{err}"
    );
}

/// A real Kind cluster: `up`, `status`, a re-run, `destroy`. It needs `kind` and a container
/// engine; `make test` runs it only when both are on the PATH and says so otherwise (not
/// counted). Never run on these machines (no container engine).
#[test]
#[ignore = "needs kind and docker or podman: scripts/test.sh runs it when they are present"]
fn real_kind_up_status_destroy() {
    let dir = TempDir::new().unwrap();
    let name = format!("homelab-test-{}", std::process::id());
    std::fs::write(
        dir.path().join("homelab.toml"),
        format!(
            // A release Kind publishes a node image for.
            "[cluster]\nprovider = \"kind\"\nname = \"{name}\"\nkubernetes_version = \"1.33.1\"\nkubeconfig = \"{}\"\n",
            dir.path().join("kubeconfig").display()
        ),
    )
    .unwrap();
    let homelab = |args: &[&str]| {
        let mut cmd = Command::cargo_bin("homelab").unwrap();
        cmd.current_dir(dir.path())
            .env_remove("HOMELAB_CONFIG")
            .args(args)
            .timeout(std::time::Duration::from_secs(900));
        cmd
    };
    homelab(&["up", "--yes"]).assert().success();
    homelab(&["status"]).assert().success();
    homelab(&["up", "--yes"]).assert().success();
    homelab(&["destroy", "--yes"]).assert().success();
}
