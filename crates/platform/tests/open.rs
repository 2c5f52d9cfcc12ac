//! `platform::open` against a stand-in API server on loopback that answers as the real one
//! does for a port-forward: the Service and its pods as JSON, and the pods' `portforward`
//! subresource as a WebSocket upgrade with the `v4.channel.k8s.io` subprotocol (Kubernetes'
//! `staging/src/k8s.io/apimachinery/pkg/util/httpstream/wsstream`: per forwarded port a data
//! channel 2n and an error channel 2n+1, each opened by a frame carrying the port number as
//! two little-endian bytes). Behind it a "pod" answers one HTTP request and closes. (The
//! real API server the other suites start has no kubelet to forward to.)
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The handshake callback's error type is tungstenite's, not ours.
#![allow(clippy::result_large_err)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use platform::Event;
use platform::open::{OpenError, ServicePort, resolve, serve};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// What the stand-in was asked, in order: `GET path` or `UPGRADE path`.
type Seen = Arc<Mutex<Vec<String>>>;

fn service() -> serde_json::Value {
    json!({ "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": "kube-prometheus-stack-grafana", "namespace": "monitoring" },
            "spec": { "selector": { "app.kubernetes.io/name": "grafana" },
                      "ports": [{ "name": "http-web", "port": 80, "targetPort": "grafana" }] } })
}

fn pod(name: &str, ready: bool) -> serde_json::Value {
    json!({ "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": "monitoring", "labels": { "app.kubernetes.io/name": "grafana" } },
            "spec": { "containers": [{ "name": "grafana", "image": "grafana/grafana",
                                       "ports": [{ "name": "grafana", "containerPort": 3000 }] }] },
            "status": { "phase": "Running",
                        "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] } })
}

/// Reads a request head without consuming it (a WebSocket upgrade is then handed, whole, to
/// the handshake).
async fn peek_head(stream: &TcpStream) -> String {
    let mut buf = vec![0; 8192];
    loop {
        let n = stream.peek(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if text.contains("\r\n\r\n") || n == 0 {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn answer_json(mut stream: TcpStream, status: &str, body: &serde_json::Value) {
    let mut head = String::new();
    // The request was only peeked: consume its head (GETs have no body).
    let mut byte = [0u8; 1];
    while !head.ends_with("\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0] as char);
    }
    let body = body.to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await.unwrap();
    let _ = stream.shutdown().await;
}

/// The pod's side of one forwarded connection: opens the port's two channels, reads one
/// HTTP request from channel 0, answers it and closes.
async fn pod_side(stream: TcpStream, port: u16) {
    let offered: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = offered.clone();
    let mut ws =
        tokio_tungstenite::accept_hdr_async(stream, move |req: &Request, mut res: Response| {
            let protocols = req
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            seen.lock().unwrap().push(protocols);
            res.headers_mut().insert(
                "sec-websocket-protocol",
                "v4.channel.k8s.io".parse().unwrap(),
            );
            Ok(res)
        })
        .await
        .unwrap();
    assert!(
        offered.lock().unwrap()[0].contains("v4.channel.k8s.io"),
        "{offered:?}"
    );
    let [lo, hi] = port.to_le_bytes();
    ws.send(Message::binary(vec![0, lo, hi])).await.unwrap();
    ws.send(Message::binary(vec![1, lo, hi])).await.unwrap();
    let mut request = Vec::new();
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Binary(data) = message {
            assert_eq!(data[0], 0, "data arrives on the port's data channel");
            request.extend_from_slice(&data[1..]);
            if request.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&request).to_string();
    let body = format!("pod answered {}", text.lines().next().unwrap_or_default());
    let mut frame = vec![0];
    frame.extend_from_slice(
        format!(
            "HTTP/1.0 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    ws.send(Message::binary(frame)).await.unwrap();
    let _ = ws.close(None).await;
}

/// The stand-in API server: one ready and one unready Grafana pod (or none).
async fn api_server(ready_pod: bool) -> (kube::Client, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let head = peek_head(&stream).await;
                let line = head.lines().next().unwrap_or_default().to_owned();
                let path = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let upgrade = head.to_ascii_lowercase().contains("upgrade: websocket");
                log.lock().unwrap().push(format!(
                    "{} {path}",
                    if upgrade { "UPGRADE" } else { "GET" }
                ));
                if upgrade {
                    // /api/v1/namespaces/monitoring/pods/grafana-1/portforward?ports=3000
                    let port = path.rsplit("ports=").next().unwrap().parse().unwrap();
                    pod_side(stream, port).await;
                } else if path.starts_with(
                    "/api/v1/namespaces/monitoring/services/kube-prometheus-stack-grafana",
                ) {
                    answer_json(stream, "200 OK", &service()).await;
                } else if path.starts_with("/api/v1/namespaces/monitoring/pods?") {
                    let mut items = vec![pod("grafana-0", false)];
                    if ready_pod {
                        items.push(pod("grafana-1", true));
                    }
                    let list = json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items });
                    answer_json(stream, "200 OK", &list).await;
                } else {
                    let status = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                         "message": format!("{path} not found"), "reason": "NotFound", "code": 404 });
                    answer_json(stream, "404 Not Found", &status).await;
                }
            });
        }
    });
    let config = kube::Config::new(format!("http://{address}").parse().unwrap());
    (kube::Client::try_from(config).unwrap(), seen)
}

fn grafana() -> ServicePort {
    platform::open::Ui::grafana("grafana-admin").service
}

#[tokio::test]
async fn a_local_port_reaches_the_ready_pod_of_the_service_through_the_api() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (client, seen) = api_server(true).await;
    // The named target port is looked up on the ready pod, never the unready one.
    let endpoint = resolve(&client, &grafana()).await.unwrap();
    assert_eq!((endpoint.pod.as_str(), endpoint.port), ("grafana-1", 3000));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = events.clone();
    let server = tokio::spawn(async move {
        serve(client, &grafana(), listener, &move |e: Event| {
            log.lock().unwrap().push(e.to_string());
        })
        .await
    });
    // Two connections one after the other: each gets its own forward.
    for n in 0..2 {
        let mut browser = TcpStream::connect(local).await.unwrap();
        browser
            .write_all(format!("GET /login?n={n} HTTP/1.0\r\nhost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(20), browser.read_to_string(&mut answer))
            .await
            .expect("the forwarded answer in 20 s")
            .unwrap();
        assert!(
            answer.ends_with(&format!("pod answered GET /login?n={n} HTTP/1.0")),
            "{answer:?}"
        );
    }
    let upgrades: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.starts_with("UPGRADE"))
        .cloned()
        .collect();
    // kube writes the query as `?&ports=` (an empty first pair), which the API server reads
    // like `?ports=`.
    assert_eq!(
        upgrades,
        ["UPGRADE /api/v1/namespaces/monitoring/pods/grafana-1/portforward?&ports=3000"; 2]
    );
    // The events say where each connection went and how much it carried.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = events.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .filter(|e| e.starts_with("forwarding to pod grafana-1 port 3000"))
            .count()
            == 2
            && events
                .iter()
                .any(|e| e.starts_with("closed: pod grafana-1 port 3000")),
        "{events:?}"
    );
    server.abort();
}

#[tokio::test]
async fn without_a_ready_pod_the_connection_is_refused_with_the_reason_and_serving_goes_on() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (client, _) = api_server(false).await;
    let err = resolve(&client, &grafana()).await.unwrap_err();
    assert!(matches!(err, OpenError::NoPod { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("monitoring/kube-prometheus-stack-grafana"),
        "{err}"
    );
    // A Service port that does not exist is named.
    let mut wrong = grafana();
    wrong.port = 8443;
    let err = resolve(&client, &wrong).await.unwrap_err().to_string();
    assert!(err.contains("has no port 8443"), "{err}");
    // A Service that is not there is the API server's 404, with what was being read.
    let mut missing = grafana();
    missing.service = "nope".into();
    let err = resolve(&client, &missing).await.unwrap_err().to_string();
    assert!(err.contains("read Service monitoring/nope"), "{err}");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = events.clone();
    let server = tokio::spawn(async move {
        serve(client, &grafana(), listener, &move |e: Event| {
            log.lock().unwrap().push(e.to_string());
        })
        .await
    });
    for _ in 0..2 {
        let mut browser = TcpStream::connect(local).await.unwrap();
        let mut answer = Vec::new();
        // Closed without an answer.
        tokio::time::timeout(Duration::from_secs(20), browser.read_to_end(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert!(answer.is_empty());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = events.lock().unwrap().clone();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[0].starts_with("connection not forwarded: no running and ready pod"),
        "{events:?}"
    );
    assert!(!server.is_finished(), "the listener goes on");
    server.abort();
}
