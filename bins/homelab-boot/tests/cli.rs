//! `homelab-boot` against real OpenSSH servers on loopback.
#![allow(clippy::unwrap_used)]

use assert_cmd::Command;
use homelab_testkit::Sshd;
use predicates::prelude::*;

/// `homelab-boot` with the servers as nodes, logging in with the first server's client key.
fn boot(servers: &[Sshd], known_hosts: &std::path::Path) -> Command {
    let mut cmd = Command::cargo_bin("homelab-boot").unwrap();
    cmd.env_remove("HOMELAB_CONFIG")
        .current_dir(servers[0].dir());
    for (i, s) in servers.iter().enumerate() {
        cmd.arg("--node")
            .arg(format!("n{i}={}:{}", s.addr.ip(), s.addr.port()));
    }
    cmd.arg("--user")
        .arg(&servers[0].user)
        .arg("--key")
        .arg(&servers[0].client_key.private_path)
        .arg("--known-hosts")
        .arg(known_hosts)
        // The test servers share this machine: each test keeps its locks in its own
        // directory, so tests running at once do not see each other's runs.
        .arg("--lock-dir")
        .arg(format!("{}/locks/{{host}}", servers[0].dir().display()));
    cmd
}

fn servers(n: usize) -> Vec<Sshd> {
    let servers: Vec<Sshd> = (0..n).map(|_| Sshd::start().unwrap()).collect();
    for s in &servers[1..] {
        std::fs::write(
            s.dir().join("authorized_keys"),
            format!("{}\n", servers[0].client_key.public),
        )
        .unwrap();
    }
    servers
}

#[test]
fn exec_runs_everywhere_and_reports_each_exit_status() {
    let servers = servers(3);
    let kh = servers[0].dir().join("kh");
    boot(&servers, &kh)
        .args(["--trust-new-hosts", "exec", "--", "echo", "hello"])
        .assert()
        .success()
        .stdout(predicate::str::contains("[n0] hello").and(predicate::str::contains("[n2] hello")));
    let recorded = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(
        recorded.lines().filter(|l| !l.trim().is_empty()).count(),
        3,
        "three host keys recorded:\n{recorded}"
    );
    // Known now: strict checking passes. One node fails: exit 1, statuses per node.
    let port = servers[1].addr.port();
    boot(&servers, &kh)
        .args([
            "exec",
            "--",
            &format!("case \"$SSH_CONNECTION\" in *' {port}') exit 3;; esac"),
        ])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("[n1] exit 3").and(predicate::str::contains("[n0] exit 0")),
        );
    let out = boot(&servers, &kh)
        .args(["-o", "json", "exec", "--sudo", "--", "id", "-u"])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(json["n2"]["stdout"], "0\n");
}

#[test]
fn unknown_hosts_are_refused_by_default() {
    let servers = servers(1);
    boot(&servers, &servers[0].dir().join("empty_kh"))
        .args(["exec", "--", "true"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("is not in")
                .and(predicate::str::contains("strict host key checking")),
        );
}

#[test]
fn preflight_reports_facts() {
    let servers = servers(1);
    boot(&servers, &servers[0].dir().join("kh"))
        .args(["--trust-new-hosts", "preflight"])
        .assert()
        .success()
        .stdout(predicate::str::contains("n0").and(predicate::str::contains(" CPU | ")));
}

#[test]
fn prepare_dry_run_only_reports() {
    let servers = servers(1);
    let out = boot(&servers, &servers[0].dir().join("kh"))
        .args(["--trust-new-hosts", "prepare", "--dry-run"])
        .assert()
        .success();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("[n0] kubernetes-packages"), "{stderr}");
    assert!(
        !std::path::Path::new("/etc/sysctl.d/99-homelab-k8s.conf").exists(),
        "a dry run changes nothing"
    );
}

#[test]
fn bootstrap_dry_run_plans_init_and_join_without_a_token() {
    let servers = servers(2);
    let kubeconfig = servers[0].dir().join("kubeconfig");
    let out = boot(&servers, &servers[0].dir().join("kh"))
        .args([
            "--trust-new-hosts",
            "bootstrap",
            "--dry-run",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .assert()
        .success();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    for line in [
        "[n0] kubeadm-init-config    would change write /etc/kubernetes/homelab/kubeadm-init.yaml (mode 0600)",
        "[n0] kubeadm-init           would change run `kubeadm init` for cluster homelab (Kubernetes v1.33.5, API at 127.0.0.1:6443)",
        "[n1] kubeadm-join           would change join the cluster at 127.0.0.1:6443 as worker n1",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
    assert!(stderr.contains("3 steps, 3 would change"), "{stderr}");
    assert!(
        !std::path::Path::new("/etc/kubernetes/homelab").exists(),
        "a dry run writes nothing"
    );
    assert!(!kubeconfig.exists(), "a dry run fetches no kubeconfig");
}

#[test]
fn cni_applies_only_a_manifest_that_matches_its_pin_or_the_lock() {
    let servers = servers(1);
    let dir = servers[0].dir();
    let manifest = dir.join("kube-flannel.yml");
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kube-flannel-cfg, namespace: kube-flannel}\ndata:\n  net-conf.json: '{\"Network\": \"10.244.0.0/16\"}'\n";
    std::fs::write(&manifest, text).unwrap();
    let sha256 = |path: &std::path::Path| {
        let out = std::process::Command::new("sha256sum")
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_owned()
    };
    let digest = sha256(&manifest);
    let cni = |extra: &[&str]| {
        let mut cmd = boot(&servers, &dir.join("kh"));
        cmd.arg("cni")
            .arg("--manifest")
            .arg(&manifest)
            .arg("--kubeconfig")
            .arg(dir.join("no-such-kubeconfig"))
            .args(extra);
        cmd
    };
    // First use: the digest is recorded in homelab.lock (the embedded default's lock is in
    // the current directory) and shown; the next thing needed is the cluster's context.
    cni(&[])
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!(
            "recorded sha256 {digest}"
        )))
        .stderr(predicate::str::contains("no-such-kubeconfig"));
    let lock = std::fs::read_to_string(dir.join("homelab.lock")).unwrap();
    assert!(lock.contains(&digest), "{lock}");
    // The same file again: checked, not recorded again.
    cni(&[])
        .assert()
        .failure()
        .stderr(predicate::str::contains("recorded").not())
        .stderr(predicate::str::contains("no-such-kubeconfig"));
    // A changed manifest is refused with both digests.
    std::fs::write(&manifest, format!("{text}# changed\n")).unwrap();
    let changed = sha256(&manifest);
    cni(&[])
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!(
            "has sha256 {changed}, but homelab.lock expects {digest}"
        )));
    // An explicit pin wins over the lock, both ways.
    let wrong = "0".repeat(64);
    cni(&["--sha256", &wrong])
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!(
            "has sha256 {changed}, but the pin in homelab.toml expects {wrong}"
        )));
    cni(&["--sha256", &changed])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no-such-kubeconfig"));
}

#[test]
fn upgrade_names_a_bad_target() {
    let servers = servers(1);
    boot(&servers, &servers[0].dir().join("kh"))
        .args(["upgrade", "--to", "1.33"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--to 1.33"));
}

#[test]
fn a_package_source_with_credentials_is_refused_without_repeating_them() {
    let mut cmd = Command::cargo_bin("homelab-boot").unwrap();
    let out = cmd
        .env_remove("HOMELAB_CONFIG")
        .args(["prepare", "--dry-run", "--package-source"])
        .arg("https://glpat-SeCrEt123@mirror.lan/k8s")
        .assert()
        .failure()
        .stderr(predicate::str::contains("carries credentials"));
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(!stderr.contains("glpat-SeCrEt123"), "{stderr}");
    Command::cargo_bin("homelab-boot")
        .unwrap()
        .env_remove("HOMELAB_CONFIG")
        .args([
            "prepare",
            "--dry-run",
            "--package-source",
            "ftp://mirror.lan/",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "scheme `ftp` is not one of https, http",
        ));
}
