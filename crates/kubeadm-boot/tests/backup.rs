//! etcd snapshots against real parts: Debian's etcd with client-certificate authentication
//! (as kubeadm runs it), its `etcdctl`, and a real OpenSSH server on loopback standing in for
//! the control-plane node.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use homelab_testkit::Sshd;
use homelab_testkit::etcd::Etcd;
use kubeadm_boot::backup::{EtcdClient, list, parse_name, take, verify};
use kubeadm_boot::ssh::{HostKeyPolicy, Pool, SshOptions, Target};

fn node(sshd: &Sshd) -> (Arc<Pool>, Target) {
    let pool = Pool::new(SshOptions {
        private_key: sshd.client_key.private_path.clone(),
        known_hosts: sshd.dir().join("known_hosts"),
        policy: HostKeyPolicy::TrustOnFirstUse,
        connect_timeout: Duration::from_secs(10),
        attempts: 3,
    })
    .unwrap();
    let target = Target {
        name: "cp-1".into(),
        address: sshd.addr.ip().to_string(),
        port: sshd.addr.port(),
        user: sshd.user.clone(),
    };
    (Arc::new(pool), target)
}

/// The etcd client of the loopback node: `etcd`'s endpoint and client certificate, the
/// node's snapshots written under `work/backup`.
/// Writes every `(key, value)`, failing with etcdctl's error output when one is refused.
fn put_keys(etcd: &Etcd, keys: impl IntoIterator<Item = (String, String)>) {
    for (key, value) in keys {
        let out = etcd.etcdctl(&["put", &key, &value]).unwrap();
        assert!(
            out.status.success(),
            "put {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn client_for(etcd: &Etcd, work: &std::path::Path) -> EtcdClient {
    EtcdClient {
        endpoint: etcd.endpoint.clone(),
        cacert: etcd.ca.display().to_string(),
        cert: etcd.cert.display().to_string(),
        key: etcd.key.display().to_string(),
        work_dir: work.join("backup").display().to_string(),
        ..EtcdClient::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_streamed_checked_and_restores_the_keys() {
    let etcd = Etcd::start().unwrap();
    put_keys(
        &etcd,
        (0..40).map(|i| (format!("/registry/k{i:02}"), format!("value-{i}"))),
    );
    let sshd = Sshd::start().unwrap();
    let (pool, target) = node(&sshd);
    let work = tempfile::tempdir().unwrap();
    let client = client_for(&etcd, work.path());
    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().join("snapshots");
    let taken = take(&pool, &target, &client, "lab", &dir).await.unwrap();

    // What etcd said of it, in its name, mode 0600, nothing left on the node.
    assert!(taken.status.total_keys >= 40, "{:?}", taken.status);
    assert!(taken.status.revision >= 41, "{:?}", taken.status);
    assert_eq!(taken.snapshot.size, taken.status.total_size + 32);
    let name = taken.snapshot.path.file_name().unwrap().to_string_lossy();
    let (cluster, node, revision, _) = parse_name(&name).unwrap();
    assert_eq!((cluster.as_str(), node.as_str()), ("lab", "cp-1"));
    assert_eq!(revision, taken.status.revision);
    let mode = std::fs::metadata(&taken.snapshot.path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !work.path().join("backup").exists(),
        "the node kept its copy"
    );
    assert_eq!(list(&dir).unwrap(), std::slice::from_ref(&taken.snapshot));
    verify(&taken.snapshot.path).unwrap();
    // The certificates never crossed: only the etcd client on the node read them (no
    // command sends a file named `*.key` or `*.crt` back).
    for command in sshd.commands() {
        for sent in command.split("cat ").skip(1) {
            let file = sent.split([' ', ';']).next().unwrap_or_default();
            assert!(
                !file.contains(".key") && !file.contains(".crt"),
                "{command}"
            );
        }
    }

    // A copy with one byte changed fails etcd's own check, here and in etcdctl's restore.
    let bad = backups.path().join("bad.db");
    let mut bytes = std::fs::read(&taken.snapshot.path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&bad, &bytes).unwrap();
    let err = verify(&bad).unwrap_err().to_string();
    assert!(
        err.contains("the file changed after etcd wrote it"),
        "{err}"
    );
    assert!(Etcd::restore(&bad).is_err());

    // The good one restores into a new data directory, and the keys are there.
    let restored = Etcd::restore(&taken.snapshot.path).unwrap();
    let out = restored
        .etcdctl(&["get", "--prefix", "/registry/", "--keys-only"])
        .unwrap();
    let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(keys.len(), 40, "{keys:?}");
    let out = restored
        .etcdctl(&["get", "/registry/k07", "--print-value-only"])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "value-7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_etcd_refuses_leaves_no_file_here_or_there() {
    let etcd = Etcd::start().unwrap();
    let sshd = Sshd::start().unwrap();
    let (pool, target) = node(&sshd);
    let work = tempfile::tempdir().unwrap();
    // A client certificate etcd does not accept: the server's CA file as the certificate.
    let client = EtcdClient {
        cert: etcd.ca.display().to_string(),
        ..client_for(&etcd, work.path())
    };
    let backups = tempfile::tempdir().unwrap();
    let err = take(&pool, &target, &client, "lab", backups.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("etcd snapshot on cp-1: "), "{err}");
    assert_eq!(std::fs::read_dir(backups.path()).unwrap().count(), 0);
    assert!(!work.path().join("backup").exists());

    // No etcd client on the node and no etcd container to borrow one from: said so.
    let client = EtcdClient {
        etcdctl: "etcdctl-not-installed".into(),
        ..client
    };
    let err = take(&pool, &target, &client, "lab", backups.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no etcdctl on this node (install etcd-client)"),
        "{err}"
    );
}

/// An etcd client on the node that writes its snapshot as `<path>.part` in `pieces` pauses
/// (then renames it, as etcdctl does), or fails after `fail_after` of them; the bytes are the
/// real etcdctl's. It notes in `links` how many names the `.part` file had once written:
/// 2 when the snapshot was followed while it was written.
fn slow_etcdctl(bin: &std::path::Path, name: &str, fail_after: Option<u32>) -> String {
    let links = bin.join(format!("{name}.links"));
    let fail = fail_after.map_or_else(String::new, |n| {
        format!("[ $k -lt {n} ] || {{ echo 'etcdctl stand-in: connection lost' >&2; exit 1; }};")
    });
    let script = format!(
        r#"case " $* " in *" snapshot save "*) ;; *) exec etcdctl "$@" ;; esac
for last; do :; done
i=0; n=$#
for a; do i=$((i+1)); [ $i -gt 1 ] || set --; [ $i -ge $n ] || set -- "$@" "$a"; done
etcdctl "$@" "$last.whole" >&2 || exit $?
size=$(stat -c %s "$last.whole"); chunk=$(( (size + 7) / 8 ))
: > "$last.part"
for k in 0 1 2 3 4 5 6 7; do
  {fail}
  dd if="$last.whole" of="$last.part" bs=$chunk skip=$k seek=$k count=1 conv=notrunc status=none
  sleep 0.2
done
stat -c %h "$last.part" > {links}
mv "$last.part" "$last"; rm -f "$last.whole"
"#,
        links = links.display(),
    );
    homelab_testkit::stand_in(bin, name, &script)
        .display()
        .to_string()
}

/// The snapshot is streamed while etcd writes it: the node follows the `.part` file and the
/// bytes that arrive are etcd's, whole. One written faster than it can be followed (no
/// `.part` seen) is sent once written; one whose writer fails part-way leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_followed_while_etcd_writes_it() {
    let etcd = Etcd::start().unwrap();
    put_keys(
        &etcd,
        (0..200).map(|i| (format!("/registry/f{i:03}"), "x".repeat(2000))),
    );
    let sshd = Sshd::start().unwrap();
    let (pool, target) = node(&sshd);
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    let backups = tempfile::tempdir().unwrap();

    // Written in pieces: followed (the `.part` file had a second name), and whole.
    let client = EtcdClient {
        etcdctl: slow_etcdctl(&bin, "etcdctl-slow", None),
        ..client_for(&etcd, work.path())
    };
    let taken = take(&pool, &target, &client, "lab", &backups.path().join("slow"))
        .await
        .unwrap();
    let links = std::fs::read_to_string(bin.join("etcdctl-slow.links")).unwrap();
    assert_eq!(links.trim(), "2", "the .part file was not followed");
    assert!(taken.status.total_keys >= 200, "{:?}", taken.status);
    assert_eq!(taken.snapshot.size, taken.status.total_size + 32);
    verify(&taken.snapshot.path).unwrap();
    assert!(
        !work.path().join("backup").exists(),
        "the node kept its copy"
    );

    // No `.part` file at all (written under another name, then renamed): sent once written.
    let client = EtcdClient {
        etcdctl: homelab_testkit::stand_in(
            &bin,
            "etcdctl-rename",
            r#"case " $* " in *" snapshot save "*) ;; *) exec etcdctl "$@" ;; esac
for last; do :; done
i=0; n=$#
for a; do i=$((i+1)); [ $i -gt 1 ] || set --; [ $i -ge $n ] || set -- "$@" "$a"; done
etcdctl "$@" "$last.whole" >&2 && mv "$last.whole" "$last"
"#,
        )
        .display()
        .to_string(),
        ..client_for(&etcd, work.path())
    };
    let whole = take(
        &pool,
        &target,
        &client,
        "lab",
        &backups.path().join("whole"),
    )
    .await
    .unwrap();
    assert_eq!(whole.snapshot.size, whole.status.total_size + 32);
    verify(&whole.snapshot.path).unwrap();

    // The writer fails after three pieces: an error naming it, nothing kept anywhere.
    let client = EtcdClient {
        etcdctl: slow_etcdctl(&bin, "etcdctl-fails", Some(3)),
        ..client_for(&etcd, work.path())
    };
    let dir = backups.path().join("failed");
    let err = take(&pool, &target, &client, "lab", &dir)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("etcdctl stand-in: connection lost"), "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    assert!(
        !work.path().join("backup").exists(),
        "the node kept its copy"
    );
}

/// A node without an etcd client (a kubeadm node): the running etcd container's own
/// `etcdctl` is used through `crictl exec`, here a stand-in `crictl` whose one container runs
/// the real `etcdctl`; the snapshot streams and checks out the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_etcd_client_the_etcd_containers_own_is_used() {
    let etcd = Etcd::start().unwrap();
    put_keys(
        &etcd,
        (0..20).map(|i| (format!("/registry/c{i:02}"), "in the container".into())),
    );
    let sshd = Sshd::start().unwrap();
    let (pool, target) = node(&sshd);
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    let log = work.path().join("crictl.log");
    let crictl = homelab_testkit::stand_in(
        &bin,
        "crictl",
        &format!(
            r#"echo "$*" >> {log}
case "$1" in
  ps) echo c0ffee ;;
  exec) [ "$2" = c0ffee ] || {{ echo "no container $2" >&2; exit 1; }}; shift 2; exec "$@" ;;
  *) exit 1 ;;
esac
"#,
            log = log.display()
        ),
    );
    let client = EtcdClient {
        etcdctl: "etcdctl-not-installed".into(),
        crictl: crictl.display().to_string(),
        ..client_for(&etcd, work.path())
    };
    let backups = tempfile::tempdir().unwrap();
    let taken = take(&pool, &target, &client, "lab", backups.path())
        .await
        .unwrap();
    assert!(taken.status.total_keys >= 20, "{:?}", taken.status);
    verify(&taken.snapshot.path).unwrap();
    assert!(
        !work.path().join("backup").exists(),
        "the node kept its copy"
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.lines().any(|l| l.starts_with("ps -q --name ^etcd$")),
        "{calls}"
    );
    assert!(
        calls
            .lines()
            .any(|l| l.starts_with("exec c0ffee etcdctl") && l.contains(" snapshot save ")),
        "{calls}"
    );
    assert!(
        calls
            .lines()
            .any(|l| l.starts_with("exec c0ffee etcdctl") && l.contains(" snapshot status ")),
        "{calls}"
    );
}

/// `upgrade` against a real API server (or the cluster `KUBECONFIG` names) and a loopback
/// node: a snapshot that fails stops it before any node step runs; a dry run says it would
/// take one first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario: the node registered, then three upgrades"
)]
async fn no_upgrade_without_a_good_snapshot() {
    use kubeadm_boot::backup::Backups;
    use kubeadm_boot::bootstrap::Node;
    use kubeadm_boot::kubeadm::KubeadmNode;
    use kubeadm_boot::steps::{Outcome, Runner};
    use kubeadm_boot::upgrade::{UpgradeError, UpgradePlan, upgrade};

    let (client, plane) = homelab_testkit::control_plane::cluster().await.unwrap();
    if plane.is_some() {
        // No kubelet here: the node is registered Ready as a kubelet would.
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
        nodes
            .create(
                &kube::api::PostParams::default(),
                &serde_json::from_value(serde_json::json!({ "metadata": { "name": "cp-1" } }))
                    .unwrap(),
            )
            .await
            .unwrap();
        nodes
            .patch_status(
                "cp-1",
                &kube::api::PatchParams::apply("homelab-test-kubelet").force(),
                &kube::api::Patch::Apply(serde_json::json!({
                    "apiVersion": "v1", "kind": "Node",
                    "status": {
                        "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "ready", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                            "lastTransitionTime": "2026-01-01T00:00:00Z" }],
                        "nodeInfo": { "kubeletVersion": "v1.33.5", "kubeProxyVersion": "",
                            "containerRuntimeVersion": "containerd://1.7.24", "machineID": "",
                            "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
                            "operatingSystem": "linux", "architecture": "amd64" },
                    } })),
            )
            .await
            .unwrap();
    }
    // The release the cluster's nodes run: the pre-checks pass, nothing is left to upgrade
    // but the snapshot comes first anyway.
    let version = kubeadm_boot::nodes::list(&client).await.unwrap()[0]
        .kubelet_version
        .clone();
    let sshd = Sshd::start().unwrap();
    let (pool, target) = node(&sshd);
    let backups = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut plan = UpgradePlan {
        target: version.trim_start_matches('v').parse().unwrap(),
        source: kubeadm_boot::prepare::PackageSource::default(),
        control_plane: Node {
            target,
            spec: KubeadmNode::new("cp-1", std::net::Ipv4Addr::LOCALHOST),
        },
        workers: Vec::new(),
        drain_timeout: Duration::from_secs(10),
        ready_timeout: Duration::from_secs(10),
        backup: Some(Backups {
            // Nothing listens there: etcdctl fails.
            client: EtcdClient {
                endpoint: "https://127.0.0.1:1".into(),
                work_dir: work.path().join("backup").display().to_string(),
                timeout: Duration::from_secs(30),
                ..EtcdClient::default()
            },
            cluster: "lab".into(),
            dir: backups.path().to_owned(),
            keep: 3,
            max_age: None,
        }),
    };
    let mut runner = Runner::new(pool.clone());
    runner.lock_dir = format!("{}/locks", sshd.dir().display());
    runner.dry_run = true;
    let reports = upgrade(&runner, &client, &plan, &|_| {}).await.unwrap();
    assert_eq!(reports[0].step, "etcd-snapshot");
    assert_eq!(reports[0].outcome, Outcome::WouldChange);

    runner.dry_run = false;
    let before = sshd.commands().len();
    let err = upgrade(&runner, &client, &plan, &|_| {}).await.unwrap_err();
    assert!(matches!(err, UpgradeError::Backup(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("no upgrade without a good etcd snapshot"),
        "{text}"
    );
    assert!(text.contains("--skip-backup"), "{text}");
    // Only the snapshot ran on the node: no step, no lock.
    let ran = sshd.commands()[before..].to_vec();
    assert_eq!(ran.len(), 1, "{ran:#?}");
    assert!(ran[0].contains("snapshot save"), "{ran:#?}");
    assert_eq!(std::fs::read_dir(backups.path()).unwrap().count(), 0);

    // Without a snapshot (asked for): the steps run (and report, at this release, nothing
    // left to do or a step the loopback node cannot run; never the snapshot).
    plan.backup = None;
    runner.dry_run = true;
    let reports = upgrade(&runner, &client, &plan, &|_| {}).await.unwrap();
    assert!(reports.iter().all(|r| r.step != "etcd-snapshot"));
    if plane.is_some() {
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
        let _ = nodes
            .delete("cp-1", &kube::api::DeleteParams::default())
            .await;
    }
}

/// A restore as steps on a loopback node: kubeadm's manifest layout in a directory of the
/// test, the real etcd client restoring a real snapshot. A dry run shows every step, the
/// run does them, a re-run does nothing, and an etcd started on the restored data directory
/// holds the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_is_planned_done_once_and_the_data_serves_the_keys() {
    use kubeadm_boot::restore::{CONTROL_PLANE_PODS, Restore, member, steps};
    use kubeadm_boot::steps::{Outcome, Runner};

    let etcd = Etcd::start().unwrap();
    put_keys(
        &etcd,
        (0..10).map(|i| (format!("/registry/r{i}"), "kept".into())),
    );
    let sshd = Sshd::start().unwrap();
    let (pool, target) = node(&sshd);
    let work = tempfile::tempdir().unwrap();
    let client = client_for(&etcd, work.path());
    let local = tempfile::tempdir().unwrap();
    let taken = take(&pool, &target, &client, "lab", local.path())
        .await
        .unwrap();

    // The node: kubeadm's static pod manifests, etcd's naming its member and data.
    let node_dir = tempfile::tempdir().unwrap();
    let manifests = node_dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let peer = homelab_testkit::etcd::free_port().unwrap();
    let etcd_yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n    - etcd\n    - --data-dir=/var/lib/etcd\n    - --initial-advertise-peer-urls=http://127.0.0.1:{peer}\n    - --name=cp-1\n    name: etcd\n  volumes:\n  - hostPath:\n      path: {}\n      type: DirectoryOrCreate\n    name: etcd-data\n",
        node_dir.path().join("etcd").display()
    );
    for pod in CONTROL_PLANE_PODS {
        let text = if *pod == "etcd" {
            etcd_yaml.clone()
        } else {
            format!("kind: Pod\nmetadata: {{name: {pod}}}\n")
        };
        std::fs::write(manifests.join(format!("{pod}.yaml")), text).unwrap();
    }
    let mut restore = Restore::new(&taken.snapshot.path);
    restore.manifests = manifests.display().to_string();
    restore.stopped = node_dir.path().join("stopped").display().to_string();
    restore.upload_dir = node_dir.path().join("upload").display().to_string();
    restore.data_dir = node_dir.path().join("restored").display().to_string();
    let sha = kubeadm_boot::bundle::file_sha256(&taken.snapshot.path)
        .unwrap()
        .0;
    let plan = steps(&restore, &etcd_yaml, &sha).unwrap();
    let run = |dry_run: bool| {
        let mut runner = Runner::new(pool.clone());
        runner
            .lock_dir
            .clone_from(&format!("{}/locks", sshd.dir().display()));
        runner.dry_run = dry_run;
        let work = vec![(target.clone(), plan.clone())];
        async move {
            runner
                .run(work, &|_| {})
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.outcome)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(run(true).await, [Outcome::WouldChange; 5]);
    assert!(
        manifests.join("etcd.yaml").exists(),
        "a dry run changed the node"
    );
    assert_eq!(run(false).await, [Outcome::Changed; 5]);
    assert_eq!(run(false).await, [Outcome::Unchanged; 5]);

    // Every manifest back, etcd's on the restored data; the old data directory untouched.
    for pod in CONTROL_PLANE_PODS {
        assert!(manifests.join(format!("{pod}.yaml")).exists(), "{pod}");
    }
    assert!(!node_dir.path().join("stopped").exists());
    let live = std::fs::read_to_string(manifests.join("etcd.yaml")).unwrap();
    assert_eq!(member(&live).unwrap().data_dir, restore.data_dir);
    let uploaded = node_dir
        .path()
        .join("upload")
        .join(taken.snapshot.path.file_name().unwrap());
    assert_eq!(
        std::fs::metadata(&uploaded).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let restored = Etcd::start_on(std::path::Path::new(&restore.data_dir), "cp-1", peer).unwrap();
    let out = restored
        .etcdctl(&["get", "--prefix", "/registry/r", "--keys-only"])
        .unwrap();
    let keys = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(keys, 10);
}
