//! The transport against real OpenSSH servers on loopback.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use homelab_ssh::{
    Cmd, HostKeyPolicy, Pool, Session, SshError, SshOptions, Stream, Target, load_key,
};
use homelab_testkit::Sshd;

fn target(sshd: &Sshd, name: &str) -> Target {
    Target {
        name: name.into(),
        address: sshd.addr.ip().to_string(),
        port: sshd.addr.port(),
        user: sshd.user.clone(),
    }
}

fn options(sshd: &Sshd, known_hosts: &Path, policy: HostKeyPolicy) -> SshOptions {
    SshOptions {
        private_key: sshd.client_key.private_path.clone(),
        known_hosts: known_hosts.to_owned(),
        policy,
        connect_timeout: Duration::from_secs(10),
        attempts: 3,
    }
}

async fn session(sshd: &Sshd) -> Session {
    let opts = options(
        sshd,
        &sshd.dir().join("known_hosts"),
        HostKeyPolicy::TrustOnFirstUse,
    );
    Session::connect(
        &target(sshd, "n1"),
        &opts,
        &load_key(&opts.private_key).unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn exec_streams_output_and_returns_exit_status() {
    let sshd = Sshd::start().unwrap();
    let s = session(&sshd).await;
    let mut chunks = Vec::new();
    let out = s
        .exec(
            &Cmd::new("echo out; echo err >&2; exit 7"),
            &mut |stream, data| chunks.push((stream, data.to_vec())),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_status, 7);
    assert_eq!(out.stdout_text(), "out\n");
    assert_eq!(out.stderr_tail(1), "err");
    assert!(chunks.iter().any(|(s, _)| *s == Stream::Stderr));
    match s.run(&Cmd::new("echo boom >&2; false")).await.unwrap_err() {
        SshError::Failed {
            exit_status,
            stderr_tail,
            host,
            ..
        } => {
            // The login user's shell start-up files may write to stderr first (on CI,
            // root's .bashrc runs `pyenv rehash`, which complains when parallel tests race
            // for its lock): the tail ends with what the command wrote.
            assert_eq!((exit_status, host.as_str()), (1, "n1"));
            assert_eq!(stderr_tail.lines().last(), Some("boom"), "{stderr_tail}");
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn large_output_and_stdin_are_complete() {
    let sshd = Sshd::start().unwrap();
    let s = session(&sshd).await;
    let out = s
        .run(&Cmd::new("head -c 8000000 /dev/zero | tr '\\0' x"))
        .await
        .unwrap();
    assert_eq!(out.stdout.len(), 8_000_000);
    let input: Vec<u8> = (0..16_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = s.run(&Cmd::new("cat").stdin(input.clone())).await.unwrap();
    assert_eq!(out.stdout, input);
}

#[tokio::test]
async fn timeouts_name_the_command() {
    let sshd = Sshd::start().unwrap();
    let s = session(&sshd).await;
    let err = s
        .run(&Cmd::new("sleep 30").timeout(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains("`sleep 30` did not finish within"),
        "{err}"
    );
    // The session is still usable.
    assert_eq!(
        s.run(&Cmd::new("echo ok")).await.unwrap().stdout_text(),
        "ok\n"
    );
}

#[tokio::test]
async fn uploads_are_atomic_with_mode_and_secrets_stay_off_the_command_line() {
    let sshd = Sshd::start().unwrap();
    let s = session(&sshd).await;
    let path = sshd.dir().join("etc/kubeadm/join.yaml");
    let path = path.to_str().unwrap();
    s.upload(path, b"token: abcdef.0123456789abcdef\n", 0o600, None, true)
        .await
        .unwrap();
    // What the server was asked to run holds the path but never the contents.
    let commands = sshd.commands();
    assert!(
        commands.iter().any(|c| c.contains(path)),
        "the recorder saw the upload: {commands:#?}"
    );
    assert!(
        !commands.iter().any(|c| c.contains("0123456789abcdef")),
        "a secret was on a command line: {commands:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        "token: abcdef.0123456789abcdef\n"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        no_temporary_beside(path),
        "a temporary file was left beside {path}"
    );
    s.upload(path, b"v2", 0o644, Some("root:root"), true)
        .await
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"v2");
    // A failed chown: the upload fails, the file keeps its contents and no temporary copy of
    // the new (secret) contents stays behind.
    let err = s
        .upload(
            path,
            b"token: v3",
            0o600,
            Some("no-such-user:no-such-group"),
            true,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Failed { .. }), "{err}");
    assert_eq!(std::fs::read(path).unwrap(), b"v2");
    assert!(
        no_temporary_beside(path),
        "the temporary file of a failed upload was left behind"
    );
    assert_eq!(s.read_file(path, false).await.unwrap().unwrap(), b"v2");
    assert_eq!(s.read_file("/nonexistent/file", false).await.unwrap(), None);
    let who = s
        .run(&Cmd::new("id -u").sudo())
        .await
        .unwrap()
        .stdout_text();
    assert_eq!(who.trim(), "0", "sudo runs as root");
}

#[tokio::test]
async fn a_file_is_streamed_installed_by_its_digest_and_refused_when_the_copy_differs() {
    use sha2::Digest as _;
    let sshd = Sshd::start().unwrap();
    let s = session(&sshd).await;
    // Larger than any buffer on the way (the channel window, the copy's blocks).
    let local = sshd.dir().join("kubelet.local");
    let contents: Vec<u8> = (0..6_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &contents).unwrap();
    let digest = hex::encode(sha2::Sha256::digest(&contents));
    let path = sshd.dir().join("usr/bin/kubelet");
    let path = path.to_str().unwrap();
    s.upload_file(&local, path, 0o755, &digest, true)
        .await
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), contents);
    let mode_of = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
    };
    assert_eq!(mode_of(Path::new(path)) & 0o777, 0o755);
    // The directories made on the way are readable by everyone, as /usr/bin is (the
    // temporary file's 0077 umask must not reach them: a 0700 /opt/cni or /var/lib/homelab
    // hid what is in them from every user but root).
    assert_eq!(mode_of(&sshd.dir().join("usr/bin")) & 0o777, 0o755);
    assert_eq!(mode_of(&sshd.dir().join("usr")) & 0o777, 0o755);
    // The copy on the host has another digest than the one promised (the local file changed
    // after it was checked, or the transfer damaged it): refused, naming both digests; the
    // installed file is untouched and no temporary copy stays behind.
    std::fs::write(&local, b"something else").unwrap();
    let err = s
        .upload_file(&local, path, 0o755, &digest, true)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SshError::Failed { .. }), "{text}");
    assert!(
        text.contains(&digest)
            && text.contains(&hex::encode(sha2::Sha256::digest(b"something else"))),
        "{text}"
    );
    assert_eq!(std::fs::read(path).unwrap(), contents);
    assert!(
        no_temporary_beside(path),
        "a temporary file was left beside {path}"
    );
    // A local file that is not there is named.
    let err = s
        .upload_file(&sshd.dir().join("missing"), path, 0o755, &digest, true)
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::LocalFile { .. }), "{err}");
}

#[tokio::test]
async fn unknown_hosts_are_recorded_and_changed_keys_refused() {
    let sshd = Sshd::start().unwrap();
    let known = sshd.dir().join("kh/known_hosts");
    let key = load_key(&sshd.client_key.private_path).unwrap();
    let strict = options(&sshd, &known, HostKeyPolicy::Strict);
    let err = Session::connect(&target(&sshd, "n1"), &strict, &key)
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err}");

    let tofu = options(&sshd, &known, HostKeyPolicy::TrustOnFirstUse);
    Session::connect(&target(&sshd, "n1"), &tofu, &key)
        .await
        .unwrap();
    let recorded = std::fs::read_to_string(&known).unwrap();
    assert!(
        recorded.contains(sshd.host_key.public.split_whitespace().nth(1).unwrap()),
        "{recorded}"
    );
    Session::connect(&target(&sshd, "n1"), &strict, &key)
        .await
        .unwrap();

    // Another server on the same address and port: a changed key.
    let imposter = sshd
        .client_key
        .public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(
        &known,
        format!("[{}]:{} {imposter}\n", sshd.addr.ip(), sshd.addr.port()),
    )
    .unwrap();
    let err = Session::connect(&target(&sshd, "n1"), &tofu, &key)
        .await
        .unwrap_err();
    match &err {
        SshError::HostKeyChanged { line, .. } => assert_eq!(*line, 1),
        other => panic!("expected a refused changed key, got {other}"),
    }
    assert!(err.to_string().contains("HOST KEY CHANGED"));
    assert_eq!(
        std::fs::read_to_string(&known).unwrap().lines().count(),
        1,
        "nothing was learned"
    );
}

#[tokio::test]
async fn a_recorded_key_of_another_algorithm_is_a_changed_host() {
    // The server presents ed25519; known_hosts holds an ECDSA key for it. An impostor
    // without the old private key would offer just that: refused, even on first use.
    let sshd = Sshd::start().unwrap();
    let known = sshd.dir().join("known_hosts_alg");
    let ecdsa = homelab_ssh::PrivateKey::random(&mut rand::rng(), russh_algorithm_ecdsa()).unwrap();
    homelab_ssh::record_known_host(
        &known,
        &sshd.addr.ip().to_string(),
        sshd.addr.port(),
        ecdsa.public_key(),
    )
    .unwrap();
    let key = load_key(&sshd.client_key.private_path).unwrap();
    let tofu = options(&sshd, &known, HostKeyPolicy::TrustOnFirstUse);
    let err = Session::connect(&target(&sshd, "n1"), &tofu, &key)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SshError::HostKeyChanged { line: 1, .. }),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&known).unwrap().lines().count(), 1);
}

fn russh_algorithm_ecdsa() -> homelab_ssh::Algorithm {
    homelab_ssh::Algorithm::Ecdsa {
        curve: homelab_ssh::EcdsaCurve::NistP256,
    }
}

#[tokio::test]
async fn a_dropped_connection_is_replaced() {
    let mut sshd = Sshd::start().unwrap();
    let opts = options(
        &sshd,
        &sshd.dir().join("known_hosts"),
        HostKeyPolicy::TrustOnFirstUse,
    );
    let pool = Pool::new(opts).unwrap();
    let t = target(&sshd, "n1");
    pool.run(&t, &Cmd::new("true")).await.unwrap();
    let first = pool.session(&t).await.unwrap();
    // Kill the server side of our connection (sshd's per-connection child).
    let _ = std::process::Command::new("pkill")
        .args(["-P", &sshd.pid().to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = pool.run(&t, &Cmd::new("echo again")).await.unwrap();
    assert_eq!(out.stdout_text(), "again\n");
    assert!(
        !Arc::ptr_eq(&first, &pool.session(&t).await.unwrap()),
        "a new connection was made"
    );
    // Stop the server and its per-connection processes: nothing answers any more.
    let _ = std::process::Command::new("pkill")
        .args(["-P", &sshd.pid().to_string()])
        .status();
    sshd.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = pool.run(&t, &Cmd::new("true")).await.unwrap_err();
    assert!(
        matches!(err, SshError::Connect { .. } | SshError::Channel { .. }),
        "{err}"
    );
    // The cause is kept, typed: what the transport said.
    let cause = std::error::Error::source(&err).expect("a source");
    assert!(cause.downcast_ref::<russh::Error>().is_some(), "{cause:?}");
}

#[test]
fn a_private_key_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let sshd = Sshd::start().unwrap();
    let path = &sshd.client_key.private_path;
    load_key(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load_key(path).unwrap_err();
    assert!(
        matches!(err, SshError::KeyTooOpen { mode: 0o644, .. }),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(err.contains("permissions 0644, too open"), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    // A missing key keeps the system's answer as its source.
    let err = load_key(&path.with_extension("missing")).unwrap_err();
    let cause = std::error::Error::source(&err).expect("a source");
    assert_eq!(
        cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind),
        Some(std::io::ErrorKind::NotFound)
    );
}

/// A sink for everything logged on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything russh and this crate log at trace while a secret travels (on standard input
/// and in an upload) and comes back (in command output) holds no byte of it.
#[tokio::test]
async fn a_secret_never_reaches_the_logs_even_at_trace() {
    let captured = Captured::default();
    let sink = captured.clone();
    // The global subscriber (nextest runs each test in its own process), with russh's `log`
    // records bridged in, as the binaries do.
    tracing_subscriber::util::SubscriberInitExt::try_init(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || sink.clone()),
    )
    .unwrap();
    let sshd = Sshd::start().unwrap();
    let s = session(&sshd).await;
    let secret = "abcdef.0123456789abcdef";
    let path = sshd.dir().join("join.yaml");
    s.upload(
        path.to_str().unwrap(),
        secret.as_bytes(),
        0o600,
        None,
        false,
    )
    .await
    .unwrap();
    let out = s
        .run(&Cmd::new(format!("cat {}", path.display())))
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), secret);
    s.run(&Cmd::new("cat >/dev/null").stdin(secret.as_bytes().to_vec()))
        .await
        .unwrap();
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.lines().count() > 20,
        "too little was logged for the check to mean anything:\n{logs}"
    );
    assert!(!logs.contains("0123456789abcdef"), "{logs}");
}

/// Whether no upload's temporary file (`<path>.homelab-tmp.<pid>`) is left beside `path`.
fn no_temporary_beside(path: &str) -> bool {
    let path = Path::new(path);
    let prefix = format!(
        "{}.homelab-tmp",
        path.file_name().unwrap().to_string_lossy()
    );
    std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with(&prefix))
}
