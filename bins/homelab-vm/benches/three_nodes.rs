//! Benchmark (not a test): three nodes from nothing to SSH-ready with cloud-init done.
//!
//! A: `homelab-vm apply` (parallel boot and wait). B: the reference way, a sequential
//! script of `qemu-img create` + `cloud-localds` + `virt-install --import` per node, each
//! followed by a wait for SSH — same base image, same sizes, same cloud-init contents, same
//! emulation. Runs alternate A, B, A, B... (`BENCH_RUNS`, default 2). Also times an
//! idempotent re-run of A. Prints every run, the medians and the ratio A/B.
//!
//! Needs root, libvirt (`qemu:///system`), virt-install and cloud-localds, and the base image
//! built by the real-VM suite (or `homelab-vm image build`) in
//! /var/cache/homelab/test-image. Run: `cargo bench -p homelab-vm --bench three_nodes`.
#![allow(clippy::unwrap_used, clippy::format_push_string, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NET: &str = "192.168.215";
const NODES: [(&str, u8, u32, u32); 3] = [
    ("hlb-cp", 10, 2, 1900),
    ("hlb-w1", 11, 1, 1024),
    ("hlb-w2", 12, 1, 1024),
];

fn image_dir() -> PathBuf {
    std::env::var_os("HOMELAB_TEST_IMAGE_DIR").map_or_else(
        || PathBuf::from("/var/cache/homelab/test-image"),
        PathBuf::from,
    )
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn virsh(args: &[&str]) {
    let _ = Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn config(dir: &Path) -> String {
    let mut nodes = String::new();
    for (name, last, vcpus, mem) in NODES {
        let role = if last == 10 {
            "control-plane"
        } else {
            "worker"
        };
        nodes.push_str(&format!(
            "[[nodes]]\nname = \"{name}\"\nrole = \"{role}\"\nvcpus = {vcpus}\nmemory = \"{mem}MiB\"\ndisk = \"10GiB\"\nip = \"{NET}.{last}\"\n\n"
        ));
    }
    format!(
        "[cluster]\nname = \"hlb\"\n\n[ssh]\nuser = \"ops\"\nprivate_key = \"{d}/id_ed25519\"\npublic_key = \"{d}/id_ed25519.pub\"\nknown_hosts = \"{d}/known_hosts\"\n\n\
         [network]\nname = \"hlb\"\nbridge = \"virbr-hlb\"\nnat_cidr = \"{NET}.0/24\"\ngateway = \"{NET}.1\"\nmetallb_range = \"{NET}.100-{NET}.150\"\n\n\
         [network.load_balancer_ips]\ningress = \"{NET}.100\"\nharbor = \"{NET}.101\"\nargocd = \"{NET}.102\"\n\n\
         [libvirt]\npool_name = \"hlb\"\npool_path = \"/var/lib/libvirt/images/hlb\"\nbase_image = \"{img}/base.qcow2\"\n\n{nodes}",
        d = dir.display(),
        img = image_dir().display(),
    )
}

fn homelab_vm(dir: &Path, args: &[&str]) -> Duration {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_homelab-vm"));
    let started = Instant::now();
    run(Command::new(bin)
        .arg("--config")
        .arg(dir.join("homelab.toml"))
        .args(args));
    started.elapsed()
}

fn wait_ssh(dir: &Path, ip: &str) {
    let deadline = Instant::now() + Duration::from_secs(900);
    while Instant::now() < deadline {
        let ok = Command::new("ssh")
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=3",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg("-i")
            .arg(dir.join("id_ed25519"))
            .arg(format!("ops@{ip}"))
            .arg("test -f /var/lib/cloud/instance/boot-finished")
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    panic!("{ip} not ready in 15 minutes");
}

/// The reference: one node after the other with virt-install and cloud-localds.
fn reference(dir: &Path) -> Duration {
    let pool = Path::new("/var/lib/libvirt/images/hlb-ref");
    std::fs::create_dir_all(pool).unwrap();
    let key = std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap();
    let img = image_dir();
    let started = Instant::now();
    for (name, last, vcpus, mem) in NODES {
        let overlay = pool.join(format!("{name}.qcow2"));
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(img.join("base.qcow2"))
            .arg(&overlay)
            .arg("10G"));
        let user_data = dir.join(format!("{name}.user-data"));
        std::fs::write(
            &user_data,
            format!(
                "#cloud-config\nhostname: {name}\nlocale: false\nusers:\n- name: ops\n  sudo: ALL=(ALL) NOPASSWD:ALL\n  shell: /bin/bash\n  ssh_authorized_keys: [\"{}\"]\n",
                key.trim()
            ),
        )
        .unwrap();
        let net = dir.join(format!("{name}.network"));
        std::fs::write(
            &net,
            format!(
                "version: 2\nethernets:\n  eth0:\n    addresses: [{NET}.{last}/24]\n    routes: [{{to: 0.0.0.0/0, via: {NET}.1}}]\n    nameservers: {{addresses: [{NET}.1]}}\n"
            ),
        )
        .unwrap();
        let seed = pool.join(format!("{name}-seed.img"));
        run(Command::new("cloud-localds")
            .arg("--network-config")
            .arg(&net)
            .arg(&seed)
            .arg(&user_data));
        run(Command::new("virt-install")
            .args([
                "--connect",
                "qemu:///system",
                "--import",
                "--noautoconsole",
                "--virt-type",
                "qemu",
                "--osinfo",
                "detect=on,require=off",
            ])
            .args([
                "--name",
                name,
                "--vcpus",
                &vcpus.to_string(),
                "--memory",
                &mem.to_string(),
            ])
            .arg("--disk")
            .arg(format!(
                "path={},format=qcow2,bus=virtio",
                overlay.display()
            ))
            .arg("--disk")
            .arg(format!("path={},format=raw,bus=virtio", seed.display()))
            .args(["--network", "network=hlb-ref,model=virtio"])
            .arg("--boot")
            .arg(format!(
                "kernel={},initrd={},kernel_args=root=/dev/vda rw console=ttyS0 net.ifnames=0",
                img.join("base.qcow2.vmlinuz").display(),
                img.join("base.qcow2.initrd").display()
            ))
            .args(["--graphics", "none"]));
        wait_ssh(dir, &format!("{NET}.{last}"));
    }
    let elapsed = started.elapsed();
    for (name, ..) in NODES {
        virsh(&["destroy", name]);
        virsh(&["undefine", name]);
    }
    let _ = std::fs::remove_dir_all(pool);
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("three_nodes: bench");
        return;
    }
    for tool in ["virt-install", "cloud-localds", "virsh"] {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| !s.success())
        {
            println!(
                "three_nodes: not run: {tool} is not installed (apt-get install virtinst cloud-image-utils libvirt-clients)"
            );
            return;
        }
    }
    homelab_testkit::ensure_libvirtd().unwrap();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(d.join("id_ed25519")));
    std::fs::write(d.join("homelab.toml"), config(d)).unwrap();
    // The reference's network, made outside the timed part.
    virsh(&["net-destroy", "hlb-ref"]);
    virsh(&["net-undefine", "hlb-ref"]);
    let net_xml = d.join("net.xml");
    std::fs::write(&net_xml, format!("<network><name>hlb-ref</name><forward mode='nat'/><bridge name='virbr-hlbref'/><ip address='{NET}.1' netmask='255.255.255.0'/></network>")).unwrap();
    // Both variants use the same addresses, so they run one after the other.
    let _ = homelab_vm(d, &["destroy", "--yes"]);
    // Warm-up: libvirt probes QEMU the first time a domain starts (minutes on some hosts).
    homelab_vm(d, &["apply"]);
    homelab_vm(d, &["destroy", "--yes"]);

    let (mut a, mut b, mut idem) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let t = homelab_vm(d, &["apply"]);
        println!("run {i}: homelab-vm apply        {t:>8.1?}");
        a.push(t);
        let t = homelab_vm(d, &["apply"]);
        println!("run {i}: idempotent re-apply     {t:>8.1?}");
        idem.push(t);
        homelab_vm(d, &["destroy", "--yes"]);

        run(Command::new("virsh")
            .args(["-c", "qemu:///system", "net-create"])
            .arg(&net_xml));
        let t = reference(d);
        println!("run {i}: sequential virt-install {t:>8.1?}");
        b.push(t);
        virsh(&["net-destroy", "hlb-ref"]);
    }
    let (ma, mb, mi) = (median(a), median(b), median(idem));
    println!("median homelab-vm apply:        {ma:.1?}");
    println!("median sequential virt-install: {mb:.1?}");
    println!(
        "ratio (homelab-vm / sequential): {:.2}",
        ma.as_secs_f64() / mb.as_secs_f64()
    );
    println!("median idempotent re-apply:     {mi:.2?}");
}
