//! The status scenarios of `tests/status.rs` (fake API server) against a real API server:
//! the cluster `KUBECONFIG` names when it is set (it must have Argo CD's CRDs), else a real
//! control plane the test starts on loopback, into which it installs an `Application` CRD.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gitops::status::{tree, wait};
use gitops::types::{Application, ApplicationSpec, Destination};
use homelab_testkit::control_plane::{self, ControlPlane};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};

/// Argo CD's `Application` kind as far as these tests need it: the group, version, names and
/// scope Argo CD's CRD has, with an open schema (the status is written by the test).
fn application_crd() -> CustomResourceDefinition {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": "applications.argoproj.io" },
        "spec": {
            "group": "argoproj.io",
            "names": { "kind": "Application", "listKind": "ApplicationList", "plural": "applications",
                       "singular": "application", "shortNames": ["app", "apps"] },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } },
            }],
        }
    }))
    .unwrap()
}

/// The cluster to test against, and the control plane when this test started one (with an
/// `Application` CRD and the `argocd` namespace).
async fn cluster() -> (Client, Option<ControlPlane>) {
    let (client, plane) = control_plane::cluster().await.unwrap();
    if plane.is_none() {
        return (client, None);
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &application_crd())
        .await
        .unwrap();
    // Usable once the server reports the CRD Established and serves its path, watched for,
    // not slept on.
    kube_manifest::crds_established(
        &client,
        &["applications.argoproj.io".to_owned()],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({ "metadata": { "name": "argocd" } }))
                .unwrap(),
        )
        .await
        .unwrap();
    (client, plane)
}

#[tokio::test]
async fn a_missing_root_is_named_and_a_new_app_is_reported_not_ready() {
    let (client, _plane) = cluster().await;
    let err = tree(&client, "argocd", "homelab-no-such-root")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no Application homelab-no-such-root in namespace argocd"
    );
    // An Application nobody syncs (its project does not exist) never becomes ready.
    let api: Api<Application> = Api::namespaced(client.clone(), "argocd");
    let name = format!("homelab-test-{}", std::process::id());
    let app = Application::new(
        &name,
        ApplicationSpec {
            project: "homelab-test-no-such-project".into(),
            destination: Destination {
                server: Some("https://kubernetes.default.svc".into()),
                name: None,
                namespace: Some("default".into()),
            },
            ..ApplicationSpec::default()
        },
    );
    api.create(&PostParams::default(), &app).await.unwrap();
    let err = wait(&client, "argocd", &name, Duration::from_secs(5), &|_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&name), "{err}");
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}
