//! Argo CD for a home lab.
//!
//! - [`types`]: Application, AppProject and ApplicationSet as `kube` types that keep every
//!   field they do not type.
//! - [`scaffold`]: the manifests repository homelab starts from, and `add_app`.
//! - [`templates`]: whole applications as typed objects (a web application with
//!   PostgreSQL), written by `scaffold::add_app_template`.
//! - [`status`]: the app-of-apps tree with aggregated sync and health, waiting by watching,
//!   refresh and sync requests.
//! - [`validate`]: checks a manifests repository before Argo CD sees it.

pub mod scaffold;
pub mod status;
pub mod templates;
pub mod types;
pub mod validate;
