//! Argo CD's resources as `kube` types: Application, AppProject and ApplicationSet
//! (`argoproj.io/v1alpha1`). Hand-written typed subsets of Argo CD's CRDs: the fields homelab
//! reads and writes are typed, and every other field is kept in `extra`, so an object read
//! from a cluster or a repository and written back loses nothing.

use std::collections::BTreeMap;

use kube::CustomResource;
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Fields this crate does not type, kept as they were.
pub type Extra = BTreeMap<String, Value>;

/// The annotation that orders resources within a sync.
pub const SYNC_WAVE: &str = "argocd.argoproj.io/sync-wave";

/// An Application's desired state.
///
/// ```
/// use gitops::types::{Application, AppProjectSpec, Destination};
///
/// // Read from a repository (or a cluster); fields this crate does not type are kept.
/// let app: Application = serde_norway::from_str(r#"
/// apiVersion: argoproj.io/v1alpha1
/// kind: Application
/// metadata: { name: shop, namespace: argocd }
/// spec:
///   project: apps
///   source: { repoURL: "https://git.homelab.lan/lab/manifests.git", path: apps/shop }
///   destination: { server: "https://kubernetes.default.svc", namespace: shop }
///   revisionHistoryLimit: 3
/// "#)?;
/// assert_eq!(app.spec.extra["revisionHistoryLimit"], 3);
/// // Whether its project lets it deploy there.
/// let project = AppProjectSpec {
///     destinations: vec![Destination {
///         server: Some("https://kubernetes.default.svc".into()),
///         namespace: Some("shop*".into()),
///         ..Destination::default()
///     }],
///     ..AppProjectSpec::default()
/// };
/// assert!(project.allows(&app.spec.destination));
/// # Ok::<(), serde_norway::Error>(())
/// ```
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "argoproj.io",
    version = "v1alpha1",
    kind = "Application",
    namespaced,
    status = "ApplicationStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// The AppProject it belongs to.
    pub project: String,
    /// Where its manifests come from (one source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ApplicationSource>,
    /// Several sources (instead of `source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<ApplicationSource>>,
    /// Where they go.
    pub destination: Destination,
    /// When and how to sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_policy: Option<SyncPolicy>,
    /// Differences Argo CD should not count as drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_differences: Option<Vec<Value>>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A source of manifests: a Git path (plain, kustomize, Helm chart in Git) or a Helm chart.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSource {
    /// Git repository or Helm repository URL.
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    /// Directory in a Git repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Branch, tag, commit or chart version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<String>,
    /// Helm chart name (for a Helm repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    /// Helm settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmSource>,
    /// Kustomize settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomize: Option<Value>,
    /// Name other sources refer to this one by (`$name/values.yaml`).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Helm settings of a source.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelmSource {
    /// Release name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    /// Values files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_files: Option<Vec<String>>,
    /// Inline values (YAML text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<String>,
    /// Inline values (structured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_object: Option<Value>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Where an application's resources go.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// API server URL (`https://kubernetes.default.svc` for the local cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Cluster name (instead of `server`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// When and how to sync.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicy {
    /// Sync without a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated: Option<Automated>,
    /// Options such as `CreateNamespace=true`, `ServerSideApply=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_options: Option<Vec<String>>,
    /// Retries of a failed sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

impl SyncPolicy {
    /// Whether a sync option (`CreateNamespace=true`) is set.
    pub fn has_option(&self, option: &str) -> bool {
        self.sync_options
            .as_ref()
            .is_some_and(|o| o.iter().any(|x| x == option))
    }
}

/// Automated sync.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Automated {
    /// Delete what left Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    /// Undo changes made in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_heal: Option<bool>,
}

/// Retries.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// Attempts (`-1`: forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Backoff between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
}

/// Backoff of retries.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// First delay (`5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Multiplier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<i64>,
    /// Longest delay (`3m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
}

impl SyncPolicy {
    /// homelab's policy: automated with prune and self-heal, namespaces created,
    /// server-side apply, 5 retries backing off from 5 s ×2 up to 3 min.
    pub fn homelab() -> Self {
        Self {
            automated: Some(Automated {
                prune: Some(true),
                self_heal: Some(true),
            }),
            sync_options: Some(vec![
                "CreateNamespace=true".into(),
                "ServerSideApply=true".into(),
            ]),
            retry: Some(Retry {
                limit: Some(5),
                backoff: Some(Backoff {
                    duration: Some("5s".into()),
                    factor: Some(2),
                    max_duration: Some("3m".into()),
                }),
            }),
            extra: Extra::new(),
        }
    }
}

/// What Argo CD reports about an Application.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// Sync status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
    /// Health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// Conditions (errors and warnings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<AppCondition>>,
    /// The resources it manages, with their own status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<ResourceStatus>>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status.sync`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// `Synced`, `OutOfSync` or `Unknown`.
    #[serde(default)]
    pub status: String,
    /// The revision synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// `status.health`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// `Healthy`, `Progressing`, `Degraded`, `Suspended`, `Missing` or `Unknown`.
    #[serde(default)]
    pub status: String,
    /// Argo CD's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A condition of an Application.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppCondition {
    /// Type (`SyncError`, `ComparisonError`, ...).
    #[serde(rename = "type")]
    pub type_: String,
    /// Message.
    #[serde(default)]
    pub message: String,
}

/// One managed resource in `status.resources`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// API group.
    #[serde(default)]
    pub group: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Sync status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
}

/// An AppProject's spec.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "argoproj.io",
    version = "v1alpha1",
    kind = "AppProject",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct AppProjectSpec {
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Repositories its applications may use (`*` for any).
    #[serde(default)]
    pub source_repos: Vec<String>,
    /// Where its applications may deploy.
    #[serde(default)]
    pub destinations: Vec<Destination>,
    /// Cluster-scoped kinds its applications may manage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_resource_whitelist: Option<Vec<Value>>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `*` matches any run of characters.
fn glob_match(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((prefix, rest)) => value.strip_prefix(prefix).is_some_and(|tail| {
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob_match(rest, &tail[i..]))
        }),
    }
}

impl AppProjectSpec {
    /// Whether an application of this project may deploy to `destination` (server or name
    /// and namespace matched against the project's destinations, `*` wildcards allowed).
    pub fn allows(&self, destination: &Destination) -> bool {
        self.destinations.iter().any(|d| {
            let server = match (&d.server, &destination.server, &d.name, &destination.name) {
                (Some(p), Some(v), _, _) | (_, _, Some(p), Some(v)) => glob_match(p, v),
                _ => false,
            };
            let namespace = match (&d.namespace, &destination.namespace) {
                (Some(p), Some(v)) => glob_match(p, v),
                (Some(p), None) => p == "*",
                (None, _) => true,
            };
            server && namespace
        })
    }
}

/// An ApplicationSet's spec (generators and template kept as they are).
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "argoproj.io",
    version = "v1alpha1",
    kind = "ApplicationSet",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSetSpec {
    /// Generators.
    #[serde(default)]
    pub generators: Vec<Value>,
    /// The Application template.
    #[serde(default)]
    pub template: Value,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The sync wave of an object (0 without the annotation).
///
/// # Errors
/// The annotation is not an integer; the error holds its text.
pub fn sync_wave(meta: &ObjectMeta) -> Result<i64, String> {
    match meta.annotations.as_ref().and_then(|a| a.get(SYNC_WAVE)) {
        None => Ok(0),
        Some(text) => text.trim().parse().map_err(|_| text.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let yaml = r#"
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: metallb
  namespace: argocd
  annotations:
    argocd.argoproj.io/sync-wave: "3"
  finalizers: [resources-finalizer.argocd.argoproj.io]
spec:
  project: infrastructure
  revisionHistoryLimit: 3
  sources:
    - repoURL: https://metallb.github.io/metallb
      chart: metallb
      targetRevision: 0.15.2
      helm:
        releaseName: metallb
        valueFiles: [$values/infrastructure/metallb/values.yaml]
        skipCrds: false
    - repoURL: https://git.example/homelab.git
      targetRevision: main
      ref: values
  destination:
    server: https://kubernetes.default.svc
    namespace: metallb-system
  syncPolicy:
    automated: {prune: true, selfHeal: true}
    syncOptions: [CreateNamespace=true, ServerSideApply=true]
    retry: {limit: 5, backoff: {duration: 5s, factor: 2, maxDuration: 3m}}
    managedNamespaceMetadata: {labels: {team: infra}}
  ignoreDifferences:
    - group: apps
      kind: Deployment
      jsonPointers: [/spec/replicas]
"#;
        let original: serde_json::Value = serde_norway::from_str(yaml).unwrap();
        let app: Application = serde_json::from_value(original.clone()).unwrap();
        assert_eq!(sync_wave(&app.metadata), Ok(3));
        let sources = app.spec.sources.as_ref().unwrap();
        assert_eq!(sources[0].helm.as_ref().unwrap().extra["skipCrds"], false);
        assert_eq!(sources[1].reference.as_deref(), Some("values"));
        assert!(
            app.spec
                .sync_policy
                .as_ref()
                .unwrap()
                .has_option("CreateNamespace=true")
        );
        assert_eq!(app.spec.extra["revisionHistoryLimit"], 3);
        let back = serde_json::to_value(&app).unwrap();
        assert_eq!(back, original, "nothing lost, nothing added");
    }

    #[test]
    fn projects_allow_destinations_with_wildcards() {
        let project = AppProjectSpec {
            destinations: vec![Destination {
                server: Some("https://kubernetes.default.svc".into()),
                name: None,
                namespace: Some("team-*".into()),
            }],
            ..AppProjectSpec::default()
        };
        let to = |ns: &str| Destination {
            server: Some("https://kubernetes.default.svc".into()),
            name: None,
            namespace: Some(ns.into()),
        };
        assert!(project.allows(&to("team-a")));
        assert!(!project.allows(&to("kube-system")));
        assert!(
            glob_match("*", "anything") && glob_match("a*c", "abbc") && !glob_match("a*c", "abd")
        );
    }

    #[test]
    fn waves_must_be_integers() {
        let mut meta = ObjectMeta::default();
        assert_eq!(sync_wave(&meta), Ok(0));
        meta.annotations = Some([(SYNC_WAVE.to_owned(), "-2".to_owned())].into());
        assert_eq!(sync_wave(&meta), Ok(-2));
        meta.annotations = Some([(SYNC_WAVE.to_owned(), "early".to_owned())].into());
        assert_eq!(sync_wave(&meta), Err("early".into()));
    }
}
