//! The status scenarios of `tests/status.rs` (fake API server) against a real cluster with
//! Argo CD's CRDs: the cluster `KUBECONFIG` points at. `#[ignore]`d; `scripts/test.sh` runs
//! this binary only when `KUBECONFIG` is set and prints why it did not otherwise.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gitops::status::{tree, wait};
use gitops::types::{Application, ApplicationSpec, Destination};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};

async fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "these tests need a cluster with Argo CD's CRDs: set KUBECONFIG"
    );
    Client::try_default().await.unwrap()
}

#[tokio::test]
#[ignore = "needs a real cluster with Argo CD's CRDs: set KUBECONFIG (scripts/test.sh runs it then)"]
async fn a_missing_root_is_named_and_a_new_app_is_reported_not_ready() {
    let client = client().await;
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
