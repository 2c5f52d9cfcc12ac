//! Where registries are allowed to differ (distribution spec): a HEAD without
//! `Docker-Content-Digest`, and the digest a PUT is answered with, which must be what was
//! sent. Served by small loopback fakes, each answering one way.
#![allow(clippy::unwrap_used)]

use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use harbor_client::registry::{Credentials, Options, Registry, RegistryError};

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

async fn registry(app: axum::Router) -> Registry {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Registry::new(
        &format!("127.0.0.1:{port}"),
        Credentials::Anonymous,
        Options::default().plain_http(true),
    )
    .unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    format!("sha256:{}", &String::from_utf8(out.stdout).unwrap()[..64])
}

#[tokio::test]
async fn a_head_without_digest_is_resolved_by_get() {
    let client = registry(
        axum::Router::new().fallback(|method: Method, uri: Uri| async move {
            match (method.as_str(), uri.path()) {
                ("HEAD", "/v2/lab/app/manifests/v1") => StatusCode::OK.into_response(),
                ("GET", "/v2/lab/app/manifests/v1") => (
                    [(
                        header::CONTENT_TYPE,
                        "application/vnd.oci.image.manifest.v1+json",
                    )],
                    MANIFEST,
                )
                    .into_response(),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }),
    )
    .await;
    let digest = client.resolve("lab/app", "v1").await.unwrap().unwrap();
    assert_eq!(digest.to_string(), sha256(MANIFEST.as_bytes()));
}

#[tokio::test]
async fn a_put_answered_with_another_digest_fails() {
    let client = registry(axum::Router::new().fallback(
        |method: Method, _headers: HeaderMap| async move {
            match method.as_str() {
                "PUT" => (
                    StatusCode::CREATED,
                    [(
                        "docker-content-digest",
                        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                    )],
                )
                    .into_response(),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        },
    ))
    .await;
    let err = client
        .put_manifest(
            "lab/app",
            "v1",
            MANIFEST.as_bytes(),
            "application/vnd.oci.image.manifest.v1+json",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("as the registry stored it"),
        "{err}"
    );
}

#[tokio::test]
async fn chunks_are_at_least_what_the_registry_asks() {
    use std::sync::{Arc, Mutex};
    let lengths: Arc<Mutex<Vec<usize>>> = Arc::default();
    let seen = lengths.clone();
    let app =
        axum::Router::new().fallback(move |method: Method, uri: Uri, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                match (method.as_str(), uri.path()) {
                    ("POST", "/v2/lab/app/blobs/uploads/") => (
                        StatusCode::ACCEPTED,
                        [
                            (header::LOCATION.as_str(), "/upload/1"),
                            ("oci-chunk-min-length", "8"),
                        ],
                    )
                        .into_response(),
                    ("PATCH", "/upload/1") => {
                        seen.lock().unwrap().push(body.len());
                        (StatusCode::ACCEPTED, [(header::LOCATION, "/upload/1")]).into_response()
                    }
                    ("PUT", "/upload/1") => StatusCode::CREATED.into_response(),
                    _ => StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // Chunks of 4 bytes asked for; the registry takes no fewer than 8.
    let client = Registry::new(
        &format!("127.0.0.1:{port}"),
        Credentials::Anonymous,
        Options::default().plain_http(true).chunk_size(4),
    )
    .unwrap();
    let data = b"twenty bytes of blob";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    std::fs::write(&file, data).unwrap();
    let digest = sha256(data).parse().unwrap();
    client
        .push_blob_file("lab/app", &digest, &file, data.len() as u64)
        .await
        .unwrap();
    assert_eq!(*lengths.lock().unwrap(), [8, 8, 4]);
}
