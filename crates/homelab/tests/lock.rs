//! `homelab.lock` against artifacts served by a loopback HTTP server: the first download
//! records and shows the digest, a changed artifact is refused with both digests, a pin in
//! `homelab.toml` wins, and `update` records the new digest.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use homelab::lock::{ArtifactError, LockFile, fetch, sha256_hex};

/// Serves `/manifest.yml` with whatever `body` holds at the time of the request.
async fn server(body: Arc<Mutex<Vec<u8>>>) -> String {
    let app = axum::Router::new().route(
        "/manifest.yml",
        axum::routing::get(move || {
            let body = body.clone();
            async move { body.lock().unwrap().clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/manifest.yml")
}

#[tokio::test]
async fn first_use_records_later_uses_check_and_update_moves_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let path = LockFile::path_for(Some(&dir.path().join("homelab.toml")));
    assert_eq!(path, dir.path().join("homelab.lock"));
    let body = Arc::new(Mutex::new(b"kind: ConfigMap\n".to_vec()));
    let url = server(body.clone()).await;
    let http = reqwest::Client::new();
    let first_digest = sha256_hex(b"kind: ConfigMap\n");

    // First use: recorded, and the file says so.
    let mut lock = LockFile::load(&path).unwrap();
    assert!(lock.artifacts().is_empty());
    let got = fetch(&http, &url, None, &mut lock, false).await.unwrap();
    assert!(got.recorded);
    assert_eq!(got.sha256, first_digest);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# homelab.lock"), "{text}");
    assert!(
        text.contains(&first_digest) && text.contains(&url),
        "{text}"
    );

    // Later uses: checked against the file, nothing recorded.
    let mut lock = LockFile::load(&path).unwrap();
    assert_eq!(lock.get(&url), Some(first_digest.as_str()));
    let got = fetch(&http, &url, None, &mut lock, false).await.unwrap();
    assert!(!got.recorded);

    // The release changed under the same URL: refused, naming both digests; the lock stays.
    *body.lock().unwrap() = b"kind: ConfigMap # changed\n".to_vec();
    let second_digest = sha256_hex(b"kind: ConfigMap # changed\n");
    let err = fetch(&http, &url, None, &mut lock, false)
        .await
        .unwrap_err();
    match &err {
        ArtifactError::Mismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &first_digest);
            assert_eq!(actual, &second_digest);
        }
        other => panic!("expected a mismatch, got {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("homelab lock --update"), "{message}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    // A pin in homelab.toml wins over the lock, both ways.
    fetch(&http, &url, Some(&second_digest), &mut lock, false)
        .await
        .unwrap();
    let err = fetch(&http, &url, Some(&first_digest), &mut lock, false)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("the pin in homelab.toml expects"),
        "{err}"
    );

    // `lock --update`: the new digest is recorded.
    let got = fetch(&http, &url, None, &mut lock, true).await.unwrap();
    assert!(got.recorded);
    let reread = LockFile::load(&path).unwrap();
    assert_eq!(reread.get(&url), Some(second_digest.as_str()));
    assert_eq!(reread.artifacts().len(), 1);
}

#[tokio::test]
async fn failures_name_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("homelab.lock");
    std::fs::write(&path, "version = 7\n").unwrap();
    let err = LockFile::load(&path).unwrap_err().to_string();
    assert!(err.contains("lock file version 7"), "{err}");
    let mut lock = LockFile::load(&dir.path().join("new.lock")).unwrap();
    let body = Arc::new(Mutex::new(Vec::new()));
    let url = server(body).await.replace("manifest.yml", "missing.yml");
    let err = fetch(&reqwest::Client::new(), &url, None, &mut lock, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ArtifactError::Status { status, .. } if status.as_u16() == 404),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(
        err.starts_with(&format!("downloading {url}: HTTP 404")),
        "{err}"
    );
    // A lock file that is not TOML keeps TOML's own error as its source.
    std::fs::write(&path, "version = [\n").unwrap();
    let err = LockFile::load(&path).unwrap_err();
    let cause = std::error::Error::source(&err).expect("a source");
    assert!(
        cause.downcast_ref::<toml::de::Error>().is_some(),
        "{cause:?}"
    );
    // A local file serves offline installs, and is locked like a download.
    let file = dir.path().join("kube-flannel.yml");
    std::fs::write(&file, "offline").unwrap();
    let got = fetch(
        &reqwest::Client::new(),
        file.to_str().unwrap(),
        None,
        &mut lock,
        false,
    )
    .await
    .unwrap();
    assert!(got.recorded && got.bytes == b"offline");
}
