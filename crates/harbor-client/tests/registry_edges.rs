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
        Options {
            plain_http: true,
            ..Options::default()
        },
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
