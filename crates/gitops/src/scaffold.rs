//! The manifests repository homelab starts from: `bootstrap/` (the root Application, which
//! owns `bootstrap/apps/`: the AppProjects in the first wave, then one Application per
//! component, ordered by the wave table; and `bootstrap/workloads/`, the Applications of your
//! own apps), `core/`, `infrastructure/`, `platform/`, and `apps/<name>/` for your apps. Files this module writes carry a marker line; re-running `init` updates
//! them in place (reporting a diff) and leaves every other file alone. `add_app` adds an
//! application through structured edits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kube::api::ObjectMeta;
use serde::Serialize;
use serde_json::{Value, json};

use crate::types::{
    AppProject, AppProjectSpec, Application, ApplicationSource, ApplicationSpec, Destination,
    Extra, HelmSource, SYNC_WAVE, SyncPolicy,
};

/// The first line of every file `init` owns. Remove it to keep your own version.
pub const MARKER: &str = "# Managed by homelab-gitops init: edits are replaced on the next init; delete this line to keep your own version.";

/// The core resources the `homelab-viewer` role reads: everything but Secrets.
pub const VIEWER_CORE_RESOURCES: &[&str] = &[
    "configmaps",
    "endpoints",
    "events",
    "limitranges",
    "namespaces",
    "nodes",
    "persistentvolumeclaims",
    "persistentvolumes",
    "pods",
    "pods/log",
    "replicationcontrollers",
    "resourcequotas",
    "serviceaccounts",
    "services",
];

/// The namespace of the Actions Runner Controller.
pub const ARC_NAMESPACE: &str = "arc-systems";
/// The controller's service account, named in both charts: the runner scale set chart
/// otherwise finds it with Helm's `lookup`, which returns nothing under Argo CD (the runner
/// Applications would then fail to render).
pub const ARC_CONTROLLER_SERVICE_ACCOUNT: &str = "arc-gha-rs-controller";

/// The Secret of Harbor's TLS certificate (and the Certificate's name).
pub const HARBOR_TLS_SECRET: &str = "harbor-tls";
/// The Secret holding Harbor's admin password (key `HARBOR_ADMIN_PASSWORD`), which the
/// chart reads instead of its default.
pub const HARBOR_ADMIN_SECRET: &str = "harbor-admin";

/// The host of a URL (`https://harbor.lan:8443/x` → `harbor.lan`), without a URL parser.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default().to_owned(),
        None => authority.split(':').next().unwrap_or_default().to_owned(),
    }
}

/// The sync waves of the platform, in order: what must exist before what.
pub const WAVES: &[(&str, i64)] = &[
    ("projects", 0),
    ("local-path", 1),
    ("namespaces", 2),
    ("etcd-backup", 2),
    ("metallb", 3),
    ("metallb-config", 4),
    ("ingress-nginx", 5),
    ("cert-manager", 6),
    ("issuers", 7),
    ("external-secrets", 7),
    ("external-secrets-config", 8),
    ("argocd-config", 10),
    ("kube-prometheus-stack", 8),
    ("tekton-pipelines", 8),
    ("tekton-triggers", 9),
    ("harbor-tls", 9),
    ("loki", 9),
    ("alloy", 10),
    ("harbor", 10),
    ("actions-runner-controller", 10),
    ("runners", 11),
    ("app-definitions", 11),
    ("apps", 12),
    ("harbor-patches", 13),
];

/// The wave of a component of [`WAVES`] (12, the apps' wave, for anything else).
pub fn wave(component: &str) -> i64 {
    WAVES
        .iter()
        .find(|(c, _)| *c == component)
        .map_or(12, |(_, w)| *w)
}

/// One runner scale set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    /// Repository name (under the owner).
    pub repository: String,
    /// Fewest runners.
    pub min: u32,
    /// Most runners.
    pub max: u32,
}

/// What the repository is generated from (homelab.toml converts into this).
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// This repository's clone URL.
    pub repo_url: String,
    /// The branch Argo CD follows.
    pub branch: String,
    /// MetalLB's address range (`a.b.c.d-a.b.c.e`).
    pub metallb_range: String,
    /// Fixed addresses: ingress, Harbor, Argo CD.
    pub ingress_ip: String,
    /// Harbor's address.
    pub harbor_ip: String,
    /// Harbor's external URL (`https://harbor.homelab.lan`): its certificate is issued for
    /// this host (and the address) by the homelab CA.
    pub harbor_url: String,
    /// Argo CD's address.
    pub argocd_ip: String,
    /// Pinned chart and release versions by component.
    pub versions: BTreeMap<String, String>,
    /// Deploy External Secrets.
    pub external_secrets: bool,
    /// External Secrets' configuration objects (the `ClusterSecretStore` and the
    /// `ExternalSecret`s, e.g. from `esc_secrets::deliver`), written to
    /// `infrastructure/external-secrets/` and synced in the wave after External Secrets.
    pub secret_objects: Vec<Value>,
    /// GitHub owner of the runner repositories; runners are deployed when some are listed.
    pub github_owner: String,
    /// Runner scale sets.
    pub runners: Vec<Runner>,
    /// A scheduled etcd snapshot on the control plane (`features.backups`).
    pub etcd_backup: Option<EtcdBackup>,
    /// The monitoring stack (`features.monitoring`).
    pub monitoring: Option<Monitoring>,
    /// Tekton Pipelines and Triggers (`features.cicd`), from the release manifests of the
    /// pinned `tekton_pipelines` and `tekton_triggers` tags.
    pub cicd: bool,
}

/// Where Tekton runs.
pub const TEKTON_NAMESPACE: &str = "tekton-pipelines";

/// The release files of Tekton Pipelines `pipelines` and Triggers `triggers` (tags such as
/// `v1.15.0`), as each project publishes them on its GitHub releases: the directory of the
/// GitOps repository and the URLs its `kustomization.yaml` lists.
pub fn tekton_releases(pipelines: &str, triggers: &str) -> [(&'static str, Vec<String>); 2] {
    let asset = |project: &str, tag: &str, file: &str| {
        format!("https://github.com/tektoncd/{project}/releases/download/{tag}/{file}")
    };
    [
        (
            "platform/tekton-pipelines",
            vec![asset("pipeline", pipelines, "release.yaml")],
        ),
        (
            "platform/tekton-triggers",
            vec![
                asset("triggers", triggers, "release.yaml"),
                asset("triggers", triggers, "interceptors.yaml"),
            ],
        ),
    ]
}

/// The namespace of the monitoring stack.
pub const MONITORING_NAMESPACE: &str = "monitoring";

/// The label (and value) Grafana's dashboard sidecar looks for on ConfigMaps, in every
/// namespace: a ConfigMap carrying it is a dashboard.
pub const GRAFANA_DASHBOARD_LABEL: (&str, &str) = ("grafana_dashboard", "1");

/// The monitoring stack in `monitoring`, as three Applications: kube-prometheus-stack
/// (Prometheus with 10Gi on `local-path`, Alertmanager, Grafana with its dashboard sidecar,
/// the Prometheus operator whose CRDs the apps' `ServiceMonitor`s need), Loki in single-binary
/// mode with 5Gi, and Grafana Alloy shipping every pod's log to Loki (Promtail, the older
/// shipper, is deprecated upstream). Every workload has requests and limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Monitoring {
    /// The Secret in `monitoring` with Grafana's login (keys `admin-user` and
    /// `admin-password`), delivered by the secrets layer; `None`: the chart generates a
    /// password into `kube-prometheus-stack-grafana`.
    pub grafana_admin_secret: Option<String>,
}

impl Monitoring {
    /// Where Grafana's login is read from: the Secret's name and its user and password keys.
    pub fn grafana_login(&self) -> (&str, &str, &str) {
        match &self.grafana_admin_secret {
            Some(secret) => (secret, "admin-user", "admin-password"),
            None => (GRAFANA_GENERATED_SECRET, "admin-user", "admin-password"),
        }
    }
}

/// The Secret the Grafana chart writes its generated login to (release
/// `kube-prometheus-stack`).
pub const GRAFANA_GENERATED_SECRET: &str = "kube-prometheus-stack-grafana";

/// Requests and limits as Helm values: `((cpu, memory), (cpu, memory))`.
fn sized(requests: (&str, &str), limits: (&str, &str)) -> Value {
    json!({ "requests": { "cpu": requests.0, "memory": requests.1 },
            "limits": { "cpu": limits.0, "memory": limits.1 } })
}

/// A `local-path` claim of `size` as a Helm value.
fn claim(size: &str) -> Value {
    json!({ "spec": { "storageClassName": "local-path", "accessModes": ["ReadWriteOnce"],
                      "resources": { "requests": { "storage": size } } } })
}

/// The monitoring stack's Applications.
fn monitoring_apps(
    spec: &Spec,
    monitoring: &Monitoring,
) -> Result<Vec<(String, Application)>, ScaffoldError> {
    let big = sized(("500m", "1Gi"), ("1000m", "2Gi"));
    let small = sized(("100m", "128Mi"), ("200m", "256Mi"));
    let mut grafana = json!({
        "resources": sized(("100m", "256Mi"), ("500m", "512Mi")),
        // Dashboards are ConfigMaps with the label, in any namespace (an app ships its own).
        "sidecar": { "dashboards": { "enabled": true, "label": GRAFANA_DASHBOARD_LABEL.0,
                                     "labelValue": GRAFANA_DASHBOARD_LABEL.1, "searchNamespace": "ALL" } },
    });
    if let Some(secret) = &monitoring.grafana_admin_secret {
        grafana["admin"] = json!({ "existingSecret": secret, "userKey": "admin-user",
                                   "passwordKey": "admin-password" });
    }
    // Keys of the charts' values.yaml (testdata/chart-keys): kube-prometheus-stack 88.5.3
    // with its grafana, kube-state-metrics and prometheus-node-exporter subcharts.
    let stack = json!({
        "prometheus": { "prometheusSpec": {
            "resources": big,
            "retention": "7d",
            "storageSpec": { "volumeClaimTemplate": claim("10Gi") },
            // Every ServiceMonitor and PodMonitor of the cluster, not only the chart's own.
            "serviceMonitorSelectorNilUsesHelmValues": false,
            "podMonitorSelectorNilUsesHelmValues": false,
        } },
        "alertmanager": { "alertmanagerSpec": {
            "resources": small,
            "storage": { "volumeClaimTemplate": claim("1Gi") },
        } },
        "prometheusOperator": { "resources": small },
        "kube-state-metrics": { "resources": small },
        "prometheus-node-exporter": { "resources": sized(("50m", "64Mi"), ("200m", "128Mi")) },
        "grafana": grafana,
    });
    // Loki 18.11.0 (grafana-community): one binary (as the chart's monolithic-values.yaml),
    // its chunks and index on the volume; the other modes' workloads at zero.
    let loki = json!({
        "deploymentMode": "Monolithic",
        "loki": {
            "auth_enabled": false,
            "commonConfig": { "replication_factor": 1 },
            "storage": { "type": "filesystem" },
            "schemaConfig": { "configs": [{ "from": "2024-04-01", "store": "tsdb", "object_store": "filesystem",
                                            "schema": "v13", "index": { "prefix": "index_", "period": "24h" } }] },
        },
        "singleBinary": { "replicas": 1, "resources": big,
                          "persistence": { "enabled": true, "size": "5Gi", "storageClass": "local-path" } },
        "read": { "replicas": 0 }, "write": { "replicas": 0 }, "backend": { "replicas": 0 },
        "chunksCache": { "enabled": false }, "resultsCache": { "enabled": false },
        "gateway": { "resources": small },
        "lokiCanary": { "enabled": false },
        "test": { "enabled": false },
    });
    // Alloy 1.11.1: a DaemonSet that reads every pod's log through the API and pushes it
    // to Loki's push API.
    let alloy = json!({
        "alloy": {
            "resources": small,
            "configMap": { "content": ALLOY_CONFIG },
        },
        "controller": { "type": "daemonset" },
    });
    let chart_app = |name: &str, repo: &str, chart: &str, version: &str, values: Value| {
        (
            name.to_owned(),
            application(
                name,
                name,
                "platform",
                Spec::chart(repo, chart, version, values),
                MONITORING_NAMESPACE,
            ),
        )
    };
    Ok(vec![
        chart_app(
            "kube-prometheus-stack",
            "https://prometheus-community.github.io/helm-charts",
            "kube-prometheus-stack",
            &spec.version("kube_prometheus_stack")?,
            stack,
        ),
        chart_app(
            "loki",
            "https://grafana-community.github.io/helm-charts",
            "loki",
            &spec.version("loki")?,
            loki,
        ),
        chart_app(
            "alloy",
            "https://grafana.github.io/helm-charts",
            "alloy",
            &spec.version("alloy")?,
            alloy,
        ),
    ])
}

/// Alloy's pipeline: discover the node's pods, tail their logs through the API server, label
/// them with namespace, pod and container, and write them to Loki's gateway.
pub const ALLOY_CONFIG: &str = r#"discovery.kubernetes "pods" {
  role = "pod"
  selectors {
    role  = "pod"
    field = "spec.nodeName=" + coalesce(sys.env("HOSTNAME"), constants.hostname)
  }
}

discovery.relabel "pods" {
  targets = discovery.kubernetes.pods.targets
  rule {
    source_labels = ["__meta_kubernetes_namespace"]
    target_label  = "namespace"
  }
  rule {
    source_labels = ["__meta_kubernetes_pod_name"]
    target_label  = "pod"
  }
  rule {
    source_labels = ["__meta_kubernetes_pod_container_name"]
    target_label  = "container"
  }
}

loki.source.kubernetes "pods" {
  targets    = discovery.relabel.pods.output
  forward_to = [loki.write.default.receiver]
}

loki.write "default" {
  endpoint {
    url = "http://loki-gateway.monitoring.svc/loki/api/v1/push"
  }
}
"#;

/// A `CronJob` on the control plane that snapshots etcd on a schedule and keeps the newest
/// snapshots on the node's disk (`platform/etcd-backup/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdBackup {
    /// When (cron, the cluster's time zone: UTC on kubeadm nodes).
    pub schedule: String,
    /// The directory on the control-plane node (created 0700).
    pub node_dir: String,
    /// Snapshots kept there.
    pub keep: u32,
    /// The image whose `etcdctl` takes the snapshot: kubeadm's etcd image of the release.
    pub etcd_image: String,
    /// A small image with a shell (names and prunes the snapshots).
    pub shell_image: String,
    /// Where each snapshot is also copied, off the node.
    pub s3: Option<S3Copy>,
}

/// An S3-compatible bucket the scheduled snapshots are copied to (with `rclone`), keeping
/// the newest [`EtcdBackup::keep`] there as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Copy {
    /// The service's URL.
    pub endpoint: String,
    /// The bucket (it must exist: the copy needs no right to create buckets).
    pub bucket: String,
    /// The key prefix (`etcd` → `etcd/etcd-<time>.db`).
    pub prefix: String,
    /// The region signatures name.
    pub region: String,
    /// The Secret in `kube-system` with the keys `access_key_id` and `secret_access_key`.
    pub secret: String,
    /// The image whose `rclone` copies (`rclone/rclone`).
    pub image: String,
}

/// The container that names the new snapshot by its time and keeps the newest `keep` in
/// `$BACKUP_DIR` (the node directory, mounted at `/backup`). Names sort by time, so the
/// newest are the last names, whatever the files' modification times.
fn keep_script(keep: u32) -> String {
    format!(
        "set -e; dir=\"${{BACKUP_DIR:-/backup}}\"; chmod 700 \"$dir\"; \
         mv \"$dir/.in-progress.db\" \"$dir/etcd-$(date -u +%Y%m%dT%H%M%SZ).db\"; \
         ls -1 \"$dir\"/etcd-*.db | sort -r | tail -n +{} | xargs -r rm -f; ls -l \"$dir\"",
        keep + 1
    )
}

/// The container that copies the newest snapshot to the bucket and keeps the newest `keep`
/// there. rclone is configured only through the environment (`:s3:` names the backend with
/// no configuration file); the bucket's credentials come from the Secret.
fn upload_script(keep: u32) -> String {
    format!(
        "set -e; dir=\"${{BACKUP_DIR:-/backup}}\"; dest=\":s3:$S3_BUCKET/$S3_PREFIX\"; \
         latest=$(ls -1 \"$dir\"/etcd-*.db | sort | tail -n 1); \
         rclone copyto \"$latest\" \"$dest/${{latest##*/}}\"; \
         rclone lsf --files-only --include 'etcd-*.db' \"$dest\" | sort -r | tail -n +{} | \
         while read -r old; do rclone deletefile \"$dest/$old\"; done; \
         rclone lsf --files-only \"$dest\"",
        keep + 1
    )
}

impl EtcdBackup {
    /// The objects: a `ServiceAccount` with no rights and no token, and the `CronJob`. The
    /// snapshot is taken by `etcdctl` from kubeadm's etcd image with the health-check client
    /// certificate (the node's `/etc/kubernetes/pki/etcd`, read-only), on the host network
    /// (etcd listens on 127.0.0.1), into a file only root reads; the shell container names
    /// it by time and removes all but the newest `keep`. With [`EtcdBackup::s3`], the newest
    /// is then copied to the bucket by `rclone`, which keeps the newest `keep` there too.
    pub fn objects(&self) -> Vec<Value> {
        let pki = "/etc/kubernetes/pki/etcd";
        let keep = self.keep.max(1);
        let small = json!({ "requests": { "cpu": "50m", "memory": "64Mi" },
                            "limits": { "cpu": "500m", "memory": "256Mi" } });
        let snapshot = json!({
            "name": "snapshot", "image": self.etcd_image,
            "command": ["etcdctl", "--endpoints=https://127.0.0.1:2379",
                format!("--cacert={pki}/ca.crt"),
                format!("--cert={pki}/healthcheck-client.crt"),
                format!("--key={pki}/healthcheck-client.key"),
                "snapshot", "save", "/backup/.in-progress.db"],
            "resources": small,
            "volumeMounts": [
                { "name": "pki", "mountPath": pki, "readOnly": true },
                { "name": "backup", "mountPath": "/backup" }],
        });
        let keep_container = json!({
            "name": "keep", "image": self.shell_image,
            "command": ["sh", "-c", keep_script(keep)],
            "resources": small,
            "volumeMounts": [{ "name": "backup", "mountPath": "/backup" }],
        });
        // Without a bucket the naming is the job's last step; with one it runs before the
        // copy (init containers run in order, then the containers).
        let (init, containers) = match &self.s3 {
            None => (vec![snapshot], vec![keep_container]),
            Some(s3) => {
                let secret =
                    |key: &str| json!({ "secretKeyRef": { "name": s3.secret, "key": key } });
                let upload = json!({
                    "name": "upload", "image": s3.image,
                    "command": ["sh", "-c", upload_script(keep)],
                    "env": [
                        { "name": "S3_BUCKET", "value": s3.bucket },
                        { "name": "S3_PREFIX", "value": s3.prefix },
                        { "name": "RCLONE_S3_PROVIDER", "value": "Other" },
                        { "name": "RCLONE_S3_ENDPOINT", "value": s3.endpoint },
                        { "name": "RCLONE_S3_REGION", "value": s3.region },
                        { "name": "RCLONE_S3_NO_CHECK_BUCKET", "value": "true" },
                        { "name": "RCLONE_S3_ACCESS_KEY_ID", "valueFrom": secret("access_key_id") },
                        { "name": "RCLONE_S3_SECRET_ACCESS_KEY", "valueFrom": secret("secret_access_key") }],
                    "resources": small,
                    "volumeMounts": [{ "name": "backup", "mountPath": "/backup", "readOnly": true }],
                });
                (vec![snapshot, keep_container], vec![upload])
            }
        };
        vec![
            json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": { "name": "etcd-backup", "namespace": "kube-system" },
                    "automountServiceAccountToken": false }),
            json!({ "apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": { "name": "etcd-backup", "namespace": "kube-system" },
                "spec": {
                    "schedule": self.schedule,
                    "concurrencyPolicy": "Forbid",
                    "successfulJobsHistoryLimit": 3,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": { "spec": {
                        "backoffLimit": 2,
                        "template": { "spec": {
                            "serviceAccountName": "etcd-backup",
                            "automountServiceAccountToken": false,
                            "hostNetwork": true,
                            "restartPolicy": "OnFailure",
                            "nodeSelector": { "node-role.kubernetes.io/control-plane": "" },
                            "tolerations": [{ "key": "node-role.kubernetes.io/control-plane",
                                              "operator": "Exists", "effect": "NoSchedule" }],
                            "initContainers": init,
                            "containers": containers,
                            "volumes": [
                                { "name": "pki", "hostPath": { "path": pki, "type": "Directory" } },
                                { "name": "backup", "hostPath": { "path": self.node_dir, "type": "DirectoryOrCreate" } }],
                        } },
                    } },
                } }),
        ]
    }
}

/// What `init` did to each file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileChange {
    /// Written for the first time.
    Created,
    /// Owned and rewritten; the diff is given.
    Updated(String),
    /// Owned and already as generated.
    Unchanged,
    /// Not owned (no marker): left alone.
    Kept,
}

/// A scaffold problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaffoldError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An input is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// An object could not be written as YAML or JSON.
    #[error("cannot write {what}: {source}")]
    Serialize {
        /// The object or file.
        what: String,
        /// The serializer's error.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A file of the repository does not parse.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_norway::Error,
    },
}

/// [`ScaffoldError::Serialize`] of `what`.
fn serialize_error<E: std::error::Error + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> ScaffoldError {
    let what = what.into();
    move |e| ScaffoldError::Serialize {
        what,
        source: Box::new(e),
    }
}

fn meta(name: &str, wave_of: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some("argocd".into()),
        annotations: Some([(SYNC_WAVE.to_owned(), wave(wave_of).to_string())].into()),
        labels: Some(
            [
                ("app.kubernetes.io/name".to_owned(), name.to_owned()),
                ("app.kubernetes.io/part-of".to_owned(), "homelab".to_owned()),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "homelab-gitops".to_owned(),
                ),
            ]
            .into(),
        ),
        ..ObjectMeta::default()
    }
}

fn local() -> Destination {
    Destination {
        server: Some("https://kubernetes.default.svc".into()),
        name: None,
        namespace: None,
    }
}

fn application(
    name: &str,
    wave_of: &str,
    project: &str,
    source: ApplicationSource,
    namespace: &str,
) -> Application {
    let mut app = Application::new(
        name,
        ApplicationSpec {
            project: project.into(),
            source: Some(source),
            destination: Destination {
                namespace: Some(namespace.into()),
                ..local()
            },
            sync_policy: Some(SyncPolicy::homelab()),
            ..ApplicationSpec::default()
        },
    );
    app.metadata = meta(name, wave_of);
    app
}

impl Spec {
    fn version(&self, component: &str) -> Result<String, ScaffoldError> {
        self.versions
            .get(component)
            .cloned()
            .ok_or_else(|| ScaffoldError::Invalid(format!("no pinned version for {component}")))
    }

    fn git(&self, path: &str) -> ApplicationSource {
        ApplicationSource {
            repo_url: self.repo_url.clone(),
            path: Some(path.into()),
            target_revision: Some(self.branch.clone()),
            ..ApplicationSource::default()
        }
    }

    fn chart(repo: &str, chart: &str, version: &str, values: Value) -> ApplicationSource {
        ApplicationSource {
            repo_url: repo.into(),
            chart: Some(chart.into()),
            target_revision: Some(version.trim_start_matches('v').into()),
            helm: Some(HelmSource {
                release_name: Some(chart.into()),
                values_object: (!values.is_null()).then_some(values),
                ..HelmSource::default()
            }),
            ..ApplicationSource::default()
        }
    }
}

/// The objects as one multi-document file owned by `init`; each object carries the
/// recommended labels (`part-of: homelab`, `managed-by: homelab-gitops`).
fn yaml<T: Serialize>(objects: &[T]) -> Result<String, ScaffoldError> {
    let mut out = format!("{MARKER}\n");
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        let mut value =
            serde_json::to_value(o).map_err(serialize_error(format!("object {i} of the file")))?;
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            let labels = meta
                .entry("labels")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .ok_or_else(|| ScaffoldError::Invalid("metadata.labels is not a map".into()))?;
            for (k, v) in [
                ("app.kubernetes.io/part-of", "homelab"),
                ("app.kubernetes.io/managed-by", "homelab-gitops"),
            ] {
                labels.entry(k).or_insert_with(|| v.into());
            }
        }
        out.push_str(
            &serde_norway::to_string(&value)
                .map_err(serialize_error(format!("object {i} of the file")))?,
        );
    }
    Ok(out)
}

/// The repository's files, path and contents.
///
/// # Errors
/// A version the spec must pin is missing.
#[allow(clippy::too_many_lines, reason = "the repository, file by file")]
pub fn files(spec: &Spec) -> Result<Vec<(PathBuf, String)>, ScaffoldError> {
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let mut add = |path: &str, text: String| files.push((PathBuf::from(path), text));

    // The root owns apps/, where every other Application lives.
    let mut root = application(
        "root",
        "projects",
        "default",
        spec.git("bootstrap/apps"),
        "argocd",
    );
    root.metadata.annotations = None;
    add("bootstrap/root.yaml", yaml(&[root])?);

    let projects: Vec<AppProject> = ["core", "infrastructure", "platform", "apps"]
        .iter()
        .map(|name| {
            let mut p = AppProject::new(
                name,
                AppProjectSpec {
                    description: Some(format!("homelab {name}")),
                    source_repos: vec!["*".into()],
                    destinations: vec![Destination {
                        namespace: Some("*".into()),
                        ..local()
                    }],
                    cluster_resource_whitelist: Some(vec![json!({ "group": "*", "kind": "*" })]),
                    extra: Extra::new(),
                },
            );
            p.metadata = meta(name, "projects");
            p
        })
        .collect();
    add("bootstrap/apps/projects.yaml", yaml(&projects)?);

    let mut apps: Vec<(String, Application)> = vec![
        (
            "local-path".into(),
            application(
                "local-path",
                "local-path",
                "infrastructure",
                ApplicationSource {
                    repo_url: "https://github.com/rancher/local-path-provisioner.git".into(),
                    path: Some("deploy".into()),
                    target_revision: Some(spec.version("local_path_provisioner")?),
                    ..ApplicationSource::default()
                },
                "local-path-storage",
            ),
        ),
        (
            "core".into(),
            application("core", "namespaces", "core", spec.git("core"), "default"),
        ),
        (
            "metallb".into(),
            application(
                "metallb",
                "metallb",
                "infrastructure",
                Spec::chart(
                    "https://metallb.github.io/metallb",
                    "metallb",
                    &spec.version("metallb")?,
                    Value::Null,
                ),
                "metallb-system",
            ),
        ),
        (
            "metallb-config".into(),
            application(
                "metallb-config",
                "metallb-config",
                "infrastructure",
                spec.git("infrastructure/metallb-config"),
                "metallb-system",
            ),
        ),
        (
            "ingress-nginx".into(),
            application(
                "ingress-nginx",
                "ingress-nginx",
                "infrastructure",
                Spec::chart(
                    "https://kubernetes.github.io/ingress-nginx",
                    "ingress-nginx",
                    &spec.version("ingress_nginx")?,
                    json!({ "controller": { "service": { "annotations": { "metallb.io/loadBalancerIPs": spec.ingress_ip } } } }),
                ),
                "ingress-nginx",
            ),
        ),
        (
            "cert-manager".into(),
            application(
                "cert-manager",
                "cert-manager",
                "infrastructure",
                Spec::chart(
                    "https://charts.jetstack.io",
                    "cert-manager",
                    &spec.version("cert_manager")?,
                    json!({ "crds": { "enabled": true } }),
                ),
                "cert-manager",
            ),
        ),
        (
            "issuers".into(),
            application(
                "issuers",
                "issuers",
                "infrastructure",
                spec.git("infrastructure/issuers"),
                "cert-manager",
            ),
        ),
        (
            "harbor".into(),
            application(
                "harbor",
                "harbor",
                "platform",
                Spec::chart(
                    "https://helm.goharbor.io",
                    "harbor",
                    &spec.version("harbor")?,
                    // Keys of the chart's values.yaml (goharbor/harbor-helm v1.18.0):
                    // expose.type/tls.certSource/tls.secret.secretName,
                    // expose.loadBalancer.annotations, externalURL,
                    // existingSecretAdminPassword(+Key).
                    json!({
                        "expose": {
                            "type": "loadBalancer",
                            "tls": { "enabled": true, "certSource": "secret",
                                     "secret": { "secretName": HARBOR_TLS_SECRET } },
                            "loadBalancer": { "annotations": { "metallb.io/loadBalancerIPs": spec.harbor_ip } },
                        },
                        "externalURL": spec.harbor_url,
                        // Delivered by homelab (the secrets phase from ESC, else the platform
                        // phase from [harbor] admin_password): never the chart's default.
                        "existingSecretAdminPassword": HARBOR_ADMIN_SECRET,
                        "existingSecretAdminPasswordKey": "HARBOR_ADMIN_PASSWORD",
                    }),
                ),
                "harbor",
            ),
        ),
        (
            "harbor-tls".into(),
            application(
                "harbor-tls",
                "harbor-tls",
                "platform",
                spec.git("platform/harbor"),
                "harbor",
            ),
        ),
        (
            "argocd-config".into(),
            application(
                "argocd-config",
                "argocd-config",
                "platform",
                spec.git("platform/argocd"),
                "argocd",
            ),
        ),
        (
            "workloads".into(),
            application(
                "workloads",
                "app-definitions",
                "apps",
                spec.git("bootstrap/workloads"),
                "argocd",
            ),
        ),
    ];
    if spec.external_secrets {
        apps.push((
            "external-secrets".into(),
            application(
                "external-secrets",
                "external-secrets",
                "platform",
                Spec::chart(
                    "https://charts.external-secrets.io",
                    "external-secrets",
                    &spec.version("external_secrets")?,
                    json!({ "installCRDs": true }),
                ),
                "external-secrets",
            ),
        ));
    }
    if spec.external_secrets && !spec.secret_objects.is_empty() {
        apps.push((
            "external-secrets-config".into(),
            application(
                "external-secrets-config",
                "external-secrets-config",
                "infrastructure",
                spec.git("infrastructure/external-secrets"),
                "external-secrets",
            ),
        ));
    }
    if !spec.runners.is_empty() {
        let version = spec.version("actions_runner_controller")?;
        apps.push((
            "actions-runner-controller".into(),
            application(
                "actions-runner-controller",
                "actions-runner-controller",
                "platform",
                Spec::chart(
                    "ghcr.io/actions/actions-runner-controller-charts",
                    "gha-runner-scale-set-controller",
                    &version,
                    json!({ "serviceAccount": { "name": ARC_CONTROLLER_SERVICE_ACCOUNT } }),
                ),
                ARC_NAMESPACE,
            ),
        ));
        for r in &spec.runners {
            let name = format!("runner-{}", r.repository);
            apps.push((
                name.clone(),
                application(
                    &name,
                    "runners",
                    "platform",
                    Spec::chart(
                        "ghcr.io/actions/actions-runner-controller-charts",
                        "gha-runner-scale-set",
                        &version,
                        json!({
                            "githubConfigUrl": format!("https://github.com/{}/{}", spec.github_owner, r.repository),
                            "githubConfigSecret": "github-runner-token",
                            "minRunners": r.min, "maxRunners": r.max, "runnerScaleSetName": r.repository,
                            "controllerServiceAccount": {
                                "namespace": ARC_NAMESPACE, "name": ARC_CONTROLLER_SERVICE_ACCOUNT },
                        }),
                    ),
                    "arc-runners",
                ),
            ));
        }
    }
    if let Some(backup) = &spec.etcd_backup {
        apps.push((
            "etcd-backup".into(),
            application(
                "etcd-backup",
                "etcd-backup",
                "core",
                spec.git("platform/etcd-backup"),
                "kube-system",
            ),
        ));
        add(
            "platform/etcd-backup/cronjob.yaml",
            yaml(&backup.objects())?,
        );
    }
    if let Some(monitoring) = &spec.monitoring {
        apps.extend(monitoring_apps(spec, monitoring)?);
    }
    if spec.cicd {
        let releases = tekton_releases(
            &spec.version("tekton_pipelines")?,
            &spec.version("tekton_triggers")?,
        );
        for (dir, urls) in releases {
            let name = dir.trim_start_matches("platform/");
            apps.push((
                name.to_owned(),
                application(name, name, "platform", spec.git(dir), TEKTON_NAMESPACE),
            ));
            let mut text = format!(
                "{MARKER}\n# Tekton's own release files (fetched by Argo CD's kustomize when it syncs).\nresources:\n"
            );
            for url in urls {
                text.push_str("  - ");
                text.push_str(&url);
                text.push('\n');
            }
            add(&format!("{dir}/kustomization.yaml"), text);
        }
    }
    let mut listed = Vec::new();
    for (name, app) in &apps {
        add(
            &format!("bootstrap/apps/{name}.yaml"),
            yaml(std::slice::from_ref(app))?,
        );
        listed.push(format!("{name}.yaml"));
    }

    // core/: namespaces every component needs.
    let namespaces: Vec<Value> = ["metallb-system", "ingress-nginx", "cert-manager", "harbor", "local-path-storage"]
        .iter()
        .map(|ns| json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": { "app.kubernetes.io/part-of": "homelab" } } }))
        .collect();
    add("core/namespaces.yaml", yaml(&namespaces)?);
    // A read-only role for people who look but do not touch, bound to a group. It names
    // the core resources it reads: a wildcard there would include Secrets (and the
    // ServiceAccount tokens they hold).
    let read = json!(["get", "list", "watch"]);
    let rbac = [
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": { "name": "homelab-viewer" },
                "rules": [
                    { "apiGroups": [""], "resources": VIEWER_CORE_RESOURCES, "verbs": read },
                    { "apiGroups": ["apps", "batch", "networking.k8s.io", "discovery.k8s.io",
                                    "storage.k8s.io", "events.k8s.io", "argoproj.io"],
                      "resources": ["*"], "verbs": read },
                ] }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": { "name": "homelab-viewers" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "homelab-viewer" },
                "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "homelab:viewers" }] }),
    ];
    add("core/rbac.yaml", yaml(&rbac)?);
    add(
        "core/kustomization.yaml",
        format!("{MARKER}\nresources:\n  - namespaces.yaml\n  - rbac.yaml\n"),
    );

    // infrastructure/: MetalLB's pool and advertisement, the issuers.
    let metallb = [
        json!({ "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": { "name": "homelab", "namespace": "metallb-system" },
                "spec": { "addresses": [spec.metallb_range] } }),
        json!({ "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                "metadata": { "name": "homelab", "namespace": "metallb-system" },
                "spec": { "ipAddressPools": ["homelab"] } }),
    ];
    add("infrastructure/metallb-config/pool.yaml", yaml(&metallb)?);
    add(
        "infrastructure/metallb-config/kustomization.yaml",
        format!("{MARKER}\nresources:\n  - pool.yaml\n"),
    );
    let issuers = [
        json!({ "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
                "metadata": { "name": "selfsigned" }, "spec": { "selfSigned": {} } }),
        json!({ "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "metadata": { "name": "homelab-ca", "namespace": "cert-manager" },
                "spec": { "isCA": true, "commonName": "homelab CA", "secretName": "homelab-ca",
                          "privateKey": { "algorithm": "ECDSA", "size": 256 },
                          "issuerRef": { "name": "selfsigned", "kind": "ClusterIssuer", "group": "cert-manager.io" } } }),
        json!({ "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
                "metadata": { "name": "homelab-ca" }, "spec": { "ca": { "secretName": "homelab-ca" } } }),
    ];
    add("infrastructure/issuers/issuers.yaml", yaml(&issuers)?);
    add(
        "infrastructure/issuers/kustomization.yaml",
        format!("{MARKER}\nresources:\n  - issuers.yaml\n"),
    );

    if spec.external_secrets && !spec.secret_objects.is_empty() {
        add(
            "infrastructure/external-secrets/secrets.yaml",
            yaml(&spec.secret_objects)?,
        );
        add(
            "infrastructure/external-secrets/kustomization.yaml",
            format!("{MARKER}\nresources:\n  - secrets.yaml\n"),
        );
    }

    // platform/harbor: Harbor's certificate, from the homelab CA, for its host and address.
    let harbor_host = url_host(&spec.harbor_url);
    let mut certificate = json!({ "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": { "name": HARBOR_TLS_SECRET, "namespace": "harbor" },
        "spec": { "secretName": HARBOR_TLS_SECRET, "commonName": harbor_host,
                  "ipAddresses": [spec.harbor_ip],
                  "issuerRef": { "name": "homelab-ca", "kind": "ClusterIssuer", "group": "cert-manager.io" } } });
    if harbor_host.parse::<std::net::IpAddr>().is_err() {
        certificate["spec"]["dnsNames"] = json!([harbor_host]);
    }
    add("platform/harbor/certificate.yaml", yaml(&[certificate])?);
    add(
        "platform/harbor/kustomization.yaml",
        format!("{MARKER}\nresources:\n  - certificate.yaml\n"),
    );

    // platform/: Argo CD's configuration (the Application health check that makes waves
    // gate) and its own service on its fixed address.
    add("platform/argocd/argocd-cm.yaml", yaml(&[argocd_cm()])?);
    let argocd = [json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "argocd-server-lb", "namespace": "argocd",
                      "annotations": { "metallb.io/loadBalancerIPs": spec.argocd_ip } },
        "spec": { "type": "LoadBalancer", "selector": { "app.kubernetes.io/name": "argocd-server" },
                  "ports": [{ "name": "https", "port": 443, "targetPort": 8080 }] },
    })];
    add("platform/argocd/service.yaml", yaml(&argocd)?);
    add(
        "platform/argocd/kustomization.yaml",
        format!("{MARKER}\nresources:\n  - argocd-cm.yaml\n  - service.yaml\n"),
    );

    // bootstrap/workloads/: one Application per application (see add_app), listed here;
    // their manifests live in apps/<name>/.
    add(
        "bootstrap/workloads/kustomization.yaml",
        "resources: []\n".into(),
    );
    Ok(files)
}

/// The `argocd-cm` key of the health check for `argoproj.io/Application`.
pub const APPLICATION_HEALTH_KEY: &str = "resource.customizations.health.argoproj.io_Application";

/// The health of an `argoproj.io/Application` as Argo CD's Lua health checks take it (Lua 5.1,
/// `obj` in, `{status, message}` out). Since Argo CD 1.8 an Application has no health of its
/// own for the app that owns it, so sync waves of child Applications do not wait for each
/// other; with this, a child is Progressing until it is both Synced and Healthy, and a
/// Degraded or Missing child stops the waves behind it.
pub const APPLICATION_HEALTH_LUA: &str = r#"local hs = { status = "Progressing", message = "waiting for the first sync" }
if obj.status == nil then
  return hs
end
local health = obj.status.health and obj.status.health.status or "Unknown"
local sync = obj.status.sync and obj.status.sync.status or "Unknown"
if health == "Degraded" or health == "Missing" then
  hs.status = health
  hs.message = (obj.status.health.message or "") ~= "" and obj.status.health.message or ("the Application is " .. health)
elseif health == "Healthy" and sync == "Synced" then
  hs.status = "Healthy"
  hs.message = ""
else
  hs.message = "health " .. health .. ", sync " .. sync
end
return hs
"#;

/// `argocd-cm` with the Application health check ([`APPLICATION_HEALTH_LUA`]). It must be in
/// place before the root Application is applied (the platform bootstrap applies it with Argo
/// CD; by hand: `kubectl apply -f platform/argocd/argocd-cm.yaml`), and the `argocd-config`
/// Application keeps it so afterwards.
fn argocd_cm() -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "argocd-cm", "namespace": "argocd",
                      "labels": { "app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd" } },
        "data": { APPLICATION_HEALTH_KEY: APPLICATION_HEALTH_LUA },
    })
}

/// A unified-style diff of two texts (`-` removed, `+` added lines).
fn diff(old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .to_string()
}

/// Writes (or updates) the repository at `root`: files with the marker are rewritten when
/// they differ, files without it are left alone.
///
/// # Errors
/// A version is missing or a file cannot be written.
pub fn init(root: &Path, spec: &Spec) -> Result<Vec<(PathBuf, FileChange)>, ScaffoldError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ScaffoldError::Io { path, source }
    };
    let mut report = Vec::new();
    for (path, text) in files(spec)? {
        let full = root.join(&path);
        let change = match std::fs::read_to_string(&full) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = full.parent() {
                    std::fs::create_dir_all(dir).map_err(io(dir))?;
                }
                std::fs::write(&full, &text).map_err(io(&full))?;
                FileChange::Created
            }
            Err(e) => return Err(io(&full)(e)),
            Ok(old) if old == text => FileChange::Unchanged,
            // The workloads list belongs to add_app once it exists.
            Ok(old)
                if !old.starts_with(MARKER)
                    || path == Path::new("bootstrap/workloads/kustomization.yaml") =>
            {
                FileChange::Kept
            }
            Ok(old) => {
                std::fs::write(&full, &text).map_err(io(&full))?;
                FileChange::Updated(diff(&old, &text))
            }
        };
        report.push((path, change));
    }
    Ok(report)
}

/// The kustomization [`add_app`] starts an application with.
const EMPTY_APP: &str = "# Add this application's manifests here.\nresources: []\n";

/// Adds application `name` (deployed to namespace `name`): `apps/<name>/` with a
/// kustomization, its Application in `bootstrap/workloads/<name>.yaml` (wave 12), and that
/// file in the `bootstrap/workloads/kustomization.yaml` list — a structured edit of the YAML. Adding an
/// existing application changes nothing.
///
/// # Errors
/// The name is not a DNS label, or a file cannot be read or written.
pub fn add_app(
    root: &Path,
    spec: &Spec,
    name: &str,
) -> Result<Vec<(PathBuf, FileChange)>, ScaffoldError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        return Err(ScaffoldError::Invalid(format!(
            "application name {name:?}: use a DNS label (lower-case letters, digits and '-', at most 63)"
        )));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ScaffoldError::Io { path, source }
    };
    let mut report = Vec::new();
    let dir = root.join("apps").join(name);
    let kustomization = dir.join("kustomization.yaml");
    if kustomization.exists() {
        report.push((
            PathBuf::from(format!("apps/{name}/kustomization.yaml")),
            FileChange::Kept,
        ));
    } else {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        std::fs::write(&kustomization, EMPTY_APP).map_err(io(&kustomization))?;
        report.push((
            PathBuf::from(format!("apps/{name}/kustomization.yaml")),
            FileChange::Created,
        ));
    }
    let app_file = root
        .join("bootstrap/workloads")
        .join(format!("{name}.yaml"));
    if app_file.exists() {
        report.push((
            PathBuf::from(format!("bootstrap/workloads/{name}.yaml")),
            FileChange::Kept,
        ));
    } else {
        let app = application(
            name,
            "apps",
            "apps",
            spec.git(&format!("apps/{name}")),
            name,
        );
        std::fs::write(
            &app_file,
            serde_norway::to_string(&app)
                .map_err(serialize_error(format!("Application {name}")))?,
        )
        .map_err(io(&app_file))?;
        report.push((
            PathBuf::from(format!("bootstrap/workloads/{name}.yaml")),
            FileChange::Created,
        ));
    }
    // The list of Applications: a structured edit that keeps every other key.
    let list = root.join("bootstrap/workloads/kustomization.yaml");
    let text = std::fs::read_to_string(&list).unwrap_or_else(|_| "resources: []\n".into());
    let mut doc: serde_norway::Value =
        serde_norway::from_str(&text).map_err(|source| ScaffoldError::Parse {
            path: list.clone(),
            source,
        })?;
    let entry = format!("{name}.yaml");
    let map = doc
        .as_mapping_mut()
        .ok_or_else(|| ScaffoldError::Invalid(format!("{}: not a mapping", list.display())))?;
    let resources = map
        .entry("resources".into())
        .or_insert_with(|| serde_norway::Value::Sequence(Vec::new()));
    let seq = resources.as_sequence_mut().ok_or_else(|| {
        ScaffoldError::Invalid(format!("{}: resources is not a list", list.display()))
    })?;
    if seq.iter().any(|v| v.as_str() == Some(entry.as_str())) {
        report.push((
            PathBuf::from("bootstrap/workloads/kustomization.yaml"),
            FileChange::Unchanged,
        ));
    } else {
        seq.push(entry.into());
        let new =
            serde_norway::to_string(&doc).map_err(serialize_error(list.display().to_string()))?;
        std::fs::write(&list, &new).map_err(io(&list))?;
        report.push((
            PathBuf::from("bootstrap/workloads/kustomization.yaml"),
            FileChange::Updated(diff(&text, &new)),
        ));
    }
    Ok(report)
}

/// The first line of every file a template writes: the files are the application's, to edit.
pub const TEMPLATE_HEADER: &str =
    "# Written by homelab-gitops add-app --template: this application's own file, yours to edit.";

/// [`add_app`] with the whole application of `template` (named `template.name`): its files
/// under `apps/<name>/` and their `kustomization.yaml`. A file that exists is kept; an
/// application whose kustomization already lists resources of its own is refused, so a
/// template never mixes into an application written by hand.
///
/// # Errors
/// The name is not a DNS label, the application exists with its own resources, or a file
/// cannot be read or written.
pub fn add_app_template(
    root: &Path,
    spec: &Spec,
    template: &crate::templates::WebPostgres,
) -> Result<Vec<(PathBuf, FileChange)>, ScaffoldError> {
    let name = &template.name;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ScaffoldError::Io { path, source }
    };
    let dir = root.join("apps").join(name);
    let kustomization = dir.join("kustomization.yaml");
    let files = template.files();
    let listed: Vec<&str> = files
        .iter()
        .map(|(f, _)| f.as_str())
        .filter(|f| {
            std::path::Path::new(f)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("yaml"))
        })
        .collect();
    let mut wanted = format!("{TEMPLATE_HEADER}\nresources:\n");
    for f in &listed {
        wanted.push_str("  - ");
        wanted.push_str(f);
        wanted.push('\n');
    }
    let mut report = Vec::new();
    match std::fs::read_to_string(&kustomization) {
        Ok(text) if text == wanted => report.push((
            PathBuf::from(format!("apps/{name}/kustomization.yaml")),
            FileChange::Unchanged,
        )),
        Ok(text) if text != EMPTY_APP => {
            return Err(ScaffoldError::Invalid(format!(
                "apps/{name}/kustomization.yaml exists with resources of its own: a template writes a whole application; choose another name or move that one away"
            )));
        }
        _ => {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            std::fs::write(&kustomization, &wanted).map_err(io(&kustomization))?;
            report.push((
                PathBuf::from(format!("apps/{name}/kustomization.yaml")),
                FileChange::Created,
            ));
        }
    }
    for (file, objects) in &files {
        let path = dir.join(file);
        let shown = PathBuf::from(format!("apps/{name}/{file}"));
        if path.exists() {
            report.push((shown, FileChange::Kept));
            continue;
        }
        let mut text = format!("{TEMPLATE_HEADER}\n");
        for (i, object) in objects.iter().enumerate() {
            if i > 0 {
                text.push_str("---\n");
            }
            text.push_str(
                &serde_norway::to_string(object)
                    .map_err(serialize_error(format!("apps/{name}/{file}")))?,
            );
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
        report.push((shown, FileChange::Created));
    }
    report.extend(add_app(root, spec, name)?.into_iter().filter(|(path, _)| {
        !path.ends_with("kustomization.yaml") || path.starts_with("bootstrap")
    }));
    Ok(report)
}

#[cfg(test)]
mod host_tests {
    use super::url_host;

    #[test]
    fn url_host_is_the_authority_s_host() {
        assert_eq!(url_host("https://harbor.lan:8443/x"), "harbor.lan");
        assert_eq!(url_host("https://harbor.homelab.lan"), "harbor.homelab.lan");
        assert_eq!(url_host("https://192.168.122.101"), "192.168.122.101");
        assert_eq!(url_host("https://[fd00::1]:443/"), "fd00::1");
    }
}
