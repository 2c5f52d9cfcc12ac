//! `cluster.provider = "existing"`: the pipeline is the existing cluster alone; `status` and
//! `verify` read its nodes, against the fake API server and against a real API server (the
//! cluster `KUBECONFIG` names, else a control plane started on loopback).
#![allow(clippy::unwrap_used)]

use homelab::{Lab, Pipeline, Selection, Status};
use homelab_config::{ClusterProvider, Config};
use homelab_testkit::control_plane::ControlPlane;
use homelab_testkit::kube_api::ApiServer;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn node(name: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node", "metadata": { "name": name },
        "status": {
            "conditions": [{
                "type": "Ready", "status": if ready { "True" } else { "False" },
                "reason": if ready { "KubeletReady" } else { "KubeletNotReady" },
                "message": if ready { "kubelet is posting ready status" } else { "PLEG is not healthy" },
                "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
            "nodeInfo": {
                "kubeletVersion": "v1.33.5", "containerRuntimeVersion": "containerd://1.7.24",
                "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": "", "osImage": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        }
    })
}

fn existing() -> Config {
    let mut config = Config::default();
    config.cluster.provider = ClusterProvider::Existing;
    config
}

#[tokio::test]
async fn status_and_verify_read_the_existing_cluster_on_the_fake() {
    let (client, server) = ApiServer::start(
        vec![node("kind-control-plane", true), node("kind-worker", false)],
        &[],
    );
    let lab = Lab::new(existing()).with_kube_client(client);
    let pipeline = Pipeline::for_lab(&lab);
    let status = Status::of(pipeline.status(&lab).await);
    assert!(!status.healthy, "a NotReady node is not healthy");
    let items: Vec<(String, String, bool)> = status.phases[0]
        .items
        .iter()
        .map(|i| (i.name.clone(), i.state.clone(), i.healthy))
        .collect();
    assert_eq!(
        items,
        [
            ("kind-control-plane".to_owned(), "Ready".to_owned(), true),
            ("kind-worker".to_owned(), "NotReady".to_owned(), false),
        ]
    );
    assert!(
        status.phases[0].items[0]
            .detail
            .contains("containerd://1.7.24")
    );
    let checks = pipeline.verify(&lab).await;
    let summary: Vec<(String, bool)> = checks.iter().map(|c| (c.name.clone(), c.passed)).collect();
    assert_eq!(
        summary,
        [
            ("API server".to_owned(), true),
            ("node kind-control-plane".to_owned(), true),
            ("node kind-worker".to_owned(), false),
        ]
    );
    assert!(checks[2].detail.contains("PLEG is not healthy"));
    assert!(
        checks[2]
            .fix
            .as_deref()
            .unwrap()
            .contains("journalctl -u kubelet")
    );
    // up changes nothing on a cluster it did not make; it only checks that it answers.
    let before = server.requests().len();
    let reports = pipeline.up(&lab, &Selection::all(), &|_| {}).await.unwrap();
    assert_eq!((reports[0].changed, reports[0].unchanged), (0, 0));
    let writes: Vec<String> = server.requests()[before..]
        .iter()
        .filter(|r| !r.starts_with("GET"))
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    server.update(node("kind-worker", true));
    assert!(Status::of(pipeline.status(&lab).await).healthy);
}

#[tokio::test]
async fn an_unreachable_cluster_is_reported_not_hung() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = existing();
    config.cluster.kubeconfig = dir.path().join("nope");
    let lab = Lab::new(config);
    let pipeline = Pipeline::for_lab(&lab);
    let status = Status::of(pipeline.status(&lab).await);
    assert!(!status.healthy);
    let error = status.phases[0].error.clone().unwrap();
    assert!(error.contains("nope"), "{error}");
    let checks = pipeline.verify(&lab).await;
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].name, "kubeconfig");
    assert!(!checks[0].passed);
}

/// The cluster `KUBECONFIG` names, else a control plane on loopback with two registered
/// nodes (no kubelet runs beside it: the test writes their status as kubelets do).
async fn real_cluster() -> (Lab, Option<ControlPlane>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Some(path) = std::env::var_os("KUBECONFIG") {
        let mut config = existing();
        config.cluster.kubeconfig = path.into();
        let client = kube::Client::try_default().await.unwrap();
        return (Lab::new(config).with_kube_client(client), None);
    }
    let plane = ControlPlane::start().await.unwrap();
    let client = plane.client().await.unwrap();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    for (name, ready) in [("cp", true), ("w1", true)] {
        let mut object = node(name, ready);
        let status = object.as_object_mut().unwrap().remove("status").unwrap();
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(object).unwrap(),
            )
            .await
            .unwrap();
        nodes
            .patch_status(
                name,
                &PatchParams::apply("homelab-test-kubelet").force(),
                &Patch::Apply(json!({ "apiVersion": "v1", "kind": "Node", "status": status })),
            )
            .await
            .unwrap();
    }
    // Through the kubeconfig file, as a user's existing cluster is reached.
    let mut config = existing();
    config.cluster.kubeconfig = plane.kubeconfig();
    config.cluster.context = Some("homelab-test".into());
    (Lab::new(config), Some(plane))
}

#[tokio::test]
async fn status_and_verify_read_a_real_api_server_through_the_kubeconfig() {
    let (lab, plane) = real_cluster().await;
    let pipeline = Pipeline::for_lab(&lab);
    let status = Status::of(pipeline.status(&lab).await);
    let checks = pipeline.verify(&lab).await;
    assert!(checks[0].passed, "{checks:#?}");
    assert!(checks[0].detail.starts_with("answers, v1."), "{checks:#?}");
    if plane.is_some() {
        assert!(status.healthy, "{status:#?}");
        let names: Vec<&str> = status.phases[0]
            .items
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(names, ["cp", "w1"]);
        assert!(checks.iter().all(|c| c.passed), "{checks:#?}");
    }
}
