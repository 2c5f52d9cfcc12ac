//! Argo CD into a cluster: its release manifest (checked against its pin by the caller)
//! applied by server-side apply with the Application health check merged into `argocd-cm`,
//! CRDs first and waited on until `Established`, every Deployment and StatefulSet waited on
//! until rolled out, then the repository credentials and the root Application.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DynamicObject, ObjectMeta};
use kube::{Client, ResourceExt};
use kube_manifest::{Applied, ApplyOptions};
use secrecy::{ExposeSecret, SecretString};

use crate::PlatformError;
use crate::checks::{Check, Workload};
use crate::components::Component;
use crate::event::Events;
use crate::wait::WaitOptions;

/// Where Argo CD publishes the install manifest of a release (`v3.1.9`, say).
pub fn install_manifest_url(release: &str) -> String {
    format!("https://raw.githubusercontent.com/argoproj/argo-cd/{release}/manifests/install.yaml")
}

/// Credentials Argo CD clones the GitOps repository with.
#[derive(Clone)]
pub struct Repository {
    /// Clone URL.
    pub url: String,
    /// User name (for GitHub tokens, any non-empty name).
    pub username: String,
    /// Password or token.
    pub password: SecretString,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// What [`bootstrap`] installs.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// Argo CD's namespace.
    pub namespace: String,
    /// The install manifest's objects.
    pub manifest: Vec<DynamicObject>,
    /// Credentials for a private repository (none for a public one).
    pub repository: Option<Repository>,
    /// The root Application (app of apps).
    pub root: gitops::types::Application,
}

/// The name of the repository credentials Secret.
pub const REPOSITORY_SECRET: &str = "homelab-repository";

/// Puts the Application health check into the manifest's `argocd-cm` (one apply owns the
/// whole ConfigMap, so a re-run does not take the key away and put it back).
///
/// # Errors
/// The manifest has no `argocd-cm`.
pub fn with_application_health(objects: &mut [DynamicObject]) -> Result<(), PlatformError> {
    let cm = objects
        .iter_mut()
        .find(|o| {
            o.types.as_ref().is_some_and(|t| t.kind == "ConfigMap") && o.name_any() == "argocd-cm"
        })
        .ok_or_else(|| {
            PlatformError::Manifest(
                "no ConfigMap argocd-cm in the manifest: is this Argo CD's install.yaml?".into(),
            )
        })?;
    if !cm.data["data"].is_object() {
        cm.data["data"] = serde_json::json!({});
    }
    cm.data["data"][gitops::scaffold::APPLICATION_HEALTH_KEY] =
        gitops::scaffold::APPLICATION_HEALTH_LUA.into();
    Ok(())
}

/// The rollout checks of every Deployment and StatefulSet of the manifest.
pub fn rollouts(namespace: &str, objects: &[DynamicObject]) -> Component {
    let checks = objects
        .iter()
        .filter_map(|o| {
            let workload = match o.types.as_ref()?.kind.as_str() {
                "Deployment" => Workload::Deployment,
                "StatefulSet" => Workload::StatefulSet,
                "DaemonSet" => Workload::DaemonSet,
                _ => return None,
            };
            Some(Check::RolledOut {
                workload,
                namespace: o.namespace().unwrap_or_else(|| namespace.to_owned()),
                name: o.name_any(),
            })
        })
        .collect();
    Component {
        name: "argocd".into(),
        wave: 0,
        checks,
    }
}

/// The repository Secret Argo CD reads (`argocd.argoproj.io/secret-type: repository`).
fn repository_secret(namespace: &str, repository: &Repository) -> Secret {
    let data = BTreeMap::from([
        ("type".to_owned(), ByteString(b"git".to_vec())),
        (
            "url".to_owned(),
            ByteString(repository.url.clone().into_bytes()),
        ),
        (
            "username".to_owned(),
            ByteString(repository.username.clone().into_bytes()),
        ),
        (
            "password".to_owned(),
            ByteString(repository.password.expose_secret().as_bytes().to_vec()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(REPOSITORY_SECRET.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                (
                    "argocd.argoproj.io/secret-type".to_owned(),
                    "repository".to_owned(),
                ),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    crate::FIELD_MANAGER.to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..Secret::default()
    }
}

fn to_object<T: serde::Serialize>(value: &T, what: &str) -> Result<DynamicObject, PlatformError> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|source| PlatformError::Json {
            what: what.to_owned(),
            source,
        })
}

/// Installs Argo CD: the namespace, the manifest (health check merged into `argocd-cm`;
/// CRDs waited on until Established), its workloads waited on until rolled out, then the
/// repository Secret and the root Application. Returns every object applied, with whether
/// it changed: a re-run changes nothing. In a dry run nothing is changed and nothing is
/// waited on.
///
/// # Errors
/// An apply fails, or a workload does not roll out within `wait.timeout`.
pub async fn bootstrap(
    client: &Client,
    spec: &Bootstrap,
    dry_run: bool,
    wait: &WaitOptions,
    events: Events<'_>,
) -> Result<Vec<Applied>, PlatformError> {
    let mut objects = spec.manifest.clone();
    with_application_health(&mut objects)?;
    // With a field of its own: an apply of nothing but a name leaves the object without
    // managed fields, and a real API server then changes it on the next apply (it records
    // a `before-first-apply` manager), so a re-run would not be a no-op.
    let namespace: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": spec.namespace,
                      "labels": { "app.kubernetes.io/managed-by": crate::FIELD_MANAGER } },
    }))
    .map_err(|source| PlatformError::Json {
        what: format!("Namespace {}", spec.namespace),
        source,
    })?;
    objects.insert(0, namespace);
    let mut options = ApplyOptions::new(crate::FIELD_MANAGER);
    options.dry_run = dry_run;
    options.namespace = Some(spec.namespace.clone());
    let mut applied = kube_manifest::apply(client, &objects, &options).await?;
    if !dry_run {
        let http = reqwest::Client::new();
        crate::wait::wait(
            client,
            &http,
            &[rollouts(&spec.namespace, &objects)],
            wait,
            events,
        )
        .await?;
    }
    let mut last = Vec::new();
    if let Some(repository) = &spec.repository {
        last.push(to_object(
            &repository_secret(&spec.namespace, repository),
            "the repository Secret",
        )?);
    }
    let mut root = spec.root.clone();
    root.metadata.namespace = Some(spec.namespace.clone());
    last.push(to_object(&root, "the root Application")?);
    applied.extend(kube_manifest::apply(client, &last, &options).await?);
    Ok(applied)
}
