//! Real VMs under `qemu:///system` (software emulation on machines whose KVM cannot run
//! guests): the `homelab-vm` binary builds or reuses the base image, boots three nodes on a
//! private NAT network, and the suite logs in with OpenSSH to check each node's host name,
//! static address and key; re-applies (no change), kills the tool mid-apply and re-applies
//! (converges), destroys, and checks nothing is left.
//!
//! Needs root, libvirt, qemu and debootstrap (scripts/deps.sh installs them) and takes
//! minutes, so it is `#[ignore]`d in quick runs; `make test` (and CI) run it.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::Instant;

use assert_cmd::Command;

const NET: &str = "192.168.214";

fn image_dir() -> PathBuf {
    std::env::var_os("HOMELAB_TEST_IMAGE_DIR").map_or_else(
        || PathBuf::from("/var/cache/homelab/test-image"),
        PathBuf::from,
    )
}

fn config(dir: &Path) -> String {
    format!(
        r#"[cluster]
name = "hlit"

[ssh]
user = "ops"
private_key = "{dir}/id_ed25519"
public_key = "{dir}/id_ed25519.pub"
known_hosts = "{dir}/known_hosts"

[network]
name = "hlit"
bridge = "virbr-hlit"
nat_cidr = "{NET}.0/24"
gateway = "{NET}.1"
metallb_range = "{NET}.100-{NET}.150"

[network.load_balancer_ips]
ingress = "{NET}.100"
harbor = "{NET}.101"
argocd = "{NET}.102"

[libvirt]
pool_name = "hlit"
pool_path = "/var/lib/libvirt/images/hlit"
base_image = "{image}/base.qcow2"
domain_type = "auto"

[phases.vms]
timeout = "15m"

[[nodes]]
name = "hlit-cp"
role = "control-plane"
vcpus = 2
memory = "1700MiB"
disk = "10GiB"
ip = "{NET}.10"

[[nodes]]
name = "hlit-w1"
vcpus = 1
memory = "1GiB"
disk = "10GiB"
ip = "{NET}.11"

[[nodes]]
name = "hlit-w2"
vcpus = 1
memory = "1GiB"
disk = "10GiB"
ip = "{NET}.12"
"#,
        dir = dir.display(),
        image = image_dir().display(),
    )
}

fn homelab_vm(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("homelab-vm").unwrap();
    cmd.arg("--config")
        .arg(dir.join("homelab.toml"))
        .env_remove("HOMELAB_CONFIG");
    cmd
}

fn ssh(dir: &Path, ip: &str, command: &str) -> String {
    let out = StdCommand::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=10",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            dir.join("known_hosts").display()
        ))
        .arg("-i")
        .arg(dir.join("id_ed25519"))
        .arg(format!("ops@{ip}"))
        .arg(command)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh {ip} {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn virsh(args: &[&str]) -> String {
    let out = StdCommand::new("virsh")
        .arg("-c")
        .arg("qemu:///system")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check_nodes(dir: &Path) {
    let key = std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap();
    for (name, last) in [("hlit-cp", 10), ("hlit-w1", 11), ("hlit-w2", 12)] {
        let ip = format!("{NET}.{last}");
        let out = ssh(
            dir,
            &ip,
            "hostname; ip -4 -o addr show dev eth0; cat ~/.ssh/authorized_keys; sudo -n true && echo sudo-ok",
        );
        assert!(out.starts_with(&format!("{name}\n")), "{name}: {out}");
        assert!(out.contains(&format!("inet {ip}/24")), "{name}: {out}");
        assert!(
            out.contains(key.split_whitespace().nth(1).unwrap()),
            "{name}: {out}"
        );
        assert!(out.contains("sudo-ok"), "{name}: {out}");
    }
}

#[test]
#[ignore = "boots real VMs under qemu:///system (root, several minutes); `make test` runs it"]
fn real_vms_apply_reapply_interrupt_destroy() {
    homelab_testkit::ensure_libvirtd().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keygen = StdCommand::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "hlit", "-f"])
        .arg(d.join("id_ed25519"))
        .status()
        .unwrap();
    assert!(keygen.success());
    std::fs::write(d.join("homelab.toml"), config(d)).unwrap();
    // Leftovers of an earlier, aborted run of this suite.
    let _ = homelab_vm(d).args(["destroy", "--yes"]).output();

    homelab_vm(d).arg("preflight").assert().success();

    // 1. From nothing to three SSH-ready nodes.
    let started = Instant::now();
    let out = homelab_vm(d).arg("apply").assert().success();
    eprintln!(
        "apply: {:.0?}\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&out.get_output().stderr)
    );
    check_nodes(d);

    // 2. A re-run changes nothing.
    let plan = homelab_vm(d).arg("plan").assert().success();
    let plan = String::from_utf8(plan.get_output().stdout.clone()).unwrap();
    assert!(plan.trim_end().ends_with("plan: 11 unchanged"), "{plan}");
    let started = Instant::now();
    homelab_vm(d)
        .arg("apply")
        .assert()
        .success()
        .stdout(predicates::str::contains("(0 changes)"));
    eprintln!("idempotent re-apply: {:.1?}", started.elapsed());

    // 3. A node lost, the tool killed while re-creating it, then run again: converges.
    virsh(&["destroy", "hlit-w2"]);
    virsh(&["undefine", "hlit-w2"]);
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("homelab-vm"))
        .arg("--config")
        .arg(d.join("homelab.toml"))
        .arg("apply")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        eprintln!("(to be killed) {line}");
        if line.contains("volume hlit-w2.qcow2") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    homelab_vm(d).arg("apply").assert().success();
    check_nodes(d);
    homelab_vm(d)
        .arg("plan")
        .assert()
        .success()
        .stdout(predicates::str::contains("plan: 11 unchanged"));

    // 4. Destroy leaves nothing of this cluster behind.
    homelab_vm(d).args(["destroy", "--yes"]).assert().success();
    let domains = virsh(&["list", "--all", "--name"]);
    assert!(!domains.contains("hlit-"), "{domains}");
    assert!(
        !virsh(&["net-list", "--all", "--name"])
            .lines()
            .any(|l| l.trim() == "hlit")
    );
    assert!(
        !virsh(&["pool-list", "--all", "--name"])
            .lines()
            .any(|l| l.trim() == "hlit")
    );
    let left: Vec<_> = std::fs::read_dir("/var/lib/libvirt/images/hlit")
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "files left in the pool directory: {left:?}"
    );
    homelab_vm(d)
        .args(["destroy", "--yes"])
        .assert()
        .success()
        .stdout(predicates::str::contains("nothing of cluster hlit"));
}
