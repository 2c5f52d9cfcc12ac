//! Argo CD's real release manifest (the pinned `install.yaml`, fetched through the Go module
//! proxy and checked against homelab's pin) bootstrapped into a real API server that this
//! test starts (not the `KUBECONFIG` cluster: the test installs Argo CD's CRDs), with the
//! test playing the Deployment and StatefulSet controllers; then every Argo CD object the
//! GitOps repository scaffold generates is checked by a server-side dry run against Argo
//! CD's own CRD schemas.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::TryStreamExt;
use homelab_testkit::control_plane::ControlPlane;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use platform::argocd::{Bootstrap, bootstrap};
use platform::wait::WaitOptions;
use serde_json::json;

const NAMESPACE: &str = "argocd";

/// Plays the Deployment and StatefulSet controllers: every workload in `namespace` is
/// reported rolled out at its generation, as soon as it appears or changes.
async fn controllers(client: Client) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), NAMESPACE);
    let d = async {
        let mut events = std::pin::pin!(
            watcher::watcher(deployments.clone(), watcher::Config::default()).applied_objects()
        );
        while let Some(d) = events.try_next().await.unwrap() {
            let generation = d.metadata.generation.unwrap_or(1);
            if d.status.as_ref().and_then(|s| s.observed_generation) == Some(generation) {
                continue;
            }
            let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            deployments
                .patch_status(
                    d.metadata.name.as_deref().unwrap(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": { "observedGeneration": generation,
                        "replicas": replicas, "updatedReplicas": replicas,
                        "readyReplicas": replicas, "availableReplicas": replicas } })),
                )
                .await
                .unwrap();
        }
    };
    let s = async {
        let mut events = std::pin::pin!(
            watcher::watcher(statefulsets.clone(), watcher::Config::default()).applied_objects()
        );
        while let Some(s) = events.try_next().await.unwrap() {
            let generation = s.metadata.generation.unwrap_or(1);
            if s.status.as_ref().and_then(|s| s.observed_generation) == Some(generation) {
                continue;
            }
            let replicas = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            statefulsets
                .patch_status(
                    s.metadata.name.as_deref().unwrap(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": { "observedGeneration": generation,
                        "replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                        "updatedReplicas": replicas, "currentReplicas": replicas,
                        "currentRevision": "r1", "updateRevision": "r1" } })),
                )
                .await
                .unwrap();
        }
    };
    Box::pin(futures::future::join(d, s)).await;
}

fn scaffold_spec() -> gitops::scaffold::Spec {
    let versions: BTreeMap<String, String> = [
        ("metallb", "v0.15.2"),
        ("ingress_nginx", "4.13.3"),
        ("cert_manager", "v1.19.1"),
        ("external_secrets", "0.20.4"),
        ("harbor", "1.18.0"),
        ("actions_runner_controller", "0.13.0"),
        ("local_path_provisioner", "v0.0.32"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    gitops::scaffold::Spec {
        repo_url: "https://github.com/example/homelab-gitops.git".into(),
        branch: "main".into(),
        metallb_range: "192.168.122.100-192.168.122.150".into(),
        ingress_ip: "192.168.122.100".into(),
        harbor_ip: "192.168.122.101".into(),
        argocd_ip: "192.168.122.102".into(),
        versions,
        external_secrets: true,
        github_owner: "example".into(),
        runners: vec![gitops::scaffold::Runner {
            repository: "app".into(),
            min: 0,
            max: 2,
        }],
    }
}

#[tokio::test]
async fn the_pinned_argo_cd_release_bootstraps_and_the_scaffold_fits_its_crds() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let release = homelab_config::ARGOCD_RELEASE;
    let path = homelab_testkit::upstream::argocd_install_manifest(
        release,
        homelab_config::ARGOCD_MANIFEST_SHA256,
    )
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let manifest = kube_manifest::parse(&path.display().to_string(), &text).unwrap();
    let rollouts = platform::argocd::rollouts(NAMESPACE, &manifest);
    let names: Vec<String> = rollouts.checks.iter().map(ToString::to_string).collect();
    for expected in [
        "Deployment argocd/argocd-server rolled out",
        "Deployment argocd/argocd-repo-server rolled out",
        "StatefulSet argocd/argocd-application-controller rolled out",
    ] {
        assert!(names.iter().any(|n| n == expected), "{names:#?}");
    }

    let plane = ControlPlane::start().await.unwrap();
    let client = plane.client().await.unwrap();
    let play = tokio::spawn(controllers(client.clone()));
    let files = gitops::scaffold::files(&scaffold_spec()).unwrap();
    let root_text = files
        .iter()
        .find(|(p, _)| p.ends_with("bootstrap/root.yaml"))
        .map(|(_, t)| t.clone())
        .unwrap();
    let root: gitops::types::Application = serde_norway::from_str(&root_text).unwrap();
    let spec = Bootstrap {
        namespace: NAMESPACE.into(),
        manifest,
        repository: None,
        root,
    };
    let options = WaitOptions {
        timeout: Duration::from_secs(120),
        ..WaitOptions::default()
    };
    let started = std::time::Instant::now();
    let first = bootstrap(&client, &spec, false, &options, &|_| {})
        .await
        .unwrap();
    eprintln!(
        "Argo CD {release}: {} objects applied and rolled out in {:.1}s",
        first.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(first.iter().all(|a| a.changed));
    assert!(
        first
            .iter()
            .any(|a| a.to_string() == "CustomResourceDefinition applicationsets.argoproj.io")
    );
    let again = bootstrap(&client, &spec, false, &options, &|_| {})
        .await
        .unwrap();
    let changed: Vec<String> = again
        .iter()
        .filter(|a| a.changed)
        .map(ToString::to_string)
        .collect();
    assert!(changed.is_empty(), "a re-run changed {changed:?}");

    // Every Argo CD object of the scaffold (AppProjects, Applications) is valid under the
    // release's CRD schemas: a server-side dry run applies each.
    let mut argo_objects = Vec::new();
    for (path, text) in &files {
        if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
            continue;
        }
        for object in kube_manifest::parse(&path.display().to_string(), text).unwrap() {
            let api_version = object.types.as_ref().unwrap().api_version.clone();
            if api_version.starts_with("argoproj.io/") {
                argo_objects.push(object);
            }
        }
    }
    assert!(argo_objects.len() > 10, "{}", argo_objects.len());
    let dry = kube_manifest::apply(
        &client,
        &argo_objects,
        &kube_manifest::ApplyOptions {
            dry_run: true,
            namespace: Some(NAMESPACE.into()),
            ..kube_manifest::ApplyOptions::new("homelab-test")
        },
    )
    .await
    .unwrap();
    assert_eq!(dry.len(), argo_objects.len());
    play.abort();
}
