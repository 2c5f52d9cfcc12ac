//! A node pulls from the registry through containerd (`platform::node_pull`), against real
//! parts: Debian's `docker-registry` over TLS (a CA made for the test) with a login, a real
//! containerd, and a real OpenSSH server on loopback standing in for the node. containerd's
//! host configuration is what `platform::registry::node_steps` writes, so the check proves
//! the wiring, and fails where the wiring or the login is wrong.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use harbor_client::registry::{Credentials, Options, Registry as Client};
use homelab_testkit::Sshd;
use homelab_testkit::containerd::Containerd;
use homelab_testkit::registry::{Registry, RegistryConfig};
use kubeadm_boot::ssh::{HostKeyPolicy, Pool, SshOptions, Target};
use kubeadm_boot::steps::Runner;
use platform::node_pull::{CONTAINERD_NAMESPACE, NodePull, node_pulls};
use platform::registry::{RegistryWiring, node_steps};

const ROBOT: &str = "robot$homelab+pull";
const SECRET: &str = "robot-secret-1";

fn pool(sshd: &Sshd) -> Arc<Pool> {
    Arc::new(
        Pool::new(SshOptions {
            private_key: sshd.client_key.private_path.clone(),
            known_hosts: sshd.dir().join("known_hosts"),
            policy: HostKeyPolicy::TrustOnFirstUse,
            connect_timeout: Duration::from_secs(10),
            attempts: 3,
        })
        .unwrap(),
    )
}

fn check(registry: &Registry, login: Option<&str>, certs_dir: &str, socket: &str) -> NodePull {
    let client = Client::new(
        &registry.host(),
        Credentials::Basic {
            username: ROBOT.into(),
            password: SECRET.to_owned().into(),
        },
        Options::default().ca_file(registry.ca_file.clone()),
    )
    .unwrap();
    let mut check = NodePull::new(
        client,
        "homelab",
        login.map(|password| (ROBOT.to_owned(), password.to_owned().into())),
    );
    certs_dir.clone_into(&mut check.certs_dir);
    socket.clone_into(&mut check.containerd_socket);
    check.timeout = Duration::from_secs(60);
    check
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_pulls_through_containerd_only_once_wired_and_with_the_right_login() {
    let registry = Registry::start_with(&RegistryConfig {
        user: Some((ROBOT.into(), SECRET.into())),
        tls: true,
        ..RegistryConfig::default()
    })
    .unwrap();
    let containerd = Containerd::start().unwrap();
    let sshd = Sshd::start().unwrap();
    let pool = pool(&sshd);
    let target = Target {
        name: "node0".into(),
        address: sshd.addr.ip().to_string(),
        port: sshd.addr.port(),
        user: sshd.user.clone(),
    };
    let certs = tempfile::tempdir().unwrap();
    let certs_dir = certs.path().display().to_string();
    let socket = containerd.socket.display().to_string();
    let targets = [target.clone()];

    // Not wired yet: containerd does not know the registry's CA (and, the registry being on
    // loopback, falls back to plain HTTP, which the TLS port refuses).
    let err = node_pulls(
        &pool,
        &targets,
        &check(&registry, Some(SECRET), &certs_dir, &socket),
    )
    .await
    .unwrap_err();
    assert!(err.starts_with("node0: ctr exited 1"), "{err}");
    assert!(err.contains("failed to resolve reference"), "{err}");

    // Wired as the platform wires the nodes: the CA and hosts.toml.
    let mut wiring = RegistryWiring::new(
        &format!("https://{}", registry.host()),
        "homelab",
        &["default".into()],
    )
    .unwrap();
    wiring.certs_dir.clone_from(&certs_dir);
    let ca = std::fs::read_to_string(registry.ca_file.as_ref().unwrap()).unwrap();
    let mut runner = Runner::new(pool.clone());
    runner.lock_dir = format!("{}/locks", sshd.dir().display());
    runner
        .run(
            vec![(target.clone(), node_steps(&wiring, Some(&ca)))],
            &|_| {},
        )
        .await
        .unwrap();

    // A wrong login is refused by the registry, and said so.
    let err = node_pulls(
        &pool,
        &targets,
        &check(&registry, Some("not-the-secret"), &certs_dir, &socket),
    )
    .await
    .unwrap_err();
    assert!(err.starts_with("node0: "), "{err}");
    assert!(err.to_lowercase().contains("unauthorized"), "{err}");
    // No login at all: the same.
    let err = node_pulls(
        &pool,
        &targets,
        &check(&registry, None, &certs_dir, &socket),
    )
    .await
    .unwrap_err();
    assert!(err.to_lowercase().contains("unauthorized"), "{err}");

    // The robot's login: pulled, then removed from the node and from the registry.
    let done = node_pulls(
        &pool,
        &targets,
        &check(&registry, Some(SECRET), &certs_dir, &socket),
    )
    .await
    .unwrap();
    assert!(done.starts_with("node0 pulled "), "{done}");
    assert!(
        done.ends_with(&format!("through containerd as {ROBOT}")),
        "{done}"
    );
    assert!(!done.contains(SECRET), "{done}");
    assert_eq!(
        containerd.images(CONTAINERD_NAMESPACE).unwrap(),
        Vec::<String>::new()
    );
    let client = check(&registry, None, &certs_dir, &socket).registry;
    let tags = client.tags("homelab/homelab-verify", 100).await.unwrap();
    assert!(tags.is_empty(), "the probe stayed: {tags:?}");
    // The password went on standard input, never on the command line sshd ran.
    assert!(
        sshd.commands().iter().all(|c| !c.contains(SECRET)),
        "{:?}",
        sshd.commands()
    );
}
