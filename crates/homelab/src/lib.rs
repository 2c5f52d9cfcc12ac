//! A home-lab Kubernetes platform as one library call.
//!
//! This crate is where the layers meet: it turns one `homelab.toml` ([`homelab_config`])
//! into each layer's own input types ([`inputs`]), and runs the layers as phases of one
//! [`Pipeline`], in dependency order: `vms` ([`libvirt_vm`]), then `nodes` (node preparation)
//! and `cluster` (kubeadm, the pod network) ([`kubeadm_boot`]); the platform, secrets, GitOps and registry layers are phases too.
//! Every phase has the same four verbs ([`Phase`]): `plan` (what would change, from live
//! state), `apply` (only that, idempotently, with progress [`Event`]s), `status` (live state,
//! no state file) and `verify` (named checks, every one run, each with a fix).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use homelab::{Lab, Pipeline, Selection};
//!
//! let lab = Lab::load(None)?; // ./homelab.toml, else the embedded default
//! let pipeline = Pipeline::for_lab(&lab);
//! for plan in pipeline.plan(&lab, &Selection::all()).await? {
//!     println!("{plan}");
//! }
//! pipeline.up(&lab, &Selection::all(), &|event| eprintln!("{event}")).await?;
//! let status = homelab::Status::of(pipeline.status(&lab).await);
//! assert!(status.healthy);
//! # Ok(()) }
//! ```
//!
//! Downloads (the pod network's manifest today) are checked against `homelab.lock`
//! ([`lock`]): the digest is recorded on first use, and a changed artifact is refused.

pub mod backup;
pub mod bundle;
pub mod cluster;
pub mod destroy;
mod error;
pub mod inputs;
pub mod kind;
mod lab;
pub mod lock;
pub mod nodes;
mod phase;
mod pipeline;
pub mod platform;
pub mod secrets;
pub mod vms;

pub use error::Error;
pub use lab::{Lab, Options};
pub use phase::{
    Change, Check, CheckTable, Event, Events, Phase, PhasePlan, PhaseReport, PhaseStatus,
    StatusItem,
};
pub use pipeline::{Checks, Pipeline, Selection, Settings, Status, UpError};
