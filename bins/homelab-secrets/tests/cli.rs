//! `homelab-secrets` as a user runs it, against the ESC contract fake.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use assert_cmd::Command;
use homelab_testkit::esc_fake::{EscFake, TOKEN};

/// A homelab.toml whose `[esc]` is the fake, its token in a 0600 file.
fn config(dir: &Path, fake: &EscFake) -> std::path::PathBuf {
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = dir.join("homelab.toml");
    std::fs::write(
        &path,
        format!(
            "[esc]\norganization = \"acme\"\nproject = \"homelab\"\nenvironment = \"dev\"\n\
             token = {{ file = \"{}\" }}\napi_url = \"{}\"\n",
            token.display(),
            fake.url
        ),
    )
    .unwrap();
    path
}

/// Runs the tool (off the runtime that serves the fake), logging everything (`RUST_LOG=trace`,
/// every crate's): no log line may hold the token or a secret value.
async fn run(config: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let config = config.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let stdin = stdin.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::cargo_bin("homelab-secrets").unwrap();
        cmd.arg("-c")
            .arg(&config)
            .args(&args)
            .env("RUST_LOG", "trace");
        if let Some(input) = stdin {
            cmd.write_stdin(input);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains(TOKEN), "the token in the logs:\n{stderr}");
        assert!(
            !stderr.contains("s3cret-harbor"),
            "a secret in the logs:\n{stderr}"
        );
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_set_ls_and_get_never_print_a_secret_unasked() {
    let fake = EscFake::start().await;
    fake.define("acme", "homelab", "dev", "values:\n  other: 1\n");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &fake);

    let (ok, out, _) = run(&config, &["check"], None).await;
    assert!(!ok, "a required secret is missing: exit 1\n{out}");
    assert!(out.contains("harbor-admin           MISSING"), "{out}");
    assert!(
        out.contains("esc env set acme/homelab/dev 'harbor.admin.password' \"$VALUE\" --secret"),
        "{out}"
    );

    let (ok, _, err) = run(
        &config,
        &["set", "harbor.admin.password"],
        Some("s3cret-harbor\n"),
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        err.contains("acme/homelab/dev: harbor.admin.password set (revision 2)"),
        "{err}"
    );
    let stored = fake.definition("acme", "homelab", "dev").unwrap();
    assert!(stored.contains("fn::secret: s3cret-harbor"), "{stored}");
    let (ok, out, _) = run(&config, &["check"], None).await;
    assert!(ok, "{out}");

    let (ok, out, _) = run(&config, &["ls"], None).await;
    assert!(ok);
    assert_eq!(out, "harbor.admin.password  (secret)\nother\n");

    let (ok, _, err) = run(&config, &["get", "harbor.admin.password"], None).await;
    assert!(!ok);
    assert!(err.contains("is a secret: add --reveal"), "{err}");
    // Standard output is a pipe here, not a terminal.
    let (ok, out, err) = run(&config, &["get", "harbor.admin.password", "--reveal"], None).await;
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.contains("standard output is not a terminal"), "{err}");
    let file = dir.path().join("value");
    let (ok, _, err) = run(
        &config,
        &[
            "get",
            "harbor.admin.password",
            "--reveal",
            "--to",
            file.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "s3cret-harbor\n");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A plain value prints as it is.
    let (ok, out, _) = run(&config, &["get", "other"], None).await;
    assert!(ok);
    assert_eq!(out, "1\n");

    let (ok, out, _) = run(&config, &["manifests"], None).await;
    assert!(ok);
    assert!(out.contains("kind: ClusterSecretStore"), "{out}");
    assert!(out.contains("key: harbor.admin"), "{out}");
    for r in fake.requests() {
        assert!(!r.line.contains(TOKEN));
    }
    assert!(!out.contains(TOKEN));
}
