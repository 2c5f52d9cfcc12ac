//! The signing-key check against GnuPG: a key made by `gpg` has the fingerprint `gpg` says,
//! a different key is refused naming both fingerprints, and the key is fetched from an HTTP
//! server the way the host fetches the repository's `Release.key`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use kubeadm_boot::kubeadm::Version;
use kubeadm_boot::prepare::{KEYRING_PATH, PackageSource, node_steps};
use kubeadm_boot::signing_key::{KeyError, SigningKey};
use kubeadm_boot::steps::Check;

/// A throwaway key in a private GnuPG home: (armored public key, fingerprint per gpg).
fn gpg_key(home: &Path, name: &str) -> (String, String) {
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .expect("gpg runs (scripts/deps.sh installs gnupg)");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    gpg(&[
        "--quick-gen-key",
        &format!("{name} <{name}@homelab.invalid>"),
        "rsa2048",
        "sign",
        "1d",
    ]);
    let armored = gpg(&["--armor", "--export", name]);
    let colons = gpg(&["--with-colons", "--fingerprint", name]);
    let fingerprint = colons
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|l| l.split(':').find(|f| f.len() == 40))
        .unwrap()
        .to_owned();
    (armored, fingerprint)
}

#[tokio::test]
async fn fingerprints_agree_with_gnupg_and_a_changed_key_is_refused() {
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let (armored, fingerprint) = gpg_key(home.path(), "repo");
    let key = SigningKey::parse("Release.key", &armored).unwrap();
    assert_eq!(key.fingerprint(), fingerprint);
    // The pin may be written with spaces and in lower case.
    let spaced: String = fingerprint
        .to_ascii_lowercase()
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    SigningKey::parse_pinned("Release.key", &armored, &spaced).unwrap();
    // Another key under the same name: refused, both fingerprints named.
    let (other, other_fingerprint) = gpg_key(home.path(), "impostor");
    let err = SigningKey::parse_pinned("Release.key", &other, &fingerprint).unwrap_err();
    match &err {
        KeyError::Mismatch {
            source_name,
            expected,
            actual,
        } => assert_eq!(
            (source_name.as_str(), expected, actual),
            ("Release.key", &fingerprint, &other_fingerprint)
        ),
        other => panic!("{other:?}"),
    }

    // Fetched over HTTP as the host fetches a channel's Release.key.
    let served = armored.clone();
    let app = axum::Router::new().route(
        "/core/v1.33/deb/Release.key",
        axum::routing::get(move || {
            let served = served.clone();
            async move { served }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let version: Version = "1.33.5".parse().unwrap();
    let mut source = PackageSource::new(format!("http://{addr}/core"), &fingerprint);
    source
        .fetch_key(&reqwest::Client::new(), &version)
        .await
        .unwrap();
    // The nodes get exactly that key as their keyring, and the list names it.
    let steps = node_steps(&version, &source);
    let key_step = steps.iter().find(|s| s.name == "kubernetes-key").unwrap();
    match &key_step.check {
        Check::File { path, contents, .. } => {
            assert_eq!(path, KEYRING_PATH);
            assert_eq!(contents, armored.as_bytes());
        }
        Check::Command(_) => panic!("the key step writes the fetched key"),
    }
    let mut wrong = PackageSource::new(format!("http://{addr}/core"), "0".repeat(40));
    let err = wrong
        .fetch_key(&reqwest::Client::new(), &version)
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::Mismatch { .. }), "{err}");
    assert!(wrong.key.is_none());
    // A key that is not there: the status, said; a server that is not there: the client's
    // error, kept as the source.
    let mut missing = PackageSource::new(format!("http://{addr}/nowhere"), &fingerprint);
    let err = missing
        .fetch_key(&reqwest::Client::new(), &version)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            KeyError::Download {
                status: Some(404),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().ends_with("HTTP 404"), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut unreachable = PackageSource::new(format!("http://{closed}/core"), &fingerprint);
    let err = unreachable
        .fetch_key(&reqwest::Client::new(), &version)
        .await
        .unwrap_err();
    let cause = std::error::Error::source(&err).expect("a source");
    assert!(
        cause
            .downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_connect),
        "{cause:?}"
    );
}

#[tokio::test]
async fn the_stand_in_repository_serves_a_key_with_its_fingerprint_and_signed_lists() {
    let repo = homelab_testkit::apt_repo::AptRepo::start(
        "127.0.0.1".parse().unwrap(),
        &["1.33.5", "1.33.6"],
    )
    .await
    .unwrap();
    let version: Version = "1.33.5".parse().unwrap();
    let mut source = PackageSource::new(&repo.base_url, &repo.fingerprint);
    source
        .fetch_key(&reqwest::Client::new(), &version)
        .await
        .unwrap();
    assert_eq!(source.key.unwrap().fingerprint(), repo.fingerprint);
    let channel = reqwest::Client::new();
    let get = |file: &str| {
        let request = channel.get(format!("{}/v1.33/deb/{file}", repo.base_url));
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let packages = get("Packages").await;
    for name in ["kubeadm", "kubelet", "kubectl", "cri-tools"] {
        for v in ["1.33.5-1.1", "1.33.6-1.1"] {
            assert!(
                packages.contains(&format!("Package: {name}\n"))
                    && packages.contains(&format!("Version: {v}\n")),
                "{name} {v}"
            );
        }
    }
    let in_release = get("InRelease").await;
    assert!(
        in_release.starts_with("-----BEGIN PGP SIGNED MESSAGE-----"),
        "{in_release}"
    );
    let missing = channel
        .get(format!("{}/v1.33/deb/../../etc/passwd", repo.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
