//! Credentials go only to the registry itself. A registry may send an upload `Location` (or a
//! paging `Link`) on another host or port — a storage front end, or an attacker that took over
//! the response — and the client must follow it without the user's credentials.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use harbor_client::registry::{Credentials, Options, Registry};
use secrecy::SecretString;

type Seen = Arc<Mutex<Vec<(String, bool)>>>;

async fn serve(app: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// A client logging in as the token server's robot.
fn robot(host: &str, options: Options) -> Registry {
    Registry::new(
        host,
        Credentials::Basic {
            username: "robot$ci".into(),
            password: SecretString::from("t0ken-pass"),
        },
        options,
    )
    .unwrap()
}

#[tokio::test]
async fn an_upload_location_on_another_port_gets_no_authorization() {
    for chunked in [false, true] {
        upload_elsewhere(chunked).await;
    }
}

/// One upload whose session the registry sends to another port: monolithic (one PUT) or in
/// chunks (PATCH, then the closing PUT).
async fn upload_elsewhere(chunked: bool) {
    let foreign_seen: Seen = Arc::default();
    let seen = foreign_seen.clone();
    // The other host: takes the upload and notes whether credentials came with it.
    let foreign = axum::Router::new().fallback(
        move |method: axum::http::Method, uri: axum::http::Uri, headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((
                    method.to_string(),
                    headers.contains_key(header::AUTHORIZATION),
                ));
                if method == axum::http::Method::PATCH {
                    // A chunk taken: the session goes on where it is.
                    (
                        StatusCode::ACCEPTED,
                        [(header::LOCATION, uri.path().to_owned())],
                    )
                        .into_response()
                } else {
                    StatusCode::CREATED.into_response()
                }
            }
        },
    );
    let foreign_port = serve(foreign).await;
    let registry_seen: Seen = Arc::default();
    let seen = registry_seen.clone();
    // The registry: basic auth, no blobs, uploads sent elsewhere.
    let registry = axum::Router::new().fallback(
        move |method: axum::http::Method, uri: axum::http::Uri, headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let authorized = headers.contains_key(header::AUTHORIZATION);
                seen.lock()
                    .unwrap()
                    .push((format!("{method} {}", uri.path()), authorized));
                if !authorized {
                    return (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, "Basic realm=\"test\"".to_owned())],
                    )
                        .into_response();
                }
                match (method.as_str(), uri.path()) {
                    ("POST", "/v2/lab/app/blobs/uploads/") => (
                        StatusCode::ACCEPTED,
                        [(
                            header::LOCATION,
                            format!("http://127.0.0.1:{foreign_port}/upload/1"),
                        )],
                    )
                        .into_response(),
                    _ => StatusCode::NOT_FOUND.into_response(),
                }
            }
        },
    );
    let registry_port = serve(registry).await;
    let client = Registry::new(
        &format!("127.0.0.1:{registry_port}"),
        Credentials::Basic {
            username: "robot$lab".into(),
            password: SecretString::from("s3cret"),
        },
        Options::default().plain_http(true),
    )
    .unwrap();
    if chunked {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("blob");
        std::fs::write(&file, b"hello").unwrap();
        let digest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
            .parse()
            .unwrap();
        client
            .push_blob_file("lab/app", &digest, &file, 5)
            .await
            .unwrap();
    } else {
        client.push_blob_bytes("lab/app", b"hello").await.unwrap();
    }
    let foreign = foreign_seen.lock().unwrap().clone();
    let expected: &[(String, bool)] = if chunked {
        &[("PATCH".to_owned(), false), ("PUT".to_owned(), false)]
    } else {
        &[("PUT".to_owned(), false)]
    };
    assert_eq!(foreign, expected, "chunked {chunked}: {foreign:?}");
    let registry = registry_seen.lock().unwrap().clone();
    assert!(
        registry
            .iter()
            .any(|(r, authorized)| r == "POST /v2/lab/app/blobs/uploads/" && *authorized),
        "the registry itself got the credentials: {registry:?}"
    );
}

#[tokio::test]
async fn an_https_registry_whose_token_realm_is_plain_http_gets_no_password() {
    // The registry speaks TLS; its challenge sends the client to an http:// realm. The basic
    // credentials would travel in clear text: the client refuses instead.
    let dir = tempfile::tempdir().unwrap();
    let tokens =
        homelab_testkit::token_server::TokenServer::start(dir.path(), "robot$ci", "t0ken-pass")
            .unwrap();
    assert!(tokens.realm.starts_with("http://"), "{}", tokens.realm);
    let server = homelab_testkit::registry::Registry::start_with(
        &homelab_testkit::registry::RegistryConfig {
            tls: true,
            token: Some((tokens.realm.clone(), tokens.cert_pem.clone())),
            ..Default::default()
        },
    )
    .unwrap();
    let client = robot(
        &server.host(),
        Options::default().ca_file(server.ca_file.clone()),
    );
    let err = client.ping().await.unwrap_err();
    assert!(err.to_string().contains(&tokens.realm), "{err}");
    assert!(
        tokens.requests.lock().unwrap().is_empty(),
        "the token server was asked (with the password) over plain HTTP"
    );
}

#[tokio::test]
async fn a_token_realm_on_another_host_gets_no_credentials() {
    // The registry (127.0.0.1) names a token service on another host name (localhost: the
    // same machine here, another host to the client). A mirror source does this (Docker
    // Hub's auth.docker.io), and so could a hostile registry: the credentials of this
    // registry must not go there. The token service is asked anonymously and refuses.
    let dir = tempfile::tempdir().unwrap();
    let tokens =
        homelab_testkit::token_server::TokenServer::start(dir.path(), "robot$ci", "t0ken-pass")
            .unwrap();
    let foreign_realm = tokens.realm.replace("127.0.0.1", "localhost");
    let server = homelab_testkit::registry::Registry::start_with(
        &homelab_testkit::registry::RegistryConfig {
            token: Some((foreign_realm, tokens.cert_pem.clone())),
            ..Default::default()
        },
    )
    .unwrap();
    let client = robot(&server.host(), Options::default().plain_http(true));
    assert!(
        client.ping().await.is_err(),
        "an anonymous token is refused"
    );
    let users = tokens.users.lock().unwrap().clone();
    assert!(!users.is_empty(), "the token service was asked");
    assert!(
        users.iter().all(Option::is_none),
        "credentials went to another host: {users:?}"
    );

    // The same token service on the registry's own host gets them, and the ping works.
    let server = homelab_testkit::registry::Registry::start_with(
        &homelab_testkit::registry::RegistryConfig {
            token: Some((tokens.realm.clone(), tokens.cert_pem.clone())),
            ..Default::default()
        },
    )
    .unwrap();
    let client = robot(&server.host(), Options::default().plain_http(true));
    client.ping().await.unwrap();
    assert_eq!(
        tokens
            .users
            .lock()
            .unwrap()
            .last()
            .cloned()
            .flatten()
            .as_deref(),
        Some("robot$ci")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_between_two_registries_sends_each_its_own_credentials_only() {
    // Two registries, each with its own token service and its own robot: the source on
    // 127.0.0.1, the target reached as `localhost` (another host to the client). A copy
    // logs in to each with that registry's credentials; neither token service ever sees the
    // other's robot.
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let tokens_a =
        homelab_testkit::token_server::TokenServer::start(dir_a.path(), "robot$a", "pass-a")
            .unwrap();
    let tokens_b =
        homelab_testkit::token_server::TokenServer::start(dir_b.path(), "robot$b", "pass-b")
            .unwrap();
    let start = |realm: String, cert| {
        homelab_testkit::registry::Registry::start_with(
            &homelab_testkit::registry::RegistryConfig {
                token: Some((realm, cert)),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let a = start(tokens_a.realm.clone(), tokens_a.cert_pem.clone());
    let b = start(
        tokens_b.realm.replace("127.0.0.1", "localhost"),
        tokens_b.cert_pem.clone(),
    );
    let plain = || Options::default().plain_http(true);
    let login = |host: String, user: &str, password: &str| {
        Registry::new(
            &host,
            Credentials::Basic {
                username: user.into(),
                password: SecretString::from(password.to_owned()),
            },
            plain(),
        )
        .unwrap()
    };
    let from = login(a.host(), "robot$a", "pass-a");
    let b_host = format!("localhost:{}", b.addr.port());
    let to = login(b_host.clone(), "robot$b", "pass-b");

    // An image on the source.
    let layer = vec![0u8; 1024];
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    for blob in [&layer[..], &config[..]] {
        from.push_blob_bytes("src/app", blob).await.unwrap();
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": harbor_client::reference::Digest::of(config).to_string(), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar",
                     "digest": harbor_client::reference::Digest::of(&layer).to_string(), "size": layer.len() }],
    }))
    .unwrap();
    from.put_manifest(
        "src/app",
        "v1",
        &manifest,
        "application/vnd.oci.image.manifest.v1+json",
    )
    .await
    .unwrap();

    let work = tempfile::tempdir().unwrap();
    let source: harbor_client::reference::Reference =
        format!("{}/src/app:v1", a.host()).parse().unwrap();
    let target: harbor_client::reference::Reference =
        format!("{b_host}/dst/app:v1").parse().unwrap();
    let copied = harbor_client::image::copy(&from, &source, &to, &target, work.path(), 2)
        .await
        .unwrap();
    assert_eq!(
        copied.digest,
        harbor_client::reference::Digest::of(&manifest).to_string()
    );
    let seen = |t: &homelab_testkit::token_server::TokenServer| t.users.lock().unwrap().clone();
    let (users_a, users_b) = (seen(&tokens_a), seen(&tokens_b));
    assert!(!users_a.is_empty() && !users_b.is_empty());
    assert!(
        users_a.iter().all(|u| u.as_deref() == Some("robot$a")),
        "{users_a:?}"
    );
    assert!(
        users_b.iter().all(|u| u.as_deref() == Some("robot$b")),
        "{users_b:?}"
    );
}
