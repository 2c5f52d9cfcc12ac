//! What a transfer reports while it works: one [`Event`] type, told to the callback the
//! registry client keeps ([`Events`], given with
//! [`registry::Options::events`](crate::registry::Options::events)) from every task of the
//! transfer. It is the convention of the other layers (an `Event` enum per crate, told to a
//! `Fn(Event) + Send + Sync`), held in an `Arc` here because the client keeps it.
//!
//! ```
//! use std::sync::Arc;
//! use harbor_client::{Event, registry::Options};
//!
//! let options = Options::default().events(Some(Arc::new(|event: Event<'_>| {
//!     if let Event::Done { digest } = event {
//!         eprintln!("{digest} done");
//!     }
//! })));
//! assert!(options.events.is_some());
//! ```

use std::fmt;
use std::sync::Arc;

use crate::reference::Digest;

/// Something a transfer reports: a blob starts, moves, is done.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A blob starts moving.
    Start {
        /// Its digest.
        digest: &'a Digest,
        /// Its size.
        size: u64,
    },
    /// Bytes of a blob moved (since the last report).
    Bytes {
        /// Its digest.
        digest: &'a Digest,
        /// How many.
        n: u64,
    },
    /// A blob is complete (verified, for downloads).
    Done {
        /// Its digest.
        digest: &'a Digest,
    },
}

/// `sha256:…: 1024 bytes to move`, `sha256:…: 512 bytes moved`, `sha256:…: done`.
impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start { digest, size } => write!(f, "{digest}: {size} bytes to move"),
            Self::Bytes { digest, n } => write!(f, "{digest}: {n} bytes moved"),
            Self::Done { digest } => write!(f, "{digest}: done"),
        }
    }
}

/// The callback a registry client tells its transfers' [`Event`]s to.
pub type Events = Arc<dyn Fn(Event<'_>) + Send + Sync>;
