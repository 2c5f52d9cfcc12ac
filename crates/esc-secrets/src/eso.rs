//! External Secrets' side once its objects exist: each `ExternalSecret`'s readiness (its
//! `Ready` condition: reason, message, last refresh) and the nudge an `ExternalSecret` needs
//! when its store became ready after it last failed (the `force-sync` annotation, which
//! External Secrets reconciles at once instead of at the next refresh, an hour away).

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;

use crate::declared::Declared;
use crate::deliver::{DeliverError, FIELD_MANAGER, FORCE_SYNC_ANNOTATION, Store};

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("external-secrets.io", "v1", kind),
        plural,
    )
}

/// An `ExternalSecret`'s (or a store's) `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncState {
    /// `namespace/name` (or the store's name).
    pub name: String,
    /// Whether the object exists.
    pub exists: bool,
    /// `Ready` is `True`.
    pub ready: bool,
    /// The condition's reason (`SecretSynced`, `SecretSyncedError`, ...).
    pub reason: String,
    /// Its message.
    pub message: String,
    /// When it last changed.
    pub since: String,
    /// `status.refreshTime`: the last sync.
    pub refreshed: String,
}

fn state(name: String, object: Option<&DynamicObject>) -> SyncState {
    let status = object.map(|o| &o.data["status"]);
    let ready = status
        .and_then(|s| s["conditions"].as_array())
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
    let text = |v: Option<&serde_json::Value>| {
        v.and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    SyncState {
        name,
        exists: object.is_some(),
        ready: ready.is_some_and(|c| c["status"] == "True"),
        reason: text(ready.map(|c| &c["reason"])),
        message: text(ready.map(|c| &c["message"])),
        since: text(ready.map(|c| &c["lastTransitionTime"])),
        refreshed: text(status.map(|s| &s["refreshTime"])),
    }
}

fn kube_error(action: String) -> impl FnOnce(kube::Error) -> DeliverError {
    move |source| DeliverError::Kube { action, source }
}

/// The store's state.
///
/// # Errors
/// The API server refuses the read (a missing CRD included).
pub async fn store_state(client: &Client, store: &Store) -> Result<SyncState, DeliverError> {
    let api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &resource("ClusterSecretStore", "clustersecretstores"),
    );
    let object = api.get_opt(&store.name).await.map_err(kube_error(format!(
        "read ClusterSecretStore {}",
        store.name
    )))?;
    Ok(state(store.name.clone(), object.as_ref()))
}

/// Each declared secret's `ExternalSecret` state, in the list's order.
///
/// # Errors
/// The API server refuses a read.
pub async fn states(
    client: &Client,
    declared: &[Declared],
) -> Result<Vec<SyncState>, DeliverError> {
    let ar = resource("ExternalSecret", "externalsecrets");
    let mut out = Vec::new();
    for d in declared {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &d.namespace, &ar);
        let name = format!("{}/{}", d.namespace, d.secret);
        let object = api
            .get_opt(&d.secret)
            .await
            .map_err(kube_error(format!("read ExternalSecret {name}")))?;
        out.push(state(name, object.as_ref()));
    }
    Ok(out)
}

/// Marks with `force-sync` (the time, in seconds) every declared `ExternalSecret` that is not
/// `Ready` and last changed before its store became `Ready`: it failed for want of the store
/// and would otherwise wait for its next refresh. Returns the nudged ones; none while the
/// store is not `Ready`.
///
/// # Errors
/// The API server refuses a read or the patch.
pub async fn nudge(
    client: &Client,
    store: &Store,
    declared: &[Declared],
) -> Result<Vec<String>, DeliverError> {
    let store_state = store_state(client, store).await?;
    if !store_state.ready {
        return Ok(Vec::new());
    }
    let ar = resource("ExternalSecret", "externalsecrets");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut nudged = Vec::new();
    for (d, s) in declared.iter().zip(states(client, declared).await?) {
        // RFC 3339 times in UTC compare as text.
        if !s.exists || s.ready || (!s.since.is_empty() && s.since >= store_state.since) {
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &d.namespace, &ar);
        let patch = json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": { "annotations": { FORCE_SYNC_ANNOTATION: now.to_string() } },
        });
        api.patch(
            &d.secret,
            &PatchParams::apply(&format!("{FIELD_MANAGER}-nudge")).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(kube_error(format!("annotate ExternalSecret {}", s.name)))?;
        nudged.push(s.name);
    }
    Ok(nudged)
}
