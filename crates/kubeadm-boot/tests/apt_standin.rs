//! The package steps' shell, run for real against a scripted apt that behaves as apt does in
//! the cases that matter: a version published after the last `apt-get update` is "not found",
//! a held package is not changed without being unheld. A patch upgrade must refresh the lists
//! first, and the packages must be held again whatever happened.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use kubeadm_boot::kubeadm::Version;
use kubeadm_boot::prepare::{PackageSource, node_steps};
use kubeadm_boot::steps::{Change, Check, Step};

/// `apt-get` and `apt-mark` stand-ins keeping their state in `$APT_STATE`: `published` lists
/// the versions the repository has, `known` those the last `update` saw, `held` the holds,
/// `installed` what was installed.
const APT_GET: &str = r#"#!/bin/sh
set -e
# Options before the command (`-o Name=value` takes the next argument).
while [ "${1#-}" != "$1" ]; do [ "$1" = -o ] && shift; shift; done
# Another apt holding the lock for the next `busy` calls.
if [ -s "$APT_STATE/busy" ]; then
  b=$(cat "$APT_STATE/busy"); echo $((b-1)) > "$APT_STATE/busy"; [ "$b" -le 1 ] && : > "$APT_STATE/busy"
  echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2; exit 100
fi
if [ "$1" = install ] && [ -e "$APT_STATE/interrupted" ]; then
  echo "E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem." >&2; exit 100
fi
case "$1" in
  update) cp "$APT_STATE/published" "$APT_STATE/known"; exit 0 ;;
  install) ;;
  *) echo "stand-in apt-get: $1 not scripted" >&2; exit 2 ;;
esac
shift
for arg in "$@"; do
  case "$arg" in
    -*) continue ;;
  esac
  pkg=${arg%%=*}; version=${arg#*=}; version=${version%-\*}; version=${version#\'}; version=${version%\'}
  # Unversioned: whatever the repository has.
  [ "$pkg" = "$arg" ] && continue
  if ! grep -qx "$version" "$APT_STATE/known" 2>/dev/null; then
    echo "E: Version '$version-*' for '$pkg' was not found" >&2; exit 100
  fi
  if grep -qx "$pkg" "$APT_STATE/held" 2>/dev/null; then
    echo "E: Held packages were changed and -y was used without --allow-change-held-packages." >&2; exit 100
  fi
done
for arg in "$@"; do
  case "$arg" in -*) continue ;; esac
  pkg=${arg%%=*}; version=${arg#*=}; version=${version%-\*}
  grep -v "^$pkg " "$APT_STATE/installed" > "$APT_STATE/installed.new" 2>/dev/null || true
  echo "$pkg $version" >> "$APT_STATE/installed.new"
  mv "$APT_STATE/installed.new" "$APT_STATE/installed"
done
"#;

const APT_MARK: &str = r#"#!/bin/sh
action=$1; shift
touch "$APT_STATE/held"
for pkg in "$@"; do
  grep -vx "$pkg" "$APT_STATE/held" > "$APT_STATE/held.new" || true
  [ "$action" = hold ] && echo "$pkg" >> "$APT_STATE/held.new"
  mv "$APT_STATE/held.new" "$APT_STATE/held"
done
"#;

/// `dpkg --configure -a` finishing what a killed run left (`$APT_STATE/interrupted`).
const DPKG: &str = r#"#!/bin/sh
[ "$1 $2" = "--configure -a" ] || { echo "stand-in dpkg: $* not scripted" >&2; exit 2; }
rm -f "$APT_STATE/interrupted"
echo configured >> "$APT_STATE/log"
"#;

/// `kubeadm version -o short` as the installed package answers it (fails when absent).
const KUBEADM: &str = r#"#!/bin/sh
v=$(grep '^kubeadm ' "$APT_STATE/installed" | cut -d' ' -f2)
[ -n "$v" ] || exit 127
echo "v$v"
"#;

struct Apt {
    dir: tempfile::TempDir,
}

impl Apt {
    /// A scripted apt whose repository publishes `published` and whose lists know `known`.
    fn new(published: &[&str], known: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for (name, script) in [
            ("apt-get", APT_GET),
            ("apt-mark", APT_MARK),
            ("dpkg", DPKG),
            ("kubeadm", KUBEADM),
        ] {
            homelab_testkit::stand_in(&bin, name, script);
        }
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::write(state.join("published"), published.join("\n") + "\n").unwrap();
        std::fs::write(state.join("known"), known.join("\n") + "\n").unwrap();
        std::fs::write(state.join("installed"), "").unwrap();
        std::fs::write(state.join("held"), "kubeadm\nkubelet\nkubectl\n").unwrap();
        Self { dir }
    }

    fn state(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("state").join(file)).unwrap()
    }

    /// Runs a step's change the way the node's shell does; returns success and stderr.
    fn run(&self, step: &Step) -> (bool, String) {
        let Change::Run(cmd) = &step.changes[0] else {
            panic!("{} does not run a command", step.name)
        };
        let out = Command::new("sh")
            .arg("-c")
            .arg(&cmd.line)
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display()),
            )
            .env("APT_STATE", self.dir.path().join("state"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn packages_step(version: &str) -> Step {
    let version: Version = version.parse().unwrap();
    node_steps(&version, &PackageSource::default())
        .into_iter()
        .find(|s| s.name == "kubernetes-packages")
        .unwrap()
}

fn upgrade_kubeadm_step(version: &str) -> Step {
    let version: Version = version.parse().unwrap();
    kubeadm_boot::upgrade::node_steps(&version, &PackageSource::default())
        .into_iter()
        .find(|s| s.name == "kubeadm-package")
        .unwrap()
}

#[test]
fn a_patch_release_is_installed_after_the_lists_are_refreshed_and_held_again() {
    // 1.33.6 was published after the node's lists were last refreshed.
    let apt = Apt::new(&["1.33.5", "1.33.6"], &["1.33.5"]);
    let (ok, stderr) = apt.run(&packages_step("1.33.6"));
    assert!(ok, "{stderr}");
    assert_eq!(
        apt.state("installed"),
        "kubeadm 1.33.6\nkubelet 1.33.6\nkubectl 1.33.6\n"
    );
    assert_eq!(apt.state("held"), "kubeadm\nkubelet\nkubectl\n");
    // The upgrade's kubeadm step likewise.
    let apt = Apt::new(&["1.33.5", "1.33.6"], &["1.33.5"]);
    let (ok, stderr) = apt.run(&upgrade_kubeadm_step("1.33.6"));
    assert!(ok, "{stderr}");
    assert_eq!(apt.state("installed"), "kubeadm 1.33.6\n");
}

#[test]
fn a_failed_install_leaves_the_packages_held_and_fails() {
    let apt = Apt::new(&["1.33.5"], &["1.33.5"]);
    for step in [packages_step("1.33.9"), upgrade_kubeadm_step("1.33.9")] {
        let (ok, stderr) = apt.run(&step);
        assert!(!ok, "{}: an unpublished version installed", step.name);
        assert!(stderr.contains("Version '1.33.9-*' for 'kube"), "{stderr}");
        let held = apt.state("held");
        for pkg in ["kubeadm", "kubelet", "kubectl"] {
            assert!(
                held.lines().any(|l| l == pkg),
                "{}: {pkg} unheld: {held}",
                step.name
            );
        }
    }
    assert_eq!(apt.state("installed"), "");
}

#[test]
fn preparation_never_moves_an_installed_version() {
    // The node runs 1.33.5; the configuration now says 1.33.6.
    let apt = Apt::new(&["1.33.5", "1.33.6"], &["1.33.5", "1.33.6"]);
    std::fs::write(
        apt.dir.path().join("state/installed"),
        "kubeadm 1.33.5\nkubelet 1.33.5\nkubectl 1.33.5\n",
    )
    .unwrap();
    let (ok, stderr) = apt.run(&packages_step("1.33.6"));
    assert!(!ok, "preparation moved the version");
    assert!(
        stderr.contains("kubeadm v1.33.5 is installed and the configuration says v1.33.6")
            && stderr.contains("run homelab upgrade"),
        "{stderr}"
    );
    assert_eq!(
        apt.state("installed"),
        "kubeadm 1.33.5\nkubelet 1.33.5\nkubectl 1.33.5\n"
    );
    // The same version again is fine (a held reinstall changes nothing).
    let (ok, stderr) = apt.run(&packages_step("1.33.5"));
    assert!(ok, "{stderr}");
}

#[test]
fn the_stand_in_refuses_what_apt_refuses() {
    // Without a refresh, a new patch release is not found; a held package is not changed.
    let apt = Apt::new(&["1.33.5", "1.33.6"], &["1.33.5"]);
    let install = |args: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("apt-get install -y {args}"))
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", apt.dir.path().join("bin").display()),
            )
            .env("APT_STATE", apt.dir.path().join("state"))
            .status()
            .unwrap()
            .success()
    };
    assert!(!install("kubeadm='1.33.6-*'"), "unknown before update");
    assert!(!install("kubeadm='1.33.5-*'"), "held");
    assert!(Path::new(&apt.dir.path().join("state/known")).exists());
}

#[test]
fn an_install_after_a_run_killed_inside_dpkg_finishes_it_first() {
    // A run killed mid-install: dpkg refuses every install until `dpkg --configure -a`.
    for step in [
        "kubernetes-packages",
        "containerd-installed",
        "kubernetes-prerequisites",
    ] {
        let apt = Apt::new(&["1.33.5"], &["1.33.5"]);
        std::fs::write(apt.dir.path().join("state/interrupted"), "").unwrap();
        let version: Version = "1.33.5".parse().unwrap();
        let step = node_steps(&version, &PackageSource::default())
            .into_iter()
            .find(|s| s.name == step)
            .unwrap();
        let (ok, stderr) = apt.run(&step);
        assert!(ok, "{}: {stderr}", step.name);
        assert_eq!(apt.state("log"), "configured\n", "{}", step.name);
    }
}

#[test]
fn an_install_waits_while_another_apt_holds_the_lock() {
    // The remote half of an interrupted run (or unattended upgrades) still holds apt's lock
    // for the next two calls: the install waits, then succeeds.
    let apt = Apt::new(&["1.33.5"], &["1.33.5"]);
    std::fs::write(apt.dir.path().join("state/busy"), "2").unwrap();
    let (ok, stderr) = apt.run(&packages_step("1.33.5"));
    assert!(ok, "{stderr}");
    assert_eq!(
        apt.state("installed"),
        "kubeadm 1.33.5\nkubelet 1.33.5\nkubectl 1.33.5\n"
    );
    // Any other failure is not waited on: reported at once with apt's message.
    let apt = Apt::new(&["1.33.5"], &["1.33.5"]);
    let started = std::time::Instant::now();
    let (ok, stderr) = apt.run(&packages_step("1.33.9"));
    assert!(!ok);
    assert!(stderr.contains("Version '1.33.9-*'"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn the_sandbox_image_check_compares_containerd_with_kubeadm() {
    let version: Version = "1.33.5".parse().unwrap();
    let steps = node_steps(&version, &PackageSource::default());
    let config = steps
        .iter()
        .find(|s| s.name == "containerd-config")
        .unwrap();
    let Check::File { contents, .. } = &config.check else {
        panic!("containerd-config is a file step")
    };
    let step = steps.iter().find(|s| s.name == "sandbox-image").unwrap();
    let Check::Command(check) = &step.check else {
        panic!("sandbox-image is checked by a command")
    };
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("config.toml");
    std::fs::write(&toml, contents).unwrap();
    let line = check
        .line
        .replace("/etc/containerd/config.toml", &toml.display().to_string());
    let run = |pause: &str| {
        let bin = dir.path().join("bin");
        homelab_testkit::stand_in(
            &bin,
            "kubeadm",
            &format!(
                "[ \"$1 $2 $3 $4 $5\" = 'config images list --kubernetes-version v1.33.5' ] || exit 2\n\
                 echo registry.k8s.io/kube-apiserver:v1.33.5\necho {pause}\necho registry.k8s.io/etcd:3.5.21-0\n"
            ),
        );
        Command::new("sh")
            .arg("-c")
            .arg(&line)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .status()
            .unwrap()
            .success()
    };
    assert!(
        run("registry.k8s.io/pause:3.10"),
        "the configured image is kubeadm's"
    );
    assert!(
        !run("registry.k8s.io/pause:3.11"),
        "a newer kubeadm's pause differs"
    );
}
