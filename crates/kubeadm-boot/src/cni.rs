//! The pod network: Flannel's release manifest (fetched and checked against its digest by the
//! caller, as `homelab`'s lock file does), its pod network set to the cluster's pod CIDR (a
//! structured edit of its `net-conf.json`), and applied by server-side apply through `kube`. Waiting for the
//! nodes to become Ready afterwards is [`crate::nodes::wait_nodes_ready`].

use ipnet::Ipv4Net;
use kube::api::DynamicObject;
use kube::{Client, ResourceExt};

/// The field manager homelab applies with.
pub const FIELD_MANAGER: &str = "homelab";

/// The pod network could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CniError {
    /// The manifest does not parse, or its apply failed.
    #[error(transparent)]
    Manifest(#[from] kube_manifest::ManifestError),
    /// The manifest has no Flannel network configuration to set the pod CIDR in.
    #[error(
        "no ConfigMap with a net-conf.json in the manifest: is this Flannel's kube-flannel.yml?"
    )]
    NoNetConf,
    /// The network configuration is not JSON (or could not be written back).
    #[error("ConfigMap {name}: net-conf.json: {source}")]
    NetConf {
        /// ConfigMap.
        name: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The network configuration is JSON, but not an object.
    #[error("ConfigMap {name}: net-conf.json is not a JSON object")]
    NetConfNotObject {
        /// ConfigMap.
        name: String,
    },
}

/// Where Flannel publishes the manifest of a release.
pub fn flannel_manifest_url(version: &str) -> String {
    format!("https://github.com/flannel-io/flannel/releases/download/{version}/kube-flannel.yml")
}

/// The objects of a multi-document YAML manifest (empty documents skipped).
///
/// # Errors
/// A document is not YAML or not an object with apiVersion, kind and metadata.name.
pub fn parse_manifest(source_name: &str, text: &str) -> Result<Vec<DynamicObject>, CniError> {
    Ok(kube_manifest::parse(source_name, text)?)
}

/// Sets Flannel's pod network (`Network` in the `net-conf.json` of its ConfigMap) to
/// `pod_cidr`, keeping every other setting.
///
/// # Errors
/// There is no such ConfigMap, or its `net-conf.json` is not a JSON object.
pub fn set_pod_network(objects: &mut [DynamicObject], pod_cidr: Ipv4Net) -> Result<(), CniError> {
    let mut found = false;
    for object in objects.iter_mut() {
        let is_config_map = object
            .types
            .as_ref()
            .is_some_and(|t| t.kind == "ConfigMap" && t.api_version == "v1");
        if !is_config_map {
            continue;
        }
        let name = object.name_any();
        let Some(text) = object.data["data"]["net-conf.json"].as_str() else {
            continue;
        };
        let mut conf: serde_json::Value =
            serde_json::from_str(text).map_err(|source| CniError::NetConf {
                name: name.clone(),
                source,
            })?;
        let Some(map) = conf.as_object_mut() else {
            return Err(CniError::NetConfNotObject { name });
        };
        map.insert("Network".into(), pod_cidr.to_string().into());
        let text = serde_json::to_string_pretty(&conf).map_err(|source| CniError::NetConf {
            name: name.clone(),
            source,
        })?;
        object.data["data"]["net-conf.json"] = serde_json::Value::String(text + "\n");
        found = true;
    }
    if found {
        Ok(())
    } else {
        Err(CniError::NoNetConf)
    }
}

/// Applies `objects` by server-side apply (field manager [`FIELD_MANAGER`], conflicts
/// forced, as a reconciler owning these objects does), namespaces first. Each kind's
/// resource and scope come from API discovery. Returns what was applied, as
/// `Kind namespace/name`.
///
/// # Errors
/// Discovery or an apply fails; the error names the object.
pub async fn apply(client: &Client, objects: &[DynamicObject]) -> Result<Vec<String>, CniError> {
    let options = kube_manifest::ApplyOptions::new(FIELD_MANAGER);
    let applied = kube_manifest::apply(client, objects, &options).await?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ApiServer;

    /// A manifest shaped like Flannel's: cluster-scoped RBAC, a namespace, a ConfigMap with
    /// net-conf.json, and a DaemonSet, in an order that is not the apply order.
    const MANIFEST: &str = r#"---
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: flannel
rules:
- apiGroups: [""]
  resources: [nodes]
  verbs: [list, watch]
---
kind: ConfigMap
apiVersion: v1
metadata:
  name: kube-flannel-cfg
  namespace: kube-flannel
data:
  cni-conf.json: |
    {"name": "cbr0", "cniVersion": "0.3.1"}
  net-conf.json: |
    {
      "Network": "10.244.0.0/16",
      "EnableNFTables": false,
      "Backend": {
        "Type": "vxlan"
      }
    }
---
apiVersion: v1
kind: Namespace
metadata:
  name: kube-flannel
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-flannel-ds
  namespace: kube-flannel
spec:
  selector:
    matchLabels: {app: flannel}
  template:
    metadata:
      labels: {app: flannel}
    spec:
      containers:
      - name: kube-flannel
        image: ghcr.io/flannel-io/flannel:v0.27.4
"#;

    #[test]
    fn the_pod_network_is_set_and_nothing_else_changes() {
        let mut objects = parse_manifest("m", MANIFEST).unwrap();
        assert_eq!(objects.len(), 4);
        set_pod_network(&mut objects, "10.50.0.0/16".parse().unwrap()).unwrap();
        let conf: serde_json::Value =
            serde_json::from_str(objects[1].data["data"]["net-conf.json"].as_str().unwrap())
                .unwrap();
        assert_eq!(
            conf,
            serde_json::json!({"Network": "10.50.0.0/16", "EnableNFTables": false, "Backend": {"Type": "vxlan"}})
        );
        assert!(
            objects[1].data["data"]["cni-conf.json"]
                .as_str()
                .unwrap()
                .contains("cbr0")
        );
        let mut none = parse_manifest(
            "m",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
        )
        .unwrap();
        assert!(matches!(
            set_pod_network(&mut none, "10.50.0.0/16".parse().unwrap()),
            Err(CniError::NoNetConf)
        ));
    }

    #[test]
    fn bad_documents_are_named_by_number() {
        let err = parse_manifest(
            "kube-flannel.yml",
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n- just a list\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("kube-flannel.yml: document 2:"),
            "{err}"
        );
        let err = parse_manifest("f", "kind: Namespace\n").unwrap_err();
        assert!(err.to_string().contains("document 1"), "{err}");
    }

    #[tokio::test]
    async fn applies_by_server_side_apply_namespace_first_with_discovered_scope() {
        let (client, server) = ApiServer::start(Vec::new(), &[]);
        let mut objects = parse_manifest("m", MANIFEST).unwrap();
        set_pod_network(&mut objects, "10.244.0.0/16".parse().unwrap()).unwrap();
        let applied = apply(&client, &objects).await.unwrap();
        assert_eq!(
            applied,
            [
                "Namespace kube-flannel",
                "ClusterRole flannel",
                "ConfigMap kube-flannel/kube-flannel-cfg",
                "DaemonSet kube-flannel/kube-flannel-ds"
            ]
        );
        let patches: Vec<String> = server
            .requests()
            .into_iter()
            .filter(|r| r.starts_with("PATCH"))
            .collect();
        assert_eq!(patches.len(), 4);
        for p in &patches {
            assert!(
                p.contains("?&force=true&fieldManager=homelab application/apply-patch+yaml ")
                    || p.contains("?fieldManager=homelab&force=true application/apply-patch+yaml "),
                "server-side apply, forced, as homelab: {p}"
            );
        }
        assert!(
            patches[0].starts_with("PATCH /api/v1/namespaces/kube-flannel?"),
            "{patches:#?}"
        );
        assert!(
            patches[1]
                .starts_with("PATCH /apis/rbac.authorization.k8s.io/v1/clusterroles/flannel?")
        );
        assert!(patches[3].starts_with(
            "PATCH /apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel-ds?"
        ));
        let stored = server
            .get(
                "apps/v1",
                "daemonsets",
                Some("kube-flannel"),
                "kube-flannel-ds",
            )
            .unwrap();
        assert_eq!(
            stored["spec"]["template"]["spec"]["containers"][0]["image"],
            "ghcr.io/flannel-io/flannel:v0.27.4"
        );
        // Applying again is a no-op for the objects' contents.
        apply(&client, &objects).await.unwrap();
        let again = server
            .get(
                "apps/v1",
                "daemonsets",
                Some("kube-flannel"),
                "kube-flannel-ds",
            )
            .unwrap();
        assert_eq!(again["spec"], stored["spec"]);
    }

    #[tokio::test]
    async fn a_refused_object_is_named() {
        let (client, _server) = ApiServer::start(Vec::new(), &[]);
        let objects = parse_manifest(
            "m",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: n}\n",
        )
        .unwrap();
        let err = apply(&client, &objects).await.unwrap_err();
        assert!(
            err.to_string().starts_with("applying Widget n/w: "),
            "{err}"
        );
    }
}
