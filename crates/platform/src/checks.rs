//! Deep readiness checks, kept as data: each [`Check`] says what must hold for a component
//! to work (not merely to exist), and [`Check::evaluate`] asks the cluster once.

use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::discovery::Scope;
use kube::{Client, ResourceExt};
use serde::Serialize;

/// A workload kind whose rollout [`Check::RolledOut`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Workload {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
        })
    }
}

/// One thing that must hold for a component to work.
///
/// ```no_run
/// # async fn demo() -> Result<(), kube::Error> {
/// use platform::checks::{Check, Workload};
///
/// let checks = [
///     Check::CrdEstablished { name: "ipaddresspools.metallb.io".into() },
///     Check::RolledOut {
///         workload: Workload::Deployment,
///         namespace: "metallb-system".into(),
///         name: "metallb-controller".into(),
///     },
/// ];
/// let client = kube::Client::try_default().await?; // the cluster KUBECONFIG names
/// let http = reqwest::Client::new();
/// for check in &checks {
///     // One evaluation, no waiting (`platform::wait` re-evaluates when objects change).
///     let seen = check.evaluate(&client, &http).await;
///     println!("{check}: {} ({})", if seen.ok { "ok" } else { "not yet" }, seen.detail);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Check {
    /// A CustomResourceDefinition is `Established` (its kind is served).
    CrdEstablished {
        /// The CRD (`plural.group`).
        name: String,
    },
    /// A workload is rolled out: the controller has seen its latest generation, and every
    /// replica is updated and available (as `kubectl rollout status` judges).
    RolledOut {
        /// Its kind.
        workload: Workload,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A Service has at least one ready endpoint (from its EndpointSlices): for an
    /// admission webhook, a Deployment can be available while its Service has none yet.
    ServiceEndpoints {
        /// Namespace.
        namespace: String,
        /// Service name.
        name: String,
    },
    /// A server-side dry-run create of `object` is accepted: the admission webhooks of its
    /// kind answer (a 409 "already exists" counts: it is decided after admission).
    DryRunCreate {
        /// The object, with apiVersion, kind, metadata.name (and namespace when namespaced).
        object: serde_json::Value,
    },
    /// A LoadBalancer Service has been given this address.
    LoadBalancerIp {
        /// Namespace.
        namespace: String,
        /// Service name.
        name: String,
        /// The address it must have.
        ip: Ipv4Addr,
    },
    /// An object's status condition is `True` (cert-manager's `Ready`, say).
    Condition {
        /// `group/version` or `v1`.
        api_version: String,
        /// Kind.
        kind: String,
        /// Namespace, for a namespaced kind.
        namespace: Option<String>,
        /// Name.
        name: String,
        /// The condition type.
        condition: String,
    },
    /// At least `min` pods matching `selector` are Ready.
    PodsReady {
        /// Namespace.
        namespace: String,
        /// Label selector.
        selector: String,
        /// How many at least.
        min: usize,
    },
    /// An HTTP GET answers 2xx; when the body is JSON with a `status` (Harbor's
    /// `/api/v2.0/health`), it and every entry of `components` must be `healthy`.
    Http {
        /// The URL.
        url: String,
        /// Trust the CA certificate in this Secret (`namespace`, `name`; `ca.crt`, else
        /// `tls.crt`) instead of the system's: a certificate from the homelab CA.
        #[serde(skip_serializing_if = "Option::is_none")]
        ca_secret: Option<(String, String)>,
        /// Reach the URL's host at this address, not through DNS.
        #[serde(skip_serializing_if = "Option::is_none")]
        address: Option<std::net::SocketAddr>,
    },
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CrdEstablished { name } => write!(f, "CRD {name} Established"),
            Self::RolledOut {
                workload,
                namespace,
                name,
            } => write!(f, "{workload} {namespace}/{name} rolled out"),
            Self::ServiceEndpoints { namespace, name } => {
                write!(f, "Service {namespace}/{name} has ready endpoints")
            }
            Self::DryRunCreate { object } => write!(
                f,
                "server-side dry-run create of {} {} accepted",
                object["kind"].as_str().unwrap_or("?"),
                object["metadata"]["name"].as_str().unwrap_or("?")
            ),
            Self::LoadBalancerIp {
                namespace,
                name,
                ip,
            } => write!(f, "Service {namespace}/{name} has load-balancer IP {ip}"),
            Self::Condition {
                kind,
                namespace,
                name,
                condition,
                ..
            } => match namespace {
                Some(ns) => write!(f, "{kind} {ns}/{name} {condition}"),
                None => write!(f, "{kind} {name} {condition}"),
            },
            Self::PodsReady {
                namespace,
                selector,
                min,
            } => write!(f, "{min}+ pods {selector} in {namespace} Ready"),
            Self::Http { url, .. } => write!(f, "GET {url} healthy"),
        }
    }
}

/// What one evaluation of a [`Check`] saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Whether the check holds.
    pub ok: bool,
    /// What was seen: the missing part, the last condition, the server's answer.
    pub detail: String,
}

impl Outcome {
    fn ok(detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            detail: detail.into(),
        }
    }

    fn not(detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            detail: detail.into(),
        }
    }
}

/// What a workload without an observed generation is waiting for.
const NOT_SEEN: &str = "no status yet (the controller has not seen it)";

/// Why a Deployment is not rolled out yet, or `None` when it is.
pub fn deployment_waiting(d: &Deployment) -> Option<String> {
    let generation = d.metadata.generation.unwrap_or(0);
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    // A real API server stores a new Deployment with `status: {}`: no observed generation
    // means the controller has not seen it.
    let Some(s) = d
        .status
        .as_ref()
        .filter(|s| s.observed_generation.is_some())
    else {
        return Some(NOT_SEEN.into());
    };
    if s.observed_generation.unwrap_or(0) < generation {
        return Some(format!(
            "generation {generation} not observed yet (observed {})",
            s.observed_generation.unwrap_or(0)
        ));
    }
    if let Some(c) = s
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return Some(format!(
            "progress deadline exceeded: {}",
            c.message.as_deref().unwrap_or("")
        ));
    }
    let updated = s.updated_replicas.unwrap_or(0);
    let total = s.replicas.unwrap_or(0);
    let available = s.available_replicas.unwrap_or(0);
    if updated < want {
        return Some(format!("{updated} of {want} replicas updated"));
    }
    if total > updated {
        return Some(format!(
            "{} old replicas pending termination",
            total - updated
        ));
    }
    if available < updated {
        return Some(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    None
}

/// Why a StatefulSet is not rolled out yet, or `None` when it is.
pub fn statefulset_waiting(s: &StatefulSet) -> Option<String> {
    let generation = s.metadata.generation.unwrap_or(0);
    let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = s
        .status
        .as_ref()
        .filter(|s| s.observed_generation.is_some())
    else {
        return Some(NOT_SEEN.into());
    };
    if st.observed_generation.unwrap_or(0) < generation {
        return Some(format!("generation {generation} not observed yet"));
    }
    let ready = st.ready_replicas.unwrap_or(0);
    if ready < want {
        return Some(format!("{ready} of {want} replicas ready"));
    }
    let partitioned = s
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    if partitioned == 0 && st.update_revision.is_some() && st.update_revision != st.current_revision
    {
        return Some(format!(
            "{} of {want} replicas at the update revision",
            st.updated_replicas.unwrap_or(0)
        ));
    }
    if st.available_replicas.unwrap_or(ready) < want {
        return Some(format!(
            "{} of {want} replicas available",
            st.available_replicas.unwrap_or(0)
        ));
    }
    None
}

/// Why a DaemonSet is not rolled out yet, or `None` when it is.
pub fn daemonset_waiting(d: &DaemonSet) -> Option<String> {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(s) = d
        .status
        .as_ref()
        .filter(|s| s.observed_generation.is_some())
    else {
        return Some(NOT_SEEN.into());
    };
    if s.observed_generation.unwrap_or(0) < generation {
        return Some(format!("generation {generation} not observed yet"));
    }
    let desired = s.desired_number_scheduled;
    let updated = s.updated_number_scheduled.unwrap_or(0);
    let available = s.number_available.unwrap_or(0);
    if updated < desired {
        return Some(format!("{updated} of {desired} nodes updated"));
    }
    if available < desired {
        return Some(format!("{available} of {desired} nodes available"));
    }
    None
}

/// The ready endpoint addresses of a Service's slices (an endpoint whose `ready` is unset
/// counts as ready, as the API documents).
pub fn ready_endpoints(slices: &[EndpointSlice]) -> usize {
    slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .map(|e| e.addresses.len())
        .sum()
}

/// A condition of a status as `Type=Status: reason: message`, or `None` when absent.
fn condition_of(object: &serde_json::Value, condition: &str) -> Option<(bool, String)> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == condition)
        .map(|c| {
            (
                c["status"] == "True",
                format!(
                    "{condition}={}: {}: {}",
                    c["status"].as_str().unwrap_or("?"),
                    c["reason"].as_str().unwrap_or(""),
                    c["message"].as_str().unwrap_or("")
                ),
            )
        })
}

/// Whether a `/api/v2.0/health`-style body says healthy (a body without `status` is).
///
/// # Errors
/// What is not healthy: the overall status and each unhealthy component with its error.
pub fn health_body(body: &serde_json::Value) -> Result<(), String> {
    let Some(status) = body["status"].as_str() else {
        return Ok(());
    };
    let unhealthy: Vec<String> = body["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] != "healthy")
        .map(|c| {
            format!(
                "{} {}{}",
                c["name"].as_str().unwrap_or("?"),
                c["status"].as_str().unwrap_or("?"),
                c["error"]
                    .as_str()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if status == "healthy" && unhealthy.is_empty() {
        Ok(())
    } else if unhealthy.is_empty() {
        Err(format!("status {status}"))
    } else {
        Err(format!("status {status}: {}", unhealthy.join(", ")))
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Check {
    /// The namespace the check looks in, if any.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Self::RolledOut { namespace, .. }
            | Self::ServiceEndpoints { namespace, .. }
            | Self::LoadBalancerIp { namespace, .. }
            | Self::PodsReady { namespace, .. } => Some(namespace),
            Self::Condition { namespace, .. } => namespace.as_deref(),
            Self::DryRunCreate { object } => object["metadata"]["namespace"].as_str(),
            Self::CrdEstablished { .. } | Self::Http { .. } => None,
        }
    }

    /// Whether waiting for this check needs polling (nothing in the cluster changes when
    /// it turns true) rather than watching.
    pub fn polled(&self) -> bool {
        matches!(self, Self::Http { .. } | Self::DryRunCreate { .. })
    }

    /// Asks the cluster (or the URL) once. Never fails: what went wrong is the outcome's
    /// detail.
    #[allow(
        clippy::too_many_lines,
        reason = "one arm per kind of check reads best whole"
    )]
    pub async fn evaluate(&self, client: &Client, http: &reqwest::Client) -> Outcome {
        match self {
            Self::CrdEstablished { name } => {
                let api: Api<CustomResourceDefinition> = Api::all(client.clone());
                match api.get_opt(name).await {
                    Ok(Some(crd)) => {
                        let value = serde_json::to_value(&crd).unwrap_or_default();
                        match condition_of(&value, "Established") {
                            Some((true, _)) => Outcome::ok("Established"),
                            Some((false, text)) => Outcome::not(text),
                            None => Outcome::not("no Established condition yet"),
                        }
                    }
                    Ok(None) => Outcome::not("the CRD does not exist"),
                    Err(e) => Outcome::not(format!("cannot read it: {e}")),
                }
            }
            Self::RolledOut {
                workload,
                namespace,
                name,
            } => {
                let waiting = match workload {
                    Workload::Deployment => {
                        Api::<Deployment>::namespaced(client.clone(), namespace)
                            .get_opt(name)
                            .await
                            .map(|d| d.map(|d| deployment_waiting(&d)))
                    }
                    Workload::StatefulSet => {
                        Api::<StatefulSet>::namespaced(client.clone(), namespace)
                            .get_opt(name)
                            .await
                            .map(|d| d.map(|d| statefulset_waiting(&d)))
                    }
                    Workload::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), namespace)
                        .get_opt(name)
                        .await
                        .map(|d| d.map(|d| daemonset_waiting(&d))),
                };
                match waiting {
                    Ok(Some(None)) => Outcome::ok("rolled out"),
                    Ok(Some(Some(why))) => Outcome::not(why),
                    Ok(None) => Outcome::not(format!("the {workload} does not exist")),
                    Err(e) => Outcome::not(format!("cannot read it: {e}")),
                }
            }
            Self::ServiceEndpoints { namespace, name } => {
                let services: Api<Service> = Api::namespaced(client.clone(), namespace);
                match services.get_opt(name).await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Outcome::not("the Service does not exist"),
                    Err(e) => return Outcome::not(format!("cannot read it: {e}")),
                }
                let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
                let params =
                    ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
                match slices.list(&params).await {
                    Ok(list) => match ready_endpoints(&list.items) {
                        0 => Outcome::not("no ready endpoint: no pod behind the Service is ready"),
                        n => Outcome::ok(format!("{n} ready endpoints")),
                    },
                    Err(e) => Outcome::not(format!("cannot list its EndpointSlices: {e}")),
                }
            }
            Self::DryRunCreate { object } => dry_run_create(client, object).await,
            Self::LoadBalancerIp {
                namespace,
                name,
                ip,
            } => {
                let api: Api<Service> = Api::namespaced(client.clone(), namespace);
                match api.get_opt(name).await {
                    Ok(Some(svc)) => {
                        let given: Vec<String> = svc
                            .status
                            .and_then(|s| s.load_balancer)
                            .and_then(|lb| lb.ingress)
                            .into_iter()
                            .flatten()
                            .filter_map(|i| i.ip)
                            .collect();
                        if given.iter().any(|g| *g == ip.to_string()) {
                            Outcome::ok(format!("has {ip}"))
                        } else if given.is_empty() {
                            Outcome::not(
                                "no load-balancer address given yet (is MetalLB's pool configured?)",
                            )
                        } else {
                            Outcome::not(format!("given {} instead of {ip}", given.join(", ")))
                        }
                    }
                    Ok(None) => Outcome::not("the Service does not exist"),
                    Err(e) => Outcome::not(format!("cannot read it: {e}")),
                }
            }
            Self::Condition {
                api_version,
                kind,
                namespace,
                name,
                condition,
            } => {
                let gvk = match GroupVersionKind::try_from(&kube::api::TypeMeta {
                    api_version: api_version.clone(),
                    kind: kind.clone(),
                }) {
                    Ok(g) => g,
                    Err(e) => return Outcome::not(e.to_string()),
                };
                let (resource, caps) = match kube::discovery::pinned_kind(client, &gvk).await {
                    Ok(found) => found,
                    Err(e) => return Outcome::not(format!("{kind} is not served: {e}")),
                };
                let api: Api<DynamicObject> = match (&caps.scope, namespace) {
                    (Scope::Namespaced, Some(ns)) => {
                        Api::namespaced_with(client.clone(), ns, &resource)
                    }
                    _ => Api::all_with(client.clone(), &resource),
                };
                match api.get_opt(name).await {
                    Ok(Some(o)) => {
                        let value = serde_json::to_value(&o).unwrap_or_default();
                        match condition_of(&value, condition) {
                            Some((true, _)) => Outcome::ok(format!("{condition}=True")),
                            Some((false, text)) => Outcome::not(text),
                            None => Outcome::not(format!("no {condition} condition yet")),
                        }
                    }
                    Ok(None) => Outcome::not(format!("the {kind} does not exist")),
                    Err(e) => Outcome::not(format!("cannot read it: {e}")),
                }
            }
            Self::PodsReady {
                namespace,
                selector,
                min,
            } => {
                let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
                match api.list(&ListParams::default().labels(selector)).await {
                    Ok(list) => {
                        let ready = list
                            .items
                            .iter()
                            .filter(|p| {
                                p.status
                                    .as_ref()
                                    .and_then(|s| s.conditions.as_ref())
                                    .is_some_and(|c| {
                                        c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                    })
                            })
                            .count();
                        if ready >= *min {
                            Outcome::ok(format!("{ready} Ready"))
                        } else {
                            Outcome::not(format!(
                                "{ready} of {min} Ready ({} pods)",
                                list.items.len()
                            ))
                        }
                    }
                    Err(e) => Outcome::not(format!("cannot list pods: {e}")),
                }
            }
            Self::Http {
                url,
                ca_secret,
                address,
            } => {
                let own;
                let http = if ca_secret.is_some() || address.is_some() {
                    match http_client(client, url, ca_secret.as_ref(), *address).await {
                        Ok(c) => {
                            own = c;
                            &own
                        }
                        Err(why) => return Outcome::not(why),
                    }
                } else {
                    http
                };
                http_health(http, url).await
            }
        }
    }
}

/// A client trusting the CA of `ca_secret` and reaching `url`'s host at `address`.
async fn http_client(
    client: &Client,
    url: &str,
    ca_secret: Option<&(String, String)>,
    address: Option<std::net::SocketAddr>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
    if let Some((namespace, name)) = ca_secret {
        let source = crate::registry::CaSource::Secret {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        let pem = crate::registry::ca_pem(client, &source)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        for cert in
            harbor_client::tls::certificates(pem.as_bytes(), &format!("Secret {namespace}/{name}"))
                .map_err(|e| e.to_string())?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (Some(address), Some(host)) = (
        address,
        reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned)),
    ) {
        builder = builder.resolve(&host, address);
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

/// GET `url`: 2xx, and a health body that says healthy.
async fn http_health(http: &reqwest::Client, url: &str) -> Outcome {
    match http.get(url).send().await {
        Ok(response) if response.status().is_success() => {
            match response.json::<serde_json::Value>().await {
                Ok(body) => match health_body(&body) {
                    Ok(()) => Outcome::ok("healthy"),
                    Err(why) => Outcome::not(why),
                },
                Err(_) => Outcome::ok("answered 2xx"),
            }
        }
        Ok(response) => Outcome::not(format!("answered {}", response.status())),
        Err(e) => Outcome::not(format!("no answer: {e}")),
    }
}

/// A server-side dry-run create of `object`.
async fn dry_run_create(client: &Client, object: &serde_json::Value) -> Outcome {
    let object: DynamicObject = match serde_json::from_value(object.clone()) {
        Ok(o) => o,
        Err(e) => return Outcome::not(format!("not an object: {e}")),
    };
    let Some(types) = object.types.clone() else {
        return Outcome::not("no apiVersion/kind");
    };
    let gvk = match GroupVersionKind::try_from(&types) {
        Ok(g) => g,
        Err(e) => return Outcome::not(e.to_string()),
    };
    let (resource, caps) = match kube::discovery::pinned_kind(client, &gvk).await {
        Ok(found) => found,
        Err(e) if not_found(&e) => {
            return Outcome::not(format!("{} is not served yet", types.kind));
        }
        Err(e) => return Outcome::not(format!("discovery of {}: {e}", types.kind)),
    };
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            &object.namespace().unwrap_or_else(|| "default".into()),
            &resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let params = PostParams {
        dry_run: true,
        field_manager: Some(crate::FIELD_MANAGER.into()),
    };
    match api.create(&params, &object).await {
        Ok(_) => Outcome::ok("accepted"),
        Err(kube::Error::Api(s)) if s.code == 409 => Outcome::ok("admitted (it already exists)"),
        Err(kube::Error::Api(s)) => Outcome::not(format!("refused ({}): {}", s.code, s.message)),
        Err(e) => Outcome::not(format!("no answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::needless_pass_by_value)]
    use super::*;
    use serde_json::json;

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "d", "generation": generation },
            "spec": { "replicas": 2, "selector": {}, "template": {} },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_deployment_is_rolled_out_only_when_every_replica_is_updated_and_available() {
        let full = json!({ "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2 });
        assert_eq!(deployment_waiting(&deployment(3, full.clone())), None);
        assert_eq!(
            deployment_waiting(&deployment(4, full)).unwrap(),
            "generation 4 not observed yet (observed 3)"
        );
        let old = json!({ "observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3 });
        assert_eq!(
            deployment_waiting(&deployment(3, old)).unwrap(),
            "1 old replicas pending termination"
        );
        let unavailable = json!({ "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1 });
        assert_eq!(
            deployment_waiting(&deployment(3, unavailable)).unwrap(),
            "1 of 2 updated replicas available"
        );
        let stuck = json!({ "observedGeneration": 3, "conditions": [{ "type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet d-1 has timed out progressing." }] });
        assert!(
            deployment_waiting(&deployment(3, stuck))
                .unwrap()
                .starts_with("progress deadline exceeded")
        );
    }

    #[test]
    fn a_statefulset_waits_for_its_update_revision_and_a_daemonset_for_every_node() {
        let sts = |status: serde_json::Value| -> StatefulSet {
            serde_json::from_value(json!({ "metadata": { "name": "s", "generation": 1 },
                "spec": { "replicas": 1, "selector": {}, "serviceName": "s", "template": {} }, "status": status }))
            .unwrap()
        };
        let done = json!({ "observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                           "currentRevision": "s-2", "updateRevision": "s-2" });
        assert_eq!(statefulset_waiting(&sts(done)), None);
        let rolling = json!({ "observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 0,
                              "currentRevision": "s-1", "updateRevision": "s-2" });
        assert_eq!(
            statefulset_waiting(&sts(rolling)).unwrap(),
            "0 of 1 replicas at the update revision"
        );
        let ds = |status: serde_json::Value| -> DaemonSet {
            serde_json::from_value(json!({ "metadata": { "name": "d", "generation": 2 },
                "spec": { "selector": {}, "template": {} }, "status": status }))
            .unwrap()
        };
        let partial = json!({ "observedGeneration": 2, "desiredNumberScheduled": 3, "currentNumberScheduled": 3,
            "numberMisscheduled": 0, "numberReady": 3, "updatedNumberScheduled": 3, "numberAvailable": 2 });
        assert_eq!(
            daemonset_waiting(&ds(partial)).unwrap(),
            "2 of 3 nodes available"
        );
    }

    #[test]
    fn harbor_health_names_each_unhealthy_component() {
        assert_eq!(
            health_body(
                &json!({ "status": "healthy", "components": [{ "name": "core", "status": "healthy" }] })
            ),
            Ok(())
        );
        assert_eq!(
            health_body(&json!({ "status": "unhealthy", "components": [
                { "name": "core", "status": "healthy" },
                { "name": "registry", "status": "unhealthy", "error": "dial tcp: i/o timeout" }] })),
            Err("status unhealthy: registry unhealthy (dial tcp: i/o timeout)".into())
        );
        assert_eq!(health_body(&json!({ "ok": true })), Ok(()));
    }

    #[test]
    fn endpoints_count_only_ready_addresses_and_unset_means_ready() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "addressType": "IPv4", "metadata": { "name": "s" },
            "endpoints": [
                { "addresses": ["10.0.0.1"], "conditions": { "ready": false } },
                { "addresses": ["10.0.0.2"] },
                { "addresses": ["10.0.0.3"], "conditions": { "ready": true } },
            ],
        }))
        .unwrap();
        assert_eq!(ready_endpoints(&[slice]), 2);
        assert_eq!(ready_endpoints(&[]), 0);
    }
}
