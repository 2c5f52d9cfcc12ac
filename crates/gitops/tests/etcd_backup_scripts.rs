//! The scheduled etcd backup's own scripts, taken from the `CronJob` the scaffold writes and
//! run for real: the node-side naming and pruning with `sh`, and the copy to a bucket with
//! `rclone` (Debian's) against a real S3-compatible server on loopback
//! (`testkit::s3::S3Server`, Versity's gateway). What the bucket holds is read from the
//! server's own storage, not through rclone.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use gitops::scaffold::{EtcdBackup, S3Copy};
use homelab_testkit::s3::S3Server;
use serde_json::Value;

const KEEP: u32 = 3;

fn backup(s3: &S3Server) -> EtcdBackup {
    EtcdBackup {
        schedule: "0 3 * * *".into(),
        node_dir: "/var/backups/etcd".into(),
        keep: KEEP,
        etcd_image: "registry.k8s.io/etcd:3.5.21-0".into(),
        shell_image: "docker.io/library/busybox:1.36".into(),
        s3: Some(S3Copy {
            endpoint: s3.endpoint.clone(),
            bucket: "lab-backups".into(),
            prefix: "cluster/etcd".into(),
            region: "us-east-1".into(),
            secret: "etcd-backup-s3".into(),
            image: "docker.io/rclone/rclone:1.68.2".into(),
        }),
    }
}

/// A container of the `CronJob`'s pod by name: its script and its environment, the Secret's
/// keys resolved from `secret` as the kubelet would.
fn container(
    objects: &[Value],
    name: &str,
    secret: &BTreeMap<&str, &str>,
) -> (String, Vec<(String, String)>) {
    let pod = &objects[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let all: Vec<&Value> = pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pod["containers"].as_array().unwrap())
        .collect();
    let c = all.iter().find(|c| c["name"] == name).unwrap();
    let command: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&command[..2], ["sh", "-c"]);
    let env = c["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| {
                    let value = e["value"].as_str().map_or_else(
                        || {
                            let key = &e["valueFrom"]["secretKeyRef"];
                            assert_eq!(key["name"], "etcd-backup-s3");
                            secret[key["key"].as_str().unwrap()].to_owned()
                        },
                        str::to_owned,
                    );
                    (e["name"].as_str().unwrap().to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default();
    (command[2].to_owned(), env)
}

/// Runs a script as its container would: only its own environment (none of this machine's,
/// such as an `AWS_CA_BUNDLE`), the node directory at `$BACKUP_DIR`, and `bin` (a `date`
/// that tells successive times) ahead of the system's commands.
fn run(script: &str, env: &[(String, String)], backup_dir: &Path, bin: &Path) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("BACKUP_DIR", backup_dir)
        .env("HOME", bin)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap()
}

#[test]
fn each_snapshot_is_named_kept_on_the_node_and_copied_to_the_bucket_keeping_the_newest() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("lab-backups").unwrap();
    let objects = backup(&s3).objects();
    let keys = BTreeMap::from([
        ("access_key_id", s3.access_key_id.as_str()),
        ("secret_access_key", s3.secret_access_key.as_str()),
    ]);
    let (keep_script, keep_env) = container(&objects, "keep", &keys);
    let (upload_script, upload_env) = container(&objects, "upload", &keys);

    let work = tempfile::tempdir().unwrap();
    let node_dir = work.path().join("node");
    std::fs::create_dir(&node_dir).unwrap();
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // One run a day: 2026-12-01T03:00:00Z, then the 2nd, ...
    homelab_testkit::date_shim(&bin, "202612%02dT030000Z");

    for day in 1..=5u32 {
        // What etcdctl leaves for the keep container: a snapshot of its own size and bytes.
        let snapshot: Vec<u8> = (0..(4096 * day))
            .map(|i| ((i * 7 + day) % 251) as u8)
            .collect();
        std::fs::write(node_dir.join(".in-progress.db"), &snapshot).unwrap();

        let out = run(&keep_script, &keep_env, &node_dir, &bin);
        assert!(out.status.success(), "keep, day {day}: {out:?}");
        let expected: Vec<String> = (day.saturating_sub(KEEP - 1).max(1)..=day)
            .map(|d| format!("etcd-202612{d:02}T030000Z.db"))
            .collect();
        assert_eq!(
            homelab_testkit::file_names(&node_dir),
            expected,
            "on the node, day {day}"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&node_dir).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);

        let out = run(&upload_script, &upload_env, &node_dir, &bin);
        assert!(
            out.status.success(),
            "upload, day {day}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            s3.log()
        );
        assert_eq!(
            s3.objects("lab-backups", "cluster/etcd").unwrap(),
            expected,
            "in the bucket, day {day}"
        );
        let newest = expected.last().unwrap();
        assert_eq!(
            std::fs::read(s3.root().join("lab-backups/cluster/etcd").join(newest)).unwrap(),
            snapshot,
            "the bucket's copy of {newest}"
        );
    }

    // Keys the server does not know: the copy fails (the job fails and is retried), the
    // bucket is left as it was, and nothing prints the secret.
    std::fs::write(node_dir.join(".in-progress.db"), b"day six").unwrap();
    assert!(
        run(&keep_script, &keep_env, &node_dir, &bin)
            .status
            .success()
    );
    let wrong = BTreeMap::from([
        ("access_key_id", s3.access_key_id.as_str()),
        ("secret_access_key", "not-the-secret"),
    ]);
    let (_, wrong_env) = container(&objects, "upload", &wrong);
    let out = run(&upload_script, &wrong_env, &node_dir, &bin);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("403") || stderr.contains("SignatureDoesNotMatch"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-secret") && !stderr.contains(&s3.secret_access_key));
    assert_eq!(
        s3.objects("lab-backups", "cluster/etcd").unwrap(),
        ["03", "04", "05"].map(|d| format!("etcd-202612{d}T030000Z.db"))
    );
}
