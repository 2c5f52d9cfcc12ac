//! Waiting until nodes are ready: TCP 22 answers with an SSH banner, the node proves the
//! host key recorded when its seed was made, the login works, and cloud-init has finished
//! (`/var/lib/cloud/instance/boot-finished` exists). A DHCP lease proves nothing of that.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, client};
use tokio::io::AsyncBufReadExt;
use tokio::task::JoinSet;

use crate::error::{Error, Result};

/// How often a node that is not ready yet is probed again.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// The command whose success means cloud-init has finished. The `sync` makes what
/// cloud-init wrote (host keys, the login user) durable before the node is called ready, so
/// a power cut right after cannot lose it.
pub const CLOUD_INIT_DONE: &str = "test -f /var/lib/cloud/instance/boot-finished && sync";

/// One node to wait for.
#[derive(Debug, Clone)]
pub struct ReadyTarget {
    /// Node name (for messages).
    pub name: String,
    /// Its address.
    pub ip: IpAddr,
    /// SSH port (22).
    pub port: u16,
    /// The host key the node must present (`ssh-ed25519 AAAA...`).
    pub host_key: String,
    /// Login user.
    pub user: String,
    /// Private key file to log in with.
    pub private_key: PathBuf,
    /// Where the node's serial console is logged (for the error message).
    pub console_log: String,
    /// The command whose success means the node is ready ([`CLOUD_INIT_DONE`]).
    pub ready_command: String,
}

/// What was last seen of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// No probe has finished yet.
    NotProbed,
    /// Nothing answered on the SSH port.
    NoAnswer(String),
    /// Something answered but sent no SSH banner.
    NoBanner(String),
    /// SSH answered (banner shown) but the session failed.
    Ssh {
        /// The server's banner.
        banner: String,
        /// What failed.
        error: String,
    },
    /// Logged in; cloud-init is still running.
    CloudInitRunning {
        /// The server's banner.
        banner: String,
    },
    /// Ready.
    Ready,
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotProbed => f.write_str("no probe has finished yet"),
            Self::NoAnswer(e) => write!(f, "no answer on the SSH port ({e})"),
            Self::NoBanner(e) => write!(f, "the SSH port answered without a banner ({e})"),
            Self::Ssh { banner, error } => write!(f, "banner `{banner}`, then {error}"),
            Self::CloudInitRunning { banner } => {
                write!(f, "banner `{banner}`, logged in, cloud-init not finished")
            }
            Self::Ready => f.write_str("ready"),
        }
    }
}

struct Verifier {
    expected: PublicKey,
    mismatch: Arc<std::sync::Mutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let ok = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.key_data() == self.expected.key_data()
            }
            russh::keys::PublicKeyOrCertificate::Certificate(_) => false,
        };
        if !ok && let Ok(mut slot) = self.mismatch.lock() {
            let presented = match key {
                russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                    key.fingerprint(russh::keys::HashAlg::default()).to_string()
                }
                russh::keys::PublicKeyOrCertificate::Certificate(_) => "a certificate".into(),
            };
            *slot = Some(format!(
                "host key mismatch: the node presented {presented}, but {} was recorded for it (refusing to log in)",
                self.expected.fingerprint(russh::keys::HashAlg::default())
            ));
        }
        Ok(ok)
    }
}

/// A connection whose first bytes (the server's identification line, and whatever was read
/// with it) were consumed to look at them; they are handed to the SSH client again first, so
/// one TCP connection serves both the banner check and the session.
struct Replay {
    prefix: Vec<u8>,
    pos: usize,
    inner: tokio::net::TcpStream,
}

impl tokio::io::AsyncRead for Replay {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Replay {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Connects and reads the SSH identification line the server sends first.
async fn banner(addr: SocketAddr) -> Result<(String, Replay), Seen> {
    let stream = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| Seen::NoAnswer("connect timed out".into()))?
        .map_err(|e| Seen::NoAnswer(e.to_string()))?;
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 && line.starts_with("SSH-") => {
            let mut prefix = line.clone().into_bytes();
            prefix.extend_from_slice(reader.buffer());
            Ok((
                line.trim_end().to_owned(),
                Replay {
                    prefix,
                    pos: 0,
                    inner: reader.into_inner(),
                },
            ))
        }
        Ok(Ok(_)) => Err(Seen::NoBanner(format!("got {:?}", line.trim_end()))),
        Ok(Err(e)) => Err(Seen::NoBanner(e.to_string())),
        Err(_) => Err(Seen::NoBanner("no banner within 5s".into())),
    }
}

/// Probes one node once.
pub async fn probe(target: &ReadyTarget, key: &Arc<PrivateKey>) -> Seen {
    let addr = SocketAddr::new(target.ip, target.port);
    let (banner, stream) = match banner(addr).await {
        Ok(b) => b,
        Err(seen) => return seen,
    };
    let ssh_err = |error: String| Seen::Ssh {
        banner: banner.clone(),
        error,
    };
    let expected = match PublicKey::from_openssh(&target.host_key) {
        Ok(k) => k,
        Err(e) => return ssh_err(format!("the recorded host key does not parse: {e}")),
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(Duration::from_secs(10)),
        ..client::Config::default()
    });
    let mismatch = Arc::new(std::sync::Mutex::new(None));
    let verifier = Verifier {
        expected,
        mismatch: mismatch.clone(),
    };
    let mut session = match tokio::time::timeout(
        Duration::from_secs(10),
        client::connect_stream(config, stream, verifier),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let recorded = mismatch.lock().ok().and_then(|m| m.clone());
            return ssh_err(recorded.unwrap_or_else(|| format!("handshake failed: {e}")));
        }
        Err(_) => return ssh_err("handshake timed out".into()),
    };
    let hash = session
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();
    match session
        .authenticate_publickey(&target.user, PrivateKeyWithHashAlg::new(key.clone(), hash))
        .await
    {
        Ok(r) if r.success() => {}
        Ok(_) => {
            return ssh_err(format!(
                "login as {} was refused (cloud-init may not have added the key yet)",
                target.user
            ));
        }
        Err(e) => return ssh_err(format!("login failed: {e}")),
    }
    let code = run(&mut session, &target.ready_command).await;
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    match code {
        Ok(0) => Seen::Ready,
        Ok(_) => Seen::CloudInitRunning { banner },
        Err(e) => ssh_err(e),
    }
}

async fn run(session: &mut client::Handle<Verifier>, command: &str) -> Result<u32, String> {
    let mut channel = session
        .channel_open_session()
        .await
        .map_err(|e| format!("cannot open a session: {e}"))?;
    channel
        .exec(true, command)
        .await
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    let mut code = None;
    // Read until the channel closes, not until EOF: the exit status may come after EOF.
    while let Some(msg) = channel.wait().await {
        if let ChannelMsg::ExitStatus { exit_status } = msg {
            code = Some(exit_status);
        }
    }
    code.ok_or_else(|| format!("`{command}` ended without an exit status"))
}

/// Waits, concurrently, until every target is ready or `timeout` passes. `progress` is told
/// each time a node's state changes. `describe` is asked, on timeout, for what the
/// hypervisor says of a node (e.g. its domain state).
///
/// # Errors
/// A private key cannot be read, or some nodes are not ready in time: the error names each,
/// what was last seen, the elapsed time and its console log.
pub async fn wait_ready(
    targets: &[ReadyTarget],
    timeout: Duration,
    progress: &(dyn Fn(&str, &Seen) + Send + Sync),
    describe: &(dyn Fn(&str) -> String + Send + Sync),
) -> Result<()> {
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Seen)>();
    let mut set = JoinSet::new();
    for (index, target) in targets.iter().enumerate() {
        let key =
            russh::keys::load_secret_key(&target.private_key, None).map_err(|e| Error::Io {
                action: "read the SSH private key",
                path: target.private_key.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let key = Arc::new(key);
        let target = target.clone();
        let tx = tx.clone();
        set.spawn(async move {
            let mut last = None;
            loop {
                let seen = probe(&target, &key).await;
                let ready = seen == Seen::Ready;
                if last.as_ref() != Some(&seen) {
                    last = Some(seen.clone());
                    if tx.send((index, seen)).is_err() {
                        return;
                    }
                }
                if ready {
                    return;
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        });
    }
    drop(tx);
    let mut state: Vec<Seen> = vec![Seen::NotProbed; targets.len()];
    let all_ready = tokio::time::timeout(timeout, async {
        let mut ready = 0;
        while ready < targets.len() {
            let Some((index, seen)) = rx.recv().await else {
                break;
            };
            progress(&targets[index].name, &seen);
            if seen == Seen::Ready {
                ready += 1;
            }
            state[index] = seen;
        }
    })
    .await;
    set.abort_all();
    if all_ready.is_ok() && state.iter().all(|s| *s == Seen::Ready) {
        return Ok(());
    }
    let nodes = targets
        .iter()
        .zip(&state)
        .filter(|(_, seen)| **seen != Seen::Ready)
        .map(|(t, seen)| {
            format!(
                "  {} ({}): last seen: {seen}; hypervisor: {}; console log: {}",
                t.name,
                t.ip,
                describe(&t.name),
                t.console_log
            )
        })
        .collect();
    Err(Error::NotReady {
        elapsed: started.elapsed(),
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_times_out_with_a_precise_message() {
        // Bind then drop a listener to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let key =
            russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
                .unwrap();
        let key_path = dir.path().join("id");
        std::fs::write(
            &key_path,
            key.to_openssh(russh::keys::ssh_key::LineEnding::LF)
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let target = ReadyTarget {
            name: "n1".into(),
            ip: "127.0.0.1".parse().unwrap(),
            port,
            host_key: key.public_key().to_openssh().unwrap(),
            user: "ops".into(),
            private_key: key_path,
            console_log: "/var/log/libvirt/qemu/n1-serial.log".into(),
            ready_command: CLOUD_INIT_DONE.into(),
        };
        // What a probe of a closed port sees, checked on its own...
        let loaded = Arc::new(russh::keys::load_secret_key(&target.private_key, None).unwrap());
        let seen = probe(&target, &loaded).await;
        assert!(
            matches!(&seen, Seen::NoAnswer(e) if e.contains("refused")),
            "{seen:?}"
        );
        // ...and the timeout, with a deadline long enough for a loaded machine to finish the
        // first probe: the message then carries what that probe saw.
        let seen = std::sync::Mutex::new(Vec::new());
        let err = wait_ready(
            &[target],
            Duration::from_secs(2),
            &|name, s| seen.lock().unwrap().push(format!("{name}: {s}")),
            &|_| "running".into(),
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "n1 (127.0.0.1): last seen: no answer on the SSH port (Connection refused"
            ),
            "{text}"
        );
        assert!(text.contains("hypervisor: running"), "{text}");
        assert!(
            text.contains("console log: /var/log/libvirt/qemu/n1-serial.log"),
            "{text}"
        );
        assert!(!seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_port_without_ssh_is_not_mistaken_for_a_node() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        match banner(addr).await {
            Err(Seen::NoBanner(e)) => assert!(e.contains("HTTP/1.1"), "{e}"),
            Err(other) => panic!("unexpected {other:?}"),
            Ok((b, _)) => panic!("unexpected banner {b}"),
        }
    }
}
