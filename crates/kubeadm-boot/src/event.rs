//! What this crate's long operations report while they work: one [`Event`] type, handed to
//! the callback every one of them takes as `events: Events<'_>` (`&dyn Fn(Event) + Send +
//! Sync`): the step runner ([`crate::steps::Runner::run`]), the bootstrap, upgrades, the
//! `Ready` wait ([`crate::nodes::wait_nodes_ready`]) and the whole [`crate::cluster::up`].

use std::fmt;

use crate::steps::{Outcome, Report};

/// The parts of [`crate::cluster::up`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Swap, modules, sysctls, containerd, the Kubernetes packages.
    Prepare,
    /// `kubeadm init` and the joins.
    Bootstrap,
    /// The admin kubeconfig merged into the user's file.
    Kubeconfig,
    /// The pod network applied.
    PodNetwork,
    /// Waiting for every node to be `Ready`.
    Ready,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Prepare => "prepare the nodes",
            Self::Bootstrap => "kubeadm init and join",
            Self::Kubeconfig => "admin kubeconfig",
            Self::PodNetwork => "pod network",
            Self::Ready => "nodes Ready",
        })
    }
}

/// Something an operation of this crate reports while it works.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A stage of [`crate::cluster::up`] begins.
    Stage(Stage),
    /// A step is being checked on a host.
    Checking {
        /// Host.
        host: String,
        /// Step.
        step: String,
    },
    /// A step finished on a host.
    Step(Report),
    /// An object of the pod network was applied.
    Applied(String),
    /// Nodes not yet `Ready`, with why.
    Waiting(Vec<(String, String)>),
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stage(stage) => write!(f, "== {stage}"),
            Self::Checking { host, step } => write!(f, "[{host}] {step:<22} checking"),
            Self::Step(r) => {
                let label = match r.outcome {
                    Outcome::Unchanged => "unchanged",
                    Outcome::Changed => "changed",
                    Outcome::WouldChange => "would change",
                };
                write!(
                    f,
                    "[{}] {:<22} {label:<12} {}",
                    r.host, r.step, r.description
                )
            }
            Self::Applied(object) => write!(f, "applied {object}"),
            Self::Waiting(nodes) => {
                let list: Vec<String> =
                    nodes.iter().map(|(n, why)| format!("{n}: {why}")).collect();
                write!(f, "waiting: {}", list.join("; "))
            }
        }
    }
}

/// The callback an operation reports its [`Event`]s to.
pub type Events<'a> = &'a (dyn Fn(Event) + Send + Sync);
