//! The step engine against real OpenSSH servers on loopback.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use homelab_testkit::Sshd;
use kubeadm_boot::Event;
use kubeadm_boot::ssh::{Cmd, HostKeyPolicy, Pool, SshOptions, Target};
use kubeadm_boot::steps::{Check, Outcome, Runner, Step};

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

fn steps(dir: &Path) -> Vec<Step> {
    let marker = dir.join("marker");
    vec![
        Step::file(
            "config",
            dir.join("conf/app.toml").to_str().unwrap(),
            "a = 1\n",
            0o640,
            None,
        ),
        Step::command(
            "marker",
            "create the marker file",
            &format!("test -f {}", marker.display()),
            &format!("touch {}", marker.display()),
        ),
    ]
}

#[tokio::test]
async fn steps_apply_once_then_report_unchanged_and_dry_run_changes_nothing() {
    let servers: Vec<Sshd> = (0..3).map(|_| Sshd::start().unwrap()).collect();
    let opts = options(
        &servers[0],
        &servers[0].dir().join("known_hosts"),
        HostKeyPolicy::TrustOnFirstUse,
    );
    let mut runner = Runner::new(Arc::new(Pool::new(opts).unwrap()));
    let work = |servers: &[Sshd]| -> Vec<(Target, Vec<Step>)> {
        servers
            .iter()
            .enumerate()
            .map(|(i, s)| (target(s, &format!("n{i}")), steps(s.dir())))
            .collect()
    };
    // All servers accept the same client key? Each server has its own; use each one's key.
    // (The pool has one key, so give every server the first server's authorized key.)
    for s in &servers[1..] {
        std::fs::write(
            s.dir().join("authorized_keys"),
            format!("{}\n", servers[0].client_key.public),
        )
        .unwrap();
    }
    // The simulated hosts share this machine's filesystem: each gets its own lock.
    let locks = servers[0].dir().join("locks");
    runner.lock_dir = format!("{}/{{host}}", locks.display());

    runner.dry_run = true;
    let seen = Mutex::new(Vec::new());
    let events = |e| {
        if let Event::Step(r) = e {
            seen.lock()
                .unwrap()
                .push(format!("{} {} {:?}", r.host, r.step, r.outcome));
        }
    };
    let dry = runner.run(work(&servers), &events).await.unwrap();
    assert!(
        dry.iter().all(|r| r.outcome == Outcome::WouldChange),
        "{dry:?}"
    );
    assert!(
        !servers[0].dir().join("marker").exists(),
        "a dry run changes nothing"
    );

    runner.dry_run = false;
    let first = runner.run(work(&servers), &events).await.unwrap();
    assert_eq!(first.len(), 6);
    assert!(first.iter().all(|r| r.outcome == Outcome::Changed));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(servers[1].dir().join("conf/app.toml"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o640);
    let before = servers[2].commands().len();
    let second = runner.run(work(&servers), &events).await.unwrap();
    assert!(
        second.iter().all(|r| r.outcome == Outcome::Unchanged),
        "{second:?}"
    );
    // Settled hosts are checked in one round trip: lock, every check at once, unlock.
    let rerun = &servers[2].commands()[before..];
    assert_eq!(rerun.len(), 3, "{rerun:#?}");
    // A host where a later step drifted: the earlier one is settled by the batch, the drifted
    // one is checked and changed on its own.
    std::fs::remove_file(servers[1].dir().join("marker")).unwrap();
    let third = runner.run(work(&servers[1..2]), &|_| {}).await.unwrap();
    let outcomes: Vec<(String, Outcome)> = third.into_iter().map(|r| (r.step, r.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            ("config".to_owned(), Outcome::Unchanged),
            ("marker".to_owned(), Outcome::Changed)
        ]
    );
    assert!(servers[1].dir().join("marker").exists());
    assert_eq!(seen.lock().unwrap().len(), 18);
    assert_eq!(
        std::fs::read_dir(&locks).unwrap().count(),
        0,
        "every lock was released"
    );
}

#[tokio::test]
async fn failures_name_host_step_command_and_stderr() {
    let sshd = Sshd::start().unwrap();
    let opts = options(
        &sshd,
        &sshd.dir().join("known_hosts"),
        HostKeyPolicy::TrustOnFirstUse,
    );
    let mut runner = Runner::new(Arc::new(Pool::new(opts).unwrap()));
    runner.lock_dir = sshd.dir().join("lock").display().to_string();
    let bad = Step::command(
        "broken",
        "do the impossible",
        "false",
        "echo 'no such thing' >&2; exit 3",
    );
    let never = Step {
        name: "never-converges".into(),
        description: "x".into(),
        check: Check::Command(Cmd::new("false")),
        changes: vec![],
    };
    let err = runner
        .run(vec![(target(&sshd, "n1"), vec![bad])], &|_| {})
        .await
        .unwrap_err();
    let text = err.to_string();
    // Lines the login shell's start-up files wrote (root's .bashrc on CI) may come
    // between "stderr: " and the command's own line.
    assert!(text.contains("n1: step broken: command failed (command `echo 'no such thing' >&2; exit 3`, exit status 3, stderr: "), "{text}");
    assert!(text.contains("no such thing)"), "{text}");
    assert!(
        !sshd.dir().join("lock").exists(),
        "the lock is released after a failure"
    );
    let err = runner
        .run(vec![(target(&sshd, "n1"), vec![never])], &|_| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("still not in the wanted state"),
        "{err}"
    );
}

#[tokio::test]
async fn a_second_run_is_refused_while_the_first_holds_the_lock() {
    let sshd = Sshd::start().unwrap();
    let opts = options(
        &sshd,
        &sshd.dir().join("known_hosts"),
        HostKeyPolicy::TrustOnFirstUse,
    );
    let pool = Arc::new(Pool::new(opts).unwrap());
    let lock = sshd.dir().join("lock");
    let mut slow = Runner::new(pool.clone());
    slow.lock_dir = lock.display().to_string();
    let fast = slow.clone();
    // The first run's step waits, holding the lock, until the test releases it: no sleep
    // decides who is first, so load cannot reorder the two runs.
    let started = sshd.dir().join("slow-started");
    let release = sshd.dir().join("slow-release");
    let slow_step = Step::command(
        "slow",
        "wait",
        "false",
        &format!(
            "touch {started}; while [ ! -e {release} ]; do sleep 0.05; done",
            started = started.display(),
            release = release.display()
        ),
    );
    let t = target(&sshd, "n1");
    let first = tokio::spawn({
        let t = t.clone();
        async move { slow.run(vec![(t, vec![slow_step])], &|_| {}).await }
    });
    while !started.exists() {
        assert!(
            !first.is_finished(),
            "the first run ended before its step began"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        lock.exists(),
        "the first run holds the lock while its step runs"
    );
    let err = fast
        .run(vec![(t, steps(sshd.dir()))], &|_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another run holds"), "{err}");
    std::fs::write(&release, "").unwrap();
    // The first run fails its re-check (sleep changes nothing) but releases the lock.
    let first = first.await.unwrap();
    assert!(!lock.exists(), "{first:?}");
    // A lock left by a killed run of this machine is taken over.
    std::fs::create_dir_all(&lock).unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    std::fs::write(
        lock.join("owner"),
        format!("{} 4294967 2026-01-01T00:00:00Z\n", hostname.trim()),
    )
    .unwrap();
    fast.run(vec![(target(&sshd, "n1"), steps(sshd.dir()))], &|_| {})
        .await
        .unwrap();
    // So is a lock without an owner: an earlier version's run killed between making the
    // directory and writing its owner (found by the real-VM suite's kills). Taking a lock
    // now leaves no such window, nor any temporary directory beside it.
    std::fs::create_dir_all(&lock).unwrap();
    fast.run(vec![(target(&sshd, "n1"), steps(sshd.dir()))], &|_| {})
        .await
        .unwrap();
    assert!(!lock.exists());
    let beside: Vec<_> = std::fs::read_dir(lock.parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".homelab-lock"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
}

/// The offline bundle's files against a real OpenSSH server, installed under a directory (the
/// steps as a node gets them, rooted elsewhere): each copied once and verified on the host; a
/// second run changes nothing; a file changed on the node is put back; a bundle whose file
/// changed after it was written is refused before anything is copied.
#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn bundle_files_are_installed_by_digest_and_a_changed_binary_is_refused() {
    use kubeadm_boot::bundle::{BundleError, NodeBundle, bundle_steps_in};
    let sshd = Sshd::start().unwrap();
    let opts = options(
        &sshd,
        &sshd.dir().join("known_hosts"),
        HostKeyPolicy::TrustOnFirstUse,
    );
    let mut runner = Runner::new(Arc::new(Pool::new(opts).unwrap()));
    runner.lock_dir = sshd.dir().join("lock").display().to_string();
    let src = sshd.dir().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let names = [
        "bin/kubeadm",
        "bin/kubelet",
        "bin/kubectl",
        "cni/bridge",
        "cni/host-local",
        "cni/loopback",
        "cni/portmap",
    ];
    let sources: Vec<(String, std::path::PathBuf)> = names
        .iter()
        .map(|n| {
            let p = src.join(n.replace('/', "-"));
            // kubeadm answers the version guard as the real one does.
            let body = if *n == "bin/kubeadm" {
                "#!/bin/sh\necho v1.33.5\n".to_owned()
            } else {
                format!("#!/bin/sh\necho {n}\n{}\n", "#".repeat(100_000))
            };
            std::fs::write(&p, body).unwrap();
            ((*n).to_owned(), p)
        })
        .collect();
    let refs: Vec<(&str, &Path)> = sources
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    let bundle = NodeBundle::write(&sshd.dir().join("bundle"), "v1.33.5", &refs).unwrap();
    let root = sshd.dir().join("node");
    let root = root.to_str().unwrap();
    let version = "1.33.5".parse().unwrap();
    let files = || -> Vec<Step> {
        bundle_steps_in(&version, &bundle, root)
            .unwrap()
            .into_iter()
            .filter(|s| s.name.starts_with("bundle-"))
            .collect()
    };
    let run = |steps: Vec<Step>| {
        let runner = runner.clone();
        let target = target(&sshd, "n1");
        async move { runner.run(vec![(target, steps)], &|_| {}).await }
    };
    let first = run(files()).await.unwrap();
    assert_eq!(
        first.len(),
        8,
        "seven files and the mark of what is installed"
    );
    assert!(
        first.iter().all(|r| r.outcome == Outcome::Changed),
        "{first:#?}"
    );
    for (name, source) in &sources {
        let installed = NodeBundle::install_path(name).unwrap();
        assert_eq!(
            std::fs::read(format!("{root}{installed}")).unwrap(),
            std::fs::read(source).unwrap(),
            "{name}"
        );
    }
    assert!(
        std::fs::read_to_string(format!("{root}{}", kubeadm_boot::bundle::INSTALLED_MARK))
            .unwrap()
            .starts_with("v1.33.5\n")
    );
    let again = run(files()).await.unwrap();
    assert!(
        again.iter().all(|r| r.outcome == Outcome::Unchanged),
        "{again:#?}"
    );
    // A binary changed on the node: put back.
    std::fs::write(format!("{root}/usr/bin/kubelet"), "tampered").unwrap();
    let fixed = run(files()).await.unwrap();
    let changed: Vec<&str> = fixed
        .iter()
        .filter(|r| r.outcome == Outcome::Changed)
        .map(|r| r.step.as_str())
        .collect();
    assert_eq!(changed, ["bundle-bin-kubelet"]);
    // The bundle's kubelet changed after the bundle was written: refused when opened ...
    std::fs::write(bundle.dir.join("bin/kubelet"), "#!/bin/sh\necho evil\n").unwrap();
    let err = NodeBundle::open(&bundle.dir).unwrap_err();
    assert!(matches!(err, BundleError::Digest { .. }), "{err}");
    // ... and, had it changed between opening and copying, by the node after the copy: the
    // installed kubelet stays as it was and no temporary copy is left.
    std::fs::write(format!("{root}/usr/bin/kubelet"), "old").unwrap();
    let err = run(files()).await.unwrap_err().to_string();
    assert!(
        err.contains("bundle-bin-kubelet") && err.contains("sha256"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{root}/usr/bin/kubelet")).unwrap(),
        "old"
    );
    let left: Vec<String> = std::fs::read_dir(format!("{root}/usr/bin"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".homelab-tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    // A node with another kubeadm is refused: only upgrades move versions.
    std::fs::write(
        format!("{root}/usr/bin/kubeadm"),
        "#!/bin/sh\necho v1.32.9\n",
    )
    .unwrap();
    let err = run(files()).await.unwrap_err().to_string();
    assert!(
        err.contains("kubeadm v1.32.9 is installed") && err.contains("homelab upgrade"),
        "{err}"
    );
}
