//! etcd snapshots of a kubeadm cluster: taken over SSH on a control-plane node with the
//! etcd client and the cluster's own etcd client certificate (which never leaves the node),
//! streamed to this host over the SSH channel while etcd writes it (memory bounded by one
//! message whatever the size) and described there (`snapshot status`), into a file of mode
//! 0600 named after the cluster, the node, the revision and the time, and checked here with
//! etcd's own integrity trailer (the sha256 of the database that the snapshot stream ends
//! with, which `etcdutl snapshot restore` checks too). Retention keeps the newest snapshots
//! within an age.
//!
//! ```no_run
//! # async fn example(pool: &homelab_ssh::Pool, node: &homelab_ssh::Target) -> Result<(), kubeadm_boot::backup::BackupError> {
//! use kubeadm_boot::backup::{EtcdClient, retention, take, verify};
//! let dir = std::path::Path::new("/var/backups/homelab");
//! let taken = take(pool, node, &EtcdClient::default(), "homelab", dir).await?;
//! println!("{} (revision {}, {} keys)", taken.snapshot.path.display(), taken.status.revision, taken.status.total_keys);
//! verify(&taken.snapshot.path)?;
//! for old in retention(&kubeadm_boot::backup::list(dir)?, 7, None, std::time::SystemTime::now()) {
//!     std::fs::remove_file(&old.path).ok();
//! }
//! # Ok(()) }
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use homelab_ssh::{Cmd, Pool, SshError, Stream, Target, shell_quote};
use sha2::{Digest, Sha256};

/// How the node reaches etcd: kubeadm's layout unless told otherwise.
///
/// The node's own `etcdctl` (Debian's `etcd-client`) is used when it has one; otherwise the
/// one inside the running etcd container (kubeadm's etcd image ships it), through `crictl
/// exec`. Both see the defaults' paths: the etcd certificates and the data directory are
/// mounted into kubeadm's etcd pod at the same paths as on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdClient {
    /// The etcd client on the node.
    pub etcdctl: String,
    /// The container runtime's client on the node, through which the etcd container's own
    /// `etcdctl` is used when the node has none.
    pub crictl: String,
    /// etcd's client URL as seen from the node.
    pub endpoint: String,
    /// The etcd CA (`/etc/kubernetes/pki/etcd/ca.crt`).
    pub cacert: String,
    /// A client certificate etcd accepts (kubeadm's health-check client,
    /// `/etc/kubernetes/pki/etcd/healthcheck-client.crt`).
    pub cert: String,
    /// Its key.
    pub key: String,
    /// Where the snapshot is written on the node before it is streamed: only root may read
    /// it, and it is removed once streamed (or when the next snapshot starts). Under etcd's
    /// data directory by default, which the etcd container sees too.
    pub work_dir: String,
    /// Whether the node's commands run through `sudo` (the certificates are root's).
    pub sudo: bool,
    /// The longest a snapshot (taking and streaming) may take.
    pub timeout: Duration,
}

impl Default for EtcdClient {
    fn default() -> Self {
        Self {
            etcdctl: "etcdctl".into(),
            crictl: "crictl".into(),
            endpoint: "https://127.0.0.1:2379".into(),
            cacert: "/etc/kubernetes/pki/etcd/ca.crt".into(),
            cert: "/etc/kubernetes/pki/etcd/healthcheck-client.crt".into(),
            key: "/etc/kubernetes/pki/etcd/healthcheck-client.key".into(),
            work_dir: "/var/lib/etcd/homelab-backup".into(),
            sudo: true,
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

impl EtcdClient {
    /// Shell that defines `etcd_ctl` (the node's `etcdctl`, else the etcd container's) with
    /// the endpoint and the client certificate, API v3.
    fn prelude(&self) -> String {
        let etcdctl = shell_quote(&self.etcdctl);
        let crictl = shell_quote(&self.crictl);
        let flags = format!(
            "--endpoints={} --cacert={} --cert={} --key={}",
            shell_quote(&self.endpoint),
            shell_quote(&self.cacert),
            shell_quote(&self.cert),
            shell_quote(&self.key)
        );
        format!(
            "if command -v {etcdctl} >/dev/null 2>&1; then \
               etcd_ctl() {{ ETCDCTL_API=3 {etcdctl} {flags} \"$@\"; }}; \
             else \
               c=$({crictl} ps -q --name '^etcd$' --state Running 2>/dev/null | head -n 1); \
               if [ -z \"$c\" ]; then echo 'no etcdctl on this node (install etcd-client) and no running etcd container to use' >&2; exit 127; fi; \
               etcd_ctl() {{ {crictl} exec \"$c\" etcdctl {flags} \"$@\"; }}; \
             fi"
        )
    }
}

/// What went wrong with a snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The node could not be reached or its command failed.
    #[error("etcd snapshot on {node}: {source}")]
    Node {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: SshError,
    },
    /// `etcdctl snapshot status` answered something else than its JSON.
    #[error("etcd snapshot on {node}: `snapshot status` answered {answer:?}: {source}")]
    Status {
        /// The node.
        node: String,
        /// What it printed (no secret: hash, revision, counts).
        answer: String,
        /// Why it does not parse.
        source: serde_json::Error,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot is not what etcd wrote.
    #[error("{path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// etcd's static pod manifest (`etcd.yaml`) is not YAML, or cannot be written back.
    #[error("etcd's static pod manifest {what}: {source}")]
    ManifestYaml {
        /// What was being done: `is not YAML`, `cannot be written`.
        what: &'static str,
        /// The YAML error.
        source: serde_norway::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What `etcdctl snapshot status` says of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Status {
    /// etcd's hash of the key space.
    pub hash: u64,
    /// The revision the snapshot holds.
    pub revision: i64,
    /// Keys in it.
    #[serde(rename = "totalKey")]
    pub total_keys: u64,
    /// The database's size in bytes (the snapshot file holds 32 more: its sha256).
    #[serde(rename = "totalSize")]
    pub total_size: u64,
}

/// A snapshot file on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The file.
    pub path: PathBuf,
    /// The cluster it was taken from.
    pub cluster: String,
    /// The control-plane node it was taken on.
    pub node: String,
    /// The revision it holds.
    pub revision: i64,
    /// When it was taken (whole seconds).
    pub taken: SystemTime,
    /// Its size in bytes.
    pub size: u64,
}

/// A snapshot just taken, with what etcd said of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The file.
    pub snapshot: Snapshot,
    /// `snapshot status` on the node.
    pub status: Status,
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "etcd snapshot {} (revision {}, {} keys, {} bytes), checked",
            self.snapshot.path.display(),
            self.status.revision,
            self.status.total_keys,
            self.snapshot.size
        )
    }
}

/// Where a cluster's snapshots go, how its control plane reaches etcd, and how many are
/// kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backups {
    /// How the control-plane node reaches etcd.
    pub client: EtcdClient,
    /// The cluster's name (in each snapshot's file name).
    pub cluster: String,
    /// The directory on this host.
    pub dir: PathBuf,
    /// Snapshots of this cluster kept ([`retention`]).
    pub keep: usize,
    /// Older snapshots of this cluster are removed.
    pub max_age: Option<Duration>,
}

impl Backups {
    /// This cluster's snapshots in [`Backups::dir`], newest first.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn list(&self) -> Result<Vec<Snapshot>, BackupError> {
        Ok(list(&self.dir)?
            .into_iter()
            .filter(|s| s.cluster == self.cluster)
            .collect())
    }

    /// Takes a snapshot on `node` ([`take`]), then removes this cluster's snapshots that
    /// retention no longer keeps; returns the new one and those removed.
    ///
    /// # Errors
    /// As [`take`]; a snapshot that cannot be removed is only logged.
    pub async fn take(
        &self,
        pool: &Pool,
        node: &Target,
    ) -> Result<(Taken, Vec<Snapshot>), BackupError> {
        let taken = take(pool, node, &self.client, &self.cluster, &self.dir).await?;
        let mut removed = Vec::new();
        for old in retention(&self.list()?, self.keep, self.max_age, SystemTime::now()) {
            match std::fs::remove_file(&old.path) {
                Ok(()) => removed.push(old),
                Err(e) => {
                    tracing::warn!(path = %old.path.display(), error = %e, "an old etcd snapshot could not be removed");
                }
            }
        }
        Ok((taken, removed))
    }
}

/// The file name of a snapshot: `<cluster>_<node>_r<revision>_<YYYYMMDDTHHMMSSZ>.db`.
pub fn file_name(cluster: &str, node: &str, revision: i64, taken: SystemTime) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(taken)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{cluster}_{node}_r{revision}_{stamp}.db")
}

/// The snapshot a file name describes ([`file_name`]); `None` for any other name.
pub fn parse_name(name: &str) -> Option<(String, String, i64, SystemTime)> {
    let stem = name.strip_suffix(".db")?;
    let mut parts = stem.rsplitn(3, '_');
    let stamp = parts.next()?;
    let revision = parts.next()?.strip_prefix('r')?.parse().ok()?;
    let (cluster, node) = parts.next()?.split_once('_')?;
    // 20261202T090500Z -> 2026-12-02T09:05:00Z
    if stamp.len() != 16 || !stamp.is_ascii() {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    );
    let taken = humantime::parse_rfc3339(&rfc3339).ok()?;
    Some((cluster.to_owned(), node.to_owned(), revision, taken))
}

/// Takes a snapshot of etcd on `node` and streams it into `dir` (created 0700 when missing).
///
/// # Errors
/// The node's etcd client fails (its last line of error is in the message), the snapshot
/// does not match what etcd said of it, or the file cannot be written.
pub async fn take(
    pool: &Pool,
    node: &Target,
    client: &EtcdClient,
    cluster: &str,
    dir: &Path,
) -> Result<Taken, BackupError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let work = shell_quote(&client.work_dir);
    let remote = shell_quote(&format!(
        "{}/snapshot-{nanos}.db",
        client.work_dir.trim_end_matches('/')
    ));
    // Taken on the node and streamed here while etcd writes it, described by etcd meanwhile
    // (see `stream_to`); the node's copies go at the end, whatever happened (a connection lost
    // meanwhile leaves them, root's only, until the next snapshot).
    mkdir_private(dir)?;
    let partial = dir.join(format!(".snapshot-{nanos}.partial"));
    let cleanup = |e: BackupError| {
        let _ = std::fs::remove_file(&partial);
        e
    };
    let (written, answer) = stream_to(pool, node, client, &work, &remote, &partial)
        .await
        .map_err(cleanup)?;
    let status: Status = serde_json::from_str(answer.trim())
        .map_err(|source| BackupError::Status {
            node: node.name.clone(),
            answer: answer.trim().chars().take(200).collect(),
            source,
        })
        .map_err(cleanup)?;
    // What arrived is what etcd described (its database and the sha256 it appends); etcd's
    // own integrity check ran while it streamed.
    if written != status.total_size + 32 {
        return Err(cleanup(BackupError::Corrupt {
            path: partial.clone(),
            problem: format!(
                "{written} bytes arrived, etcd's snapshot status says a database of {} (and a 32-byte sha256)",
                status.total_size
            ),
        }));
    }
    let taken_at = UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        );
    let path = dir.join(file_name(cluster, &node.name, status.revision, taken_at));
    std::fs::rename(&partial, &path)
        .map_err(io(&path))
        .map_err(cleanup)?;
    Ok(Taken {
        snapshot: Snapshot {
            path,
            cluster: cluster.to_owned(),
            node: node.name.clone(),
            revision: status.revision,
            taken: taken_at,
            size: written,
        },
        status,
    })
}

/// `dir` and its parents, created 0700 when missing.
fn mkdir_private(dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

/// Has etcd write its snapshot to `remote` on the node and streams it into the new file
/// `partial` while it is written, checking it as etcd would on the way; returns the bytes
/// written, synced to disk. When etcd is done, `snapshot status` describes the file into
/// `remote.status` while the rest arrives.
///
/// The node follows etcdctl's `.part` file (through a hard link, which outlives the rename at
/// the end) with `tail --pid`, which reads until etcdctl has exited; a snapshot written faster
/// than the link could be made is sent whole once written. Either way the bytes are checked
/// here against etcd's own sha256 and size, so a short stream is refused, never kept.
async fn stream_to(
    pool: &Pool,
    node: &Target,
    client: &EtcdClient,
    work: &str,
    remote: &str,
    partial: &Path,
) -> Result<(u64, String), BackupError> {
    let on_node = |source| BackupError::Node {
        node: node.name.clone(),
        source,
    };
    // `set -e` holds in the subshell too: its status is kept by `&&`/`||`, and `.done` tells
    // the wait below that it ended (a zombie still answers `kill -0`).
    let script = format!(
        "set -e; umask 077; {prelude}; mkdir -p {work}; rm -f {work}/snapshot-*; \
         ( etcd_ctl snapshot save {remote} >&2 && rc=0 || rc=$?; : > {remote}.done; exit $rc ) & saving=$!; \
         while [ ! -e {remote}.part ] && [ ! -e {remote}.done ]; do sleep 0.02; done; \
         following=; \
         if ln {remote}.part {remote}.follow 2>/dev/null; then \
           tail -c +1 -s 0.1 --pid=$saving -f {remote}.follow & following=$!; \
         fi; \
         rc=0; wait $saving || rc=$?; \
         if [ $rc -ne 0 ]; then \
           if [ -n \"$following\" ]; then kill $following 2>/dev/null || true; fi; \
           rm -f {work}/snapshot-*; rmdir {work} 2>/dev/null || true; exit $rc; \
         fi; \
         etcd_ctl -w json snapshot status {remote} > {remote}.status & describing=$!; \
         if [ -n \"$following\" ]; then wait $following; else cat {remote}; fi; \
         wait $describing; \
         printf '\\n{STATUS_MARK}%s\\n' \"$(cat {remote}.status)\" >&2; \
         rm -f {work}/snapshot-*; rmdir {work} 2>/dev/null || true",
        prelude = client.prelude(),
    );
    let mut file = open_private(partial)?;
    // The disk is written back while the rest arrives, so the last sync has little left.
    let flusher = Flusher::start(&file);
    let mut written: u64 = 0;
    let mut failed: Option<std::io::Error> = None;
    let mut checker = Checker::default();
    let mut stream = Cmd::new(script).timeout(client.timeout);
    stream.sudo = client.sudo;
    let session = pool.session(node).await.map_err(on_node)?;
    let out = session
        .exec_streaming(&stream, &mut |kind, data| {
            if kind == Stream::Stdout && failed.is_none() {
                match file.write_all(data) {
                    Ok(()) => {
                        written += data.len() as u64;
                        checker.update(data);
                    }
                    Err(e) => failed = Some(e),
                }
            }
        })
        .await
        .map_err(on_node)?;
    if let Some(e) = failed {
        return Err(io(partial)(e));
    }
    if out.exit_status != 0 {
        return Err(on_node(SshError::Failed {
            host: node.name.clone(),
            command: format!("etcdctl snapshot save {remote}, streamed"),
            exit_status: out.exit_status,
            stderr_tail: out.stderr_tail(3),
        }));
    }
    drop(flusher);
    file.sync_all().map_err(io(partial))?;

    // etcd's own check, on the bytes as they arrived (no second read of the file).
    checker.finish(partial)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let described = stderr
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(STATUS_MARK))
        .unwrap_or_default()
        .to_owned();
    Ok((written, described))
}

/// Marks the line of the streaming command's standard error that holds etcd's
/// `snapshot status` of what was streamed.
const STATUS_MARK: &str = "homelab-snapshot-status: ";

/// Syncs a file's data to disk every quarter second from a thread of its own while the
/// file is written, until dropped (which wakes it at once); a failure is left to the final
/// sync to report.
struct Flusher {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn start(file: &std::fs::File) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = file.try_clone().ok().map(|file| {
            std::thread::spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(Duration::from_millis(250))
                {
                    let _ = file.sync_data();
                }
            })
        });
        Self {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A new file only its owner may read or write.
fn open_private(path: &Path) -> Result<std::fs::File, BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))
}

/// etcd's integrity check of a snapshot, fed its bytes in order (while they stream, or
/// while a file is read): the sha256 of all but the last 32 bytes must be those 32 bytes,
/// and the database must start as a bbolt file does.
#[derive(Default)]
struct Checker {
    hasher: Sha256,
    /// The last bytes seen (at most 32): the trailer, once everything has arrived.
    tail: Vec<u8>,
    /// The first 20 bytes (bbolt's magic is at 16).
    head: Vec<u8>,
    size: u64,
}

impl Checker {
    fn update(&mut self, data: &[u8]) {
        if self.head.len() < 20 {
            let want = (20 - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..want]);
        }
        self.size += data.len() as u64;
        if data.len() >= 32 {
            self.hasher.update(&self.tail);
            self.hasher.update(&data[..data.len() - 32]);
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - 32..]);
        } else {
            self.tail.extend_from_slice(data);
            if self.tail.len() > 32 {
                let extra = self.tail.len() - 32;
                self.hasher.update(&self.tail[..extra]);
                self.tail.drain(..extra);
            }
        }
    }

    fn finish(self, path: &Path) -> Result<(), BackupError> {
        let corrupt = |problem: String| BackupError::Corrupt {
            path: path.to_owned(),
            problem,
        };
        let size = self.size;
        if size < 512 + 32 || !(size - 32).is_multiple_of(512) {
            return Err(corrupt(format!(
                "{size} bytes: not an etcd snapshot (a database of whole pages and a 32-byte sha256)"
            )));
        }
        let magic =
            u32::from_le_bytes([self.head[16], self.head[17], self.head[18], self.head[19]]);
        if magic != BOLT_MAGIC {
            return Err(corrupt(
                "not an etcd snapshot (no bbolt database header)".into(),
            ));
        }
        let actual = self.hasher.finalize();
        if actual.as_slice() == self.tail.as_slice() {
            Ok(())
        } else {
            Err(corrupt(format!(
                "its sha256 is {}, the snapshot says {}: the file changed after etcd wrote it",
                hex::encode(actual),
                hex::encode(&self.tail)
            )))
        }
    }
}

/// bbolt's meta page magic (etcd's database format), at byte 16 of the file.
const BOLT_MAGIC: u32 = 0xED0C_DAED;

/// Checks a snapshot file as etcd would before restoring it: a bbolt database followed by
/// the sha256 of its bytes (what `etcdctl snapshot save` writes). Reads the file once, in
/// pieces.
///
/// # Errors
/// It cannot be read, is not a bbolt database, or its bytes do not match the trailer.
pub fn verify(path: &Path) -> Result<(), BackupError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut checker = Checker::default();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(io(path))?;
        if n == 0 {
            break;
        }
        checker.update(&buffer[..n]);
    }
    checker.finish(path)
}

/// The snapshots in `dir`, newest first (files named by [`file_name`]; others are left out).
///
/// # Errors
/// The directory cannot be read (a missing one has none).
pub fn list(dir: &Path) -> Result<Vec<Snapshot>, BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((cluster, node, revision, taken)) = parse_name(&name) else {
            continue;
        };
        let size = entry.metadata().map(|m| m.len()).unwrap_or_default();
        out.push(Snapshot {
            path: entry.path(),
            cluster,
            node,
            revision,
            taken,
            size,
        });
    }
    out.sort_by(|a, b| b.taken.cmp(&a.taken).then(b.revision.cmp(&a.revision)));
    Ok(out)
}

/// The snapshots retention removes: all but the newest `keep` of those younger than
/// `max_age` (when given) at `now`; older ones go whatever their number.
pub fn retention(
    snapshots: &[Snapshot],
    keep: usize,
    max_age: Option<Duration>,
    now: SystemTime,
) -> Vec<Snapshot> {
    let mut sorted: Vec<&Snapshot> = snapshots.iter().collect();
    sorted.sort_by(|a, b| b.taken.cmp(&a.taken).then(b.revision.cmp(&a.revision)));
    let young = |s: &Snapshot| {
        max_age.is_none_or(|age| now.duration_since(s.taken).map_or(true, |d| d <= age))
    };
    let mut kept = 0;
    sorted
        .into_iter()
        .filter(|s| {
            if young(s) && kept < keep {
                kept += 1;
                false
            } else {
                true
            }
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_carry_cluster_node_revision_and_time() {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_202_300);
        let name = file_name("homelab", "cp-1", 4711, at);
        assert_eq!(name, "homelab_cp-1_r4711_20261202T090500Z.db");
        assert_eq!(
            parse_name(&name),
            Some(("homelab".into(), "cp-1".into(), 4711, at))
        );
        assert_eq!(parse_name("notes.txt"), None);
        assert_eq!(parse_name("homelab_cp-1_rX_20261202T091500Z.db"), None);
        assert_eq!(
            parse_name(".homelab_cp-1_r1_20261202T091500Z.db.partial"),
            None
        );
    }

    fn snapshot(i: usize, age_hours: u64, now: SystemTime) -> Snapshot {
        Snapshot {
            path: PathBuf::from(format!("s{i}.db")),
            cluster: "c".into(),
            node: "n".into(),
            revision: i64::try_from(i).unwrap(),
            taken: now - Duration::from_secs(age_hours * 3600),
            size: 1,
        }
    }

    proptest! {
        #[test]
        fn retention_keeps_exactly_the_newest_within_the_age(
            ages in proptest::collection::vec(0u64..500, 0..20),
            keep in 0usize..8,
            max_age in proptest::option::of(0u64..300),
        ) {
            let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
            let all: Vec<Snapshot> = ages.iter().enumerate().map(|(i, a)| snapshot(i, *a, now)).collect();
            let removed = retention(&all, keep, max_age.map(|h| Duration::from_secs(h * 3600)), now);
            let kept: Vec<&Snapshot> = all.iter().filter(|s| !removed.contains(s)).collect();
            // What is kept: young enough, at most `keep`, and no removed young one is newer
            // than a kept one.
            prop_assert!(kept.len() <= keep);
            let young = |s: &Snapshot| max_age.is_none_or(|h| now.duration_since(s.taken).unwrap() <= Duration::from_secs(h * 3600));
            prop_assert!(kept.iter().all(|s| young(s)));
            let young_count = all.iter().filter(|s| young(s)).count();
            prop_assert_eq!(kept.len(), young_count.min(keep));
            for r in removed.iter().filter(|s| young(s)) {
                prop_assert!(kept.iter().all(|k| (k.taken, k.revision) >= (r.taken, r.revision)));
            }
            prop_assert_eq!(kept.len() + removed.len(), all.len());
        }
    }

    /// A database of `pages` pages with bbolt's magic, and the sha256 etcd appends.
    fn synthetic(pages: usize) -> Vec<u8> {
        let mut db = vec![7u8; 512 * pages];
        db[16..20].copy_from_slice(&BOLT_MAGIC.to_le_bytes());
        let sum = Sha256::digest(&db);
        db.extend_from_slice(&sum);
        db
    }

    proptest! {
        #[test]
        fn the_check_while_streaming_does_not_depend_on_the_pieces(
            pages in 1usize..6,
            cuts in proptest::collection::vec(1usize..700, 0..12),
            flip in proptest::option::of(0usize..4000),
        ) {
            let mut bytes = synthetic(pages);
            if let Some(at) = flip {
                let at = at % bytes.len();
                bytes[at] ^= 0x40;
            }
            let mut checker = Checker::default();
            let mut rest = &bytes[..];
            for cut in cuts {
                let n = cut.min(rest.len());
                checker.update(&rest[..n]);
                rest = &rest[n..];
            }
            checker.update(rest);
            let result = checker.finish(Path::new("s.db"));
            prop_assert_eq!(result.is_ok(), flip.is_none(), "{:?}", result.err().map(|e| e.to_string()));
        }
    }

    #[test]
    fn a_file_that_is_not_a_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        std::fs::write(&path, vec![0u8; 1024 + 32]).unwrap();
        let err = verify(&path).unwrap_err().to_string();
        assert!(err.contains("no bbolt database header"), "{err}");
        std::fs::write(&path, b"short").unwrap();
        assert!(verify(&path).unwrap_err().to_string().contains("5 bytes"));
    }
}
