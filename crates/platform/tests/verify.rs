//! `platform::verify` against a real API server with its controllers (the Job controller
//! makes the DNS probe's pod), the test playing the kubelet (it writes the pods' status as
//! a kubelet would) and the ingress (a server on loopback answering for the Ingress's host).
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use homelab_testkit::control_plane::{ControlPlane, namespace};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use platform::verify::{VerifySpec, dns_from_a_pod, ingress_and_tls};
use serde_json::json;

async fn plane() -> (ControlPlane, Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut plane = ControlPlane::start().await.unwrap();
    plane.start_controllers().await.unwrap();
    let client = plane.client().await.unwrap();
    (plane, client)
}

/// Plays the kubelet for the pods of `namespace`: each pod gets `status` once it appears.
fn kubelet(client: Client, namespace: String, status: serde_json::Value) {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        let mut seen = std::collections::BTreeSet::new();
        let mut events = watcher(pods.clone(), watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(pod)) = events.next().await {
            let name = pod.metadata.name.clone().unwrap();
            if seen.insert(name.clone()) {
                pods.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await
                .unwrap();
            }
        }
    });
}

fn spec() -> VerifySpec {
    let mut spec = VerifySpec::new(Ipv4Addr::LOCALHOST);
    spec.timeout = Duration::from_secs(30);
    spec
}

#[tokio::test]
async fn dns_passes_when_the_job_completes_and_names_the_pod_when_it_fails() {
    let (_plane, client) = plane().await;
    let ns = namespace(&client, "verify-dns").await.unwrap();
    kubelet(
        client.clone(),
        ns.clone(),
        json!({ "phase": "Succeeded", "conditions": [] }),
    );
    let ok = dns_from_a_pod(&client, &ns, &spec()).await;
    assert_eq!(
        ok,
        Ok("kubernetes.default.svc.cluster.local resolves from a pod".into())
    );

    let ns = namespace(&client, "verify-dns-fails").await.unwrap();
    kubelet(
        client.clone(),
        ns.clone(),
        json!({ "phase": "Failed", "message": "nslookup: can't resolve 'kubernetes.default.svc.cluster.local'" }),
    );
    let err = dns_from_a_pod(&client, &ns, &spec()).await.unwrap_err();
    assert!(
        err.starts_with("the Job failed (BackoffLimitExceeded"),
        "{err}"
    );
    assert!(
        err.contains("Failed: nslookup: can't resolve 'kubernetes.default.svc.cluster.local'"),
        "{err}"
    );

    // Nobody runs the pod: the check ends at its time limit and says what it saw.
    let ns = namespace(&client, "verify-dns-stuck").await.unwrap();
    let mut quick = spec();
    quick.timeout = Duration::from_secs(3);
    let err = dns_from_a_pod(&client, &ns, &quick).await.unwrap_err();
    assert!(
        err.starts_with("the Job did not finish within 3s: pod dns-"),
        "{err}"
    );
    assert!(err.contains("Pending"), "{err}");
}

/// Answers every request with `body` (HTTP/1.1, one response per connection).
async fn http_server(body: String) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

/// A CA, and a server certificate for `*.verify.homelab.test` signed by it (`tls.crt`,
/// `tls.key`); the CA's PEM.
fn certificates(dir: &std::path::Path) -> String {
    homelab_testkit::test_ca(dir, "homelab test CA").unwrap();
    homelab_testkit::signed_cert(
        dir,
        "tls",
        "/CN=verify",
        "subjectAltName=DNS:*.verify.homelab.test\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::read_to_string(dir.join("ca.crt")).unwrap()
}

/// `openssl s_server -www` on a free port: TLS with the server certificate, answering with
/// a status page (not the backend's token).
fn tls_server(dir: &std::path::Path) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &port.to_string(),
            "-cert",
            "tls.crt",
            "-key",
            "tls.key",
            "-www",
            "-quiet",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, port)
}

#[tokio::test]
async fn the_ingress_check_reaches_the_backend_and_the_tls_check_follows_the_chain() {
    let (_plane, client) = plane().await;
    let ns = namespace(&client, "verify-web").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = certificates(dir.path());
    let (mut tls, tls_port) = tls_server(dir.path());
    // The ingress: plain HTTP answers with the backend's token (what the pod serves).
    let token = format!("homelab-verify-{}", ns.rsplit('-').next().unwrap());
    let http_port = http_server(format!("{token}\n")).await;
    kubelet(
        client.clone(),
        ns.clone(),
        json!({ "phase": "Running", "conditions": [ { "type": "Ready", "status": "True" } ] }),
    );
    let mut spec = spec();
    spec.ports = (http_port, tls_port);
    spec.ca_pem = Some(ca);
    let (http, tls_result) = ingress_and_tls(&client, &ns, &spec).await;
    assert_eq!(
        http,
        Ok(format!(
            "http://{ns}.verify.homelab.test/ at 127.0.0.1 reaches the backend"
        ))
    );
    // The chain holds (the handshake succeeded); the page is openssl's, not the backend's.
    let err = tls_result.unwrap_err();
    assert!(err.ends_with("answered, but not from the backend"), "{err}");

    // Another CA: the certificate does not chain, and the check says so.
    let other = tempfile::tempdir().unwrap();
    spec.ca_pem = Some(certificates(other.path()));
    spec.timeout = Duration::from_secs(3);
    let ns2 = namespace(&client, "verify-web-ca").await.unwrap();
    kubelet(
        client.clone(),
        ns2.clone(),
        json!({ "phase": "Running", "conditions": [ { "type": "Ready", "status": "True" } ] }),
    );
    let (_, tls_result) = ingress_and_tls(&client, &ns2, &spec).await;
    let err = tls_result.unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    tls.kill().unwrap();
    let _ = tls.wait();
}
