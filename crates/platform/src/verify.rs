//! End-to-end checks that the platform works, each from the point of view of what uses it:
//! every node `Ready`; a pod resolves a Service name through CoreDNS (a Job); an HTTP
//! request to the ingress address reaches a backend behind an `Ingress`; the certificate
//! the ingress serves for it, issued by the homelab CA's ClusterIssuer, chains to that CA;
//! Harbor's health. Every check runs even when an earlier one failed, and what a check
//! creates lives in one namespace of its own, deleted at the end whatever happened.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::FIELD_MANAGER;

/// What the checks need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySpec {
    /// A small image with `sh`, `nslookup` and `httpd` (busybox), pullable by the nodes.
    pub image: String,
    /// The ingress controller's address.
    pub ingress_ip: Ipv4Addr,
    /// Its HTTP and HTTPS ports (80 and 443).
    pub ports: (u16, u16),
    /// The ingress class.
    pub ingress_class: String,
    /// The ClusterIssuer of the homelab CA.
    pub issuer: String,
    /// The homelab CA's certificate (PEM), which the served certificate must chain to.
    pub ca_pem: Option<String>,
    /// Harbor's URL (its health is `{url}/api/v2.0/health`).
    pub harbor_url: Option<String>,
    /// How long each check may take.
    pub timeout: Duration,
}

impl VerifySpec {
    /// Checks for an ingress at `ingress_ip`, busybox 1.36 as the probe image, two minutes
    /// per check.
    pub fn new(ingress_ip: Ipv4Addr) -> Self {
        Self {
            image: "docker.io/library/busybox:1.36".into(),
            ingress_ip,
            ports: (80, 443),
            ingress_class: "nginx".into(),
            issuer: "homelab-ca".into(),
            ca_pem: None,
            harbor_url: None,
            timeout: Duration::from_secs(120),
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    /// The check.
    pub name: String,
    /// Whether it holds.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
}

fn verified(name: &str, result: Result<String, String>) -> Verified {
    let (ok, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    Verified {
        name: name.to_owned(),
        ok,
        detail,
    }
}

/// Every node `Ready`.
///
/// # Errors
/// The nodes that are not, with their condition's reason.
pub async fn nodes_ready(client: &Client) -> Result<String, String> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list nodes: {e}"))?;
    let not_ready: Vec<String> = nodes
        .items
        .iter()
        .filter_map(|n| {
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
            match ready {
                Some(c) if c.status == "True" => None,
                Some(c) => Some(format!(
                    "{} ({})",
                    n.name_any(),
                    c.reason.clone().unwrap_or_default()
                )),
                None => Some(format!("{} (no Ready condition)", n.name_any())),
            }
        })
        .collect();
    if nodes.items.is_empty() {
        Err("no nodes".into())
    } else if not_ready.is_empty() {
        Ok(format!("{} nodes Ready", nodes.items.len()))
    } else {
        Err(format!("not Ready: {}", not_ready.join(", ")))
    }
}

/// The Job that resolves `kubernetes.default.svc.cluster.local` from a pod.
pub fn dns_job(namespace: &str, image: &str) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": "dns", "namespace": namespace },
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 600,
            "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [{ "name": "nslookup", "image": image,
                    "command": ["nslookup", "kubernetes.default.svc.cluster.local"] }],
            } },
        },
    }))
    .unwrap_or_default()
}

fn job_finished(job: &Job) -> Option<(bool, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| {
            (
                c.type_ == "Complete",
                format!(
                    "{}{}",
                    c.reason.clone().unwrap_or_default(),
                    c.message
                        .as_ref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
            )
        })
}

/// The last state of the pods of `job`, for a failure's detail.
async fn pods_of(client: &Client, namespace: &str, job: &str) -> String {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await;
    match pods {
        Ok(list) if !list.items.is_empty() => list
            .items
            .iter()
            .map(|p| {
                let status = p.status.clone().unwrap_or_default();
                let waiting = status
                    .container_statuses
                    .iter()
                    .flatten()
                    .filter_map(|c| {
                        let state = c.state.as_ref()?;
                        state
                            .waiting
                            .as_ref()
                            .map(|w| w.reason.clone().unwrap_or_default())
                            .or_else(|| {
                                state.terminated.as_ref().map(|t| {
                                    format!(
                                        "exit {} {}",
                                        t.exit_code,
                                        t.reason.clone().unwrap_or_default()
                                    )
                                })
                            })
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "pod {} {}{}{}",
                    p.name_any(),
                    status.phase.unwrap_or_default(),
                    status.message.map(|m| format!(": {m}")).unwrap_or_default(),
                    if waiting.is_empty() {
                        String::new()
                    } else {
                        format!(" ({waiting})")
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Ok(_) => "no pod was made".into(),
        Err(e) => format!("pods: {e}"),
    }
}

/// A pod resolves a Service name: the Job of [`dns_job`] completes.
///
/// # Errors
/// The Job failed or did not finish in time; its pods' last state.
pub async fn dns_from_a_pod(
    client: &Client,
    namespace: &str,
    spec: &VerifySpec,
) -> Result<String, String> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    jobs.create(&PostParams::default(), &dns_job(namespace, &spec.image))
        .await
        .map_err(|e| format!("create the Job: {e}"))?;
    let finished = tokio::time::timeout(
        spec.timeout,
        kube::runtime::wait::await_condition(jobs, "dns", |j: Option<&Job>| {
            j.and_then(job_finished).is_some()
        }),
    )
    .await;
    let job = match finished {
        Ok(Ok(Some(job))) => job,
        Ok(Ok(None)) => return Err("the Job disappeared".into()),
        Ok(Err(e)) => return Err(format!("watch the Job: {e}")),
        Err(_) => {
            return Err(format!(
                "the Job did not finish within {}s: {}",
                spec.timeout.as_secs(),
                pods_of(client, namespace, "dns").await
            ));
        }
    };
    match job_finished(&job) {
        Some((true, _)) => Ok("kubernetes.default.svc.cluster.local resolves from a pod".into()),
        Some((false, why)) => Err(format!(
            "the Job failed ({why}): {}",
            pods_of(client, namespace, "dns").await
        )),
        None => Err("the Job has not finished".into()),
    }
}

/// The backend (a pod serving `token`), its Service and its Ingress for `host`, with a
/// certificate from `spec.issuer` and plain HTTP allowed.
pub fn web_objects(
    namespace: &str,
    host: &str,
    token: &str,
    spec: &VerifySpec,
) -> Vec<serde_json::Value> {
    let labels = json!({ "app.kubernetes.io/name": "homelab-verify-web" });
    vec![
        json!({ "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "web", "namespace": namespace, "labels": labels },
            "spec": { "containers": [{ "name": "httpd", "image": spec.image,
                "command": ["sh", "-c", format!("mkdir -p /www && echo {token} > /www/index.html && exec httpd -f -p 8080 -h /www")],
                "ports": [{ "containerPort": 8080 }],
                "readinessProbe": { "httpGet": { "path": "/", "port": 8080 } } }] } }),
        json!({ "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": "web", "namespace": namespace },
            "spec": { "selector": labels, "ports": [{ "port": 80, "targetPort": 8080 }] } }),
        json!({ "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": { "name": "web", "namespace": namespace, "annotations": {
                "cert-manager.io/cluster-issuer": spec.issuer,
                "nginx.ingress.kubernetes.io/ssl-redirect": "false" } },
            "spec": { "ingressClassName": spec.ingress_class,
                "tls": [{ "hosts": [host], "secretName": "web-tls" }],
                "rules": [{ "host": host, "http": { "paths": [{ "path": "/", "pathType": "Prefix",
                    "backend": { "service": { "name": "web", "port": { "number": 80 } } } }] } }] } }),
    ]
}

/// GET `url` for `host` at `address` (no DNS), trusting only `ca` for https.
async fn fetch(
    host: &str,
    address: SocketAddr,
    url: &str,
    ca: Option<&str>,
) -> Result<String, String> {
    let mut builder = reqwest::Client::builder()
        .resolve(host, address)
        .timeout(Duration::from_secs(10));
    if let Some(pem) = ca {
        builder = builder.tls_built_in_root_certs(false);
        for cert in harbor_client::tls::certificates(pem.as_bytes(), "the homelab CA")
            .map_err(|e| e.to_string())?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url} at {address}: {}", error_chain(&e)))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("GET {url} at {address}: HTTP {status}"))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Waits until the backend pod is Ready.
async fn web_ready(client: &Client, namespace: &str, timeout: Duration) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let ready = kube::runtime::wait::await_condition(pods, "web", |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    tokio::time::timeout(timeout, ready)
        .await
        .map_err(|_| format!("the backend pod is not Ready after {}s", timeout.as_secs()))?
        .map_err(|e| format!("watch the backend pod: {e}"))?;
    Ok(())
}

/// An HTTP request to the ingress address reaches the backend, and HTTPS there serves a
/// certificate that chains to the homelab CA: two results from one backend.
pub async fn ingress_and_tls(
    client: &Client,
    namespace: &str,
    spec: &VerifySpec,
) -> (Result<String, String>, Result<String, String>) {
    let host = format!("{namespace}.verify.homelab.test");
    let token = format!(
        "homelab-verify-{}",
        namespace.rsplit('-').next().unwrap_or_default()
    );
    let objects: Result<Vec<DynamicObject>, String> = web_objects(namespace, &host, &token, spec)
        .into_iter()
        .map(|o| serde_json::from_value(o).map_err(|e| e.to_string()))
        .collect();
    let setup = async {
        let objects = objects?;
        kube_manifest::apply(
            client,
            &objects,
            &kube_manifest::ApplyOptions::new(FIELD_MANAGER),
        )
        .await
        .map_err(|e| e.to_string())?;
        web_ready(client, namespace, spec.timeout).await
    }
    .await;
    if let Err(e) = setup {
        return (Err(e.clone()), Err(e));
    }
    let http = fetch(
        &host,
        SocketAddr::from((spec.ingress_ip, spec.ports.0)),
        &format!("http://{host}:{}/", spec.ports.0),
        None,
    )
    .await
    .and_then(|body| {
        if body.trim() == token {
            Ok(format!(
                "http://{host}/ at {} reaches the backend",
                spec.ingress_ip
            ))
        } else {
            Err(format!(
                "http://{host}/ answered, but not from the backend: {}",
                body.chars().take(80).collect::<String>()
            ))
        }
    });
    // The certificate is issued asynchronously: retry until it chains, or time runs out.
    let Some(ca) = spec.ca_pem.as_deref() else {
        return (
            http,
            Err("the homelab CA is not known: TLS not checked".into()),
        );
    };
    let started = Instant::now();
    let url = format!("https://{host}:{}/", spec.ports.1);
    let tls = loop {
        let attempt = fetch(
            &host,
            SocketAddr::from((spec.ingress_ip, spec.ports.1)),
            &url,
            Some(ca),
        )
        .await;
        match attempt {
            Ok(body) if body.trim() == token => {
                break Ok(format!(
                    "https://{host}/ serves a certificate that chains to the homelab CA"
                ));
            }
            Ok(_) => break Err(format!("{url} answered, but not from the backend")),
            Err(e) if started.elapsed() > spec.timeout => break Err(e),
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    };
    (http, tls)
}

/// Harbor's `/api/v2.0/health`, trusting the homelab CA.
///
/// # Errors
/// Harbor does not answer, or a part is unhealthy.
pub async fn harbor_health(url: &str, ca: Option<&str>) -> Result<String, String> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(pem) = ca {
        for cert in harbor_client::tls::certificates(pem.as_bytes(), "the homelab CA")
            .map_err(|e| e.to_string())?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let health = format!("{}/api/v2.0/health", url.trim_end_matches('/'));
    let body: serde_json::Value = client
        .get(&health)
        .send()
        .await
        .map_err(|e| format!("GET {health}: {}", error_chain(&e)))?
        .json()
        .await
        .map_err(|e| format!("GET {health}: {e}"))?;
    crate::checks::health_body(&body).map(|()| format!("{health}: every part healthy"))
}

/// Runs every check (each even when an earlier one failed) in a namespace of their own,
/// `homelab-verify-<seconds>`, deleted at the end.
pub async fn verify(client: &Client, spec: &VerifySpec) -> Vec<Verified> {
    let mut out = vec![verified("nodes Ready", nodes_ready(client).await)];
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let namespace = format!("homelab-verify-{seconds}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let created = namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(namespace.clone()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "homelab".to_owned(),
                    )])),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await;
    if let Err(e) = created {
        let why = format!("create namespace {namespace}: {e}");
        for name in ["DNS from a pod", "ingress HTTP", "ingress TLS chain"] {
            out.push(verified(name, Err(why.clone())));
        }
    } else {
        let (dns, (http, tls)) = tokio::join!(
            dns_from_a_pod(client, &namespace, spec),
            ingress_and_tls(client, &namespace, spec)
        );
        out.push(verified("DNS from a pod", dns));
        out.push(verified("ingress HTTP", http));
        out.push(verified("ingress TLS chain", tls));
        let _ = namespaces
            .delete(&namespace, &DeleteParams::background())
            .await;
    }
    if let Some(url) = &spec.harbor_url {
        out.push(verified(
            "Harbor health",
            harbor_health(url, spec.ca_pem.as_deref()).await,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_probe_objects_are_what_the_api_expects() {
        let spec = VerifySpec::new(Ipv4Addr::new(192, 168, 122, 100));
        let job = dns_job("ns", &spec.image);
        assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(0));
        let objects = web_objects("ns", "ns.verify.homelab.test", "tok", &spec);
        assert_eq!(
            objects[2]["spec"]["tls"][0]["hosts"][0],
            "ns.verify.homelab.test"
        );
        assert_eq!(
            objects[2]["metadata"]["annotations"]["cert-manager.io/cluster-issuer"],
            "homelab-ca"
        );
        let command = objects[0]["spec"]["containers"][0]["command"][2]
            .as_str()
            .unwrap();
        assert!(command.contains("echo tok >"), "{command}");
    }
}
