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
    // etcd is the 3.5 release Kubernetes requires (go.mod), not Debian's 3.4.
    let etcd = std::process::Command::new(dir.join("etcd"))
        .arg("--version")
        .output()
        .unwrap();
    let etcd = String::from_utf8_lossy(&etcd.stdout).into_owned();
    let wanted = go_mod_version("go.etcd.io/etcd/server/v3");
    assert!(
        etcd.contains(&format!("etcd Version: {}", wanted.trim_start_matches('v'))),
        "{etcd}"
    );
}

/// The version go.mod requires of `module`.
fn go_mod_version(module: &str) -> String {
    let go_mod =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("kube/go.mod")).unwrap();
    go_mod
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("require ")
                .unwrap_or(l.trim())
                .strip_prefix(&format!("{module} "))
                .map(|v| v.split_whitespace().next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("{module} not in go.mod"))
}

/// Polls `probe` until it yields, for at most 60 s.
async fn until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{what} did not happen within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// With kube-controller-manager and kube-scheduler: what a fake API server cannot do. A new
/// namespace gets its `default` service account, a deployment becomes a replica set and a
/// pod, the scheduler binds the pod to the only Ready node (no kubelet runs it), and an
/// emptied namespace finishes deleting.
#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn controllers_and_scheduler_act_on_what_is_applied() {
    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, ServiceAccount};
    use kube::api::{Api, DeleteParams, ListParams, PostParams};

    let mut plane = ControlPlane::start().await.unwrap();
    plane.start_controllers().await.unwrap();
    let client = plane.client().await.unwrap();
    let post = PostParams::default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &post,
            &serde_json::from_value(serde_json::json!({ "metadata": { "name": "lab" } })).unwrap(),
        )
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "lab");
    until("the default ServiceAccount", async || {
        accounts.get_opt("default").await.unwrap()
    })
    .await;

    // A Node that says it is Ready (nothing runs on it: there is no kubelet).
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "n1", "labels": { "kubernetes.io/hostname": "n1" } },
    }))
    .unwrap();
    nodes.create(&post, &node).await.unwrap();
    let status = serde_json::json!({ "status": {
        "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fixture" }],
        "allocatable": { "cpu": "4", "memory": "8Gi", "pods": "110" },
        "capacity": { "cpu": "4", "memory": "8Gi", "pods": "110" },
    }});
    nodes
        .patch_status(
            "n1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await
        .unwrap();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "lab");
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web" },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "web" } },
                  "template": { "metadata": { "labels": { "app": "web" } },
                                "spec": { "containers": [{ "name": "web", "image": "nginx:1.27" }] } } },
    }))
    .unwrap();
    deployments.create(&post, &deployment).await.unwrap();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "lab");
    until("a ReplicaSet", async || {
        sets.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "lab");
    let bound = until("a Pod bound to n1", async || {
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find_map(|p| p.spec.and_then(|s| s.node_name))
    })
    .await;
    assert_eq!(bound, "n1");
    // The Deployment's status comes from the controller (never available: no kubelet); it
    // writes it after the ReplicaSet's, which may be after the pod is bound (seen on CI).
    let replicas = until("the Deployment's status from its controller", async || {
        deployments
            .get("web")
            .await
            .unwrap()
            .status
            .and_then(|s| s.replicas)
    })
    .await;
    assert_eq!(replicas, 1);

    // An emptied namespace finishes deleting (the namespace controller).
    namespaces
        .create(
            &post,
            &serde_json::from_value(serde_json::json!({ "metadata": { "name": "gone" } })).unwrap(),
        )
        .await
        .unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "gone");
    maps.create(
        &post,
        &serde_json::from_value(
            serde_json::json!({ "metadata": { "name": "c" }, "data": { "k": "v" } }),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    namespaces
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    until("namespace gone deleted", async || {
        namespaces
            .get_opt("gone")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}
