//! Application templates: whole applications as Kubernetes objects built from
//! `k8s-openapi`'s types (never text templates), written into an application's directory of
//! the GitOps repository by [`crate::scaffold::add_app_from`].
//!
//! [`WebPostgres`] is a web application in two tiers, each in its own namespace: the `app`
//! tier (`<name>`) holds a frontend (2 replicas, scaled 2–4) and a backend (1, scaled 1–3)
//! behind an NGINX Ingress; the `db` tier (`<name>-db`) holds PostgreSQL as a StatefulSet
//! with its volume, and its daily `pg_dump` kept 7 days. Every workload has requests and
//! limits; `NetworkPolicies` deny all ingress in both namespaces, then allow exactly
//! frontend ← ingress controller, backend ← frontend, database ← backend (and its backup),
//! and the metrics ports ← the monitoring namespace.
//!
//! With [`WebPostgres::with_monitoring`] (the platform's `features.monitoring`), Prometheus
//! scrapes the backend's `/metrics` and the database's exporter through two
//! [`ServiceMonitor`]s, and a dashboard ConfigMap (request rate, database connections)
//! reaches Grafana through its dashboard sidecar.
//!
//! The database login is never in the repository: both tiers read the Secret
//! [`WebPostgres::secret`] (`username`, `password`, `database`), which the secrets layer
//! delivers (or which is created once in each namespace).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Namespace,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SecretKeySelector, Service, ServiceAccount,
    ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

mod ci;
pub use ci::{
    Cicd, HOOK_PATH, LISTENER_PORT, build_script, clone_script, image_repository, promote_script,
    webhook_script,
};

/// The label every object of a template carries: its tier (`frontend`, `backend`,
/// `database`, `backup`).
pub const TIER: &str = "app.kubernetes.io/component";
/// The label naming the application.
pub const PART_OF: &str = "app.kubernetes.io/part-of";
/// The label Kubernetes puts on every namespace with its name.
pub const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// The frontend's port (the Node adapter of `SvelteKit` listens on 3000).
pub const FRONTEND_PORT: i32 = 3000;
/// The backend's port; it also serves `/metrics` there.
pub const BACKEND_PORT: i32 = 8080;
/// PostgreSQL's port.
pub const POSTGRES_PORT: i32 = 5432;
/// The PostgreSQL exporter's port (its sidecar).
pub const EXPORTER_PORT: i32 = 9187;

/// Where the database login (the Secret [`WebPostgres::secret`] in both namespaces) comes
/// from. It is never written into the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// Generated once in the cluster: a Job (sync wave -1, with a ServiceAccount that may
    /// only read and create Secrets in the application's two namespaces) makes a random
    /// password in the database's namespace and copies the Secret to the app tier's. A
    /// Secret that exists is kept.
    Generated {
        /// An image with `kubectl` and a shell.
        kubectl_image: String,
    },
    /// Read from Pulumi ESC by External Secrets: the object at `path` (fields `username`,
    /// `password`, `database`) through the `ClusterSecretStore` `store`, one
    /// `ExternalSecret` per namespace.
    Esc {
        /// The `ClusterSecretStore`.
        store: String,
        /// The ESC path of the object (`apps.shop.postgres`).
        path: String,
    },
}

/// The name of the Job (and its account) that generates the login.
pub const CREDENTIALS_JOB: &str = "postgres-credentials";

/// A web application with a PostgreSQL database (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebPostgres {
    /// The application's name: the app tier's namespace, `<name>-db` the database's.
    pub name: String,
    /// The host name the Ingress answers for.
    pub host: String,
    /// The frontend's image.
    pub frontend_image: String,
    /// The backend's image.
    pub backend_image: String,
    /// PostgreSQL's image (its `pg_dump` and `psql` also back up and restore).
    pub postgres_image: String,
    /// The PostgreSQL exporter's image (a sidecar of the database).
    pub exporter_image: String,
    /// The `IngressClass` (`nginx`).
    pub ingress_class: String,
    /// Where the ingress controller runs (allowed to reach the frontend).
    pub ingress_namespace: String,
    /// Where Prometheus runs (allowed to scrape the metrics ports).
    pub monitoring_namespace: String,
    /// The `StorageClass` of the database's and the dumps' volumes (`local-path`).
    pub storage_class: String,
    /// When the database is dumped (cron, UTC).
    pub backup_schedule: String,
    /// Dumps kept (one a day: 7 days).
    pub backup_keep: u32,
    /// Where the database login comes from.
    pub credentials: Credentials,
    /// Prometheus scrapes the app (`ServiceMonitor`s) and Grafana shows its dashboard: needs
    /// the Prometheus operator's CRDs (`features.monitoring`).
    pub monitoring: bool,
    /// Built and delivered by Tekton from its source repository (`features.cicd`): see
    /// [`WebPostgres::with_cicd`].
    pub cicd: Option<Cicd>,
}

/// A Prometheus operator `ServiceMonitor` (`monitoring.coreos.com/v1`): the fields homelab
/// writes, named as in the operator's CRD (`spec.selector`, `spec.namespaceSelector`,
/// `spec.endpoints[].port|path|interval`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitor {
    /// `monitoring.coreos.com/v1`.
    pub api_version: String,
    /// `ServiceMonitor`.
    pub kind: String,
    /// Name, namespace, labels.
    pub metadata: ObjectMeta,
    /// What to scrape.
    pub spec: ServiceMonitorSpec,
}

/// A [`ServiceMonitor`]'s spec.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// The Services to scrape, by label.
    pub selector: LabelSelector,
    /// The namespaces those Services are in (`matchNames`); the monitor's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,
    /// One per port scraped.
    pub endpoints: Vec<ScrapeEndpoint>,
}

/// A [`ServiceMonitor`]'s `namespaceSelector`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// The namespaces, by name.
    #[serde(default)]
    pub match_names: Vec<String>,
}

/// One scraped port of a [`ServiceMonitor`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScrapeEndpoint {
    /// The Service port's name.
    pub port: String,
    /// The HTTP path (`/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How often (`30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

impl WebPostgres {
    /// The template for application `name` answering on `host`, with the platform's
    /// defaults (NGINX in `ingress-nginx`, Prometheus in `monitoring`, `local-path`, a daily
    /// dump at 02:00 kept 7 days) and the application's images at version 0.1.0 in
    /// `registry.invalid` until [`WebPostgres::images_in`] names the registry.
    pub fn new(name: &str, host: &str) -> Self {
        Self {
            name: name.to_owned(),
            host: host.to_owned(),
            frontend_image: format!("registry.invalid/{name}-frontend:0.1.0"),
            backend_image: format!("registry.invalid/{name}-backend:0.1.0"),
            postgres_image: "docker.io/library/postgres:16.6".into(),
            exporter_image: "quay.io/prometheuscommunity/postgres-exporter:v0.16.0".into(),
            ingress_class: "nginx".into(),
            ingress_namespace: "ingress-nginx".into(),
            monitoring_namespace: "monitoring".into(),
            storage_class: "local-path".into(),
            backup_schedule: "0 2 * * *".into(),
            backup_keep: 7,
            credentials: Credentials::Generated {
                kubectl_image: "docker.io/alpine/k8s:1.33.5".into(),
            },
            monitoring: false,
            cicd: None,
        }
    }

    /// The same, scraped by Prometheus and with a Grafana dashboard when `on`.
    #[must_use]
    pub fn with_monitoring(mut self, on: bool) -> Self {
        self.monitoring = on;
        self
    }

    /// The same, with the login from `credentials`.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// The application's images in `repository` (`harbor.homelab.lan/homelab`):
    /// `<repository>/<name>-frontend:0.1.0` and `-backend`, the tags a first build pushes.
    #[must_use]
    pub fn images_in(mut self, repository: &str) -> Self {
        let repository = repository.trim_end_matches('/');
        self.frontend_image = format!("{repository}/{}-frontend:0.1.0", self.name);
        self.backend_image = format!("{repository}/{}-backend:0.1.0", self.name);
        self
    }

    /// The app tier's namespace.
    pub fn app_namespace(&self) -> String {
        self.name.clone()
    }

    /// The database tier's namespace.
    pub fn db_namespace(&self) -> String {
        format!("{}-db", self.name)
    }

    /// The Secret (in both namespaces) with the database login: `username`, `password`,
    /// `database`.
    pub fn secret(&self) -> String {
        format!("{}-postgres", self.name)
    }

    /// The database's Service DNS name, as the backend reaches it.
    pub fn db_host(&self) -> String {
        format!("postgres.{}.svc", self.db_namespace())
    }

    /// The files of the application's directory, relative to it, each with its objects in
    /// order; `kustomization.yaml` lists them.
    pub fn files(&self) -> Vec<(String, Vec<Value>)> {
        let mut namespaces = vec![
            to_value(&self.namespace(&self.app_namespace(), "app")),
            to_value(&self.namespace(&self.db_namespace(), "db")),
        ];
        if self.cicd.is_some() {
            namespaces.push(to_value(&self.namespace(&self.ci_namespace(), "ci")));
        }
        let mut files = vec![
            ("namespaces.yaml".to_owned(), namespaces),
            ("db/credentials.yaml".to_owned(), self.credentials()),
            ("app/frontend.yaml".to_owned(), self.frontend()),
            ("app/backend.yaml".to_owned(), self.backend()),
            (
                "app/ingress.yaml".to_owned(),
                vec![to_value(&self.ingress())],
            ),
            (
                "app/network-policies.yaml".to_owned(),
                self.app_policies().iter().map(to_value).collect(),
            ),
            ("db/postgres.yaml".to_owned(), self.postgres()),
            ("db/backup.yaml".to_owned(), self.backup()),
            (
                "db/network-policies.yaml".to_owned(),
                self.db_policies().iter().map(to_value).collect(),
            ),
            (
                "db/restore-job.yaml.example".to_owned(),
                vec![to_value(&self.restore_job("DUMP"))],
            ),
        ];
        if self.monitoring {
            files.push((
                "app/monitoring.yaml".to_owned(),
                vec![
                    to_value(&self.service_monitor("backend", &self.app_namespace(), "http")),
                    to_value(&self.dashboard()),
                ],
            ));
            files.push((
                "db/monitoring.yaml".to_owned(),
                vec![to_value(&self.service_monitor(
                    "database",
                    &self.db_namespace(),
                    "metrics",
                ))],
            ));
        }
        files.extend(self.ci_files());
        files
    }

    /// The `ServiceMonitor` of `tier`'s Service in `namespace`, scraping `port` every 30 s.
    pub fn service_monitor(&self, tier: &str, namespace: &str, port: &str) -> ServiceMonitor {
        ServiceMonitor {
            api_version: "monitoring.coreos.com/v1".into(),
            kind: "ServiceMonitor".into(),
            metadata: self.meta(&format!("{}-{tier}", self.name), namespace, tier),
            spec: ServiceMonitorSpec {
                selector: self.selector(tier),
                namespace_selector: Some(NamespaceSelector {
                    match_names: vec![namespace.to_owned()],
                }),
                endpoints: vec![ScrapeEndpoint {
                    port: port.into(),
                    path: Some("/metrics".into()),
                    interval: Some("30s".into()),
                }],
            },
        }
    }

    /// The application's Grafana dashboard: a ConfigMap with Grafana's dashboard label
    /// ([`crate::scaffold::GRAFANA_DASHBOARD_LABEL`]), in the app tier's namespace, whose
    /// panels read the backend's request rate and the database's connections and size
    /// (`http_requests_total`, the exporter's `pg_stat_database_numbackends` and
    /// `pg_database_size_bytes`).
    pub fn dashboard(&self) -> ConfigMap {
        let app_ns = self.app_namespace();
        let db_ns = self.db_namespace();
        let panel = |id: u32, title: &str, expr: String, y: u32| {
            serde_json::json!({
                "id": id, "type": "timeseries", "title": title,
                "datasource": { "type": "prometheus", "uid": "prometheus" },
                "gridPos": { "h": 8, "w": 24, "x": 0, "y": y },
                "targets": [{ "refId": "A", "expr": expr }],
            })
        };
        let dashboard = serde_json::json!({
            "uid": format!("homelab-{}", self.name),
            "title": format!("{} (web-postgres)", self.name),
            "schemaVersion": 39,
            "time": { "from": "now-6h", "to": "now" },
            "panels": [
                panel(1, "Backend requests per second",
                      format!("sum(rate(http_requests_total{{namespace=\"{app_ns}\"}}[5m]))"), 0),
                panel(2, "Database connections",
                      format!("sum(pg_stat_database_numbackends{{namespace=\"{db_ns}\"}})"), 8),
                panel(3, "Database size",
                      format!("sum(pg_database_size_bytes{{namespace=\"{db_ns}\"}})"), 16),
            ],
        });
        let mut metadata = self.meta(&format!("{}-dashboard", self.name), &app_ns, "backend");
        let (label, value) = crate::scaffold::GRAFANA_DASHBOARD_LABEL;
        metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(label.to_owned(), value.to_owned());
        ConfigMap {
            metadata,
            data: Some(BTreeMap::from([(
                format!("{}.json", self.name),
                serde_json::to_string_pretty(&dashboard).unwrap_or_default(),
            )])),
            ..ConfigMap::default()
        }
    }

    fn labels(&self, tier: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/name".to_owned(),
                format!("{}-{tier}", self.name),
            ),
            (TIER.to_owned(), tier.to_owned()),
            (PART_OF.to_owned(), self.name.clone()),
        ])
    }

    fn meta(&self, name: &str, namespace: &str, tier: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(self.labels(tier)),
            ..ObjectMeta::default()
        }
    }

    fn selector(&self, tier: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([
                (TIER.to_owned(), tier.to_owned()),
                (PART_OF.to_owned(), self.name.clone()),
            ])),
            ..LabelSelector::default()
        }
    }

    fn namespace(&self, name: &str, tier: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                annotations: Some(wave(-3)),
                labels: Some(BTreeMap::from([
                    (PART_OF.to_owned(), self.name.clone()),
                    ("homelab.dev/tier".to_owned(), tier.to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }

    fn secret_env(&self, name: &str, key: &str) -> EnvVar {
        EnvVar {
            name: name.to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: self.secret(),
                    key: key.to_owned(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }
    }

    /// A web tier: its `Deployment`, `Service` and `HorizontalPodAutoscaler`.
    fn web_tier(
        &self,
        tier: &str,
        image: &str,
        port: i32,
        (min, max): (i32, i32),
        ready_path: &str,
        env: Vec<EnvVar>,
    ) -> Vec<Value> {
        let ns = self.app_namespace();
        let name = format!("{}-{tier}", self.name);
        let http = |path: &str, period: i32| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.to_owned()),
                port: IntOrString::Int(port),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(period),
            ..Probe::default()
        };
        let container = Container {
            name: tier.to_owned(),
            image: Some(image.to_owned()),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: port,
                ..ContainerPort::default()
            }]),
            env: (!env.is_empty()).then_some(env),
            resources: Some(resources(("200m", "256Mi"), ("500m", "512Mi"))),
            readiness_probe: Some(http(ready_path, 10)),
            liveness_probe: Some(Probe {
                initial_delay_seconds: Some(10),
                ..http(ready_path, 20)
            }),
            ..Container::default()
        };
        let deployment = Deployment {
            metadata: self.meta(&name, &ns, tier),
            spec: Some(DeploymentSpec {
                replicas: Some(min),
                selector: self.selector(tier),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(self.labels(tier)),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        };
        let service = Service {
            metadata: self.meta(&name, &ns, tier),
            spec: Some(ServiceSpec {
                selector: self.selector(tier).match_labels,
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port,
                    target_port: Some(IntOrString::String("http".into())),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        let hpa = HorizontalPodAutoscaler {
            metadata: self.meta(&name, &ns, tier),
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: name.clone(),
                },
                min_replicas: Some(min),
                max_replicas: max,
                metrics: Some(vec![MetricSpec {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricSource {
                        name: "cpu".into(),
                        target: MetricTarget {
                            type_: "Utilization".into(),
                            average_utilization: Some(70),
                            ..MetricTarget::default()
                        },
                    }),
                    ..MetricSpec::default()
                }]),
                ..HorizontalPodAutoscalerSpec::default()
            }),
            ..HorizontalPodAutoscaler::default()
        };
        vec![to_value(&deployment), to_value(&service), to_value(&hpa)]
    }

    fn frontend(&self) -> Vec<Value> {
        let backend = format!("http://{}-backend:{BACKEND_PORT}", self.name);
        self.web_tier(
            "frontend",
            &self.frontend_image,
            FRONTEND_PORT,
            (2, 4),
            "/",
            vec![
                EnvVar {
                    name: "PUBLIC_ORIGIN".into(),
                    value: Some(format!("https://{}", self.host)),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "BACKEND_URL".into(),
                    value: Some(backend),
                    ..EnvVar::default()
                },
            ],
        )
    }

    fn backend(&self) -> Vec<Value> {
        self.web_tier(
            "backend",
            &self.backend_image,
            BACKEND_PORT,
            (1, 3),
            "/healthz",
            vec![
                EnvVar {
                    name: "PGHOST".into(),
                    value: Some(self.db_host()),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "PGPORT".into(),
                    value: Some(POSTGRES_PORT.to_string()),
                    ..EnvVar::default()
                },
                self.secret_env("PGUSER", "username"),
                self.secret_env("PGPASSWORD", "password"),
                self.secret_env("PGDATABASE", "database"),
            ],
        )
    }

    fn ingress(&self) -> Ingress {
        self.host_ingress(
            self.meta(&self.name, &self.app_namespace(), "frontend"),
            "/",
            format!("{}-frontend", self.name),
            ServiceBackendPort {
                name: Some("http".into()),
                ..ServiceBackendPort::default()
            },
        )
    }

    /// An Ingress of the app's host and class: `path` (a prefix) to `service`'s `port`.
    fn host_ingress(
        &self,
        metadata: ObjectMeta,
        path: &str,
        service: String,
        port: ServiceBackendPort,
    ) -> Ingress {
        Ingress {
            metadata,
            spec: Some(IngressSpec {
                ingress_class_name: Some(self.ingress_class.clone()),
                rules: Some(vec![IngressRule {
                    host: Some(self.host.clone()),
                    http: Some(HTTPIngressRuleValue {
                        paths: vec![HTTPIngressPath {
                            path: Some(path.into()),
                            path_type: "Prefix".into(),
                            backend: IngressBackend {
                                service: Some(IngressServiceBackend {
                                    name: service,
                                    port: Some(port),
                                }),
                                ..IngressBackend::default()
                            },
                        }],
                    }),
                }]),
                ..IngressSpec::default()
            }),
            ..Ingress::default()
        }
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one StatefulSet with its two containers"
    )]
    fn postgres(&self) -> Vec<Value> {
        let ns = self.db_namespace();
        let tcp = |port: i32, period: i32| Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(port),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(period),
            ..Probe::default()
        };
        let postgres = Container {
            name: "postgres".into(),
            image: Some(self.postgres_image.clone()),
            ports: Some(vec![ContainerPort {
                name: Some("postgres".into()),
                container_port: POSTGRES_PORT,
                ..ContainerPort::default()
            }]),
            env: Some(vec![
                self.secret_env("POSTGRES_USER", "username"),
                self.secret_env("POSTGRES_PASSWORD", "password"),
                self.secret_env("POSTGRES_DB", "database"),
                EnvVar {
                    name: "PGDATA".into(),
                    value: Some("/var/lib/postgresql/data/pgdata".into()),
                    ..EnvVar::default()
                },
            ]),
            resources: Some(resources(("500m", "512Mi"), ("1000m", "1Gi"))),
            readiness_probe: Some(Probe {
                exec: Some(k8s_openapi::api::core::v1::ExecAction {
                    command: Some(
                        [
                            "sh",
                            "-c",
                            "pg_isready -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\"",
                        ]
                        .map(String::from)
                        .to_vec(),
                    ),
                }),
                period_seconds: Some(10),
                ..Probe::default()
            }),
            liveness_probe: Some(Probe {
                initial_delay_seconds: Some(30),
                ..tcp(POSTGRES_PORT, 20)
            }),
            volume_mounts: Some(vec![VolumeMount {
                name: "data".into(),
                mount_path: "/var/lib/postgresql/data".into(),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        };
        let exporter = Container {
            name: "exporter".into(),
            image: Some(self.exporter_image.clone()),
            ports: Some(vec![ContainerPort {
                name: Some("metrics".into()),
                container_port: EXPORTER_PORT,
                ..ContainerPort::default()
            }]),
            env: Some(vec![
                EnvVar {
                    name: "DATA_SOURCE_URI".into(),
                    value: Some(format!(
                        "127.0.0.1:{POSTGRES_PORT}/postgres?sslmode=disable"
                    )),
                    ..EnvVar::default()
                },
                self.secret_env("DATA_SOURCE_USER", "username"),
                self.secret_env("DATA_SOURCE_PASS", "password"),
            ]),
            resources: Some(resources(("50m", "64Mi"), ("200m", "128Mi"))),
            readiness_probe: Some(tcp(EXPORTER_PORT, 20)),
            ..Container::default()
        };
        let headless = Service {
            metadata: self.meta("postgres", &ns, "database"),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                selector: self.selector("database").match_labels,
                ports: Some(vec![
                    ServicePort {
                        name: Some("postgres".into()),
                        port: POSTGRES_PORT,
                        target_port: Some(IntOrString::String("postgres".into())),
                        ..ServicePort::default()
                    },
                    ServicePort {
                        name: Some("metrics".into()),
                        port: EXPORTER_PORT,
                        target_port: Some(IntOrString::String("metrics".into())),
                        ..ServicePort::default()
                    },
                ]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        let set = StatefulSet {
            metadata: self.meta("postgres", &ns, "database"),
            spec: Some(StatefulSetSpec {
                service_name: Some("postgres".into()),
                replicas: Some(1),
                selector: self.selector("database"),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(self.labels("database")),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![postgres, exporter],
                        ..PodSpec::default()
                    }),
                },
                volume_claim_templates: Some(vec![self.claim("data", "10Gi", None)]),
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        };
        vec![to_value(&headless), to_value(&set)]
    }

    fn claim(&self, name: &str, size: &str, namespace: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: namespace.map(str::to_owned),
                labels: Some(self.labels("database")),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: Some(self.storage_class.clone()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        Quantity(size.to_owned()),
                    )])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }
    }

    /// A pod of the backup tier (dump or restore) with the dumps' volume at `/backup`.
    fn backup_pod(&self, script: String) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(self.labels("backup")),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                restart_policy: Some("OnFailure".into()),
                containers: vec![Container {
                    name: "backup".into(),
                    image: Some(self.postgres_image.clone()),
                    command: Some(vec!["sh".into(), "-c".into(), script]),
                    env: Some(vec![
                        EnvVar {
                            name: "PGHOST".into(),
                            value: Some("postgres".into()),
                            ..EnvVar::default()
                        },
                        self.secret_env("PGUSER", "username"),
                        self.secret_env("PGPASSWORD", "password"),
                        self.secret_env("PGDATABASE", "database"),
                    ]),
                    resources: Some(resources(("100m", "128Mi"), ("500m", "512Mi"))),
                    volume_mounts: Some(vec![VolumeMount {
                        name: "dumps".into(),
                        mount_path: "/backup".into(),
                        ..VolumeMount::default()
                    }]),
                    ..Container::default()
                }],
                volumes: Some(vec![Volume {
                    name: "dumps".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: "postgres-dumps".into(),
                        ..PersistentVolumeClaimVolumeSource::default()
                    }),
                    ..Volume::default()
                }]),
                ..PodSpec::default()
            }),
        }
    }

    /// The dumps' volume and the daily dump.
    fn backup(&self) -> Vec<Value> {
        let ns = self.db_namespace();
        let job = CronJob {
            metadata: self.meta("postgres-backup", &ns, "backup"),
            spec: Some(CronJobSpec {
                schedule: self.backup_schedule.clone(),
                concurrency_policy: Some("Forbid".into()),
                successful_jobs_history_limit: Some(3),
                failed_jobs_history_limit: Some(3),
                job_template: JobTemplateSpec {
                    spec: Some(JobSpec {
                        backoff_limit: Some(2),
                        template: self.backup_pod(dump_script(self.backup_keep)),
                        ..JobSpec::default()
                    }),
                    ..JobTemplateSpec::default()
                },
                ..CronJobSpec::default()
            }),
            ..CronJob::default()
        };
        vec![
            to_value(&self.claim("postgres-dumps", "10Gi", Some(&ns))),
            to_value(&job),
        ]
    }

    /// A Job that restores `dump` (a file name in the dumps' volume) into the database: not
    /// part of the application (`restore-job.yaml.example`); copy it, set the file, apply it.
    pub fn restore_job(&self, dump: &str) -> Job {
        let mut pod = self.backup_pod(restore_script());
        if let Some(spec) = pod.spec.as_mut() {
            spec.restart_policy = Some("Never".into());
            if let Some(env) = spec.containers[0].env.as_mut() {
                env.push(EnvVar {
                    name: "DUMP".into(),
                    value: Some(dump.to_owned()),
                    ..EnvVar::default()
                });
            }
        }
        Job {
            metadata: self.meta("postgres-restore", &self.db_namespace(), "backup"),
            spec: Some(JobSpec {
                backoff_limit: Some(0),
                template: pod,
                ..JobSpec::default()
            }),
            ..Job::default()
        }
    }

    fn policy(
        &self,
        name: &str,
        namespace: &str,
        target: Option<&str>,
        rules: Vec<NetworkPolicyIngressRule>,
    ) -> NetworkPolicy {
        NetworkPolicy {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(PART_OF.to_owned(), self.name.clone())])),
                ..ObjectMeta::default()
            },
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(
                    target.map_or_else(LabelSelector::default, |t| self.selector(t)),
                ),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: (!rules.is_empty()).then_some(rules),
                ..NetworkPolicySpec::default()
            }),
        }
    }

    fn namespace_peer(namespace: &str) -> NetworkPolicyPeer {
        NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    NAMESPACE_NAME.to_owned(),
                    namespace.to_owned(),
                )])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }
    }

    fn rule(from: Vec<NetworkPolicyPeer>, ports: &[i32]) -> NetworkPolicyIngressRule {
        NetworkPolicyIngressRule {
            from: Some(from),
            ports: Some(
                ports
                    .iter()
                    .map(|p| NetworkPolicyPort {
                        port: Some(IntOrString::Int(*p)),
                        protocol: Some("TCP".into()),
                        ..NetworkPolicyPort::default()
                    })
                    .collect(),
            ),
        }
    }

    /// The objects that give both namespaces the login (see [`Credentials`]).
    fn credentials(&self) -> Vec<Value> {
        let (db, app) = (self.db_namespace(), self.app_namespace());
        match &self.credentials {
            Credentials::Esc { store, path } => [app, db]
                .iter()
                .map(|ns| {
                    serde_json::json!({
                        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                        "metadata": { "name": self.secret(), "namespace": ns,
                                      "labels": self.labels("database"),
                                      "annotations": wave(-2) },
                        "spec": { "refreshInterval": "1h",
                                  "secretStoreRef": { "kind": "ClusterSecretStore", "name": store },
                                  "target": { "name": self.secret(), "creationPolicy": "Owner" },
                                  "dataFrom": [{ "extract": { "key": path } }] }
                    })
                })
                .collect(),
            Credentials::Generated { kubectl_image } => {
                let mut out = self.secret_maker_account(
                    CREDENTIALS_JOB,
                    &db,
                    "database",
                    &self.secret(),
                    &[&db, &app],
                );
                out.push(to_value(&self.credentials_job(kubectl_image)));
                out
            }
        }
    }

    /// The account `name` of a Job that makes the Secret `secret`, tier `tier`: the
    /// ServiceAccount in `home`, and in each of `namespaces` a Role that may read only that
    /// Secret and create Secrets (creating cannot be limited to one name; reading can),
    /// bound to the account; all in sync wave -2.
    fn secret_maker_account(
        &self,
        name: &str,
        home: &str,
        tier: &str,
        secret: &str,
        namespaces: &[&str],
    ) -> Vec<Value> {
        let meta = |ns: &str| ObjectMeta {
            annotations: Some(wave(-2)),
            ..self.meta(name, ns, tier)
        };
        let mut out = vec![to_value(&ServiceAccount {
            metadata: meta(home),
            automount_service_account_token: Some(true),
            ..ServiceAccount::default()
        })];
        for ns in namespaces {
            out.push(to_value(&Role {
                metadata: meta(ns),
                rules: Some(vec![
                    PolicyRule {
                        api_groups: Some(vec![String::new()]),
                        resources: Some(vec!["secrets".into()]),
                        resource_names: Some(vec![secret.to_owned()]),
                        verbs: vec!["get".into()],
                        ..PolicyRule::default()
                    },
                    PolicyRule {
                        api_groups: Some(vec![String::new()]),
                        resources: Some(vec!["secrets".into()]),
                        verbs: vec!["create".into()],
                        ..PolicyRule::default()
                    },
                ]),
            }));
            out.push(to_value(&RoleBinding {
                metadata: meta(ns),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: name.to_owned(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: name.to_owned(),
                    namespace: Some(home.to_owned()),
                    ..Subject::default()
                }]),
            }));
        }
        out
    }

    /// The Job that generates the login ([`credentials_script`]).
    fn credentials_job(&self, kubectl_image: &str) -> Job {
        let (db, app) = (self.db_namespace(), self.app_namespace());
        self.secret_maker_job(
            CREDENTIALS_JOB,
            &db,
            "database",
            kubectl_image,
            credentials_script(),
            &[
                ("APP", self.name.clone()),
                ("SECRET", self.secret()),
                ("DB_NS", db.clone()),
                ("APP_NS", app),
            ],
        )
    }

    /// The Job `name` (sync wave -1, tier `tier`) in `namespace` that runs `script` with
    /// `kubectl` as the account of the same name ([`WebPostgres::secret_maker_account`]),
    /// with `env`.
    fn secret_maker_job(
        &self,
        name: &str,
        namespace: &str,
        tier: &str,
        kubectl_image: &str,
        script: String,
        env: &[(&str, String)],
    ) -> Job {
        Job {
            metadata: ObjectMeta {
                annotations: Some(wave(-1)),
                ..self.meta(name, namespace, tier)
            },
            spec: Some(JobSpec {
                backoff_limit: Some(4),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(self.labels("credentials")),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some(name.to_owned()),
                        restart_policy: Some("Never".into()),
                        containers: vec![Container {
                            name: "generate".into(),
                            image: Some(kubectl_image.to_owned()),
                            command: Some(vec!["sh".into(), "-c".into(), script]),
                            env: Some(
                                env.iter()
                                    .map(|(name, value)| EnvVar {
                                        name: (*name).to_owned(),
                                        value: Some(value.clone()),
                                        ..EnvVar::default()
                                    })
                                    .collect(),
                            ),
                            resources: Some(resources(("50m", "64Mi"), ("200m", "128Mi"))),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                ..JobSpec::default()
            }),
            ..Job::default()
        }
    }

    /// The app tier's policies: nothing in, then the ingress controller to the frontend,
    /// the frontend to the backend, the monitoring namespace to the backend's metrics.
    pub fn app_policies(&self) -> Vec<NetworkPolicy> {
        let ns = self.app_namespace();
        let same_ns = |tier: &str| NetworkPolicyPeer {
            pod_selector: Some(self.selector(tier)),
            ..NetworkPolicyPeer::default()
        };
        vec![
            self.policy("default-deny-ingress", &ns, None, Vec::new()),
            self.policy(
                "frontend-from-ingress",
                &ns,
                Some("frontend"),
                vec![Self::rule(
                    vec![Self::namespace_peer(&self.ingress_namespace)],
                    &[FRONTEND_PORT],
                )],
            ),
            self.policy(
                "backend-from-frontend",
                &ns,
                Some("backend"),
                vec![
                    Self::rule(vec![same_ns("frontend")], &[BACKEND_PORT]),
                    Self::rule(
                        vec![Self::namespace_peer(&self.monitoring_namespace)],
                        &[BACKEND_PORT],
                    ),
                ],
            ),
        ]
    }

    /// The database tier's policies: nothing in, then the backend (from the app tier's
    /// namespace) and the backup jobs to PostgreSQL, the monitoring namespace to the
    /// exporter.
    pub fn db_policies(&self) -> Vec<NetworkPolicy> {
        let ns = self.db_namespace();
        let backend = NetworkPolicyPeer {
            namespace_selector: Self::namespace_peer(&self.app_namespace()).namespace_selector,
            pod_selector: Some(self.selector("backend")),
            ..NetworkPolicyPeer::default()
        };
        let backup = NetworkPolicyPeer {
            pod_selector: Some(self.selector("backup")),
            ..NetworkPolicyPeer::default()
        };
        vec![
            self.policy("default-deny-ingress", &ns, None, Vec::new()),
            self.policy(
                "database-from-backend",
                &ns,
                Some("database"),
                vec![
                    Self::rule(vec![backend, backup], &[POSTGRES_PORT]),
                    Self::rule(
                        vec![Self::namespace_peer(&self.monitoring_namespace)],
                        &[EXPORTER_PORT],
                    ),
                ],
            ),
        ]
    }
}

fn resources(requests: (&str, &str), limits: (&str, &str)) -> ResourceRequirements {
    let pair = |(cpu, memory): (&str, &str)| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    ResourceRequirements {
        requests: Some(pair(requests)),
        limits: Some(pair(limits)),
        ..ResourceRequirements::default()
    }
}

fn to_value<T: serde::Serialize>(object: &T) -> Value {
    // k8s-openapi's types always serialize (their apiVersion and kind included).
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// Argo CD's sync wave annotation.
fn wave(n: i32) -> BTreeMap<String, String> {
    BTreeMap::from([("argocd.argoproj.io/sync-wave".to_owned(), n.to_string())])
}

/// The login's generation: kept when the database's namespace has the Secret (then only
/// copied to the app tier's namespace when that one lacks it), else a random 40-character
/// password (from `/dev/urandom`), user and database named after the application. The
/// values travel in files of a private temporary directory, never on a command line, and
/// are never printed. `$APP`, `$SECRET`, `$DB_NS` and `$APP_NS` come from the Job.
pub fn credentials_script() -> String {
    "set -eu; umask 077; tmp=$(mktemp -d); trap 'rm -rf \"$tmp\"' EXIT; \
     have() { kubectl -n \"$1\" get secret \"$SECRET\" >/dev/null 2>&1; }; \
     create() { kubectl -n \"$1\" create secret generic \"$SECRET\" \
       --from-file=\"$tmp/username\" --from-file=\"$tmp/password\" --from-file=\"$tmp/database\" >/dev/null; }; \
     if have \"$DB_NS\"; then \
       for key in username password database; do \
         kubectl -n \"$DB_NS\" get secret \"$SECRET\" -o \"jsonpath={.data.$key}\" | base64 -d > \"$tmp/$key\"; \
       done; \
     else \
       printf '%s' \"$APP\" > \"$tmp/username\"; printf '%s' \"$APP\" > \"$tmp/database\"; \
       head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40 > \"$tmp/password\"; \
       test \"$(wc -c < \"$tmp/password\")\" -eq 40; \
       create \"$DB_NS\"; echo \"generated Secret $SECRET in $DB_NS\"; \
     fi; \
     if ! have \"$APP_NS\"; then create \"$APP_NS\"; echo \"copied Secret $SECRET to $APP_NS\"; fi; \
     echo \"Secret $SECRET is in $DB_NS and $APP_NS\""
        .to_owned()
}

/// The daily dump: `pg_dump` in PostgreSQL's custom format into a file named by its time,
/// written under a temporary name first (a failed dump leaves no file that looks whole), the
/// newest `keep` kept. `$BACKUP_DIR` is `/backup` in the Job.
pub fn dump_script(keep: u32) -> String {
    format!(
        "set -eu; dir=\"${{BACKUP_DIR:-/backup}}\"; name=\"$PGDATABASE-$(date -u +%Y%m%dT%H%M%SZ).dump\"; \
         pg_dump --format=custom --file=\"$dir/.in-progress.dump\"; \
         mv \"$dir/.in-progress.dump\" \"$dir/$name\"; \
         ls -1 \"$dir\" | grep \"^$PGDATABASE-.*\\.dump$\" | sort -r | tail -n +{} | \
         while read -r old; do rm -f \"$dir/$old\"; done; ls -l \"$dir\"",
        keep.max(1) + 1
    )
}

/// The restore: the dump `$DUMP` of the dumps' volume into the database, every object the
/// dump holds dropped and made again (`pg_restore --clean --if-exists`) in one transaction:
/// it either all happens or nothing does.
pub fn restore_script() -> String {
    "set -eu; dir=\"${BACKUP_DIR:-/backup}\"; test -f \"$dir/$DUMP\"; \
     pg_restore --clean --if-exists --no-owner --single-transaction --dbname=\"$PGDATABASE\" \"$dir/$DUMP\""
        .to_owned()
}
