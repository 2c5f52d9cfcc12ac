//! Argo CD for a home lab.
//!
//! - [`types`]: Application, AppProject and ApplicationSet as `kube` types that keep every
//!   field they do not type.
//! - [`validate`]: checks a manifests repository before Argo CD sees it.

pub mod types;
pub mod validate;
