//! The OCI client against real registries: Debian's `docker-registry` on loopback (open,
//! with htpasswd auth, with TLS from a test CA), and skopeo as an independent client.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use harbor_client::Event;
use harbor_client::image::{self, Layout};
use harbor_client::reference::{Digest, Reference};
use harbor_client::registry::{Credentials, Options, Registry, RegistryError};
use homelab_testkit::registry::{Registry as TestRegistry, RegistryConfig};
use homelab_testkit::token_server::TokenServer;
use rand::RngExt;

fn plain() -> Options {
    Options::default().plain_http(true)
}

/// A tar archive holding one file of `size` random bytes.
fn layer(size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    rand::rng().fill(&mut data[..]);
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "data.bin", &data[..])
        .unwrap();
    builder.into_inner().unwrap()
}

fn write_blob(dir: &Path, bytes: &[u8]) -> Digest {
    let digest = Digest::of(bytes);
    std::fs::write(dir.join("blobs/sha256").join(digest.hex()), bytes).unwrap();
    digest
}

/// An OCI image layout with uncompressed tar layers of the given sizes, tagged `tag`.
fn make_image(dir: &Path, tag: &str, sizes: &[usize]) -> Digest {
    make_image_for(dir, tag, sizes, "amd64")
}

/// As [`make_image`], for a CPU architecture; returns the manifest's digest.
fn make_image_for(dir: &Path, tag: &str, sizes: &[usize], architecture: &str) -> Digest {
    let layout = Layout::open_or_create(dir).unwrap();
    let layers: Vec<(Digest, usize)> = sizes
        .iter()
        .map(|&s| {
            let bytes = layer(s);
            (write_blob(dir, &bytes), bytes.len())
        })
        .collect();
    let config = serde_json::json!({
        "architecture": architecture, "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|(d, _)| d.to_string()).collect::<Vec<_>>() },
    })
    .to_string();
    let config_digest = write_blob(dir, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len() },
        "layers": layers.iter().map(|(d, n)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": n })).collect::<Vec<_>>(),
    })
    .to_string();
    let manifest_digest = write_blob(dir, manifest.as_bytes());
    layout
        .set_tag(
            tag,
            oci_spec::image::Descriptor::new(
                oci_spec::image::MediaType::ImageManifest,
                manifest.len() as u64,
                oci_spec::image::Digest::try_from(manifest_digest.as_str()).unwrap(),
            ),
        )
        .unwrap();
    manifest_digest
}

fn reference(registry: &TestRegistry, path: &str) -> Reference {
    format!("{}/{path}", registry.host()).parse().unwrap()
}

fn skopeo(args: &[&str]) -> String {
    let out = std::process::Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn push_pull_list_delete_round_trip() {
    let server = TestRegistry::start().unwrap();
    let client = Registry::new(&server.host(), Credentials::Anonymous, plain()).unwrap();
    client.ping().await.unwrap();
    let src = tempfile::tempdir().unwrap();
    // 9 MiB: three chunks of at most 4 MiB.
    let digest = make_image(src.path(), "v1", &[9 << 20, 1000, 0]);
    let target = reference(&server, "team/app/web:v1");
    let pushed = image::push(
        &client,
        &Layout::open_or_create(src.path()).unwrap(),
        Some("v1"),
        &target,
        3,
    )
    .await
    .unwrap();
    assert_eq!(pushed.digest, digest.to_string());
    assert_eq!((pushed.transferred, pushed.skipped), (4, 0));
    // Again: every blob is there already.
    let again = image::push(
        &client,
        &Layout::open_or_create(src.path()).unwrap(),
        Some("v1"),
        &target,
        3,
    )
    .await
    .unwrap();
    assert_eq!((again.transferred, again.skipped), (0, 4));

    let dst = tempfile::tempdir().unwrap();
    let layout = Layout::open_or_create(dst.path()).unwrap();
    let pulled = image::pull(&client, &target, &layout, "copy", 2)
        .await
        .unwrap();
    assert_eq!(pulled.digest, digest.to_string());
    for entry in std::fs::read_dir(src.path().join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let theirs =
            std::fs::read(dst.path().join("blobs/sha256").join(entry.file_name())).unwrap();
        assert_eq!(
            std::fs::read(entry.path()).unwrap(),
            theirs,
            "{:?}",
            entry.file_name()
        );
    }
    assert_eq!(
        layout
            .manifest_descriptor(Some("copy"))
            .unwrap()
            .digest()
            .to_string(),
        digest.to_string()
    );

    assert_eq!(client.tags("team/app/web", 100).await.unwrap(), ["v1"]);
    assert_eq!(
        client.resolve("team/app/web", "v1").await.unwrap(),
        Some(digest.clone())
    );
    assert_eq!(
        client.delete_manifest("team/app/web", "v1").await.unwrap(),
        digest
    );
    let err = client
        .get_manifest("team/app/web", digest.as_str())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");
    assert_eq!(client.resolve("team/app/web", "v1").await.unwrap(), None);
}

/// Per blob: size announced, bytes reported, done.
type Seen = std::collections::HashMap<String, (u64, u64, bool)>;

#[tokio::test]
async fn progress_reports_add_up_to_every_blob() {
    let server = TestRegistry::start().unwrap();
    let seen: Arc<std::sync::Mutex<Seen>> = Arc::default();
    let sink = {
        let seen = seen.clone();
        let events: harbor_client::Events = Arc::new(move |event| {
            let mut seen = seen.lock().unwrap();
            match event {
                Event::Start { digest, size } => {
                    seen.insert(digest.to_string(), (size, 0, false));
                }
                Event::Bytes { digest, n } => seen.get_mut(digest.as_str()).unwrap().1 += n,
                Event::Done { digest } => seen.get_mut(digest.as_str()).unwrap().2 = true,
                other => panic!("an event this test does not know: {other}"),
            }
        });
        events
    };
    let client = Registry::new(
        &server.host(),
        Credentials::Anonymous,
        plain().events(Some(sink)),
    )
    .unwrap();
    let src = tempfile::tempdir().unwrap();
    make_image(src.path(), "v1", &[9 << 20, 3000]);
    let target = reference(&server, "p/app:v1");
    image::push(
        &client,
        &Layout::open_or_create(src.path()).unwrap(),
        Some("v1"),
        &target,
        2,
    )
    .await
    .unwrap();
    let check = |what: &str| {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "{what}: config and two layers: {seen:?}");
        for (digest, (size, moved, done)) in seen.iter() {
            assert!(
                *done && size == moved,
                "{what} {digest}: {moved} of {size}, done {done}"
            );
        }
    };
    check("push");
    seen.lock().unwrap().clear();
    let dst = tempfile::tempdir().unwrap();
    image::pull(
        &client,
        &target,
        &Layout::open_or_create(dst.path()).unwrap(),
        "v1",
        2,
    )
    .await
    .unwrap();
    check("pull");
}

#[tokio::test]
async fn tags_and_catalog_follow_link_pages() {
    let server = TestRegistry::start().unwrap();
    let client = Registry::new(&server.host(), Credentials::Anonymous, plain()).unwrap();
    let src = tempfile::tempdir().unwrap();
    make_image(src.path(), "t", &[100]);
    let layout = Layout::open_or_create(src.path()).unwrap();
    for repo in ["a/one", "b/two", "c/three"] {
        for tag in ["1", "2", "3", "4", "5"] {
            let target = reference(&server, &format!("{repo}:{tag}"));
            image::push(&client, &layout, Some("t"), &target, 2)
                .await
                .unwrap();
        }
    }
    let mut tags = client.tags("b/two", 2).await.unwrap();
    tags.sort();
    assert_eq!(tags, ["1", "2", "3", "4", "5"]);
    assert_eq!(
        client.catalog(1).await.unwrap(),
        ["a/one", "b/two", "c/three"]
    );
}

#[tokio::test]
async fn skopeo_reads_what_we_push_and_we_read_what_skopeo_pushes() {
    let server = TestRegistry::start().unwrap();
    let client = Registry::new(&server.host(), Credentials::Anonymous, plain()).unwrap();
    let src = tempfile::tempdir().unwrap();
    let digest = make_image(src.path(), "v1", &[300_000, 5000]);
    let ours = reference(&server, "ours/img:v1");
    image::push(
        &client,
        &Layout::open_or_create(src.path()).unwrap(),
        Some("v1"),
        &ours,
        2,
    )
    .await
    .unwrap();
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{ours}"),
    ]);
    assert_eq!(
        Digest::of(raw.as_bytes()),
        digest,
        "skopeo sees the same manifest"
    );
    let inspected: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{ours}"),
    ]))
    .unwrap();
    assert_eq!(inspected["Digest"], digest.to_string());
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);

    // skopeo pushes the same layout to another repository; we pull it back.
    let theirs = reference(&server, "theirs/img:v1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &format!("oci:{}:v1", src.path().display()),
        &format!("docker://{theirs}"),
    ]);
    let dst = tempfile::tempdir().unwrap();
    let pulled = image::pull(
        &client,
        &theirs,
        &Layout::open_or_create(dst.path()).unwrap(),
        "v1",
        2,
    )
    .await
    .unwrap();
    assert_eq!(pulled.digest, digest.to_string());
    // And skopeo reads the layout we pulled into.
    let from_layout: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("oci:{}:v1", dst.path().display()),
    ]))
    .unwrap();
    assert_eq!(from_layout["Digest"], digest.to_string());
}

#[tokio::test]
async fn copy_mounts_on_the_same_registry_and_uploads_only_missing_blobs_elsewhere() {
    let a = TestRegistry::start().unwrap();
    let b = TestRegistry::start().unwrap();
    let ca = Registry::new(&a.host(), Credentials::Anonymous, plain()).unwrap();
    let cb = Registry::new(&b.host(), Credentials::Anonymous, plain()).unwrap();
    let src = tempfile::tempdir().unwrap();
    let digest = make_image(src.path(), "v1", &[5 << 20, 2000]);
    let source = reference(&a, "src/app:v1");
    image::push(
        &ca,
        &Layout::open_or_create(src.path()).unwrap(),
        Some("v1"),
        &source,
        2,
    )
    .await
    .unwrap();
    let work = tempfile::tempdir().unwrap();

    let same = image::copy(
        &ca,
        &source,
        &ca,
        &reference(&a, "dst/app:v1"),
        work.path(),
        2,
    )
    .await
    .unwrap();
    assert_eq!(
        (same.mounted, same.transferred, same.skipped),
        (3, 0, 0),
        "{same:?}"
    );
    assert_eq!(same.digest, digest.to_string());

    let other = image::copy(
        &ca,
        &source,
        &cb,
        &reference(&b, "mirror/app:v1"),
        work.path(),
        2,
    )
    .await
    .unwrap();
    assert_eq!(
        (other.mounted, other.transferred, other.skipped),
        (0, 3, 0),
        "{other:?}"
    );
    let again = image::copy(
        &ca,
        &source,
        &cb,
        &reference(&b, "mirror/app:v2"),
        work.path(),
        2,
    )
    .await
    .unwrap();
    assert_eq!((again.transferred, again.skipped), (0, 3), "{again:?}");
    assert_eq!(cb.resolve("mirror/app", "v2").await.unwrap(), Some(digest));
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "no temporary blob left"
    );
}

#[tokio::test]
async fn basic_auth_is_required_and_used() {
    let server = TestRegistry::start_with(&RegistryConfig {
        user: Some(("robot".into(), "s3cret-pass".into())),
        tls: false,
        token: None,
        ..Default::default()
    })
    .unwrap();
    let anonymous = Registry::new(&server.host(), Credentials::Anonymous, plain()).unwrap();
    let err = anonymous.ping().await.unwrap_err();
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    let wrong = Registry::new(
        &server.host(),
        Credentials::Basic {
            username: "robot".into(),
            password: "nope".to_owned().into(),
        },
        plain(),
    )
    .unwrap();
    assert!(
        wrong
            .ping()
            .await
            .unwrap_err()
            .to_string()
            .contains("HTTP 401")
    );
    let client = Registry::new(
        &server.host(),
        Credentials::Basic {
            username: "robot".into(),
            password: "s3cret-pass".to_owned().into(),
        },
        plain(),
    )
    .unwrap();
    client.ping().await.unwrap();
    let src = tempfile::tempdir().unwrap();
    make_image(src.path(), "v1", &[1000]);
    image::push(
        &client,
        &Layout::open_or_create(src.path()).unwrap(),
        Some("v1"),
        &reference(&server, "p/app:v1"),
        2,
    )
    .await
    .unwrap();
    assert_eq!(client.tags("p/app", 10).await.unwrap(), ["v1"]);
    assert!(
        !format!("{client:?}").contains("s3cret-pass"),
        "the password never prints"
    );
}

/// A token that expires while a blob is being uploaded chunk by chunk: the registry refuses
/// the next chunk (401, `invalid_token`), the client fetches a new token and sends that chunk
/// again, and the blob completes intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_mid_upload_is_renewed_and_the_chunk_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path(), "robot$ci", "t0ken-pass").unwrap();
    // Honoured for about two seconds (distribution's 60 s leeway after `exp`).
    tokens.set_lifetime(-58);
    let server = TestRegistry::start_with(&RegistryConfig {
        token: Some((tokens.realm.clone(), tokens.cert_pem.clone())),
        ..RegistryConfig::default()
    })
    .unwrap();
    let chunks = Arc::new(AtomicUsize::new(0));
    let seen = chunks.clone();
    let client = Registry::new(
        &server.host(),
        Credentials::Basic {
            username: "robot$ci".into(),
            password: "t0ken-pass".to_owned().into(),
        },
        plain()
            .chunk_size(64 << 10)
            // The upload outlives the token: each chunk is followed by a pause.
            .events(Some(Arc::new(move |p| {
                if matches!(p, Event::Bytes { .. }) {
                    seen.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            }))),
    )
    .unwrap();
    let bytes = layer(640 << 10);
    let file = dir.path().join("blob");
    std::fs::write(&file, &bytes).unwrap();
    let digest = Digest::of(&bytes);
    let started = std::time::Instant::now();
    assert!(
        client
            .push_blob_file("p/app", &digest, &file, bytes.len() as u64)
            .await
            .unwrap()
    );
    assert!(started.elapsed() > std::time::Duration::from_secs(4));
    assert_eq!(chunks.load(Ordering::Relaxed), 11);
    let push_scope = "repository:p/app:pull,push";
    let renewals = tokens
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|s| *s == push_scope)
        .count();
    assert!(renewals >= 2, "the token was never renewed: {renewals}");
    assert_eq!(
        client.blob_size("p/app", &digest).await.unwrap(),
        Some(bytes.len() as u64)
    );
}

#[tokio::test]
async fn bearer_tokens_are_fetched_per_scope_from_the_challenge_realm() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path(), "robot$ci", "t0ken-pass").unwrap();
    let server = TestRegistry::start_with(&RegistryConfig {
        token: Some((tokens.realm.clone(), tokens.cert_pem.clone())),
        ..RegistryConfig::default()
    })
    .unwrap();
    let anonymous = Registry::new(&server.host(), Credentials::Anonymous, plain()).unwrap();
    let err = anonymous.ping().await.unwrap_err();
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    let client = Registry::new(
        &server.host(),
        Credentials::Basic {
            username: "robot$ci".into(),
            password: "t0ken-pass".to_owned().into(),
        },
        plain(),
    )
    .unwrap();
    let src = tempfile::tempdir().unwrap();
    let digest = make_image(src.path(), "v1", &[5 << 20, 100]);
    let layout = Layout::open_or_create(src.path()).unwrap();
    image::push(
        &client,
        &layout,
        Some("v1"),
        &reference(&server, "p/app:v1"),
        2,
    )
    .await
    .unwrap();
    let copied = image::copy(
        &client,
        &reference(&server, "p/app:v1"),
        &client,
        &reference(&server, "q/app:v1"),
        src.path(),
        2,
    )
    .await
    .unwrap();
    assert_eq!(
        copied.mounted, 3,
        "a mount needs push on the target and pull on the source"
    );
    assert_eq!(client.resolve("q/app", "v1").await.unwrap(), Some(digest));
    assert_eq!(client.catalog(10).await.unwrap(), ["p/app", "q/app"]);
    // The client now holds bearer tokens (JWTs, "eyJ..."): Debug names their scopes only.
    let shown = format!("{client:?}");
    assert!(
        shown.contains("repository:p/app:pull,push") && !shown.contains("eyJ"),
        "{shown}"
    );
    assert!(!shown.contains("t0ken-pass"), "{shown}");
    let asked = tokens.requests.lock().unwrap().clone();
    for scope in [
        "repository:p/app:pull,push",
        "repository:q/app:pull,push",
        "repository:p/app:pull",
        "registry:catalog:*",
    ] {
        assert!(
            asked.iter().any(|s| s == scope),
            "{scope} not asked for: {asked:?}"
        );
    }
    let wrong = Registry::new(
        &server.host(),
        Credentials::Basic {
            username: "robot$ci".into(),
            password: "wrong".to_owned().into(),
        },
        plain(),
    )
    .unwrap();
    let err = wrong.tags("p/app", 10).await.unwrap_err();
    assert!(err.to_string().contains("HTTP 401"), "{err}");
}

#[tokio::test]
async fn a_ca_given_as_pem_bytes_is_trusted_and_a_name_resolves_to_the_address_given() {
    let server = TestRegistry::start_with(&RegistryConfig {
        tls: true,
        ..RegistryConfig::default()
    })
    .unwrap();
    let pem = std::fs::read(server.ca_file.as_ref().unwrap()).unwrap();
    let trusted = Registry::new(
        &server.host(),
        Credentials::Anonymous,
        Options::default().ca_pem(Some(pem)),
    )
    .unwrap();
    trusted.ping().await.unwrap();
    let err = Registry::new(
        &server.host(),
        Credentials::Anonymous,
        Options::default().ca_pem(Some(b"not a certificate".to_vec())),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(err.to_string().contains("not a PEM certificate"), "{err}");

    // A name only the lab knows: reached at the address given, not through DNS.
    let plain = TestRegistry::start().unwrap();
    let host = format!("registry.homelab.invalid:{}", plain.addr.port());
    let options = |resolve| Options::default().plain_http(true).resolve(resolve);
    Registry::new(&host, Credentials::Anonymous, options(Some(plain.addr)))
        .unwrap()
        .ping()
        .await
        .unwrap();
    let err = Registry::new(&host, Credentials::Anonymous, options(None))
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Transport { .. }), "{err}");
}

#[tokio::test]
async fn tls_needs_the_ca_and_plain_http_must_be_asked_for() {
    let server = TestRegistry::start_with(&RegistryConfig {
        tls: true,
        ..RegistryConfig::default()
    })
    .unwrap();
    let trusted = Registry::new(
        &server.host(),
        Credentials::Anonymous,
        Options::default().ca_file(server.ca_file.clone()),
    )
    .unwrap();
    trusted.ping().await.unwrap();
    let untrusted =
        Registry::new(&server.host(), Credentials::Anonymous, Options::default()).unwrap();
    let err = untrusted.ping().await.unwrap_err();
    assert!(matches!(err, RegistryError::Transport { .. }), "{err}");
    let err = Registry::new(
        &server.host(),
        Credentials::Anonymous,
        Options::default().ca_file(Some("/nonexistent/ca.pem".into())),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/ca.pem: "),
        "{err}"
    );
    // Plain HTTP against the TLS registry is not silently upgraded either.
    let plain_to_tls = Registry::new(&server.host(), Credentials::Anonymous, plain()).unwrap();
    assert!(plain_to_tls.ping().await.is_err());

    // The plain-HTTP half: a registry that speaks only HTTP is reached over HTTPS unless
    // plain HTTP was asked for; the client never falls back to HTTP on its own.
    let http_only = TestRegistry::start().unwrap();
    let default = Registry::new(
        &http_only.host(),
        Credentials::Anonymous,
        Options::default(),
    )
    .unwrap();
    let err = default.ping().await.unwrap_err();
    assert!(matches!(err, RegistryError::Transport { .. }), "{err}");
    assert!(err.to_string().contains("https://"), "{err}");
    let asked = Registry::new(&http_only.host(), Credentials::Anonymous, plain()).unwrap();
    asked.ping().await.unwrap();
}

#[tokio::test]
async fn concurrent_pushes_of_the_same_image_agree() {
    let server = TestRegistry::start().unwrap();
    let client = Arc::new(Registry::new(&server.host(), Credentials::Anonymous, plain()).unwrap());
    let src = tempfile::tempdir().unwrap();
    let digest = make_image(src.path(), "v1", &[3 << 20, 7000, 10]);
    let layout = Layout::open_or_create(src.path()).unwrap();
    let target = reference(&server, "race/app:v1");
    let pushes = (0..4).map(|_| image::push(&client, &layout, Some("v1"), &target, 3));
    for result in futures::future::join_all(pushes).await {
        assert_eq!(result.unwrap().digest, digest.to_string());
    }
    let dst = tempfile::tempdir().unwrap();
    image::pull(
        &client,
        &target,
        &Layout::open_or_create(dst.path()).unwrap(),
        "v1",
        3,
    )
    .await
    .unwrap();
}

/// A TCP proxy that cuts the first connection carrying more than `cut_after` bytes towards
/// the registry, as a dropped link would.
async fn cutting_proxy(
    upstream: std::net::SocketAddr,
    cut_after: usize,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cuts = Arc::new(AtomicUsize::new(0));
    let cuts2 = cuts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let cuts = cuts2.clone();
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut sent = 0;
                    loop {
                        let n = cr.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        sent += n;
                        if sent > cut_after && cuts.load(Ordering::SeqCst) == 0 {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            return; // drop both directions mid-request
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = async {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                };
                tokio::select! { () = up => {}, () = down => {} }
            });
        }
    });
    (addr, cuts)
}

/// Pushes a one-layer image of `size` bytes of layer data through `proxy` to `server` as
/// `repository:v1`, then pulls it from `server` directly, every digest verified.
async fn push_through_and_verify(
    server: &TestRegistry,
    proxy: std::net::SocketAddr,
    repository: &str,
    size: usize,
) {
    let client = Registry::new(
        &proxy.to_string(),
        Credentials::Anonymous,
        Options::default()
            .plain_http(true)
            .backoff(std::time::Duration::from_millis(20)),
    )
    .unwrap();
    let src = tempfile::tempdir().unwrap();
    let digest = make_image(src.path(), "v1", &[size]);
    let target: Reference = format!("{proxy}/{repository}:v1").parse().unwrap();
    let pushed = image::push(
        &client,
        &Layout::open_or_create(src.path()).unwrap(),
        Some("v1"),
        &target,
        1,
    )
    .await
    .unwrap();
    assert_eq!(pushed.digest, digest.to_string());
    let direct = Registry::new(&server.host(), Credentials::Anonymous, plain()).unwrap();
    let dst = tempfile::tempdir().unwrap();
    image::pull(
        &direct,
        &reference(server, &format!("{repository}:v1")),
        &Layout::open_or_create(dst.path()).unwrap(),
        "v1",
        1,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_upload_cut_mid_blob_is_sent_again_in_a_new_session() {
    let server = TestRegistry::start().unwrap();
    let (proxy, cuts) = cutting_proxy(server.addr, 6 << 20).await;
    push_through_and_verify(&server, proxy, "cut/app", 12 << 20).await;
    // distribution drops an upload session whose chunk was cut off: the client had to open
    // a new one and send the blob from byte 0 (see the resume test below for a session
    // that survives).
    assert_eq!(
        cuts.load(Ordering::SeqCst),
        1,
        "the connection was cut once"
    );
}

/// One HTTP request as the [`failing_proxy`] saw it.
#[derive(Debug, Clone)]
struct ProxiedRequest {
    method: String,
    path: String,
    content_range: Option<String>,
}

/// A proxy that forwards each request to `upstream` on a connection of its own, except the
/// first PATCH whose `Content-Range` is `fail`, which it answers itself with 503 without
/// passing it on: the registry's upload session is untouched, so the client can resume it.
/// Records every request.
async fn failing_proxy(
    upstream: std::net::SocketAddr,
    fail: &'static str,
) -> (
    std::net::SocketAddr,
    Arc<std::sync::Mutex<Vec<ProxiedRequest>>>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let patches = Arc::new(AtomicUsize::new(0));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (log, patches) = (log.clone(), patches.clone());
            tokio::spawn(async move {
                let mut client = BufReader::new(client);
                let mut head = Vec::new();
                let mut length = 0usize;
                let mut first = String::new();
                let mut range = None;
                loop {
                    let mut line = String::new();
                    if client.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    assert!(!lower.starts_with("transfer-encoding"), "{line}");
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if lower.starts_with("content-range:") {
                        range = Some(line["content-range:".len()..].trim().to_owned());
                    }
                    if lower.starts_with("connection:") {
                        continue;
                    }
                    if first.is_empty() {
                        first.clone_from(&line);
                    }
                    head.extend_from_slice(line.as_bytes());
                }
                let mut body = vec![0u8; length];
                client.read_exact(&mut body).await.unwrap();
                let mut words = first.split_whitespace();
                let method = words.next().unwrap_or_default().to_owned();
                let path = words.next().unwrap_or_default().to_owned();
                let refuse = method == "PATCH"
                    && range.as_deref() == Some(fail)
                    && patches.fetch_add(1, Ordering::SeqCst) == 0;
                log.lock().unwrap().push(ProxiedRequest {
                    method,
                    path,
                    content_range: range,
                });
                let mut client = client.into_inner();
                if refuse {
                    let _ = client
                        .write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
                let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                head.extend_from_slice(b"Connection: close\r\n\r\n");
                server.write_all(&head).await.unwrap();
                server.write_all(&body).await.unwrap();
                let _ = tokio::io::copy(&mut server, &mut client).await;
            });
        }
    });
    (addr, seen)
}

/// Pushes a one-layer image of `size` bytes of layer data through a proxy that refuses the
/// layer's chunk `fail` once; returns the Content-Range of every PATCH, in order, and every
/// request.
async fn push_refusing_once(
    fail: &'static str,
    repository: &str,
) -> (Vec<String>, Vec<ProxiedRequest>) {
    let server = TestRegistry::start().unwrap();
    let (proxy, seen) = failing_proxy(server.addr, fail).await;
    push_through_and_verify(&server, proxy, repository, 10 << 20).await;
    let seen = seen.lock().unwrap().clone();
    let layer_patches = seen
        .iter()
        .filter(|r| r.method == "PATCH")
        .filter_map(|r| r.content_range.clone())
        // The config blob (a few hundred bytes) goes in one chunk of its own.
        .filter(|r| {
            r.split('-')
                .nth(1)
                .is_some_and(|end| end.parse::<u64>().unwrap() > 4096)
        })
        .collect();
    (layer_patches, seen)
}

#[tokio::test]
async fn a_failed_chunk_resumes_the_session_at_the_offset_the_registry_reports() {
    // The layer is 10 MiB of data plus its tar framing: chunks of 4 MiB start at 0, 4 MiB and
    // 8 MiB. The second one is refused once; the registry holds the first.
    let (patches, seen) = push_refusing_once("4194304-8388607", "resume/app").await;
    assert_eq!(
        patches[..3],
        ["0-4194303", "4194304-8388607", "4194304-8388607"],
        "the refused chunk is sent again from its own first byte: {patches:?}"
    );
    assert!(patches[3].starts_with("8388608-"), "{patches:?}");
    assert_eq!(patches.len(), 4, "{patches:?}");
    // It asked the registry where the session stands, and opened no second session for the
    // layer (one POST for the layer, one for the config).
    assert!(
        seen.iter()
            .any(|r| r.method == "GET" && r.path.contains("/blobs/uploads/")),
        "{seen:#?}"
    );
    assert_eq!(
        seen.iter().filter(|r| r.method == "POST").count(),
        2,
        "{seen:#?}"
    );
}

#[tokio::test]
async fn a_failed_first_chunk_resumes_at_byte_zero() {
    // Refused before the registry received anything: its status says `Range: 0-0`, which is
    // nothing at all, not one byte.
    let (patches, seen) = push_refusing_once("0-4194303", "resume-empty/app").await;
    assert_eq!(patches[..2], ["0-4194303", "0-4194303"], "{patches:?}");
    assert_eq!(patches.len(), 4, "{patches:?}");
    assert_eq!(
        seen.iter().filter(|r| r.method == "POST").count(),
        2,
        "{seen:#?}"
    );
}

#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn a_multi_platform_index_is_copied_whole_or_one_platform_and_skopeo_agrees() {
    let a = TestRegistry::start().unwrap();
    let b = TestRegistry::start().unwrap();
    let ca = Registry::new(&a.host(), Credentials::Anonymous, plain()).unwrap();
    let cb = Registry::new(&b.host(), Credentials::Anonymous, plain()).unwrap();
    // Two platforms' images on A, then an OCI index naming both.
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let dir = tempfile::tempdir().unwrap();
        let digest = make_image_for(dir.path(), arch, &[3000, 100], arch);
        let pushed = image::push(
            &ca,
            &Layout::open_or_create(dir.path()).unwrap(),
            Some(arch),
            &reference(&a, &format!("multi/app:{arch}")),
            2,
        )
        .await
        .unwrap();
        let manifest = ca.get_manifest("multi/app", &pushed.digest).await.unwrap();
        assert_eq!(manifest.digest, digest);
        children.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest.to_string(), "size": manifest.bytes.len(),
            "platform": { "os": "linux", "architecture": arch },
        }));
    }
    let index = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children,
    }))
    .unwrap();
    let index_digest = ca
        .put_manifest(
            "multi/app",
            "v1",
            &index,
            "application/vnd.oci.image.index.v1+json",
        )
        .await
        .unwrap();
    assert_eq!(index_digest, Digest::of(&index));
    let work = tempfile::tempdir().unwrap();

    // All platforms: the children by digest, then the index byte for byte.
    let all = image::copy(
        &ca,
        &reference(&a, "multi/app:v1"),
        &cb,
        &reference(&b, "mirror/app:v1"),
        work.path(),
        2,
    )
    .await
    .unwrap();
    assert_eq!(all.digest, index_digest.to_string());
    assert_eq!((all.transferred, all.skipped), (6, 0), "{all:?}");
    let copied = cb.get_manifest("mirror/app", "v1").await.unwrap();
    assert_eq!(copied.bytes, index);
    // skopeo, an independent client, reads the same bytes for the index and each child.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/mirror/app:v1", b.host()),
    ]);
    assert_eq!(Digest::of(raw.as_bytes()), index_digest);
    for child in children {
        let digest = child["digest"].as_str().unwrap();
        let raw = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/mirror/app@{digest}", b.host()),
        ]);
        assert_eq!(Digest::of(raw.as_bytes()).to_string(), digest);
    }

    // One platform: its manifest under the tag.
    let arm = image::copy_platforms(
        &ca,
        &reference(&a, "multi/app:v1"),
        &cb,
        &reference(&b, "arm/app:v1"),
        work.path(),
        2,
        &"linux/arm64".parse().unwrap(),
    )
    .await
    .unwrap();
    let arm_digest = cb.resolve("arm/app", "v1").await.unwrap().unwrap();
    assert_eq!(arm.digest, arm_digest.to_string());
    assert_eq!(
        ca.resolve("multi/app", "arm64").await.unwrap(),
        Some(arm_digest.clone())
    );
    let err = image::copy_platforms(
        &ca,
        &reference(&a, "multi/app:v1"),
        &cb,
        &reference(&b, "s390x/app:v1"),
        work.path(),
        2,
        &"linux/s390x".parse().unwrap(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no linux/s390x in the index; it has: linux/amd64, linux/arm64"),
        "{err}"
    );
    assert!("linux".parse::<image::Platforms>().is_err());

    // Into an OCI layout and back out: the index and each platform, digests unchanged.
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::open_or_create(dir.path()).unwrap();
    let pulled = image::pull(&cb, &reference(&b, "mirror/app:v1"), &layout, "v1", 2)
        .await
        .unwrap();
    assert_eq!(pulled.digest, index_digest.to_string());
    assert_eq!(pulled.transferred, 6, "{pulled:?}");
    let tagged = layout.manifest_descriptor(Some("v1")).unwrap();
    assert_eq!(tagged.digest().to_string(), index_digest.to_string());
    // skopeo reads the layout as an image index with both platforms.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}:v1", dir.path().display()),
    ]);
    assert_eq!(Digest::of(raw.as_bytes()), index_digest);
    let pushed = image::push(&ca, &layout, Some("v1"), &reference(&a, "back/app:v1"), 2)
        .await
        .unwrap();
    assert_eq!(pushed.digest, index_digest.to_string());
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/back/app:v1", a.host()),
    ]);
    assert_eq!(Digest::of(raw.as_bytes()), index_digest);
    for child in ["amd64", "arm64"] {
        let digest = ca.resolve("multi/app", child).await.unwrap().unwrap();
        assert_eq!(
            ca.resolve("back/app", digest.as_str()).await.unwrap(),
            Some(digest)
        );
    }
    // One platform into a layout: that platform's manifest under the tag.
    let one_dir = tempfile::tempdir().unwrap();
    let one = Layout::open_or_create(one_dir.path()).unwrap();
    let arm_only = image::pull_platforms(
        &cb,
        &reference(&b, "mirror/app:v1"),
        &one,
        "v1",
        2,
        &"linux/arm64".parse().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(arm_only.digest, arm_digest.to_string());
    assert_eq!(
        one.manifest_descriptor(Some("v1"))
            .unwrap()
            .digest()
            .to_string(),
        arm_digest.to_string()
    );
    // A layout whose index names a manifest it lacks is refused, naming the platform.
    std::fs::remove_file(layout.blob(&arm_digest)).unwrap();
    let err = image::push(&ca, &layout, Some("v1"), &reference(&a, "broken/app:v1"), 2)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("lacks the linux/arm64 manifest"), "{err}");
}
