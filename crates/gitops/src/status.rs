//! The Application tree from the root (app of apps): each Application's own sync and health
//! as Argo CD reports them, and the aggregate — a parent is healthy and synced only when all
//! its descendants are. `wait` reads the current state first (so an already synced tree
//! returns at once) and then watches; refresh and sync are requested the way Argo CD's own
//! CLI does, through the Application object.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::event::{Event, Events};
use crate::types::Application;

/// The annotation that asks Argo CD to refresh an Application.
pub const REFRESH: &str = "argocd.argoproj.io/refresh";

/// One Application in the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppNode {
    /// Name.
    pub name: String,
    /// `Synced`, `OutOfSync`, `Unknown`.
    pub sync: String,
    /// `Healthy`, `Progressing`, `Degraded`, `Suspended`, `Missing`, `Unknown`.
    pub health: String,
    /// Argo CD's health message and conditions.
    pub messages: Vec<String>,
    /// Whether it and every descendant are Synced and Healthy.
    pub ready: bool,
    /// Child Applications (those it manages).
    pub children: Vec<AppNode>,
}

impl AppNode {
    /// Every Application of the tree that is not Synced and Healthy, with Argo CD's
    /// messages: `name: sync/health: messages`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_problems(&mut out);
        out
    }

    fn collect_problems(&self, out: &mut Vec<String>) {
        if self.sync != "Synced" || self.health != "Healthy" {
            out.push(format!(
                "{}: {}/{}{}",
                self.name,
                self.sync,
                self.health,
                if self.messages.is_empty() {
                    String::new()
                } else {
                    format!(": {}", self.messages.join("; "))
                }
            ));
        }
        for c in &self.children {
            c.collect_problems(out);
        }
    }

    /// The tree as indented lines (`name  sync  health`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(0, &mut out);
        out
    }

    fn render_into(&self, depth: usize, out: &mut String) {
        let _ = writeln!(
            out,
            "{:indent$}{:<width$} {:<10} {}",
            "",
            self.name,
            self.sync,
            self.health,
            indent = depth * 2,
            width = 32usize.saturating_sub(depth * 2)
        );
        for c in &self.children {
            c.render_into(depth + 1, out);
        }
    }
}

/// Reading or waiting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The API call failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The root Application does not exist.
    #[error("no Application {name} in namespace {namespace}")]
    NoRoot {
        /// Name.
        name: String,
        /// Namespace.
        namespace: String,
    },
    /// The Applications could never be listed and watched before the time ran out (the
    /// last failure).
    #[error("watching Applications: {0}")]
    Watch(#[from] watcher::Error),
    /// The tree was not Synced and Healthy in time.
    #[error("after {elapsed:.0?}, not Synced and Healthy: {}", problems.join("; "))]
    Timeout {
        /// What was not, with Argo CD's messages.
        problems: Vec<String>,
        /// Time waited.
        elapsed: Duration,
    },
}

/// Builds the tree under `root` from a set of Applications (by name). Children are the
/// Applications listed in a parent's `status.resources`; a child listed but absent shows as
/// `Missing`.
///
/// ```
/// use std::collections::BTreeMap;
/// use gitops::status::build_tree;
/// use gitops::types::Application;
///
/// let app = |yaml: &str| -> Application { serde_norway::from_str(yaml).unwrap() };
/// let root = app(r#"
/// apiVersion: argoproj.io/v1alpha1
/// kind: Application
/// metadata: { name: root, namespace: argocd }
/// spec: { project: default, destination: { namespace: argocd } }
/// status:
///   sync: { status: Synced }
///   health: { status: Healthy }
///   resources:
///     - { group: argoproj.io, kind: Application, name: metallb }
///     - { group: argoproj.io, kind: Application, name: harbor }
/// "#);
/// let metallb = app(r#"
/// apiVersion: argoproj.io/v1alpha1
/// kind: Application
/// metadata: { name: metallb, namespace: argocd }
/// spec: { project: default, destination: { namespace: metallb-system } }
/// status: { sync: { status: Synced }, health: { status: Healthy } }
/// "#);
/// let apps: BTreeMap<String, Application> =
///     [("root".to_owned(), root), ("metallb".to_owned(), metallb)].into();
/// let tree = build_tree(&apps, "root").unwrap();
/// // harbor is listed by root but does not exist yet: the whole tree is not ready.
/// assert!(!tree.ready);
/// assert_eq!(tree.problems(), ["harbor: Unknown/Missing: the Application does not exist yet"]);
/// println!("{}", tree.render());
/// ```
pub fn build_tree(apps: &BTreeMap<String, Application>, root: &str) -> Option<AppNode> {
    fn node(
        apps: &BTreeMap<String, Application>,
        name: &str,
        seen: &mut BTreeSet<String>,
    ) -> AppNode {
        seen.insert(name.to_owned());
        let Some(app) = apps.get(name) else {
            return AppNode {
                name: name.to_owned(),
                sync: "Unknown".into(),
                health: "Missing".into(),
                messages: vec!["the Application does not exist yet".into()],
                ready: false,
                children: Vec::new(),
            };
        };
        let status = app.status.clone().unwrap_or_default();
        let sync = status
            .sync
            .map(|s| s.status)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "Unknown".into());
        let health = status
            .health
            .clone()
            .map(|h| h.status)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "Unknown".into());
        let mut messages: Vec<String> = status.health.and_then(|h| h.message).into_iter().collect();
        messages.extend(
            status
                .conditions
                .into_iter()
                .flatten()
                .map(|c| format!("{}: {}", c.type_, c.message)),
        );
        let children: Vec<AppNode> = status
            .resources
            .into_iter()
            .flatten()
            .filter(|r| r.kind == "Application" && r.group == "argoproj.io")
            .map(|r| r.name)
            .filter(|n| !seen.contains(n))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|n| node(apps, &n, seen))
            .collect();
        let ready = sync == "Synced" && health == "Healthy" && children.iter().all(|c| c.ready);
        AppNode {
            name: name.to_owned(),
            sync,
            health,
            messages,
            ready,
            children,
        }
    }
    apps.contains_key(root)
        .then(|| node(apps, root, &mut BTreeSet::new()))
}

/// The tree under `root`, read now.
///
/// # Errors
/// The API fails or there is no such root.
pub async fn tree(client: &Client, namespace: &str, root: &str) -> Result<AppNode, StatusError> {
    let api: Api<Application> = Api::namespaced(client.clone(), namespace);
    let apps = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|source| StatusError::Api {
            action: format!("listing Applications in {namespace}"),
            source,
        })?;
    let by_name = apps.items.into_iter().map(|a| (a.name_any(), a)).collect();
    build_tree(&by_name, root).ok_or_else(|| StatusError::NoRoot {
        name: root.to_owned(),
        namespace: namespace.to_owned(),
    })
}

/// Waits until the whole tree under `root` is Synced and Healthy: the first list answers at
/// once when it already is; afterwards every change is watched. `events` hears the
/// problems whenever they change ([`Event::Waiting`]).
///
/// # Errors
/// The timeout passes ([`StatusError::Timeout`] lists each Application that is not ready,
/// with Argo CD's messages) or the watch fails.
pub async fn wait(
    client: &Client,
    namespace: &str,
    root: &str,
    timeout: Duration,
    events: Events<'_>,
) -> Result<AppNode, StatusError> {
    let started = Instant::now();
    let api: Api<Application> = Api::namespaced(client.clone(), namespace);
    // kube's reflector keeps the Applications seen; a (re)listing is judged once complete.
    let (store, writer) = reflector::store();
    let mut last: Option<Vec<String>> = None;
    // A failed watch is retried with backoff (an API server restarting, a watch answered
    // `410 Gone`: the watcher lists again); the failure is reported only if no listing ever
    // succeeded before the time ran out.
    let mut failure: Option<watcher::Error> = None;
    let mut listed = false;
    let work = async {
        let mut changes = reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        )
        .boxed();
        let mut listing = false;
        while let Some(event) = changes.next().await {
            match event {
                Err(e) => {
                    tracing::debug!("watching Applications: {e}; retrying");
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
            let apps: BTreeMap<String, Application> = store
                .state()
                .iter()
                .map(|a| (a.name_any(), (**a).clone()))
                .collect();
            let problems = match build_tree(&apps, root) {
                Some(t) if t.ready => return Ok(t),
                Some(t) => t.problems(),
                None => vec![format!("{root}: the root Application does not exist yet")],
            };
            if last.as_ref() != Some(&problems) {
                events(Event::Waiting(problems.clone()));
                last = Some(problems);
            }
        }
        Err(StatusError::Timeout {
            problems: last.clone().unwrap_or_default(),
            elapsed: started.elapsed(),
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) if failure.is_some() && !listed => {
            Err(StatusError::Watch(failure.take().expect("checked above")))
        }
        Err(_) => Err(StatusError::Timeout {
            problems: last
                .unwrap_or_else(|| vec![format!("{root}: no answer from the API server")]),
            elapsed: started.elapsed(),
        }),
    }
}

/// Asks Argo CD to refresh an Application (compare with Git again; `hard` also drops its
/// manifest cache).
///
/// # Errors
/// The API refuses.
pub async fn refresh(
    client: &Client,
    namespace: &str,
    name: &str,
    hard: bool,
) -> Result<(), StatusError> {
    let api: Api<Application> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({ "metadata": { "annotations": { REFRESH: if hard { "hard" } else { "normal" } } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|source| StatusError::Api {
            action: format!("refreshing Application {name}"),
            source,
        })
}

/// Asks Argo CD to sync an Application now (an `operation` on the object, as its CLI
/// does), pruning when `prune`.
///
/// # Errors
/// The API refuses.
pub async fn sync(
    client: &Client,
    namespace: &str,
    name: &str,
    prune: bool,
) -> Result<(), StatusError> {
    let api: Api<Application> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "operation": {
            "initiatedBy": { "username": "homelab" },
            "sync": { "prune": prune },
        }
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|source| StatusError::Api {
            action: format!("syncing Application {name}"),
            source,
        })
}
