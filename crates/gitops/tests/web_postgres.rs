//! The `web-postgres` application template: the repository it writes passes the validator
//! (every kustomization built), every object parses as its kind and a real API server
//! accepts it (server-side dry run), the `NetworkPolicies` let through exactly the flows each
//! tier needs (evaluated for every pair of pods), and its dump and restore run for real
//! against PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{REPO, check, spec};
use gitops::scaffold::{FileChange, add_app, add_app_template, init};
use gitops::tekton::{EventListener, Pipeline, Task, TriggerBinding, TriggerTemplate};
use gitops::templates::{Cicd, ServiceMonitor, WebPostgres};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PersistentVolumeClaim, PodTemplateSpec, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

/// The template as the tests write it: monitored, and delivered by Tekton.
fn template(name: &str, host: &str) -> WebPostgres {
    WebPostgres::new(name, host)
        .images_in("harbor.homelab.lan/homelab")
        .with_monitoring(true)
        .with_cicd(Some(Cicd::new(REPO, "main", "harbor.homelab.lan")))
}

fn repo(name: &str) -> (tempfile::TempDir, WebPostgres) {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &spec()).unwrap();
    let template = template(name, &format!("{name}.homelab.lan"));
    add_app_template(dir.path(), &spec(), &template).unwrap();
    (dir, template)
}

/// Every object of the application's directory, by file.
fn objects(root: &Path, name: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let dir = root.join("apps").join(name);
    for (file, _) in template(name, "x.lan").files() {
        let text = std::fs::read_to_string(dir.join(&file)).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            out.push((file.clone(), v));
        }
    }
    out
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

fn containers(pod: &PodTemplateSpec) -> Vec<Container> {
    pod.spec.as_ref().unwrap().containers.clone()
}

fn quantities(c: &Container) -> [String; 4] {
    let r = c.resources.as_ref().unwrap();
    let get =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| { m.as_ref().unwrap()[k].0.clone() };
    [
        get(&r.requests, "cpu"),
        get(&r.limits, "cpu"),
        get(&r.requests, "memory"),
        get(&r.limits, "memory"),
    ]
}

/// Pod templates by the name of their workload.
type Pods = Vec<(String, PodTemplateSpec)>;

/// Every object of application `shop` parsed as its kind: the pod templates by workload
/// name, and the autoscalers' bounds by target.
fn workloads(root: &Path) -> (Pods, BTreeMap<String, (i32, i32)>) {
    let mut pods: Vec<(String, PodTemplateSpec)> = Vec::new();
    let mut hpas = BTreeMap::new();
    for (file, v) in objects(root, "shop") {
        match v["kind"].as_str().unwrap() {
            "Namespace" => drop(typed::<Namespace>(&v)),
            "Deployment" => {
                let d: Deployment = typed(&v);
                let spec = d.spec.unwrap();
                pods.push((d.metadata.name.unwrap(), spec.template));
            }
            "StatefulSet" => {
                let s: StatefulSet = typed(&v);
                let spec = s.spec.unwrap();
                let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
                let claim = claim.spec.as_ref().unwrap();
                assert_eq!(claim.storage_class_name.as_deref(), Some("local-path"));
                assert_eq!(
                    claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
                    "10Gi"
                );
                pods.push((s.metadata.name.unwrap(), spec.template));
            }
            "CronJob" => {
                let c: CronJob = typed(&v);
                let spec = c.spec.unwrap();
                assert_eq!(spec.schedule, "0 2 * * *");
                pods.push((
                    c.metadata.name.unwrap(),
                    spec.job_template.spec.unwrap().template,
                ));
            }
            "ServiceAccount" | "Role" | "RoleBinding" => {
                assert!(
                    ["db/credentials.yaml", "ci/credentials.yaml"].contains(&file.as_str())
                        || file.starts_with("ci/"),
                    "{file}"
                );
            }
            "ClusterRole" | "ClusterRoleBinding" => assert_eq!(file, "ci/triggers.yaml"),
            "Job" if file.ends_with("credentials.yaml") => drop(typed::<Job>(&v)),
            // Each step with requests and limits; the listener's pod too.
            "Task" => {
                let task: Task = typed(&v);
                for step in task.spec.steps {
                    let r = step.compute_resources.unwrap();
                    assert!(r.requests.is_some() && r.limits.is_some(), "{}", step.name);
                }
            }
            "Pipeline" => drop(typed::<Pipeline>(&v)),
            "TriggerBinding" => drop(typed::<TriggerBinding>(&v)),
            "TriggerTemplate" => drop(typed::<TriggerTemplate>(&v)),
            "EventListener" => {
                let listener: EventListener = typed(&v);
                let pod = listener
                    .spec
                    .resources
                    .unwrap()
                    .kubernetes_resource
                    .spec
                    .template;
                pods.push((format!("el-{}", listener.metadata.name.unwrap()), pod));
            }
            "Job" => {
                assert!(file.ends_with(".example"), "{file}");
                let j: Job = typed(&v);
                pods.push((j.metadata.name.unwrap(), j.spec.unwrap().template));
            }
            "HorizontalPodAutoscaler" => {
                let h: HorizontalPodAutoscaler = typed(&v);
                let spec = h.spec.unwrap();
                hpas.insert(
                    spec.scale_target_ref.name,
                    (spec.min_replicas.unwrap(), spec.max_replicas),
                );
            }
            "Service" => drop(typed::<Service>(&v)),
            "Ingress" => {
                let i: Ingress = typed(&v);
                let spec = i.spec.unwrap();
                assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
                assert_eq!(
                    spec.rules.unwrap()[0].host.as_deref(),
                    Some("shop.homelab.lan")
                );
            }
            "NetworkPolicy" => drop(typed::<NetworkPolicy>(&v)),
            "PersistentVolumeClaim" => drop(typed::<PersistentVolumeClaim>(&v)),
            "ServiceMonitor" => drop(typed::<ServiceMonitor>(&v)),
            "ConfigMap" => drop(typed::<ConfigMap>(&v)),
            other => panic!("{file}: unexpected kind {other}"),
        }
    }
    (pods, hpas)
}

#[test]
fn the_template_writes_a_whole_application_that_validates_and_parses_as_its_kinds() {
    let (dir, _) = repo("shop");
    check(dir.path());
    let (pods, hpas) = workloads(dir.path());
    // The sizes the application was asked for; every container with requests and limits.
    assert_eq!(
        hpas,
        BTreeMap::from([
            ("shop-frontend".to_owned(), (2, 4)),
            ("shop-backend".to_owned(), (1, 3))
        ])
    );
    for (name, pod) in &pods {
        for c in containers(pod) {
            let q = quantities(&c);
            match (name.as_str(), c.name.as_str()) {
                ("shop-frontend" | "shop-backend", _) => {
                    assert_eq!(q, ["200m", "500m", "256Mi", "512Mi"].map(String::from));
                    assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
                }
                ("postgres", "postgres") => {
                    assert_eq!(q, ["500m", "1000m", "512Mi", "1Gi"].map(String::from));
                }
                _ => assert!(q.iter().all(|v| !v.is_empty())),
            }
        }
    }
    let replicas: BTreeMap<String, i32> = objects(dir.path(), "shop")
        .into_iter()
        .filter(|(_, v)| v["kind"] == "Deployment")
        .map(|(_, v)| {
            let d: Deployment = typed(&v);
            (d.metadata.name.unwrap(), d.spec.unwrap().replicas.unwrap())
        })
        .collect();
    assert_eq!(replicas["shop-frontend"], 2);
    assert_eq!(replicas["shop-backend"], 1);
    // The login is read from the Secret, never written into the repository.
    let all: Vec<Value> = objects(dir.path(), "shop")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert!(all.iter().all(|v| v["kind"] != "Secret"));
    let text = serde_json::to_string(&all).unwrap();
    assert!(
        text.contains("\"secretKeyRef\":{\"key\":\"password\",\"name\":\"shop-postgres\""),
        "{text}"
    );

    // Again: nothing changes. A hand-written application of the same name is refused.
    let again =
        add_app_template(dir.path(), &spec(), &template("shop", "shop.homelab.lan")).unwrap();
    assert!(
        again
            .iter()
            .all(|(_, c)| matches!(c, FileChange::Kept | FileChange::Unchanged)),
        "{again:?}"
    );
    add_app(dir.path(), &spec(), "mine").unwrap();
    std::fs::write(
        dir.path().join("apps/mine/kustomization.yaml"),
        "resources:\n  - deploy.yaml\n",
    )
    .unwrap();
    let err = add_app_template(dir.path(), &spec(), &WebPostgres::new("mine", "mine.lan"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("resources of its own"), "{err}");
    assert!(!dir.path().join("apps/mine/namespaces.yaml").exists());
}

#[test]
fn monitoring_scrapes_the_backend_and_the_exporter_and_ships_a_dashboard() {
    let (dir, _) = repo("shop");
    // A ServiceMonitor per scraped tier, each selecting exactly the Service that
    // has the port it names, and a dashboard for Grafana's sidecar.
    let all_objects = objects(dir.path(), "shop");
    let services: Vec<Service> = all_objects
        .iter()
        .filter(|(_, v)| v["kind"] == "Service")
        .map(|(_, v)| typed(v))
        .collect();
    let mut monitors = Vec::new();
    for (file, v) in all_objects
        .iter()
        .filter(|(_, v)| v["kind"] == "ServiceMonitor")
    {
        let m: ServiceMonitor = typed(v);
        assert_eq!(&serde_json::to_value(&m).unwrap(), v, "{file}: round trip");
        let namespace = m.metadata.namespace.clone().unwrap();
        let port = &m.spec.endpoints[0].port;
        let selected: Vec<String> = services
            .iter()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && selects(&m.spec.selector, s.metadata.labels.as_ref().unwrap())
            })
            .filter(|s| {
                s.spec
                    .as_ref()
                    .unwrap()
                    .ports
                    .as_ref()
                    .unwrap()
                    .iter()
                    .any(|p| p.name.as_ref() == Some(port))
            })
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        monitors.push((file.clone(), port.clone(), selected));
    }
    monitors.sort();
    assert_eq!(
        monitors,
        [
            (
                "app/monitoring.yaml".to_owned(),
                "http".to_owned(),
                vec!["shop-backend".to_owned()]
            ),
            (
                "db/monitoring.yaml".to_owned(),
                "metrics".to_owned(),
                vec!["postgres".to_owned()]
            ),
        ]
    );
    let dashboard: ConfigMap = all_objects
        .iter()
        .find(|(_, v)| v["kind"] == "ConfigMap")
        .map(|(_, v)| typed(v))
        .unwrap();
    assert_eq!(
        dashboard.metadata.labels.as_ref().unwrap()["grafana_dashboard"],
        "1"
    );
    let board: Value = serde_json::from_str(&dashboard.data.unwrap()["shop.json"]).unwrap();
    let exprs: Vec<&str> = board["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["targets"][0]["expr"].as_str().unwrap())
        .collect();
    assert!(
        exprs[0].contains("namespace=\"shop\"") && exprs[1].contains("namespace=\"shop-db\""),
        "{exprs:?}"
    );
    // Without monitoring, neither file.
    let plain: Vec<String> = WebPostgres::new("shop", "x.lan")
        .files()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert!(
        !plain.iter().any(|f| f.ends_with("monitoring.yaml")),
        "{plain:?}"
    );
}

/// A pod of the table: its namespace and labels.
struct Pod {
    namespace: String,
    labels: BTreeMap<String, String>,
}

fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => !value.is_some_and(|v| values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("operator {other}"),
        }
    });
    by_labels && by_expressions
}

/// Whether `peer` of a policy in `policy_namespace` admits `source`, as the `NetworkPolicy`
/// API defines peers: a pod selector alone means the policy's namespace; a namespace
/// selector alone, every pod of the namespaces it selects; both, those pods there.
fn admits(peer: &NetworkPolicyPeer, policy_namespace: &str, source: &Pod) -> bool {
    let namespace_labels = BTreeMap::from([(
        "kubernetes.io/metadata.name".to_owned(),
        source.namespace.clone(),
    )]);
    match (&peer.namespace_selector, &peer.pod_selector) {
        (None, None) => false,
        (None, Some(pods)) => source.namespace == policy_namespace && selects(pods, &source.labels),
        (Some(namespaces), None) => selects(namespaces, &namespace_labels),
        (Some(namespaces), Some(pods)) => {
            selects(namespaces, &namespace_labels) && selects(pods, &source.labels)
        }
    }
}

/// Whether TCP traffic from `source` reaches `destination` on `port` under `policies`:
/// allowed when no policy selects the destination for ingress, else when a rule of one
/// that does admits the source on that port.
fn allowed(policies: &[NetworkPolicy], source: &Pod, destination: &Pod, port: i32) -> bool {
    let selecting: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| {
            let spec = p.spec.as_ref().unwrap();
            p.metadata.namespace.as_deref() == Some(destination.namespace.as_str())
                && spec.policy_types.iter().flatten().any(|t| t == "Ingress")
                && selects(spec.pod_selector.as_ref().unwrap(), &destination.labels)
        })
        .collect();
    if selecting.is_empty() {
        return true;
    }
    selecting.iter().any(|p| {
        let ns = p.metadata.namespace.as_deref().unwrap();
        p.spec
            .as_ref()
            .unwrap()
            .ingress
            .iter()
            .flatten()
            .any(|rule| {
                let port_ok = rule.ports.as_ref().is_none_or(|ports| {
                    ports.is_empty()
                        || ports.iter().any(|pp| {
                            pp.protocol.as_deref().unwrap_or("TCP") == "TCP"
                                && pp
                                    .port
                                    .as_ref()
                                    .is_none_or(|p| *p == IntOrString::Int(port))
                        })
                });
                let from_ok = rule.from.as_ref().is_none_or(|from| {
                    from.is_empty() || from.iter().any(|peer| admits(peer, ns, source))
                });
                port_ok && from_ok
            })
    })
}

#[test]
fn network_policies_allow_exactly_the_flows_each_tier_needs() {
    let (dir, t) = repo("shop");
    let mut policies = Vec::new();
    // The pods as the workloads label them (read from the written objects).
    let mut pods: BTreeMap<&str, Pod> = BTreeMap::new();
    for (_, v) in objects(dir.path(), "shop") {
        let template = match v["kind"].as_str().unwrap() {
            "NetworkPolicy" => {
                policies.push(typed::<NetworkPolicy>(&v));
                continue;
            }
            "Deployment" | "StatefulSet" => v["spec"]["template"].clone(),
            "CronJob" => v["spec"]["jobTemplate"]["spec"]["template"].clone(),
            _ => continue,
        };
        let pod: PodTemplateSpec = typed(&template);
        let labels = pod.metadata.unwrap().labels.unwrap();
        let tier = match labels["app.kubernetes.io/component"].as_str() {
            "frontend" => "frontend",
            "backend" => "backend",
            "database" => "database",
            "backup" => "backup",
            other => panic!("tier {other}"),
        };
        let namespace = v["metadata"]["namespace"].as_str().unwrap().to_owned();
        pods.insert(tier, Pod { namespace, labels });
    }
    let other = |namespace: &str, labels: &[(&str, &str)]| Pod {
        namespace: namespace.to_owned(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    pods.insert(
        "ingress",
        other(
            &t.ingress_namespace,
            &[("app.kubernetes.io/name", "ingress-nginx")],
        ),
    );
    pods.insert(
        "prometheus",
        other(
            &t.monitoring_namespace,
            &[("app.kubernetes.io/name", "prometheus")],
        ),
    );
    pods.insert("stranger", other("default", &[("app", "curl")]));
    pods.insert("neighbour", other("shop", &[("app", "debug")]));
    pods.insert("db-neighbour", other("shop-db", &[("app", "debug")]));
    // The listener's pod as Tekton Triggers labels it, and a pipeline's pod beside it.
    pods.insert(
        "listener",
        other(
            &t.ci_namespace(),
            &[
                ("eventlistener", "shop"),
                ("app.kubernetes.io/managed-by", "EventListener"),
            ],
        ),
    );
    pods.insert(
        "build",
        other(&t.ci_namespace(), &[("tekton.dev/pipeline", "shop")]),
    );

    let ports = [
        ("frontend", 3000),
        ("backend", 8080),
        ("database", 5432),
        ("database", 9187),
        ("listener", 8080),
        ("build", 8080),
    ];
    let expected = [
        ("ingress", "listener", 8080),
        ("ingress", "frontend", 3000),
        ("frontend", "backend", 8080),
        ("prometheus", "backend", 8080),
        ("backend", "database", 5432),
        ("backup", "database", 5432),
        ("prometheus", "database", 9187),
    ];
    let mut found = Vec::new();
    for (source_name, source) in &pods {
        for (destination, port) in ports {
            if allowed(&policies, source, &pods[destination], port) {
                found.push((*source_name, destination, port));
            }
        }
    }
    let mut want = expected.to_vec();
    want.sort_unstable();
    found.sort_unstable();
    assert_eq!(found, want, "flows allowed by the policies");
    // The evaluator can tell: with no policies every pair of the table is allowed.
    assert!(allowed(&[], &pods["stranger"], &pods["database"], 5432));
}

#[tokio::test]
async fn a_real_api_server_accepts_every_object() {
    use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
    use kube::discovery::{ApiResource, Discovery};

    let (client, _plane) = homelab_testkit::control_plane::cluster().await.unwrap();
    // Its own names: clusters named by KUBECONFIG run other tests at once.
    let name = format!("wp{}", std::process::id());
    let (dir, t) = repo(&name);
    // The ServiceMonitors are checked against the Prometheus operator's own CRD.
    install_crd(&client, homelab_testkit::upstream::SERVICE_MONITOR_CRD).await;
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [t.app_namespace(), t.db_namespace(), t.ci_namespace()] {
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }))
        .unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
    }
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut accepted = 0;
    for (file, v) in objects(dir.path(), &name) {
        // Tekton's objects are held to Tekton's own types and validation instead (its CRDs
        // keep unknown fields): tekton_objects_pass_tekton_s_own_validation.
        let api_version = v["apiVersion"].as_str().unwrap();
        if v["kind"] == "Namespace" || api_version.contains("tekton.dev") {
            continue;
        }
        let (group, version) = match v["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, ver)) => (g.to_owned(), ver.to_owned()),
            None => (String::new(), v["apiVersion"].as_str().unwrap().to_owned()),
        };
        let kind = v["kind"].as_str().unwrap();
        let (resource, _) = discovery
            .groups()
            .flat_map(|g| g.versioned_resources(&version))
            .find(|(r, _)| r.group == group && r.kind == kind)
            .unwrap_or_else(|| panic!("{kind} not served"));
        let ar = ApiResource { ..resource };
        let api: Api<DynamicObject> = match v["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let object: DynamicObject = serde_json::from_value(v.clone()).unwrap();
        let answer = api
            .create(&dry, &object)
            .await
            .unwrap_or_else(|e| panic!("{file}: {kind} refused: {e}"));
        // A create prunes what a structural schema does not declare, silently: every field
        // sent must come back, or the CRD does not know it.
        if !v["spec"].is_null() {
            let answer = serde_json::to_value(&answer).unwrap();
            assert!(
                kept(&v["spec"], &answer["spec"]),
                "{file}: {kind} lost fields: sent {}, kept {}",
                v["spec"],
                answer["spec"]
            );
        }
        accepted += 1;
    }
    assert!(accepted >= 25, "{accepted}");
    for ns in [t.app_namespace(), t.db_namespace(), t.ci_namespace()] {
        let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    }
}

/// Whether every leaf of `sent` is in `got` with the same value (`got` may hold defaults).
fn kept(sent: &Value, got: &Value) -> bool {
    match (sent, got) {
        (Value::Object(a), Value::Object(b)) => {
            a.iter().all(|(k, v)| b.get(k).is_some_and(|w| kept(v, w)))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(v, w)| kept(v, w))
        }
        // Quantities come back normalized ("1000m" as "1"): compare them as the server does.
        (Value::String(a), Value::String(b)) => {
            a == b || (a.ends_with("000m") && a.trim_end_matches("000m") == b)
        }
        _ => sent == got,
    }
}

/// Installs an upstream CRD (server-side apply, so a shared cluster that has it already is
/// fine) and waits until the API server serves it.
async fn install_crd(
    client: &kube::Client,
    (module, version, file, sha256): homelab_testkit::upstream::CrdFile,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let path = homelab_testkit::upstream::module_file(module, version, file, sha256).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc).unwrap();
        install_crd_object(client, crd).await;
    }
}

async fn install_crd_object(
    client: &kube::Client,
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};
    let name = crd.metadata.name.clone().unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply("homelab-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    kube_manifest::crds_established(client, &[name], std::time::Duration::from_secs(60))
        .await
        .unwrap();
}

/// The script of the first container of the `kind` object in `file`.
fn script_of(files: &[(String, Vec<Value>)], file: &str, kind: &str) -> String {
    let (_, objects) = files.iter().find(|(f, _)| f == file).unwrap();
    let object = objects.iter().find(|o| o["kind"] == kind).unwrap();
    let pod = if kind == "CronJob" {
        &object["spec"]["jobTemplate"]["spec"]["template"]
    } else {
        &object["spec"]["template"]
    };
    pod["spec"]["containers"][0]["command"][2]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn the_daily_dump_keeps_seven_and_the_restore_brings_the_rows_back() {
    let pg = homelab_testkit::postgres::Postgres::start().unwrap();
    let t = WebPostgres::new("shop", "shop.homelab.lan");
    let sql = |db: &str, q: &str| {
        let out = pg.psql(db, q).unwrap();
        assert!(
            out.status.success(),
            "{q}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    sql("postgres", "CREATE DATABASE shop");
    sql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL); \
         INSERT INTO orders SELECT i, 'item ' || i FROM generate_series(1, 500) i",
    );
    let rows = || {
        sql(
            "shop",
            "SELECT count(*), sum(id), md5(string_agg(item, ',' ORDER BY id)) FROM orders",
        )
    };
    let before = rows();

    // The scripts as the CronJob and the restore Job hold them.
    let files = t.files();
    let dump = script_of(&files, "db/backup.yaml", "CronJob");
    let restore = script_of(&files, "db/restore-job.yaml.example", "Job");

    let work = tempfile::tempdir().unwrap();
    let backups = work.path().join("backup");
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&backups).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    homelab_testkit::date_shim(&bin, "202612%02dT020000Z");
    let run = |script: &str, extra: &[(&str, &str)]| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env_clear()
            .envs(pg.env("shop"))
            .env("BACKUP_DIR", &backups)
            .env(
                "PATH",
                format!("{}:{}:/usr/bin:/bin", bin.display(), pg.bin_dir().display()),
            )
            .envs(extra.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            pg.log()
        );
    };
    for day in 1..=9u32 {
        run(&dump, &[]);
        let names = homelab_testkit::file_names(&backups);
        let first = day.saturating_sub(6).max(1);
        let want: Vec<String> = (first..=day)
            .map(|d| format!("shop-202612{d:02}T020000Z.dump"))
            .collect();
        assert_eq!(names, want, "day {day}");
    }

    // Lost and changed rows, then the newest dump restored: as it was.
    sql(
        "shop",
        "DELETE FROM orders WHERE id > 100; UPDATE orders SET item = 'changed'",
    );
    assert_ne!(rows(), before);
    run(&restore, &[("DUMP", "shop-20261209T020000Z.dump")]);
    assert_eq!(rows(), before);
    // A dump that is not there: the restore fails and leaves the database alone.
    sql("shop", "INSERT INTO orders VALUES (1000, 'kept')");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&restore)
        .env_clear()
        .envs(pg.env("shop"))
        .env("BACKUP_DIR", &backups)
        .env("DUMP", "shop-20260101T020000Z.dump")
        .env("PATH", format!("{}:/usr/bin:/bin", pg.bin_dir().display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        sql("shop", "SELECT item FROM orders WHERE id = 1000"),
        "kept"
    );
}

/// Application `prefix<pid>` with both its namespaces made in the cluster.
async fn app_in_cluster(
    client: &kube::Client,
    prefix: &str,
) -> (WebPostgres, kube::Api<Namespace>) {
    let name = format!("{prefix}{}", std::process::id());
    let t = WebPostgres::new(&name, &format!("{name}.homelab.lan"));
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    for ns in [t.app_namespace(), t.db_namespace()] {
        let namespace: Namespace = serde_json::from_value(
            serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }),
        )
        .unwrap();
        namespaces
            .create(&kube::api::PostParams::default(), &namespace)
            .await
            .unwrap();
    }
    (t, namespaces)
}

/// A Job's `script` run here as its container runs it: `env` and nothing else, with
/// `kubectl` talking to the API server of `kubeconfig`. Its output; it must succeed.
fn with_kubectl(
    script: &str,
    env: &[(String, String)],
    kubeconfig: &Path,
    kubectl: &Path,
    home: &Path,
) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", kubectl.parent().unwrap().display()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap() + &String::from_utf8_lossy(&out.stderr)
}

/// The objects of `db/credentials.yaml`.
fn credentials_objects(t: &WebPostgres) -> Vec<Value> {
    t.files()
        .into_iter()
        .find(|(f, _)| f == "db/credentials.yaml")
        .unwrap()
        .1
}

/// The login's Job runs as an account that may read only the application's Secret and
/// create Secrets only in the application's two namespaces, as the real API server's RBAC
/// judges it.
#[tokio::test]
async fn the_login_job_s_account_may_touch_only_the_application_s_secret() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use kube::api::{Api, DeleteParams, PostParams};

    let (client, _plane) = homelab_testkit::control_plane::cluster().await.unwrap();
    let (t, namespaces) = app_in_cluster(&client, "rbac").await;
    let (db, app) = (t.db_namespace(), t.app_namespace());
    let pp = PostParams::default();
    for v in &credentials_objects(&t) {
        let ns = v["metadata"]["namespace"].as_str().unwrap();
        match v["kind"].as_str().unwrap() {
            "ServiceAccount" => drop(
                Api::<ServiceAccount>::namespaced(client.clone(), ns)
                    .create(&pp, &typed(v))
                    .await
                    .unwrap(),
            ),
            "Role" => drop(
                Api::<Role>::namespaced(client.clone(), ns)
                    .create(&pp, &typed(v))
                    .await
                    .unwrap(),
            ),
            "RoleBinding" => drop(
                Api::<RoleBinding>::namespaced(client.clone(), ns)
                    .create(&pp, &typed(v))
                    .await
                    .unwrap(),
            ),
            "Job" => {}
            other => panic!("{other} in credentials.yaml"),
        }
    }
    let account = format!("system:serviceaccount:{db}:postgres-credentials");
    let may = |verb: &'static str, namespace: String, secret: Option<String>| {
        common::may(
            &client,
            &account,
            &["system:serviceaccounts", "system:authenticated"],
            serde_json::json!({ "verb": verb, "resource": "secrets", "namespace": namespace, "name": secret }),
        )
    };
    common::until_allowed("create in the db tier", || may("create", db.clone(), None)).await;
    common::until_allowed("create in the app tier", || {
        may("create", app.clone(), None)
    })
    .await;
    assert!(may("get", app.clone(), Some(t.secret())).await);
    assert!(!may("create", "default".into(), None).await);
    assert!(!may("get", db.clone(), Some("another".into())).await);
    assert!(!may("list", db.clone(), None).await);
    assert!(!may("delete", db.clone(), Some(t.secret())).await);

    for ns in [&app, &db] {
        let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    }
}

/// A container's environment, every value written out.
fn plain_env(container: &Container) -> Vec<(String, String)> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap()))
        .collect()
}

/// A Secret's data as text.
fn login_of(secret: k8s_openapi::api::core::v1::Secret) -> BTreeMap<String, String> {
    secret
        .data
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

/// The login's Job script, run with `kubectl` against the real API server: it generates the
/// login once into both namespaces, keeps it on every later run, copies it to a namespace
/// that lost it, and never prints it.
#[tokio::test]
async fn the_login_is_generated_once_into_both_namespaces_and_kept() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, DeleteParams};

    let (client, plane) = homelab_testkit::control_plane::cluster().await.unwrap();
    let kubeconfig = plane.as_ref().map_or_else(
        || std::path::PathBuf::from(std::env::var_os("KUBECONFIG").unwrap()),
        homelab_testkit::control_plane::ControlPlane::kubeconfig,
    );
    let kubectl = homelab_testkit::require_kubectl();
    let (t, namespaces) = app_in_cluster(&client, "cred").await;
    let (db, app, name) = (t.db_namespace(), t.app_namespace(), t.name.clone());
    let job: Job = credentials_objects(&t)
        .iter()
        .find(|v| v["kind"] == "Job")
        .map(typed)
        .unwrap();
    // The Job's script and environment, run with kubectl against the API server.
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("postgres-credentials")
    );
    let container = &pod.containers[0];
    let script = container.command.as_ref().unwrap()[2].clone();
    let env = plain_env(container);
    let home = tempfile::tempdir().unwrap();
    let run = || with_kubectl(&script, &env, &kubeconfig, &kubectl, home.path());
    let secrets = |ns: &str| Api::<Secret>::namespaced(client.clone(), ns);

    let first = run();
    assert!(first.contains("generated Secret"), "{first}");
    let login = login_of(secrets(&db).get(&t.secret()).await.unwrap());
    assert_eq!(login["username"], name);
    assert_eq!(login["database"], name);
    let password = &login["password"];
    assert_eq!(password.len(), 40);
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(
        !first.contains(password.as_str()),
        "the script printed the password"
    );
    assert_eq!(
        login_of(secrets(&app).get(&t.secret()).await.unwrap()),
        login
    );

    // Again: kept as it is.
    let version = secrets(&db)
        .get(&t.secret())
        .await
        .unwrap()
        .metadata
        .resource_version;
    let second = run();
    assert!(
        !second.contains("generated") && !second.contains("copied"),
        "{second}"
    );
    assert_eq!(
        secrets(&db)
            .get(&t.secret())
            .await
            .unwrap()
            .metadata
            .resource_version,
        version
    );
    // The app tier lost it: copied again from the database's, the same login.
    secrets(&app)
        .delete(&t.secret(), &DeleteParams::default())
        .await
        .unwrap();
    let third = run();
    assert!(third.contains("copied Secret"), "{third}");
    assert!(!third.contains(password.as_str()));
    assert_eq!(
        login_of(secrets(&app).get(&t.secret()).await.unwrap()),
        login
    );

    for ns in [&app, &db] {
        let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    }
}

/// The text of the application's files under `ci/`, as written, in the template's order.
fn ci_text(root: &Path, name: &str) -> String {
    let dir = root.join("apps").join(name);
    template(name, "x.lan")
        .files()
        .into_iter()
        .filter(|(file, _)| file.starts_with("ci/"))
        .map(|(file, _)| std::fs::read_to_string(dir.join(file)).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn tekton_objects_pass_tekton_s_own_validation() {
    let (dir, _) = repo("shop");
    let text = ci_text(dir.path(), "shop");
    let tekton = objects(dir.path(), "shop")
        .into_iter()
        .filter(|(_, v)| v["apiVersion"].as_str().unwrap().contains("tekton.dev"))
        .count();
    assert_eq!(
        tekton, 7,
        "3 Tasks, a Pipeline, a binding, a template, a listener"
    );
    let (ok, report) = homelab_testkit::upstream::tekton_check(&text).unwrap();
    assert!(ok, "{report}");
    // Every one was checked, and the PipelineRun the template makes as well.
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok ")).count(),
        tekton + 1,
        "{report}"
    );
    assert!(
        report.contains("ok TriggerTemplate shop resourcetemplates[0]: PipelineRun shop-"),
        "{report}"
    );

    // The check can fail: a misspelt field, a parameter nobody declared, a result of a task
    // that does not exist.
    for (from, to, says) in [
        ("script:", "scripts:", "unknown field"),
        (
            "$(params.revision)",
            "$(params.commit)",
            "non-existent variable",
        ),
        (
            "$(tasks.build-backend.results.digest)",
            "$(tasks.build-api.results.digest)",
            "build-api",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let (ok, report) =
            homelab_testkit::upstream::tekton_check(&text.replacen(from, to, 1)).unwrap();
        assert!(!ok && report.contains(says), "{from} -> {to}: {report}");
    }
}

#[test]
fn the_template_s_files_match_their_golden_copy() {
    let (dir, _) = repo("shop");
    // Every file as written, each after a comment naming it.
    let app = dir.path().join("apps/shop");
    let text = std::iter::once("kustomization.yaml".to_owned())
        .chain(
            template("shop", "x.lan")
                .files()
                .into_iter()
                .map(|(file, _)| file),
        )
        .fold(String::new(), |mut all, file| {
            let text = std::fs::read_to_string(app.join(&file)).unwrap();
            all.push_str("# ---- apps/shop/");
            all.push_str(&file);
            all.push('\n');
            all.push_str(&text);
            all
        });
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/web-postgres.yaml");
    if std::env::var_os("HOMELAB_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &text).unwrap();
    }
    let want = std::fs::read_to_string(&golden)
        .expect("golden file missing: run with HOMELAB_UPDATE_GOLDEN=1 once");
    assert_eq!(
        text, want,
        "the ci/ files changed: review, then HOMELAB_UPDATE_GOLDEN=1"
    );
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A bare repository `remote.git` holding the GitOps repository of `root` on branch main.
fn bare_remote(root: &Path, work: &Path) -> std::path::PathBuf {
    let bare = work.join("remote.git");
    git(work, &["init", "-q", "--bare", bare.to_str().unwrap()]);
    git(root, &["init", "-q"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-qm", "init"]);
    git(root, &["push", "-q", bare.to_str().unwrap(), "HEAD:main"]);
    bare
}

fn run_script(script: &str, env: &[(&str, String)]) -> std::process::Output {
    Command::new("sh")
        .args(["-c", script])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap()
}

#[test]
fn the_promotion_commits_the_new_digests_and_takes_a_new_head_when_its_push_is_refused() {
    let (dir, t) = repo("shop");
    let work = tempfile::tempdir().unwrap();
    let bare = bare_remote(dir.path(), work.path());
    let auth = work.path().join("auth");
    std::fs::create_dir(&auth).unwrap();
    std::fs::write(auth.join("username"), "pipeline").unwrap();
    std::fs::write(auth.join("password"), "token").unwrap();
    // The remote refuses the first push, as it would one that lost a race.
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nif [ ! -e {0} ]; then touch {0}; echo 'refused once' >&2; exit 1; fi\n",
            work.path().join("refused").display()
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&hook).status().unwrap();

    let (frontend, backend) = (
        format!("sha256:{}", "a".repeat(64)),
        format!("sha256:{}", "b".repeat(64)),
    );
    let env = |f: &str, b: &str| {
        vec![
            ("REPOSITORY", format!("file://{}", bare.display())),
            ("BRANCH", "main".to_owned()),
            ("DIRECTORY", "apps/shop".to_owned()),
            ("REVISION", "0123abc".to_owned()),
            (
                "FRONTEND_IMAGE",
                gitops::templates::image_repository(&t.frontend_image).to_owned(),
            ),
            ("FRONTEND_DIGEST", f.to_owned()),
            (
                "BACKEND_IMAGE",
                gitops::templates::image_repository(&t.backend_image).to_owned(),
            ),
            ("BACKEND_DIGEST", b.to_owned()),
            ("AUTH", auth.display().to_string()),
        ]
    };
    let script = gitops::templates::promote_script();
    let out = run_script(&script, &env(&frontend, &backend));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("push refused (try 1)") && said.contains("deployed 0123abc"),
        "{said}"
    );
    let show = |file: &str| git(&bare, &["show", &format!("main:apps/shop/app/{file}.yaml")]);
    assert!(show("frontend").contains(&format!(
        "image: harbor.homelab.lan/homelab/shop-frontend@{frontend}"
    )));
    assert!(show("backend").contains(&format!(
        "image: harbor.homelab.lan/homelab/shop-backend@{backend}"
    )));
    // Only the image lines changed, in one commit that says what it deployed.
    let diff = git(&bare, &["diff", "--stat", "main~1", "main"]);
    assert!(
        diff.contains("2 files changed, 2 insertions(+), 2 deletions(-)"),
        "{diff}"
    );
    let message = git(&bare, &["log", "-1", "--format=%B", "main"]);
    assert!(
        message.starts_with("apps/shop: deploy 0123abc") && message.contains(&backend),
        "{message}"
    );

    // The same digests again: nothing to commit.
    let out = run_script(&script, &env(&frontend, &backend));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already deployed"));
    assert_eq!(git(&bare, &["rev-list", "--count", "main"]).trim(), "2");
    // An application whose manifests name another image is not silently left alone.
    let mut wrong = env(&frontend, &backend);
    wrong[4].1 = "harbor.homelab.lan/other/shop-frontend".into();
    let out = run_script(&script, &wrong);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("names no image harbor.homelab.lan/other/shop-frontend")
    );
}

#[test]
fn the_checkout_is_exactly_the_pushed_commit() {
    let (dir, _) = repo("shop");
    let work = tempfile::tempdir().unwrap();
    let bare = bare_remote(dir.path(), work.path());
    let first = git(&bare, &["rev-parse", "main"]).trim().to_owned();
    std::fs::write(dir.path().join("later.txt"), "later").unwrap();
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-qm", "later"]);
    git(
        dir.path(),
        &["push", "-q", bare.to_str().unwrap(), "HEAD:main"],
    );
    // A retried task finds the last attempt's files: they go.
    let source = work.path().join("source");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join(".stale"), "x").unwrap();
    let result = work.path().join("commit");
    let out = run_script(
        &gitops::templates::clone_script(),
        &[
            ("URL", format!("file://{}", bare.display())),
            ("REVISION", first.clone()),
            ("SOURCE", source.display().to_string()),
            ("RESULT", result.display().to_string()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&result).unwrap(), first);
    assert!(!source.join(".stale").exists() && !source.join("later.txt").exists());
    assert!(source.join("apps/shop/app/frontend.yaml").exists());
}

#[tokio::test]
async fn with_esc_every_login_is_an_external_secret_that_external_secrets_crd_keeps_whole() {
    use gitops::templates::Credentials;
    use kube::api::{Api, DynamicObject, PostParams};
    use kube::discovery::ApiResource;

    let (client, _plane) = homelab_testkit::control_plane::cluster().await.unwrap();
    // External Secrets' own CRDs at the platform's version (its bundle holds them all).
    let eso = *homelab_testkit::upstream::PLATFORM_CRDS
        .iter()
        .find(|(module, ..)| module.ends_with("external-secrets"))
        .unwrap();
    install_crd(&client, eso).await;
    let name = format!("esc{}", std::process::id());
    let t = template(&name, &format!("{name}.homelab.lan")).with_credentials(Credentials::Esc {
        store: "pulumi-esc".into(),
        path: format!("apps.{name}.postgres"),
    });
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [t.app_namespace(), t.db_namespace(), t.ci_namespace()] {
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }))
        .unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
    }
    let ar = ApiResource {
        group: "external-secrets.io".into(),
        version: "v1".into(),
        api_version: "external-secrets.io/v1".into(),
        kind: "ExternalSecret".into(),
        plural: "externalsecrets".into(),
    };
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut checked = Vec::new();
    for (file, objects) in t.files() {
        for v in objects {
            assert!(v["kind"] != "Secret", "{file}: a Secret in the repository");
            if v["kind"] != "ExternalSecret" {
                continue;
            }
            let ns = v["metadata"]["namespace"].as_str().unwrap();
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let answer = api
                .create(&dry, &serde_json::from_value(v.clone()).unwrap())
                .await
                .unwrap_or_else(|e| panic!("{file}: refused: {e}"));
            let answer = serde_json::to_value(&answer).unwrap();
            assert!(
                kept(&v["spec"], &answer["spec"]),
                "{file}: lost fields: sent {}, kept {}",
                v["spec"],
                answer["spec"]
            );
            checked.push(v["metadata"]["name"].as_str().unwrap().to_owned());
        }
    }
    checked.sort();
    let mut want = vec![
        t.secret(),
        t.secret(),
        t.webhook_secret(),
        t.push_secret(),
        t.gitops_secret(),
    ];
    want.sort();
    assert_eq!(checked, want);
    // The push login is rendered as a registry login for the registry the images go to.
    let push = t
        .files()
        .into_iter()
        .flat_map(|(_, objects)| objects)
        .find(|v| v["metadata"]["name"] == t.push_secret().as_str())
        .unwrap();
    let template = &push["spec"]["target"]["template"];
    assert_eq!(template["type"], "kubernetes.io/dockerconfigjson");
    let auths = template["data"][".dockerconfigjson"].as_str().unwrap();
    assert!(
        auths.starts_with("{\"auths\":{\"harbor.homelab.lan\":{\"username\":\"{{ .username }}\""),
        "{auths}"
    );
    for ns in [t.app_namespace(), t.db_namespace(), t.ci_namespace()] {
        let _ = namespaces
            .delete(&ns, &kube::api::DeleteParams::default())
            .await;
    }
}

#[tokio::test]
async fn the_webhook_secret_is_generated_once_and_never_printed() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, DeleteParams, PostParams};

    let (client, plane) = homelab_testkit::control_plane::cluster().await.unwrap();
    let kubeconfig = plane.as_ref().map_or_else(
        || std::path::PathBuf::from(std::env::var_os("KUBECONFIG").unwrap()),
        homelab_testkit::control_plane::ControlPlane::kubeconfig,
    );
    let kubectl = homelab_testkit::require_kubectl();
    let name = format!("hook{}", std::process::id());
    let t = template(&name, &format!("{name}.homelab.lan"));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": t.ci_namespace() } }))
    .unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let job: Job = t
        .files()
        .into_iter()
        .find(|(f, _)| f == "ci/credentials.yaml")
        .unwrap()
        .1
        .iter()
        .find(|v| v["kind"] == "Job")
        .map(typed)
        .unwrap();
    let container = job.spec.unwrap().template.spec.unwrap().containers[0].clone();
    let script = container.command.as_ref().unwrap()[2].clone();
    let env = plain_env(&container);
    let home = tempfile::tempdir().unwrap();
    let run = || with_kubectl(&script, &env, &kubeconfig, &kubectl, home.path());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &t.ci_namespace());
    let first = run();
    assert!(first.contains("generated Secret"), "{first}");
    let secret = secrets.get(&t.webhook_secret()).await.unwrap();
    let value = String::from_utf8(secret.data.unwrap()["secret"].0.clone()).unwrap();
    assert_eq!(value.len(), 40);
    assert!(value.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(!first.contains(&value), "the script printed the secret");
    // Again: kept as it is (the forge already has it).
    let second = run();
    assert!(second.contains("(kept)"), "{second}");
    let again = secrets.get(&t.webhook_secret()).await.unwrap();
    assert_eq!(
        again.metadata.resource_version,
        secret.metadata.resource_version
    );
    let _ = namespaces
        .delete(&t.ci_namespace(), &DeleteParams::default())
        .await;
}
