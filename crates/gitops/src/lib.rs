//! Argo CD for a home lab.
//!
//! - [`types`]: Application, AppProject and ApplicationSet as `kube` types that keep every
//!   field they do not type.
//! - [`scaffold`]: the manifests repository homelab starts from, and `add_app`.
//! - [`templates`]: whole applications as typed objects (a web application with
//!   PostgreSQL), written by `scaffold::add_app_template`.
//! - [`tekton`]: Tekton's `Task`, `Pipeline`, `PipelineRun`, `EventListener`,
//!   `TriggerBinding` and `TriggerTemplate`, the fields the templates write.
//! - [`status`]: the app-of-apps tree with aggregated sync and health, waiting by watching,
//!   refresh and sync requests.
//! - [`validate`]: checks a manifests repository before Argo CD sees it.
//!
//! ```
//! use gitops::scaffold::wave;
//! use gitops::templates::WebPostgres;
//!
//! // The platform's order: CRDs and controllers before what uses them.
//! assert!(wave("cert-manager") < wave("issuers") && wave("issuers") < wave("harbor"));
//! // A whole web application as Kubernetes objects, file by file.
//! let app = WebPostgres::new("shop", "shop.homelab.lan").with_monitoring(true);
//! let files: Vec<String> = app.files().into_iter().map(|(file, _)| file).collect();
//! assert!(files.contains(&"db/postgres.yaml".to_owned()) && files.contains(&"app/monitoring.yaml".to_owned()));
//! ```

pub mod event;
pub mod scaffold;
pub mod status;
pub mod tekton;
pub mod templates;
pub mod types;
pub mod validate;

pub use event::{Event, Events};
