//! One authenticated connection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use russh::{ChannelMsg, client};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::Cause;
use crate::{Cmd, HostKeyPolicy, HostKeys, Output, SshError, Stdin, Stream, shell_quote};

/// The ciphers offered, in order: russh's own list with AES-256-GCM ahead of
/// ChaCha20-Poly1305.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

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

impl Target {
    /// A machine on port 22.
    pub fn new(
        name: impl Into<String>,
        address: impl Into<String>,
        user: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            address: address.into(),
            port: 22,
            user: user.into(),
        }
    }
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

impl SshOptions {
    /// The host-key check these options ask for.
    pub fn host_keys(&self) -> HostKeys {
        HostKeys::KnownHosts {
            file: self.known_hosts.clone(),
            policy: self.policy,
        }
    }
}

/// Checks the server's key for russh and keeps the reason of a refusal for the error.
pub(crate) struct Checker {
    host: String,
    address: String,
    port: u16,
    keys: HostKeys,
    rejection: Arc<std::sync::Mutex<Option<SshError>>>,
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
        match self.keys.verify(&self.host, &self.address, self.port, key) {
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
///
/// ```no_run
/// # async fn demo(options: homelab_ssh::SshOptions) -> Result<(), homelab_ssh::SshError> {
/// use homelab_ssh::{Cmd, Session, Stream, Target, load_key};
///
/// let key = load_key(&options.private_key)?;
/// let node = Target::new("cp1", "192.168.122.10", "debian");
/// let session = Session::connect(&node, &options, &key).await?;
/// // Output as it arrives; a non-zero exit is an answer here, not an error.
/// let out = session
///     .exec(&Cmd::new("journalctl -u kubelet -n 20"), &mut |stream, bytes| {
///         if stream == Stream::Stdout {
///             print!("{}", String::from_utf8_lossy(bytes));
///         }
///     })
///     .await?;
/// println!("exit {}", out.exit_status);
/// // Files: written atomically with a mode, read back (`None` when absent).
/// session.upload("/etc/motd", b"homelab\n", 0o644, None, true).await?;
/// assert_eq!(session.read_file("/etc/motd", false).await?.as_deref(), Some(&b"homelab\n"[..]));
/// session.disconnect().await;
/// # Ok(()) }
/// ```
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

/// Loads a private key file. Like OpenSSH, it refuses a key that its group or others can read;
/// the file is opened once and its mode checked on that handle.
///
/// # Errors
/// The file cannot be read, is readable by others, or is not a key (encrypted keys need an
/// agent, which is not supported).
pub fn load_key(path: &Path) -> Result<Arc<PrivateKey>, SshError> {
    use std::io::Read;
    let fail = |source: Cause| SshError::Key {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(|e| fail(e.into()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file
            .metadata()
            .map_err(|e| fail(e.into()))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(SshError::KeyTooOpen {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|e| fail(e.into()))?;
    russh::keys::decode_secret_key(&text, None)
        .map(Arc::new)
        .map_err(|e| fail(e.into()))
}

/// Where a connection comes from.
enum Transport<S> {
    Dial,
    Stream(S),
}

impl Session {
    /// Connects and logs in once, checking the host key against `options.known_hosts`.
    ///
    /// # Errors
    /// Unreachable host, rejected host key, refused login.
    pub async fn connect(
        target: &Target,
        options: &SshOptions,
        key: &Arc<PrivateKey>,
    ) -> Result<Self, SshError> {
        Self::establish::<tokio::net::TcpStream>(
            target,
            Transport::Dial,
            options.host_keys(),
            key,
            &options.private_key,
            options.connect_timeout,
        )
        .await
    }

    /// Logs in over a connection the caller opened (for example a [`crate::BannerStream`]
    /// whose identification line was read first), checking the host key with `keys`.
    /// `key_path` only names the key in a refused login's message.
    ///
    /// # Errors
    /// Rejected host key, refused login, no handshake within `timeout`.
    pub async fn connect_stream<S>(
        target: &Target,
        stream: S,
        keys: HostKeys,
        key: &Arc<PrivateKey>,
        key_path: &Path,
        timeout: Duration,
    ) -> Result<Self, SshError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::establish(
            target,
            Transport::Stream(stream),
            keys,
            key,
            key_path,
            timeout,
        )
        .await
    }

    async fn establish<S>(
        target: &Target,
        transport: Transport<S>,
        keys: HostKeys,
        key: &Arc<PrivateKey>,
        key_path: &Path,
        timeout: Duration,
    ) -> Result<Self, SshError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let rejection = Arc::new(std::sync::Mutex::new(None));
        let checker = Checker {
            host: target.name.clone(),
            address: target.address.clone(),
            port: target.port,
            keys,
            rejection: rejection.clone(),
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(Duration::from_secs(3600)),
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
            // Bulk transfers (snapshots, bundles) are bounded by the cipher and the window:
            // AES-GCM first (ring's, on the CPU's AES instructions where it has them, constant
            // time where not), and 8 MiB in flight instead of 2.
            preferred: russh::Preferred {
                cipher: std::borrow::Cow::Borrowed(CIPHERS),
                ..russh::Preferred::default()
            },
            window_size: 8 << 20,
            ..client::Config::default()
        });
        let address = format!("{}:{}", target.address, target.port);
        let connect_err = |source: russh::Error| SshError::Connect {
            host: target.name.clone(),
            address: address.clone(),
            source: source.into(),
        };
        let login = async {
            let mut handle = match transport {
                Transport::Dial => {
                    client::connect(config, (target.address.as_str(), target.port), checker).await
                }
                Transport::Stream(stream) => client::connect_stream(config, stream, checker).await,
            }
            .map_err(|e| {
                rejection
                    .lock()
                    .ok()
                    .and_then(|mut r| r.take())
                    .unwrap_or_else(|| connect_err(e))
            })?;
            // RSA keys sign with the best hash the server supports (never SHA-1 when it
            // offers more).
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .map_err(connect_err)?
                .flatten();
            let auth = handle
                .authenticate_publickey(&target.user, PrivateKeyWithHashAlg::new(key.clone(), hash))
                .await
                .map_err(connect_err)?;
            if !auth.success() {
                return Err(SshError::Auth {
                    host: target.name.clone(),
                    user: target.user.clone(),
                    key: key_path.to_owned(),
                });
            }
            Ok(handle)
        };
        let handle =
            tokio::time::timeout(timeout, login)
                .await
                .map_err(|_| SshError::LoginTimeout {
                    host: target.name.clone(),
                    address: address.clone(),
                    after: timeout,
                })??;
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
        self.exec_with(cmd, None, sink, true).await
    }

    /// As [`Session::exec`], but standard output goes only to `sink` (the returned
    /// [`Output`] has none): a command that writes gigabytes (a database snapshot streamed
    /// with `cat`) costs this side no more memory than one message.
    ///
    /// # Errors
    /// As [`Session::exec`].
    pub async fn exec_streaming(
        &self,
        cmd: &Cmd,
        sink: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Output, SshError> {
        self.exec_with(cmd, None, sink, false).await
    }

    /// As [`Session::exec`], with standard input streamed from `input` (instead of the
    /// command's own) so that a large file never sits in memory.
    async fn exec_with(
        &self,
        cmd: &Cmd,
        input: Option<Box<dyn AsyncRead + Send + Unpin + '_>>,
        sink: &mut (dyn FnMut(Stream, &[u8]) + Send),
        keep_stdout: bool,
    ) -> Result<Output, SshError> {
        let line = cmd.wire_line();
        let channel_err = |stage: &'static str| {
            move |source: russh::Error| SshError::Channel {
                host: self.target.name.clone(),
                command: cmd.line.clone(),
                stage,
                source: source.into(),
            }
        };
        let work = async {
            let mut channel = self
                .handle
                .channel_open_session()
                .await
                .map_err(channel_err("cannot open a channel"))?;
            channel
                .exec(true, line.as_str())
                .await
                .map_err(channel_err("cannot start"))?;
            // Standard input is written while the output is read: a command that echoes its
            // input (cat) would otherwise fill the window and wait forever. Shutting the writer
            // down sends end-of-file.
            let mut writer = channel.make_writer();
            let data = cmd.stdin.clone();
            let write = async move {
                if let Some(mut input) = input {
                    tokio::io::copy(&mut input, &mut writer).await?;
                } else if let Some(Stdin(data)) = data {
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
                            if keep_stdout {
                                out.stdout.extend_from_slice(&data);
                            }
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
            out.exit_status = status.ok_or_else(|| SshError::NoExitStatus {
                host: self.target.name.clone(),
                command: cmd.line.clone(),
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
        let chown = owner.map_or(String::new(), |o| {
            format!(" && chown {} \"$t\"", shell_quote(o))
        });
        let line = format!(
            "{t} && (umask 022 && mkdir -p \"$(dirname {p})\") && umask 077 && trap 'rm -f \"$t\"' EXIT HUP INT TERM && \
             cat > \"$t\" && chmod {mode:o} \"$t\"{chown} && mv -f \"$t\" {p}",
            p = shell_quote(path),
            t = temporary_beside(path),
        );
        let mut cmd = Cmd::new(line).stdin(contents.to_vec());
        cmd.sudo = sudo;
        self.run(&cmd).await.map(|_| ())
    }

    /// Copies the local file `local` to `path`, streamed from disk (bounded memory whatever
    /// its size), and installs it with `mode` only when the copy's sha256 on the host is
    /// `sha256` (lower-case hex): a temporary file beside `path`, checked with `sha256sum`,
    /// then renamed; on any failure the temporary file is removed and `path` is untouched.
    ///
    /// # Errors
    /// The local file cannot be read, the session fails, or the copy on the host has another
    /// digest (the error names both).
    pub async fn upload_file(
        &self,
        local: &Path,
        path: &str,
        mode: u32,
        sha256: &str,
        sudo: bool,
    ) -> Result<(), SshError> {
        let file = tokio::fs::File::open(local)
            .await
            .map_err(|source| SshError::LocalFile {
                host: self.target.name.clone(),
                path: local.to_owned(),
                source,
            })?;
        let line = format!(
            "{t} && (umask 022 && mkdir -p \"$(dirname {p})\") && umask 077 && trap 'rm -f \"$t\"' EXIT HUP INT TERM && \
             cat > \"$t\" && got=$(sha256sum \"$t\" | cut -d' ' -f1) && \
             if [ \"$got\" != {want} ]; then echo \"the copy of {l} on this host has sha256 $got, not {sha}\" >&2; exit 1; fi && \
             chmod {mode:o} \"$t\" && mv -f \"$t\" {p}",
            p = shell_quote(path),
            t = temporary_beside(path),
            want = shell_quote(sha256),
            sha = sha256,
            l = shell_quote(&local.display().to_string()),
        );
        let mut cmd = Cmd::new(line).timeout(Duration::from_secs(1800));
        cmd.sudo = sudo;
        let out = self
            .exec_with(&cmd, Some(Box::new(file)), &mut |_, _| {}, true)
            .await?;
        if out.exit_status == 0 {
            Ok(())
        } else {
            Err(SshError::Failed {
                host: self.target.name.clone(),
                command: cmd.line.clone(),
                exit_status: out.exit_status,
                stderr_tail: out.stderr_tail(5),
            })
        }
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

    /// Ends the session politely (the server logs a normal disconnect).
    pub async fn disconnect(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }

    /// Whether the underlying connection is closed.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }
}

/// The shell assignment of `$t`, the temporary file an upload writes before renaming it to
/// `path`: beside it (the rename stays on one file system), named after it and the remote
/// shell's process id, so two uploads of the same path at once (two runs, or two "hosts"
/// that share a file system) never write one temporary file.
fn temporary_beside(path: &str) -> String {
    format!("t={}.$$", shell_quote(&format!("{path}.homelab-tmp")))
}
