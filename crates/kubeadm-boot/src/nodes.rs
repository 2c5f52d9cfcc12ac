//! Nodes through the Kubernetes API: their readiness and versions, a wait that reads the
//! current state and then watches (never sleeps, never hangs on nodes that are already
//! Ready), and cordon / drain / uncordon for upgrades.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::event::{Event, Events};

/// What a node looks like now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeState {
    /// Node name.
    pub name: String,
    /// Whether its `Ready` condition is `True`.
    pub ready: bool,
    /// The `Ready` condition's reason and message (or why there is none).
    pub message: String,
    /// The kubelet's version (`v1.33.5`).
    pub kubelet_version: String,
    /// The container runtime and its version (`containerd://1.7.24`).
    pub container_runtime: String,
    /// Whether it is cordoned.
    pub unschedulable: bool,
}

impl NodeState {
    /// Reads a Node object.
    pub fn of(node: &Node) -> Self {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        let message = ready.map_or_else(
            || "no Ready condition yet".to_owned(),
            |c| {
                let reason = c.reason.clone().unwrap_or_default();
                let message = c.message.clone().unwrap_or_default();
                match (reason.is_empty(), message.is_empty()) {
                    (true, true) => format!("Ready={}", c.status),
                    (false, true) => format!("Ready={} ({reason})", c.status),
                    (true, false) => format!("Ready={}: {message}", c.status),
                    (false, false) => format!("Ready={} ({reason}): {message}", c.status),
                }
            },
        );
        Self {
            name: node.name_any(),
            ready: ready.is_some_and(|c| c.status == "True"),
            message,
            kubelet_version: node
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.kubelet_version.clone())
                .unwrap_or_default(),
            container_runtime: node
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.container_runtime_version.clone())
                .unwrap_or_default(),
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
        }
    }
}

/// A Kubernetes API call or wait failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodesError {
    /// The API refused or could not be reached.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The nodes could never be listed and watched before the time ran out (the last
    /// failure).
    #[error("watching nodes: {0}")]
    Watch(#[from] watcher::Error),
    /// Nodes were not Ready in time.
    #[error("after {elapsed:.0?}, {} not Ready: {}", if not_ready.len() == 1 { "this node is" } else { "these nodes are" }, not_ready.iter().map(|(n, m)| format!("{n} ({m})")).collect::<Vec<_>>().join("; "))]
    NotReady {
        /// Each node that is not Ready (or not registered), with its last condition.
        not_ready: Vec<(String, String)>,
        /// Time waited.
        elapsed: Duration,
    },
    /// Pods could not be evicted from a node in time.
    #[error("draining {node}: after {elapsed:.0?}, pods still running: {}", pods.join(", "))]
    Drain {
        /// The node.
        node: String,
        /// Pods left (`namespace/name`).
        pods: Vec<String>,
        /// Time spent.
        elapsed: Duration,
    },
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> NodesError {
    let action = action.into();
    move |source| NodesError::Api { action, source }
}

/// Every node's state, by name.
///
/// # Errors
/// The API call fails.
pub async fn list(client: &Client) -> Result<Vec<NodeState>, NodesError> {
    let nodes: Api<Node> = Api::all(client.clone());
    Ok(nodes
        .list(&ListParams::default())
        .await
        .map_err(api_err("listing nodes"))?
        .items
        .iter()
        .map(NodeState::of)
        .collect())
}

/// What is missing for `wanted` (names; empty = every node that exists, at least one) to be
/// Ready, given the nodes seen. `Ok` when nothing is.
fn missing(
    seen: &BTreeMap<String, NodeState>,
    wanted: &[String],
    version: Option<&str>,
) -> Vec<(String, String)> {
    let names: Vec<&String> = if wanted.is_empty() {
        seen.keys().collect()
    } else {
        wanted.iter().collect()
    };
    if names.is_empty() {
        return vec![("(any node)".into(), "no node has registered".into())];
    }
    names
        .into_iter()
        .filter_map(|name| match seen.get(name) {
            None => Some((name.clone(), "not registered with the API server".into())),
            Some(s) if !s.ready => Some((name.clone(), s.message.clone())),
            Some(s) if version.is_some_and(|v| s.kubelet_version != v) => Some((
                name.clone(),
                format!(
                    "kubelet {} (waiting for {})",
                    s.kubelet_version,
                    version.unwrap_or_default()
                ),
            )),
            Some(_) => None,
        })
        .collect()
}

/// Waits until every node in `wanted` (all nodes, when empty) is Ready — and, with
/// `version`, runs that kubelet version. Reads the current state first, so nodes that are
/// already Ready return at once; then watches. `events` hears what is still missing
/// ([`Event::Waiting`]: each node and why) whenever that changes.
///
/// # Errors
/// The timeout passes ([`NodesError::NotReady`] names each node and its last condition) or
/// the watch fails.
pub async fn wait_nodes_ready(
    client: &Client,
    wanted: &[String],
    version: Option<&str>,
    timeout: Duration,
    events: Events<'_>,
) -> Result<Vec<NodeState>, NodesError> {
    let started = Instant::now();
    let api: Api<Node> = Api::all(client.clone());
    // kube's reflector keeps the nodes seen; a (re)listing is judged once it is complete.
    let (store, writer) = reflector::store();
    let seen = || -> BTreeMap<String, NodeState> {
        store
            .state()
            .iter()
            .map(|n| {
                let state = NodeState::of(n);
                (state.name.clone(), state)
            })
            .collect()
    };
    let mut last_report: Option<Vec<(String, String)>> = None;
    // A failed watch is retried with backoff (an API server restarting, a watch answered
    // `410 Gone`: the watcher lists again); the failure is reported only if no listing ever
    // succeeded before the time ran out.
    let mut failure: Option<watcher::Error> = None;
    let mut listed = false;
    let watch = async {
        let mut changes = reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        )
        .boxed();
        let mut listing = false;
        while let Some(event) = changes.next().await {
            match event {
                Err(e) => {
                    tracing::debug!("watching nodes: {e}; retrying");
                    failure = Some(e);
                    continue;
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => listing = true,
                Ok(watcher::Event::InitDone) => {
                    listing = false;
                    listed = true;
                }
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {}
            }
            if listing {
                continue;
            }
            let now_missing = missing(&seen(), wanted, version);
            if now_missing.is_empty() {
                return Ok::<_, NodesError>(());
            }
            if last_report.as_ref() != Some(&now_missing) {
                events(Event::Waiting(now_missing.clone()));
                last_report = Some(now_missing);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, watch).await {
        Ok(result) => {
            result?;
            Ok(seen().into_values().collect())
        }
        Err(_) => match failure {
            Some(e) if !listed => Err(NodesError::Watch(e)),
            _ => Err(NodesError::NotReady {
                not_ready: last_report.unwrap_or_else(|| missing(&seen(), wanted, version)),
                elapsed: started.elapsed(),
            }),
        },
    }
}

/// Marks a node (un)schedulable.
///
/// # Errors
/// The API call fails.
pub async fn set_unschedulable(
    client: &Client,
    node: &str,
    unschedulable: bool,
) -> Result<(), NodesError> {
    let api: Api<Node> = Api::all(client.clone());
    api.patch(
        node,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "spec": { "unschedulable": unschedulable } })),
    )
    .await
    .map_err(api_err(format!(
        "{} node {node}",
        if unschedulable {
            "cordoning"
        } else {
            "uncordoning"
        }
    )))?;
    Ok(())
}

/// Whether a pod is left on a node by a drain: DaemonSet pods and static (mirror) pods are,
/// as `kubectl drain --ignore-daemonsets` leaves them; so are finished pods.
fn stays_on_node(pod: &Pod) -> bool {
    let daemon = pod
        .owner_references()
        .iter()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    let mirror = pod
        .annotations()
        .contains_key("kubernetes.io/config.mirror");
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    daemon || mirror || finished
}

/// Cordons `node` and evicts its pods (DaemonSet and static pods stay), retrying evictions
/// that a PodDisruptionBudget refuses (HTTP 429) until `timeout`, then waits, by watching,
/// until the evicted pods are gone.
///
/// # Errors
/// The API fails, or pods are still there after `timeout` ([`NodesError::Drain`]).
pub async fn drain(client: &Client, node: &str, timeout: Duration) -> Result<(), NodesError> {
    let started = Instant::now();
    set_unschedulable(client, node, true).await?;
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let mut delay = Duration::from_millis(500);
    loop {
        let list = pods
            .list(&on_node)
            .await
            .map_err(api_err(format!("listing the pods on {node}")))?;
        let movable: Vec<&Pod> = list.items.iter().filter(|p| !stays_on_node(p)).collect();
        if movable.is_empty() {
            return Ok(());
        }
        // All at once, as `kubectl drain` does: a pod whose budget refuses its eviction does
        // not hold up the others. kube's default client retries a 429 itself, with backoff,
        // for minutes: each eviction is bounded by the drain's own time limit.
        let left = timeout.saturating_sub(started.elapsed());
        let outcomes = futures::future::join_all(
            movable
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|pod| {
                    let ns = pod.namespace().unwrap_or_default();
                    let name = pod.name_any();
                    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                    async move {
                        let outcome =
                            tokio::time::timeout(left, api.evict(&name, &EvictParams::default()))
                                .await;
                        (ns, name, outcome)
                    }
                }),
        )
        .await;
        let mut refused = Vec::new();
        for (ns, name, outcome) in outcomes {
            match outcome {
                Ok(Ok(_)) => tracing::info!(node, pod = %format!("{ns}/{name}"), "evicted"),
                Ok(Err(kube::Error::Api(status))) if status.code == 404 => {}
                Ok(Err(kube::Error::Api(status))) if status.code == 429 => {
                    refused.push(format!("{ns}/{name} ({})", status.message));
                }
                Ok(Err(e)) => {
                    return Err(api_err(format!("evicting {ns}/{name} from {node}"))(e));
                }
                Err(_) => refused.push(format!(
                    "{ns}/{name} (its eviction was still refused when the time ran out: a disruption budget?)"
                )),
            }
        }
        // Wait for the evicted pods to go, by watching each one's deletion.
        let left = started.elapsed();
        let remaining = timeout.saturating_sub(left);
        if remaining.is_zero() {
            return Err(NodesError::Drain {
                node: node.to_owned(),
                pods: movable
                    .iter()
                    .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
                    .collect(),
                elapsed: left,
            });
        }
        let gone = futures::future::join_all(movable.iter().map(|pod| {
            let api: Api<Pod> =
                Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
            let name = pod.name_any();
            let uid = pod.uid().unwrap_or_default();
            async move {
                kube::runtime::wait::await_condition(
                    api,
                    &name,
                    kube::runtime::wait::conditions::is_deleted(&uid),
                )
                .await
            }
        }));
        let wait_for = if refused.is_empty() {
            remaining
        } else {
            // Some evictions were refused by a disruption budget: try again soon.
            tracing::info!(node, refused = %refused.join(", "), "eviction refused by a disruption budget; retrying");
            delay = (delay * 2).min(Duration::from_secs(10));
            delay.min(remaining)
        };
        let _ = tokio::time::timeout(wait_for, gone).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ApiServer, node};

    #[tokio::test]
    async fn nodes_already_ready_return_at_once() {
        let (client, server) = ApiServer::start(
            vec![node("cp", true, "v1.33.5"), node("w1", true, "v1.33.5")],
            &[],
        );
        let states = wait_nodes_ready(
            &client,
            &["cp".into(), "w1".into()],
            Some("v1.33.5"),
            Duration::from_secs(30),
            &|_| {},
        )
        .await
        .unwrap();
        assert_eq!(states.len(), 2);
        let requests = server.requests();
        assert!(
            requests[0].starts_with("GET /api/v1/nodes?"),
            "{requests:?}"
        );
    }

    #[tokio::test]
    async fn waits_for_the_watch_to_report_readiness() {
        let (client, server) = ApiServer::start(
            vec![node("cp", true, "v1.33.5"), node("w1", false, "v1.33.5")],
            &[],
        );
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let waiting = tokio::spawn({
            let client = client.clone();
            async move {
                wait_nodes_ready(&client, &[], None, Duration::from_secs(30), &move |e| {
                    if let Event::Waiting(m) = e {
                        seen2.lock().unwrap().push(m);
                    }
                })
                .await
            }
        });
        server.wait_for_watchers(1).await;
        server.update(node("w1", true, "v1.33.5"));
        let states = waiting.await.unwrap().unwrap();
        assert!(states.iter().all(|s| s.ready));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0][0].0, "w1");
        assert!(seen[0][0].1.contains("KubeletNotReady"), "{seen:?}");
    }

    // A paused clock: the deadline passes only once the wait has seen everything the server
    // has to say, so a loaded machine cannot turn "not Ready" into "no answer yet".
    #[tokio::test(start_paused = true)]
    async fn timeout_names_the_node_and_its_condition() {
        let (client, _server) = ApiServer::start(
            vec![node("cp", true, "v1.33.5"), node("w1", false, "v1.33.5")],
            &[],
        );
        let err = wait_nodes_ready(
            &client,
            &["cp".into(), "w1".into(), "w2".into()],
            None,
            Duration::from_millis(300),
            &|_| {},
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("these nodes are not Ready"), "{text}");
        assert!(
            text.contains("w1 (Ready=False (KubeletNotReady): container runtime network not ready: cni plugin not initialized)"),
            "{text}"
        );
        assert!(
            text.contains("w2 (not registered with the API server)"),
            "{text}"
        );
        assert!(!text.contains("cp ("), "{text}");
    }

    // A paused clock: the deadline passes only once the wait has seen everything the server
    // has to say, so a loaded machine cannot turn "not Ready" into "no answer yet".
    #[tokio::test(start_paused = true)]
    async fn version_wait_reports_the_old_kubelet() {
        let (client, _server) = ApiServer::start(vec![node("cp", true, "v1.32.9")], &[]);
        let err = wait_nodes_ready(
            &client,
            &["cp".into()],
            Some("v1.33.5"),
            Duration::from_millis(300),
            &|_| {},
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("cp (kubelet v1.32.9 (waiting for v1.33.5))"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn cordon_and_uncordon_patch_the_node() {
        let (client, server) = ApiServer::start(vec![node("w1", true, "v1.33.5")], &[]);
        set_unschedulable(&client, "w1", true).await.unwrap();
        assert!(list(&client).await.unwrap()[0].unschedulable);
        set_unschedulable(&client, "w1", false).await.unwrap();
        assert!(!list(&client).await.unwrap()[0].unschedulable);
        let requests = server.requests();
        assert!(
            requests.contains(&"PATCH /api/v1/nodes/w1? application/merge-patch+json {\"spec\":{\"unschedulable\":true}}".to_owned()),
            "{requests:#?}"
        );
    }

    fn pod(ns: &str, name: &str, node: &str, owner: Option<&str>) -> serde_json::Value {
        let mut pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": ns },
            "spec": { "nodeName": node, "containers": [{ "name": "c", "image": "i" }] },
            "status": { "phase": "Running" }
        });
        if let Some(kind) = owner {
            pod["metadata"]["ownerReferences"] = serde_json::json!([{
                "apiVersion": "apps/v1", "kind": kind, "name": "owner", "uid": "u", "controller": true
            }]);
        }
        pod
    }

    #[tokio::test]
    async fn drain_cordons_and_evicts_all_but_daemonset_and_static_pods() {
        let mut mirror = pod("kube-system", "kube-apiserver-w1", "w1", None);
        mirror["metadata"]["annotations"] =
            serde_json::json!({ "kubernetes.io/config.mirror": "x" });
        let (client, server) = ApiServer::start(
            vec![
                node("w1", true, "v1.32.9"),
                pod("apps", "web-1", "w1", Some("ReplicaSet")),
                pod("apps", "web-2", "w1", Some("ReplicaSet")),
                pod("apps", "elsewhere", "w2", Some("ReplicaSet")),
                pod("kube-flannel", "flannel-abc", "w1", Some("DaemonSet")),
                mirror,
            ],
            &[],
        );
        // A disruption budget refuses the first eviction of web-2.
        server.refuse_evictions("apps/web-2", 1);
        drain(&client, "w1", Duration::from_secs(30)).await.unwrap();
        assert!(server.get("v1", "nodes", None, "w1").unwrap()["spec"]["unschedulable"] == true);
        assert!(server.get("v1", "pods", Some("apps"), "web-1").is_none());
        assert!(server.get("v1", "pods", Some("apps"), "web-2").is_none());
        assert!(
            server
                .get("v1", "pods", Some("apps"), "elsewhere")
                .is_some()
        );
        assert!(
            server
                .get("v1", "pods", Some("kube-flannel"), "flannel-abc")
                .is_some()
        );
        assert!(
            server
                .get("v1", "pods", Some("kube-system"), "kube-apiserver-w1")
                .is_some()
        );
        let evictions = server
            .requests()
            .into_iter()
            .filter(|r| r.starts_with("POST") && r.contains("/eviction"))
            .count();
        assert_eq!(
            evictions, 3,
            "web-1 once, web-2 twice (refused, then allowed)"
        );
    }

    #[tokio::test]
    async fn drain_gives_up_naming_the_pods_left() {
        let (client, server) = ApiServer::start(
            vec![
                node("w1", true, "v1.32.9"),
                pod("db", "postgres-0", "w1", Some("StatefulSet")),
            ],
            &[],
        );
        server.refuse_evictions("db/postgres-0", u32::MAX);
        let err = drain(&client, "w1", Duration::from_millis(800))
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("draining w1: after ")
                && err
                    .to_string()
                    .ends_with("pods still running: db/postgres-0"),
            "{err}"
        );
    }
}
