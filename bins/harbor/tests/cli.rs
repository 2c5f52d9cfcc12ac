//! The `harbor` command against a real registry (docker-registry on loopback), skopeo, and
//! the contract fake of Harbor's REST API.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use assert_cmd::Command;
use homelab_testkit::harbor_fake::{ADMIN, HarborFake};
use homelab_testkit::registry::{Registry, RegistryConfig};
use predicates::prelude::*;

fn harbor() -> Command {
    let mut cmd = Command::cargo_bin("harbor").unwrap();
    for var in ["HARBOR_URL", "HARBOR_USERNAME", "HARBOR_PASSWORD"] {
        cmd.env_remove(var);
    }
    cmd
}

/// The smallest valid image (one empty tar layer) as an OCI layout tagged `v1`, written
/// independently of the library under test.
fn tiny_layout(dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let write = |bytes: &[u8]| {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        out.stdin.as_ref().unwrap().write_all(bytes).unwrap();
        let hex =
            String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap()[..64].to_owned();
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (layer, layer_size) = write(&[0u8; 1024]); // an empty tar: two zero blocks
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{layer}"]}}}}"#
    );
    let (config_digest, config_size) = write(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{layer_size}}}]}}"#
    );
    let (manifest_digest, manifest_size) = write(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{manifest_size},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#
        ),
    )
    .unwrap();
}

#[test]
fn push_tags_pull_copy_delete_with_a_real_registry() {
    let server = Registry::start().unwrap();
    let host = server.host();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tiny_layout(&src);
    let out = harbor()
        .args(["--plain-http", "-o", "json", "push"])
        .arg(format!("{}:v1", src.display()))
        .arg(format!("{host}/team/app:v1"))
        .assert()
        .success();
    let pushed: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let digest = pushed["digest"].as_str().unwrap().to_owned();
    harbor()
        .args(["--plain-http", "tags", &format!("{host}/team/app")])
        .assert()
        .success()
        .stdout("v1\n");
    harbor()
        .args([
            "--plain-http",
            "copy",
            &format!("{host}/team/app:v1"),
            &format!("{host}/other/app:v2"),
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("2 mounted"));
    let dst = dir.path().join("dst");
    harbor()
        .args(["--plain-http", "pull", &format!("{host}/other/app:v2")])
        .arg(&dst)
        .assert()
        .success();
    // skopeo reads what we pulled, with the digest we pushed.
    let inspected = std::process::Command::new("skopeo")
        .args(["inspect", &format!("oci:{}:v2", dst.display())])
        .output()
        .unwrap();
    assert!(
        inspected.status.success(),
        "{}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(inspected["Digest"], digest);
    harbor()
        .args(["--plain-http", "delete", &format!("{host}/team/app:v1")])
        .assert()
        .success()
        .stdout(predicate::str::contains(&digest));
    harbor()
        .args(["--plain-http", "tags", &format!("{host}/team/app")])
        .assert()
        .success()
        .stdout("");
}

#[test]
fn mirror_copies_a_list_of_images_under_a_prefix() {
    let a = Registry::start().unwrap();
    let b = Registry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tiny_layout(&src);
    for repo in ["library/busybox:1.36", "team/tool:2"] {
        harbor()
            .args(["--plain-http", "push"])
            .arg(format!("{}:v1", src.display()))
            .arg(format!("{}/{repo}", a.host()))
            .assert()
            .success();
    }
    let list = dir.path().join("images.txt");
    std::fs::write(
        &list,
        format!(
            "# offline set\n{0}/library/busybox:1.36\n\n{0}/team/tool:2  # tools\n",
            a.host()
        ),
    )
    .unwrap();
    harbor()
        .args(["--plain-http", "mirror"])
        .arg(&list)
        .arg(format!("{}/mirror", b.host()))
        .assert()
        .success();
    harbor()
        .args([
            "--plain-http",
            "tags",
            &format!("{}/mirror/team/tool", b.host()),
        ])
        .assert()
        .success()
        .stdout("2\n");
    std::fs::write(&list, "not a reference\n").unwrap();
    harbor()
        .args(["--plain-http", "mirror"])
        .arg(&list)
        .arg(b.host())
        .assert()
        .failure()
        .stderr(predicate::str::contains("images.txt:1"));
}

#[test]
fn credentials_come_from_a_private_file_or_the_environment_never_an_argument() {
    let server = Registry::start_with(&RegistryConfig {
        user: Some(("ci".into(), "pa55word".into())),
        tls: false,
        token: None,
        ..Default::default()
    })
    .unwrap();
    let host = server.host();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tiny_layout(&src);
    let push = |cmd: &mut Command| {
        cmd.args(["--plain-http", "push"])
            .arg(format!("{}:v1", src.display()))
            .arg(format!("{host}/p/app:v1"));
    };
    let mut anonymous = harbor();
    push(&mut anonymous);
    anonymous
        .assert()
        .failure()
        .stderr(predicate::str::contains("HTTP 401"));

    let mut no_password = harbor();
    no_password.args(["--username", "ci"]);
    push(&mut no_password);
    no_password
        .assert()
        .failure()
        .stderr(predicate::str::contains("without a password"));

    let file = dir.path().join("password");
    std::fs::write(&file, "pa55word\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut loose = harbor();
    loose
        .args(["--username", "ci", "--password-file"])
        .arg(&file);
    push(&mut loose);
    loose
        .assert()
        .failure()
        .stderr(predicate::str::contains("chmod 600"));

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut from_file = harbor();
    from_file
        .args(["--username", "ci", "--password-file"])
        .arg(&file);
    push(&mut from_file);
    from_file.assert().success();

    let mut from_env = harbor();
    from_env
        .env("HARBOR_USERNAME", "ci")
        .env("HARBOR_PASSWORD", "pa55word");
    from_env.args(["--plain-http", "tags", &format!("{host}/p/app")]);
    from_env.assert().success().stdout("v1\n");

    let mut from_stdin = harbor();
    from_stdin
        .args([
            "--username",
            "ci",
            "--password-stdin",
            "--plain-http",
            "tags",
            &format!("{host}/p/app"),
        ])
        .write_stdin("pa55word\n");
    from_stdin.assert().success().stdout("v1\n");
}

#[test]
fn harbor_api_commands() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(HarborFake::start());
    fake.push_artifact(
        "homelab/web",
        "sha256:0000000000000000000000000000000000000000000000000000000000000001",
        &["old"],
        "2026-01-01T00:00:00Z",
    );
    fake.push_artifact(
        "homelab/web",
        "sha256:0000000000000000000000000000000000000000000000000000000000000002",
        &["new"],
        "2026-02-01T00:00:00Z",
    );
    // The fake is plain HTTP: it must be asked for.
    let mut refused = harbor();
    refused
        .env("HARBOR_URL", &fake.url)
        .env("HARBOR_USERNAME", ADMIN.0)
        .env("HARBOR_PASSWORD", ADMIN.1)
        .args(["project", "list"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("plain HTTP"));
    let api = || {
        let mut cmd = harbor();
        cmd.env("HARBOR_URL", &fake.url)
            .env("HARBOR_USERNAME", ADMIN.0)
            .env("HARBOR_PASSWORD", ADMIN.1)
            .arg("--plain-http");
        cmd
    };
    // A wrong password is refused before anything runs (Harbor itself would answer as to
    // anonymous).
    harbor()
        .env("HARBOR_URL", &fake.url)
        .env("HARBOR_USERNAME", ADMIN.0)
        .env("HARBOR_PASSWORD", "wrong")
        .args(["--plain-http", "project", "list"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "Harbor refused the credentials of admin",
        ));
    api()
        .args(["project", "ensure", "homelab"])
        .assert()
        .success()
        .stdout("project homelab created\n");
    api()
        .args(["project", "ensure", "homelab"])
        .assert()
        .success()
        .stdout("project homelab exists\n");
    let out = api()
        .args([
            "-o",
            "json",
            "robot",
            "create",
            "ci",
            "--project",
            "homelab",
            "--push",
        ])
        .assert()
        .success();
    let robot: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(robot["name"], "robot$homelab+ci");
    assert!(robot["secret"].as_str().unwrap().len() > 8);
    api()
        .args(["cleanup", "homelab", "--keep", "1", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("would delete homelab/web@sha256:0000000000000000000000000000000000000000000000000000000000000001"));
    assert_eq!(fake.digests("homelab/web").len(), 2);
    api()
        .args(["cleanup", "homelab", "--keep", "1"])
        .assert()
        .success();
    assert_eq!(fake.digests("homelab/web").len(), 1);
    api()
        .args(["gc", "run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("started"));
    harbor()
        .env("HARBOR_URL", &fake.url)
        .args(["project", "list"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("needs a user"));
}

/// Everything the tool prints, at every verbosity and with every library logging at trace,
/// holds neither the password nor the Basic header made of it.
#[test]
fn no_credential_reaches_the_output_even_at_trace() {
    let server = Registry::start_with(&RegistryConfig {
        user: Some(("ci".into(), "pa55word".into())),
        tls: false,
        token: None,
        ..Default::default()
    })
    .unwrap();
    let host = server.host();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tiny_layout(&src);
    // base64("ci:pa55word"), as an Authorization header would carry it.
    let secrets = ["pa55word", "Y2k6cGE1NXdvcmQ="];
    for (flag, rust_log) in [("-vv", None), ("-v", Some("trace"))] {
        for args in [
            vec![
                "push".to_owned(),
                format!("{}:v1", src.display()),
                format!("{host}/p/app:v1"),
            ],
            vec!["tags".to_owned(), format!("{host}/p/app")],
        ] {
            let mut cmd = harbor();
            cmd.env("HARBOR_USERNAME", "ci")
                .env("HARBOR_PASSWORD", "pa55word")
                .args([flag, "--plain-http"])
                .args(&args);
            match rust_log {
                Some(level) => cmd.env("RUST_LOG", level),
                None => cmd.env_remove("RUST_LOG"),
            };
            let out = cmd.assert().success();
            let output = out.get_output();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(
                !all.is_empty() || rust_log.is_none(),
                "trace logging produced nothing: the check would prove nothing"
            );
            for secret in secrets {
                assert!(
                    !all.contains(secret),
                    "{flag} RUST_LOG={rust_log:?} {args:?} printed {secret}"
                );
            }
        }
    }
}
