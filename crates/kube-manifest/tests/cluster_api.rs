//! Server-side apply against a real API server (the cluster `KUBECONFIG` names, else etcd
//! and kube-apiserver started on loopback by testkit's `ControlPlane`): what the server does
//! that no fake did — field ownership and its conflicts, structural-schema pruning of unknown
//! fields, strict field validation.
#![allow(clippy::unwrap_used)]

use homelab_testkit::control_plane::{cluster, namespace};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_manifest::{ApplyOptions, ManifestError, apply, parse};
use serde_json::json;

fn config_map(namespace: &str, owner: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "settings", "namespace": namespace },
        "data": { "owner": owner, "mine": "yes" },
    }))
    .unwrap()
}

/// Which managers own `.data.owner` of the ConfigMap.
fn owners_of_owner(cm: &ConfigMap) -> Vec<String> {
    cm.managed_fields()
        .iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:data"].get("f:owner").is_some())
        })
        .filter_map(|m| m.manager.clone())
        .collect()
}

#[tokio::test]
async fn a_field_another_manager_owns_is_a_conflict_unless_forced() {
    let (client, _plane) = cluster().await.unwrap();
    let ns = namespace(&client, "conflict").await.unwrap();
    conflicts(&client, &ns, true).await;
}

/// The fake API server of the unit tests answers the same scenario the same way (without
/// `managedFields`, which it does not write).
#[tokio::test]
async fn the_fake_api_server_has_the_same_conflicts() {
    let (client, _server) = homelab_testkit::kube_api::ApiServer::start(vec![], &[]);
    conflicts(&client, "conflict", false).await;
}

/// Server-side apply's field ownership, as homelab's applies meet it: a value another tool
/// set is shared when equal, a conflict when not (unless forced), taken over when forced.
async fn conflicts(client: &Client, ns: &str, managed_fields: bool) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    // Another tool applied the ConfigMap first and owns `.data.owner`.
    api.patch(
        "settings",
        &PatchParams::apply("someone-else"),
        &Patch::Apply(json!({ "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "settings" }, "data": { "owner": "them" } })),
    )
    .await
    .unwrap();

    let gentle = ApplyOptions::new("homelab").force(false);
    // The same value is no conflict: the field becomes shared.
    let shared = apply(client, &[config_map(ns, "them")], &gentle)
        .await
        .unwrap();
    assert!(shared[0].changed, "`mine` was added");
    if managed_fields {
        let mut owners = owners_of_owner(&api.get("settings").await.unwrap());
        owners.sort();
        assert_eq!(owners, ["homelab", "someone-else"]);
    }
    // Shared, the field is no longer the other tool's alone: it cannot move it either
    // without force.
    let refused = api
        .patch(
            "settings",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(json!({ "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "settings" }, "data": { "owner": "still them" } })),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 409 && s.message == "Apply failed with 1 conflict: conflict with \"homelab\": .data.owner"),
        "{refused:?}"
    );
    api.patch(
        "settings",
        &PatchParams::apply("someone-else").force(),
        &Patch::Apply(json!({ "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "settings" }, "data": { "owner": "still them" } })),
    )
    .await
    .unwrap();

    // homelab's value, not forced: a conflict naming the object, the other manager and the
    // field; nothing changes.
    let err = apply(client, &[config_map(ns, "us")], &gentle)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, ManifestError::Conflict { kind, name, .. } if kind == "ConfigMap" && *name == format!("{ns}/settings")),
        "{err:?}"
    );
    assert!(
        text.contains("someone-else") && text.contains(".data.owner"),
        "{text}"
    );
    assert!(text.contains("apply with force"), "{text}");
    let cm = api.get("settings").await.unwrap();
    assert_eq!(cm.data.unwrap()["owner"], "still them");

    // Forced: the field is taken over, the other manager no longer owns it.
    let taken = apply(
        client,
        &[config_map(ns, "us")],
        &ApplyOptions::new("homelab"),
    )
    .await
    .unwrap();
    assert!(taken[0].changed);
    let cm = api.get("settings").await.unwrap();
    if managed_fields {
        assert_eq!(owners_of_owner(&cm), ["homelab"]);
    }
    assert_eq!(cm.data.unwrap()["owner"], "us");
    // ...so the other tool's non-forced apply of its old value conflicts now.
    let refused = api
        .patch(
            "settings",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(json!({ "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "settings" }, "data": { "owner": "still them" } })),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 409),
        "{refused:?}"
    );
}

const CRD: &str = r"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.test.homelab.dev
spec:
  group: test.homelab.dev
  names: { kind: Gadget, plural: gadgets, singular: gadget }
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: { type: integer }
                colour: { type: string }
";

fn gadget(namespace: &str, spec: &serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "test.homelab.dev/v1", "kind": "Gadget",
        "metadata": { "name": "g", "namespace": namespace },
        "spec": spec,
    }))
    .unwrap()
}

#[tokio::test]
async fn server_side_apply_refuses_an_unknown_field_which_a_create_would_drop() {
    let (client, _plane) = cluster().await.unwrap();
    let ns = namespace(&client, "prune").await.unwrap();
    let crd = parse("gadget-crd.yaml", CRD).unwrap();
    apply(&client, &crd, &ApplyOptions::new("homelab"))
        .await
        .unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::discovery::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("test.homelab.dev", "v1", "Gadget"),
            "gadgets",
        ),
    );

    // The misspelt field is named, and nothing is stored: the server refuses the whole apply
    // (whatever fieldValidation says), for a custom resource as for a built-in kind.
    let typo = json!({ "size": 3, "colur": "red" });
    let err = apply(
        &client,
        &[gadget(&ns, &typo)],
        &ApplyOptions::new("homelab"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ManifestError::UnknownField { field, .. } if field == ".spec.colur"),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "Gadget {ns}/g: test.homelab.dev/v1 Gadget has no field .spec.colur"
        )),
        "{err}"
    );
    assert!(api.get_opt("g").await.unwrap().is_none());
    let config_map: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "x", "namespace": ns }, "dta": { "a": "b" } }))
    .unwrap();
    let err = apply(&client, &[config_map], &ApplyOptions::new("homelab"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManifestError::UnknownField { field, .. } if field == ".dta"),
        "{err:?}"
    );

    // A create, by contrast, succeeds and the structural schema prunes the field away: what
    // a tool that creates instead of applying would never notice.
    let created = api
        .create(&PostParams::default(), &gadget(&ns, &typo))
        .await
        .unwrap();
    assert_eq!(created.data["spec"], json!({ "size": 3 }));

    // A wrong type is refused, naming the field.
    let err = apply(
        &client,
        &[gadget(&ns, &json!({ "size": "three" }))],
        &ApplyOptions::new("homelab"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("spec.size"), "{err}");
}
