//! Delivery against a real API server (or the cluster `KUBECONFIG` names): the direct sync
//! from one read of the ESC fake, and External Secrets' objects dry-run against External
//! Secrets' own CRDs at the pinned release.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use esc_secrets::client::{EnvRef, Esc, EscOptions};
use esc_secrets::declared::{Declared, Kind, Needs, declared};
use esc_secrets::deliver::{
    DeliverError, Store, cluster_secret_store, external_secret, sync, token_secret,
};
use esc_secrets::eso::{nudge, states};
use homelab_testkit::control_plane::{ControlPlane, cluster, namespace};
use homelab_testkit::esc_fake::{EscFake, TOKEN};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::json;

fn env() -> EnvRef {
    EnvRef::new("acme", "homelab", "dev")
}

/// The declared list with every target moved into the test's namespaces (so that runs
/// against a shared cluster do not meet).
fn into(list: Vec<Declared>, ns: &str) -> Vec<Declared> {
    list.into_iter()
        .map(|mut d| {
            d.namespace = format!("{ns}-{}", d.namespace);
            d
        })
        .collect()
}

async fn values(fake: &EscFake) -> esc_secrets::Value {
    Esc::new(
        TOKEN.to_owned().into(),
        EscOptions::default().api_url(&fake.url),
    )
    .unwrap()
    .read(&env())
    .await
    .unwrap()
}

#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn secrets_are_synced_from_one_read_and_a_foreign_secret_is_never_overwritten() {
    let (client, _plane) = cluster().await.unwrap();
    let ns = namespace(&client, "esc").await.unwrap();
    let fake = EscFake::start().await;
    fake.define(
        "acme",
        "homelab",
        "dev",
        "values:\n  harbor:\n    admin:\n      password:\n        fn::secret: hunter2-harbor\n  github:\n    token:\n      fn::secret: ghp_fake_token\n",
    );
    let list = into(
        declared(&Needs {
            harbor_registry: "harbor.lan".into(),
            gitops_repo: Some("https://github.com/me/lab.git".into()),
            runners: true,
            monitoring: false,
            backup_s3: false,
        }),
        &ns,
    );
    let values = values(&fake).await;
    assert_eq!(fake.opens(), 1);

    // A dry run changes nothing.
    let planned = sync(&client, &values, &env(), &list, true).await.unwrap();
    assert!(
        planned
            .iter()
            .filter(|d| d.skipped.is_none())
            .all(|d| d.changed == Some(true))
    );
    let admin_ns = format!("{ns}-harbor");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &admin_ns);
    assert!(secrets.get_opt("harbor-admin").await.unwrap().is_none());

    let first = sync(&client, &values, &env(), &list, false).await.unwrap();
    let summary: Vec<String> = first
        .iter()
        .map(|d| match &d.skipped {
            Some(why) => format!("{} skipped: {why}", d.secret),
            None => format!("{} {} {:?} {:?}", d.secret, d.target, d.keys, d.changed),
        })
        .collect();
    assert_eq!(
        summary,
        [
            format!("harbor-admin {ns}-harbor/harbor-admin [\"HARBOR_ADMIN_PASSWORD\"] Some(true)"),
            "harbor-robot skipped: optional, and acme/homelab/dev has no harbor.robot".to_owned(),
            "argocd-repository skipped: optional, and acme/homelab/dev has no argocd.repository"
                .to_owned(),
            format!(
                "github-runner-token {ns}-arc-runners/github-runner-token [\"github_token\"] Some(true)"
            ),
        ]
    );
    let admin = secrets.get("harbor-admin").await.unwrap();
    assert_eq!(
        admin.data.unwrap()["HARBOR_ADMIN_PASSWORD"].0,
        b"hunter2-harbor"
    );
    assert_eq!(
        admin.metadata.annotations.unwrap()["homelab.dev/esc-source"],
        "acme/homelab/dev:harbor.admin"
    );
    // Again: nothing changes.
    let second = sync(&client, &values, &env(), &list, false).await.unwrap();
    assert!(second.iter().all(|d| d.changed != Some(true)), "{second:?}");

    // A Secret of a declared name that homelab did not make: refused, nothing applied.
    let runner_ns = format!("{ns}-arc-runners");
    let theirs: Api<Secret> = Api::namespaced(client.clone(), &runner_ns);
    theirs
        .delete("github-runner-token", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    theirs
        .create(
            &PostParams::default(),
            &Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some("github-runner-token".into()),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(
                    "github_token".to_owned(),
                    ByteString(b"made-by-hand".to_vec()),
                )])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let err = sync(&client, &values, &env(), &list, false)
        .await
        .unwrap_err();
    assert!(matches!(err, DeliverError::NotOurs { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "Secret {runner_ns}/github-runner-token exists and was not made by homelab"
        )),
        "{err}"
    );
    let kept = theirs.get("github-runner-token").await.unwrap();
    assert_eq!(kept.data.unwrap()["github_token"].0, b"made-by-hand");

    // A required value missing: named by path, no value anywhere in the message.
    fake.define(
        "acme",
        "homelab",
        "dev",
        "values:\n  github:\n    token:\n      fn::secret: ghp_fake_token\n",
    );
    let values = values_again(&fake).await;
    let err = sync(&client, &values, &env(), &list, false)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "environment acme/homelab/dev lacks harbor.admin.password: add them (homelab-secrets check prints the commands)"
    );
}

async fn values_again(fake: &EscFake) -> esc_secrets::Value {
    values(fake).await
}

#[tokio::test]
async fn the_store_and_every_external_secret_pass_a_dry_run_against_external_secrets_crds() {
    let (_plane, client) = with_eso_crds().await;
    let list = declared(&Needs {
        harbor_registry: "harbor.lan:8443".into(),
        gitops_repo: Some("https://github.com/me/lab.git".into()),
        runners: true,
        monitoring: true,
        backup_s3: false,
    });
    let store = Store::new(env(), "https://api.pulumi.com");
    namespaces_for(&client, &list, &store).await;

    let mut generated: Vec<DynamicObject> =
        vec![serde_json::from_value(cluster_secret_store(&store)).unwrap()];
    let mut token = serde_json::to_value(token_secret(&store, &"pul-x".to_owned().into())).unwrap();
    token["apiVersion"] = "v1".into();
    token["kind"] = "Secret".into();
    generated.push(serde_json::from_value(token).unwrap());
    for d in &list {
        generated.push(serde_json::from_value(external_secret(d, &store)).unwrap());
    }
    let options = kube_manifest::ApplyOptions::new("homelab-secrets").dry_run(true);
    let accepted = kube_manifest::apply(&client, &generated, &options)
        .await
        .unwrap();
    assert_eq!(accepted.len(), list.len() + 2);

    // The check can fail: a field the CRD does not have, and a wrong type.
    let mut wrong = external_secret(&list[0], &store);
    wrong["spec"]["refreshIntervall"] = "1h".into();
    let err = kube_manifest::apply(&client, &[serde_json::from_value(wrong).unwrap()], &options)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refreshIntervall"), "{err}");
    let mut wrong = cluster_secret_store(&store);
    wrong["spec"]["provider"]["pulumi"]["organization"] = json!(["acme"]);
    assert!(
        kube_manifest::apply(&client, &[serde_json::from_value(wrong).unwrap()], &options)
            .await
            .is_err()
    );
    // A typed Kind the fixture relies on.
    assert!(matches!(list[1].kind, Kind::DockerConfig { .. }));
}

/// A control plane with External Secrets' CRDs (v0.20.4, pinned) installed.
async fn with_eso_crds() -> (ControlPlane, kube::Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (module, version, file, sha256) = homelab_testkit::upstream::PLATFORM_CRDS
        .iter()
        .find(|(m, ..)| m.ends_with("external-secrets"))
        .unwrap();
    let path = homelab_testkit::upstream::module_file(module, version, file, sha256).unwrap();
    let objects = kube_manifest::parse(
        &path.display().to_string(),
        &std::fs::read_to_string(&path).unwrap(),
    )
    .unwrap();
    let plane = ControlPlane::start().await.unwrap();
    let client = plane.client().await.unwrap();
    kube_manifest::apply(
        &client,
        &objects,
        &kube_manifest::ApplyOptions::new("homelab-test"),
    )
    .await
    .unwrap();
    (plane, client)
}

/// The declared secrets' namespaces and the token's.
async fn namespaces_for(client: &kube::Client, list: &[Declared], store: &Store) {
    let mut namespaces: Vec<String> = list.iter().map(|d| d.namespace.clone()).collect();
    namespaces.push(store.token_namespace.clone());
    namespaces.sort();
    namespaces.dedup();
    let objects: Vec<DynamicObject> = namespaces
        .iter()
        .map(|ns| {
            serde_json::from_value(json!({ "apiVersion": "v1", "kind": "Namespace",
                "metadata": { "name": ns, "labels": { "homelab.dev/test": "esc" } } }))
            .unwrap()
        })
        .collect();
    kube_manifest::apply(
        client,
        &objects,
        &kube_manifest::ApplyOptions::new("homelab-test"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_external_secret_that_failed_before_its_store_was_ready_is_nudged() {
    let (_plane, client) = with_eso_crds().await;
    let list: Vec<Declared> = declared(&Needs {
        harbor_registry: "harbor.lan".into(),
        gitops_repo: Some("https://github.com/me/lab.git".into()),
        runners: false,
        monitoring: false,
        backup_s3: false,
    });
    let store = Store::new(env(), "https://api.pulumi.com");
    namespaces_for(&client, &list, &store).await;
    let mut objects = vec![cluster_secret_store(&store)];
    objects.extend(list.iter().map(|d| external_secret(d, &store)));
    let objects: Vec<DynamicObject> = objects
        .into_iter()
        .map(|o| serde_json::from_value(o).unwrap())
        .collect();
    kube_manifest::apply(
        &client,
        &objects,
        &kube_manifest::ApplyOptions::new("homelab-test"),
    )
    .await
    .unwrap();
    // Nothing to do while the store is not Ready.
    assert!(nudge(&client, &store, &list).await.unwrap().is_empty());

    // What External Secrets' controller writes: the store Ready at 10:00; harbor-admin failed
    // at 09:00 (before), harbor-robot at 11:00 (after), the repository synced.
    let status = |ready: bool, reason: &str, at: &str| {
        json!({ "status": { "conditions": [ { "type": "Ready",
            "status": if ready { "True" } else { "False" }, "reason": reason,
            "message": format!("{reason} (test)"), "lastTransitionTime": at } ],
            "refreshTime": at } })
    };
    let stores: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("external-secrets.io", "v1", "ClusterSecretStore"),
            "clustersecretstores",
        ),
    );
    stores
        .patch_status(
            &store.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(status(true, "Valid", "2026-12-01T10:00:00Z")),
        )
        .await
        .unwrap();
    let es_resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("external-secrets.io", "v1", "ExternalSecret"),
        "externalsecrets",
    );
    for (d, (ready, reason, at)) in list.iter().zip([
        (false, "SecretSyncedError", "2026-12-01T09:00:00Z"),
        (false, "SecretSyncedError", "2026-12-01T11:00:00Z"),
        (true, "SecretSynced", "2026-12-01T10:30:00Z"),
    ]) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &d.namespace, &es_resource);
        api.patch_status(
            &d.secret,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(status(ready, reason, at)),
        )
        .await
        .unwrap();
    }
    let before = states(&client, &list).await.unwrap();
    let summary: Vec<String> = before
        .iter()
        .map(|s| format!("{} {} {}", s.name, s.ready, s.reason))
        .collect();
    assert_eq!(
        summary,
        [
            "harbor/harbor-admin false SecretSyncedError",
            "default/harbor-robot false SecretSyncedError",
            "argocd/homelab-repository true SecretSynced"
        ]
    );
    assert_eq!(before[2].refreshed, "2026-12-01T10:30:00Z");
    let nudged = nudge(&client, &store, &list).await.unwrap();
    assert_eq!(nudged, ["harbor/harbor-admin"]);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "harbor", &es_resource);
    let annotated = api.get("harbor-admin").await.unwrap();
    assert!(
        annotated.metadata.annotations.unwrap()["force-sync"]
            .parse::<u64>()
            .is_ok()
    );
}
