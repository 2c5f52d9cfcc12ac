//! What this crate's long operations report while they work: one [`Event`] type, handed to
//! the callback they take as `events: Events<'_>` (`&dyn Fn(Event) + Send + Sync`), today
//! [`crate::status::wait`].

use std::fmt;

/// Something an operation of this crate reports while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// What still keeps the Application tree from being Synced and Healthy, one line per
    /// Application (`web: OutOfSync/Degraded: …`); told whenever it changes.
    Waiting(Vec<String>),
}

/// `waiting: a; b`.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Waiting(problems) => write!(f, "waiting: {}", problems.join("; ")),
        }
    }
}

/// The callback an operation reports its [`Event`]s to.
pub type Events<'a> = &'a (dyn Fn(Event) + Send + Sync);
