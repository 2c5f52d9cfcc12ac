//! etcd snapshots of the lab's cluster, as `[backups]` says: taken on the control plane over
//! SSH ([`kubeadm_boot::backup`]), copied into `backups.dir` (relative to the configuration
//! file's directory), the newest `backups.keep` within `backups.max_age` kept. `homelab
//! upgrade` takes one first ([`upgrade_backups`]).

use std::path::PathBuf;

use kubeadm_boot::backup::{Backups, EtcdClient, Snapshot, Taken};

use crate::{Error, Lab, inputs};

/// `backups.dir`, a relative path taken from the configuration file's directory (else the
/// current directory).
pub fn dir(lab: &Lab) -> PathBuf {
    let dir = PathBuf::from(&lab.config.backups.dir);
    match lab.config_file.as_deref().and_then(std::path::Path::parent) {
        Some(base) if dir.is_relative() => base.join(dir),
        _ => dir,
    }
}

/// The lab's snapshots: where, of which cluster, and how many kept.
pub fn backups(lab: &Lab) -> Backups {
    Backups {
        client: EtcdClient::default(),
        cluster: lab.config.cluster.name.clone(),
        dir: dir(lab),
        keep: usize::try_from(lab.config.backups.keep).unwrap_or(usize::MAX),
        max_age: Some(lab.config.backups.max_age.0),
    }
}

/// What `homelab upgrade` gives the upgrade: the lab's [`backups`], or none with
/// `skip_backup` (said on `events`, as a warning).
pub fn upgrade_backups(lab: &Lab, skip_backup: bool, events: crate::Events<'_>) -> Option<Backups> {
    if skip_backup {
        events(crate::Event::Progress {
            phase: "cluster",
            message: "warning: upgrading without an etcd snapshot (--skip-backup): a failed upgrade cannot be rolled back to one".into(),
        });
        None
    } else {
        Some(backups(lab))
    }
}

/// Takes a snapshot on the control plane now, then applies retention.
///
/// # Errors
/// The control plane cannot be reached, its etcd client fails, or the snapshot does not
/// check out.
pub async fn create(lab: &Lab) -> Result<(Taken, Vec<Snapshot>), Error> {
    let plan = inputs::bootstrap_plan(&lab.config)?;
    let runner = crate::cluster::runner(lab)?;
    Ok(backups(lab)
        .take(runner.pool(), &plan.control_plane.target)
        .await?)
}

/// The lab's snapshots, newest first.
///
/// # Errors
/// The directory cannot be read.
pub fn list(lab: &Lab) -> Result<Vec<Snapshot>, Error> {
    Ok(backups(lab).list()?)
}

/// Restores `snapshot` onto the control plane ([`kubeadm_boot::restore`]): with `dry_run`
/// only the steps that would run; otherwise the steps, then a wait until the API server
/// answers and every node is `Ready` (within `phases.cluster.timeout`).
///
/// # Errors
/// The snapshot does not verify, the node's etcd manifest cannot be read, a step fails, or
/// the cluster does not come back in time.
pub async fn restore(
    lab: &Lab,
    snapshot: &std::path::Path,
    dry_run: bool,
    events: crate::Events<'_>,
) -> Result<Vec<kubeadm_boot::steps::Report>, Error> {
    use kubeadm_boot::restore::{Restore, steps};

    kubeadm_boot::backup::verify(snapshot)?;
    let sha256 = kubeadm_boot::bundle::file_sha256(snapshot)?.0;
    let plan = inputs::bootstrap_plan(&lab.config)?;
    let node = plan.control_plane.target.clone();
    let mut runner = crate::cluster::runner(lab)?;
    runner.dry_run = dry_run;
    let spec = Restore::new(snapshot);
    // etcd's manifest where it is: live, or set aside by an interrupted restore.
    let session = runner.pool().session(&node).await?;
    let mut manifest = None;
    for dir in [&spec.manifests, &spec.stopped] {
        if let Some(bytes) = session.read_file(&format!("{dir}/etcd.yaml"), true).await? {
            manifest = Some(String::from_utf8_lossy(&bytes).into_owned());
            break;
        }
    }
    let manifest = manifest.ok_or_else(|| {
        Error::Selection(format!(
            "{}: no etcd manifest in {} or {}: is this kubeadm's control plane?",
            node.name, spec.manifests, spec.stopped
        ))
    })?;
    let work = vec![(node, steps(&spec, &manifest, &sha256)?)];
    let reports = runner
        .run(work, std::sync::Arc::new(|_| {}))
        .await
        .map_err(|e| Error::RestoreSteps(Box::new(e)))?;
    for r in &reports {
        events(crate::Event::Progress {
            phase: "cluster",
            message: format!("{}: {} ({:?})", r.host, r.description, r.outcome),
        });
    }
    if dry_run {
        return Ok(reports);
    }
    // The API server comes back on the restored data; then every node reports Ready.
    let client = lab.kube_client().await?;
    let timeout = lab.config.phases.cluster.timeout.0;
    let started = std::time::Instant::now();
    while client.apiserver_version().await.is_err() {
        if started.elapsed() > timeout {
            return Err(Error::Selection(format!(
                "the API server did not answer within {} after the restore: see `crictl ps -a` and the etcd container's log on the control plane",
                crate::error::humanize(timeout)
            )));
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    let names: Vec<String> = lab.config.nodes.iter().map(|n| n.name.clone()).collect();
    kubeadm_boot::nodes::wait_ready(&client, &names, None, timeout, &|_| {})
        .await
        .map_err(|e| Error::RestoreNodes(Box::new(e)))?;
    events(crate::Event::Progress {
        phase: "cluster",
        message: format!(
            "restored {}: the API server answers and every node is Ready; the old data directory is kept",
            snapshot.display()
        ),
    });
    Ok(reports)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_directory_is_beside_the_configuration_and_skipping_is_said() {
        let mut lab = Lab::new(homelab_config::Config::default());
        assert_eq!(dir(&lab), PathBuf::from("backups"));
        lab.config_file = Some(PathBuf::from("/srv/lab/homelab.toml"));
        assert_eq!(dir(&lab), PathBuf::from("/srv/lab/backups"));
        lab.config.backups.dir = "/var/backups/etcd".into();
        assert_eq!(dir(&lab), PathBuf::from("/var/backups/etcd"));
        let b = backups(&lab);
        assert_eq!((b.keep, b.cluster.as_str()), (7, "homelab"));

        let said = std::sync::Mutex::new(Vec::new());
        let events = |e: crate::Event| said.lock().unwrap().push(e.to_string());
        assert!(upgrade_backups(&lab, false, &events).is_some());
        assert!(said.lock().unwrap().is_empty());
        assert!(upgrade_backups(&lab, true, &events).is_none());
        let said = said.lock().unwrap();
        assert_eq!(said.len(), 1);
        assert!(said[0].contains("without an etcd snapshot"), "{said:?}");
    }
}
