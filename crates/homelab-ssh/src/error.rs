//! What went wrong, naming the host and what was being done.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong, naming the host and what was being done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The private key could not be read.
    #[error("cannot load SSH private key {path}: {message}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// No connection could be made.
    #[error("{host}: cannot connect to {address}: {message}")]
    Connect {
        /// Host name.
        host: String,
        /// Address and port.
        address: String,
        /// Why.
        message: String,
    },
    /// The host is not in `known_hosts` and the policy is strict.
    #[error("{host}: host key {fingerprint} is not in {known_hosts} (strict host key checking)")]
    HostKeyUnknown {
        /// Host name.
        host: String,
        /// SHA-256 fingerprint of the presented key.
        fingerprint: String,
        /// The file.
        known_hosts: PathBuf,
    },
    /// The host presented a key other than the recorded one.
    #[error(
        "{host}: HOST KEY CHANGED: it presented {fingerprint}, which differs from the key recorded in {known_hosts} line {line}; \
         refusing to connect. If the machine was rebuilt on purpose, remove that line."
    )]
    HostKeyChanged {
        /// Host name.
        host: String,
        /// SHA-256 fingerprint of the presented key.
        fingerprint: String,
        /// The file.
        known_hosts: PathBuf,
        /// The line holding the old key.
        line: usize,
    },
    /// The login was refused.
    #[error("{host}: login as {user} with key {key} was refused")]
    Auth {
        /// Host name.
        host: String,
        /// User.
        user: String,
        /// Key file.
        key: PathBuf,
    },
    /// The session failed while running a command.
    #[error("{host}: `{command}`: {message}")]
    Channel {
        /// Host name.
        host: String,
        /// The command line.
        command: String,
        /// Why.
        message: String,
    },
    /// A command ran longer than allowed.
    #[error("{host}: `{command}` did not finish within {after:?}")]
    Timeout {
        /// Host name.
        host: String,
        /// The command line.
        command: String,
        /// The limit.
        after: Duration,
    },
    /// A command exited non-zero.
    #[error("{host}: `{command}` exited with {exit_status}: {stderr_tail}")]
    Failed {
        /// Host name.
        host: String,
        /// The command line.
        command: String,
        /// Exit status.
        exit_status: u32,
        /// The last lines of its standard error.
        stderr_tail: String,
    },
    /// A local file to upload could not be read.
    #[error("{host}: cannot read {path} to upload it: {source}")]
    LocalFile {
        /// Host name.
        host: String,
        /// The local file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The host presented another key than the one pinned for it.
    #[error(
        "{host}: host key mismatch: it presented {fingerprint}, but {expected} was recorded for it (refusing to log in)"
    )]
    HostKeyMismatch {
        /// Host name.
        host: String,
        /// SHA-256 fingerprint of the presented key.
        fingerprint: String,
        /// SHA-256 fingerprint of the pinned key.
        expected: String,
    },
}

impl SshError {
    /// Whether a new connection might help (the transport failed, not the command).
    pub fn is_connection_error(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Channel { .. })
    }
}
