//! What went wrong, naming the host and what was being done.

use std::path::PathBuf;
use std::time::Duration;

/// An underlying error, kept as the source of an [`SshError`].
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, naming the host and what was being done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The private key could not be read.
    #[error("cannot load SSH private key {path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why (reading it, or decoding it).
        #[source]
        source: Cause,
    },
    /// The private key may be read by others: refused, as OpenSSH refuses it.
    #[error(
        "SSH private key {path} has permissions {mode:04o}, too open: others could read it (chmod 600 {path})"
    )]
    KeyTooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// No connection could be made.
    #[error("{host}: cannot connect to {address}: {source}")]
    Connect {
        /// Host name.
        host: String,
        /// Address and port.
        address: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// The connection and login did not finish in time.
    #[error("{host}: cannot connect to {address}: no login within {after:?}")]
    LoginTimeout {
        /// Host name.
        host: String,
        /// Address and port.
        address: String,
        /// The limit.
        after: Duration,
    },
    /// The `known_hosts` file could not be read or written.
    #[error("{host}: cannot {action} {known_hosts}: {source}")]
    KnownHosts {
        /// Host name.
        host: String,
        /// `read`, or `record its host key in`.
        action: &'static str,
        /// The file.
        known_hosts: PathBuf,
        /// Why.
        #[source]
        source: Cause,
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
    #[error("{host}: `{command}`: {stage}: {source}")]
    Channel {
        /// Host name.
        host: String,
        /// The command line.
        command: String,
        /// What failed (`cannot open a channel`, `cannot start`).
        stage: &'static str,
        /// Why.
        #[source]
        source: Cause,
    },
    /// The connection closed before the command reported its exit status.
    #[error(
        "{host}: `{command}`: the connection closed before the command reported its exit status"
    )]
    NoExitStatus {
        /// Host name.
        host: String,
        /// The command line.
        command: String,
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
        matches!(
            self,
            Self::Connect { .. }
                | Self::LoginTimeout { .. }
                | Self::Channel { .. }
                | Self::NoExitStatus { .. }
        )
    }
}
