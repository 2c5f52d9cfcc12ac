//! etcd snapshots of the lab's cluster, as `[backups]` says: taken on the control plane over
//! SSH ([`kubeadm_boot::backup`]), copied into `backups.dir` (relative to the configuration
//! file's directory), the newest `backups.keep` within `backups.max_age` kept. `homelab
//! upgrade` takes one first ([`upgrade_backups`]).

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use futures::StreamExt;
use kubeadm_boot::backup::{Backups, EtcdClient, Snapshot, Taken};
use object_store::ObjectStore;
use secrecy::{ExposeSecret, SecretString};

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
        .run(work, &|_| {})
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
    kubeadm_boot::nodes::wait_nodes_ready(&client, &names, None, timeout, &|_| {})
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

/// A copy of a snapshot in the `[backups.s3]` bucket, as the scheduled backup writes them
/// (`<prefix>/etcd-<UTC time>.db`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSnapshot {
    /// The object's key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When the snapshot was taken, from its name (`etcd-20261202T030000Z.db`); `None` for a
    /// name of another shape.
    pub taken: Option<SystemTime>,
    /// When the object was written.
    pub modified: SystemTime,
}

/// The bucket's access key (the same as the scheduled backup's). Debug never shows the
/// secret.
#[derive(Clone)]
pub struct S3Credentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// The Secret in `kube-system` with the bucket's key (`esc_secrets`' declared secret).
pub const BUCKET_SECRET: &str = esc_secrets::declared::BACKUP_S3_SECRET;

/// Where [`bucket_credentials`] found the key.
pub const CREDENTIALS_FROM_ENV: &str = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";

/// The bucket's key: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` when both are set (a
/// cluster that is gone cannot give it), else [`credentials_in_cluster`]; with where it came
/// from. `None` when neither has it.
pub async fn bucket_credentials(client: Option<&kube::Client>) -> Option<(S3Credentials, String)> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        let credentials = S3Credentials {
            access_key_id: id,
            secret_access_key: secret.into(),
        };
        return Some((credentials, CREDENTIALS_FROM_ENV.into()));
    }
    let credentials = credentials_in_cluster(client?).await?;
    Some((
        credentials,
        format!("the Secret kube-system/{BUCKET_SECRET}"),
    ))
}

/// The key the scheduled backup uses: the Secret `kube-system/etcd-backup-s3` (keys
/// `access_key_id` and `secret_access_key`), when it exists and `client` may read it.
pub async fn credentials_in_cluster(client: &kube::Client) -> Option<S3Credentials> {
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), "kube-system");
    let mut data = api.get_opt(BUCKET_SECRET).await.ok()??.data?;
    let mut text = |key: &str| String::from_utf8(data.remove(key)?.0).ok();
    Some(S3Credentials {
        access_key_id: text("access_key_id")?,
        secret_access_key: text("secret_access_key")?.into(),
    })
}

/// `s3://bucket/prefix` of `s3`, as messages name it.
pub fn bucket_url(s3: &homelab_config::BackupsS3) -> String {
    format!("s3://{}/{} at {}", s3.bucket, s3.prefix, s3.endpoint)
}

/// The snapshots in the bucket under the prefix, newest first (by the time in their names,
/// else by when they were written).
///
/// # Errors
/// The bucket cannot be listed (the address, the key or the bucket is wrong: the error says
/// which, as the service said it).
pub async fn bucket_list(
    s3: &homelab_config::BackupsS3,
    credentials: &S3Credentials,
) -> Result<Vec<BucketSnapshot>, Error> {
    let url = bucket_url(s3);
    let fail = |source: object_store::Error| Error::Bucket {
        url: url.clone(),
        source: Box::new(source),
    };
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        .with_access_key_id(&credentials.access_key_id)
        .with_secret_access_key(credentials.secret_access_key.expose_secret())
        .with_allow_http(s3.plain_http)
        // Path-style addressing: what S3-compatible services (MinIO, Garage, Versity, Ceph)
        // answer without a DNS name per bucket.
        .with_virtual_hosted_style_request(false)
        .build()
        .map_err(fail)?;
    let prefix = object_store::path::Path::from(s3.prefix.trim_matches('/'));
    let mut listing = store.list(Some(&prefix));
    let mut out = Vec::new();
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(fail)?;
        let key = meta.location.to_string();
        let name = meta.location.filename().unwrap_or_default();
        out.push(BucketSnapshot {
            taken: snapshot_time(name),
            key,
            size: meta.size,
            modified: SystemTime::from(meta.last_modified),
        });
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.taken.unwrap_or(s.modified)));
    Ok(out)
}

/// The time in a scheduled snapshot's name: `etcd-20261202T030000Z.db` (UTC).
pub fn snapshot_time(name: &str) -> Option<SystemTime> {
    let stamp = name.strip_prefix("etcd-")?.strip_suffix(".db")?;
    if stamp.len() != 16 || !stamp.is_ascii() || stamp.as_bytes().get(8) != Some(&b'T') {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        stamp.get(0..4)?,
        stamp.get(4..6)?,
        stamp.get(6..8)?,
        stamp.get(9..11)?,
        stamp.get(11..13)?,
        stamp.get(13..15)?
    );
    humantime::parse_rfc3339(&rfc3339).ok()
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

    #[test]
    fn scheduled_names_carry_their_time_and_others_none() {
        let t = snapshot_time("etcd-20261202T030500Z.db").unwrap();
        assert_eq!(
            humantime::format_rfc3339(t).to_string(),
            "2026-12-02T03:05:00Z"
        );
        for other in [
            "etcd-2026.db",
            "lab_cp1_r5_20261202T030500Z.db",
            "etcd-20261202X030500Z.db",
            "etcd-20261302T030500Z.db",
        ] {
            assert_eq!(snapshot_time(other), None, "{other}");
        }
        let c = S3Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "s3cr3t-value".to_owned().into(),
        };
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
    }
}
