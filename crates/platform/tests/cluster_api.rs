//! The platform layer against a real API server: the cluster `KUBECONFIG` names when it is
//! set, else a control plane the test starts on loopback (testkit's `ControlPlane`: etcd and
//! kube-apiserver built from their Go modules; no controllers, so the tests play the
//! controllers' part by writing status).
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use homelab_testkit::control_plane::{cluster, namespace};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use platform::Event;
use platform::argocd::{Bootstrap, Repository, bootstrap};
use platform::checks::{Check, Workload};
use platform::components::Component;
use platform::wait::{WaitOptions, wait};
use serde_json::json;

fn deployment(namespace: &str, name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "main", "image": "registry.invalid/pause:3.10" }] },
            },
        },
    })
}

/// Plays the Deployment controller once the Deployment exists: every replica updated and
/// available at its generation.
async fn roll_out_when_created(client: Client, namespace: String, name: String) {
    let api: Api<Deployment> = Api::namespaced(client, &namespace);
    let created =
        kube::runtime::wait::await_condition(api.clone(), &name, |d: Option<&Deployment>| {
            d.is_some()
        });
    tokio::time::timeout(Duration::from_secs(60), created)
        .await
        .unwrap()
        .unwrap();
    let generation = api.get(&name).await.unwrap().metadata.generation.unwrap();
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": {
            "observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
            "readyReplicas": 1, "availableReplicas": 1,
        } })),
    )
    .await
    .unwrap();
}

fn crd(group: &str, kind: &str, plural: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{plural}.{group}") },
        "spec": {
            "group": group,
            "names": { "kind": kind, "listKind": format!("{kind}List"), "plural": plural,
                       "singular": kind.to_lowercase() },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } },
            }],
        }
    })
}

fn objects(values: &[serde_json::Value]) -> Vec<DynamicObject> {
    values
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn argo_cd_is_bootstrapped_crds_first_rolled_out_and_a_rerun_changes_nothing() {
    let (client, _plane) = cluster().await.unwrap();
    let ns = format!(
        "argocd-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    // Shaped like Argo CD's install.yaml: no namespace on namespaced objects (it is applied
    // with -n), the Application CRD, argocd-cm without data, a Deployment.
    let manifest = objects(&[
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "argocd-cm",
                "labels": { "app.kubernetes.io/part-of": "argocd" } } }),
        deployment_without_namespace("argocd-server"),
        crd("argoproj.io", "Application", "applications"),
    ]);
    let root: gitops::types::Application = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": { "name": "root" },
        "spec": { "project": "default",
                  "source": { "repoURL": "https://git.example/homelab.git", "path": "bootstrap", "targetRevision": "main" },
                  "destination": { "server": "https://kubernetes.default.svc", "namespace": ns } },
    }))
    .unwrap();
    let spec = Bootstrap {
        namespace: ns.clone(),
        manifest,
        repository: Some(Repository {
            url: "https://git.example/homelab.git".into(),
            username: "git".into(),
            password: "s3cret-token".to_owned().into(),
        }),
        root,
    };
    assert!(!format!("{spec:?}").contains("s3cret-token"));
    let rollout = tokio::spawn(roll_out_when_created(
        client.clone(),
        ns.clone(),
        "argocd-server".into(),
    ));
    let options = WaitOptions::default().timeout(Duration::from_secs(60));
    let first = bootstrap(&client, &spec, false, &options, &|_| {})
        .await
        .unwrap();
    rollout.await.unwrap();
    let names: Vec<String> = first.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        [
            format!("Namespace {ns}"),
            "CustomResourceDefinition applications.argoproj.io".to_owned(),
            format!("ConfigMap {ns}/argocd-cm"),
            format!("Deployment {ns}/argocd-server"),
            format!("Secret {ns}/homelab-repository"),
            format!("Application {ns}/root"),
        ]
    );
    // The CRD may exist already on a shared cluster; everything else is new.
    assert!(first.iter().skip(2).all(|a| a.changed), "{first:?}");
    let cm: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let data = cm.get("argocd-cm").await.unwrap().data.unwrap();
    assert_eq!(
        data[gitops::scaffold::APPLICATION_HEALTH_KEY],
        gitops::scaffold::APPLICATION_HEALTH_LUA
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = secrets.get("homelab-repository").await.unwrap();
    assert_eq!(
        secret.metadata.labels.unwrap()["argocd.argoproj.io/secret-type"],
        "repository"
    );
    assert_eq!(secret.data.unwrap()["password"].0, b"s3cret-token");

    // A re-run applies the same objects and the server changes none of them.
    let again = bootstrap(&client, &spec, false, &options, &|_| {})
        .await
        .unwrap();
    assert_eq!(again.len(), first.len());
    assert!(again.iter().all(|a| !a.changed), "{again:?}");
    // A dry run of the same reports no change either.
    let dry = bootstrap(&client, &spec, true, &options, &|_| {})
        .await
        .unwrap();
    assert!(dry.iter().all(|a| !a.changed), "{dry:?}");
}

fn deployment_without_namespace(name: &str) -> serde_json::Value {
    let mut d = deployment("x", name);
    d["metadata"].as_object_mut().unwrap().remove("namespace");
    d
}

#[tokio::test]
async fn a_dry_run_bootstrap_on_an_empty_cluster_changes_nothing_and_reports_every_object() {
    let (client, _plane) = cluster().await.unwrap();
    let group = format!(
        "dry{}.example.com",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let ns = namespace(&client, "dry").await.unwrap();
    let manifest = objects(&[
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "argocd-cm" } }),
        crd(&group, "Widget", "widgets"),
        json!({ "apiVersion": format!("{group}/v1alpha1"), "kind": "Widget", "metadata": { "name": "w" } }),
    ]);
    let applied = kube_manifest::apply(
        &client,
        &manifest,
        &kube_manifest::ApplyOptions::new("homelab-test")
            .dry_run(true)
            .namespace(Some(ns.clone())),
    )
    .await
    .unwrap();
    assert_eq!(applied.len(), 3);
    assert!(applied.iter().all(|a| a.changed), "{applied:?}");
    let cm: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(cm.get_opt("argocd-cm").await.unwrap().is_none());
}

#[tokio::test]
async fn a_webhook_service_without_a_ready_endpoint_is_not_ready_and_its_dry_run_is_refused() {
    let (client, _plane) = cluster().await.unwrap();
    let ns = namespace(&client, "hook").await.unwrap();
    let http = reqwest::Client::new();
    let endpoints = Check::ServiceEndpoints {
        namespace: ns.clone(),
        name: "webhook".into(),
    };
    let seen = endpoints.evaluate(&client, &http).await;
    assert!(!seen.ok);
    assert_eq!(seen.detail, "the Service does not exist");
    let services: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&()),
    );
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": "webhook", "namespace": ns },
                "spec": { "selector": { "app": "webhook" }, "ports": [{ "port": 443, "targetPort": 9443 }] } }))
            .unwrap(),
        )
        .await
        .unwrap();
    let seen = endpoints.evaluate(&client, &http).await;
    assert!(!seen.ok);
    assert!(seen.detail.starts_with("no ready endpoint"), "{seen:?}");

    // An endpoint that is not ready (its pod is starting) does not count; a ready one does.
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(client.clone(), &ns);
    let slice = |ready: bool| -> k8s_openapi::api::discovery::v1::EndpointSlice {
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": "webhook-1", "namespace": ns,
                          "labels": { "kubernetes.io/service-name": "webhook" } },
            "addressType": "IPv4",
            "ports": [{ "port": 9443, "protocol": "TCP" }],
            "endpoints": [{ "addresses": ["10.244.0.9"], "conditions": { "ready": ready } }],
        }))
        .unwrap()
    };
    slices
        .create(&PostParams::default(), &slice(false))
        .await
        .unwrap();
    assert!(!endpoints.evaluate(&client, &http).await.ok);
    slices
        .patch(
            "webhook-1",
            &PatchParams::apply("homelab-test").force(),
            &Patch::Apply(slice(true)),
        )
        .await
        .unwrap();
    let seen = endpoints.evaluate(&client, &http).await;
    assert!(seen.ok, "{seen:?}");

    // A validating webhook whose server does not answer refuses every create of its kind,
    // even a dry run: the dry-run check sees what a user would.
    let hooks: Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> =
        Api::all(client.clone());
    let hook_name = format!("{ns}-probe");
    hooks
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": hook_name },
                "webhooks": [{
                    "name": "validate.homelab.test", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                    "failurePolicy": "Fail", "timeoutSeconds": 2,
                    "clientConfig": { "service": { "namespace": ns, "name": "webhook", "path": "/validate" } },
                    "rules": [{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"] }],
                    "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ns } },
                }],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let dry_run = Check::DryRunCreate {
        object: json!({ "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": { "name": "probe", "namespace": ns } }),
    };
    let seen = dry_run.evaluate(&client, &http).await;
    hooks
        .delete(&hook_name, &kube::api::DeleteParams::default())
        .await
        .unwrap();
    assert!(!seen.ok, "{seen:?}");
    assert!(seen.detail.contains("failed calling webhook"), "{seen:?}");
    // Without the webhook, the same dry run is accepted and stores nothing.
    let seen = dry_run.evaluate(&client, &http).await;
    assert!(seen.ok, "{seen:?}");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(cms.get_opt("probe").await.unwrap().is_none());
}

#[tokio::test]
async fn waves_are_followed_in_order_and_a_stuck_component_is_named_with_its_last_state() {
    let (client, _plane) = cluster().await.unwrap();
    let ns = namespace(&client, "waves").await.unwrap();
    let deployments: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::discovery::ApiResource::erase::<Deployment>(&()),
    );
    for name in ["first", "second"] {
        deployments
            .create(
                &PostParams::default(),
                &serde_json::from_value(deployment(&ns, name)).unwrap(),
            )
            .await
            .unwrap();
    }
    let component = |name: &str, wave: i64| Component {
        name: name.into(),
        wave,
        checks: vec![Check::RolledOut {
            workload: Workload::Deployment,
            namespace: ns.clone(),
            name: name.into(),
        }],
    };
    let components = [component("second", 2), component("first", 1)];
    let mut sorted = components.to_vec();
    sorted.sort_by_key(|c| c.wave);

    // Nothing rolls them out: the wait ends at its limit, naming the first wave's component.
    let err = wait(
        &client,
        &reqwest::Client::new(),
        &sorted,
        &WaitOptions::default().timeout(Duration::from_secs(2)),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "first (wave 1) is not ready after 2s: Deployment {ns}/first rolled out: no status yet (the controller has not seen it)"
        )
    );

    // Rolled out one after the other (the second first): the waves still finish in order,
    // each as soon as its Deployment's status says so (seen through the watch).
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let waiting = tokio::spawn({
        let client = client.clone();
        async move {
            wait(
                &client,
                &reqwest::Client::new(),
                &sorted,
                &WaitOptions::default().timeout(Duration::from_secs(60)),
                &move |e| match e {
                    Event::Wave { wave, .. } => seen.lock().unwrap().push(format!("wave {wave}")),
                    Event::Ready { component, .. } => {
                        seen.lock().unwrap().push(format!("{component} ready"));
                    }
                    _ => {}
                },
            )
            .await
        }
    });
    roll_out_when_created(client.clone(), ns.clone(), "second".into()).await;
    roll_out_when_created(client.clone(), ns.clone(), "first".into()).await;
    let statuses = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(statuses.iter().all(|s| s.ready));
    assert_eq!(
        *events.lock().unwrap(),
        ["wave 1", "first ready", "wave 2", "second ready"]
    );
}
