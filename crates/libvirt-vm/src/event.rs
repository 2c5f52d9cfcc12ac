//! What this crate's long operations report while they work: one [`Event`] type, handed to
//! the callback every one of them takes as `events: Events<'_>` (`&dyn Fn(Event) + Send +
//! Sync`), whether it runs on the async runtime ([`crate::provision::up`],
//! [`crate::wait::wait_ssh_ready`]) or blocks ([`crate::image::build`],
//! `Hypervisor::apply`, `Hypervisor::destroy`, `Hypervisor::retire_seeds`).

use serde::Serialize;

use crate::plan::Action;

/// Something an operation of this crate reports while it works.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Event {
    /// A preflight check's result.
    #[cfg(feature = "libvirt")]
    Check(crate::preflight::Check),
    /// Image build progress.
    Image {
        /// What is happening.
        message: String,
    },
    /// An action about to be performed.
    Action(Action),
    /// A node's readiness changed.
    Node {
        /// Node name.
        node: String,
        /// What was seen.
        seen: String,
    },
}

impl Event {
    /// Whether this is only a preflight check that passed (a terse display leaves it out).
    pub fn is_passed_check(&self) -> bool {
        #[cfg(feature = "libvirt")]
        if let Self::Check(c) = self {
            return c.status == crate::preflight::Status::Ok;
        }
        false
    }
}

/// One line (two for a failed check with its fix): `[warn] name: detail`, `image: …`,
/// `create domain k8s-cp-1`, `k8s-cp-1: cloud-init running`.
impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "libvirt")]
            Self::Check(c) => write!(f, "{c}"),
            Self::Image { message } => write!(f, "image: {message}"),
            Self::Action(a) => write!(f, "{} {} {}", a.change.label(), a.kind, a.name),
            Self::Node { node, seen } => write!(f, "{node}: {seen}"),
        }
    }
}

/// The callback an operation reports its [`Event`]s to.
pub type Events<'a> = &'a (dyn Fn(Event) + Send + Sync);
