//! What this crate's waits report while they work: one [`Event`] type, handed to the callback
//! they take as `events: Events<'_>` (`&dyn Fn(Event) + Send + Sync`):
//! [`crate::wait::wait`] and [`crate::argocd::bootstrap`]. (A port-forward's connections are
//! told as [`crate::open::ForwardEvent`]s, which carry its errors.)

use std::fmt;
use std::time::Duration;

/// Something an operation of this crate reports while it works.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A wave is being waited on.
    Wave {
        /// Its number.
        wave: i64,
        /// Its components.
        components: Vec<String>,
    },
    /// A component's first failing check changed (it is still waited on).
    Waiting {
        /// Component.
        component: String,
        /// The check.
        check: String,
        /// What it saw.
        detail: String,
    },
    /// A component became ready.
    Ready {
        /// Component.
        component: String,
        /// Since the wait began.
        elapsed: Duration,
    },
}

/// `wave 2: a, b`, `a: waiting for check: detail`, `a: ready after 12s`.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wave { wave, components } => write!(f, "wave {wave}: {}", components.join(", ")),
            Self::Waiting {
                component,
                check,
                detail,
            } => write!(f, "{component}: waiting for {check}: {detail}"),
            Self::Ready { component, elapsed } => {
                write!(f, "{component}: ready after {}s", elapsed.as_secs())
            }
        }
    }
}

/// The callback an operation reports its [`Event`]s to.
pub type Events<'a> = &'a (dyn Fn(Event) + Send + Sync);
