//! The declared secrets as Kubernetes Secrets, two ways:
//!
//! - **Directly** ([`sync`]): from one read of the environment, every declared Secret
//!   server-side applied by homelab (labelled, and annotated with where it came from); a
//!   Secret of that name that homelab did not make is never overwritten. For bootstrap, and
//!   for clusters without External Secrets.
//! - **Through External Secrets** ([`token_secret`], [`cluster_secret_store`],
//!   [`external_secret`]): the token Secret, one `ClusterSecretStore` with the Pulumi
//!   provider, one `ExternalSecret` per declared secret reading its ESC object with
//!   `dataFrom.extract` — one open of the environment per secret and refresh (External
//!   Secrets' Pulumi provider opens the environment on every read) — and templates for the
//!   typed Secrets.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DynamicObject, ObjectMeta};
use kube_manifest::{Applied, ApplyOptions};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::client::EnvRef;
use crate::declared::{Declared, Kind, fields};
use crate::value::Value;

/// The field manager of everything applied here.
pub const FIELD_MANAGER: &str = "homelab-secrets";
/// The label every Secret homelab makes carries (and the one [`sync`] looks for before it
/// touches an existing Secret).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "homelab");
/// The annotation naming the environment and object a Secret came from.
pub const SOURCE_ANNOTATION: &str = "homelab.dev/esc-source";
/// How often External Secrets re-reads each secret: one open of the environment per secret
/// per hour (five secrets: five opens an hour, where a 20-second loop over 19 reads made
/// more than 3 000). Rotations reach the cluster within the hour, or at once with the
/// `force-sync` annotation ([`FORCE_SYNC_ANNOTATION`]).
pub const REFRESH_INTERVAL: &str = "1h";
/// The annotation whose change makes External Secrets sync an ExternalSecret now.
pub const FORCE_SYNC_ANNOTATION: &str = "force-sync";

/// Why delivering failed. Values never appear, only paths and names.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliverError {
    /// Required values are missing from the environment.
    #[error("environment {env} lacks {}: add them (homelab-secrets check prints the commands)", paths.join(", "))]
    Missing {
        /// The environment.
        env: String,
        /// The missing paths.
        paths: Vec<String>,
    },
    /// A Secret of that name exists and homelab did not make it.
    #[error("Secret {namespace}/{name} exists and was not made by homelab (no label {}={}): not overwritten; delete it or label it to hand it over", MANAGED_BY.0, MANAGED_BY.1)]
    NotOurs {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The API server refused a read.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The client's error.
        source: kube::Error,
    },
    /// Applying failed.
    #[error(transparent)]
    Apply(#[from] kube_manifest::ManifestError),
    /// An object could not be built.
    #[error("{what}: {source}")]
    Build {
        /// The object (`Secret ns/name`, a kind).
        what: String,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// One declared secret's delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivered {
    /// The declared secret.
    pub secret: String,
    /// `namespace/name` of the Secret.
    pub target: String,
    /// The Secret's keys (never values).
    pub keys: Vec<String>,
    /// Whether it was created or changed (or, in a dry run, would be); `None` when skipped.
    pub changed: Option<bool>,
    /// Why it was skipped (an optional secret the environment lacks).
    pub skipped: Option<String>,
}

fn labels(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())]);
    for (k, v) in extra {
        labels.insert((*k).to_owned(), (*v).to_owned());
    }
    labels
}

/// The Secret's data for `declared` from its fields.
pub fn secret_data(
    declared: &Declared,
    fields: &BTreeMap<String, SecretString>,
) -> BTreeMap<String, SecretString> {
    let field = |name: &str| {
        fields
            .get(name)
            .map(|s| s.expose_secret().to_owned())
            .unwrap_or_default()
    };
    match &declared.kind {
        Kind::Opaque { keys } => keys
            .iter()
            .map(|(key, f)| (key.clone(), field(f).into()))
            .collect(),
        Kind::DockerConfig { registry } => {
            let (user, password) = (field("username"), field("password"));
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let config = json!({ "auths": { registry: { "username": user, "password": password, "auth": auth } } });
            BTreeMap::from([(".dockerconfigjson".to_owned(), config.to_string().into())])
        }
        Kind::ArgoRepository { url } => BTreeMap::from([
            ("type".to_owned(), "git".to_owned().into()),
            ("url".to_owned(), url.clone().into()),
            ("username".to_owned(), field("username").into()),
            ("password".to_owned(), field("password").into()),
        ]),
    }
}

/// The Secret [`sync`] applies for `declared`.
pub fn direct_secret(
    declared: &Declared,
    fields: &BTreeMap<String, SecretString>,
    env: &EnvRef,
) -> Secret {
    let mut extra = vec![("homelab.dev/secret", declared.name.as_str())];
    if matches!(declared.kind, Kind::ArgoRepository { .. }) {
        extra.push(("argocd.argoproj.io/secret-type", "repository"));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(declared.secret.clone()),
            namespace: Some(declared.namespace.clone()),
            labels: Some(labels(&extra)),
            annotations: Some(BTreeMap::from([(
                SOURCE_ANNOTATION.to_owned(),
                format!("{env}:{}", declared.source),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some(declared.kind.secret_type().to_owned()),
        data: Some(
            secret_data(declared, fields)
                .into_iter()
                .map(|(k, v)| (k, ByteString(v.expose_secret().as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

fn dynamic(mut value: serde_json::Value, kind: &str) -> Result<DynamicObject, DeliverError> {
    if value.get("apiVersion").is_none() {
        value["apiVersion"] = "v1".into();
        value["kind"] = kind.into();
    }
    serde_json::from_value(value).map_err(|source| DeliverError::Build {
        what: kind.to_owned(),
        source,
    })
}

fn namespace_object(name: &str) -> Result<DynamicObject, DeliverError> {
    dynamic(
        json!({ "apiVersion": "v1", "kind": "Namespace",
                "metadata": { "name": name, "labels": labels(&[]) } }),
        "Namespace",
    )
}

/// Applies every declared Secret from `values` (one read of `env`): their namespaces made
/// when missing, optional secrets the environment lacks skipped, nothing applied when a
/// required value is missing or a target Secret is not homelab's. `dry_run` asks the API
/// server what would change.
///
/// # Errors
/// See [`DeliverError`].
pub async fn sync(
    client: &Client,
    values: &Value,
    env: &EnvRef,
    declared: &[Declared],
    dry_run: bool,
) -> Result<Vec<Delivered>, DeliverError> {
    let missing: Vec<String> = crate::declared::check(values, env, declared)
        .into_iter()
        .filter(|m| !m.optional)
        .map(|m| m.path.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(DeliverError::Missing {
            env: env.to_string(),
            paths: missing,
        });
    }
    let mut objects = Vec::new();
    let mut out = Vec::new();
    let mut namespaces = std::collections::BTreeSet::new();
    for d in declared {
        let target = format!("{}/{}", d.namespace, d.secret);
        let Some(fields) = fields(values, d) else {
            out.push(Delivered {
                secret: d.name.clone(),
                target,
                keys: Vec::new(),
                changed: None,
                skipped: Some(format!("optional, and {env} has no {}", d.source)),
            });
            continue;
        };
        let api: Api<Secret> = Api::namespaced(client.clone(), &d.namespace);
        let existing = api
            .get_opt(&d.secret)
            .await
            .map_err(|source| DeliverError::Kube {
                action: format!("read Secret {target}"),
                source,
            })?;
        if let Some(existing) = existing {
            let ours = existing
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY.0))
                .is_some_and(|v| v == MANAGED_BY.1);
            if !ours {
                return Err(DeliverError::NotOurs {
                    namespace: d.namespace.clone(),
                    name: d.secret.clone(),
                });
            }
        }
        if namespaces.insert(d.namespace.clone()) {
            objects.push(namespace_object(&d.namespace)?);
        }
        // A dry run cannot apply into a namespace it did not make: such a Secret is new.
        let namespace_missing = dry_run
            && Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                .get_opt(&d.namespace)
                .await
                .map_err(|source| DeliverError::Kube {
                    action: format!("read namespace {}", d.namespace),
                    source,
                })?
                .is_none();
        if !namespace_missing {
            let secret = direct_secret(d, &fields, env);
            let value = serde_json::to_value(&secret).map_err(|source| DeliverError::Build {
                what: format!("Secret {target}"),
                source,
            })?;
            objects.push(dynamic(value, "Secret")?);
        }
        out.push(Delivered {
            secret: d.name.clone(),
            target,
            keys: secret_data(d, &fields).into_keys().collect(),
            changed: Some(namespace_missing),
            skipped: None,
        });
    }
    let options = ApplyOptions::new(FIELD_MANAGER).dry_run(dry_run);
    let applied: Vec<Applied> = kube_manifest::apply(client, &objects, &options).await?;
    for d in &mut out {
        if let Some(a) = applied
            .iter()
            .find(|a| a.kind == "Secret" && a.name == d.target)
        {
            d.changed = Some(a.changed);
        }
    }
    Ok(out)
}

/// Where External Secrets finds ESC and its token.
///
/// ```
/// use esc_secrets::EnvRef;
/// use esc_secrets::declared::{Needs, declared};
/// use esc_secrets::deliver::{Store, cluster_secret_store, external_secret};
///
/// let store = Store::new(EnvRef::new("my-org", "homelab", "dev"), "https://api.pulumi.com/");
/// let css = cluster_secret_store(&store);
/// assert_eq!(css["kind"], "ClusterSecretStore");
/// assert_eq!(css["spec"]["provider"]["pulumi"]["apiUrl"], "https://api.pulumi.com/api/esc");
/// // One ExternalSecret per declared secret, in the namespace its Secret belongs in.
/// let needs = Needs { monitoring: true, ..Needs::default() };
/// let grafana = declared(&needs).into_iter().find(|d| d.name == "grafana-admin").unwrap();
/// let es = external_secret(&grafana, &store);
/// assert_eq!((es["kind"].as_str(), es["metadata"]["namespace"].as_str()), (Some("ExternalSecret"), Some("monitoring")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// The ClusterSecretStore's name.
    pub name: String,
    /// The environment.
    pub env: EnvRef,
    /// ESC's API base URL as homelab's client uses it (`https://api.pulumi.com`); the store
    /// gets it with `/api/esc`, as External Secrets' provider expects.
    pub api_url: String,
    /// The token Secret's namespace (External Secrets' own).
    pub token_namespace: String,
    /// The token Secret's name.
    pub token_secret: String,
    /// Its key.
    pub token_key: String,
}

/// The name of the `ClusterSecretStore` homelab makes for ESC.
pub const STORE_NAME: &str = "pulumi-esc";

impl Store {
    /// The store [`STORE_NAME`] of `env`, its token in `external-secrets/pulumi-esc-token`.
    pub fn new(env: EnvRef, api_url: &str) -> Self {
        Self {
            name: STORE_NAME.into(),
            env,
            api_url: api_url.trim_end_matches('/').to_owned(),
            token_namespace: "external-secrets".into(),
            token_secret: "pulumi-esc-token".into(),
            token_key: "PULUMI_ACCESS_TOKEN".into(),
        }
    }
}

/// The Secret holding the token External Secrets reads ESC with (applied by server-side
/// apply from the `[esc] token` reference: it never crosses a command line).
pub fn token_secret(store: &Store, token: &SecretString) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(store.token_secret.clone()),
            namespace: Some(store.token_namespace.clone()),
            labels: Some(labels(&[])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            store.token_key.clone(),
            ByteString(token.expose_secret().as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// The one `ClusterSecretStore` (External Secrets `v1`, Pulumi provider).
pub fn cluster_secret_store(store: &Store) -> serde_json::Value {
    json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ClusterSecretStore",
        "metadata": { "name": store.name, "labels": labels(&[]) },
        "spec": { "provider": { "pulumi": {
            "apiUrl": format!("{}/api/esc", store.api_url),
            "organization": store.env.organization,
            "project": store.env.project,
            "environment": store.env.environment,
            "accessToken": { "secretRef": {
                "name": store.token_secret, "key": store.token_key, "namespace": store.token_namespace,
            } },
        } } },
    })
}

/// The `ExternalSecret` of one declared secret: its ESC object extracted once per refresh,
/// shaped by a template into the Secret [`sync`] would make.
pub fn external_secret(declared: &Declared, store: &Store) -> serde_json::Value {
    let mut template_labels = labels(&[("homelab.dev/secret", declared.name.as_str())]);
    let data: BTreeMap<String, String> = match &declared.kind {
        Kind::Opaque { keys } => keys
            .iter()
            .map(|(key, field)| (key.clone(), format!("{{{{ .{field} }}}}")))
            .collect(),
        Kind::DockerConfig { registry } => BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            format!(
                "{{\"auths\":{{{}:{{\"username\":{{{{ .username | toJson }}}},\"password\":{{{{ .password | toJson }}}},\"auth\":{{{{ printf \"%s:%s\" .username .password | b64enc | toJson }}}}}}}}}}",
                serde_json::Value::from(registry.as_str())
            ),
        )]),
        Kind::ArgoRepository { url } => {
            template_labels.insert("argocd.argoproj.io/secret-type".into(), "repository".into());
            BTreeMap::from([
                ("type".to_owned(), "git".to_owned()),
                ("url".to_owned(), url.clone()),
                ("username".to_owned(), "{{ .username }}".to_owned()),
                ("password".to_owned(), "{{ .password }}".to_owned()),
            ])
        }
    };
    json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {
            "name": declared.secret, "namespace": declared.namespace,
            "labels": labels(&[("homelab.dev/secret", declared.name.as_str())]),
        },
        "spec": {
            "refreshInterval": REFRESH_INTERVAL,
            "secretStoreRef": { "kind": "ClusterSecretStore", "name": store.name },
            "target": {
                "name": declared.secret,
                "creationPolicy": "Owner",
                "template": {
                    "engineVersion": "v2",
                    "type": declared.kind.secret_type(),
                    "metadata": {
                        "labels": template_labels,
                        "annotations": { SOURCE_ANNOTATION: format!("{}:{}", store.env, declared.source) },
                    },
                    "data": data,
                },
            },
            "dataFrom": [ { "extract": { "key": declared.source.to_string() } } ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declared::{Needs, declared};

    fn all() -> Vec<Declared> {
        declared(&Needs {
            harbor_registry: "harbor.lan:8443".into(),
            gitops_repo: Some("https://github.com/me/lab.git".into()),
            runners: true,
            monitoring: true,
            backup_s3: false,
        })
    }

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned().into()))
            .collect()
    }

    #[test]
    fn typed_secrets_hold_what_their_consumers_read() {
        let env = EnvRef::new("acme", "homelab", "dev");
        let robot = &all()[1];
        let s = direct_secret(
            robot,
            &fields(&[("username", "robot$ci"), ("password", "p\"w")]),
            &env,
        );
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
        let config: serde_json::Value =
            serde_json::from_slice(&s.data.unwrap()[".dockerconfigjson"].0).unwrap();
        assert_eq!(config["auths"]["harbor.lan:8443"]["password"], "p\"w");
        assert_eq!(
            config["auths"]["harbor.lan:8443"]["auth"],
            base64::engine::general_purpose::STANDARD.encode("robot$ci:p\"w")
        );
        let repo = &all()[2];
        let s = direct_secret(
            repo,
            &fields(&[("username", "git"), ("password", "ghp_x")]),
            &env,
        );
        assert_eq!(
            s.metadata.labels.as_ref().unwrap()["argocd.argoproj.io/secret-type"],
            "repository"
        );
        assert_eq!(
            s.metadata.annotations.as_ref().unwrap()[SOURCE_ANNOTATION],
            "acme/homelab/dev:argocd.repository"
        );
        let data = s.data.unwrap();
        assert_eq!(data["url"].0, b"https://github.com/me/lab.git");
        let debug = format!("{:?}", secret_data(repo, &fields(&[("password", "ghp_x")])));
        assert!(!debug.contains("ghp_x"), "{debug}");
    }

    #[test]
    fn external_secrets_extract_one_object_each_and_template_the_typed_ones() {
        let store = Store::new(
            EnvRef::new("acme", "homelab", "dev"),
            "https://api.pulumi.com/",
        );
        let s = cluster_secret_store(&store);
        assert_eq!(
            s["spec"]["provider"]["pulumi"]["apiUrl"],
            "https://api.pulumi.com/api/esc"
        );
        for d in all() {
            let e = external_secret(&d, &store);
            assert_eq!(
                e["spec"]["dataFrom"][0]["extract"]["key"],
                d.source.to_string()
            );
            assert_eq!(e["spec"]["refreshInterval"], REFRESH_INTERVAL);
        }
        let docker = external_secret(&all()[1], &store);
        let template = docker["spec"]["target"]["template"]["data"][".dockerconfigjson"]
            .as_str()
            .unwrap();
        assert_eq!(
            template,
            r#"{"auths":{"harbor.lan:8443":{"username":{{ .username | toJson }},"password":{{ .password | toJson }},"auth":{{ printf "%s:%s" .username .password | b64enc | toJson }}}}}"#
        );
    }
}
