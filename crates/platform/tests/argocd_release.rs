//! Argo CD's real release manifest (the pinned `install.yaml`, fetched through the Go module
//! proxy and checked against homelab's pin) bootstrapped into a real API server that this
//! test starts (not the `KUBECONFIG` cluster: the test installs Argo CD's CRDs), with the
//! test playing the Deployment and StatefulSet controllers; then every Argo CD object the
//! GitOps repository scaffold generates is checked by a server-side dry run against Argo
//! CD's own CRD schemas. Likewise every other custom resource homelab generates (MetalLB,
//! cert-manager, External Secrets: the scaffold's and the readiness probes') against the
//! CRDs of the releases homelab pins.
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
        harbor_url: "https://harbor.homelab.lan".into(),
        argocd_ip: "192.168.122.102".into(),
        versions,
        external_secrets: true,
        secret_objects: Vec::new(),
        github_owner: "example".into(),
        runners: vec![gitops::scaffold::Runner {
            repository: "app".into(),
            min: 0,
            max: 2,
        }],
        etcd_backup: None,
        monitoring: None,
        cicd: false,
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
    let options = WaitOptions::default().timeout(Duration::from_secs(120));
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
        &kube_manifest::ApplyOptions::new("homelab-test")
            .dry_run(true)
            .namespace(Some(NAMESPACE.into())),
    )
    .await
    .unwrap();
    assert_eq!(dry.len(), argo_objects.len());
    play.abort();
}

/// Every MetalLB, cert-manager and External Secrets object homelab generates: the scaffold's,
/// then the platform's readiness probes (how many of those).
fn generated_custom_resources() -> (Vec<kube::api::DynamicObject>, usize) {
    let mut objects = Vec::new();
    for (path, text) in gitops::scaffold::files(&scaffold_spec()).unwrap() {
        if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
            continue;
        }
        for object in kube_manifest::parse(&path.display().to_string(), &text).unwrap() {
            let api_version = &object.types.as_ref().unwrap().api_version;
            if ["metallb.io/", "cert-manager.io/", "external-secrets.io/"]
                .iter()
                .any(|g| api_version.starts_with(g))
            {
                objects.push(object);
            }
        }
    }
    let spec = platform::components::PlatformSpec::new(
        "192.168.122.100".parse().unwrap(),
        "192.168.122.102".parse().unwrap(),
        "https://192.168.122.101",
    )
    .external_secrets(true)
    .runners(true);
    let mut probes = 0;
    for component in platform::components::components(&spec) {
        for check in component.checks {
            if let platform::checks::Check::DryRunCreate { object } = check {
                let api_version = object["apiVersion"].as_str().unwrap_or_default();
                if api_version.contains('.') && !api_version.starts_with("networking.k8s.io/") {
                    objects.push(serde_json::from_value(object).unwrap());
                    probes += 1;
                }
            }
        }
    }
    (objects, probes)
}

/// The components' CRDs as their releases ship them (from their Go modules, each file pinned by
/// sha256, at the versions of the embedded default), installed into a real API server; every
/// MetalLB, cert-manager and External Secrets object the scaffold writes and every readiness
/// probe the platform sends passes a server-side dry run against their structural schemas:
/// a field they do not declare, a wrong type or a missing required field is refused.
#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn the_scaffold_and_the_readiness_probes_fit_the_pinned_component_crds() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let defaults = homelab_config::ComponentVersions::default();
    let pinned = [
        ("go.universe.tf/metallb", defaults.metallb.to_string()),
        (
            "github.com/cert-manager/cert-manager",
            defaults.cert_manager.to_string(),
        ),
        (
            "github.com/external-secrets/external-secrets",
            format!("v{}", defaults.external_secrets),
        ),
    ];
    let mut crds = Vec::new();
    for (module, version, file, sha256) in homelab_testkit::upstream::PLATFORM_CRDS {
        assert!(
            pinned.iter().any(|(m, v)| m == module && v == version),
            "{module} {version}: not the version of the embedded default ({pinned:?}): update PLATFORM_CRDS"
        );
        let path = homelab_testkit::upstream::module_file(module, version, file, sha256).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        crds.extend(kube_manifest::parse(&path.display().to_string(), &text).unwrap());
    }
    let plane = ControlPlane::start().await.unwrap();
    let client = plane.client().await.unwrap();
    let namespaces: Vec<kube::api::DynamicObject> = [
        "metallb-system",
        "cert-manager",
        "external-secrets",
        "harbor",
    ]
    .iter()
    .map(|n| {
        serde_json::from_value(json!({ "apiVersion": "v1", "kind": "Namespace",
                "metadata": { "name": n, "labels": { "homelab.dev/test": "crds" } } }))
        .unwrap()
    })
    .collect();
    crds.extend(namespaces);
    let started = std::time::Instant::now();
    let installed = kube_manifest::apply(
        &client,
        &crds,
        &kube_manifest::ApplyOptions::new("homelab-test"),
    )
    .await
    .unwrap();
    eprintln!(
        "{} CRDs installed and Established in {:.1}s",
        installed
            .iter()
            .filter(|a| a.kind == "CustomResourceDefinition")
            .count(),
        started.elapsed().as_secs_f64()
    );

    let (objects, probes) = generated_custom_resources();
    let kinds: std::collections::BTreeSet<String> = objects
        .iter()
        .map(|o| o.types.as_ref().unwrap().kind.clone())
        .collect();
    assert_eq!(probes, 3, "{kinds:?}");
    for kind in [
        "IPAddressPool",
        "L2Advertisement",
        "ClusterIssuer",
        "Certificate",
        "ClusterSecretStore",
    ] {
        assert!(kinds.contains(kind), "{kind} is not checked: {kinds:?}");
    }
    let dry = kube_manifest::apply(
        &client,
        &objects,
        &kube_manifest::ApplyOptions::new("homelab-test").dry_run(true),
    )
    .await
    .unwrap_or_else(|e| panic!("a generated object does not fit its CRD: {e}"));
    assert_eq!(dry.len(), objects.len());

    // The check can fail: a field the schema lacks and a wrong type are both refused.
    let pool = objects
        .iter()
        .find(|o| o.types.as_ref().unwrap().kind == "IPAddressPool")
        .unwrap();
    let mut typo = pool.clone();
    typo.data["spec"]["adresses"] = json!(["192.0.2.0/30"]);
    let mut wrong = pool.clone();
    wrong.data["spec"]["autoAssign"] = json!("yes");
    for bad in [typo, wrong] {
        let refused = kube_manifest::apply(
            &client,
            &[bad],
            &kube_manifest::ApplyOptions::new("homelab-test").dry_run(true),
        )
        .await;
        let err = refused.unwrap_err().to_string();
        assert!(
            err.contains("adresses") || err.contains("autoAssign"),
            "{err}"
        );
    }
}
