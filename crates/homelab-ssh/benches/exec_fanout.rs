//! Benchmark (not a test): one command on 1, 3 and 10 OpenSSH servers on loopback.
//!
//! A: homelab-ssh's [`Pool`] (the transport of every layer), every host at once.
//! B: a sequential loop of the OpenSSH client (`ssh host cmd`), one host after the other.
//! Both include connecting and logging in. The command sleeps one second, as a stand-in for
//! real work. Prints both wall times and the ratio per host count.
//!
//! Run: `cargo bench -p homelab-ssh --bench exec_fanout`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use homelab_ssh::{Cmd, HostKeyPolicy, Pool, SshOptions, Target};
use homelab_testkit::Sshd;

const COMMAND: &str = "sleep 1; echo ok";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("exec_fanout: bench");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let servers: Vec<Sshd> = (0..10).map(|_| Sshd::start().unwrap()).collect();
    let key = servers[0].client_key.clone();
    for s in &servers[1..] {
        std::fs::write(s.dir().join("authorized_keys"), format!("{}\n", key.public)).unwrap();
    }
    let known_hosts = servers[0].dir().join("bench_known_hosts");
    println!(
        "{:>5}  {:>12}  {:>16}  {:>6}",
        "hosts", "homelab-ssh", "sequential ssh", "ratio"
    );
    for n in [1usize, 3, 10] {
        let targets: Vec<Target> = servers[..n]
            .iter()
            .enumerate()
            .map(|(i, s)| Target {
                name: format!("h{i}"),
                address: s.addr.ip().to_string(),
                port: s.addr.port(),
                user: s.user.clone(),
            })
            .collect();
        let ours = runtime.block_on(async {
            let pool = Arc::new(
                Pool::new(SshOptions {
                    private_key: key.private_path.clone(),
                    known_hosts: known_hosts.clone(),
                    policy: HostKeyPolicy::TrustOnFirstUse,
                    connect_timeout: Duration::from_secs(10),
                    attempts: 1,
                })
                .unwrap(),
            );
            let started = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for t in targets.clone() {
                let pool = pool.clone();
                set.spawn(async move { pool.run(&t, &Cmd::new(COMMAND)).await.unwrap() });
            }
            while let Some(r) = set.join_next().await {
                assert_eq!(r.unwrap().stdout_text(), "ok\n");
            }
            started.elapsed()
        });
        let started = Instant::now();
        for t in &targets {
            let status = Command::new("ssh")
                .args([
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "LogLevel=ERROR",
                ])
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
                .arg("-i")
                .arg(&key.private_path)
                .args(["-p", &t.port.to_string()])
                .arg(format!("{}@{}", t.user, t.address))
                .arg(COMMAND)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let theirs = started.elapsed();
        println!(
            "{n:>5}  {:>11.2}s  {:>15.2}s  {:>6.2}",
            ours.as_secs_f64(),
            theirs.as_secs_f64(),
            ours.as_secs_f64() / theirs.as_secs_f64()
        );
    }
}
