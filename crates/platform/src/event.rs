//! What this crate's waits report while they work: one [`Event`] type, handed to the callback
//! they take as `events: Events<'_>` (`&dyn Fn(Event) + Send + Sync`):
//! [`crate::wait::wait`], [`crate::argocd::bootstrap`] and [`crate::open::serve`] (whose
//! connections' failures are events too, since the listener goes on).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::open::{Endpoint, OpenError};

/// Something an operation of this crate reports while it works.
#[derive(Debug, Clone)]
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
    /// A connection to a port-forward ([`crate::open::serve`]) goes to `endpoint`.
    Forwarding {
        /// Where it goes.
        endpoint: Endpoint,
    },
    /// A forwarded connection ended, after so many bytes each way.
    Forwarded {
        /// Where it went.
        endpoint: Endpoint,
        /// Bytes from the local side to the pod.
        sent: u64,
        /// Bytes from the pod to the local side.
        received: u64,
    },
    /// A connection could not be forwarded (it was closed); the listener goes on.
    NotForwarded(Arc<OpenError>),
}

/// `wave 2: a, b`, `a: waiting for check: detail`, `a: ready after 12s`, `forwarding to pod
/// p port 3000`, `closed: pod p port 3000 (12 bytes sent, 340 received)`, `connection not
/// forwarded: …`.
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
            Self::Forwarding { endpoint } => {
                write!(
                    f,
                    "forwarding to pod {} port {}",
                    endpoint.pod, endpoint.port
                )
            }
            Self::Forwarded {
                endpoint,
                sent,
                received,
            } => write!(
                f,
                "closed: pod {} port {} ({sent} bytes sent, {received} received)",
                endpoint.pod, endpoint.port
            ),
            Self::NotForwarded(e) => write!(f, "connection not forwarded: {e}"),
        }
    }
}

/// The callback an operation reports its [`Event`]s to.
pub type Events<'a> = &'a (dyn Fn(Event) + Send + Sync);
