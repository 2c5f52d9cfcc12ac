//! Readiness against a real OpenSSH server on loopback: banner, recorded host key, login, and
//! the ready command; a node presenting another host key is never accepted.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use homelab_testkit::Sshd;
use libvirt_vm::wait::{ReadyTarget, Seen, probe, wait_ready};

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
    let writer = {
        let marker = marker.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            std::fs::write(marker, "").unwrap();
        })
    };
    wait_ready(
        &[t],
        Duration::from_secs(30),
        &|_, s| seen.lock().unwrap().push(s.to_string()),
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
    let err = wait_ready(&[t], Duration::from_secs(3), &|_, _| {}, &|_| {
        "running".into()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("host key mismatch"), "{err}");
}

#[tokio::test]
async fn several_nodes_are_waited_for_together() {
    let servers: Vec<Sshd> = (0..3).map(|_| Sshd::start().unwrap()).collect();
    let targets: Vec<ReadyTarget> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut t = target(s, "true".into());
            t.name = format!("n{i}");
            t
        })
        .collect();
    let started = std::time::Instant::now();
    wait_ready(&targets, Duration::from_secs(30), &|_, _| {}, &|_| {
        String::new()
    })
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
}
