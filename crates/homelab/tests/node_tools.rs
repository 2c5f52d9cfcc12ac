//! Every command the cluster layer runs on a node uses only programs the project's base image
//! has (debootstrap's default set plus the recipe's packages) or that an earlier step
//! installed. A step that calls, say, `curl` on a node fails this test instead of failing on a
//! user's first run.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use homelab_config::Config;
use kubeadm_boot::kubeadm::{BootstrapToken, Version};
use kubeadm_boot::steps::{Change, Check, Step};

/// Programs of debootstrap's default set for bookworm (priority required and important),
/// by package: what every node has before any step runs.
const DEBOOTSTRAP_DEFAULT: &[(&str, &[&str])] = &[
    (
        "coreutils",
        &[
            "cat",
            "chmod",
            "chown",
            "cp",
            "cut",
            "date",
            "dirname",
            "head",
            "id",
            "install",
            "ln",
            "ls",
            "mkdir",
            "mktemp",
            "mv",
            "rm",
            "sleep",
            "sort",
            "stat",
            "sync",
            "tail",
            "tee",
            "touch",
            "tr",
            "wc",
            "basename",
            "env",
            "readlink",
            "sha256sum",
        ],
    ),
    ("dash/bash", &["sh", "bash"]),
    ("grep", &["grep"]),
    ("sed", &["sed"]),
    ("mawk", &["awk"]),
    ("diffutils", &["cmp", "diff"]),
    ("findutils", &["find", "xargs"]),
    ("util-linux", &["swapon", "swapoff", "mount", "umount"]),
    ("kmod", &["modprobe", "lsmod"]),
    ("procps", &["sysctl", "pkill", "ps"]),
    ("systemd", &["systemctl", "journalctl"]),
    ("apt", &["apt-get", "apt-mark", "apt-cache"]),
    ("dpkg", &["dpkg", "dpkg-query"]),
    ("iproute2", &["ip"]),
    ("hostname", &["hostname"]),
    ("tar/gzip", &["tar", "gzip"]),
];

/// Programs the base image recipe adds (`libvirt_vm::image::ImageRecipe::debian_bookworm`).
const RECIPE: &[(&str, &[&str])] = &[
    ("sudo", &["sudo"]),
    ("openssh-server", &["sshd"]),
    ("cloud-init", &["cloud-init"]),
    ("ifupdown", &["ifup", "ifdown"]),
    ("net-tools", &["route"]),
];

/// Programs a step installs, usable by the steps after it.
const INSTALLED_BY: &[(&str, &[&str])] = &[
    ("containerd-installed", &["containerd", "ctr"]),
    (
        "kubernetes-prerequisites",
        &["conntrack", "socat", "ethtool"],
    ),
    (
        "kubernetes-packages",
        &["kubeadm", "kubelet", "kubectl", "crictl"],
    ),
];

/// Shell keywords and builtins (no program needed).
const SHELL: &[&str] = &[
    "if", "then", "else", "elif", "fi", "for", "in", "do", "done", "while", "case", "esac", "[",
    "[[", "test", "echo", "printf", "true", "false", "exit", "cd", "export", "umask", "read",
    "set", "trap", "command", "!", "{", "}", "local", "return", ":", "until", "continue", "break",
];

/// The programs a shell command line starts (first word of every simple command).
/// Single-quoted text is data, never a command.
fn programs(line: &str) -> BTreeSet<String> {
    let mut unquoted = String::new();
    let mut quoted = false;
    for c in line.chars() {
        if c == '\'' {
            quoted = !quoted;
            if quoted {
                unquoted.push('Q');
            }
        } else if !quoted {
            unquoted.push(c);
        }
    }
    // Arithmetic expansions, `$((n+1))`, run nothing.
    while let Some(start) = unquoted.find("$((") {
        let end = unquoted[start..]
            .find("))")
            .map_or(unquoted.len(), |e| start + e + 2);
        unquoted.replace_range(start..end, "0");
    }
    let mut separated = unquoted.replace("$(", "\n").replace('`', "\n");
    for sep in ["&&", "||", ";", "|", "(", ")", "\n"] {
        separated = separated.replace(sep, "\n");
    }
    let mut found = BTreeSet::new();
    // Shell functions the line defines (`kc() { …; }`) are not programs.
    let defined: BTreeSet<String> = unquoted
        .split(|c: char| c.is_whitespace() || c == ';' || c == '{')
        .filter_map(|w| w.strip_suffix("()"))
        .map(str::to_owned)
        .collect();
    for segment in separated.lines() {
        let mut words = segment.split_whitespace().peekable();
        while let Some(word) = words.peek() {
            let skip = *word == "!"
                || *word == "-n"
                || *word == "--"
                || *word == "sudo"
                || word.contains('=') && !word.starts_with('-');
            if skip {
                if *word == "sudo" {
                    found.insert("sudo".to_owned());
                }
                words.next();
            } else {
                break;
            }
        }
        let Some(first) = words.next() else { continue };
        let first = first.trim_matches(|c| c == '"' || c == '\'');
        if first.is_empty()
            || first.starts_with(['$', '-', '>', '<', '/', '\\', '\'', '"', '*', '.'])
            || first.chars().next().is_some_and(|c| c.is_ascii_digit())
            || first.ends_with(')')
            || first.contains('*')
        {
            continue;
        }
        if !defined.contains(first) {
            found.insert(first.to_owned());
        }
    }
    found
}

/// Every command a step runs on a node: its check, its changes, the uploads' own command.
fn step_programs(step: &Step) -> BTreeSet<String> {
    let command = |cmd: &homelab_ssh::Cmd| {
        if cmd.sudo {
            format!("sudo {}", cmd.line)
        } else {
            cmd.line.clone()
        }
    };
    let mut lines = Vec::new();
    match &step.check {
        Check::Command(cmd) => lines.push(command(cmd)),
        // What reads a file back and what writes it (homelab_ssh::Session).
        Check::File { .. } => lines.push("sudo if [ -e x ]; then cat x; else exit 3; fi".into()),
    }
    for change in &step.changes {
        match change {
            Change::Run(cmd) => lines.push(command(cmd)),
            Change::Upload { .. } => lines.push(
                "sudo umask 077 && mkdir -p \"$(dirname x)\" && cat > x && chmod 644 x && chown a x && mv -f x y".into(),
            ),
            Change::UploadFile { .. } => lines.push(
                "sudo umask 077 && mkdir -p \"$(dirname x)\" && cat > x && got=$(sha256sum x | cut -d' ' -f1) && chmod 755 x && mv -f x y".into(),
            ),
        }
    }
    lines.iter().flat_map(|l| programs(l)).collect()
}

/// The steps homelab runs on nodes: preparation, bootstrap, upgrade.
fn every_step() -> Vec<Step> {
    let config = Config::default();
    let version: Version = "1.33.5".parse().unwrap();
    let plan = homelab::inputs::bootstrap_plan(&config).unwrap();
    let packages = homelab::inputs::package_source(&config);
    let mut steps = kubeadm_boot::prepare::node_steps(&version, &packages);
    steps.extend(
        kubeadm_boot::bootstrap::init_steps(&plan.cluster, &plan.control_plane.spec).unwrap(),
    );
    steps.push(
        kubeadm_boot::bootstrap::join_step(
            &plan.cluster,
            &plan.workers[0].spec,
            &BootstrapToken::generate(),
            "sha256:0000",
            false,
        )
        .unwrap(),
    );
    let next: Version = "1.33.6".parse().unwrap();
    steps.extend(kubeadm_boot::upgrade::control_plane_steps(&next, &packages));
    steps.extend(kubeadm_boot::upgrade::node_steps(&next, &packages));
    steps.extend(kubeadm_boot::upgrade::kubelet_steps(&next));
    // Preparation from an offline node bundle instead of the package repository.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let names = [
        "bin/kubeadm",
        "bin/kubelet",
        "bin/kubectl",
        "cni/bridge",
        "cni/host-local",
        "cni/loopback",
        "cni/portmap",
    ];
    let files: Vec<(&str, &std::path::Path)> = names.iter().map(|n| (*n, file.as_path())).collect();
    let bundle =
        kubeadm_boot::bundle::NodeBundle::write(&dir.path().join("b"), "v1.33.5", &files).unwrap();
    steps.extend(kubeadm_boot::prepare::node_steps(
        &version,
        &packages.with_bundle(Some(bundle)),
    ));
    steps
}

#[test]
fn every_step_uses_only_what_the_base_image_or_an_earlier_step_provides() {
    let mut available: BTreeSet<String> = DEBOOTSTRAP_DEFAULT
        .iter()
        .chain(RECIPE)
        .flat_map(|(_, programs)| programs.iter().map(|p| (*p).to_owned()))
        .chain(SHELL.iter().map(|s| (*s).to_owned()))
        .collect();
    let mut missing = Vec::new();
    for step in every_step() {
        // A step may look for what it installs (its check fails while it is missing).
        if let Some((_, installed)) = INSTALLED_BY.iter().find(|(name, _)| *name == step.name) {
            available.extend(installed.iter().map(|p| (*p).to_owned()));
        }
        for program in step_programs(&step) {
            if !available.contains(&program) {
                missing.push(format!("step {}: `{program}`", step.name));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "commands the base image does not have (add them to the image recipe, or install them in an earlier step):\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_command_scanner_finds_what_a_line_runs() {
    let found = programs(
        "mkdir -p /etc/apt/keyrings && curl -fsSL https://x/Release.key | gpg --dearmor -o k; DEBIAN_FRONTEND=noninteractive apt-get update -qq && ! grep -q x f && [ \"$(sysctl -n a)\" = 1 ]",
    );
    let want: BTreeSet<String> = ["mkdir", "curl", "gpg", "apt-get", "grep", "[", "sysctl"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, want);
    // The old repository step is what this test exists for: it would be caught.
    assert!(programs("curl -fsSL u | gpg --dearmor").contains("curl"));
}
