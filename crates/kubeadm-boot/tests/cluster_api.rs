//! The Kubernetes API scenarios of the unit tests (which use a fake API server), against a
//! real cluster: the one `KUBECONFIG` points at (Kind, or the cluster the tools built).
//!
//! These tests are `#[ignore]`d; `scripts/test.sh` runs them only when `KUBECONFIG` is set
//! and otherwise prints why they did not run, so they are never counted as passing unrun.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams};
use kubeadm_boot::{cni, nodes};

async fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "these tests need a cluster: set KUBECONFIG"
    );
    Client::try_default().await.unwrap()
}

#[tokio::test]
#[ignore = "needs a real cluster: set KUBECONFIG (scripts/test.sh runs it then)"]
async fn ready_nodes_are_reported_at_once() {
    let client = client().await;
    let all = nodes::list(&client).await.unwrap();
    assert!(!all.is_empty());
    let ready: Vec<String> = all
        .iter()
        .filter(|n| n.ready)
        .map(|n| n.name.clone())
        .collect();
    assert!(!ready.is_empty(), "no Ready node in the cluster: {all:?}");
    let started = std::time::Instant::now();
    nodes::wait_ready(&client, &ready, None, Duration::from_secs(30), &|_| {})
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = nodes::wait_ready(
        &client,
        &["homelab-no-such-node".into()],
        None,
        Duration::from_secs(2),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("homelab-no-such-node (not registered with the API server)"),
        "{err}"
    );
}

#[tokio::test]
#[ignore = "needs a real cluster: set KUBECONFIG (scripts/test.sh runs it then)"]
async fn manifests_are_applied_server_side_and_reapplied_unchanged() {
    let client = client().await;
    let ns = format!("homelab-test-{}", std::process::id());
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: kube-flannel-cfg, namespace: {ns}}}\n\
         data:\n  net-conf.json: '{{\"Network\": \"10.244.0.0/16\", \"Backend\": {{\"Type\": \"vxlan\"}}}}'\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
    );
    let mut objects = cni::parse_manifest("test", &manifest).unwrap();
    cni::set_pod_network(&mut objects, "10.50.0.0/16".parse().unwrap()).unwrap();
    let applied = cni::apply(&client, &objects).await.unwrap();
    assert_eq!(
        applied,
        [
            format!("Namespace {ns}"),
            format!("ConfigMap {ns}/kube-flannel-cfg")
        ]
    );
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = cms.get("kube-flannel-cfg").await.unwrap();
    let version = cm.metadata.resource_version.clone();
    assert!(cm.data.unwrap()["net-conf.json"].contains("10.50.0.0/16"));
    cni::apply(&client, &objects).await.unwrap();
    let again = cms.get("kube-flannel-cfg").await.unwrap();
    assert_eq!(
        again.metadata.resource_version, version,
        "re-applying the same manifest changes nothing"
    );
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
