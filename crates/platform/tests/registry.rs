//! The registry on the nodes (`platform::registry`) against the Harbor contract fake, a real
//! API server (or the cluster `KUBECONFIG` names) and two real OpenSSH servers on loopback
//! standing in for the nodes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use harbor_client::harbor::{Harbor, HarborOptions, RobotCreate, repository_access};
use homelab_testkit::Sshd;
use homelab_testkit::control_plane::{cluster, namespace};
use homelab_testkit::harbor_fake::{ADMIN, HarborFake};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kubeadm_boot::ssh::{HostKeyPolicy, Pool, SshOptions, Target};
use kubeadm_boot::steps::{Outcome, Runner};
use platform::registry::{CaSource, RegistryWiring, RobotChange, wire};

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBhomelabCA\n-----END CERTIFICATE-----\n";

fn harbor(fake: &HarborFake) -> Harbor {
    Harbor::new(
        &fake.url,
        ADMIN.0,
        ADMIN.1.to_owned().into(),
        &HarborOptions::default().plain_http(true),
    )
    .unwrap()
}

/// Two nodes (OpenSSH servers on loopback sharing this machine's filesystem, each with its
/// own lock) and a runner that reaches both with the first one's key.
fn nodes() -> (Vec<Sshd>, Runner, Vec<Target>) {
    let servers: Vec<Sshd> = (0..2).map(|_| Sshd::start().unwrap()).collect();
    std::fs::write(
        servers[1].dir().join("authorized_keys"),
        format!("{}\n", servers[0].client_key.public),
    )
    .unwrap();
    let options = SshOptions {
        private_key: servers[0].client_key.private_path.clone(),
        known_hosts: servers[0].dir().join("known_hosts"),
        policy: HostKeyPolicy::TrustOnFirstUse,
        connect_timeout: Duration::from_secs(10),
        attempts: 3,
    };
    let mut runner = Runner::new(Arc::new(Pool::new(options).unwrap()));
    runner.lock_dir = format!("{}/locks/{{host}}", servers[0].dir().display());
    let targets = servers
        .iter()
        .enumerate()
        .map(|(i, s)| Target {
            name: format!("node{i}"),
            address: s.addr.ip().to_string(),
            port: s.addr.port(),
            user: s.user.clone(),
        })
        .collect();
    (servers, runner, targets)
}

async fn ca_secret(client: &Client, ns: &str) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("homelab-ca".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("ca.crt".to_owned(), ByteString(CA.as_bytes().to_vec())),
            ("tls.crt".to_owned(), ByteString(CA.as_bytes().to_vec())),
            (
                "tls.key".to_owned(),
                ByteString(b"not for the nodes".to_vec()),
            ),
        ])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &secret).await.unwrap();
}

/// The login the pull Secret of `ns` holds for `registry`: (user name, password).
async fn login(client: &Client, ns: &str, registry: &str) -> Option<(String, String)> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = api.get_opt("harbor-pull").await.unwrap()?;
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let config: serde_json::Value =
        serde_json::from_slice(&secret.data.unwrap()[".dockerconfigjson"].0).unwrap();
    let entry = &config["auths"][registry];
    Some((
        entry["username"].as_str()?.to_owned(),
        entry["password"].as_str()?.to_owned(),
    ))
}

fn writes(log: &[String]) -> Vec<&String> {
    log.iter().filter(|l| !l.starts_with("GET ")).collect()
}

#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn harbor_the_secrets_and_the_nodes_are_wired_once_and_a_lost_secret_renews_the_robot() {
    let (client, _plane) = cluster().await.unwrap();
    let fake = HarborFake::start().await;
    let harbor = harbor(&fake);
    let (servers, runner, targets) = nodes();
    let ca_ns = namespace(&client, "ca").await.unwrap();
    ca_secret(&client, &ca_ns).await;
    // The namespaces that pull: they do not exist yet.
    let suffix = ca_ns.trim_start_matches("ca-");
    let pulling = vec![format!("apps-{suffix}"), format!("ci-{suffix}")];
    let mut wiring =
        RegistryWiring::new("https://harbor.lab.test:8443", "homelab", &pulling).unwrap();
    wiring.ca = CaSource::Secret {
        namespace: ca_ns.clone(),
        name: "homelab-ca".into(),
    };
    let certs = servers[0].dir().join("certs.d");
    wiring.certs_dir = certs.display().to_string();
    // The nodes' hosts file: a stale line for Harbor's host is replaced, others kept.
    let hosts = servers[0].dir().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n10.0.0.9 harbor.lab.test\n").unwrap();
    wiring.hosts_file = hosts.display().to_string();
    wiring.address = Some("192.168.122.101".parse().unwrap());

    // A dry run changes nothing anywhere and says what would be done.
    let mut dry = runner.clone();
    dry.dry_run = true;
    let planned = wire(&harbor, &client, &dry, &targets, &wiring)
        .await
        .unwrap();
    assert!(planned.access.project_created);
    assert_eq!(planned.access.robot, RobotChange::Created);
    assert_eq!(planned.access.robot_name, "robot$homelab+pull");
    assert!(
        planned
            .nodes
            .iter()
            .all(|r| r.outcome == Outcome::WouldChange)
    );
    assert!(writes(&fake.log()).is_empty(), "{:?}", fake.log());
    assert!(!certs.exists());
    assert!(
        login(&client, &pulling[0], &wiring.registry)
            .await
            .is_none()
    );

    let first = wire(&harbor, &client, &runner, &targets, &wiring)
        .await
        .unwrap();
    assert!(first.access.project_created);
    assert_eq!(first.access.robot, RobotChange::Created);
    let changed: Vec<String> = first
        .access
        .applied
        .iter()
        .filter(|a| a.changed)
        .map(ToString::to_string)
        .collect();
    assert_eq!(changed.len(), 4, "two namespaces, two Secrets: {changed:?}");
    assert_eq!(first.nodes.len(), 6);
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        "127.0.0.1 localhost\n192.168.122.101 harbor.lab.test\n"
    );
    // The two nodes share this machine's files: each step changed them on one at least.
    for step in ["harbor-address", "harbor-ca", "harbor-hosts"] {
        assert!(
            first
                .nodes
                .iter()
                .any(|r| r.step == step && r.outcome == Outcome::Changed),
            "{step}: {:?}",
            first.nodes
        );
    }
    // The robot may pull and nothing else; the Secrets log in as it, never as the admin.
    let robots = harbor
        .robots(Some(&harbor.project("homelab").await.unwrap().unwrap()))
        .await
        .unwrap();
    assert_eq!(robots.len(), 1);
    assert_eq!(
        robots[0].permissions,
        vec![repository_access("homelab", false)]
    );
    let (user, password) = login(&client, &pulling[1], &wiring.registry).await.unwrap();
    assert_eq!(user, "robot$homelab+pull");
    assert!(!password.is_empty() && password != ADMIN.1);
    // containerd's files: the CA (never the key) and hosts.toml naming it.
    let dir = certs.join("harbor.lab.test:8443");
    assert_eq!(std::fs::read_to_string(dir.join("ca.crt")).unwrap(), CA);
    let hosts: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("hosts.toml")).unwrap()).unwrap();
    assert_eq!(
        hosts["server"].as_str(),
        Some("https://harbor.lab.test:8443")
    );
    assert_eq!(
        hosts["host"]["https://harbor.lab.test:8443"]["ca"].as_str(),
        Some(dir.join("ca.crt").to_str().unwrap())
    );

    // Again: nothing changes, on Harbor, in the cluster or on the nodes.
    let before = fake.log().len();
    let second = wire(&harbor, &client, &runner, &targets, &wiring)
        .await
        .unwrap();
    assert!(!second.access.project_created);
    assert_eq!(second.access.robot, RobotChange::Kept);
    assert!(
        second.access.applied.iter().all(|a| !a.changed),
        "{:?}",
        second.access.applied
    );
    assert!(second.nodes.iter().all(|r| r.outcome == Outcome::Unchanged));
    assert!(writes(&fake.log()[before..]).is_empty(), "{:?}", fake.log());

    // A namespace lost its Secret: the robot's secret is renewed and every Secret rewritten
    // (the old secret no longer logs in anywhere).
    let api: Api<Secret> = Api::namespaced(client.clone(), &pulling[1]);
    api.delete("harbor-pull", &DeleteParams::default())
        .await
        .unwrap();
    let before = fake.log().len();
    let third = wire(&harbor, &client, &runner, &targets, &wiring)
        .await
        .unwrap();
    assert_eq!(third.access.robot, RobotChange::Renewed);
    let log = fake.log();
    let robot_writes: Vec<&String> = writes(&log[before..]);
    assert_eq!(robot_writes.len(), 1, "{robot_writes:?}");
    assert!(robot_writes[0].starts_with(&format!("PATCH /api/v2.0/robots/{}", robots[0].id)));
    let renewed = login(&client, &pulling[0], &wiring.registry).await.unwrap();
    assert_ne!(renewed.1, password);
    assert_eq!(
        login(&client, &pulling[1], &wiring.registry).await.unwrap(),
        renewed
    );
}

#[tokio::test]
async fn a_robot_that_may_push_and_a_missing_ca_are_refused_with_what_to_do() {
    let (client, _plane) = cluster().await.unwrap();
    let fake = HarborFake::start().await;
    let harbor = harbor(&fake);
    let (_servers, runner, targets) = nodes();
    let ca_ns = namespace(&client, "noca").await.unwrap();
    let mut wiring = RegistryWiring::new("https://harbor.lab.test", "pushy", &[]).unwrap();
    wiring.ca = CaSource::Secret {
        namespace: ca_ns.clone(),
        name: "homelab-ca".into(),
    };
    let err = wire(&harbor, &client, &runner, &targets, &wiring)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("Secret {ca_ns}/homelab-ca does not exist")),
        "{err}"
    );
    assert!(err.contains("wait for the platform"), "{err}");

    ca_secret(&client, &ca_ns).await;
    let (project, _) = harbor.ensure_project("pushy", false).await.unwrap();
    harbor
        .create_robot(&RobotCreate {
            name: "pull".into(),
            description: "made by hand".into(),
            level: "project".into(),
            duration: -1,
            permissions: vec![repository_access("pushy", true)],
        })
        .await
        .unwrap();
    let err = wire(&harbor, &client, &runner, &targets, &wiring)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("robot$pushy+pull may do more than pull (push repository on project pushy)"),
        "{err}"
    );
    // Nothing was given its secret.
    assert_eq!(harbor.robots(Some(&project)).await.unwrap().len(), 1);
    assert!(!fake.log().iter().any(|l| l.starts_with("PATCH")));
}
