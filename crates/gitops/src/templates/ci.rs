//! The application's delivery (`features.cicd`): in its own namespace `<name>-ci`, a Tekton
//! Pipeline that clones the pushed commit, builds the frontend and the backend images with
//! rootless `BuildKit` (no daemon, no privileged container), pushes them with the registry
//! robot's login, and commits their digests to the GitOps repository, where Argo CD picks
//! them up; and a Tekton Triggers `EventListener` behind the Ingress (`/hooks` on the
//! application's host) that checks the forge's webhook signature and the branch before it
//! starts a run.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, Container, EnvVar, KeyToPath, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, SeccompProfile, SecretVolumeSource,
    SecurityContext, ServiceAccount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    Ingress, NetworkPolicy, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::{Value, json};

use super::{Credentials, WebPostgres, resources, to_value, wave};
use crate::tekton::{
    BindingParam, BindingRef, EventListener, EventListenerSpec, Interceptor, InterceptorRef,
    KubernetesResource, ListenerResources, ListenerTrigger, Param, ParamSpec, Pipeline,
    PipelineRun, PipelineRunSpec, PipelineSpec, PipelineTask, PipelineWorkspace, Ref, Step, Task,
    TaskResult, TaskRunTemplate, TaskSpec, TemplateParam, TemplateRef, Timeouts, TriggerBinding,
    TriggerBindingSpec, TriggerTemplate, TriggerTemplateSpec, WithPodTemplate, WorkspaceBinding,
    WorkspaceDeclaration, WorkspaceUse,
};

/// The port the `EventListener`'s pod listens on (Triggers' default).
pub const LISTENER_PORT: i32 = 8080;
/// The path on the application's host the forge's webhook posts to.
pub const HOOK_PATH: &str = "/hooks";

/// How the application is built and delivered (see [`WebPostgres::with_cicd`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cicd {
    /// The branch of the application's source repository that is built (`main`).
    pub branch: String,
    /// The GitOps repository the pipeline commits the new digests to (an https clone URL;
    /// the Secret `<name>-gitops` holds its `username` and `password` or token).
    pub gitops_repo: String,
    /// The branch Argo CD tracks.
    pub gitops_branch: String,
    /// The registry's host (`harbor.homelab.lan`), for the push login's Secret.
    pub registry: String,
    /// An image with `git` and a POSIX shell.
    pub git_image: String,
    /// The rootless `BuildKit` image (with `buildctl-daemonless.sh`).
    pub builder_image: String,
    /// The size of each run's checkout volume.
    pub workspace_size: String,
}

impl Cicd {
    /// Delivery into `gitops_repo` (branch `gitops_branch`) with images pushed to
    /// `registry`; `main` is built, with `BuildKit` v0.34.2 rootless and Alpine's git.
    pub fn new(gitops_repo: &str, gitops_branch: &str, registry: &str) -> Self {
        Self {
            branch: "main".into(),
            gitops_repo: gitops_repo.to_owned(),
            gitops_branch: gitops_branch.to_owned(),
            registry: registry.to_owned(),
            git_image: "docker.io/alpine/git:2.49.1".into(),
            builder_image: "docker.io/moby/buildkit:v0.34.2-rootless".into(),
            workspace_size: "1Gi".into(),
        }
    }
}

/// `image` without its tag or digest: `harbor.lan/homelab/shop-frontend:0.1.0` →
/// `harbor.lan/homelab/shop-frontend` (a registry's port is kept).
pub fn image_repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

impl WebPostgres {
    /// The same, built and delivered by Tekton when `cicd` is given (the platform's
    /// `features.cicd`): adds the namespace `<name>-ci` and the files under `ci/`.
    #[must_use]
    pub fn with_cicd(mut self, cicd: Option<Cicd>) -> Self {
        self.cicd = cicd;
        self
    }

    /// The delivery's namespace.
    pub fn ci_namespace(&self) -> String {
        format!("{}-ci", self.name)
    }

    /// The Secret (in the delivery's namespace) with the webhook's shared secret (`secret`).
    pub fn webhook_secret(&self) -> String {
        format!("{}-webhook", self.name)
    }

    /// The Secret (`kubernetes.io/dockerconfigjson`) with the robot login that pushes.
    pub fn push_secret(&self) -> String {
        format!("{}-push", self.name)
    }

    /// The Secret with the login (`username`, `password`) that commits to the GitOps
    /// repository.
    pub fn gitops_secret(&self) -> String {
        format!("{}-gitops", self.name)
    }

    /// What the operator does once so that pushes deploy (empty without
    /// [`WebPostgres::with_cicd`]): the logins that are accounts elsewhere (the registry's
    /// robot, the GitOps repository's token) and the forge's webhook. With ESC, all three
    /// are fields of one ESC object.
    pub fn setup_notes(&self) -> Vec<String> {
        let Some(cicd) = &self.cicd else {
            return Vec::new();
        };
        let ns = self.ci_namespace();
        let hook = format!(
            "the source repository's push webhook: https://{}{HOOK_PATH}, content type \
             application/json, branch {}",
            self.host, cicd.branch
        );
        match &self.credentials {
            Credentials::Esc { .. } => vec![
                format!(
                    "in ESC, the object apps.{}.ci with webhook_secret, registry_username and \
                     registry_password (a robot that may push: harbor robot create {}-ci \
                     --project PROJECT --push), git_username and git_password (a token that may \
                     push to {})",
                    self.name, self.name, cicd.gitops_repo
                ),
                format!("{hook}, with the secret webhook_secret"),
            ],
            Credentials::Generated { .. } => vec![
                format!(
                    "a robot that may push (harbor robot create {name}-ci --project PROJECT \
                     --push), then: kubectl -n {ns} create secret docker-registry {push} \
                     --docker-server={registry} --docker-username='ROBOT NAME' \
                     --docker-password=\"$(cat robot-secret)\"",
                    name = self.name,
                    push = self.push_secret(),
                    registry = cicd.registry,
                ),
                format!(
                    "a token that may push to {}, then: kubectl -n {ns} create secret generic \
                     {} --from-literal=username=USER --from-file=password=token-file",
                    cicd.gitops_repo,
                    self.gitops_secret()
                ),
                format!(
                    "{hook}, with the secret from: kubectl -n {ns} get secret {} \
                     -o jsonpath='{{.data.secret}}' | base64 -d",
                    self.webhook_secret()
                ),
            ],
        }
    }

    /// The files under `ci/` (none without [`WebPostgres::with_cicd`]).
    pub(super) fn ci_files(&self) -> Vec<(String, Vec<Value>)> {
        let Some(cicd) = &self.cicd else {
            return Vec::new();
        };
        vec![
            ("ci/credentials.yaml".to_owned(), self.ci_credentials(cicd)),
            (
                "ci/tasks.yaml".to_owned(),
                self.tasks(cicd).iter().map(to_value).collect(),
            ),
            (
                "ci/pipeline.yaml".to_owned(),
                vec![
                    to_value(&self.ci_account(&format!("{}-pipeline", self.name))),
                    to_value(&self.pipeline(cicd)),
                ],
            ),
            ("ci/triggers.yaml".to_owned(), self.triggers(cicd)),
            (
                "ci/ingress.yaml".to_owned(),
                vec![to_value(&self.hook_ingress())],
            ),
            (
                "ci/network-policies.yaml".to_owned(),
                self.ci_policies().iter().map(to_value).collect(),
            ),
        ]
    }

    fn ci_meta(&self, name: &str) -> ObjectMeta {
        self.meta(name, &self.ci_namespace(), "ci")
    }

    fn ci_account(&self, name: &str) -> ServiceAccount {
        ServiceAccount {
            metadata: self.ci_meta(name),
            ..ServiceAccount::default()
        }
    }

    /// The three logins of the delivery's namespace. From ESC: one object
    /// `apps.<name>.ci` with `webhook_secret`, `registry_username`, `registry_password`,
    /// `git_username` and `git_password`. Otherwise the webhook's secret is generated once
    /// in the cluster and the registry and Git logins are the operator's to create (they
    /// are accounts elsewhere); never in the repository.
    fn ci_credentials(&self, cicd: &Cicd) -> Vec<Value> {
        let ns = self.ci_namespace();
        match &self.credentials {
            Credentials::Esc { store, .. } => {
                let path = format!("apps.{}.ci", self.name);
                let external = |name: String, keys: &[(&str, &str)], template: Option<Value>| {
                    let mut target = json!({ "name": name, "creationPolicy": "Owner" });
                    if let Some(template) = template {
                        target["template"] = template;
                    }
                    json!({
                        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                        "metadata": { "name": name, "namespace": ns,
                                      "labels": self.labels("ci"), "annotations": wave(-2) },
                        "spec": {
                            "refreshInterval": "1h",
                            "secretStoreRef": { "kind": "ClusterSecretStore", "name": store },
                            "target": target,
                            "data": keys.iter().map(|(key, property)| json!({
                                "secretKey": key,
                                "remoteRef": { "key": path, "property": property }
                            })).collect::<Vec<_>>()
                        }
                    })
                };
                let auths = format!(
                    "{{\"auths\":{{\"{}\":{{\"username\":\"{{{{ .username }}}}\",\"password\":\"{{{{ .password }}}}\"}}}}}}",
                    cicd.registry
                );
                vec![
                    external(self.webhook_secret(), &[("secret", "webhook_secret")], None),
                    external(
                        self.push_secret(),
                        &[
                            ("username", "registry_username"),
                            ("password", "registry_password"),
                        ],
                        Some(json!({
                            "type": "kubernetes.io/dockerconfigjson",
                            "engineVersion": "v2",
                            "data": { ".dockerconfigjson": auths }
                        })),
                    ),
                    external(
                        self.gitops_secret(),
                        &[("username", "git_username"), ("password", "git_password")],
                        None,
                    ),
                ]
            }
            Credentials::Generated { kubectl_image } => {
                let job = format!("{}-webhook-secret", self.name);
                let mut out =
                    self.secret_maker_account(&job, &ns, "ci", &self.webhook_secret(), &[&ns]);
                out.push(to_value(&self.secret_maker_job(
                    &job,
                    &ns,
                    "ci",
                    kubectl_image,
                    webhook_script(),
                    &[("NS", ns.clone()), ("SECRET", self.webhook_secret())],
                )));
                out
            }
        }
    }

    /// The three Tasks: `git-clone`, `build-push`, `promote`.
    #[allow(clippy::too_many_lines, reason = "three Tasks, field by field")]
    pub fn tasks(&self, cicd: &Cicd) -> Vec<Task> {
        let env = |name: &str, value: &str| EnvVar {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            ..EnvVar::default()
        };
        let param = |name: &str, description: &str| ParamSpec {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            ..ParamSpec::default()
        };
        let workspace = |name: &str, description: &str, read_only: bool| WorkspaceDeclaration {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            read_only: read_only.then_some(true),
        };
        let result = |name: &str, description: &str| TaskResult {
            name: name.to_owned(),
            description: Some(description.to_owned()),
        };
        let clone = Task::new(
            self.ci_meta("git-clone"),
            TaskSpec {
                description: Some("Checks out one commit of a repository.".into()),
                params: vec![
                    param("url", "The repository's clone URL."),
                    param("revision", "The commit (or branch) to check out."),
                ],
                workspaces: vec![workspace("source", "Where the checkout goes.", false)],
                results: vec![result("commit", "The commit checked out.")],
                steps: vec![Step {
                    name: "clone".into(),
                    image: cicd.git_image.clone(),
                    script: Some(clone_script()),
                    env: vec![
                        env("URL", "$(params.url)"),
                        env("REVISION", "$(params.revision)"),
                        env("SOURCE", "$(workspaces.source.path)"),
                        env("RESULT", "$(results.commit.path)"),
                    ],
                    compute_resources: Some(resources(("100m", "128Mi"), ("500m", "256Mi"))),
                    ..Step::default()
                }],
            },
        );
        let build = Task::new(
            self.ci_meta("build-push"),
            TaskSpec {
                description: Some(
                    "Builds a directory's Dockerfile with rootless BuildKit (no daemon, no \
                     privilege) and pushes the image."
                        .into(),
                ),
                params: vec![
                    param("image", "The image's repository, without a tag."),
                    param("tag", "The tag pushed."),
                    param(
                        "context",
                        "The directory of the checkout with the Dockerfile.",
                    ),
                ],
                workspaces: vec![
                    workspace("source", "The checkout.", true),
                    workspace(
                        "registry",
                        "config.json with the registry login (a dockerconfigjson Secret).",
                        true,
                    ),
                ],
                results: vec![result("digest", "The pushed image's digest.")],
                steps: vec![Step {
                    name: "build".into(),
                    image: cicd.builder_image.clone(),
                    script: Some(build_script()),
                    env: vec![
                        env("IMAGE", "$(params.image)"),
                        env("TAG", "$(params.tag)"),
                        env("CONTEXT", "$(workspaces.source.path)/$(params.context)"),
                        env("DOCKER_CONFIG", "$(workspaces.registry.path)"),
                        env("RESULT", "$(results.digest.path)"),
                        // Rootless BuildKit in an unprivileged pod (BuildKit's
                        // examples/kubernetes): no process sandbox of its own.
                        env("BUILDKITD_FLAGS", "--oci-worker-no-process-sandbox"),
                    ],
                    compute_resources: Some(resources(("500m", "1Gi"), ("2", "4Gi"))),
                    security_context: Some(SecurityContext {
                        run_as_user: Some(1000),
                        run_as_group: Some(1000),
                        run_as_non_root: Some(true),
                        allow_privilege_escalation: Some(true),
                        capabilities: Some(Capabilities {
                            drop: Some(vec!["ALL".into()]),
                            ..Capabilities::default()
                        }),
                        // rootlesskit makes user namespaces and mounts: the default
                        // profiles forbid both.
                        seccomp_profile: Some(SeccompProfile {
                            type_: "Unconfined".into(),
                            ..SeccompProfile::default()
                        }),
                        app_armor_profile: Some(AppArmorProfile {
                            type_: "Unconfined".into(),
                            ..AppArmorProfile::default()
                        }),
                        ..SecurityContext::default()
                    }),
                }],
            },
        );
        let promote = Task::new(
            self.ci_meta("promote"),
            TaskSpec {
                description: Some(
                    "Commits new image digests to the GitOps repository, where Argo CD \
                     deploys them."
                        .into(),
                ),
                params: vec![
                    param("repository", "The GitOps repository's https clone URL."),
                    param("branch", "Its branch."),
                    param("directory", "The application's directory in it."),
                    param("revision", "The source commit the images were built from."),
                    param("frontend-image", "The frontend's repository."),
                    param("frontend-digest", "The frontend's new digest."),
                    param("backend-image", "The backend's repository."),
                    param("backend-digest", "The backend's new digest."),
                ],
                workspaces: vec![workspace(
                    "gitops-auth",
                    "username and password (or token) for the GitOps repository.",
                    true,
                )],
                results: Vec::new(),
                steps: vec![Step {
                    name: "commit".into(),
                    image: cicd.git_image.clone(),
                    script: Some(promote_script()),
                    env: [
                        ("REPOSITORY", "repository"),
                        ("BRANCH", "branch"),
                        ("DIRECTORY", "directory"),
                        ("REVISION", "revision"),
                        ("FRONTEND_IMAGE", "frontend-image"),
                        ("FRONTEND_DIGEST", "frontend-digest"),
                        ("BACKEND_IMAGE", "backend-image"),
                        ("BACKEND_DIGEST", "backend-digest"),
                    ]
                    .iter()
                    .map(|(var, p)| env(var, &format!("$(params.{p})")))
                    .chain([env("AUTH", "$(workspaces.gitops-auth.path)")])
                    .collect(),
                    compute_resources: Some(resources(("50m", "64Mi"), ("200m", "128Mi"))),
                    ..Step::default()
                }],
            },
        );
        vec![clone, build, promote]
    }

    /// The Pipeline `<name>`: clone, build both images at once, commit their digests.
    pub fn pipeline(&self, cicd: &Cicd) -> Pipeline {
        let uses = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(name, workspace)| WorkspaceUse {
                    name: (*name).to_owned(),
                    workspace: (*workspace).to_owned(),
                })
                .collect()
        };
        let build = |tier: &str, image: &str| PipelineTask {
            name: format!("build-{tier}"),
            task_ref: Ref {
                name: "build-push".into(),
            },
            params: vec![
                Param::string("image", image_repository(image)),
                Param::string("tag", "$(tasks.clone.results.commit)"),
                Param::string("context", tier),
            ],
            workspaces: uses(&[("source", "source"), ("registry", "registry")]),
            run_after: Vec::new(),
        };
        let pipeline_workspace = |name: &str, description: &str| PipelineWorkspace {
            name: name.to_owned(),
            description: Some(description.to_owned()),
        };
        Pipeline::new(
            self.ci_meta(&self.name),
            PipelineSpec {
                description: Some(format!(
                    "Builds {} (frontend/ and backend/ of its repository, each with a \
                     Dockerfile) and deploys the images through the GitOps repository.",
                    self.name
                )),
                params: vec![
                    ParamSpec {
                        name: "repo-url".into(),
                        description: Some("The application's source repository.".into()),
                        ..ParamSpec::default()
                    },
                    ParamSpec {
                        name: "revision".into(),
                        description: Some("The commit to build.".into()),
                        ..ParamSpec::default()
                    },
                ],
                workspaces: vec![
                    pipeline_workspace("source", "The checkout."),
                    pipeline_workspace("registry", "The registry login (config.json)."),
                    pipeline_workspace("gitops-auth", "The GitOps repository's login."),
                ],
                tasks: vec![
                    PipelineTask {
                        name: "clone".into(),
                        task_ref: Ref {
                            name: "git-clone".into(),
                        },
                        params: vec![
                            Param::string("url", "$(params.repo-url)"),
                            Param::string("revision", "$(params.revision)"),
                        ],
                        workspaces: uses(&[("source", "source")]),
                        run_after: Vec::new(),
                    },
                    build("frontend", &self.frontend_image),
                    build("backend", &self.backend_image),
                    PipelineTask {
                        name: "promote".into(),
                        task_ref: Ref {
                            name: "promote".into(),
                        },
                        params: vec![
                            Param::string("repository", cicd.gitops_repo.clone()),
                            Param::string("branch", cicd.gitops_branch.clone()),
                            Param::string("directory", format!("apps/{}", self.name)),
                            Param::string("revision", "$(tasks.clone.results.commit)"),
                            Param::string("frontend-image", image_repository(&self.frontend_image)),
                            Param::string(
                                "frontend-digest",
                                "$(tasks.build-frontend.results.digest)",
                            ),
                            Param::string("backend-image", image_repository(&self.backend_image)),
                            Param::string(
                                "backend-digest",
                                "$(tasks.build-backend.results.digest)",
                            ),
                        ],
                        workspaces: uses(&[("gitops-auth", "gitops-auth")]),
                        run_after: Vec::new(),
                    },
                ],
            },
        )
    }

    /// The run one accepted push makes (with the template's `$(tt.params.…)`).
    pub fn pipeline_run(&self, cicd: &Cicd) -> PipelineRun {
        let secret =
            |workspace: &str, secret: String, items: Option<Vec<KeyToPath>>| WorkspaceBinding {
                name: workspace.to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret),
                    items,
                    ..SecretVolumeSource::default()
                }),
                ..WorkspaceBinding::default()
            };
        PipelineRun::new(
            ObjectMeta {
                generate_name: Some(format!("{}-", self.name)),
                namespace: Some(self.ci_namespace()),
                labels: Some(self.labels("ci")),
                ..ObjectMeta::default()
            },
            PipelineRunSpec {
                pipeline_ref: Ref {
                    name: self.name.clone(),
                },
                params: vec![
                    Param::string("repo-url", "$(tt.params.repo-url)"),
                    Param::string("revision", "$(tt.params.revision)"),
                ],
                workspaces: vec![
                    WorkspaceBinding {
                        name: "source".into(),
                        volume_claim_template: Some(PersistentVolumeClaim {
                            spec: Some(PersistentVolumeClaimSpec {
                                access_modes: Some(vec!["ReadWriteOnce".into()]),
                                storage_class_name: Some(self.storage_class.clone()),
                                resources: Some(VolumeResourceRequirements {
                                    requests: Some(BTreeMap::from([(
                                        "storage".to_owned(),
                                        Quantity(cicd.workspace_size.clone()),
                                    )])),
                                    ..VolumeResourceRequirements::default()
                                }),
                                ..PersistentVolumeClaimSpec::default()
                            }),
                            ..PersistentVolumeClaim::default()
                        }),
                        ..WorkspaceBinding::default()
                    },
                    secret(
                        "registry",
                        self.push_secret(),
                        Some(vec![KeyToPath {
                            key: ".dockerconfigjson".into(),
                            path: "config.json".into(),
                            ..KeyToPath::default()
                        }]),
                    ),
                    secret("gitops-auth", self.gitops_secret(), None),
                ],
                task_run_template: Some(TaskRunTemplate {
                    service_account_name: format!("{}-pipeline", self.name),
                }),
                timeouts: Some(Timeouts {
                    pipeline: "30m".into(),
                }),
            },
        )
    }

    /// The listener, its account and permissions, its binding and template.
    #[allow(clippy::too_many_lines, reason = "seven objects, field by field")]
    fn triggers(&self, cicd: &Cicd) -> Vec<Value> {
        let ns = self.ci_namespace();
        let account = format!("{}-triggers", self.name);
        let subject = Subject {
            kind: "ServiceAccount".into(),
            name: account.clone(),
            namespace: Some(ns.clone()),
            ..Subject::default()
        };
        let cluster_name = format!("{ns}-triggers");
        let cluster_meta = ObjectMeta {
            name: Some(cluster_name.clone()),
            labels: Some(self.labels("ci")),
            ..ObjectMeta::default()
        };
        let binding = TriggerBinding::new(
            self.ci_meta(&format!("{}-push", self.name)),
            TriggerBindingSpec {
                // A push event's commit and repository (GitHub's and Gitea's payloads).
                params: vec![
                    BindingParam {
                        name: "revision".into(),
                        value: "$(body.after)".into(),
                    },
                    BindingParam {
                        name: "repo-url".into(),
                        value: "$(body.repository.clone_url)".into(),
                    },
                ],
            },
        );
        let template = TriggerTemplate::new(
            self.ci_meta(&self.name),
            TriggerTemplateSpec {
                params: vec![
                    TemplateParam {
                        name: "revision".into(),
                        description: Some("The pushed commit.".into()),
                    },
                    TemplateParam {
                        name: "repo-url".into(),
                        description: Some("The repository pushed to.".into()),
                    },
                ],
                resourcetemplates: vec![to_value(&self.pipeline_run(cicd))],
            },
        );
        let interceptor = |name: &str, params: Vec<Param>| Interceptor {
            reference: InterceptorRef {
                name: name.to_owned(),
                kind: Some("ClusterInterceptor".into()),
            },
            params,
        };
        let listener = EventListener::new(
            self.ci_meta(&self.name),
            EventListenerSpec {
                service_account_name: account.clone(),
                triggers: vec![ListenerTrigger {
                    name: "push".into(),
                    interceptors: vec![
                        // The payload's HMAC (X-Hub-Signature-256) against the Secret: an
                        // event without the right signature is dropped.
                        interceptor(
                            "github",
                            vec![
                                Param {
                                    name: "secretRef".into(),
                                    value: json!({ "secretName": self.webhook_secret(),
                                                   "secretKey": "secret" }),
                                },
                                Param {
                                    name: "eventTypes".into(),
                                    value: json!(["push"]),
                                },
                            ],
                        ),
                        interceptor(
                            "cel",
                            vec![Param::string(
                                "filter",
                                format!("body.ref == 'refs/heads/{}'", cicd.branch),
                            )],
                        ),
                    ],
                    bindings: vec![BindingRef {
                        reference: format!("{}-push", self.name),
                        kind: Some("TriggerBinding".into()),
                    }],
                    template: TemplateRef {
                        reference: self.name.clone(),
                    },
                }],
                resources: Some(ListenerResources {
                    kubernetes_resource: KubernetesResource {
                        spec: WithPodTemplate {
                            template: PodTemplateSpec {
                                metadata: None,
                                spec: Some(PodSpec {
                                    containers: vec![Container {
                                        resources: Some(resources(
                                            ("50m", "64Mi"),
                                            ("500m", "256Mi"),
                                        )),
                                        ..Container::default()
                                    }],
                                    ..PodSpec::default()
                                }),
                            },
                        },
                    },
                }),
            },
        );
        vec![
            to_value(&self.ci_account(&account)),
            // Upstream's namespaced role for listeners: read the triggers, create runs.
            to_value(&RoleBinding {
                metadata: self.ci_meta(&account),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: "tekton-triggers-eventlistener-roles".into(),
                },
                subjects: Some(vec![subject.clone()]),
            }),
            // Cluster-wide it reads only the interceptors and cluster bindings; upstream's
            // own cluster role would also let it read every Secret of the cluster.
            to_value(&ClusterRole {
                metadata: cluster_meta.clone(),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec!["triggers.tekton.dev".into()]),
                    resources: Some(vec![
                        "clusterinterceptors".into(),
                        "clustertriggerbindings".into(),
                    ]),
                    verbs: vec!["get".into(), "list".into(), "watch".into()],
                    ..PolicyRule::default()
                }]),
                ..ClusterRole::default()
            }),
            to_value(&ClusterRoleBinding {
                metadata: cluster_meta,
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: cluster_name,
                },
                subjects: Some(vec![subject]),
            }),
            to_value(&binding),
            to_value(&template),
            to_value(&listener),
        ]
    }

    /// `/hooks` on the application's host, to the listener's Service (`el-<name>`).
    fn hook_ingress(&self) -> Ingress {
        self.host_ingress(
            self.ci_meta(&format!("{}-hooks", self.name)),
            HOOK_PATH,
            format!("el-{}", self.name),
            ServiceBackendPort {
                number: Some(LISTENER_PORT),
                ..ServiceBackendPort::default()
            },
        )
    }

    /// The delivery namespace's policies: nothing in, then the ingress controller to the
    /// listener's port (the pods Triggers labels `eventlistener: <name>`).
    pub fn ci_policies(&self) -> Vec<NetworkPolicy> {
        let ns = self.ci_namespace();
        let mut listener = self.policy(
            "listener-from-ingress",
            &ns,
            None,
            vec![Self::rule(
                vec![Self::namespace_peer(&self.ingress_namespace)],
                &[LISTENER_PORT],
            )],
        );
        if let Some(NetworkPolicySpec { pod_selector, .. }) = listener.spec.as_mut() {
            *pod_selector = Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "eventlistener".to_owned(),
                    self.name.clone(),
                )])),
                ..LabelSelector::default()
            });
        }
        vec![
            self.policy("default-deny-ingress", &ns, None, Vec::new()),
            listener,
        ]
    }
}

/// The checkout: the commit `$REVISION` of `$URL` into `$SOURCE` (emptied first: a retried
/// task starts clean), its full hash into `$RESULT`.
pub fn clone_script() -> String {
    "set -eu; cd \"$SOURCE\"; find . -mindepth 1 -maxdepth 1 -exec rm -rf {} +; \
     git init -q .; git fetch -q --depth 1 \"$URL\" \"$REVISION\"; git checkout -q FETCH_HEAD; \
     git rev-parse HEAD | tr -d '\\n' > \"$RESULT\"; echo \"checked out $(cat \"$RESULT\")\""
        .to_owned()
}

/// The build: `$CONTEXT`'s Dockerfile by `buildctl-daemonless.sh` (a `BuildKit` daemon for
/// this build only), pushed as `$IMAGE:$TAG` with the login in `$DOCKER_CONFIG`; the
/// pushed digest into `$RESULT`.
pub fn build_script() -> String {
    "set -eu; meta=$(mktemp); \
     buildctl-daemonless.sh build --frontend dockerfile.v0 \
       --local context=\"$CONTEXT\" --local dockerfile=\"$CONTEXT\" \
       --output \"type=image,name=$IMAGE:$TAG,push=true\" --metadata-file \"$meta\"; \
     digest=$(tr -d ' \\n' < \"$meta\" | sed -n 's/.*\"containerimage.digest\":\"\\(sha256:[0-9a-f]*\\)\".*/\\1/p'); \
     test -n \"$digest\" || { echo \"no digest in BuildKit's metadata: $(cat \"$meta\")\" >&2; exit 1; }; \
     printf '%s' \"$digest\" > \"$RESULT\"; echo \"pushed $IMAGE@$digest\""
        .to_owned()
}

/// The promotion: clones `$BRANCH` of `$REPOSITORY` with the login in `$AUTH`
/// (`username`, `password`; given to Git by an askpass helper, never on a command line or
/// in a URL), points the `image:` lines of `$DIRECTORY/app/frontend.yaml` and
/// `backend.yaml` that name `$FRONTEND_IMAGE` / `$BACKEND_IMAGE` at the new digests,
/// commits and pushes. Nothing to change is success; a push that lost a race is retried on
/// the new head (three tries).
pub fn promote_script() -> String {
    "set -eu; work=$(mktemp -d); trap 'rm -rf \"$work\"' EXIT; \
     printf '#!/bin/sh\\ncase \"$1\" in Username*) cat \"%s/username\";; *) cat \"%s/password\";; esac\\n' \"$AUTH\" \"$AUTH\" > \"$work/askpass\"; \
     chmod 700 \"$work/askpass\"; export GIT_ASKPASS=\"$work/askpass\" GIT_TERMINAL_PROMPT=0; \
     git clone -q --depth 1 --branch \"$BRANCH\" \"$REPOSITORY\" \"$work/repo\"; cd \"$work/repo\"; \
     git config user.name 'homelab pipeline'; git config user.email 'pipeline@homelab.invalid'; \
     point() { sed -E -i \"s#^([ -]*image: )$2[:@].*#\\1$2@$3#\" \"$DIRECTORY/app/$1.yaml\"; \
       grep -q \"image: $2@$3\" \"$DIRECTORY/app/$1.yaml\" || { echo \"$DIRECTORY/app/$1.yaml names no image $2\" >&2; exit 1; }; }; \
     for try in 1 2 3; do \
       point frontend \"$FRONTEND_IMAGE\" \"$FRONTEND_DIGEST\"; point backend \"$BACKEND_IMAGE\" \"$BACKEND_DIGEST\"; \
       if git diff --quiet; then echo \"already deployed: $FRONTEND_DIGEST, $BACKEND_DIGEST\"; exit 0; fi; \
       git commit -qam \"$DIRECTORY: deploy $REVISION\" -m \"frontend $FRONTEND_IMAGE@$FRONTEND_DIGEST\" -m \"backend $BACKEND_IMAGE@$BACKEND_DIGEST\"; \
       if git push -q origin \"HEAD:$BRANCH\"; then echo \"deployed $REVISION\"; exit 0; fi; \
       echo \"push refused (try $try): taking the new head\" >&2; \
       git fetch -q --depth 1 origin \"$BRANCH\"; git reset -q --hard FETCH_HEAD; \
     done; echo 'could not push after 3 tries' >&2; exit 1"
        .to_owned()
}

/// The webhook's secret: kept when `$SECRET` exists in `$NS`, else 40 random characters
/// (from `/dev/urandom`, through a private file, never printed).
pub fn webhook_script() -> String {
    "set -eu; if kubectl -n \"$NS\" get secret \"$SECRET\" >/dev/null 2>&1; then \
       echo \"Secret $SECRET is in $NS (kept)\"; exit 0; fi; \
     umask 077; tmp=$(mktemp -d); trap 'rm -rf \"$tmp\"' EXIT; \
     head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40 > \"$tmp/secret\"; \
     test \"$(wc -c < \"$tmp/secret\")\" -eq 40; \
     kubectl -n \"$NS\" create secret generic \"$SECRET\" --from-file=\"$tmp/secret\" >/dev/null; \
     echo \"generated Secret $SECRET in $NS: give its value to the forge's webhook\""
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::image_repository;

    #[test]
    fn an_image_s_repository_drops_only_the_tag_or_digest() {
        assert_eq!(
            image_repository("harbor.lan/homelab/shop-frontend:0.1.0"),
            "harbor.lan/homelab/shop-frontend"
        );
        assert_eq!(
            image_repository("harbor.lan:8443/homelab/shop:1@sha256:ab"),
            "harbor.lan:8443/homelab/shop"
        );
        assert_eq!(
            image_repository("harbor.lan:8443/shop"),
            "harbor.lan:8443/shop"
        );
        assert_eq!(image_repository("shop"), "shop");
    }
}
