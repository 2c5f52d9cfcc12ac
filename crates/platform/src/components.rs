//! The platform's components and their deep readiness checks: one table, built from the few
//! values of the lab that the checks depend on.

use std::net::Ipv4Addr;

use serde::Serialize;
use serde_json::json;

use crate::checks::{Check, Workload};

/// One component of the platform: what Argo CD deploys in one Application, in its wave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    /// Name (the Application's, and `gitops::scaffold::WAVES`' key).
    pub name: String,
    /// Argo CD sync wave.
    pub wave: i64,
    /// What must hold for it to work, checked in order.
    pub checks: Vec<Check>,
}

/// What the readiness table depends on.
///
/// ```
/// use platform::components::{PlatformSpec, components};
///
/// let spec = PlatformSpec::new(
///     "192.168.122.100".parse()?,
///     "192.168.122.102".parse()?,
///     "https://harbor.homelab.lan",
/// )
/// .external_secrets(true);
/// let all = components(&spec);
/// // In wave order: storage and load balancing first, what needs them after.
/// assert_eq!(all[0].name, "local-path");
/// assert!(all.windows(2).all(|w| w[0].wave <= w[1].wave));
/// assert!(all.iter().any(|c| c.name == "external-secrets"));
/// assert!(all.iter().all(|c| c.name != "runners")); // not asked for
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlatformSpec {
    /// The ingress controller's fixed address.
    pub ingress_ip: Ipv4Addr,
    /// Argo CD's fixed address.
    pub argocd_ip: Ipv4Addr,
    /// Harbor's URL (its health is `{url}/api/v2.0/health`).
    pub harbor_url: String,
    /// Harbor's load-balancer address and port, where its URL's host is reached.
    pub harbor_address: Option<std::net::SocketAddr>,
    /// Whether External Secrets is deployed.
    pub external_secrets: bool,
    /// External Secrets' configuration (the `ClusterSecretStore`s and `ExternalSecret`s the
    /// GitOps repository holds): each must become `Ready` (its secret synced).
    pub secret_objects: Vec<serde_json::Value>,
    /// Whether runner scale sets are deployed (their listeners must run).
    pub runners: bool,
}

impl PlatformSpec {
    /// The table for a lab with these addresses and Harbor URL; no External Secrets, no
    /// runners, Harbor's host reached through DNS.
    pub fn new(ingress_ip: Ipv4Addr, argocd_ip: Ipv4Addr, harbor_url: impl Into<String>) -> Self {
        Self {
            ingress_ip,
            argocd_ip,
            harbor_url: harbor_url.into(),
            harbor_address: None,
            external_secrets: false,
            secret_objects: Vec::new(),
            runners: false,
        }
    }

    /// Harbor's host reached at `address` (its load-balancer address and port).
    #[must_use]
    pub fn harbor_address(mut self, address: Option<std::net::SocketAddr>) -> Self {
        self.harbor_address = address;
        self
    }

    /// With External Secrets or without.
    #[must_use]
    pub fn external_secrets(mut self, deployed: bool) -> Self {
        self.external_secrets = deployed;
        self
    }

    /// External Secrets' objects that must become `Ready`.
    #[must_use]
    pub fn secret_objects(mut self, objects: Vec<serde_json::Value>) -> Self {
        self.secret_objects = objects;
        self
    }

    /// With runner scale sets or without.
    #[must_use]
    pub fn runners(mut self, deployed: bool) -> Self {
        self.runners = deployed;
        self
    }
}

fn crd(name: &str) -> Check {
    Check::CrdEstablished { name: name.into() }
}

fn rolled(workload: Workload, namespace: &str, name: &str) -> Check {
    Check::RolledOut {
        workload,
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn endpoints(namespace: &str, name: &str) -> Check {
    Check::ServiceEndpoints {
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// The name every object a readiness dry run creates has (never stored).
pub const PROBE_NAME: &str = "homelab-readiness-probe";

/// The components in wave order, each with its checks (names as the charts the GitOps
/// repository pins create them, release name = chart name).
#[allow(clippy::too_many_lines, reason = "the table, component by component")]
pub fn components(spec: &PlatformSpec) -> Vec<Component> {
    use Workload::{DaemonSet, Deployment, StatefulSet};
    let wave = gitops::scaffold::wave;
    let mut all = vec![
        Component {
            name: "local-path".into(),
            wave: wave("local-path"),
            checks: vec![rolled(
                Deployment,
                "local-path-storage",
                "local-path-provisioner",
            )],
        },
        Component {
            name: "metallb".into(),
            wave: wave("metallb"),
            checks: vec![
                crd("ipaddresspools.metallb.io"),
                crd("l2advertisements.metallb.io"),
                rolled(Deployment, "metallb-system", "metallb-controller"),
                rolled(DaemonSet, "metallb-system", "metallb-speaker"),
                endpoints("metallb-system", "metallb-webhook-service"),
                Check::DryRunCreate {
                    object: json!({ "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                        "metadata": { "name": PROBE_NAME, "namespace": "metallb-system" },
                        "spec": { "addresses": ["192.0.2.0/30"], "autoAssign": false } }),
                },
            ],
        },
        Component {
            name: "ingress-nginx".into(),
            wave: wave("ingress-nginx"),
            checks: vec![
                rolled(Deployment, "ingress-nginx", "ingress-nginx-controller"),
                endpoints("ingress-nginx", "ingress-nginx-controller-admission"),
                Check::DryRunCreate {
                    object: json!({ "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                        "metadata": { "name": PROBE_NAME, "namespace": "ingress-nginx" },
                        "spec": { "ingressClassName": "nginx", "rules": [{ "host": "probe.homelab.invalid",
                            "http": { "paths": [{ "path": "/", "pathType": "Prefix",
                                "backend": { "service": { "name": "probe", "port": { "number": 80 } } } }] } }] } }),
                },
                // MetalLB's pool (the metallb-config wave) at work: the fixed address given.
                Check::LoadBalancerIp {
                    namespace: "ingress-nginx".into(),
                    name: "ingress-nginx-controller".into(),
                    ip: spec.ingress_ip,
                },
            ],
        },
        Component {
            name: "cert-manager".into(),
            wave: wave("cert-manager"),
            checks: vec![
                crd("certificates.cert-manager.io"),
                crd("clusterissuers.cert-manager.io"),
                rolled(Deployment, "cert-manager", "cert-manager"),
                rolled(Deployment, "cert-manager", "cert-manager-cainjector"),
                rolled(Deployment, "cert-manager", "cert-manager-webhook"),
                endpoints("cert-manager", "cert-manager-webhook"),
                Check::DryRunCreate {
                    object: json!({ "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                        "metadata": { "name": PROBE_NAME, "namespace": "cert-manager" },
                        "spec": { "secretName": PROBE_NAME, "dnsNames": ["probe.homelab.invalid"],
                                  "issuerRef": { "name": "homelab-ca", "kind": "ClusterIssuer" } } }),
                },
            ],
        },
        Component {
            name: "issuers".into(),
            wave: wave("issuers"),
            checks: ["selfsigned", "homelab-ca"]
                .iter()
                .map(|name| Check::Condition {
                    api_version: "cert-manager.io/v1".into(),
                    kind: "ClusterIssuer".into(),
                    namespace: None,
                    name: (*name).into(),
                    condition: "Ready".into(),
                })
                .chain([Check::Condition {
                    api_version: "cert-manager.io/v1".into(),
                    kind: "Certificate".into(),
                    namespace: Some("cert-manager".into()),
                    name: "homelab-ca".into(),
                    condition: "Ready".into(),
                }])
                .collect(),
        },
        Component {
            name: "argocd-config".into(),
            wave: wave("argocd-config"),
            checks: vec![
                rolled(Deployment, "argocd", "argocd-server"),
                rolled(Deployment, "argocd", "argocd-repo-server"),
                rolled(StatefulSet, "argocd", "argocd-application-controller"),
                Check::LoadBalancerIp {
                    namespace: "argocd".into(),
                    name: "argocd-server-lb".into(),
                    ip: spec.argocd_ip,
                },
            ],
        },
        Component {
            name: "harbor".into(),
            wave: wave("harbor"),
            checks: vec![Check::Http {
                url: format!("{}/api/v2.0/health", spec.harbor_url.trim_end_matches('/')),
                // Harbor's certificate is the homelab CA's; its name may be known only to
                // the lab: reached at its fixed address.
                ca_secret: Some((
                    crate::registry::CA_SECRET.0.into(),
                    crate::registry::CA_SECRET.1.into(),
                )),
                address: spec.harbor_address,
            }],
        },
        Component {
            name: "actions-runner-controller".into(),
            wave: wave("actions-runner-controller"),
            checks: vec![Check::PodsReady {
                namespace: gitops::scaffold::ARC_NAMESPACE.into(),
                selector: "app.kubernetes.io/part-of=gha-rs-controller".into(),
                min: 1,
            }],
        },
    ];
    if spec.external_secrets {
        all.push(Component {
            name: "external-secrets".into(),
            wave: wave("external-secrets"),
            checks: vec![
                crd("externalsecrets.external-secrets.io"),
                crd("clustersecretstores.external-secrets.io"),
                rolled(Deployment, "external-secrets", "external-secrets"),
                rolled(Deployment, "external-secrets", "external-secrets-webhook"),
                rolled(Deployment, "external-secrets", "external-secrets-cert-controller"),
                endpoints("external-secrets", "external-secrets-webhook"),
                Check::DryRunCreate {
                    object: json!({ "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
                        "metadata": { "name": PROBE_NAME },
                        "spec": { "provider": { "fake": { "data": [] } } } }),
                },
            ],
        });
    }
    if spec.external_secrets && !spec.secret_objects.is_empty() {
        all.push(Component {
            name: "external-secrets-config".into(),
            wave: wave("external-secrets-config"),
            checks: spec
                .secret_objects
                .iter()
                .filter_map(|o| {
                    Some(Check::Condition {
                        api_version: o["apiVersion"].as_str()?.to_owned(),
                        kind: o["kind"].as_str()?.to_owned(),
                        namespace: o["metadata"]["namespace"].as_str().map(str::to_owned),
                        name: o["metadata"]["name"].as_str()?.to_owned(),
                        condition: "Ready".into(),
                    })
                })
                .collect(),
        });
    }
    if spec.runners {
        all.push(Component {
            name: "runners".into(),
            wave: wave("runners"),
            checks: vec![Check::PodsReady {
                namespace: gitops::scaffold::ARC_NAMESPACE.into(),
                selector: "app.kubernetes.io/component=runner-scale-set-listener".into(),
                min: 1,
            }],
        });
    }
    all.retain(|c| !c.checks.is_empty());
    all.sort_by_key(|c| c.wave);
    all
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(external_secrets: bool, runners: bool) -> PlatformSpec {
        PlatformSpec::new(
            Ipv4Addr::new(192, 168, 122, 100),
            Ipv4Addr::new(192, 168, 122, 102),
            "https://192.168.122.101/",
        )
        .external_secrets(external_secrets)
        .runners(runners)
    }

    #[test]
    fn each_external_secrets_object_must_become_ready_in_the_wave_after_the_operator() {
        let mut s = spec(true, false);
        s.secret_objects = vec![
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
                    "metadata": { "name": "pulumi-esc" } }),
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                    "metadata": { "name": "harbor-admin", "namespace": "harbor" } }),
        ];
        let all = components(&s);
        let config = all
            .iter()
            .find(|c| c.name == "external-secrets-config")
            .unwrap();
        let operator = all.iter().find(|c| c.name == "external-secrets").unwrap();
        assert_eq!(config.wave, operator.wave + 1);
        let checks: Vec<String> = config.checks.iter().map(ToString::to_string).collect();
        assert_eq!(checks.len(), 2);
        assert!(checks[1].contains("harbor/harbor-admin"), "{checks:?}");
        assert!(checks[1].contains("Ready"), "{checks:?}");
        // Without External Secrets, no such component.
        s.external_secrets = false;
        assert!(
            components(&s)
                .iter()
                .all(|c| c.name != "external-secrets-config")
        );
    }

    #[test]
    fn components_follow_the_waves_of_the_gitops_repository() {
        let all = components(&spec(true, true));
        let waves: Vec<i64> = all.iter().map(|c| c.wave).collect();
        let mut sorted = waves.clone();
        sorted.sort_unstable();
        assert_eq!(waves, sorted);
        for c in &all {
            assert!(
                gitops::scaffold::WAVES
                    .iter()
                    .any(|(name, _)| *name == c.name),
                "{} is not a component of the GitOps repository",
                c.name
            );
            assert!(!c.checks.is_empty(), "{} has no check", c.name);
        }
        let harbor = all.iter().find(|c| c.name == "harbor").unwrap();
        assert_eq!(
            harbor.checks[0].to_string(),
            "GET https://192.168.122.101/api/v2.0/health healthy"
        );
    }

    #[test]
    fn optional_components_are_checked_only_when_deployed() {
        let names = |s: &PlatformSpec| -> Vec<String> {
            components(s).into_iter().map(|c| c.name).collect()
        };
        assert!(!names(&spec(false, false)).contains(&"external-secrets".to_owned()));
        assert!(!names(&spec(false, false)).contains(&"runners".to_owned()));
        assert!(names(&spec(true, true)).contains(&"external-secrets".to_owned()));
        assert!(names(&spec(true, true)).contains(&"runners".to_owned()));
    }

    #[test]
    fn every_webhook_backed_component_proves_its_webhook_by_a_dry_run_after_its_endpoints() {
        for c in components(&spec(true, true)) {
            let endpoint = c
                .checks
                .iter()
                .position(|k| matches!(k, Check::ServiceEndpoints { .. }));
            let dry_run = c
                .checks
                .iter()
                .position(|k| matches!(k, Check::DryRunCreate { .. }));
            if let Some(e) = endpoint {
                assert!(dry_run.is_some_and(|d| d > e), "{}", c.name);
            }
        }
    }
}
