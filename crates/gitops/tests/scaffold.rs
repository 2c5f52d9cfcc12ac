//! The generated repository: it passes the validator (every kustomization built with
//! kubectl, which the suite requires), every object round-trips through the typed structs, re-running init keeps edits
//! to files it does not own, and `add_app` edits the lists structurally.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use gitops::scaffold::{FileChange, MARKER, add_app, init, wave};
use gitops::types::{AppProject, Application};

mod common;
use common::{check, spec};

fn yaml_documents(root: &Path, out: &mut Vec<serde_json::Value>) {
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_documents(&path, out);
        } else {
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_norway::Deserializer::from_str(&text) {
                let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
                if !v.is_null() {
                    out.push(v);
                }
            }
        }
    }
}

#[test]
fn the_generated_repository_validates_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let report = init(dir.path(), &spec()).unwrap();
    assert!(
        report.iter().all(|(_, c)| *c == FileChange::Created),
        "{report:?}"
    );
    check(dir.path());
    let mut docs = Vec::new();
    yaml_documents(dir.path(), &mut docs);
    let mut apps = 0;
    for doc in &docs {
        // argocd-cm is Argo CD's: its settings informer selects part-of=argocd.
        let part_of = if doc["metadata"]["name"] == "argocd-cm" {
            "argocd"
        } else {
            "homelab"
        };
        if doc["kind"].is_string() {
            assert_eq!(
                doc["metadata"]["labels"]["app.kubernetes.io/part-of"], part_of,
                "{doc}"
            );
        }
        match doc["kind"].as_str() {
            Some("Application") => {
                let typed: Application = serde_json::from_value(doc.clone()).unwrap();
                assert_eq!(&serde_json::to_value(&typed).unwrap(), doc);
                apps += 1;
            }
            Some("AppProject") => {
                let typed: AppProject = serde_json::from_value(doc.clone()).unwrap();
                assert_eq!(&serde_json::to_value(&typed).unwrap(), doc);
                assert_eq!(
                    typed.metadata.annotations.unwrap()["argocd.argoproj.io/sync-wave"],
                    wave("projects").to_string()
                );
            }
            _ => {}
        }
    }
    assert_eq!(
        apps, 20,
        "root, 11 components (Harbor's certificate one), external secrets and its configuration, the runner controller and one runner set, the etcd backup, kube-prometheus-stack, Loki and Alloy"
    );
    // External Secrets' configuration, as given, in its own directory and wave.
    let secrets = std::fs::read_to_string(
        dir.path()
            .join("infrastructure/external-secrets/secrets.yaml"),
    )
    .unwrap();
    assert!(secrets.contains("kind: ClusterSecretStore"), "{secrets}");
    assert!(secrets.contains("key: harbor.admin"), "{secrets}");
    assert_eq!(
        wave("external-secrets-config"),
        wave("external-secrets") + 1
    );
}

/// The Application of `name` as JSON, from a repository written by `init`.
fn app_of(root: &Path, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(root.join(format!("bootstrap/apps/{name}.yaml"))).unwrap();
    serde_norway::from_str(&text).unwrap()
}

#[test]
fn monitoring_is_three_applications_with_the_sizes_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &spec()).unwrap();
    let values =
        |name: &str| app_of(dir.path(), name)["spec"]["source"]["helm"]["valuesObject"].clone();
    for name in ["kube-prometheus-stack", "loki", "alloy"] {
        let app = app_of(dir.path(), name);
        assert_eq!(
            app["spec"]["destination"]["namespace"], "monitoring",
            "{name}"
        );
        assert_eq!(app["spec"]["project"], "platform", "{name}");
    }
    // The operator's CRDs exist before any app's ServiceMonitor (the apps' wave); Loki is
    // up before the shipper that writes to it.
    assert!(wave("kube-prometheus-stack") < wave("apps"));
    assert!(wave("loki") < wave("alloy"));
    let stack = values("kube-prometheus-stack");
    let prometheus = &stack["prometheus"]["prometheusSpec"];
    let pair = |v: &serde_json::Value| {
        (
            v["requests"]["cpu"].as_str().unwrap().to_owned(),
            v["requests"]["memory"].as_str().unwrap().to_owned(),
            v["limits"]["cpu"].as_str().unwrap().to_owned(),
            v["limits"]["memory"].as_str().unwrap().to_owned(),
        )
    };
    let seed = ("500m".into(), "1Gi".into(), "1000m".into(), "2Gi".into());
    assert_eq!(pair(&prometheus["resources"]), seed);
    let claim = &prometheus["storageSpec"]["volumeClaimTemplate"]["spec"];
    assert_eq!(claim["resources"]["requests"]["storage"], "10Gi");
    assert_eq!(claim["storageClassName"], "local-path");
    assert_eq!(prometheus["serviceMonitorSelectorNilUsesHelmValues"], false);
    let loki = values("loki");
    assert_eq!(pair(&loki["singleBinary"]["resources"]), seed);
    assert_eq!(loki["singleBinary"]["persistence"]["size"], "5Gi");
    assert_eq!(
        loki["singleBinary"]["persistence"]["storageClass"],
        "local-path"
    );
    // Every workload of the three charts is sized: requests and limits on each.
    for (chart, path) in [
        (
            "kube-prometheus-stack",
            "/alertmanager/alertmanagerSpec/resources",
        ),
        ("kube-prometheus-stack", "/prometheusOperator/resources"),
        ("kube-prometheus-stack", "/kube-state-metrics/resources"),
        (
            "kube-prometheus-stack",
            "/prometheus-node-exporter/resources",
        ),
        ("kube-prometheus-stack", "/grafana/resources"),
        ("loki", "/gateway/resources"),
        ("alloy", "/alloy/resources"),
    ] {
        let r = values(chart).pointer(path).cloned().unwrap_or_default();
        assert!(
            r["requests"].is_object() && r["limits"].is_object(),
            "{chart} {path}: {r}"
        );
    }
    // Grafana's login: the delivered Secret, and the dashboards sidecar in every namespace.
    let grafana = &stack["grafana"];
    assert_eq!(grafana["admin"]["existingSecret"], "grafana-admin");
    assert_eq!(
        grafana["sidecar"]["dashboards"]["label"],
        "grafana_dashboard"
    );
    assert_eq!(grafana["sidecar"]["dashboards"]["searchNamespace"], "ALL");
    // Alloy pushes to the Loki release's gateway.
    let config = values("alloy")["alloy"]["configMap"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(config.contains("http://loki-gateway.monitoring.svc/loki/api/v1/push"));

    // Without a delivered login the chart generates one; without the feature, nothing.
    let mut own = spec();
    own.monitoring = Some(gitops::scaffold::Monitoring::default());
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &own).unwrap();
    let stack = app_of(dir.path(), "kube-prometheus-stack");
    assert!(
        stack
            .pointer("/spec/source/helm/valuesObject/grafana/admin")
            .is_none()
    );
    assert_eq!(
        gitops::scaffold::Monitoring::default().grafana_login().0,
        "kube-prometheus-stack-grafana"
    );
    own.monitoring = None;
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &own).unwrap();
    assert!(!dir.path().join("bootstrap/apps/loki.yaml").exists());
}

#[test]
fn cicd_installs_tekton_from_its_release_files_and_only_that_is_left_unchecked() {
    let mut with_tekton = spec();
    with_tekton.cicd = true;
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &with_tekton).unwrap();
    for (name, wave_of) in [("tekton-pipelines", 8), ("tekton-triggers", 9)] {
        let app = app_of(dir.path(), name);
        assert_eq!(app["spec"]["destination"]["namespace"], "tekton-pipelines");
        assert_eq!(app["spec"]["source"]["path"], format!("platform/{name}"));
        assert_eq!(wave(name), wave_of);
    }
    // Triggers after Pipelines (its CRDs name Pipelines' types), both before the apps.
    assert!(
        wave("tekton-pipelines") < wave("tekton-triggers")
            && wave("tekton-triggers") < wave("apps")
    );
    let kustomization = |dir_name: &str| {
        std::fs::read_to_string(
            dir.path()
                .join(format!("platform/{dir_name}/kustomization.yaml")),
        )
        .unwrap()
    };
    assert!(kustomization("tekton-pipelines").contains(
        "  - https://github.com/tektoncd/pipeline/releases/download/v1.15.0/release.yaml\n"
    ));
    let triggers = kustomization("tekton-triggers");
    assert!(triggers.contains("/tektoncd/triggers/releases/download/v0.37.0/release.yaml"));
    assert!(triggers.contains("/tektoncd/triggers/releases/download/v0.37.0/interceptors.yaml"));
    // The validator passes it; only those remote files are not checked here (no network):
    // a warning each, nothing else.
    homelab_testkit::require_kubectl();
    let report = gitops::validate::validate(
        dir.path(),
        &gitops::validate::Options::default()
            .repo_url(Some(common::REPO.into()))
            .kustomize_build(true),
    )
    .unwrap();
    let findings: Vec<(String, String)> = report
        .findings
        .iter()
        .filter(|f| f.severity < gitops::validate::Severity::Note)
        .map(|f| (f.file.display().to_string(), f.rule.to_string()))
        .collect();
    assert!(!report.has_errors(), "{findings:?}");
    assert!(
        findings
            .iter()
            .all(|(file, rule)| rule == "kustomize-build" && file.contains("platform/tekton-")),
        "{findings:?}"
    );
}

#[test]
fn init_updates_its_own_files_and_keeps_yours() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &spec()).unwrap();
    let owned = dir.path().join("infrastructure/metallb-config/pool.yaml");
    let generated = std::fs::read_to_string(&owned).unwrap();
    std::fs::write(
        &owned,
        generated.replace("192.168.122.100-192.168.122.150", "10.0.0.1-10.0.0.2"),
    )
    .unwrap();
    let mine = dir.path().join("platform/argocd/service.yaml");
    let my_text = std::fs::read_to_string(&mine)
        .unwrap()
        .replace(&format!("{MARKER}\n"), "# my own\n");
    std::fs::write(&mine, &my_text).unwrap();
    std::fs::write(
        dir.path().join("core/extra.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n",
    )
    .unwrap();

    let report = init(dir.path(), &spec()).unwrap();
    let change = |p: &str| {
        report
            .iter()
            .find(|(f, _)| f == Path::new(p))
            .unwrap()
            .1
            .clone()
    };
    let FileChange::Updated(diff) = change("infrastructure/metallb-config/pool.yaml") else {
        panic!("the owned file is updated: {report:?}");
    };
    assert!(
        diff.contains("-  - 10.0.0.1-10.0.0.2")
            && diff.contains("+  - 192.168.122.100-192.168.122.150"),
        "{diff}"
    );
    assert_eq!(std::fs::read_to_string(&owned).unwrap(), generated);
    assert_eq!(change("platform/argocd/service.yaml"), FileChange::Kept);
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), my_text);
    assert!(dir.path().join("core/extra.yaml").exists());
    let changed = report
        .iter()
        .filter(|(_, c)| !matches!(c, FileChange::Unchanged | FileChange::Kept))
        .count();
    assert_eq!(changed, 1, "{report:?}");
}

#[test]
fn add_app_edits_the_lists_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &spec()).unwrap();
    let list = dir.path().join("bootstrap/workloads/kustomization.yaml");
    std::fs::write(
        &list,
        "# my apps\nresources: []\ncommonLabels:\n  team: home\n",
    )
    .unwrap();
    let first = add_app(dir.path(), &spec(), "web").unwrap();
    assert!(
        first
            .iter()
            .all(|(_, c)| !matches!(c, FileChange::Kept | FileChange::Unchanged)),
        "{first:?}"
    );
    let second = add_app(dir.path(), &spec(), "web").unwrap();
    assert!(
        second
            .iter()
            .all(|(_, c)| matches!(c, FileChange::Kept | FileChange::Unchanged)),
        "{second:?}"
    );
    add_app(dir.path(), &spec(), "blog").unwrap();
    let doc: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&list).unwrap()).unwrap();
    assert_eq!(
        doc["resources"],
        serde_norway::from_str::<serde_norway::Value>("[web.yaml, blog.yaml]").unwrap()
    );
    assert_eq!(
        doc["commonLabels"]["team"].as_str(),
        Some("home"),
        "other keys survive"
    );
    check(dir.path());
    let err = add_app(dir.path(), &spec(), "Web_App")
        .unwrap_err()
        .to_string();
    assert!(err.contains("DNS label"), "{err}");
    // A list that does not parse is named, with the parser's own error kept as the source.
    std::fs::write(&list, "resources: [web.yaml\n").unwrap();
    let err = add_app(dir.path(), &spec(), "shop").unwrap_err();
    match &err {
        gitops::scaffold::ScaffoldError::Parse { path, .. } => assert_eq!(path, &list),
        other => panic!("{other:?}"),
    }
    assert!(std::error::Error::source(&err).is_some());
    assert!(
        err.to_string().starts_with(&list.display().to_string()),
        "{err}"
    );
}

/// The health Argo CD's Lua check gives an Application object (run in Lua 5.1, as Argo CD's
/// gopher-lua does).
fn application_health(lua_source: &str, app: &serde_json::Value) -> (String, String) {
    use mlua::LuaSerdeExt;
    let lua = mlua::Lua::new();
    lua.globals()
        .set("obj", lua.to_value(app).unwrap())
        .unwrap();
    let hs: mlua::Table = lua.load(lua_source).eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

#[test]
fn the_generated_argocd_cm_makes_a_child_application_progress_until_synced_and_healthy() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &spec()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("platform/argocd/argocd-cm.yaml")).unwrap();
    let cm: serde_json::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    assert_eq!(cm["metadata"]["namespace"], "argocd");
    // Argo CD's settings informer selects ConfigMaps by this label.
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/part-of"],
        "argocd"
    );
    let lua = cm["data"]["resource.customizations.health.argoproj.io_Application"]
        .as_str()
        .expect("the Application health check is in argocd-cm");
    let app = |status: serde_json::Value| {
        serde_json::json!({ "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                            "metadata": { "name": "metallb" }, "status": status })
    };
    let no_status = serde_json::json!({ "kind": "Application", "metadata": { "name": "x" } });
    assert_eq!(application_health(lua, &no_status).0, "Progressing");
    for (health, sync, want) in [
        ("Progressing", "Synced", "Progressing"),
        ("Healthy", "OutOfSync", "Progressing"),
        ("Healthy", "Unknown", "Progressing"),
        ("Suspended", "Synced", "Progressing"),
        ("Healthy", "Synced", "Healthy"),
        ("Degraded", "Synced", "Degraded"),
        ("Missing", "OutOfSync", "Missing"),
    ] {
        let (status, message) = application_health(
            lua,
            &app(serde_json::json!({ "health": { "status": health }, "sync": { "status": sync } })),
        );
        assert_eq!(status, want, "health {health}, sync {sync}: {message}");
        if want == "Progressing" {
            assert!(
                message.contains(health) && message.contains(sync),
                "{message}"
            );
        }
    }
    let (status, message) = application_health(
        lua,
        &app(
            serde_json::json!({ "health": { "status": "Degraded", "message": "Deployment speaker: 0/3 available" } }),
        ),
    );
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("Degraded", "Deployment speaker: 0/3 available")
    );
}

/// Every key path of a values object: `a.b.c` for each leaf (a list is a leaf).
fn value_paths(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                value_paths(child, &path, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

/// Whether `path` is a key the chart knows: listed, or below a mapping that takes any key.
fn known(keys: &std::collections::BTreeSet<String>, path: &str) -> bool {
    keys.contains(path)
        || path
            .match_indices('.')
            .any(|(at, _)| keys.contains(&format!("{}.*", &path[..at])))
}

#[test]
fn every_helm_value_set_is_a_key_of_its_chart_at_the_pinned_version() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &spec()).unwrap();
    let mut docs = Vec::new();
    yaml_documents(dir.path(), &mut docs);
    let facts = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/chart-keys");
    let mut checked = Vec::new();
    for doc in docs.iter().filter(|d| d["kind"] == "Application") {
        let source = &doc["spec"]["source"];
        let (Some(chart), Some(version)) =
            (source["chart"].as_str(), source["targetRevision"].as_str())
        else {
            continue;
        };
        let values = &source["helm"]["valuesObject"];
        if values.is_null() {
            continue;
        }
        // The keys of the chart at that version (scripts/chart-keys.py, from the chart's
        // values.yaml and templates): a version bump must bring its file.
        let file = facts.join(format!("{chart}-{version}.txt"));
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/chart-keys.py)", file.display()));
        let keys: std::collections::BTreeSet<String> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(str::to_owned)
            .collect();
        let mut paths = Vec::new();
        value_paths(values, "", &mut paths);
        let unknown: Vec<&String> = paths.iter().filter(|p| !known(&keys, p)).collect();
        assert!(
            unknown.is_empty(),
            "{chart} {version} has no such keys: {unknown:?}"
        );
        checked.push(chart.to_owned());
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "alloy",
            "cert-manager",
            "external-secrets",
            "gha-runner-scale-set",
            "gha-runner-scale-set-controller",
            "harbor",
            "ingress-nginx",
            "kube-prometheus-stack",
            "loki"
        ]
    );
    // The key test can fail: a key the chart does not have is caught.
    let keys =
        std::collections::BTreeSet::from(["a".to_owned(), "a.b".to_owned(), "m.*".to_owned()]);
    assert!(known(&keys, "a.b") && known(&keys, "m.any.thing"));
    assert!(!known(&keys, "a.c") && !known(&keys, "mm.x"));
}

#[test]
fn the_runner_sets_name_the_controller_s_service_account_and_viewers_read_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &spec()).unwrap();
    let mut docs = Vec::new();
    yaml_documents(dir.path(), &mut docs);
    let app = |name: &str| {
        docs.iter()
            .find(|d| d["kind"] == "Application" && d["metadata"]["name"] == name)
            .unwrap()
    };
    let controller = app("actions-runner-controller");
    let runner = app("runner-homelab");
    let account = &controller["spec"]["source"]["helm"]["valuesObject"]["serviceAccount"]["name"];
    let named = &runner["spec"]["source"]["helm"]["valuesObject"]["controllerServiceAccount"];
    assert_eq!(&named["name"], account);
    assert_eq!(
        named["namespace"],
        controller["spec"]["destination"]["namespace"]
    );
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "homelab-viewer")
        .unwrap();
    for rule in role["rules"].as_array().unwrap() {
        let core = rule["apiGroups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "");
        let resources = rule["resources"].as_array().unwrap();
        if core {
            assert!(
                resources.iter().all(|r| r != "*" && r != "secrets"),
                "{rule}"
            );
        }
        assert!(
            rule["apiGroups"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| g != "*"),
            "{rule}"
        );
    }
}

/// The viewer role, applied to a real API server with RBAC (or the cluster `KUBECONFIG`
/// names): its group may read workloads and Argo CD's Applications, never a Secret.
#[tokio::test]
async fn a_real_api_server_lets_viewers_read_but_not_secrets() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{Api, DeleteParams, PostParams};

    let (client, _plane) = homelab_testkit::control_plane::cluster().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &spec()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("core/rbac.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    for doc in &docs {
        match doc["kind"].as_str() {
            Some("ClusterRole") => {
                let _ = roles
                    .delete("homelab-viewer", &DeleteParams::default())
                    .await;
                roles
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(doc.clone()).unwrap(),
                    )
                    .await
                    .unwrap();
            }
            Some("ClusterRoleBinding") => {
                let _ = bindings
                    .delete("homelab-viewers", &DeleteParams::default())
                    .await;
                bindings
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(doc.clone()).unwrap(),
                    )
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
    let may = |verb: &'static str,
               group: &'static str,
               resource: &'static str,
               namespace: &'static str| {
        common::may(
            &client,
            "someone@homelab",
            &["homelab:viewers", "system:authenticated"],
            serde_json::json!({ "verb": verb, "group": group, "resource": resource, "namespace": namespace }),
        )
    };
    common::until_allowed("viewers list pods", || may("list", "", "pods", "default")).await;
    assert!(may("get", "", "pods/log", "default").await);
    assert!(may("watch", "apps", "deployments", "web").await);
    assert!(may("list", "argoproj.io", "applications", "argocd").await);
    assert!(!may("get", "", "secrets", "default").await);
    assert!(!may("list", "", "secrets", "kube-system").await);
    assert!(!may("delete", "", "pods", "default").await);
    let _ = roles
        .delete("homelab-viewer", &DeleteParams::default())
        .await;
    let _ = bindings
        .delete("homelab-viewers", &DeleteParams::default())
        .await;
}

/// The scheduled etcd snapshot: a `CronJob` the API server accepts (server-side dry run on a
/// real API server, or the cluster `KUBECONFIG` names), on the control plane's host network,
/// reading etcd's certificates read-only, keeping the newest `keep` on the node.
#[tokio::test]
async fn the_scheduled_etcd_backup_is_a_cronjob_the_api_server_accepts() {
    use k8s_openapi::api::batch::v1::CronJob;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::{Api, PostParams};

    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &spec()).unwrap();
    let text =
        std::fs::read_to_string(dir.path().join("platform/etcd-backup/cronjob.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let account: ServiceAccount = serde_json::from_value(docs[0].clone()).unwrap();
    assert_eq!(account.automount_service_account_token, Some(false));
    let job: CronJob = serde_json::from_value(docs[1].clone()).unwrap();
    let pod = job
        .spec
        .as_ref()
        .unwrap()
        .job_template
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .clone()
        .unwrap();
    assert_eq!(pod.host_network, Some(true));
    let init_container = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(
        init_container.image.as_deref(),
        Some("registry.k8s.io/etcd:3.5.21-0")
    );
    assert!(
        init_container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.name == "pki" && m.read_only == Some(true))
    );
    // With a bucket: named and pruned on the node first, then copied by rclone, whose keys
    // come from the Secret and which reads the snapshots read-only.
    let keep = &pod.init_containers.as_ref().unwrap()[1];
    assert_eq!(keep.name, "keep");
    let prune = keep.command.as_ref().unwrap()[2].clone();
    assert!(prune.contains("tail -n +8"), "{prune}");
    let upload = &pod.containers[0];
    assert_eq!(upload.name, "upload");
    assert!(upload.command.as_ref().unwrap()[2].contains("tail -n +8"));
    let env = upload.env.as_ref().unwrap();
    let from_secret: Vec<(&str, &str)> = env
        .iter()
        .filter_map(|e| {
            let key = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((e.name.as_str(), key.name.as_str()))
        })
        .collect();
    assert_eq!(
        from_secret,
        [
            ("RCLONE_S3_ACCESS_KEY_ID", "etcd-backup-s3"),
            ("RCLONE_S3_SECRET_ACCESS_KEY", "etcd-backup-s3")
        ]
    );
    assert!(env.iter().all(|e| e.value.as_deref() != Some("AKIA")));
    assert!(
        upload
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .all(|m| m.read_only == Some(true))
    );

    let (client, _plane) = homelab_testkit::control_plane::cluster().await.unwrap();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), "kube-system")
        .create(&dry, &account)
        .await
        .unwrap();
    let accepted = Api::<CronJob>::namespaced(client, "kube-system")
        .create(&dry, &job)
        .await
        .unwrap();
    assert_eq!(accepted.spec.unwrap().schedule, "0 3 * * *");
}
