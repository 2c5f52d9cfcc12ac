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
        .arg(known_hosts);
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
