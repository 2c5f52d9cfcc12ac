//! The Kubernetes API scenarios of the unit tests (which use the fake API server), against a
//! real API server: the cluster `KUBECONFIG` names when it is set (Kind, or the cluster the
//! tools built), else a real control plane the test starts on loopback (testkit's
//! `ControlPlane`: etcd and a kube-apiserver built from its Go module).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use homelab_testkit::control_plane::{ControlPlane, cluster};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kubeadm_boot::{cni, nodes};

/// A Node object as a kubelet would register it, with its Ready condition.
async fn register_node(client: &Client, name: &str, ready: bool) {
    let api: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": { "name": name },
    }))
    .unwrap();
    api.create(&PostParams::default(), &node).await.unwrap();
    let status = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "status": {
            "conditions": [{
                "type": "Ready",
                "status": if ready { "True" } else { "False" },
                "reason": if ready { "KubeletReady" } else { "KubeletNotReady" },
                "message": if ready { "kubelet is posting ready status" } else { "container runtime network not ready" },
                "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
            "nodeInfo": {
                "kubeletVersion": "v1.33.5", "kubeProxyVersion": "", "containerRuntimeVersion": "containerd://1.7.24",
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
                "operatingSystem": "linux", "architecture": "amd64",
            },
        }
    });
    api.patch_status(
        name,
        &PatchParams::apply("homelab-test-kubelet").force(),
        &Patch::Apply(status),
    )
    .await
    .unwrap();
}

/// The node's Ready condition turned True, as its kubelet would.
async fn register_node_ready(client: &Client, name: &str) {
    let api: Api<Node> = Api::all(client.clone());
    api.patch_status(
        name,
        &PatchParams::apply("homelab-test-kubelet").force(),
        &Patch::Apply(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "status": { "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": "2026-01-01T00:01:00Z",
                "lastTransitionTime": "2026-01-01T00:01:00Z",
            }] }
        })),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn ready_nodes_are_reported_at_once() {
    let (client, plane) = cluster().await.unwrap();
    if plane.is_some() {
        // No kubelet runs beside this API server: the test registers nodes as kubelets do.
        register_node(&client, "cp", true).await;
        register_node(&client, "w1", false).await;
    }
    let all = nodes::list(&client).await.unwrap();
    assert!(!all.is_empty());
    let ready: Vec<String> = all
        .iter()
        .filter(|n| n.ready)
        .map(|n| n.name.clone())
        .collect();
    assert!(!ready.is_empty(), "no Ready node in the cluster: {all:?}");
    let started = std::time::Instant::now();
    nodes::wait_nodes_ready(&client, &ready, None, Duration::from_secs(30), &|_| {})
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    // Why `node` is not Ready, as the wait's timeout names it.
    let not_ready = |node: &'static str| {
        let client = client.clone();
        async move {
            nodes::wait_nodes_ready(
                &client,
                &[node.into()],
                None,
                Duration::from_secs(2),
                &|_| {},
            )
            .await
            .unwrap_err()
            .to_string()
        }
    };
    let err = not_ready("homelab-no-such-node").await;
    assert!(
        err.contains("homelab-no-such-node (not registered with the API server)"),
        "{err}"
    );
    if plane.is_some() {
        // A registered node that is not Ready is named with its condition, as on the fake.
        let err = not_ready("w1").await;
        assert!(
            err.contains("w1 (Ready=False (KubeletNotReady): container runtime network not ready)"),
            "{err}"
        );
        // Cordoning is a merge patch the real server accepts.
        nodes::set_unschedulable(&client, "cp", true).await.unwrap();
        assert!(
            nodes::list(&client)
                .await
                .unwrap()
                .iter()
                .any(|n| n.name == "cp" && n.unschedulable)
        );
    }
}

/// A manifest shaped like Flannel's release: a namespace, a cluster-scoped RBAC object, the
/// ConfigMap whose net-conf.json carries the pod network, and a DaemonSet (which the server
/// defaults heavily, so a client that re-sent a different object would change it).
fn flannel_like(ns: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: kube-flannel-cfg, namespace: {ns}}}\n\
         data:\n  net-conf.json: '{{\"Network\": \"10.244.0.0/16\", \"Backend\": {{\"Type\": \"vxlan\"}}}}'\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {ns}-flannel}}\n\
         rules:\n- apiGroups: ['']\n  resources: [nodes]\n  verbs: [get, list, watch]\n\
         ---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: kube-flannel-ds, namespace: {ns}}}\n\
         spec:\n  selector: {{matchLabels: {{app: flannel}}}}\n  template:\n    metadata: {{labels: {{app: flannel}}}}\n\
         \x20   spec:\n      hostNetwork: true\n      containers:\n      - name: kube-flannel\n\
         \x20       image: ghcr.io/flannel-io/flannel:v0.27.4\n        args: [--ip-masq, --kube-subnet-mgr]\n"
    )
}

#[tokio::test]
async fn manifests_are_applied_server_side_and_reapplied_unchanged() {
    let (client, _plane) = cluster().await.unwrap();
    let ns = format!("homelab-test-{}", std::process::id());
    let mut objects = cni::parse_manifest("test", &flannel_like(&ns)).unwrap();
    cni::set_pod_network(&mut objects, "10.50.0.0/16".parse().unwrap()).unwrap();
    let applied = cni::apply(&client, &objects).await.unwrap();
    assert_eq!(
        applied,
        [
            format!("Namespace {ns}"),
            format!("ConfigMap {ns}/kube-flannel-cfg"),
            format!("ClusterRole {ns}-flannel"),
            format!("DaemonSet {ns}/kube-flannel-ds"),
        ]
    );
    let versions = |client: Client, ns: String| async move {
        let mut out = BTreeMap::new();
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let cm = cms.get("kube-flannel-cfg").await.unwrap();
        out.insert("configmap", cm.metadata.resource_version.clone().unwrap());
        let ds: Api<k8s_openapi::api::apps::v1::DaemonSet> = Api::namespaced(client.clone(), &ns);
        let ds = ds.get("kube-flannel-ds").await.unwrap();
        out.insert("daemonset", ds.metadata.resource_version.clone().unwrap());
        // The server defaulted what the manifest left out; the field belongs to no manager.
        let template = ds.spec.unwrap().template.spec.unwrap();
        assert_eq!(template.restart_policy.as_deref(), Some("Always"));
        let cr: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
        let cr = cr.get(&format!("{ns}-flannel")).await.unwrap();
        out.insert("clusterrole", cr.metadata.resource_version.clone().unwrap());
        let managers: Vec<(String, String)> = cm
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                (
                    m.manager.unwrap_or_default(),
                    m.operation.unwrap_or_default(),
                )
            })
            .collect();
        (out, managers, cm.data.unwrap()["net-conf.json"].clone())
    };
    let (first, managers, conf) = versions(client.clone(), ns.clone()).await;
    assert!(conf.contains("10.50.0.0/16"), "{conf}");
    assert_eq!(managers, [("homelab".to_owned(), "Apply".to_owned())]);
    // Applying the same objects again changes nothing on a server that compares field by
    // field: not one resourceVersion moves.
    cni::apply(&client, &objects).await.unwrap();
    let (second, ..) = versions(client.clone(), ns.clone()).await;
    assert_eq!(
        second, first,
        "re-applying the same manifest changed objects"
    );

    // Another field manager takes the pod network over without force: the server refuses
    // with a conflict that names homelab; with force it wins, and homelab's forced re-apply
    // takes the field back.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let edit = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "kube-flannel-cfg", "namespace": ns },
        "data": { "net-conf.json": "{\"Network\": \"10.99.0.0/16\"}" },
    });
    let err = cms
        .patch(
            "kube-flannel-cfg",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&edit),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 409 && e.message.contains("homelab")),
        "{err}"
    );
    cms.patch(
        "kube-flannel-cfg",
        &PatchParams::apply("someone-else").force(),
        &Patch::Apply(&edit),
    )
    .await
    .unwrap();
    cni::apply(&client, &objects).await.unwrap();
    let (third, _, conf) = versions(client.clone(), ns.clone()).await;
    assert!(conf.contains("10.50.0.0/16"), "{conf}");
    assert_ne!(third["configmap"], first["configmap"]);
    assert_eq!(third["daemonset"], first["daemonset"]);

    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}

/// A pod bound to `node` (no kubelet runs here: the pod stays as the API server stores it),
/// deleted at once when evicted (grace period 0).
fn pod_on(node: &str, name: &str, extra: &serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
    let mut pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [{ "name": "c", "image": "registry.k8s.io/pause:3.10" }],
        },
    });
    if let (Some(meta), Some(add)) = (pod["metadata"].as_object_mut(), extra.as_object()) {
        for (k, v) in add {
            meta.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(pod).unwrap()
}

/// The names of the pods `api` lists.
async fn names(api: &Api<k8s_openapi::api::core::v1::Pod>) -> Vec<String> {
    api.list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect()
}

/// Drain against the real eviction API: a PodDisruptionBudget that allows no disruption makes
/// the API server refuse the eviction (429) and the drain gives up naming the pod; without the
/// budget every movable pod is evicted, while DaemonSet and static (mirror) pods stay, as
/// `kubectl drain --ignore-daemonsets` leaves them.
#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn drain_evicts_through_the_real_eviction_api_and_respects_disruption_budgets() {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let (client, plane) = cluster().await.unwrap();
    if plane.is_none() {
        // Against a cluster someone uses, evicting pods is not a test's business.
        return;
    }
    register_node(&client, "drain-w1", true).await;
    let ns = "drain-test";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    // The real server's ServiceAccount admission refuses pods whose service account does not
    // exist (the fake admits anything); without kube-controller-manager nobody makes the
    // namespace's `default` one, so the test does.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), ns);
    let post = PostParams::default();
    accounts
        .create(
            &post,
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(&post, &pod_on("drain-w1", "web", &serde_json::json!({})))
        .await
        .unwrap();
    pods.create(
        &post,
        &pod_on("drain-w1", "guarded", &serde_json::json!({})),
    )
    .await
    .unwrap();
    pods.create(
        &post,
        &pod_on(
            "drain-w1",
            "agent",
            &serde_json::json!({ "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent",
                "uid": "00000000-0000-0000-0000-000000000001", "controller": true,
            }]}),
        ),
    )
    .await
    .unwrap();
    // Running and Ready, as a kubelet would report them: the real eviction API lets a
    // Pending pod go whatever its budget says (the fake did not know that), so the budget is
    // only tested on running pods.
    for name in ["web", "guarded", "agent"] {
        let status = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "status": {
                "phase": "Running",
                "conditions": [{ "type": "Ready", "status": "True" }],
            },
        });
        pods.patch_status(
            name,
            &PatchParams::apply("homelab-test-kubelet").force(),
            &Patch::Apply(status),
        )
        .await
        .unwrap();
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    pdbs.create(
        &post,
        &serde_json::from_value(serde_json::json!({
            "metadata": { "name": "guarded" },
            "spec": { "maxUnavailable": 0, "selector": { "matchLabels": { "app": "guarded" } } },
        }))
        .unwrap(),
    )
    .await
    .unwrap();

    let err = nodes::drain(&client, "drain-w1", Duration::from_secs(4))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("draining drain-w1: after ") && err.contains("drain-test/guarded"),
        "{err}"
    );
    let left = names(&pods).await;
    assert!(
        !left.contains(&"web".to_owned()),
        "the pod without a budget was evicted: {left:?}"
    );
    assert!(left.contains(&"guarded".to_owned()), "{left:?}");
    assert!(
        nodes::list(&client)
            .await
            .unwrap()
            .iter()
            .any(|n| n.name == "drain-w1" && n.unschedulable),
        "the node is cordoned"
    );

    pdbs.delete("guarded", &DeleteParams::default())
        .await
        .unwrap();
    nodes::drain(&client, "drain-w1", Duration::from_secs(30))
        .await
        .unwrap();
    let left = names(&pods).await;
    assert_eq!(left, ["agent"], "only the DaemonSet's pod stays");
}

/// A wait that outlives the API server: it is restarted while the wait watches (every
/// connection drops; its watch cache starts afresh from etcd, so a watch resumed from the
/// resourceVersion the wait last saw is answered `410 Gone` — shown on a watch of its own),
/// and the wait still sees the node become Ready.
#[tokio::test]
async fn a_wait_resumes_its_watch_across_an_api_server_restart_and_410_gone() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut plane = ControlPlane::start().await.unwrap();
    let client = plane.client().await.unwrap();
    register_node(&client, "late", false).await;
    let nodes_api: Api<Node> = Api::all(client.clone());
    let seen = nodes_api
        .get("late")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    let waiting = tokio::spawn({
        let client = client.clone();
        async move {
            nodes::wait_nodes_ready(
                &client,
                &["late".into()],
                None,
                Duration::from_secs(120),
                &|_| {},
            )
            .await
        }
    });
    // Writes elsewhere move etcd's revision past what the wait saw.
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..20 {
        maps.patch(
            &format!("busy-{i}"),
            &PatchParams::apply("homelab-test"),
            &Patch::Apply(serde_json::json!({ "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": format!("busy-{i}") }, "data": { "i": i.to_string() } })),
        )
        .await
        .unwrap();
    }
    plane.restart_apiserver().await.unwrap();
    let client = plane.client().await.unwrap();
    let request = http::Request::get(format!(
        "/api/v1/nodes?watch=true&resourceVersion={seen}&timeoutSeconds=2"
    ))
    .body(Vec::new())
    .unwrap();
    let answer = client.request_text(request).await.unwrap();
    assert!(
        answer.contains(r#""code":410"#) && answer.contains("too old resource version"),
        "a watch from {seen} after the restart: {answer}"
    );
    // The wait lived through the dropped connection and the 410 (before the fix it ended
    // with the watch's error).
    assert!(!waiting.is_finished(), "{:?}", waiting.await);
    register_node_ready(&client, "late").await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the wait did not see the node Ready after the restart")
        .unwrap()
        .unwrap();
    eprintln!("seen Ready {:.1?} after the update", started.elapsed());
}
