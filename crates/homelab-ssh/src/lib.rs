//! The one SSH client of homelab, on [russh]: every layer that logs in to a machine uses it.
//!
//! - [`Session`]: one authenticated connection — [`Session::exec`] streams a command's
//!   output and reads its exit status until the channel closes, [`Session::run`] requires
//!   status 0, [`Session::upload`] writes a file atomically with the contents on standard
//!   input (never on a command line), [`Session::read_file`].
//! - [`Pool`]: one reused connection per host, connected in parallel, replaced with
//!   exponential backoff when it drops.
//! - Host keys ([`HostKeys`]): either a `known_hosts` file with a policy for hosts it does not
//!   know ([`HostKeyPolicy`]), or one key pinned in advance (a VM whose host key was written
//!   into its seed). A host whose recorded keys do not include the presented one is refused
//!   whatever the policy; learned keys are written under a file lock and always logged.
//! - [`read_banner`]: connect and read the server's identification line first, so a caller
//!   can tell "nothing listens" from "not SSH" from "SSH, but the login failed", then log in on
//!   the same connection.
//!
//! ```no_run
//! # async fn demo() -> Result<(), homelab_ssh::SshError> {
//! use std::time::Duration;
//! use homelab_ssh::{Cmd, HostKeyPolicy, Pool, SshOptions, Target};
//!
//! let pool = Pool::new(SshOptions {
//!     private_key: "/home/me/.ssh/id_ed25519".into(),
//!     known_hosts: "/home/me/.ssh/known_hosts".into(),
//!     policy: HostKeyPolicy::Strict,
//!     connect_timeout: Duration::from_secs(10),
//!     attempts: 3,
//! })?;
//! let node = Target::new("cp1", "192.168.122.10", "debian");
//! let out = pool.run(&node, &Cmd::new("uname -r")).await?;
//! println!("{}", out.stdout_text().trim());
//! # Ok(()) }
//! ```

mod banner;
mod command;
mod error;
mod host_keys;
mod pool;
mod session;

pub use banner::{BannerError, BannerStream, read_banner};
pub use command::{Cmd, Output, Redacted, Stdin, Stream, shell_quote};
pub use error::{Cause, SshError};
pub use host_keys::{HostKeyPolicy, HostKeys, LEARNED_TARGET, fingerprint, record_known_host};
pub use pool::Pool;
pub use session::{Session, SshOptions, Target, load_key};

/// Re-exported so users can name keys without depending on russh themselves.
pub use russh::keys::{Algorithm, EcdsaCurve, PrivateKey, PublicKey};
