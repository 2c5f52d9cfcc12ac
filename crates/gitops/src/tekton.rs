//! Tekton's objects, the fields homelab writes, named as in Tekton's own Go types: Pipelines'
//! `tekton.dev/v1` ([`Task`], [`Pipeline`], [`PipelineRun`]) at v1.15.0 and Triggers'
//! `triggers.tekton.dev/v1beta1` ([`EventListener`], [`TriggerBinding`],
//! [`TriggerTemplate`]) at v0.37.0. Containers, volumes and claims are `k8s-openapi`'s.
//!
//! The tests hold every object written to the upstream types themselves: a small Go program
//! built against those modules decodes each one strictly (an unknown field fails) and runs
//! its `Validate` (`crates/testkit/tekton`).

use k8s_openapi::api::core::v1::{
    EnvVar, PersistentVolumeClaim, PodTemplateSpec, ResourceRequirements, SecretVolumeSource,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `tekton.dev/v1`.
pub const PIPELINE_API: &str = "tekton.dev/v1";
/// `triggers.tekton.dev/v1beta1`.
pub const TRIGGERS_API: &str = "triggers.tekton.dev/v1beta1";

macro_rules! object {
    ($(#[$doc:meta])* $name:ident, $spec:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            /// The API group and version.
            pub api_version: String,
            /// The kind.
            pub kind: String,
            /// Name, namespace, labels.
            pub metadata: ObjectMeta,
            /// What it is.
            pub spec: $spec,
        }

        impl $name {
            /// The object with this metadata and spec, its API version and kind set.
            pub fn new(metadata: ObjectMeta, spec: $spec) -> Self {
                Self {
                    api_version: object!(@api $name).to_owned(),
                    kind: stringify!($name).to_owned(),
                    metadata,
                    spec,
                }
            }
        }
    };
    (@api Task) => { PIPELINE_API };
    (@api Pipeline) => { PIPELINE_API };
    (@api PipelineRun) => { PIPELINE_API };
    (@api $other:ident) => { TRIGGERS_API };
}

object!(
    /// A `Task`: steps run in order in one pod.
    Task,
    TaskSpec
);
object!(
    /// A `Pipeline`: Tasks ordered by `runAfter` and by the results they use.
    Pipeline,
    PipelineSpec
);
object!(
    /// A `PipelineRun`: one run of a Pipeline with its parameters and volumes.
    PipelineRun,
    PipelineRunSpec
);
object!(
    /// An `EventListener`: an HTTP sink (Service `el-<name>`, port 8080) whose triggers turn
    /// accepted events into objects.
    EventListener,
    EventListenerSpec
);
object!(
    /// A `TriggerBinding`: parameters taken from an event.
    TriggerBinding,
    TriggerBindingSpec
);
object!(
    /// A `TriggerTemplate`: the objects an event makes, with its parameters substituted.
    TriggerTemplate,
    TriggerTemplateSpec
);

/// A [`Task`]'s spec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamSpec>,
    /// The volumes it expects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<WorkspaceDeclaration>,
    /// What it reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<TaskResult>,
    /// Its containers, run in order.
    pub steps: Vec<Step>,
}

/// A declared parameter.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParamSpec {
    /// Name.
    pub name: String,
    /// What it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `string` (the default), `array` or `object`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Its value when none is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

/// A volume a [`Task`] expects.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceDeclaration {
    /// Name.
    pub name: String,
    /// What it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// A [`Task`]'s result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    /// Name.
    pub name: String,
    /// What it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One container of a [`Task`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    /// A script run in place of the image's command (with `#!` or by `sh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Environment (parameters reach scripts through it, never spliced into their text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_resources: Option<ResourceRequirements>,
    /// User, seccomp and `AppArmor` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

/// A [`Pipeline`]'s spec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamSpec>,
    /// The volumes a run binds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<PipelineWorkspace>,
    /// Its tasks.
    pub tasks: Vec<PipelineTask>,
}

/// A volume a [`Pipeline`] expects.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineWorkspace {
    /// Name.
    pub name: String,
    /// What it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One task of a [`Pipeline`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineTask {
    /// Its name in the Pipeline.
    pub name: String,
    /// The [`Task`] it runs.
    pub task_ref: Ref,
    /// Its parameters' values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    /// The Pipeline's volumes it gets, by the Task's names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<WorkspaceUse>,
    /// Tasks that must finish first (beyond those whose results it reads).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_after: Vec<String>,
}

/// A reference by name (`taskRef`, `pipelineRef`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ref {
    /// Name.
    pub name: String,
}

/// A parameter's value: a string with `$(…)` references, or a list or an object.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Param {
    /// Name.
    pub name: String,
    /// Value.
    pub value: Value,
}

impl Param {
    /// Parameter `name` with a string value.
    pub fn string(name: &str, value: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            value: Value::String(value.into()),
        }
    }
}

/// A Pipeline's volume given to one of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorkspaceUse {
    /// The Task's name for it.
    pub name: String,
    /// The Pipeline's name for it.
    pub workspace: String,
}

/// A [`PipelineRun`]'s spec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunSpec {
    /// The Pipeline.
    pub pipeline_ref: Ref,
    /// The parameters' values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    /// The volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<WorkspaceBinding>,
    /// The account (and pod settings) every task runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_run_template: Option<TaskRunTemplate>,
    /// How long the run may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
}

/// A volume of a [`PipelineRun`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceBinding {
    /// The Pipeline's name for it.
    pub name: String,
    /// A claim made for the run (deleted with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim_template: Option<PersistentVolumeClaim>,
    /// A Secret's keys as files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolumeSource>,
}

/// A [`PipelineRun`]'s `taskRunTemplate`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRunTemplate {
    /// The account the tasks' pods run as.
    pub service_account_name: String,
}

/// A [`PipelineRun`]'s `timeouts`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timeouts {
    /// The whole run (`30m`).
    pub pipeline: String,
}

/// An [`EventListener`]'s spec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventListenerSpec {
    /// The account the listener reads its triggers and creates objects with.
    pub service_account_name: String,
    /// Its triggers.
    pub triggers: Vec<ListenerTrigger>,
    /// Its own pod's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ListenerResources>,
}

/// One trigger of an [`EventListener`]: interceptors in order (any may drop the event),
/// then bindings and a template.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ListenerTrigger {
    /// Name.
    pub name: String,
    /// What checks and filters the event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interceptors: Vec<Interceptor>,
    /// [`TriggerBinding`]s by name.
    pub bindings: Vec<BindingRef>,
    /// The [`TriggerTemplate`] by name.
    pub template: TemplateRef,
}

/// An interceptor: a `ClusterInterceptor` (`github`, `cel`) and its parameters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Interceptor {
    /// Which one.
    #[serde(rename = "ref")]
    pub reference: InterceptorRef,
    /// Its parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
}

/// An interceptor by name and kind.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InterceptorRef {
    /// Name (`github`).
    pub name: String,
    /// `ClusterInterceptor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// A [`TriggerBinding`] by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BindingRef {
    /// Name.
    #[serde(rename = "ref")]
    pub reference: String,
    /// `TriggerBinding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// A [`TriggerTemplate`] by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TemplateRef {
    /// Name.
    #[serde(rename = "ref")]
    pub reference: String,
}

/// An [`EventListener`]'s `resources`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerResources {
    /// Its Deployment's pod.
    pub kubernetes_resource: KubernetesResource,
}

/// The listener's Deployment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct KubernetesResource {
    /// Its pod template.
    pub spec: WithPodTemplate,
}

/// A pod template under `template`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WithPodTemplate {
    /// The pod.
    pub template: PodTemplateSpec,
}

/// A [`TriggerBinding`]'s spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TriggerBindingSpec {
    /// Each parameter and where in the event it comes from (`$(body.after)`).
    pub params: Vec<BindingParam>,
}

/// A parameter of a [`TriggerBinding`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BindingParam {
    /// Name.
    pub name: String,
    /// Value, with `$(body.…)` and `$(header.…)` references.
    pub value: String,
}

/// A [`TriggerTemplate`]'s spec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TriggerTemplateSpec {
    /// Its parameters (`$(tt.params.<name>)` in the objects).
    pub params: Vec<TemplateParam>,
    /// The objects an event makes.
    pub resourcetemplates: Vec<Value>,
}

/// A parameter of a [`TriggerTemplate`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TemplateParam {
    /// Name.
    pub name: String,
    /// What it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}
