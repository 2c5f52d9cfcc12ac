//! The `platform` phase: Argo CD bootstrapped into the cluster from its pinned release
//! manifest, the root Application of the GitOps repository (`[gitops] repo_url`), and the
//! platform's components followed wave by wave until each works ([`platform`]). In the
//! pipeline only when `[gitops] repo_url` is set: the platform is what Argo CD deploys from
//! that repository.

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::error::Error;
use crate::inputs;
use crate::lab::Lab;
use crate::lock::{self, LockFile};
use crate::phase::{
    Change, Check, Event, Events, Phase, PhasePlan, PhaseReport, PhaseStatus, StatusItem,
};

/// The phase's name.
pub const NAME: &str = "platform";

/// Argo CD's namespace.
pub const ARGOCD_NAMESPACE: &str = "argocd";

/// The `platform` phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlatformPhase;

/// Whether the pipeline has a platform phase for this configuration.
pub fn wanted(lab: &Lab) -> bool {
    inputs::gitops_spec(&lab.config).is_some()
}

/// Argo CD's install manifest of `versions.argocd`, checked against its pin (the file's,
/// else the one homelab knows for its default release, else the digest `homelab.lock`
/// recorded on first use).
///
/// # Errors
/// The download fails or the digest differs.
pub async fn argocd_manifest(lab: &Lab, events: Events<'_>) -> Result<(String, Vec<u8>), Error> {
    let url = lab
        .config
        .versions
        .argocd_manifest
        .clone()
        .unwrap_or_else(|| {
            platform::argocd::install_manifest_url(lab.config.versions.argocd.as_str())
        });
    let mut lock = LockFile::load(&lab.lock_path())?;
    let fetched = lock::fetch(
        &reqwest::Client::new(),
        &url,
        lab.config.versions.argocd_pin(),
        &mut lock,
        lab.options.update_lock,
    )
    .await?;
    if fetched.recorded {
        events(Event::Progress {
            phase: NAME,
            message: format!(
                "recorded sha256 {} of {url} in {} (commit it beside homelab.toml, or pin it as versions.argocd_manifest_sha256)",
                fetched.sha256,
                lock.path().display()
            ),
        });
    }
    Ok((url, fetched.bytes))
}

/// What the bootstrap installs: the manifest's objects and the GitOps repository's root
/// Application.
///
/// # Errors
/// The manifest does not parse, or there is no `[gitops] repo_url`.
pub fn bootstrap_spec(
    lab: &Lab,
    source: &str,
    manifest: &[u8],
) -> Result<platform::argocd::Bootstrap, Error> {
    let objects = kube_manifest::parse(source, &String::from_utf8_lossy(manifest))
        .map_err(platform::PlatformError::from)?;
    let spec = inputs::gitops_spec(&lab.config).ok_or_else(|| {
        platform::PlatformError::Manifest(
            "set [gitops] repo_url in homelab.toml: Argo CD deploys the platform from it".into(),
        )
    })?;
    let files = gitops::scaffold::files(&spec).map_err(platform::PlatformError::from)?;
    let root_text = files
        .iter()
        .find(|(path, _)| path.ends_with("bootstrap/root.yaml"))
        .map(|(_, text)| text.clone())
        .ok_or_else(|| {
            platform::PlatformError::Manifest(
                "the GitOps scaffold has no bootstrap/root.yaml".into(),
            )
        })?;
    let root: gitops::types::Application = root_application(&root_text)?;
    Ok(platform::argocd::Bootstrap {
        namespace: ARGOCD_NAMESPACE.into(),
        manifest: objects,
        // A private repository's credentials have no place in homelab.toml yet: Argo CD
        // clones the repository anonymously.
        repository: None,
        root,
    })
}

fn root_application(text: &str) -> Result<gitops::types::Application, Error> {
    let objects =
        kube_manifest::parse("bootstrap/root.yaml", text).map_err(platform::PlatformError::from)?;
    let object = objects
        .into_iter()
        .next()
        .ok_or_else(|| platform::PlatformError::Manifest("bootstrap/root.yaml is empty".into()))?;
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|source| {
            platform::PlatformError::Json {
                what: "bootstrap/root.yaml".into(),
                source,
            }
            .into()
        })
}

/// Harbor's project and pull robot, the pull Secrets, and containerd on the nodes (the nodes
/// homelab made; an existing cluster's nodes are the user's to configure), once the
/// platform is up. With `dry_run`, only read.
///
/// # Errors
/// The admin password cannot be read, Harbor or the cluster refuse, or a node step fails.
pub async fn wire_registry(
    lab: &Lab,
    client: &kube::Client,
    dry_run: bool,
) -> Result<platform::registry::Wired, Error> {
    let (wiring, access) = harbor_access(lab, client).await?;
    let harbor = harbor_client::harbor::Harbor::new(
        &lab.config.harbor.url,
        HARBOR_ADMIN,
        access.password,
        // An http:// URL written in homelab.toml is the explicit choice Harbor's client asks
        // for (a lab registry on a private network).
        &harbor_client::harbor::HarborOptions::default()
            .ca_pem(access.ca.map(String::into_bytes))
            .resolve(Some(access.address))
            .plain_http(access.plain_http),
    )
    .map_err(|source| platform::PlatformError::Harbor {
        action: "reach it".into(),
        source: Box::new(source),
    })?;
    let mut runner = crate::cluster::runner(lab)?;
    runner.dry_run = dry_run;
    Ok(platform::registry::wire(&harbor, client, &runner, &own_nodes(lab), &wiring).await?)
}

/// The nodes homelab made (an existing cluster's nodes are the user's to configure).
fn own_nodes(lab: &Lab) -> Vec<kubeadm_boot::ssh::Target> {
    if lab.config.cluster.provider == homelab_config::ClusterProvider::Libvirt {
        inputs::targets(&lab.config)
    } else {
        Vec::new()
    }
}

/// How this machine reaches Harbor as its admin.
struct HarborAccess {
    /// Harbor's host at its load-balancer address.
    address: std::net::SocketAddr,
    /// The CA its certificate chains to (the homelab CA), when it is in the cluster.
    ca: Option<String>,
    /// The password Harbor itself was given (the Secret its chart reads), else the
    /// reference in `[harbor] admin_password`.
    password: secrecy::SecretString,
    /// `[harbor] url` is `http://`.
    plain_http: bool,
}

async fn harbor_access(
    lab: &Lab,
    client: &kube::Client,
) -> Result<(platform::registry::RegistryWiring, HarborAccess), Error> {
    let mut wiring = inputs::registry_wiring(&lab.config)?;
    // Harbor's name resolves to its load-balancer address on the nodes and here.
    let ip = std::net::IpAddr::V4(lab.config.network.load_balancer_ips.harbor);
    wiring.address = Some(ip);
    let port = reqwest::Url::parse(&lab.config.harbor.url)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .unwrap_or(443);
    let ca = platform::registry::ca_pem(client, &wiring.ca).await?;
    let password = match harbor_admin_in_cluster(client).await {
        Some(p) => p,
        None => configured_admin_password(lab)?,
    };
    let access = HarborAccess {
        address: std::net::SocketAddr::new(ip, port),
        ca,
        password,
        plain_http: lab.config.harbor.url.starts_with("http://"),
    };
    Ok((wiring, access))
}

/// The end-to-end checks of `platform::verify`, then, on the nodes homelab made, a pull
/// from Harbor through containerd ([`node_pull_check`]).
pub async fn verify_platform(
    lab: &Lab,
    client: &kube::Client,
    spec: &platform::verify::VerifySpec,
) -> Vec<platform::verify::Verified> {
    let mut results = Box::pin(platform::verify::verify(client, spec)).await;
    if let Some(pulled) = node_pull_check(lab, client).await {
        let ok = pulled.is_ok();
        results.push(platform::verify::Verified {
            name: "nodes pull from Harbor".into(),
            ok,
            detail: pulled.unwrap_or_else(|e| e),
        });
    }
    results
}

/// Every node homelab made pulls a probe image from Harbor through its containerd, with
/// the pull robot's login from the first pull namespace's Secret (`platform::node_pull`);
/// `None` when homelab made no nodes.
pub async fn node_pull_check(lab: &Lab, client: &kube::Client) -> Option<Result<String, String>> {
    let targets = own_nodes(lab);
    if targets.is_empty() {
        return None;
    }
    let check = async {
        let (wiring, access) = harbor_access(lab, client)
            .await
            .map_err(|e| e.to_string())?;
        let namespace = wiring
            .namespaces
            .first()
            .ok_or("[harbor] pull_namespaces is empty: no pull Secret to pull with")?;
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(client.clone(), namespace);
        let login = secrets
            .get_opt(&wiring.secret_name)
            .await
            .map_err(|e| format!("read Secret {namespace}/{}: {e}", wiring.secret_name))?
            .and_then(|s| platform::registry::pull_login(&s, &wiring.registry))
            .ok_or_else(|| {
                format!(
                    "Secret {namespace}/{} holds no login for {}: run `homelab-platform registry`",
                    wiring.secret_name, wiring.registry
                )
            })?;
        let registry = harbor_client::registry::Registry::new(
            &wiring.registry,
            harbor_client::registry::Credentials::Basic {
                username: HARBOR_ADMIN.into(),
                password: access.password,
            },
            harbor_client::registry::Options::default()
                .ca_pem(access.ca.map(String::into_bytes))
                .resolve(Some(access.address))
                .plain_http(access.plain_http),
        )
        .map_err(|e| e.to_string())?;
        let mut check =
            platform::node_pull::NodePull::new(registry, &lab.config.harbor.project, Some(login));
        check.certs_dir.clone_from(&wiring.certs_dir);
        let runner = crate::cluster::runner(lab).map_err(|e| e.to_string())?;
        platform::node_pull::node_pulls(runner.pool(), &targets, &check).await
    };
    Some(check.await)
}

/// The end-to-end checks' inputs: the ingress address, Harbor's URL, the homelab CA read
/// from the cluster (when cert-manager made it).
pub async fn verify_spec(lab: &Lab, client: &kube::Client) -> platform::verify::VerifySpec {
    let mut spec = platform::verify::VerifySpec::new(lab.config.network.load_balancer_ips.ingress);
    spec.ca_pem = platform::registry::ca_pem(client, &platform::registry::CaSource::default())
        .await
        .ok()
        .flatten();
    spec.harbor_url = Some(lab.config.harbor.url.clone());
    spec
}

/// `[harbor] admin_password`, resolved.
fn configured_admin_password(lab: &Lab) -> Result<secrecy::SecretString, Error> {
    lab.config
        .harbor
        .admin_password
        .resolve()
        .map_err(|source| Error::Secret {
            key: "harbor.admin_password",
            source,
        })
}

/// `HARBOR_ADMIN_PASSWORD` of the Secret Harbor's chart reads, when it exists.
async fn harbor_admin_in_cluster(client: &kube::Client) -> Option<secrecy::SecretString> {
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), "harbor");
    let secret = api
        .get_opt(gitops::scaffold::HARBOR_ADMIN_SECRET)
        .await
        .ok()??;
    let bytes = secret.data?.remove("HARBOR_ADMIN_PASSWORD")?;
    String::from_utf8(bytes.0).ok().map(Into::into)
}

/// The Secret Harbor's chart reads its admin password from, made from `[harbor]
/// admin_password` — only without `[esc]`, where the secrets phase delivers it from ESC.
///
/// # Errors
/// The password cannot be read.
pub fn harbor_admin_secret(lab: &Lab) -> Result<Option<kube::api::DynamicObject>, Error> {
    if lab.config.esc.is_some() {
        return Ok(None);
    }
    let password = configured_admin_password(lab)?;
    let value = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": { "name": gitops::scaffold::HARBOR_ADMIN_SECRET, "namespace": "harbor",
                      "labels": { "app.kubernetes.io/managed-by": "homelab" } },
        "data": { "HARBOR_ADMIN_PASSWORD": base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            secrecy::ExposeSecret::expose_secret(&password),
        ) },
    });
    serde_json::from_value(value).map(Some).map_err(|source| {
        platform::PlatformError::Json {
            what: "the Harbor admin Secret".into(),
            source,
        }
        .into()
    })
}

/// The account the registry wiring uses on Harbor (`harbor.admin_password` is its password):
/// for creating the project and the pull robot only, never for pulls.
pub const HARBOR_ADMIN: &str = "admin";

fn wired_summary(lab: &Lab, wired: &platform::registry::Wired) -> String {
    let changed = wired.access.applied.iter().filter(|a| a.changed).count();
    let steps = wired
        .nodes
        .iter()
        .filter(|r| r.outcome != kubeadm_boot::steps::Outcome::Unchanged)
        .count();
    format!(
        "registry: project {}{}, robot {} {:?}, {changed} namespaces/Secrets changed in {}, {steps} containerd files changed on {} nodes",
        lab.config.harbor.project,
        if wired.access.project_created {
            " (created)"
        } else {
            ""
        },
        wired.access.robot_name,
        wired.access.robot,
        lab.config.harbor.pull_namespaces.join(", "),
        wired
            .nodes
            .iter()
            .map(|r| r.host.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    )
}

/// Whether every namespace of `harbor.pull_namespaces` holds the pull robot's Secret.
async fn registry_status(lab: &Lab, client: &kube::Client) -> StatusItem {
    let robot = format!("robot${}+pull", lab.config.harbor.project);
    let held = match inputs::registry_wiring(&lab.config) {
        Ok(wiring) => platform::registry::pull_secret_status(client, &wiring, &robot)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let (healthy, detail) = match held {
        Ok(held) => {
            let missing: Vec<&str> = held
                .iter()
                .filter(|(_, ok)| !**ok)
                .map(|(ns, _)| ns.as_str())
                .collect();
            if missing.is_empty() {
                (true, format!("{robot} pulls in {}", held.len()))
            } else {
                (
                    false,
                    format!("no pull Secret of {robot} in {}", missing.join(", ")),
                )
            }
        }
        Err(e) => (false, e),
    };
    StatusItem {
        name: "registry".into(),
        state: if healthy { "wired" } else { "not wired" }.into(),
        detail,
        healthy,
    }
}

fn components(lab: &Lab) -> Vec<platform::components::Component> {
    platform::components::components(&inputs::platform_spec(&lab.config))
}

fn wait_options(lab: &Lab) -> platform::wait::WaitOptions {
    platform::wait::WaitOptions::default().timeout(lab.config.phases.platform.timeout.0)
}

impl Phase for PlatformPhase {
    fn name(&self) -> &'static str {
        NAME
    }

    fn plan<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, Result<PhasePlan, Error>> {
        async move {
            let Some(client) = lab.answering_client().await else {
                return Ok(PhasePlan::pending(
                    NAME,
                    "the cluster does not answer yet: Argo CD is installed once it does",
                ));
            };
            let (source, bytes) = argocd_manifest(lab, &|_| {}).await?;
            let spec = bootstrap_spec(lab, &source, &bytes)?;
            let applied =
                platform::argocd::bootstrap(&client, &spec, true, &wait_options(lab), &|_| {})
                    .await?;
            let (changed, unchanged): (Vec<_>, Vec<_>) =
                applied.into_iter().partition(|a| a.changed);
            let mut changes: Vec<Change> = changed
                .iter()
                .map(|a| Change {
                    action: "apply".into(),
                    object: a.to_string(),
                    detail: None,
                })
                .collect();
            let http = reqwest::Client::new();
            for status in platform::wait::status(&client, &http, &components(lab)).await {
                if let Some((check, detail)) = status.failing() {
                    changes.push(Change {
                        action: "wait".into(),
                        object: format!("{} (wave {})", status.name, status.wave),
                        detail: Some(format!("{check}: {detail}")),
                    });
                }
            }
            let wired = if changes.is_empty() {
                Some(wire_registry(lab, &client, true).await)
            } else {
                None
            };
            if let Some(Err(e)) = &wired {
                changes.push(Change {
                    action: "wire".into(),
                    object: "the registry on the nodes".into(),
                    detail: Some(format!("cannot be planned: {e}")),
                });
            } else if let Some(Ok(wired)) = &wired {
                if wired.access.robot != platform::registry::RobotChange::Kept {
                    changes.push(Change {
                        action: format!("{:?}", wired.access.robot).to_lowercase(),
                        object: format!("Harbor robot {}", wired.access.robot_name),
                        detail: Some(format!(
                            "pull Secret harbor-pull in {}",
                            lab.config.harbor.pull_namespaces.join(", ")
                        )),
                    });
                }
                changes.extend(wired.access.applied.iter().filter(|a| a.changed).map(|a| {
                    Change {
                        action: "apply".into(),
                        object: a.to_string(),
                        detail: None,
                    }
                }));
                changes.extend(
                    wired
                        .nodes
                        .iter()
                        .filter(|r| r.outcome != kubeadm_boot::steps::Outcome::Unchanged)
                        .map(|r| Change {
                            action: "write".into(),
                            object: format!("{} on {}", r.step, r.host),
                            detail: Some(r.description.clone()),
                        }),
                );
            } else {
                changes.push(Change {
                    action: "wire".into(),
                    object: "the registry on the nodes".into(),
                    detail: Some(format!(
                        "once the platform is ready: Harbor project {}, a pull-only robot, Secret harbor-pull in {}, containerd trusting the homelab CA",
                        lab.config.harbor.project,
                        lab.config.harbor.pull_namespaces.join(", ")
                    )),
                });
            }
            Ok(PhasePlan {
                phase: NAME,
                changes,
                unchanged: unchanged.len(),
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
            let client = lab.kube_client().await?;
            let (source, bytes) = argocd_manifest(lab, events).await?;
            let spec = bootstrap_spec(lab, &source, &bytes)?;
            let report = |e: platform::Event| {
                events(Event::Progress {
                    phase: NAME,
                    message: e.to_string(),
                });
            };
            let options = wait_options(lab);
            if let Some(secret) = harbor_admin_secret(lab)? {
                let namespace: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": { "name": "harbor", "labels": { "app.kubernetes.io/managed-by": "homelab" } },
                }))
                .map_err(|source| platform::PlatformError::Json {
                    what: "Namespace harbor".into(),
                    source,
                })?;
                kube_manifest::apply(
                    &client,
                    &[namespace, secret],
                    &kube_manifest::ApplyOptions::new(platform::FIELD_MANAGER),
                )
                .await
                .map_err(platform::PlatformError::from)?;
            }
            let applied =
                platform::argocd::bootstrap(&client, &spec, false, &options, &report).await?;
            let changed = applied.iter().filter(|a| a.changed).count();
            events(Event::Progress {
                phase: NAME,
                message: format!(
                    "Argo CD {} installed ({changed} objects changed); following the platform's waves",
                    lab.config.versions.argocd
                ),
            });
            let http = reqwest::Client::new();
            let ready =
                platform::wait::wait(&client, &http, &components(lab), &options, &report).await?;
            let wired = wire_registry(lab, &client, false).await?;
            events(Event::Progress {
                phase: NAME,
                message: wired_summary(lab, &wired),
            });
            let wired_changes = wired.access.applied.iter().filter(|a| a.changed).count()
                + wired
                    .nodes
                    .iter()
                    .filter(|r| r.outcome == kubeadm_boot::steps::Outcome::Changed)
                    .count()
                + usize::from(wired.access.robot != platform::registry::RobotChange::Kept);
            Ok(PhaseReport {
                phase: NAME,
                changed: changed + wired_changes,
                unchanged: applied.len() - changed + ready.len(),
            })
        }
        .boxed()
    }

    fn status<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, PhaseStatus> {
        async move {
            let client = match lab.kube_client().await {
                Ok(c) => c,
                Err(e) => {
                    return PhaseStatus {
                        phase: NAME,
                        items: Vec::new(),
                        error: Some(e.to_string()),
                    };
                }
            };
            let http = reqwest::Client::new();
            let mut items: Vec<StatusItem> =
                platform::wait::status(&client, &http, &components(lab))
                    .await
                    .into_iter()
                    .map(|s| StatusItem {
                        state: if s.ready { "ready" } else { "not ready" }.into(),
                        detail: match s.failing() {
                            Some((check, detail)) => format!("wave {}: {check}: {detail}", s.wave),
                            None => format!("wave {}: {} checks hold", s.wave, s.checks.len()),
                        },
                        healthy: s.ready,
                        name: s.name,
                    })
                    .collect();
            items.push(registry_status(lab, &client).await);
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
            let client = match lab.kube_client().await {
                Ok(c) => c,
                Err(e) => {
                    return vec![Check::fail(
                        NAME,
                        "cluster",
                        e.to_string(),
                        "run `homelab up --until cluster` first",
                    )];
                }
            };
            let http = reqwest::Client::new();
            let mut checks = Vec::new();
            // What users of the platform see, end to end.
            let spec = verify_spec(lab, &client).await;
            for v in Box::pin(verify_platform(lab, &client, &spec)).await {
                checks.push(if v.ok {
                    Check::pass(NAME, v.name, v.detail)
                } else {
                    Check::fail(
                        NAME,
                        v.name,
                        v.detail,
                        "see `homelab-platform status` for the component behind it",
                    )
                });
            }
            if lab.config.features.external_secrets {
                match crate::secrets::store(lab) {
                    Ok(_) => match esc_secrets::eso::states(&client, &crate::secrets::list(lab)).await {
                        Ok(states) => {
                            for s in states {
                                let name = format!("ExternalSecret {} synced", s.name);
                                checks.push(if s.ready {
                                    Check::pass(NAME, name, format!("{} (last sync {})", s.reason, s.refreshed))
                                } else if !s.exists {
                                    Check::fail(NAME, name, "does not exist".to_owned(), "sync the external-secrets-config Application")
                                } else {
                                    Check::fail(NAME, name, format!("{}: {}", s.reason, s.message), "`homelab-secrets check`, then `homelab up --only secrets` (it nudges)")
                                });
                            }
                        }
                        Err(e) => checks.push(Check::fail(NAME, "ExternalSecrets", e.to_string(), "is External Secrets installed?")),
                    },
                    Err(e) => checks.push(Check::fail(NAME, "ExternalSecrets", e.to_string(), "add [esc]")),
                }
            }
            // Every check of every component, even after one fails.
            for component in components(lab) {
                for check in &component.checks {
                    let outcome = check.evaluate(&client, &http).await;
                    let name = format!("{}: {check}", component.name);
                    checks.push(if outcome.ok {
                        Check::pass(NAME, name, outcome.detail)
                    } else {
                        Check::fail(
                            NAME,
                            name,
                            outcome.detail,
                            format!(
                                "see Argo CD's Application {} (homelab-gitops status), then `homelab up --only platform`",
                                component.name
                            ),
                        )
                    });
                }
            }
            checks
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(repo_url: Option<&str>) -> Lab {
        Lab::new(homelab_config::Config {
            gitops: repo_url.map(|url| homelab_config::GitopsConfig {
                repo_url: url.into(),
                ..homelab_config::GitopsConfig::default()
            }),
            ..homelab_config::Config::default()
        })
    }

    #[test]
    fn harbor_s_admin_secret_comes_from_the_reference_only_without_esc() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "Lab-Admin-1\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut config = homelab_config::Config::default();
        config.harbor.admin_password = homelab_config::SecretRef::File(file);
        let secret = harbor_admin_secret(&Lab::new(config.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("harbor-admin"));
        assert_eq!(
            secret.data["data"]["HARBOR_ADMIN_PASSWORD"],
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "Lab-Admin-1")
        );
        assert!(!format!("{secret:?}").contains("Lab-Admin-1"));
        config.esc = Some(homelab_config::EscConfig::default());
        assert!(harbor_admin_secret(&Lab::new(config)).unwrap().is_none());
    }

    #[test]
    fn the_platform_phase_follows_the_cluster_only_with_a_gitops_repository() {
        let without = crate::Pipeline::for_lab(&lab(None));
        assert_eq!(without.names(), ["vms", "nodes", "cluster"]);
        let with = crate::Pipeline::for_lab(&lab(Some("https://git.example/lab.git")));
        assert_eq!(with.names(), ["vms", "nodes", "cluster", "platform"]);
    }

    #[test]
    fn the_bootstrap_installs_the_manifest_and_the_scaffold_s_root_application() {
        let lab = lab(Some("https://git.example/lab.git"));
        let manifest = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n";
        let spec = bootstrap_spec(&lab, "install.yaml", manifest).unwrap();
        assert_eq!(spec.namespace, "argocd");
        assert_eq!(spec.manifest.len(), 1);
        assert_eq!(spec.root.metadata.name.as_deref(), Some("root"));
        assert_eq!(
            spec.root.spec.source.as_ref().unwrap().repo_url,
            "https://git.example/lab.git"
        );
        let err = bootstrap_spec(&lab, "install.yaml", b"kind: [").unwrap_err();
        assert!(
            err.to_string().starts_with("install.yaml: document 1"),
            "{err}"
        );
    }
}
