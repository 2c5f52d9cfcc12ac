//! SSH transport on russh: key authentication, a known_hosts policy that never accepts a
//! changed key, commands whose exit status is read until the channel closes, per-command
//! timeouts, non-interactive sudo, atomic file upload, and one reused connection per host
//! with reconnects on failure.
//!
//! Secrets (tokens, certificate keys) go to the remote side on standard input or inside
//! uploaded files, never on a command line.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, client};
use tokio::sync::Mutex;

/// A machine to reach over SSH.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Name used in messages and logs (e.g. the node name).
    pub name: String,
    /// Host name or address.
    pub address: String,
    /// Port (22).
    pub port: u16,
    /// Login user.
    pub user: String,
}

/// What to do with a host key that `known_hosts` does not hold yet. A key that differs from
/// the recorded one is always refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Refuse unknown hosts.
    Strict,
    /// Record an unknown host's key and accept it (trust on first use).
    TrustOnFirstUse,
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Private key to log in with.
    pub private_key: PathBuf,
    /// `known_hosts` file.
    pub known_hosts: PathBuf,
    /// Policy for hosts not in `known_hosts`.
    pub policy: HostKeyPolicy,
    /// Time allowed to connect and authenticate.
    pub connect_timeout: Duration,
    /// Connection attempts before giving up (with exponential backoff in between).
    pub attempts: u32,
}

/// What went wrong, naming the host and what was being done.
#[derive(Debug, thiserror::Error)]
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
}

impl SshError {
    /// Whether a new connection might help (the transport failed, not the command).
    pub fn is_connection_error(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Channel { .. })
    }
}

/// Bytes sent to a command's standard input; never printed.
#[derive(Clone, Default)]
pub struct Stdin(pub Vec<u8>);

impl fmt::Debug for Stdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stdin([{} bytes, redacted])", self.0.len())
    }
}

/// A command to run on a host.
#[derive(Debug, Clone)]
pub struct Cmd {
    /// The command line (run by the login shell, or `sh -c` under sudo).
    pub line: String,
    /// Run as root with `sudo -n` (never prompts: fails instead).
    pub sudo: bool,
    /// Standard input.
    pub stdin: Option<Stdin>,
    /// Time limit.
    pub timeout: Duration,
}

impl Cmd {
    /// A command as the login user with a 5-minute limit.
    pub fn new(line: impl Into<String>) -> Self {
        Self {
            line: line.into(),
            sudo: false,
            stdin: None,
            timeout: Duration::from_secs(300),
        }
    }

    /// The same command as root.
    #[must_use]
    pub fn sudo(mut self) -> Self {
        self.sudo = true;
        self
    }

    /// With standard input.
    #[must_use]
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(Stdin(data.into()));
        self
    }

    /// With a time limit.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What is sent to the server.
    pub fn wire_line(&self) -> String {
        if self.sudo {
            format!("sudo -n -- sh -c {}", shell_quote(&self.line))
        } else {
            self.line.clone()
        }
    }
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Which stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A finished command. Its `Debug` shows the sizes of the streams, never their bytes (what
/// a command prints may be a kubeconfig or a token list).
#[derive(Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit status.
    pub exit_status: u32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("exit_status", &self.exit_status)
            .field("stdout", &crate::steps::Redacted(&self.stdout))
            .field("stderr", &crate::steps::Redacted(&self.stderr))
            .finish()
    }
}

impl Output {
    /// Standard output as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last `n` lines of standard error.
    pub fn stderr_tail(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

struct Checker {
    host: String,
    address: String,
    port: u16,
    known_hosts: PathBuf,
    policy: HostKeyPolicy,
    rejection: Arc<std::sync::Mutex<Option<SshError>>>,
}

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(russh::keys::HashAlg::Sha256).to_string()
}

impl Checker {
    fn learn(&self, key: &PublicKey) -> Result<(), SshError> {
        russh::keys::known_hosts::learn_known_hosts_path(
            &self.address,
            self.port,
            key,
            &self.known_hosts,
        )
        .map_err(|e| SshError::Connect {
            host: self.host.clone(),
            address: self.address.clone(),
            message: format!(
                "cannot record its host key in {}: {e}",
                self.known_hosts.display()
            ),
        })?;
        tracing::info!(host = %self.host, fingerprint = %fingerprint(key), "recorded new host key (trust on first use)");
        Ok(())
    }

    fn unknown(&self, key: &PublicKey) -> Result<(), SshError> {
        match self.policy {
            HostKeyPolicy::TrustOnFirstUse => self.learn(key),
            HostKeyPolicy::Strict => Err(SshError::HostKeyUnknown {
                host: self.host.clone(),
                fingerprint: fingerprint(key),
                known_hosts: self.known_hosts.clone(),
            }),
        }
    }

    fn verdict(&self, key: &PublicKey) -> Result<(), SshError> {
        match russh::keys::check_known_hosts_path(&self.address, self.port, key, &self.known_hosts)
        {
            Ok(true) => Ok(()),
            Ok(false) => self.unknown(key),
            Err(russh::keys::Error::KeyChanged { line }) => Err(SshError::HostKeyChanged {
                host: self.host.clone(),
                fingerprint: fingerprint(key),
                known_hosts: self.known_hosts.clone(),
                line,
            }),
            // A missing file means nothing is known yet.
            Err(russh::keys::Error::IO(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                self.unknown(key)
            }
            Err(e) => Err(SshError::Connect {
                host: self.host.clone(),
                address: self.address.clone(),
                message: format!("cannot read {}: {e}", self.known_hosts.display()),
            }),
        }
    }
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        let verdict = self.verdict(key);
        match verdict {
            Ok(()) => Ok(true),
            Err(e) => {
                if let Ok(mut slot) = self.rejection.lock() {
                    *slot = Some(e);
                }
                Ok(false)
            }
        }
    }
}

/// One authenticated connection.
pub struct Session {
    target: Target,
    handle: client::Handle<Checker>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Loads a private key file.
///
/// # Errors
/// The file cannot be read or parsed (encrypted keys need an agent, which is not supported).
pub fn load_key(path: &Path) -> Result<Arc<PrivateKey>, SshError> {
    russh::keys::load_secret_key(path, None)
        .map(Arc::new)
        .map_err(|e| SshError::Key {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

impl Session {
    /// Connects and logs in once.
    ///
    /// # Errors
    /// Unreachable host, rejected host key, refused login.
    pub async fn connect(
        target: &Target,
        options: &SshOptions,
        key: &Arc<PrivateKey>,
    ) -> Result<Self, SshError> {
        let rejection = Arc::new(std::sync::Mutex::new(None));
        let checker = Checker {
            host: target.name.clone(),
            address: target.address.clone(),
            port: target.port,
            known_hosts: options.known_hosts.clone(),
            policy: options.policy,
            rejection: rejection.clone(),
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(Duration::from_secs(3600)),
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
            ..client::Config::default()
        });
        let address = format!("{}:{}", target.address, target.port);
        let connect_err = |message: String| SshError::Connect {
            host: target.name.clone(),
            address: address.clone(),
            message,
        };
        let connecting = client::connect(config, (target.address.as_str(), target.port), checker);
        let mut handle = match tokio::time::timeout(options.connect_timeout, connecting).await {
            Err(_) => {
                return Err(connect_err(format!(
                    "no answer within {:?}",
                    options.connect_timeout
                )));
            }
            Ok(Err(e)) => {
                if let Some(rejected) = rejection.lock().ok().and_then(|mut r| r.take()) {
                    return Err(rejected);
                }
                return Err(connect_err(e.to_string()));
            }
            Ok(Ok(handle)) => handle,
        };
        // RSA keys sign with the best hash the server supports (never SHA-1 when it offers more).
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| connect_err(e.to_string()))?
            .flatten();
        let auth = handle
            .authenticate_publickey(&target.user, PrivateKeyWithHashAlg::new(key.clone(), hash))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        if !auth.success() {
            return Err(SshError::Auth {
                host: target.name.clone(),
                user: target.user.clone(),
                key: options.private_key.clone(),
            });
        }
        Ok(Self {
            target: target.clone(),
            handle,
        })
    }

    /// The host this session is connected to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Runs a command; `sink` receives its output as it arrives. The exit status is read
    /// until the channel closes (it may come after end-of-file).
    ///
    /// # Errors
    /// The session fails or the command exceeds its time limit. A non-zero exit is not an
    /// error here (see [`Session::run`]).
    pub async fn exec(
        &self,
        cmd: &Cmd,
        sink: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Output, SshError> {
        let line = cmd.wire_line();
        let channel_err = |message: String| SshError::Channel {
            host: self.target.name.clone(),
            command: cmd.line.clone(),
            message,
        };
        let work = async {
            let mut channel = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| channel_err(format!("cannot open a channel: {e}")))?;
            channel
                .exec(true, line.as_str())
                .await
                .map_err(|e| channel_err(format!("cannot start: {e}")))?;
            // Standard input is written while the output is read: a command that echoes its
            // input (cat) would otherwise fill the window and wait forever. Shutting the writer
            // down sends end-of-file.
            let mut writer = channel.make_writer();
            let input = cmd.stdin.clone();
            let write = async move {
                if let Some(Stdin(data)) = input {
                    tokio::io::AsyncWriteExt::write_all(&mut writer, &data).await?;
                }
                tokio::io::AsyncWriteExt::shutdown(&mut writer).await
            };
            let mut out = Output {
                exit_status: 255,
                stdout: Vec::new(),
                stderr: Vec::new(),
            };
            let mut status = None;
            let read = async {
                while let Some(msg) = channel.wait().await {
                    match msg {
                        ChannelMsg::Data { data } => {
                            sink(Stream::Stdout, &data);
                            out.stdout.extend_from_slice(&data);
                        }
                        ChannelMsg::ExtendedData { data, ext: 1 } => {
                            sink(Stream::Stderr, &data);
                            out.stderr.extend_from_slice(&data);
                        }
                        ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                        ChannelMsg::ExitSignal { signal_name, .. } => {
                            out.stderr.extend_from_slice(
                                format!("killed by signal {signal_name:?}").as_bytes(),
                            );
                        }
                        _ => {}
                    }
                }
            };
            let (written, ()) = tokio::join!(write, read);
            if let Err(e) = written {
                // A command may exit without reading all of its input; that is its business.
                tracing::debug!(host = %self.target.name, error = %e, "standard input not fully written");
            }
            out.exit_status = status.ok_or_else(|| {
                channel_err(
                    "the connection closed before the command reported its exit status".into(),
                )
            })?;
            Ok(out)
        };
        match tokio::time::timeout(cmd.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(SshError::Timeout {
                host: self.target.name.clone(),
                command: cmd.line.clone(),
                after: cmd.timeout,
            }),
        }
    }

    /// Runs a command and requires exit status 0.
    ///
    /// # Errors
    /// As [`Session::exec`], or [`SshError::Failed`] with the tail of standard error.
    pub async fn run(&self, cmd: &Cmd) -> Result<Output, SshError> {
        let out = self.exec(cmd, &mut |_, _| {}).await?;
        if out.exit_status == 0 {
            Ok(out)
        } else {
            Err(SshError::Failed {
                host: self.target.name.clone(),
                command: cmd.line.clone(),
                exit_status: out.exit_status,
                stderr_tail: out.stderr_tail(10),
            })
        }
    }

    /// Writes `contents` to `path` atomically (a temporary file in the same directory,
    /// then a rename) with `mode` and, when given, `owner` (`user:group`). The contents
    /// travel on standard input, so secrets never appear in a command line or process list.
    ///
    /// # Errors
    /// The session fails or the remote commands do.
    pub async fn upload(
        &self,
        path: &str,
        contents: &[u8],
        mode: u32,
        owner: Option<&str>,
        sudo: bool,
    ) -> Result<(), SshError> {
        let tmp = format!("{path}.homelab-tmp");
        let chown = owner.map_or(String::new(), |o| {
            format!(" && chown {} {}", shell_quote(o), shell_quote(&tmp))
        });
        let line = format!(
            "umask 077 && mkdir -p \"$(dirname {p})\" && cat > {t} && chmod {mode:o} {t}{chown} && mv -f {t} {p}",
            p = shell_quote(path),
            t = shell_quote(&tmp),
        );
        let mut cmd = Cmd::new(line).stdin(contents.to_vec());
        cmd.sudo = sudo;
        self.run(&cmd).await.map(|_| ())
    }

    /// Reads a remote file (`None` when it does not exist).
    ///
    /// # Errors
    /// The session fails or the file exists but cannot be read.
    pub async fn read_file(&self, path: &str, sudo: bool) -> Result<Option<Vec<u8>>, SshError> {
        let mut cmd = Cmd::new(format!(
            "if [ -e {p} ]; then cat {p}; else exit 3; fi",
            p = shell_quote(path)
        ));
        cmd.sudo = sudo;
        let out = self.exec(&cmd, &mut |_, _| {}).await?;
        match out.exit_status {
            0 => Ok(Some(out.stdout)),
            3 => Ok(None),
            status => Err(SshError::Failed {
                host: self.target.name.clone(),
                command: cmd.line,
                exit_status: status,
                stderr_tail: out.stderr_tail(5),
            }),
        }
    }

    /// Whether the underlying connection is closed.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }
}

/// Connections to many hosts, one per host, reused; a dropped connection is replaced, with
/// exponential backoff between attempts.
pub struct Pool {
    options: SshOptions,
    key: Arc<PrivateKey>,
    /// One slot per host; a slot is locked only while its host is being connected, so
    /// different hosts connect in parallel and one host is never connected twice at once.
    sessions: Mutex<HashMap<Target, Slot>>,
}

/// The session of one host, if connected.
type Slot = Arc<Mutex<Option<Arc<Session>>>>;

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool logging in with `options.private_key`.
    ///
    /// # Errors
    /// The key cannot be loaded.
    pub fn new(options: SshOptions) -> Result<Self, SshError> {
        let key = load_key(&options.private_key)?;
        Ok(Self {
            options,
            key,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// The session to `target`, connecting (with retries) when there is none or it closed.
    ///
    /// # Errors
    /// Every attempt failed; host key and login errors are not retried.
    pub async fn session(&self, target: &Target) -> Result<Arc<Session>, SshError> {
        let slot = self
            .sessions
            .lock()
            .await
            .entry(target.clone())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(s) = slot.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        let session = loop {
            match Session::connect(target, &self.options, &self.key).await {
                Ok(s) => break Arc::new(s),
                Err(e) if e.is_connection_error() && attempt < self.options.attempts.max(1) => {
                    tracing::debug!(host = %target.name, attempt, error = %e, "connect failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(8));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        *slot = Some(session.clone());
        Ok(session)
    }

    /// Forgets the session to `target` (the next use reconnects).
    pub async fn forget(&self, target: &Target) {
        let slot = self.sessions.lock().await.get(target).cloned();
        if let Some(slot) = slot {
            *slot.lock().await = None;
        }
    }

    /// Runs `cmd` on `target`; when the connection broke, reconnects once and runs it again.
    ///
    /// # Errors
    /// As [`Session::run`].
    pub async fn run(&self, target: &Target, cmd: &Cmd) -> Result<Output, SshError> {
        let session = self.session(target).await?;
        match session.run(cmd).await {
            Err(e) if e.is_connection_error() || session.is_closed() => {
                self.forget(target).await;
                self.session(target).await?.run(cmd).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn command_output_is_never_shown_in_debug() {
        let out = Output {
            exit_status: 0,
            stdout: b"client-key-data: c2VjcmV0LWtleQ==\n".to_vec(),
            stderr: b"token abcdef.0123456789abcdef\n".to_vec(),
        };
        let shown = format!("{out:?}");
        assert!(
            !shown.contains("c2VjcmV0") && !shown.contains("0123456789abcdef"),
            "{shown}"
        );
        assert!(
            shown.contains("exit_status: 0") && shown.contains("34 bytes"),
            "{shown}"
        );
    }

    use super::*;

    #[test]
    fn sudo_wraps_and_quotes() {
        let cmd = Cmd::new("echo 'it''s' && id -u").sudo();
        assert_eq!(
            cmd.wire_line(),
            r"sudo -n -- sh -c 'echo '\''it'\'''\''s'\'' && id -u'"
        );
        assert_eq!(Cmd::new("true").wire_line(), "true");
    }

    #[test]
    fn stdin_is_redacted_in_debug() {
        let cmd = Cmd::new("cat").stdin(b"abcdef.0123456789abcdef".to_vec());
        let text = format!("{cmd:?}");
        assert!(!text.contains("abcdef"), "{text}");
        assert!(text.contains("23 bytes, redacted"));
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let out = Output {
            exit_status: 1,
            stdout: vec![],
            stderr: b"a\nb\nc\nd\n".to_vec(),
        };
        assert_eq!(out.stderr_tail(2), "c\nd");
    }
}
