//! Real VMs under `qemu:///system` (software emulation on machines whose KVM cannot run
//! guests): the `homelab-vm` binary builds or reuses the base image, boots three nodes on a
//! private NAT network, and the suite logs in with OpenSSH to check each node's host name,
//! static address and key; re-applies (no change), kills the tool mid-apply and re-applies
//! (converges), destroys, and checks nothing is left.
//!
//! Needs root, libvirt, qemu and debootstrap (scripts/deps.sh installs them) and takes
//! minutes, so it is `#[ignore]`d in quick runs; `make test` (and CI) run it.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::Instant;

use assert_cmd::Command;

const NET: &str = "192.168.214";

fn image_dir() -> PathBuf {
    std::env::var_os("HOMELAB_TEST_IMAGE_DIR").map_or_else(
        || PathBuf::from("/var/cache/homelab/test-image"),
        PathBuf::from,
    )
}

fn config(dir: &Path) -> String {
    format!(
        r#"[cluster]
name = "hlit"
kubeconfig = "{dir}/kubeconfig"

[ssh]
user = "ops"
private_key = "{dir}/id_ed25519"
public_key = "{dir}/id_ed25519.pub"
known_hosts = "{dir}/known_hosts"

[network]
name = "hlit"
bridge = "virbr-hlit"
nat_cidr = "{NET}.0/24"
gateway = "{NET}.1"
metallb_range = "{NET}.100-{NET}.150"

[network.load_balancer_ips]
ingress = "{NET}.100"
harbor = "{NET}.101"
argocd = "{NET}.102"

[libvirt]
pool_name = "hlit"
pool_path = "/var/lib/libvirt/images/hlit"
base_image = "{image}/base.qcow2"
domain_type = "auto"

[phases.vms]
timeout = "15m"

[[nodes]]
name = "hlit-cp"
role = "control-plane"
vcpus = 2
memory = "2GiB"
disk = "10GiB"
ip = "{NET}.10"

[[nodes]]
name = "hlit-w1"
vcpus = 1
memory = "1GiB"
disk = "10GiB"
ip = "{NET}.11"

[[nodes]]
name = "hlit-w2"
vcpus = 1
memory = "1GiB"
disk = "10GiB"
ip = "{NET}.12"
"#,
        dir = dir.display(),
        image = image_dir().display(),
    )
}

fn homelab_vm(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("homelab-vm").unwrap();
    cmd.arg("--config")
        .arg(dir.join("homelab.toml"))
        .env_remove("HOMELAB_CONFIG");
    cmd
}

fn ssh(dir: &Path, ip: &str, command: &str) -> String {
    let out = StdCommand::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=10",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            dir.join("known_hosts").display()
        ))
        .arg("-i")
        .arg(dir.join("id_ed25519"))
        .arg(format!("ops@{ip}"))
        .arg(command)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh {ip} {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs virsh against `qemu:///system`; returns its exit status and standard output.
fn virsh_status(args: &[&str]) -> (bool, String, String) {
    let out = StdCommand::new("virsh")
        .arg("-c")
        .arg("qemu:///system")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs virsh and fails the test when virsh fails: an empty listing from a virsh that could
/// not connect must not pass for "nothing left".
fn virsh(args: &[&str]) -> String {
    let (ok, stdout, stderr) = virsh_status(args);
    assert!(ok, "virsh {}: {stderr}", args.join(" "));
    stdout
}

fn check_nodes(dir: &Path) {
    let key = std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap();
    for (name, last) in [("hlit-cp", 10), ("hlit-w1", 11), ("hlit-w2", 12)] {
        let ip = format!("{NET}.{last}");
        let out = ssh(
            dir,
            &ip,
            "hostname; ip -4 -o addr show dev eth0; cat ~/.ssh/authorized_keys; sudo -n true && echo sudo-ok",
        );
        assert!(out.starts_with(&format!("{name}\n")), "{name}: {out}");
        assert!(out.contains(&format!("inet {ip}/24")), "{name}: {out}");
        assert!(
            out.contains(key.split_whitespace().nth(1).unwrap()),
            "{name}: {out}"
        );
        assert!(out.contains("sudo-ok"), "{name}: {out}");
    }
}

/// The nodes as the pipeline's `nodes` phase left them, checked with OpenSSH: swap off,
/// modules, sysctls, containerd with its TOML configuration, the Kubernetes packages from the
/// stand-in repository (signed by a throwaway key whose fingerprint is pinned, the key fetched
/// by the host), held. The steps run again change nothing; then the upgrade's package step
/// moves one node to the next patch release, and preparation refuses to move the others.
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn prepared_nodes(dir: &Path, repo: &homelab_testkit::apt_repo::AptRepo) {
    use kubeadm_boot::kubeadm::Version;
    use kubeadm_boot::prepare::{PackageSource, node_steps};
    use kubeadm_boot::ssh::{HostKeyPolicy, Pool, SshOptions, Target};
    use kubeadm_boot::steps::{Outcome, Runner, Step};
    use std::sync::Arc;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let version: Version = "1.33.5".parse().unwrap();
    let mut source = PackageSource::new(&repo.base_url, &repo.fingerprint);
    runtime
        .block_on(source.fetch_key(&reqwest::Client::new(), &version))
        .unwrap();
    let steps = node_steps(&version, &source);
    let nodes = [("hlit-cp", 10), ("hlit-w1", 11), ("hlit-w2", 12)];
    let target = |name: &str, last: u8| Target {
        name: name.into(),
        address: format!("{NET}.{last}"),
        port: 22,
        user: "ops".into(),
    };
    let run = |work: Vec<(Target, Vec<Step>)>, dry_run: bool| {
        runtime.block_on(async {
            let pool = Pool::new(SshOptions {
                private_key: dir.join("id_ed25519"),
                known_hosts: dir.join("known_hosts"),
                policy: HostKeyPolicy::Strict,
                connect_timeout: std::time::Duration::from_secs(20),
                attempts: 3,
            })
            .unwrap();
            let mut runner = Runner::new(Arc::new(pool));
            runner.dry_run = dry_run;
            runner
                .run(
                    work,
                    Arc::new(|e| {
                        if let kubeadm_boot::steps::Event::Done(r) = e {
                            eprintln!("[{}] {} {:?} ({} ms)", r.host, r.step, r.outcome, r.millis);
                        }
                    }),
                )
                .await
        })
    };
    let everywhere = |steps: &[Step]| -> Vec<(Target, Vec<Step>)> {
        nodes
            .iter()
            .map(|(name, last)| (target(name, *last), steps.to_vec()))
            .collect()
    };
    for (_, last) in nodes {
        let out = ssh(
            dir,
            &format!("{NET}.{last}"),
            "lsmod | cut -d' ' -f1 | grep -xE 'overlay|br_netfilter' | sort | tr '\\n' ' '; \
             sudo -n sysctl -n net.bridge.bridge-nf-call-iptables net.ipv4.ip_forward | tr '\\n' ' '; \
             sudo -n systemctl is-active containerd; sudo -n swapon --show --noheadings | wc -l; \
             grep -c 'SystemdCgroup = true' /etc/containerd/config.toml; \
             sudo -n ctr version >/dev/null && echo ctr-ok; \
             kubeadm version -o short; apt-mark showhold | sort | tr '\\n' ' '; echo; \
             sudo -n systemctl is-enabled kubelet; command -v curl gpg || echo no-curl-no-gpg",
        );
        assert_eq!(
            out,
            "br_netfilter overlay 1 1 active\n0\n1\nctr-ok\nv1.33.5\nkubeadm kubectl kubelet \nenabled\nno-curl-no-gpg\n",
            "node .{last}"
        );
    }
    let second = run(everywhere(&steps), false).unwrap_or_else(|e| panic!("{e}"));
    let changed: Vec<_> = second
        .iter()
        .filter(|r| r.outcome != Outcome::Unchanged)
        .collect();
    assert!(changed.is_empty(), "a re-run changed: {changed:#?}");
    assert_eq!(second.len(), 3 * steps.len());
    let dry = run(everywhere(&steps), true).unwrap_or_else(|e| panic!("{e}"));
    assert!(dry.iter().all(|r| r.outcome == Outcome::Unchanged));

    // The upgrade's package step moves the control plane to the next patch release (the
    // package lists refreshed first, the package held again)...
    let next: Version = "1.33.6".parse().unwrap();
    let upgrade: Vec<Step> = kubeadm_boot::upgrade::node_steps(&next, &source)
        .into_iter()
        .filter(|s| s.name != "kubeadm-upgrade-node")
        .collect();
    let moved =
        run(vec![(target("hlit-cp", 10), upgrade)], false).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        moved
            .iter()
            .any(|r| r.step == "kubeadm-package" && r.outcome == Outcome::Changed)
    );
    assert_eq!(
        ssh(
            dir,
            &format!("{NET}.10"),
            "kubeadm version -o short; apt-mark showhold | grep -cx kubeadm"
        ),
        "v1.33.6\n1\n"
    );
    // ...while preparation at that release refuses to move a node: only upgrade does.
    let refused = run(everywhere(&node_steps(&next, &source)), false).unwrap_err();
    let text = refused.to_string();
    assert!(
        text.contains("hlit-w1") && text.contains("run homelab upgrade"),
        "{text}"
    );
    assert_eq!(
        ssh(dir, &format!("{NET}.11"), "kubeadm version -o short"),
        "v1.33.5\n"
    );
}

/// `homelab status` and `verify` through the library on the real VMs: every node up; then
/// one VM stopped and another node's SSH down: each is reported, nothing hangs; then
/// `up --only vms` brings both back.
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn status_and_verify(dir: &Path) {
    use homelab::{Lab, Pipeline, Selection, Status};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lab = Lab::load(Some(&dir.join("homelab.toml"))).unwrap();
    let pipeline = Pipeline::for_lab(&lab);
    let vms = |status: &Status| -> Vec<(String, String, bool)> {
        status.phases[0]
            .items
            .iter()
            .map(|i| (i.name.clone(), i.state.clone(), i.healthy))
            .collect()
    };
    let status = Status::of(runtime.block_on(pipeline.status(&lab)));
    eprintln!("status, all up: {status:#?}");
    assert!(status.phases[0].healthy(), "{status:#?}");
    assert!(
        status.phases[0]
            .items
            .iter()
            .all(|i| i.detail.ends_with("ssh: ok")),
        "{status:#?}"
    );
    // Nodes not prepared and no cluster yet: reported as such, and the whole is not healthy.
    assert!(!status.healthy);
    assert!(
        status.phases[1]
            .items
            .iter()
            .all(|i| i.state.starts_with("not prepared (missing ") && !i.healthy),
        "{status:#?}"
    );
    let cluster = status.phases[2].error.clone().unwrap_or_default();
    assert!(cluster.contains("kubeconfig"), "{cluster}");
    let checks = runtime.block_on(pipeline.verify(&lab));
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.phase == "vms" && !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");

    // One VM stopped, and sshd stopped on another node.
    virsh(&["destroy", "hlit-w1"]);
    ssh(
        dir,
        &format!("{NET}.12"),
        "sudo -n systemctl stop ssh.socket ssh.service; true",
    );
    let started = Instant::now();
    let status = Status::of(runtime.block_on(pipeline.status(&lab)));
    let took = started.elapsed();
    eprintln!("status with a VM stopped and SSH down ({took:.1?}): {status:#?}");
    assert!(
        took < homelab::vms::PROBE_TIMEOUT * 3,
        "status took {took:?} with a node down"
    );
    assert_eq!(
        vms(&status),
        [
            ("hlit-cp".to_owned(), "running".to_owned(), true),
            ("hlit-w1".to_owned(), "shut off".to_owned(), false),
            ("hlit-w2".to_owned(), "running".to_owned(), false),
        ]
    );
    let w2 = &status.phases[0].items[2].detail;
    assert!(w2.contains("ssh: no answer on the SSH port"), "{w2}");
    // The nodes phase does not wait for the SSH of a VM libvirt says is off.
    assert_eq!(
        status.phases[1].items[1].state, "VM shut off",
        "{status:#?}"
    );
    let checks = runtime.block_on(pipeline.verify(&lab));
    let failed: Vec<(String, String)> = checks
        .iter()
        .filter(|c| c.phase == "vms" && !c.passed)
        .map(|c| (c.name.clone(), c.fix.clone().unwrap_or_default()))
        .collect();
    let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["vm hlit-w1", "ssh hlit-w1", "ssh hlit-w2"],
        "{failed:#?}"
    );
    assert!(failed[0].1.contains("homelab up --only vms"), "{failed:#?}");

    // Both back through the library's up: w2 restarted (its sshd starts at boot), w1 started.
    virsh(&["destroy", "hlit-w2"]);
    let events = |e: homelab::Event| eprintln!("(up) {e}");
    let only_vms = Selection {
        only: Some("vms".into()),
        ..Selection::default()
    };
    let plans = runtime.block_on(pipeline.plan(&lab, &only_vms)).unwrap();
    let starts: Vec<&str> = plans[0].changes.iter().map(|c| c.object.as_str()).collect();
    assert_eq!(starts, ["domain hlit-w1", "domain hlit-w2"], "{}", plans[0]);
    let reports = runtime
        .block_on(pipeline.up(&lab, &only_vms, &events))
        .unwrap();
    assert_eq!(reports[0].changed, 2);
    let status = Status::of(runtime.block_on(pipeline.status(&lab)));
    assert!(status.phases[0].healthy(), "{status:#?}");
    check_nodes(dir);
}

/// The lab's configuration with node preparation pointed at the stand-in repository.
fn config_with_packages(dir: &Path, repo: &homelab_testkit::apt_repo::AptRepo) -> String {
    format!(
        "{}\n[packages]\nrepository = \"{}\"\nkey_fingerprint = \"{}\"\n",
        config(dir),
        repo.base_url,
        repo.fingerprint
    )
}

/// The node-preparation steps every fresh node needs.
const PREPARATION: [&str; 9] = [
    "containerd-installed",
    "kubernetes-prerequisites",
    "containerd-config",
    "modules-persistent",
    "sysctl",
    "kubernetes-key",
    "kubernetes-repository",
    "kubernetes-packages",
    "kubelet-enabled",
];

/// `up --until nodes` through the library (in a process of its own, the `up` example of the
/// homelab crate, so that it can be killed) killed at four points proptest chooses: two while it
/// plans or re-creates a node in the vms phase (each time with a node to re-create), and two
/// in the nodes phase on fresh nodes (apt and dpkg at work); each event log shows where. Then run again
/// in this process: it converges (a node killed inside dpkg is finished), leaves a foreign
/// volume in the pool alone, and a further run changes nothing.
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn kill_points(dir: &Path) {
    use homelab::{Lab, Pipeline, Selection};
    use proptest::strategy::{Strategy, ValueTree};
    use std::time::Duration;

    let built = StdCommand::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "homelab", "--example", "up"])
        .status()
        .unwrap();
    assert!(built.success(), "cargo build --example up");
    let up = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples/up");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lab = Lab::load(Some(&dir.join("homelab.toml"))).unwrap();
    let pipeline = Pipeline::for_lab(&lab);
    let until_nodes = Selection {
        until: Some("nodes".into()),
        ..Selection::default()
    };

    // Fresh nodes: the plan lists every preparation step on every node.
    let plans = runtime.block_on(pipeline.plan(&lab, &until_nodes)).unwrap();
    assert!(plans[0].is_noop(), "{}", plans[0]);
    for node in ["hlit-cp", "hlit-w1", "hlit-w2"] {
        for step in PREPARATION {
            let object = format!("{node}: {step}");
            assert!(
                plans[1].changes.iter().any(|c| c.object == object),
                "the plan lacks {object}:\n{}",
                plans[1]
            );
        }
    }

    // Something in the pool that homelab did not make (an aborted run may have left it).
    let _ = virsh_status(&["vol-delete", "--pool", "hlit", "foreign.img"]);
    virsh(&["vol-create-as", "hlit", "foreign.img", "1M"]);
    let mut runner = proptest::test_runner::TestRunner::default();
    // The first two from the start of the run (the vms phase re-creates a node), the last two
    // from the moment the run reaches node preparation (how long it plans before that
    // depends on how busy the emulated nodes are: 25 s was seen not to be enough).
    let delays = (
        1_000u64..6_000,
        6_000u64..25_000,
        1_000u64..15_000,
        3_000u64..25_000,
    )
        .new_tree(&mut runner)
        .unwrap()
        .current();
    let log = dir.join("killed-up.log");
    let only_vms = Selection {
        only: Some("vms".into()),
        ..Selection::default()
    };
    for (delay, in_vms) in [
        (delays.0, true),
        (delays.1, true),
        (delays.2, false),
        (delays.3, false),
    ] {
        if in_vms {
            // A node to re-create, so that the run has work to do in the vms phase.
            let _ = virsh_status(&["destroy", "hlit-w2"]);
            let _ = virsh_status(&["undefine", "hlit-w2"]);
        } else {
            // Every VM up first, so that the run reaches node preparation at once.
            runtime
                .block_on(pipeline.up(&lab, &only_vms, &|_| {}))
                .unwrap();
        }
        let mut child = StdCommand::new(&up)
            .arg(dir.join("homelab.toml"))
            .args(["--until", "nodes"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        if !in_vms {
            // Until the run's log shows node preparation (or the run ends).
            let since = Instant::now();
            while !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("== nodes")
                && child.try_wait().unwrap().is_none()
            {
                assert!(
                    since.elapsed() < Duration::from_secs(600),
                    "the run did not reach node preparation in 10 minutes"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        std::thread::sleep(Duration::from_millis(delay));
        let finished = child.try_wait().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let events = std::fs::read_to_string(&log).unwrap();
        let last = events.lines().last().unwrap_or("(still planning)");
        eprintln!(
            "kill point {delay} ms: {}; last event: {last}",
            finished.map_or_else(
                || "killed mid-run".to_owned(),
                |s| format!("had already finished ({s})")
            )
        );
        assert!(
            finished.is_none(),
            "kill point {delay} ms came after the run:\n{events}"
        );
        if !in_vms {
            // Meant for node preparation: the run got there and was stopped in it.
            assert!(
                events.contains("== nodes"),
                "kill point {delay} ms did not reach node preparation:\n{events}"
            );
        }
    }
    let started = Instant::now();
    let reports = runtime
        .block_on(pipeline.up(&lab, &until_nodes, &|e| eprintln!("(re-run) {e}")))
        .unwrap();
    eprintln!(
        "re-run after the kills: {:.0?} ({} + {} changed)",
        started.elapsed(),
        reports[0].changed,
        reports[1].changed
    );
    check_nodes(dir);
    let again = runtime.block_on(pipeline.plan(&lab, &until_nodes)).unwrap();
    for plan in &again {
        assert!(plan.is_noop(), "a further run would change: {plan}");
    }
    let reports = runtime
        .block_on(pipeline.up(&lab, &until_nodes, &|_| {}))
        .unwrap();
    assert_eq!(
        reports.iter().map(|r| r.changed).collect::<Vec<_>>(),
        [0, 0]
    );
    // Every node reports prepared at the configured version.
    let status = homelab::Status::of(runtime.block_on(pipeline.status(&lab)));
    let nodes: Vec<(&str, &str)> = status.phases[1]
        .items
        .iter()
        .map(|i| (i.name.as_str(), i.state.as_str()))
        .collect();
    assert_eq!(
        nodes,
        [
            ("hlit-cp", "prepared"),
            ("hlit-w1", "prepared"),
            ("hlit-w2", "prepared")
        ],
        "{status:#?}"
    );
    // The foreign volume is untouched, then removed by the test.
    virsh(&["vol-info", "--pool", "hlit", "foreign.img"]);
    virsh(&["vol-delete", "--pool", "hlit", "foreign.img"]);
}

/// The lab's configuration for a cluster from the offline node bundle: kubeadm, kubelet,
/// kubectl and the CNI plugins uploaded from `bundle`, and every image of `registry.k8s.io`
/// and `ghcr.io` pulled from `mirror` (a registry on the VMs' network).
fn config_with_bundle(dir: &Path, bundle: &Path, mirror: &str) -> String {
    format!(
        "{}\n[phases.cluster]\ntimeout = \"40m\"\n\n[packages]\nbundle = \"{}\"\n\n[packages.mirrors]\n\"registry.k8s.io\" = \"http://{mirror}\"\n\"ghcr.io\" = \"http://{mirror}\"\n",
        config(dir),
        bundle.display()
    )
}

/// This machine's Debian mirror serves a fixed snapshot whose Release files are past their
/// Valid-Until date; the host's apt is configured for that, and so must the nodes' be.
fn apt_valid_until_workaround(dir: &Path) {
    if let Ok(conf) = std::fs::read_to_string("/etc/apt/apt.conf.d/99artifact-registry") {
        for last in [10, 11, 12] {
            ssh(
                dir,
                &format!("{NET}.{last}"),
                &format!(
                    "printf '%s' '{conf}' | sudo -n tee /etc/apt/apt.conf.d/99artifact-registry >/dev/null"
                ),
            );
        }
    }
}

/// From nothing to a Kubernetes cluster with every node `Ready`, through the pipeline
/// (vms → nodes → cluster) as `homelab up` runs it, offline: kubeadm, kubelet, kubectl, the
/// CNI plugins and every image built from their Go modules at the pinned versions
/// (`scripts/node-bundle.sh`), the images pushed by the nodes phase to a registry on the VMs'
/// network that containerd on every node uses as the mirror of registry.k8s.io and ghcr.io.
/// Then `status` and `verify` report the cluster healthy, a re-run changes nothing, and
/// `destroy` removes it.
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn ready_cluster(dir: &Path) {
    use homelab::{Lab, Pipeline, Selection, Status};
    let started = Instant::now();
    let bundle = dir.join("bundle");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/node-bundle.sh");
    let made = StdCommand::new("bash")
        .arg(&script)
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(made.success(), "{} failed", script.display());
    eprintln!("node bundle: {:.0?}", started.elapsed());
    // The VMs' network (and so its gateway address, where the registry listens) exists only
    // once the vms phase ran.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    std::fs::write(dir.join("homelab.toml"), config(dir)).unwrap();
    let lab = Lab::load(Some(&dir.join("homelab.toml"))).unwrap();
    let until_vms = Selection {
        until: Some("vms".into()),
        ..Selection::default()
    };
    let started = Instant::now();
    runtime
        .block_on(Pipeline::for_lab(&lab).up(&lab, &until_vms, &|e| eprintln!("{e}")))
        .unwrap();
    eprintln!("vms: {:.0?}", started.elapsed());
    apt_valid_until_workaround(dir);
    let registry = homelab_testkit::registry::Registry::start_with(
        &homelab_testkit::registry::RegistryConfig {
            address: Some(format!("{NET}.1").parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::write(
        dir.join("homelab.toml"),
        config_with_bundle(dir, &bundle, &registry.host()),
    )
    .unwrap();
    let lab = Lab::load(Some(&dir.join("homelab.toml"))).unwrap();
    let pipeline = Pipeline::for_lab(&lab);

    // The plan names the bundle's files and the images the mirror lacks.
    let plans = runtime
        .block_on(pipeline.plan(&lab, &Selection::all()))
        .unwrap();
    let nodes_plan = plans.iter().find(|p| p.phase == "nodes").unwrap();
    for object in [
        "hlit-w1: bundle-bin-kubelet",
        "image registry.k8s.io/kube-apiserver:v1.33.5",
        "image ghcr.io/flannel-io/flannel:v0.27.4",
    ] {
        assert!(
            nodes_plan.changes.iter().any(|c| c.object == object),
            "the plan lacks {object}:\n{nodes_plan}"
        );
    }

    // Up: every node prepared from the bundle, kubeadm init and joins, Flannel, all Ready.
    let started = Instant::now();
    let reports = runtime
        .block_on(pipeline.up(&lab, &Selection::all(), &|e| eprintln!("{e}")))
        .unwrap_or_else(|e| panic!("homelab up: {e}\nregistry log:\n{}", registry.log()));
    eprintln!(
        "homelab up from the bundle to Ready: {:.0?} ({})",
        started.elapsed(),
        reports
            .iter()
            .map(|r| format!("{} {} changed", r.phase, r.changed))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // kubectl (built from the same module) sees three Ready nodes at the pinned version.
    let kubectl = Path::new(&std::env::var("HOMELAB_KUBE_BIN").unwrap_or_else(|_| {
        String::from_utf8(
            StdCommand::new("bash")
                .arg(script.with_file_name("kube-tools.sh"))
                .arg("--dir")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_owned()
    }))
    .join("kubectl");
    let nodes = StdCommand::new(&kubectl)
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .args(["get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.nodeInfo.kubeletVersion} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"])
        .output()
        .unwrap();
    let nodes = String::from_utf8_lossy(&nodes.stdout).into_owned();
    for node in ["hlit-cp", "hlit-w1", "hlit-w2"] {
        assert!(
            nodes.lines().any(|l| l == format!("{node} v1.33.5 True")),
            "{node} is not Ready at v1.33.5:\n{nodes}"
        );
    }
    let pods = StdCommand::new(&kubectl)
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .args(["get", "pods", "-A", "-o", "wide"])
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&pods.stdout));

    // Status and verify: every phase healthy (nodes busy under emulation still log in).
    let started = Instant::now();
    let status = Status::of(runtime.block_on(pipeline.status(&lab)));
    eprintln!("status of the running cluster: {:.1?}", started.elapsed());
    assert!(status.healthy, "{status:#?}");
    let cluster = status.phases.iter().find(|p| p.phase == "cluster").unwrap();
    assert_eq!(
        cluster.items.iter().filter(|i| i.state == "Ready").count(),
        3,
        "{cluster:#?}"
    );
    let checks = runtime.block_on(pipeline.verify(&lab));
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{} {}: {}", c.phase, c.name, c.detail))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(checks.iter().any(|c| c.phase == "cluster"), "{checks:#?}");

    // A re-run changes nothing: no image pushed again, no step run, no object applied.
    let started = Instant::now();
    let plans = runtime
        .block_on(pipeline.plan(&lab, &Selection::all()))
        .unwrap();
    assert!(plans.iter().all(homelab::PhasePlan::is_noop), "{plans:#?}");
    let reports = runtime
        .block_on(pipeline.up(&lab, &Selection::all(), &|e| eprintln!("(re-run) {e}")))
        .unwrap();
    assert!(
        reports.iter().all(|r| r.changed == 0),
        "the re-run changed something: {reports:?}"
    );
    eprintln!("re-run: {:.0?}", started.elapsed());

    // Destroy leaves nothing of this cluster behind.
    runtime
        .block_on(homelab::vms::destroy(&lab, &|e| eprintln!("{e}")))
        .unwrap();
    let domains = virsh(&["list", "--all", "--name"]);
    assert!(!domains.contains("hlit-"), "{domains}");
    drop(registry);
}

#[test]
#[ignore = "boots real VMs under qemu:///system (root, several minutes); `make test` runs it"]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn real_vms_apply_reapply_interrupt_destroy() {
    homelab_testkit::ensure_libvirtd().unwrap();
    // HOMELAB_TEST_KEEP=1 keeps the keys and known_hosts, to log in after a failure.
    let dir = tempfile::Builder::new()
        .prefix("hlit-")
        .disable_cleanup(std::env::var_os("HOMELAB_TEST_KEEP").is_some())
        .tempdir()
        .unwrap();
    let d = dir.path();
    eprintln!("test directory: {}", d.display());
    let keygen = StdCommand::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "hlit", "-f"])
        .arg(d.join("id_ed25519"))
        .status()
        .unwrap();
    assert!(keygen.success());
    std::fs::write(d.join("homelab.toml"), config(d)).unwrap();
    // Leftovers of an earlier, aborted run of this suite.
    let _ = homelab_vm(d).args(["destroy", "--yes"]).output();

    homelab_vm(d).arg("preflight").assert().success();

    // 1. From nothing to three SSH-ready nodes.
    let started = Instant::now();
    let out = homelab_vm(d).arg("apply").assert().success();
    eprintln!(
        "apply: {:.0?}\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&out.get_output().stderr)
    );
    check_nodes(d);

    // 2. A re-run changes nothing.
    let plan = homelab_vm(d).arg("plan").assert().success();
    let plan = String::from_utf8(plan.get_output().stdout.clone()).unwrap();
    assert!(plan.trim_end().ends_with("plan: 11 unchanged"), "{plan}");
    let started = Instant::now();
    homelab_vm(d)
        .arg("apply")
        .assert()
        .success()
        .stdout(predicates::str::contains("(0 changes)"));
    eprintln!("idempotent re-apply: {:.1?}", started.elapsed());

    // 3. Status and verify through the library, with every node up, then with one VM
    // stopped and one node's SSH down.
    status_and_verify(d);

    // 4. Node preparation through the pipeline, from a stand-in of the Kubernetes package
    // repository served on the VMs' network, killed at four points, then converging.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let repo = runtime
        .block_on(homelab_testkit::apt_repo::AptRepo::start(
            format!("{NET}.1").parse().unwrap(),
            &["1.33.5", "1.33.6"],
        ))
        .unwrap();
    eprintln!(
        "stand-in package repository: {} (key {})",
        repo.base_url, repo.fingerprint
    );
    std::fs::write(d.join("homelab.toml"), config_with_packages(d, &repo)).unwrap();
    apt_valid_until_workaround(d);
    let started = Instant::now();
    kill_points(d);
    eprintln!(
        "node preparation with four kills and the re-run: {:.0?}",
        started.elapsed()
    );
    prepared_nodes(d, &repo);

    // 5. A node lost, the tool killed while re-creating it, then run again: converges.
    virsh(&["destroy", "hlit-w2"]);
    virsh(&["undefine", "hlit-w2"]);
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("homelab-vm"))
        .arg("--config")
        .arg(d.join("homelab.toml"))
        .arg("apply")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        eprintln!("(to be killed) {line}");
        if line.contains("volume hlit-w2.qcow2") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The kill landed before apply finished: the node's domain is still missing, and the plan
    // (read from libvirt, no state file) still has to create it.
    let (defined, _, _) = virsh_status(&["dominfo", "hlit-w2"]);
    assert!(
        !defined,
        "the kill came too late: hlit-w2 was already defined, so nothing was interrupted"
    );
    let plan = homelab_vm(d).arg("plan").assert().success();
    let plan = String::from_utf8(plan.get_output().stdout.clone()).unwrap();
    assert!(
        plan.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["create", "domain", "hlit-w2"]),
        "after the kill:\n{plan}"
    );
    homelab_vm(d).arg("apply").assert().success();
    check_nodes(d);
    homelab_vm(d)
        .arg("plan")
        .assert()
        .success()
        .stdout(predicates::str::contains("plan: 11 unchanged"));

    // 6. Destroy leaves nothing of this cluster behind.
    homelab_vm(d).args(["destroy", "--yes"]).assert().success();
    let domains = virsh(&["list", "--all", "--name"]);
    assert!(!domains.contains("hlit-"), "{domains}");
    assert!(
        !virsh(&["net-list", "--all", "--name"])
            .lines()
            .any(|l| l.trim() == "hlit")
    );
    assert!(
        !virsh(&["pool-list", "--all", "--name"])
            .lines()
            .any(|l| l.trim() == "hlit")
    );
    let left: Vec<_> = std::fs::read_dir("/var/lib/libvirt/images/hlit")
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "files left in the pool directory: {left:?}"
    );
    homelab_vm(d)
        .args(["destroy", "--yes"])
        .assert()
        .success()
        .stdout(predicates::str::contains("nothing of cluster hlit"));

    // 7. From nothing to a cluster with every node Ready, offline, through the pipeline.
    let started = Instant::now();
    ready_cluster(d);
    eprintln!("cluster scenario: {:.0?}", started.elapsed());
}
