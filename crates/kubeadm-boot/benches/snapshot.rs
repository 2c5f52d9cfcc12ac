//! Benchmark (not a test): an etcd snapshot of a real etcd holding about 1 GiB of keys,
//! brought to this host over SSH, by `kubeadm_boot::backup::take` (taken and checked on the
//! node, streamed over the SSH channel, checked here) against the usual by-hand way, `ssh node
//! etcdctl snapshot save` followed by `scp`. Both against the same loopback OpenSSH server.
//! Prints wall time per round and this process's peak RSS during `take`.
//!
//!     cargo bench -p kubeadm-boot --bench snapshot            # 1024 MiB
//!     HOMELAB_BENCH_ETCD_MIB=256 HOMELAB_BENCH_ROUNDS=3 cargo bench -p kubeadm-boot --bench snapshot
//!
//! With `HOMELAB_BENCH_SPLIT_CORES=1` the "node" (etcd, the SSH server and what it runs) gets
//! the first core and this host (this program, `ssh`, `scp`) the second, as two machines of
//! one core each would be; otherwise everything shares every core.
//!
//! The two ways take turns going first, round by round (so neither always meets a warm page
//! cache), and the median of the rounds' ratios is printed last: on a small machine where the
//! node, etcd and this host share the cores, one round varies by a fifth either way.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::too_many_lines,
    reason = "a benchmark program: setup, then rounds"
)]

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use homelab_testkit::Sshd;
use homelab_testkit::etcd::Etcd;
use kubeadm_boot::backup::{EtcdClient, take};
use kubeadm_boot::ssh::{HostKeyPolicy, Pool, SshOptions, Target};

/// This process's peak resident set, in KiB, since the last [`reset_peak`].
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn reset_peak() {
    // Linux: writing 5 to clear_refs resets the peak resident set size.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// CPU time the whole machine has spent busy so far (every process: etcd, sshd, the clients),
/// in seconds, from `/proc/stat`.
fn busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy / 100.0
}

/// Pins this program's main thread (and so every thread and process it starts from now on)
/// to `core`.
fn pin(core: usize) {
    let pinned = Command::new("taskset")
        .args([
            "-p",
            "-c",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(pinned.success(), "taskset");
}

fn fill(etcd: &Etcd, mib: usize) {
    // One MiB per key (etcd takes requests up to 1.5 MiB), random so nothing compresses.
    let mut value = vec![0u8; 1 << 20];
    for (i, b) in value.iter_mut().enumerate() {
        *b = u8::try_from((i * 7919 + i / 13) % 251).unwrap_or(0);
    }
    let started = Instant::now();
    for i in 0..mib {
        value[0..8].copy_from_slice(&(i as u64).to_le_bytes());
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", etcd.endpoint))
            .arg(format!("--cacert={}", etcd.ca.display()))
            .arg(format!("--cert={}", etcd.cert.display()))
            .arg(format!("--key={}", etcd.key.display()))
            .args(["put", &format!("/bench/{i:05}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&value).unwrap();
        assert!(child.wait().unwrap().success());
    }
    println!(
        "filled etcd with {mib} MiB of keys in {:.1?}",
        started.elapsed()
    );
}

fn main() {
    let mib: usize = std::env::var("HOMELAB_BENCH_ETCD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let split = std::env::var("HOMELAB_BENCH_SPLIT_CORES").is_ok_and(|v| v == "1");
    if split {
        pin(0);
    }
    let etcd = Etcd::start().unwrap();
    fill(&etcd, mib);
    let sshd = Sshd::start().unwrap();
    if split {
        pin(1);
        println!("the node (etcd, sshd) on core 0, this host on core 1");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
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
    let work = tempfile::tempdir().unwrap();
    let client = EtcdClient {
        endpoint: etcd.endpoint.clone(),
        cacert: etcd.ca.display().to_string(),
        cert: etcd.cert.display().to_string(),
        key: etcd.key.display().to_string(),
        work_dir: work.path().join("node").display().to_string(),
        ..EtcdClient::default()
    };
    // OpenSSH's own clients, with the test server's key and a known_hosts of their own.
    let openssh = |program: &str, port_flag: &str| {
        let mut c = Command::new(program);
        c.args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                sshd.dir().join("known_hosts_ssh").display()
            ))
            .arg("-i")
            .arg(&sshd.client_key.private_path)
            .args([port_flag, &sshd.addr.port().to_string()]);
        c
    };
    let ssh = |extra: &[&str]| {
        let mut c = openssh("ssh", "-p");
        c.arg(format!("{}@{}", sshd.user, sshd.addr.ip()))
            .args(extra);
        c
    };
    let rounds: usize = std::env::var("HOMELAB_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let out = tempfile::tempdir().unwrap();
        let ours = || {
            reset_peak();
            let before = peak_kib();
            let cpu = busy_seconds();
            let started = Instant::now();
            let taken = runtime
                .block_on(take(&pool, &target, &client, "bench", out.path()))
                .unwrap();
            let ours = started.elapsed();
            let cpu = busy_seconds() - cpu;
            let _ = std::fs::remove_file(&taken.snapshot.path);
            (ours, peak_kib(), before, taken.snapshot.size, cpu)
        };
        let by_hand = || {
            let remote = work.path().join("by-hand.db");
            let cpu = busy_seconds();
            let started = Instant::now();
            let saved = ssh(&[&format!(
                "ETCDCTL_API=3 etcdctl --endpoints={} --cacert={} --cert={} --key={} snapshot save {} >/dev/null 2>&1",
                etcd.endpoint,
                etcd.ca.display(),
                etcd.cert.display(),
                etcd.key.display(),
                remote.display()
            )])
            .status()
            .unwrap();
            assert!(saved.success());
            // The legacy protocol (-O): the test server runs every command through a logging
            // wrapper, which the SFTP subsystem does not go through.
            let copied = openssh("scp", "-P")
                .args(["-q", "-O"])
                .arg(format!(
                    "{}@{}:{}",
                    sshd.user,
                    sshd.addr.ip(),
                    remote.display()
                ))
                .arg(out.path().join("by-hand.db"))
                .status()
                .unwrap();
            assert!(copied.success());
            let by_hand = started.elapsed();
            let cpu = busy_seconds() - cpu;
            let _ = std::fs::remove_file(&remote);
            let _ = std::fs::remove_file(out.path().join("by-hand.db"));
            (by_hand, cpu)
        };
        let ((ours, peak, before, size, our_cpu), (by_hand, their_cpu)) = if round % 2 == 0 {
            let o = ours();
            (o, by_hand())
        } else {
            let b = by_hand();
            (ours(), b)
        };
        ratios.push(ours.as_secs_f64() / by_hand.as_secs_f64());
        println!(
            "round {round}: {} MiB snapshot: take {:.1?} ({our_cpu:.1} CPU-s, checked twice, peak RSS {} MiB, {} MiB before), ssh etcdctl + scp {:.1?} ({their_cpu:.1} CPU-s), ratio {:.2}",
            size >> 20,
            ours,
            peak / 1024,
            before / 1024,
            by_hand,
            ours.as_secs_f64() / by_hand.as_secs_f64()
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median ratio over {rounds} rounds: {:.2} (from {:.2} to {:.2})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
