//! The `secrets` phase: from the ESC contract fake into a real API server (or the cluster
//! `KUBECONFIG` names), planned, applied, re-applied as a no-op, shown and verified.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use homelab::Phase;
use homelab::secrets::SecretsPhase;
use homelab::{Lab, Pipeline};
use homelab_config::{ClusterProvider, Config, EscConfig, SecretRef};
use homelab_testkit::control_plane::cluster;
use homelab_testkit::esc_fake::{EscFake, TOKEN};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

const ENVIRONMENT: &str = "values:
  harbor:
    admin:
      password:
        fn::secret: hunter2-harbor
";

#[tokio::test]
async fn the_phase_plans_applies_once_and_verifies_what_esc_holds() {
    let (client, _plane) = cluster().await.unwrap();
    let fake = EscFake::start().await;
    fake.define("acme", "homelab", "dev", ENVIRONMENT);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("esc-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut config = Config::default();
    config.cluster.provider = ClusterProvider::Existing;
    config.features.external_secrets = true;
    config.esc = Some(EscConfig {
        organization: "acme".into(),
        project: "homelab".into(),
        environment: "dev".into(),
        token: SecretRef::File(token),
        api_url: fake.url.clone(),
    });
    let lab = Lab::new(config).with_kube_client(client.clone());
    assert_eq!(Pipeline::for_lab(&lab).names(), ["cluster", "secrets"]);

    let plan = SecretsPhase.plan(&lab).await.unwrap();
    let planned: Vec<String> = plan
        .changes
        .iter()
        .map(|c| format!("{} {}", c.action, c.object))
        .collect();
    assert_eq!(
        planned,
        [
            "apply Secret harbor/harbor-admin",
            "skip Secret default/harbor-robot",
            "apply Secret external-secrets/pulumi-esc-token"
        ]
    );
    let admins: Api<Secret> = Api::namespaced(client.clone(), "harbor");
    assert!(admins.get_opt("harbor-admin").await.unwrap().is_none());

    let report = SecretsPhase.apply(&lab, &|_| {}).await.unwrap();
    assert_eq!(report.changed, 2);
    let token_secret: Api<Secret> = Api::namespaced(client.clone(), "external-secrets");
    assert_eq!(
        token_secret
            .get("pulumi-esc-token")
            .await
            .unwrap()
            .data
            .unwrap()["PULUMI_ACCESS_TOKEN"]
            .0,
        TOKEN.as_bytes()
    );
    let again = SecretsPhase.apply(&lab, &|_| {}).await.unwrap();
    assert_eq!(again.changed, 0);
    // Each read opened the environment once.
    assert_eq!(fake.opens(), 3);

    let status = SecretsPhase.status(&lab).await;
    let items: Vec<String> = status
        .items
        .iter()
        .map(|i| format!("{} {} {}", i.name, i.state, i.healthy))
        .collect();
    assert_eq!(
        items,
        [
            "harbor/harbor-admin present true",
            "default/harbor-robot absent true"
        ]
    );
    let checks = SecretsPhase.verify(&lab).await;
    assert!(checks.iter().all(|c| c.passed), "{checks:?}");

    // A value removed from ESC: verify fails with the line that adds it back.
    fake.define("acme", "homelab", "dev", "values: {}\n");
    let checks = SecretsPhase.verify(&lab).await;
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
    assert_eq!(failed.len(), 1, "{checks:?}");
    assert!(
        failed[0]
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("esc env set acme/homelab/dev 'harbor.admin.password'"),
        "{:?}",
        failed[0]
    );
    // Nothing printed anywhere holds a secret value.
    let printed = format!("{plan:?} {status:?} {checks:?}");
    assert!(!printed.contains("hunter2-harbor") && !printed.contains(TOKEN));
}
