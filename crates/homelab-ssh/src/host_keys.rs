//! Host keys: a `known_hosts` file with a policy for unknown hosts, or one pinned key.
//!
//! A host counts as *known* when `known_hosts` holds any key for it (any algorithm). A known
//! host that presents none of its recorded keys has *changed* and is refused, whatever the
//! policy: a server that suddenly offers another algorithm than the one recorded is exactly
//! what an impostor without the old private key would do. Only a host with no recorded key at
//! all is *unknown*; trust on first use records its key under an exclusive lock on the file (so
//! parallel first connections, even from several processes, lose no line) and logs the
//! fingerprint on [`LEARNED_TARGET`], which the homelab binaries always show, even with `-q`.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use russh::keys::PublicKey;

use crate::SshError;

/// The `tracing` target of the "recorded a new host key" message. The homelab binaries
/// enable it at every verbosity: a trust decision is never silent.
pub const LEARNED_TARGET: &str = "homelab_ssh::learned";

/// What to do with a host that `known_hosts` does not hold at all. A host with recorded keys
/// that presents another key is always refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Refuse unknown hosts.
    Strict,
    /// Record an unknown host's key and accept it (trust on first use).
    TrustOnFirstUse,
}

/// How a server's host key is checked.
///
/// ```
/// use homelab_ssh::{HostKeyPolicy, HostKeys, PublicKey, fingerprint};
///
/// let first = PublicKey::from_openssh("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB4XATLyBZj/Nqb0TKJOhcKIXxRB5XnDxUkIh72xaIi7")?;
/// let other = PublicKey::from_openssh("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICjn3/F0rQGZ/gN6S4O8Ju7lvurphfx2POz1XRqkL464")?;
/// assert_eq!(fingerprint(&first), "SHA256:xvFA8BJHGd60O2+whlbY3cHbSGDhoWZwcZjiaivIuTw");
///
/// let dir = tempfile::tempdir()?;
/// let keys = HostKeys::KnownHosts {
///     file: dir.path().join("known_hosts"),
///     policy: HostKeyPolicy::TrustOnFirstUse,
/// };
/// // Trust on first use records the key; the same host with another key is refused.
/// keys.verify("cp1", "192.168.122.10", 22, &first)?;
/// keys.verify("cp1", "192.168.122.10", 22, &first)?;
/// assert!(keys.verify("cp1", "192.168.122.10", 22, &other).is_err());
/// // A pinned key reads no file.
/// assert!(HostKeys::Pinned(first).verify("cp1", "192.168.122.10", 22, &other).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub enum HostKeys {
    /// Against a `known_hosts` file.
    KnownHosts {
        /// The file (created with its directory when a key is learned).
        file: PathBuf,
        /// What to do with hosts the file does not hold.
        policy: HostKeyPolicy,
    },
    /// Exactly this key, nothing else (no file is read or written).
    Pinned(PublicKey),
}

/// The SHA-256 fingerprint of a key, as OpenSSH prints it (`SHA256:…`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(russh::keys::HashAlg::Sha256).to_string()
}

/// How `known_hosts` names a host: `address`, or `[address]:port` off port 22.
fn host_pattern(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_owned()
    } else {
        format!("[{address}]:{port}")
    }
}

impl HostKeys {
    /// Whether `presented` may be trusted for `host` (`address`:`port`); learns it when the
    /// policy allows and the host is unknown.
    ///
    /// # Errors
    /// The key is not the pinned one, differs from every recorded key, the host is unknown
    /// under the strict policy, or the file cannot be read or written.
    pub fn verify(
        &self,
        host: &str,
        address: &str,
        port: u16,
        presented: &PublicKey,
    ) -> Result<(), SshError> {
        match self {
            Self::Pinned(expected) => {
                if expected.key_data() == presented.key_data() {
                    Ok(())
                } else {
                    Err(SshError::HostKeyMismatch {
                        host: host.to_owned(),
                        fingerprint: fingerprint(presented),
                        expected: fingerprint(expected),
                    })
                }
            }
            Self::KnownHosts { file, policy } => {
                let recorded = recorded_keys(host, address, port, file)?;
                if recorded
                    .iter()
                    .any(|(_, k)| k.key_data() == presented.key_data())
                {
                    return Ok(());
                }
                if let Some((line, _)) = recorded.first() {
                    return Err(SshError::HostKeyChanged {
                        host: host.to_owned(),
                        fingerprint: fingerprint(presented),
                        known_hosts: file.clone(),
                        line: *line,
                    });
                }
                match policy {
                    HostKeyPolicy::Strict => Err(SshError::HostKeyUnknown {
                        host: host.to_owned(),
                        fingerprint: fingerprint(presented),
                        known_hosts: file.clone(),
                    }),
                    HostKeyPolicy::TrustOnFirstUse => {
                        record_known_host(file, address, port, presented).map_err(|e| {
                            SshError::KnownHosts {
                                host: host.to_owned(),
                                action: "record its host key in",
                                known_hosts: file.clone(),
                                source: e.into(),
                            }
                        })?;
                        tracing::warn!(
                            target: LEARNED_TARGET,
                            host,
                            fingerprint = %fingerprint(presented),
                            known_hosts = %file.display(),
                            "recorded a new host key (trust on first use); compare it with the machine's console if in doubt"
                        );
                        Ok(())
                    }
                }
            }
        }
    }
}

/// Every key `file` records for `address`:`port`, with its line number. A missing file
/// records nothing.
fn recorded_keys(
    host: &str,
    address: &str,
    port: u16,
    file: &Path,
) -> Result<Vec<(usize, PublicKey)>, SshError> {
    match russh::keys::known_hosts::known_host_keys_path(address, port, file) {
        Ok(keys) => Ok(keys),
        Err(e) => Err(SshError::KnownHosts {
            host: host.to_owned(),
            action: "read",
            known_hosts: file.to_owned(),
            source: e.into(),
        }),
    }
}

/// Appends `key` for `address`:`port` to `file` (creating it and its directory, mode 0600 /
/// 0700) under an exclusive lock on the file, unless a concurrent writer recorded it first.
///
/// # Errors
/// The file cannot be created, locked, read or written.
pub fn record_known_host(
    file: &Path,
    address: &str,
    port: u16,
    key: &PublicKey,
) -> std::io::Result<()> {
    if let Some(dir) = file.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)?;
    // Held until `f` is dropped; taken by every homelab process that writes this file.
    f.lock()?;
    let line_key = key.to_openssh().map_err(std::io::Error::other)?;
    let base64 = line_key.split_whitespace().nth(1).unwrap_or_default();
    let pattern = host_pattern(address, port);
    let mut existing = String::new();
    f.seek(SeekFrom::Start(0))?;
    f.read_to_string(&mut existing)?;
    let already = existing.lines().any(|l| {
        let mut fields = l.split_whitespace();
        fields.next() == Some(pattern.as_str()) && fields.nth(1) == Some(base64)
    });
    if already {
        return Ok(());
    }
    let separator = if existing.is_empty() || existing.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let algorithm = line_key.split_whitespace().next().unwrap_or_default();
    f.write_all(format!("{separator}{pattern} {algorithm} {base64}\n").as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::{Algorithm, PrivateKey};
    use std::os::unix::fs::PermissionsExt;

    fn key(algorithm: Algorithm) -> PublicKey {
        PrivateKey::random(&mut rand::rng(), algorithm)
            .unwrap()
            .public_key()
            .clone()
    }

    fn known(file: &Path) -> HostKeys {
        HostKeys::KnownHosts {
            file: file.to_owned(),
            policy: HostKeyPolicy::TrustOnFirstUse,
        }
    }

    #[test]
    fn a_recorded_key_of_another_algorithm_means_the_host_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        let ecdsa = key(Algorithm::Ecdsa {
            curve: russh::keys::EcdsaCurve::NistP256,
        });
        record_known_host(&file, "10.0.0.1", 22, &ecdsa).unwrap();
        let err = known(&file)
            .verify("n1", "10.0.0.1", 22, &key(Algorithm::Ed25519))
            .unwrap_err();
        assert!(
            matches!(err, SshError::HostKeyChanged { line: 1, .. }),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().lines().count(),
            1,
            "nothing learned"
        );
        // The recorded key itself is still accepted, and so is a second recorded key.
        known(&file).verify("n1", "10.0.0.1", 22, &ecdsa).unwrap();
        let ed = key(Algorithm::Ed25519);
        record_known_host(&file, "10.0.0.1", 22, &ed).unwrap();
        known(&file).verify("n1", "10.0.0.1", 22, &ed).unwrap();
    }

    #[test]
    fn unknown_hosts_are_learned_once_and_strict_refuses_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/known_hosts");
        let k = key(Algorithm::Ed25519);
        let strict = HostKeys::KnownHosts {
            file: file.clone(),
            policy: HostKeyPolicy::Strict,
        };
        assert!(matches!(
            strict.verify("n1", "10.0.0.1", 2222, &k),
            Err(SshError::HostKeyUnknown { .. })
        ));
        known(&file).verify("n1", "10.0.0.1", 2222, &k).unwrap();
        known(&file).verify("n1", "10.0.0.1", 2222, &k).unwrap();
        strict.verify("n1", "10.0.0.1", 2222, &k).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("[10.0.0.1]:2222 ssh-ed25519 "), "{text}");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn parallel_first_connections_lose_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        let keys: Vec<PublicKey> = (0..24).map(|_| key(Algorithm::Ed25519)).collect();
        std::thread::scope(|s| {
            for (i, k) in keys.iter().enumerate() {
                let file = &file;
                s.spawn(move || {
                    known(file)
                        .verify(&format!("n{i}"), &format!("10.0.1.{i}"), 22, k)
                        .unwrap();
                });
            }
        });
        for (i, k) in keys.iter().enumerate() {
            let strict = HostKeys::KnownHosts {
                file: file.clone(),
                policy: HostKeyPolicy::Strict,
            };
            strict
                .verify(&format!("n{i}"), &format!("10.0.1.{i}"), 22, k)
                .unwrap();
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 24);
    }

    #[test]
    fn a_pinned_key_accepts_only_itself() {
        let k = key(Algorithm::Ed25519);
        HostKeys::Pinned(k.clone())
            .verify("n1", "10.0.0.1", 22, &k)
            .unwrap();
        let err = HostKeys::Pinned(k)
            .verify("n1", "10.0.0.1", 22, &key(Algorithm::Ed25519))
            .unwrap_err();
        assert!(err.to_string().contains("host key mismatch"), "{err}");
    }
}
