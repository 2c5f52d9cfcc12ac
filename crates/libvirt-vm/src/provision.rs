//! The whole VM phase in one call: preflight, base image, apply, wait until every node is
//! ready, and record the nodes' host keys in `known_hosts`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::hypervisor::{Hypervisor, KnownHost};
use crate::image::{self, BuildOutcome, ImageFiles, ImageRecipe};
use crate::plan::{Action, VmPlan};
use crate::preflight::{self, Check, Status};
use crate::spec::VmClusterSpec;
use crate::wait::{self, ReadyTarget};
use crate::xml::console_log_path;

/// How [`up`] runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// libvirt URI.
    pub uri: String,
    /// Build this base image first when it is missing or stale.
    pub image: Option<(ImageRecipe, ImageFiles)>,
    /// Where the image build keeps its temporary root filesystem.
    pub work_dir: PathBuf,
    /// Wait for SSH and cloud-init after applying.
    pub wait: bool,
    /// How long to wait.
    pub timeout: Duration,
    /// Private key to log in with while waiting.
    pub private_key: PathBuf,
    /// `known_hosts` file to record the nodes' host keys in.
    pub known_hosts: Option<PathBuf>,
}

pub use crate::event::{Event, Events};

/// What [`up`] did.
#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    /// Whether the base image was built or reused.
    pub image: Option<BuildOutcome>,
    /// The applied plan.
    pub plan: VmPlan,
    /// The nodes' SSH identities.
    pub known_hosts: Vec<KnownHost>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| Error::Worker {
            what: "libvirt",
            source,
        })?
}

/// Runs the preflight checks (a failed connection is reported as a failed check).
pub async fn check(spec: &VmClusterSpec, uri: &str) -> Vec<Check> {
    let spec = spec.clone();
    let uri = uri.to_owned();
    tokio::task::spawn_blocking(move || match Hypervisor::connect(&uri) {
        Ok(hv) => preflight::preflight(&spec, &uri, Some(&hv), None),
        Err(e) => preflight::preflight(&spec, &uri, None, Some(&e.to_string())),
    })
    .await
    .unwrap_or_default()
}

/// Preflight, image, apply, wait, known_hosts. Stops at the first failed preflight check.
///
/// # Errors
/// A preflight check fails (all failures are listed), the image build or a libvirt call
/// fails, or the nodes are not ready in time.
pub async fn up(spec: &VmClusterSpec, options: &UpOptions, events: Events<'_>) -> Result<UpReport> {
    let checks = check(spec, &options.uri).await;
    let failures: Vec<String> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| {
            format!(
                "{}: {}{}",
                c.name,
                c.detail,
                c.fix
                    .as_ref()
                    .map(|f| format!(" (fix: {f})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    for c in checks {
        events(Event::Check(c));
    }
    if !failures.is_empty() {
        return Err(Error::Preflight(failures));
    }

    let mut image_outcome = None;
    if let Some((recipe, files)) = options.image.clone() {
        let work_dir = options.work_dir.clone();
        image_outcome = Some(
            forwarding("image build", events, move |events| {
                image::build(&recipe, &files, &work_dir, events)
            })
            .await?,
        );
    }

    let uri = options.uri.clone();
    let owned = spec.clone();
    let mut plan = forwarding("apply", events, move |events| {
        Hypervisor::connect(&uri)?.apply(&owned, events)
    })
    .await?;

    let uri = options.uri.clone();
    let owned = spec.clone();
    let known = blocking(move || Hypervisor::connect(&uri)?.known_hosts(&owned)).await?;
    if let Some(path) = &options.known_hosts {
        write_known_hosts(path, &known)?;
    }
    if options.wait {
        let targets = ready_targets(spec, &known, &options.private_key);
        let uri = options.uri.clone();
        let describe = move |node: &str| {
            Hypervisor::connect(&uri).map_or_else(
                |e| format!("unknown ({e})"),
                |hv| format!("domain {}", hv.domain_state(node)),
            )
        };
        wait::wait_ssh_ready(&targets, options.timeout, events, &describe).await?;
        // Every node has finished cloud-init and turned it off: the seeds, which hold the
        // nodes' host private keys, are no longer needed.
        plan.actions
            .extend(retire_seeds(spec, &options.uri, events).await?);
    }
    Ok(UpReport {
        image: image_outcome,
        plan,
        known_hosts: known,
    })
}

/// [`Hypervisor::retire_seeds`] off the async runtime, each removal told as an event.
async fn retire_seeds(spec: &VmClusterSpec, uri: &str, events: Events<'_>) -> Result<Vec<Action>> {
    let uri = uri.to_owned();
    let owned = spec.clone();
    forwarding("seed", events, move |events| {
        Hypervisor::connect(&uri)?.retire_seeds(&owned, events)
    })
    .await
}

/// Runs `work`, which blocks, off the async runtime, handing each event it reports to
/// `events` as it comes.
async fn forwarding<T: Send + 'static>(
    what: &'static str,
    events: Events<'_>,
    work: impl FnOnce(Events<'_>) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let task = tokio::task::spawn_blocking(move || {
        work(&move |event| {
            let _ = tx.send(event);
        })
    });
    while let Some(event) = rx.recv().await {
        events(event);
    }
    task.await
        .map_err(|source| Error::Worker { what, source })?
}

/// What [`wait::wait_ssh_ready`] needs for each node of `spec`.
pub fn ready_targets(
    spec: &VmClusterSpec,
    known: &[KnownHost],
    private_key: &Path,
) -> Vec<ReadyTarget> {
    spec.nodes
        .iter()
        .filter_map(|n| {
            let k = known.iter().find(|k| k.node == n.name)?;
            Some(ReadyTarget {
                name: n.name.clone(),
                ip: n.ip.into(),
                port: 22,
                host_key: k.host_key.clone(),
                user: spec.access.user.clone(),
                private_key: private_key.to_owned(),
                console_log: console_log_path(&n.name),
                ready_command: wait::CLOUD_INIT_DONE.into(),
            })
        })
        .collect()
}

/// Records the nodes' host keys in a `known_hosts` file: lines for the same addresses are
/// replaced (a rebuilt node has a new key, recorded by this tool, not trusted on first use),
/// other lines are kept. Written atomically, mode 0600.
///
/// # Errors
/// The file or its directory cannot be written.
pub fn write_known_hosts(path: &Path, entries: &[KnownHost]) -> Result<()> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io("read", path)(e)),
    };
    let ours: Vec<&str> = entries.iter().map(|e| e.ip.as_str()).collect();
    let mut out: Vec<String> = existing
        .lines()
        .filter(|line| {
            let hosts = line.split_whitespace().next().unwrap_or("");
            !hosts.split(',').any(|h| ours.contains(&h))
        })
        .map(str::to_owned)
        .collect();
    out.extend(entries.iter().map(KnownHost::line));
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io("create a file in", dir))?;
    std::io::Write::write_all(&mut tmp, (out.join("\n") + "\n").as_bytes())
        .map_err(io("write", path))?;
    tmp.persist(path)
        .map_err(|e| io("replace", path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_replaces_only_our_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "github.com ssh-ed25519 AAAAgh\n192.168.150.10 ssh-ed25519 AAAAold\n192.168.150.100 ssh-ed25519 AAAAkeep\n").unwrap();
        let entries = vec![KnownHost {
            node: "n1".into(),
            ip: "192.168.150.10".into(),
            host_key: "ssh-ed25519 AAAAnew n1 host key".into(),
        }];
        write_known_hosts(&path, &entries).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "github.com ssh-ed25519 AAAAgh\n192.168.150.100 ssh-ed25519 AAAAkeep\n192.168.150.10 ssh-ed25519 AAAAnew n1 host key\n"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        write_known_hosts(&path, &entries).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "idempotent");
    }
}
