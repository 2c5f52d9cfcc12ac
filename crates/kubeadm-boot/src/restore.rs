//! Restoring an etcd snapshot onto a single control plane, kubeadm's documented procedure as
//! idempotent steps (a dry run shows them first; a re-run after an interruption does only
//! what is left):
//!
//! 1. `upload-snapshot` — the snapshot is copied to the node (streamed, installed only when
//!    its sha256 there is this one's, mode 0600);
//!    `restore-snapshot` — and restored with the node's etcd client into a new data
//!    directory, with the member name and peer URLs of the node's etcd manifest;
//! 2. `stop-control-plane` — the static pod manifests (etcd, API server, controller manager,
//!    scheduler) are moved aside, so the kubelet stops them;
//! 3. `point-etcd` — etcd's manifest gets the new data directory as its `etcd-data` volume;
//! 4. `start-control-plane` — the manifests go back, and the kubelet starts them.
//!
//! The old data directory is kept (the user removes it once the cluster works). Waiting for
//! the API server and the nodes is the caller's (it has the cluster's client).

use std::path::{Path, PathBuf};

use homelab_ssh::shell_quote;
use serde_json::Value;

use crate::backup::BackupError;
use crate::steps::{Change, Check, Step};

/// The static pods stopped while etcd's data is swapped.
pub const CONTROL_PLANE_PODS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Where things are on the control-plane node: kubeadm's layout unless told otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// The snapshot on this host.
    pub snapshot: PathBuf,
    /// The node's etcd client that restores (`etcdutl`, or `etcdctl` of etcd 3.4).
    pub etcdctl: String,
    /// The kubelet's static pod directory.
    pub manifests: String,
    /// Where the manifests wait while the control plane is stopped.
    pub stopped: String,
    /// Where the snapshot is uploaded on the node.
    pub upload_dir: String,
    /// The new data directory.
    pub data_dir: String,
}

impl Restore {
    /// Restoring `snapshot` into `/var/lib/etcd-restored-<snapshot name>`, kubeadm's paths.
    pub fn new(snapshot: &Path) -> Self {
        let stem = snapshot
            .file_stem()
            .map_or_else(|| "snapshot".into(), |s| s.to_string_lossy().into_owned());
        Self {
            snapshot: snapshot.to_owned(),
            etcdctl: "etcdctl".into(),
            manifests: "/etc/kubernetes/manifests".into(),
            stopped: "/etc/kubernetes/manifests.homelab-restore".into(),
            upload_dir: "/var/lib/homelab/restore".into(),
            data_dir: format!("/var/lib/etcd-restored-{stem}"),
        }
    }

    /// The uploaded snapshot's path on the node.
    pub fn remote_snapshot(&self) -> String {
        let name = self.snapshot.file_name().map_or_else(
            || "snapshot.db".into(),
            |s| s.to_string_lossy().into_owned(),
        );
        format!("{}/{name}", self.upload_dir.trim_end_matches('/'))
    }
}

/// What etcd's manifest says of its member: `--name`, `--initial-advertise-peer-urls`, and
/// the `etcd-data` volume's host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `--name`.
    pub name: String,
    /// `--initial-advertise-peer-urls`.
    pub peer_urls: String,
    /// The host path of the `etcd-data` volume.
    pub data_dir: String,
}

fn manifest_error(what: &str) -> BackupError {
    BackupError::Corrupt {
        path: PathBuf::from("etcd.yaml"),
        problem: format!("etcd's static pod manifest {what}"),
    }
}

fn manifest_yaml(what: &'static str) -> impl FnOnce(serde_norway::Error) -> BackupError {
    move |source| BackupError::ManifestYaml { what, source }
}

/// Reads the member's name, peer URLs and data directory from etcd's manifest.
///
/// # Errors
/// The manifest is not YAML or lacks one of them.
pub fn member(manifest: &str) -> Result<Member, BackupError> {
    let pod: Value = serde_norway::from_str(manifest).map_err(manifest_yaml("is not YAML"))?;
    let command: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "etcd"))
        .and_then(|c| c["command"].as_array())
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .ok_or_else(|| manifest_error("has no etcd container command"))?;
    let flag = |name: &str| {
        command
            .iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .map(str::to_owned)
            .ok_or_else(|| manifest_error(&format!("has no --{name}")))
    };
    let data_dir = pod["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "etcd-data"))
        .and_then(|v| v["hostPath"]["path"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| manifest_error("has no etcd-data hostPath volume"))?;
    Ok(Member {
        name: flag("name")?,
        peer_urls: flag("initial-advertise-peer-urls")?,
        data_dir,
    })
}

/// etcd's manifest with its `etcd-data` volume at `data_dir` (YAML, as the kubelet reads it).
///
/// # Errors
/// The manifest is not YAML or has no such volume.
pub fn pointed_at(manifest: &str, data_dir: &str) -> Result<String, BackupError> {
    let mut pod: Value = serde_norway::from_str(manifest).map_err(manifest_yaml("is not YAML"))?;
    let volume = pod["spec"]["volumes"]
        .as_array_mut()
        .and_then(|v| v.iter_mut().find(|v| v["name"] == "etcd-data"))
        .ok_or_else(|| manifest_error("has no etcd-data hostPath volume"))?;
    volume["hostPath"]["path"] = Value::String(data_dir.to_owned());
    serde_norway::to_string(&pod).map_err(manifest_yaml("cannot be written"))
}

/// The steps, given etcd's manifest as it is now on the node (in [`Restore::manifests`] or,
/// after an interruption, [`Restore::stopped`]) and the snapshot's sha256.
///
/// # Errors
/// The manifest does not name the member or its data volume.
pub fn steps(restore: &Restore, manifest: &str, sha256: &str) -> Result<Vec<Step>, BackupError> {
    let m = member(manifest)?;
    let q = |s: &str| shell_quote(s);
    let (manifests, stopped, data) = (
        q(&restore.manifests),
        q(&restore.stopped),
        q(&restore.data_dir),
    );
    let snapshot = q(&restore.remote_snapshot());
    let cluster = m
        .peer_urls
        .split(',')
        .map(|u| format!("{}={u}", m.name))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Vec<String> = CONTROL_PLANE_PODS
        .iter()
        .map(|p| format!("{manifests}/{p}.yaml"))
        .collect();
    let pods_stopped: Vec<String> = CONTROL_PLANE_PODS
        .iter()
        .map(|p| format!("{stopped}/{p}.yaml"))
        .collect();
    let etcd_stopped = format!("{}/etcd.yaml", restore.stopped.trim_end_matches('/'));
    // The restore is done when the live manifest points at the new data directory.
    let points = |file: &str| {
        format!(
            "grep -qxE '[[:space:]]*path: {}' {file}",
            regex_literal(&restore.data_dir)
        )
    };
    let live = format!("{manifests}/etcd.yaml");
    let aside = format!("{stopped}/etcd.yaml");
    let upload = upload_step(restore, sha256);
    let point = point_step(
        restore,
        manifest,
        &points(&aside),
        &points(&live),
        etcd_stopped,
    )?;
    Ok(vec![
        upload,
        Step::command(
            "restore-snapshot",
            &format!(
                "restore the snapshot into {} (member {}, the old data in {} kept)",
                restore.data_dir, m.name, m.data_dir
            ),
            &format!("test -d {data}/member"),
            &format!(
                "rm -rf {data}.partial && ETCDCTL_API=3 {etcdctl} snapshot restore {snapshot} \
                 --data-dir {data}.partial --name {name} --initial-cluster {cluster} \
                 --initial-advertise-peer-urls {peers} >&2 && mv {data}.partial {data}",
                etcdctl = restore.etcdctl,
                name = q(&m.name),
                cluster = q(&cluster),
                peers = q(&m.peer_urls),
            ),
        ),
        Step::command(
            "stop-control-plane",
            &format!(
                "move the control plane's static pods to {} (the kubelet stops them)",
                restore.stopped
            ),
            &format!("test -e {aside} || {}", points(&live)),
            &format!(
                "mkdir -p {stopped} && for f in {}; do if [ -e \"$f\" ]; then mv \"$f\" {stopped}/; fi; done",
                pods.join(" ")
            ),
        ),
        point,
        Step::command(
            "start-control-plane",
            &format!(
                "move the static pods back to {} (the kubelet starts them on the restored data)",
                restore.manifests
            ),
            &format!("{} && ! test -e {stopped}", points(&live)),
            &format!(
                "for f in {}; do if [ -e \"$f\" ]; then mv \"$f\" {manifests}/; fi; done && rmdir {stopped}",
                pods_stopped.join(" ")
            ),
        ),
    ])
}

/// Copies the snapshot to the node unless the copy there has its sha256.
fn upload_step(restore: &Restore, sha256: &str) -> Step {
    let q = |s: &str| shell_quote(s);
    let snapshot = q(&restore.remote_snapshot());
    Step {
        name: "upload-snapshot".into(),
        description: format!(
            "copy {} to {} (mode 0600)",
            restore.snapshot.display(),
            restore.remote_snapshot()
        ),
        check: Check::Command(
            homelab_ssh::Cmd::new(format!(
                "test \"$(sha256sum {snapshot} 2>/dev/null | cut -d' ' -f1)\" = {}",
                q(sha256)
            ))
            .sudo(),
        ),
        changes: vec![
            Change::Run(
                homelab_ssh::Cmd::new(format!("mkdir -p -m 700 {}", q(&restore.upload_dir))).sudo(),
            ),
            Change::UploadFile {
                local: restore.snapshot.clone(),
                path: restore.remote_snapshot(),
                sha256: sha256.to_owned(),
                mode: 0o600,
            },
        ],
    }
}

/// etcd's manifest (set aside) gets the new data directory, unless it or the live one has it.
fn point_step(
    restore: &Restore,
    manifest: &str,
    aside_points: &str,
    live_points: &str,
    etcd_stopped: String,
) -> Result<Step, BackupError> {
    Ok(Step {
        name: "point-etcd".into(),
        description: format!(
            "etcd's manifest mounts {} as its data (etcd-data volume)",
            restore.data_dir
        ),
        check: Check::Command(
            homelab_ssh::Cmd::new(format!("{aside_points} || {live_points}")).sudo(),
        ),
        changes: vec![Change::Upload {
            path: etcd_stopped,
            contents: pointed_at(manifest, &restore.data_dir)?.into_bytes(),
            mode: 0o600,
            owner: None,
        }],
    })
}

/// `text` as an extended regular expression matching only itself.
fn regex_literal(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.^$*+?()[]{}|".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The parts of kubeadm's etcd manifest that matter here, as kubeadm 1.33 writes them.
    pub(crate) const ETCD_YAML: &str = "apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --advertise-client-urls=https://192.168.122.10:2379
    - --data-dir=/var/lib/etcd
    - --initial-advertise-peer-urls=https://192.168.122.10:2380
    - --initial-cluster=k8s-cp-1=https://192.168.122.10:2380
    - --name=k8s-cp-1
    image: registry.k8s.io/etcd:3.5.21-0
    name: etcd
    volumeMounts:
    - mountPath: /var/lib/etcd
      name: etcd-data
  hostNetwork: true
  volumes:
  - hostPath:
      path: /etc/kubernetes/pki/etcd
      type: DirectoryOrCreate
    name: etcd-certs
  - hostPath:
      path: /var/lib/etcd
      type: DirectoryOrCreate
    name: etcd-data
";

    #[test]
    fn the_member_comes_from_the_manifest_and_only_the_data_volume_moves() {
        let m = member(ETCD_YAML).unwrap();
        assert_eq!(m.name, "k8s-cp-1");
        assert_eq!(m.peer_urls, "https://192.168.122.10:2380");
        assert_eq!(m.data_dir, "/var/lib/etcd");
        let moved = pointed_at(ETCD_YAML, "/var/lib/etcd-restored-x").unwrap();
        let again = member(&moved).unwrap();
        assert_eq!(again.data_dir, "/var/lib/etcd-restored-x");
        assert!(moved.contains("/etc/kubernetes/pki/etcd"));
        // The container still mounts it at /var/lib/etcd, where --data-dir points.
        assert!(moved.contains("--data-dir=/var/lib/etcd\n"), "{moved}");
        assert!(member("kind: Pod\n").is_err());
    }

    #[test]
    fn the_steps_are_named_in_order() {
        let r = Restore::new(Path::new("/backups/lab_cp_r9_20261202T090500Z.db"));
        assert_eq!(
            r.data_dir,
            "/var/lib/etcd-restored-lab_cp_r9_20261202T090500Z"
        );
        let names: Vec<String> = steps(&r, ETCD_YAML, "ab")
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            [
                "upload-snapshot",
                "restore-snapshot",
                "stop-control-plane",
                "point-etcd",
                "start-control-plane"
            ]
        );
    }
}
