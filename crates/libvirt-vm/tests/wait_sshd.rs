//! Readiness against a real OpenSSH server on loopback: banner, recorded host key, login, and
//! the ready command; a node presenting another host key is never accepted.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use homelab_testkit::Sshd;
use libvirt_vm::Event;
use libvirt_vm::wait::{ReadyTarget, Seen, probe, wait_ssh_ready};

fn target(sshd: &Sshd, ready_command: String) -> ReadyTarget {
    ReadyTarget {
        name: "n1".into(),
        ip: sshd.addr.ip(),
        port: sshd.addr.port(),
        host_key: sshd.host_key.public.clone(),
        user: sshd.user.clone(),
        private_key: sshd.client_key.private_path.clone(),
        console_log: "/var/log/libvirt/qemu/n1-serial.log".into(),
        ready_command,
    }
}

#[tokio::test]
async fn waits_for_the_ready_marker_then_succeeds() {
    let sshd = Sshd::start().unwrap();
    let marker = sshd.dir().join("boot-finished");
    let t = target(&sshd, format!("test -f {}", marker.display()));
    let key = std::sync::Arc::new(russh::keys::load_secret_key(&t.private_key, None).unwrap());
    match probe(&t, &key).await {
        Seen::CloudInitRunning { banner } => {
            assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner}");
        }
        other => panic!("expected a running cloud-init, saw {other}"),
    }
    let seen = Mutex::new(Vec::new());
    // The marker appears only after the wait has seen the node unfinished once (a fixed
    // delay raced the first probe on a busy machine).
    let unfinished = std::sync::Arc::new(tokio::sync::Notify::new());
    let writer = {
        let marker = marker.clone();
        let unfinished = unfinished.clone();
        tokio::spawn(async move {
            unfinished.notified().await;
            std::fs::write(marker, "").unwrap();
        })
    };
    wait_ssh_ready(
        &[t],
        Duration::from_secs(30),
        &|e| {
            let Event::Node { seen: s, .. } = e else {
                panic!("not a node's state: {e:?}");
            };
            if s.contains("cloud-init not finished") {
                unfinished.notify_one();
            }
            seen.lock().unwrap().push(s);
        },
        &|_| "running".into(),
    )
    .await
    .unwrap();
    writer.await.unwrap();
    let seen = seen.into_inner().unwrap();
    assert!(
        seen.first().unwrap().contains("cloud-init not finished"),
        "{seen:?}"
    );
    assert_eq!(seen.last().unwrap(), "ready");
}

#[tokio::test]
async fn a_different_host_key_is_refused() {
    let sshd = Sshd::start().unwrap();
    let mut t = target(&sshd, "true".into());
    // The client key is not the server's host key.
    t.host_key = sshd.client_key.public.clone();
    let key = std::sync::Arc::new(russh::keys::load_secret_key(&t.private_key, None).unwrap());
    match probe(&t, &key).await {
        Seen::Ssh { error, .. } => assert!(error.contains("host key mismatch"), "{error}"),
        other => panic!("expected a refused host key, saw {other}"),
    }
    let err = wait_ssh_ready(&[t], Duration::from_secs(3), &|_| {}, &|_| "running".into())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("host key mismatch"), "{err}");
}

#[tokio::test]
async fn several_nodes_are_waited_for_together() {
    // Each node's ready check takes 2 s on the node, so waiting for three one after another
    // takes at least 6 s whatever the machine; waiting for them together takes about 2 s
    // plus the logins.
    const CHECK: Duration = Duration::from_secs(2);
    let servers: Vec<Sshd> = (0..3).map(|_| Sshd::start().unwrap()).collect();
    let targets: Vec<ReadyTarget> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut t = target(s, format!("sleep {}", CHECK.as_secs()));
            t.name = format!("n{i}");
            t
        })
        .collect();
    let started = std::time::Instant::now();
    wait_ssh_ready(&targets, Duration::from_secs(60), &|_| {}, &|_| {
        String::new()
    })
    .await
    .unwrap();
    let together = started.elapsed();
    let sequential_at_least = CHECK * u32::try_from(targets.len()).unwrap();
    assert!(
        together < sequential_at_least,
        "three nodes took {together:?}, no less than one after another would ({sequential_at_least:?})"
    );
    // Every node really ran its check (the recorder saw each one).
    for s in &servers {
        assert_eq!(s.commands(), ["sleep 2"], "{:?}", s.addr);
    }
}
