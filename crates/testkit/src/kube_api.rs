//! A stateful fake of the Kubernetes API server for unit tests of `kube` code, on
//! `tower-test`: a [`kube::Client`] whose requests reach this in-memory server instead of a
//! network. It keeps objects as JSON, assigns resource versions, answers list, get, watch
//! (held open until something newer happens), JSON merge patch, server-side apply (create or
//! merge), delete and pod eviction, and API discovery for the kinds it is told about; and it
//! records every request (method, path, query, content type, body) for tests to check.
//!
//! Like the real server, a patch that changes nothing keeps the object's resourceVersion
//! (and sends no watch event), and `dryRun=All` stores nothing.
//!
//! Server-side apply keeps the real server's field ownership in its simplest form: each leaf
//! field an apply or a patch set is owned by its field manager; a non-forced apply that sets
//! a field another manager owns to another value is refused with the real server's 409 (the
//! same value makes the field shared), a forced one takes the field over.
//!
//! It is not an API server: no admission, no defaulting, no schemas (so neither unknown-field
//! refusals nor pruning), no `managedFields` in the objects. Tests that need those run
//! against a real API server (`control_plane`, or the cluster `KUBECONFIG` names).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::percent_decode;

/// The Kubernetes version the fake reports at `/version`.
pub const FAKE_VERSION: &str = "v1.33.5";

/// One kind the fake serves: its group/version, plural, kind and scope.
#[derive(Debug, Clone)]
pub struct Kind {
    /// `v1` or `group/version`.
    pub api_version: &'static str,
    /// Plural resource name (`nodes`).
    pub plural: &'static str,
    /// Kind (`Node`).
    pub kind: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
}

/// The kinds of core Kubernetes the fake knows by default.
pub const CORE_KINDS: &[Kind] = &[
    Kind {
        api_version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
    },
    Kind {
        api_version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
    },
    Kind {
        api_version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
    },
    Kind {
        api_version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
    },
    Kind {
        api_version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
    },
    Kind {
        api_version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
    },
    Kind {
        api_version: "v1",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
    },
    Kind {
        api_version: "apps/v1",
        plural: "daemonsets",
        kind: "DaemonSet",
        namespaced: true,
    },
    Kind {
        api_version: "apps/v1",
        plural: "statefulsets",
        kind: "StatefulSet",
        namespaced: true,
    },
    Kind {
        api_version: "discovery.k8s.io/v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
    },
    Kind {
        api_version: "apiextensions.k8s.io/v1",
        plural: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        namespaced: false,
    },
    Kind {
        api_version: "apps/v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
    },
    Kind {
        api_version: "rbac.authorization.k8s.io/v1",
        plural: "clusterroles",
        kind: "ClusterRole",
        namespaced: false,
    },
    Kind {
        api_version: "rbac.authorization.k8s.io/v1",
        plural: "clusterrolebindings",
        kind: "ClusterRoleBinding",
        namespaced: false,
    },
    Kind {
        api_version: "rbac.authorization.k8s.io/v1",
        plural: "roles",
        kind: "Role",
        namespaced: true,
    },
    Kind {
        api_version: "rbac.authorization.k8s.io/v1",
        plural: "rolebindings",
        kind: "RoleBinding",
        namespaced: true,
    },
];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    api_version: String,
    plural: String,
    namespace: Option<String>,
    name: String,
}

#[derive(Debug, Clone)]
struct WatchEvent {
    version: u64,
    kind: &'static str,
    key: Key,
    object: Value,
}

#[derive(Debug, Default)]
struct State {
    kinds: Vec<Kind>,
    objects: BTreeMap<Key, Value>,
    events: Vec<WatchEvent>,
    version: u64,
    requests: Vec<String>,
    watches: usize,
    /// Evictions of these pods (`namespace/name`) are refused with 429 this many more times.
    refuse_evictions: BTreeMap<String, u32>,
    /// Requests for objects of these resources (plural) are answered as not served this many
    /// more times.
    not_served: BTreeMap<String, u32>,
    /// Each object's leaf fields (paths of keys) and the field managers that own them.
    owners: BTreeMap<Key, BTreeMap<Vec<String>, BTreeSet<String>>>,
}

/// The fake server; clones share it.
#[derive(Debug, Clone)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

struct Route {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// The real server's answer to an apply that conflicts: `Apply failed with 1 conflict:
/// conflict with "kubectl": .data.owner`, each field also a cause.
fn conflict_status(conflicts: &BTreeMap<String, Vec<String>>) -> Value {
    let count: usize = conflicts.values().map(Vec::len).sum();
    let plural = if count == 1 { "" } else { "s" };
    let parts: Vec<String> = conflicts
        .iter()
        .map(|(manager, fields)| match fields.as_slice() {
            [one] => format!("conflict with \"{manager}\": {one}"),
            many => format!(
                "conflicts with \"{manager}\":\n{}",
                many.iter()
                    .map(|f| format!("- {f}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        })
        .collect();
    let causes: Vec<Value> = conflicts
        .iter()
        .flat_map(|(manager, fields)| {
            fields.iter().map(move |f| {
                json!({ "reason": "FieldManagerConflict",
                        "message": format!("conflict with \"{manager}\""), "field": f })
            })
        })
        .collect();
    let mut answer = status(
        409,
        "Conflict",
        &format!(
            "Apply failed with {count} conflict{plural}: {}",
            parts.join("\n")
        ),
    );
    answer["details"] = json!({ "causes": causes });
    answer
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 300 { "Success" } else { "Failure" },
        "message": message, "reason": reason, "code": code,
    })
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string().into_bytes()));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    if let (Value::Object(t), Value::Object(p)) = (&mut *target, patch) {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

/// The leaf fields of an applied configuration (objects are descended into; lists and
/// scalars are leaves), without the object's identity, which nobody owns.
fn leaves(value: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                path.push(k.clone());
                let identity = matches!(
                    path.iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .as_slice(),
                    ["apiVersion" | "kind"]
                        | ["metadata", "name" | "namespace" | "resourceVersion" | "uid"]
                );
                if !identity {
                    leaves(v, path, out);
                }
                path.pop();
            }
        }
        _ => out.push((path.clone(), value.clone())),
    }
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.get(k))
}

/// `.data.owner`, as the real server names a field.
fn field_path(path: &[String]) -> String {
    path.iter().fold(String::new(), |mut out, k| {
        out.push('.');
        out.push_str(k);
        out
    })
}

fn query_pairs(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), percent_decode(v))
        })
        .collect()
}

/// Whether `object` matches a field selector of `a.b=c` terms joined by commas.
fn fields_match(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (path, want) = term.split_once('=').unwrap_or((term, ""));
        let want = want.trim_start_matches('=');
        let mut v = object;
        for part in path.split('.') {
            v = &v[part];
        }
        v.as_str() == Some(want)
    })
}

impl ApiServer {
    /// A server holding `objects` (JSON with apiVersion, kind and metadata), with
    /// [`CORE_KINDS`] and `extra_kinds`, and a client connected to it.
    ///
    /// # Panics
    /// An object is of an unknown kind, or there is no tokio runtime.
    pub fn start(objects: Vec<Value>, extra_kinds: &[Kind]) -> (kube::Client, Self) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = Self {
            state: Arc::new(Mutex::new(State {
                kinds: CORE_KINDS.iter().chain(extra_kinds).cloned().collect(),
                ..State::default()
            })),
            changed: Arc::new(Notify::new()),
        };
        for object in objects {
            server.update(object);
        }
        let this = server.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let this = this.clone();
                tokio::spawn(async move {
                    let response = this.handle(request).await;
                    send.send_response(response);
                });
            }
        });
        (kube::Client::new(service, "default"), server)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every request so far as `METHOD path?query content-type body`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// The stored object, if any.
    pub fn get(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.lock()
            .objects
            .get(&Key {
                api_version: api_version.into(),
                plural: plural.into(),
                namespace: namespace.map(Into::into),
                name: name.into(),
            })
            .cloned()
    }

    /// Refuses the next `times` evictions of pod `namespace/name` with 429, as a
    /// `PodDisruptionBudget` would.
    pub fn refuse_evictions(&self, pod: &str, times: u32) {
        self.lock().refuse_evictions.insert(pod.into(), times);
    }

    /// Answers the next `times` requests for objects of `plural` as a real API server does
    /// for a moment after a CustomResourceDefinition is `Established` and discovery lists its
    /// kind, while the handler for its path is not yet in place: `404` with the plain-text
    /// body `404 page not found` (the server's mux, not a `Status`). Measured on kube-apiserver
    /// v1.33.5 by `kube-manifest`'s real-cluster suite, which met it on two cores.
    pub fn not_served_yet(&self, plural: &str, times: u32) {
        self.lock().not_served.insert(plural.into(), times);
    }

    /// Waits until at least `n` watch requests have arrived.
    pub async fn wait_for_watchers(&self, n: usize) {
        loop {
            let notified = self.changed.notified();
            if self.lock().watches >= n {
                return;
            }
            notified.await;
        }
    }

    fn kind_of(&self, object: &Value) -> Kind {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        self.lock()
            .kinds
            .iter()
            .find(|k| k.api_version == api_version && k.kind == kind)
            .cloned()
            .unwrap_or_else(|| panic!("the fake API server does not serve {api_version} {kind}"))
    }

    /// Creates or replaces an object (as a controller or kubelet would), notifying watchers.
    pub fn update(&self, object: Value) {
        let kind = self.kind_of(&object);
        let key = Key {
            api_version: kind.api_version.into(),
            plural: kind.plural.into(),
            namespace: object["metadata"]["namespace"].as_str().map(Into::into),
            name: object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .into(),
        };
        let mut state = self.lock();
        Self::store(&mut state, key, object);
        drop(state);
        self.changed.notify_waiters();
    }

    fn store(state: &mut State, key: Key, mut object: Value) -> Value {
        state.version += 1;
        let version = state.version;
        let existed = state.objects.get(&key).cloned();
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        object["metadata"]["uid"] = existed.as_ref().map_or_else(
            || json!(format!("uid-{}-{version}", key.name)),
            |e| e["metadata"]["uid"].clone(),
        );
        state.objects.insert(key.clone(), object.clone());
        state.events.push(WatchEvent {
            version,
            kind: if existed.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            },
            key,
            object: object.clone(),
        });
        object
    }

    fn remove(state: &mut State, key: &Key) -> Option<Value> {
        let object = state.objects.remove(key)?;
        state.owners.remove(key);
        state.version += 1;
        state.events.push(WatchEvent {
            version: state.version,
            kind: "DELETED",
            key: key.clone(),
            object: object.clone(),
        });
        Some(object)
    }

    fn route(&self, path: &str) -> Result<Option<Route>, Value> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (api_version, rest) = match segments.as_slice() {
            ["api", v, rest @ ..] => ((*v).to_owned(), rest),
            ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
            _ => return Err(status(404, "NotFound", &format!("no route {path}"))),
        };
        if rest.is_empty() {
            return Ok(None);
        }
        let (namespace, rest) = match rest {
            ["namespaces", ns, r, more @ ..] => (Some((*ns).to_owned()), {
                let mut v = vec![*r];
                v.extend_from_slice(more);
                v
            }),
            other => (None, other.to_vec()),
        };
        let state = self.lock();
        let kind = state
            .kinds
            .iter()
            .find(|k| k.api_version == api_version && k.plural == rest[0])
            .cloned()
            .ok_or_else(|| {
                status(
                    404,
                    "NotFound",
                    &format!("the server could not find the requested resource ({path})"),
                )
            })?;
        Ok(Some(Route {
            kind,
            namespace,
            name: rest.get(1).map(|s| (*s).to_owned()),
            subresource: rest.get(2).map(|s| (*s).to_owned()),
        }))
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one match over the verbs the fake serves reads best whole"
    )]
    async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = String::from_utf8_lossy(&body).into_owned();
        self.lock().requests.push(
            format!("{} {path}?{query} {content_type} {text}", parts.method)
                .trim_end()
                .to_owned(),
        );
        let params = query_pairs(&query);
        if path == "/version" {
            // What a real API server answers (GET /version, no authorization needed).
            return respond(
                200,
                &json!({
                    "major": "1", "minor": "33", "gitVersion": FAKE_VERSION,
                    "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                    "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
                }),
            );
        }
        let route = match self.route(&path) {
            Ok(Some(r)) => r,
            Ok(None) => return respond(200, &self.discovery(&path)),
            Err(e) => return respond(404, &e),
        };
        if let Some(left) = self.lock().not_served.get_mut(route.kind.plural)
            && *left > 0
        {
            *left -= 1;
            let mut response = Response::new(Body::from(b"404 page not found\n".to_vec()));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return response;
        }
        let key = |name: &str| Key {
            api_version: route.kind.api_version.into(),
            plural: route.kind.plural.into(),
            namespace: if route.kind.namespaced {
                route.namespace.clone()
            } else {
                None
            },
            name: name.into(),
        };
        let not_found = |name: &str| {
            status(
                404,
                "NotFound",
                &format!("{} \"{name}\" not found", route.kind.plural),
            )
        };
        match (
            parts.method.as_str(),
            route.name.as_deref(),
            route.subresource.as_deref(),
        ) {
            ("GET", None, None) if params.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                self.watch(&route, &params).await
            }
            ("GET", None, None) => {
                let state = self.lock();
                let items: Vec<Value> = state
                    .objects
                    .iter()
                    .filter(|(k, _)| {
                        k.api_version == route.kind.api_version
                            && k.plural == route.kind.plural
                            && (route.namespace.is_none() || k.namespace == route.namespace)
                    })
                    .map(|(_, v)| v)
                    .filter(|v| fields_match(v, params.get("fieldSelector")))
                    .cloned()
                    .collect();
                respond(
                    200,
                    &json!({
                        "apiVersion": route.kind.api_version,
                        "kind": format!("{}List", route.kind.kind),
                        "metadata": { "resourceVersion": state.version.to_string() },
                        "items": items,
                    }),
                )
            }
            ("GET", Some(name), None) => match self.lock().objects.get(&key(name)) {
                Some(o) => respond(200, o),
                None => respond(404, &not_found(name)),
            },
            ("PATCH", Some(name), None) => {
                let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                    return respond(400, &status(400, "BadRequest", "the patch is not JSON"));
                };
                let mut state = self.lock();
                let existing = state.objects.get(&key(name)).cloned();
                let object = if content_type.starts_with("application/apply-patch") {
                    if params.get("fieldManager").is_none_or(String::is_empty) {
                        return respond(
                            422,
                            &status(
                                422,
                                "Invalid",
                                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                            ),
                        );
                    }
                    let manager = params.get("fieldManager").cloned().unwrap_or_default();
                    let force = params.get("force").is_some_and(|f| f == "true");
                    let mut fields = Vec::new();
                    leaves(&patch, &mut Vec::new(), &mut fields);
                    let before = existing.clone().unwrap_or_else(|| json!({}));
                    let owned = state.owners.get(&key(name)).cloned().unwrap_or_default();
                    // structured-merge-diff's rule: a field set to another value than the
                    // one stored, owned by another manager, is a conflict unless forced.
                    let mut conflicts: BTreeMap<String, Vec<String>> = BTreeMap::new();
                    for (path, value) in &fields {
                        let others: Vec<String> = owned.get(path).map_or_else(Vec::new, |o| {
                            o.iter().filter(|m| **m != manager).cloned().collect()
                        });
                        if !force
                            && !others.is_empty()
                            && lookup(&before, path).is_some_and(|v| v != value)
                        {
                            for other in others {
                                conflicts.entry(other).or_default().push(field_path(path));
                            }
                        }
                    }
                    if !conflicts.is_empty() {
                        return respond(409, &conflict_status(&conflicts));
                    }
                    if params.get("dryRun").is_none_or(|d| d != "All") {
                        let owners = state.owners.entry(key(name)).or_default();
                        for (path, value) in fields {
                            let set = owners.entry(path.clone()).or_default();
                            if lookup(&before, &path) != Some(&value) {
                                set.clear();
                            }
                            set.insert(manager.clone());
                        }
                    }
                    let mut object = existing.unwrap_or_else(|| json!({}));
                    merge(&mut object, &patch);
                    object
                } else if content_type == "application/merge-patch+json" {
                    let Some(mut object) = existing else {
                        return respond(404, &not_found(name));
                    };
                    // An update owns what it changed (as the manager the request names, the
                    // real server otherwise takes the client's user agent).
                    if params.get("dryRun").is_none_or(|d| d != "All") {
                        let manager = params
                            .get("fieldManager")
                            .cloned()
                            .unwrap_or_else(|| "unknown".into());
                        let mut fields = Vec::new();
                        leaves(&patch, &mut Vec::new(), &mut fields);
                        let owners = state.owners.entry(key(name)).or_default();
                        for (path, value) in fields {
                            if lookup(&object, &path) != Some(&value) {
                                owners.insert(path, BTreeSet::from([manager.clone()]));
                            }
                        }
                    }
                    merge(&mut object, &patch);
                    object
                } else {
                    return respond(
                        415,
                        &status(
                            415,
                            "UnsupportedMediaType",
                            &format!(
                                "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/apply-patch+yaml (got {content_type})"
                            ),
                        ),
                    );
                };
                // As the real server: a write that changes nothing keeps the resourceVersion
                // and sends no watch event; a dry run (`dryRun=All`) stores nothing.
                if let Some(before) = state.objects.get(&key(name))
                    && *before == object
                {
                    return respond(200, before);
                }
                if params.get("dryRun").is_some_and(|d| d == "All") {
                    let mut answer = object;
                    if answer["metadata"]["uid"].is_null() {
                        answer["metadata"]["uid"] = json!(format!("uid-{name}-dry-run"));
                    }
                    return respond(200, &answer);
                }
                let stored = Self::store(&mut state, key(name), object);
                drop(state);
                self.changed.notify_waiters();
                respond(200, &stored)
            }
            ("DELETE", Some(name), None) => {
                let removed = Self::remove(&mut self.lock(), &key(name));
                self.changed.notify_waiters();
                match removed {
                    Some(o) => respond(200, &o),
                    None => respond(404, &not_found(name)),
                }
            }
            ("POST", Some(name), Some("eviction")) if route.kind.plural == "pods" => {
                let pod = format!("{}/{name}", route.namespace.clone().unwrap_or_default());
                let mut state = self.lock();
                if let Some(left) = state.refuse_evictions.get_mut(&pod)
                    && *left > 0
                {
                    *left -= 1;
                    return respond(
                        429,
                        &status(
                            429,
                            "TooManyRequests",
                            "Cannot evict pod as it would violate the pod's disruption budget.",
                        ),
                    );
                }
                let removed = Self::remove(&mut state, &key(name));
                drop(state);
                self.changed.notify_waiters();
                match removed {
                    Some(_) => respond(201, &status(201, "", "")),
                    None => respond(404, &not_found(name)),
                }
            }
            (method, _, _) => respond(
                405,
                &status(
                    405,
                    "MethodNotAllowed",
                    &format!("the fake does not do {method} {path}"),
                ),
            ),
        }
    }

    async fn watch(&self, route: &Route, params: &BTreeMap<String, String>) -> Response<Body> {
        let since: u64 = params
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        {
            self.lock().watches += 1;
        }
        self.changed.notify_waiters();
        loop {
            let notified = self.changed.notified();
            let lines: Vec<String> = self
                .lock()
                .events
                .iter()
                .filter(|e| {
                    e.version > since
                        && e.key.api_version == route.kind.api_version
                        && e.key.plural == route.kind.plural
                        && (route.namespace.is_none() || e.key.namespace == route.namespace)
                        && fields_match(&e.object, params.get("fieldSelector"))
                })
                .map(|e| json!({ "type": e.kind, "object": e.object }).to_string())
                .collect();
            if !lines.is_empty() {
                let mut body = lines.join("\n");
                body.push('\n');
                return Response::new(Body::from(body.into_bytes()));
            }
            notified.await;
        }
    }

    fn discovery(&self, path: &str) -> Value {
        let api_version = path
            .trim_matches('/')
            .strip_prefix("api/")
            .or_else(|| path.trim_matches('/').strip_prefix("apis/"))
            .unwrap_or_default()
            .to_owned();
        let resources: Vec<Value> = self
            .lock()
            .kinds
            .iter()
            .filter(|k| k.api_version == api_version)
            .map(|k| {
                json!({
                    "name": k.plural, "singularName": k.kind.to_lowercase(), "namespaced": k.namespaced,
                    "kind": k.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                })
            })
            .collect();
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": resources })
    }
}
