//! The `secrets` phase: the platform's declared secrets from the Pulumi ESC environment of
//! `[esc]` into the cluster, from one read of the environment ([`esc_secrets`]). Every
//! declared Secret is applied directly (Harbor's admin password must exist before Harbor's
//! chart does); with `features.external_secrets` the token Secret External Secrets reads ESC
//! with is applied too, and the GitOps repository's ExternalSecrets take over from there.
//! In the pipeline between the cluster and the platform, only with `[esc]`.

use esc_secrets::client::{EnvRef, Esc, EscOptions};
use esc_secrets::declared::{Declared, Needs, check, declared};
use esc_secrets::deliver::{Store, sync, token_secret};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;

use crate::error::Error;
use crate::lab::Lab;
use crate::phase::{
    Change, Check, Event, Events, Phase, PhasePlan, PhaseReport, PhaseStatus, StatusItem,
};

/// The phase's name.
pub const NAME: &str = "secrets";

/// The `secrets` phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecretsPhase;

/// Whether the pipeline has a secrets phase for this configuration (`[esc]` is set).
pub fn wanted(lab: &Lab) -> bool {
    lab.config.esc.is_some()
}

/// The environment of `[esc]`.
///
/// # Errors
/// There is no `[esc]`.
pub fn environment(lab: &Lab) -> Result<EnvRef, Error> {
    let esc = lab.config.esc.as_ref().ok_or(Error::NoEsc)?;
    Ok(EnvRef::new(
        &esc.organization,
        &esc.project,
        &esc.environment,
    ))
}

/// A client of `[esc] api_url` with the token `[esc] token` names.
///
/// # Errors
/// There is no `[esc]`, the token cannot be read, or the URL is unusable.
pub fn client(lab: &Lab) -> Result<Esc, Error> {
    let esc = lab.config.esc.as_ref().ok_or(Error::NoEsc)?;
    let token = esc.token.resolve().map_err(|source| Error::Secret {
        key: "esc.token",
        source,
    })?;
    Ok(Esc::new(
        token,
        EscOptions::default().api_url(&esc.api_url),
    )?)
}

/// What decides the declared secrets, from `homelab.toml`.
pub fn needs(lab: &Lab) -> Needs {
    needs_of(&lab.config)
}

/// External Secrets' objects for the GitOps repository (the `ClusterSecretStore` of `[esc]`
/// and one `ExternalSecret` per declared secret): none without `[esc]` or with
/// `features.external_secrets` off.
pub fn external_objects(config: &homelab_config::Config) -> Vec<serde_json::Value> {
    let Some(esc) = config
        .esc
        .as_ref()
        .filter(|_| config.features.external_secrets)
    else {
        return Vec::new();
    };
    let store = Store::new(
        EnvRef::new(&esc.organization, &esc.project, &esc.environment),
        &esc.api_url,
    );
    let mut out = vec![esc_secrets::deliver::cluster_secret_store(&store)];
    out.extend(
        declared(&needs_of(config))
            .iter()
            .map(|d| esc_secrets::deliver::external_secret(d, &store)),
    );
    out
}

fn needs_of(c: &homelab_config::Config) -> Needs {
    Needs {
        harbor_registry: platform::registry::registry_of(&c.harbor.url).unwrap_or_default(),
        gitops_repo: c
            .gitops
            .as_ref()
            .map(|g| g.repo_url.clone())
            .filter(|u| !u.is_empty()),
        runners: c.features.runners,
        monitoring: c.features.monitoring,
        backup_s3: c.features.backups && c.backups.s3.is_some(),
    }
}

/// Every secret this configuration needs.
pub fn list(lab: &Lab) -> Vec<Declared> {
    declared(&needs(lab))
}

/// External Secrets' store of `[esc]`.
///
/// # Errors
/// There is no `[esc]`.
pub fn store(lab: &Lab) -> Result<Store, Error> {
    let esc = lab.config.esc.as_ref().ok_or(Error::NoEsc)?;
    Ok(Store::new(environment(lab)?, &esc.api_url))
}

/// The token Secret as an object to apply (with External Secrets only).
fn token_object(lab: &Lab) -> Result<Vec<kube::api::DynamicObject>, Error> {
    if !lab.config.features.external_secrets {
        return Ok(Vec::new());
    }
    let esc = lab.config.esc.as_ref().ok_or(Error::NoEsc)?;
    let token = esc.token.resolve().map_err(|source| Error::Secret {
        key: "esc.token",
        source,
    })?;
    let store = store(lab)?;
    let mut value = serde_json::to_value(token_secret(&store, &token)).map_err(|source| {
        esc_secrets::deliver::DeliverError::Build {
            what: "the ESC token Secret".into(),
            source,
        }
    })?;
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    let namespace = serde_json::json!({ "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": store.token_namespace,
                      "labels": { "app.kubernetes.io/managed-by": "homelab" } } });
    [namespace, value]
        .into_iter()
        .map(|v| {
            serde_json::from_value(v).map_err(|source| {
                Error::from(esc_secrets::deliver::DeliverError::Build {
                    what: "the ESC token Secret".into(),
                    source,
                })
            })
        })
        .collect()
}

async fn deliver(lab: &Lab, dry_run: bool) -> Result<(Vec<Change>, usize), Error> {
    let env = environment(lab)?;
    let values = client(lab)?.read(&env).await?;
    let kube = lab.kube_client().await?;
    let delivered = sync(&kube, &values, &env, &list(lab), dry_run).await?;
    let options =
        kube_manifest::ApplyOptions::new(esc_secrets::deliver::FIELD_MANAGER).dry_run(dry_run);
    let mut token_objects = token_object(lab)?;
    // A dry run cannot apply into a namespace it did not make: the Secret would be new.
    let mut token_new = false;
    if dry_run && !token_objects.is_empty() {
        let namespace = store(lab)?.token_namespace;
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(kube.clone());
        if namespaces
            .get_opt(&namespace)
            .await
            .map_err(|source| esc_secrets::deliver::DeliverError::Kube {
                action: format!("read namespace {namespace}"),
                source,
            })?
            .is_none()
        {
            token_objects.retain(|o| o.types.as_ref().is_some_and(|t| t.kind != "Secret"));
            token_new = true;
        }
    }
    let token = kube_manifest::apply(&kube, &token_objects, &options)
        .await
        .map_err(esc_secrets::deliver::DeliverError::from)?;
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for d in &delivered {
        match (d.changed, &d.skipped) {
            (Some(true), _) => changes.push(Change {
                action: "apply".into(),
                object: format!("Secret {}", d.target),
                detail: Some(format!("{}: keys {}", d.secret, d.keys.join(", "))),
            }),
            (_, Some(why)) => changes.push(Change {
                action: "skip".into(),
                object: format!("Secret {}", d.target),
                detail: Some(why.clone()),
            }),
            _ => unchanged += 1,
        }
    }
    if token_new {
        let store = store(lab)?;
        changes.push(Change {
            action: "apply".into(),
            object: format!("Secret {}/{}", store.token_namespace, store.token_secret),
            detail: Some("the token External Secrets reads ESC with".into()),
        });
    }
    for a in token.iter().filter(|a| a.kind == "Secret") {
        if a.changed {
            changes.push(Change {
                action: "apply".into(),
                object: format!("Secret {}", a.name),
                detail: Some("the token External Secrets reads ESC with".into()),
            });
        } else {
            unchanged += 1;
        }
    }
    Ok((changes, unchanged))
}

impl Phase for SecretsPhase {
    fn name(&self) -> &'static str {
        NAME
    }

    fn plan<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, Result<PhasePlan, Error>> {
        async move {
            if lab.answering_client().await.is_none() {
                return Ok(PhasePlan::pending(
                    NAME,
                    "the cluster does not answer yet: the secrets are applied once it does",
                ));
            }
            let (changes, unchanged) = deliver(lab, true).await?;
            Ok(PhasePlan {
                phase: NAME,
                changes,
                unchanged,
                pending: None,
            })
        }
        .boxed()
    }

    fn apply<'a>(
        &'a self,
        lab: &'a Lab,
        events: Events<'a>,
    ) -> BoxFuture<'a, Result<PhaseReport, Error>> {
        async move {
            let (changes, unchanged) = deliver(lab, false).await?;
            if lab.config.features.external_secrets {
                // ExternalSecrets that failed before their store was ready sync now, not at
                // their next refresh (none before External Secrets is installed).
                let kube = lab.kube_client().await?;
                match esc_secrets::eso::nudge(&kube, &store(lab)?, &list(lab)).await {
                    Ok(nudged) => {
                        for name in nudged {
                            events(Event::Progress {
                                phase: NAME,
                                message: format!("ExternalSecret {name}: force-sync (its store became ready after it failed)"),
                            });
                        }
                    }
                    Err(e) => tracing::debug!(target: "homelab::secrets", "no nudge: {e}"),
                }
            }
            for c in &changes {
                events(Event::Progress {
                    phase: NAME,
                    message: format!(
                        "{} {}{}",
                        c.action,
                        c.object,
                        c.detail
                            .as_ref()
                            .map(|d| format!(" ({d})"))
                            .unwrap_or_default()
                    ),
                });
            }
            Ok(PhaseReport {
                phase: NAME,
                changed: changes.iter().filter(|c| c.action == "apply").count(),
                unchanged,
            })
        }
        .boxed()
    }

    fn status<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, PhaseStatus> {
        async move {
            let kube = match lab.kube_client().await {
                Ok(c) => c,
                Err(e) => {
                    return PhaseStatus {
                        phase: NAME,
                        items: Vec::new(),
                        error: Some(e.to_string()),
                    };
                }
            };
            let mut items = Vec::new();
            for d in list(lab) {
                let api: kube::Api<Secret> = kube::Api::namespaced(kube.clone(), &d.namespace);
                let (state, healthy, detail) = match api.get_opt(&d.secret).await {
                    Ok(Some(s)) => {
                        let source = s
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(esc_secrets::deliver::SOURCE_ANNOTATION))
                            .cloned()
                            .unwrap_or_else(|| "not made by homelab".into());
                        ("present", true, format!("from {source}"))
                    }
                    Ok(None) if d.optional => ("absent", true, "optional".to_owned()),
                    Ok(None) => (
                        "absent",
                        false,
                        format!("run `homelab up --only secrets` ({})", d.source),
                    ),
                    Err(e) => ("unknown", false, e.to_string()),
                };
                items.push(StatusItem {
                    name: format!("{}/{}", d.namespace, d.secret),
                    state: state.into(),
                    detail,
                    healthy,
                });
            }
            if lab.config.features.external_secrets
                && let Ok(states) = esc_secrets::eso::states(&kube, &list(lab)).await
            {
                for s in states.into_iter().filter(|s| s.exists) {
                    items.push(StatusItem {
                        name: format!("ExternalSecret {}", s.name),
                        state: if s.ready { "synced" } else { "not synced" }.into(),
                        detail: format!(
                            "{}{}{}",
                            s.reason,
                            if s.message.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", s.message)
                            },
                            if s.refreshed.is_empty() {
                                String::new()
                            } else {
                                format!(" (last sync {})", s.refreshed)
                            }
                        ),
                        healthy: s.ready,
                    });
                }
            }
            PhaseStatus {
                phase: NAME,
                items,
                error: None,
            }
        }
        .boxed()
    }

    fn verify<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, Vec<Check>> {
        async move {
            let env = match environment(lab) {
                Ok(e) => e,
                Err(e) => return vec![Check::fail(NAME, "esc", e.to_string(), "add [esc]")],
            };
            let values = match client(lab) {
                Ok(c) => c.read(&env).await.map_err(Error::from),
                Err(e) => Err(e),
            };
            let values = match values {
                Ok(v) => v,
                Err(e) => {
                    return vec![Check::fail(
                        NAME,
                        format!("open {env}"),
                        e.to_string(),
                        "check [esc] and its token",
                    )];
                }
            };
            let missing = check(&values, &env, &list(lab));
            list(lab)
                .iter()
                .map(|d| {
                    let absent: Vec<&esc_secrets::declared::Missing> =
                        missing.iter().filter(|m| m.secret == d.name).collect();
                    if absent.is_empty() {
                        Check::pass(NAME, d.name.clone(), format!("{env} has {}", d.source))
                    } else if d.optional {
                        Check::pass(NAME, d.name.clone(), format!("optional, not in {env}"))
                    } else {
                        Check::fail(
                            NAME,
                            d.name.clone(),
                            format!(
                                "{env} lacks {}",
                                absent
                                    .iter()
                                    .map(|m| m.path.to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                            absent
                                .iter()
                                .map(|m| m.set_line.clone())
                                .collect::<Vec<_>>()
                                .join("; "),
                        )
                    }
                })
                .collect()
        }
        .boxed()
    }
}
