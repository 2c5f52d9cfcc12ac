//! Benchmark (not a test): on a converged three-node lab, the wall time of `homelab up`
//! re-run (vms and nodes phases, nothing to change) and of `homelab status`, side by side with
//! the per-layer tools run one after another (`homelab-vm apply` then `homelab-boot prepare`;
//! `homelab-vm list` then `homelab-boot preflight`).
//!
//! It brings its own lab up first (three small VMs on 192.168.216.0/24 from the test image in
//! /var/cache/homelab/test-image, node preparation from the test suite's stand-in package
//! repository, as this machine cannot reach pkgs.k8s.io) and reports those first runs too;
//! then `BENCH_RUNS` rounds (default 3), medians; then destroys the lab (`BENCH_KEEP=1` keeps
//! it). The cluster phase is not part of it: kubeadm cannot be installed on these machines.
//!
//! Needs root and libvirt. Run: `cargo bench -p homelab-cli --bench rerun_status`.
#![allow(
    clippy::unwrap_used,
    clippy::format_push_string,
    clippy::too_many_lines,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NET: &str = "192.168.216";

fn image_dir() -> PathBuf {
    std::env::var_os("HOMELAB_TEST_IMAGE_DIR").map_or_else(
        || PathBuf::from("/var/cache/homelab/test-image"),
        PathBuf::from,
    )
}

fn config(dir: &Path, packages: &str) -> String {
    let mut text = format!(
        r#"[cluster]
name = "hlbr"
kubeconfig = "{dir}/kubeconfig"

[ssh]
user = "ops"
private_key = "{dir}/id_ed25519"
public_key = "{dir}/id_ed25519.pub"
known_hosts = "{dir}/known_hosts"

[network]
name = "hlbr"
bridge = "virbr-hlbr"
nat_cidr = "{NET}.0/24"
gateway = "{NET}.1"
metallb_range = "{NET}.100-{NET}.150"

[network.load_balancer_ips]
ingress = "{NET}.100"
harbor = "{NET}.101"
argocd = "{NET}.102"

[libvirt]
pool_name = "hlbr"
pool_path = "/var/lib/libvirt/images/hlbr"
base_image = "{image}/base.qcow2"
domain_type = "auto"
{packages}
"#,
        dir = dir.display(),
        image = image_dir().display(),
    );
    for (name, last, vcpus, mem) in [
        ("hlbr-cp", 10, 2, 1900),
        ("hlbr-w1", 11, 1, 1024),
        ("hlbr-w2", 12, 1, 1024),
    ] {
        let role = if last == 10 {
            "control-plane"
        } else {
            "worker"
        };
        text.push_str(&format!(
            "\n[[nodes]]\nname = \"{name}\"\nrole = \"{role}\"\nvcpus = {vcpus}\nmemory = \"{mem}MiB\"\ndisk = \"10GiB\"\nip = \"{NET}.{last}\"\n"
        ));
    }
    text
}

/// Runs a tool of this workspace against the bench's configuration; returns its wall time.
fn timed(program: &Path, args: &[&str], dir: &Path, must_succeed: bool) -> Duration {
    let started = Instant::now();
    let out = Command::new(program)
        .arg("--config")
        .arg(dir.join("homelab.toml"))
        .args(args)
        .env_remove("HOMELAB_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        !must_succeed || out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn ssh(dir: &Path, ip: &str, command: &str) {
    let ok = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            dir.join("known_hosts").display()
        ))
        .arg("-i")
        .arg(dir.join("id_ed25519"))
        .arg(format!("ops@{ip}"))
        .arg(command)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh {ip} {command}");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("rerun_status: bench");
        return;
    }
    homelab_testkit::ensure_libvirtd().unwrap();
    assert!(
        image_dir().join("base.qcow2").exists(),
        "no test image in {}: run the real-VM suite once, or `homelab-vm image build`",
        image_dir().display()
    );
    let homelab = PathBuf::from(env!("CARGO_BIN_EXE_homelab"));
    let built = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "homelab-vm",
            "-p",
            "homelab-boot",
        ])
        .status()
        .unwrap();
    assert!(built.success());
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release");
    let (vm, boot) = (release.join("homelab-vm"), release.join("homelab-boot"));
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);

    let dir = tempfile::Builder::new().prefix("hlbr-").tempdir().unwrap();
    let d = dir.path();
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(d.join("id_ed25519"))
        .status()
        .unwrap();
    assert!(keygen.success());
    std::fs::write(d.join("homelab.toml"), config(d, "")).unwrap();
    let _ = timed(&vm, &["destroy", "--yes"], d, false);

    let first_vms = timed(&homelab, &["up", "--yes", "--until", "vms"], d, true);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let repo = runtime
        .block_on(homelab_testkit::apt_repo::AptRepo::start(
            format!("{NET}.1").parse().unwrap(),
            &["1.33.5"],
        ))
        .unwrap();
    let packages = format!(
        "\n[packages]\nrepository = \"{}\"\nkey_fingerprint = \"{}\"\n",
        repo.base_url, repo.fingerprint
    );
    std::fs::write(d.join("homelab.toml"), config(d, &packages)).unwrap();
    // This machine's Debian mirror is a snapshot past its Valid-Until date (see the suite).
    if let Ok(conf) = std::fs::read_to_string("/etc/apt/apt.conf.d/99artifact-registry") {
        for last in [10, 11, 12] {
            ssh(
                d,
                &format!("{NET}.{last}"),
                &format!(
                    "printf '%s' '{conf}' | sudo -n tee /etc/apt/apt.conf.d/99artifact-registry >/dev/null"
                ),
            );
        }
    }
    let first_nodes = timed(&homelab, &["up", "--yes", "--until", "nodes"], d, true);
    println!(
        "first runs (not part of the comparison): vms {first_vms:.0?}, nodes {first_nodes:.0?}"
    );

    let (mut up, mut layers_up, mut status, mut layers_status) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        up.push(timed(
            &homelab,
            &["up", "--yes", "--until", "nodes"],
            d,
            true,
        ));
        layers_up.push(timed(&vm, &["apply"], d, true) + timed(&boot, &["prepare"], d, true));
        // Unhealthy (no cluster yet) exits 1; the time is what counts.
        status.push(timed(&homelab, &["status"], d, false));
        layers_status.push(timed(&vm, &["list"], d, true) + timed(&boot, &["preflight"], d, true));
    }
    println!(
        "{:<34} {:>10} {:>22}",
        "converged 3-node lab", "homelab", "per-layer tools"
    );
    println!(
        "{:<34} {:>10.2?} {:>22.2?}",
        "up --until nodes (re-run)",
        median(up),
        median(layers_up)
    );
    println!(
        "{:<34} {:>10.2?} {:>22.2?}",
        "status",
        median(status),
        median(layers_status)
    );
    if std::env::var_os("BENCH_KEEP").is_none() {
        timed(&homelab, &["destroy", "--yes"], d, true);
    } else {
        println!("kept: {}", d.display());
        std::mem::forget(dir);
    }
}
