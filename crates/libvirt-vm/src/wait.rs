//! Waiting until nodes are ready: TCP 22 answers with an SSH banner, the node proves the
//! host key recorded when its seed was made, the login works, and cloud-init has finished
//! (`/var/lib/cloud/instance/boot-finished` exists) and is turned off for the boots to come.
//! A DHCP lease proves nothing of that.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use homelab_ssh::{
    BannerError, Cmd, HostKeys, PrivateKey, PublicKey, Session, SshError, Target, read_banner,
};
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::event::{Event, Events};

/// How often a node that is not ready yet is probed again.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// The command whose success means cloud-init has finished. Once it has, cloud-init is
/// turned off for later boots (`/etc/cloud/cloud-init.disabled`): the seed is removed after
/// the first boot ([`crate::Hypervisor::retire_seeds`]), and a cloud-init that found no seed
/// would take the node for a new instance and replace its host keys. The `sync` makes what
/// cloud-init wrote (host keys, the login user) durable before the node is called ready, so
/// a power cut right after cannot lose it.
///
/// Exit status 1 means cloud-init is still running; any other failure is reported as such.
pub const CLOUD_INIT_DONE: &str = "test -f /var/lib/cloud/instance/boot-finished || exit 1; \
     test -f /etc/cloud/cloud-init.disabled || sudo -n touch /etc/cloud/cloud-init.disabled || exit 2; \
     sync";

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

/// Probes one node once: the SSH port answers with a banner, the node proves the host key
/// pinned for it, the login works and the ready command succeeds. The port has 3 s to
/// answer and the banner 5 s to come.
pub async fn probe(target: &ReadyTarget, key: &Arc<PrivateKey>) -> Seen {
    probe_within(target, key, Duration::from_secs(5)).await
}

/// [`probe`] with `banner` as the time the banner may take (a node busy under software
/// emulation forks its sshd slowly).
pub async fn probe_within(target: &ReadyTarget, key: &Arc<PrivateKey>, banner: Duration) -> Seen {
    let addr = SocketAddr::new(target.ip, target.port);
    let (banner, stream) = match read_banner(addr, Duration::from_secs(3), banner).await {
        Ok(b) => b,
        Err(BannerError::NoAnswer(e)) => return Seen::NoAnswer(e.to_string()),
        Err(BannerError::NoBanner(e)) => return Seen::NoBanner(e.to_string()),
        Err(BannerError::NotSsh(line)) => return Seen::NoBanner(format!("got {line:?}")),
        // A kind of answer this crate does not know yet: no SSH server there.
        Err(e) => return Seen::NoBanner(e.to_string()),
    };
    let ssh_err = |error: String| Seen::Ssh {
        banner: banner.clone(),
        error,
    };
    let expected = match PublicKey::from_openssh(&target.host_key) {
        Ok(k) => k,
        Err(e) => return ssh_err(format!("the recorded host key does not parse: {e}")),
    };
    let ssh_target = Target {
        name: target.name.clone(),
        address: target.ip.to_string(),
        port: target.port,
        user: target.user.clone(),
    };
    let session = match Session::connect_stream(
        &ssh_target,
        stream,
        HostKeys::Pinned(expected),
        key,
        &target.private_key,
        Duration::from_secs(10),
    )
    .await
    {
        Ok(s) => s,
        Err(SshError::Auth { user, .. }) => {
            return ssh_err(format!(
                "login as {user} was refused (cloud-init may not have added the key yet)"
            ));
        }
        Err(e) => return ssh_err(e.to_string()),
    };
    let ready = Cmd::new(target.ready_command.clone()).timeout(Duration::from_secs(10));
    let out = session.exec(&ready, &mut |_, _| {}).await;
    session.disconnect().await;
    match out {
        Ok(out) if out.exit_status == 0 => Seen::Ready,
        Ok(out) if out.exit_status == 1 => Seen::CloudInitRunning { banner },
        Ok(out) => {
            let tail = out.stderr_tail(1);
            ssh_err(format!(
                "the ready check failed with exit status {} (turning cloud-init off needs `sudo -n`){}",
                out.exit_status,
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            ))
        }
        Err(e) => ssh_err(e.to_string()),
    }
}

/// Waits, concurrently, until every target is ready or `timeout` passes. `events` is told
/// each time a node's state changes ([`Event::Node`]). `describe` is asked, on timeout, for what the
/// hypervisor says of a node (e.g. its domain state).
///
/// # Errors
/// A private key cannot be read, or some nodes are not ready in time: the error names each,
/// what was last seen, the elapsed time and its console log.
pub async fn wait_ssh_ready(
    targets: &[ReadyTarget],
    timeout: Duration,
    events: Events<'_>,
    describe: &(dyn Fn(&str) -> String + Send + Sync),
) -> Result<()> {
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Seen)>();
    let mut set = JoinSet::new();
    for (index, target) in targets.iter().enumerate() {
        let key = homelab_ssh::load_key(&target.private_key)?;
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
            events(Event::Node {
                node: targets[index].name.clone(),
                seen: seen.to_string(),
            });
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
        std::fs::set_permissions(
            &key_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
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
        let err = wait_ssh_ready(
            &[target],
            Duration::from_secs(2),
            &|e| seen.lock().unwrap().push(e.to_string()),
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
}
