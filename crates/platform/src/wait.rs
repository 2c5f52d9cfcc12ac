//! Following the platform wave by wave: each wave's components are checked, and checked
//! again whenever something they depend on changes (watched, not slept on), until every
//! check of the wave holds; then the next wave.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;

use crate::PlatformError;
use crate::checks::{Check, Outcome, Workload};
use crate::components::Component;
use crate::event::{Event, Events};

/// One check of a component and what it saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckStatus {
    /// The check, in words.
    pub check: String,
    /// What it saw (`None`: not evaluated, an earlier check of the component failed).
    pub outcome: Option<Outcome>,
}

/// A component's checks, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentStatus {
    /// Name.
    pub name: String,
    /// Wave.
    pub wave: i64,
    /// Whether every check holds.
    pub ready: bool,
    /// Each check.
    pub checks: Vec<CheckStatus>,
}

impl ComponentStatus {
    /// The first check that does not hold, with what it saw.
    pub fn failing(&self) -> Option<(&str, &str)> {
        self.checks.iter().find_map(|c| match &c.outcome {
            Some(o) if !o.ok => Some((c.check.as_str(), o.detail.as_str())),
            _ => None,
        })
    }
}

/// How [`wait`] waits: `WaitOptions::default()` (30 minutes, checks asked again every
/// second), changed by its setters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WaitOptions {
    /// The whole wait's limit.
    pub timeout: Duration,
    /// How often checks nothing in the cluster announces (HTTP health, dry runs) are asked
    /// again while they fail.
    pub poll: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1800),
            poll: Duration::from_secs(1),
        }
    }
}

impl WaitOptions {
    /// With this limit for the whole wait.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Asking the checks nothing announces again this often.
    #[must_use]
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

/// Evaluates a component's checks in order, stopping at the first that fails (the later
/// ones depend on it).
pub async fn check_component(
    client: &Client,
    http: &reqwest::Client,
    component: &Component,
) -> ComponentStatus {
    let mut checks = Vec::with_capacity(component.checks.len());
    let mut ready = true;
    for check in &component.checks {
        let outcome = if ready {
            let o = check.evaluate(client, http).await;
            ready &= o.ok;
            Some(o)
        } else {
            None
        };
        checks.push(CheckStatus {
            check: check.to_string(),
            outcome,
        });
    }
    ComponentStatus {
        name: component.name.clone(),
        wave: component.wave,
        ready,
        checks,
    }
}

/// Every component's state now (all of them, whatever their wave).
pub async fn status(
    client: &Client,
    http: &reqwest::Client,
    components: &[Component],
) -> Vec<ComponentStatus> {
    futures::future::join_all(components.iter().map(|c| check_component(client, http, c))).await
}

/// An object a watch saw change: its watch's key (`deployments`, `crd`, `group/version/Kind`),
/// namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Touched {
    kind: String,
    namespace: Option<String>,
    name: String,
}

impl Check {
    /// Whether a change of `t` may change this check's outcome.
    fn touched_by(&self, t: &Touched) -> bool {
        let at = |kind: &str, namespace: &str, name: &str| {
            t.kind == kind && t.namespace.as_deref() == Some(namespace) && t.name == name
        };
        match self {
            Self::CrdEstablished { name } => t.kind == "crd" && t.name == *name,
            Self::RolledOut {
                workload,
                namespace,
                name,
            } => {
                let kind = match workload {
                    Workload::Deployment => "deployments",
                    Workload::StatefulSet => "statefulsets",
                    Workload::DaemonSet => "daemonsets",
                };
                at(kind, namespace, name)
            }
            Self::ServiceEndpoints { namespace, name } => {
                at("services", namespace, name)
                    || (t.kind == "endpointslices" && t.namespace.as_deref() == Some(namespace))
            }
            Self::LoadBalancerIp {
                namespace, name, ..
            } => at("services", namespace, name),
            Self::PodsReady { namespace, .. } => {
                t.kind == "pods" && t.namespace.as_deref() == Some(namespace)
            }
            Self::Condition {
                api_version,
                kind,
                name,
                ..
            } => t.kind == "crd" || (t.kind == format!("{api_version}/{kind}") && t.name == *name),
            // Its webhook's endpoints, or its CRD.
            Self::DryRunCreate { .. } => t.kind == "endpointslices" || t.kind == "crd",
            Self::Http { .. } => false,
        }
    }
}

/// A watch of `api` as the objects it sees change (the initial listing included), retried
/// with kube's default backoff when it fails (a failing watch must not turn into a busy
/// loop of re-checks).
fn changes<K>(api: Api<K>, kind: String) -> BoxStream<'static, Touched>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            let touched = match event {
                Ok(
                    watcher::Event::Apply(o)
                    | watcher::Event::Delete(o)
                    | watcher::Event::InitApply(o),
                ) => Some(Touched {
                    kind: kind.clone(),
                    namespace: o.meta().namespace.clone(),
                    name: o.meta().name.clone().unwrap_or_default(),
                }),
                _ => None,
            };
            futures::future::ready(touched)
        })
        .boxed()
}

/// Why [`Watches::next`] returned.
enum Woke {
    /// These objects changed.
    Changed(BTreeSet<Touched>),
    /// The poll interval passed.
    Timer,
}

/// The watches whose events make the pending checks worth asking again.
struct Watches {
    client: Client,
    streams: SelectAll<BoxStream<'static, Touched>>,
    kinds: BTreeSet<String>,
}

impl Watches {
    fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
            streams: SelectAll::new(),
            kinds: BTreeSet::new(),
        }
    }

    fn add<K>(&mut self, key: &str)
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + 'static,
    {
        if self.kinds.insert(key.to_owned()) {
            let api: Api<K> = Api::all(self.client.clone());
            self.streams.push(changes(api, key.to_owned()));
        }
    }

    /// Watches what `check` depends on; a custom kind only once it is served.
    async fn cover(&mut self, check: &Check) {
        match check {
            Check::CrdEstablished { .. } => self.add::<CustomResourceDefinition>("crd"),
            Check::RolledOut { .. } => {
                self.add::<Deployment>("deployments");
                self.add::<StatefulSet>("statefulsets");
                self.add::<DaemonSet>("daemonsets");
            }
            Check::ServiceEndpoints { .. } => {
                self.add::<EndpointSlice>("endpointslices");
                self.add::<Service>("services");
            }
            Check::LoadBalancerIp { .. } => self.add::<Service>("services"),
            Check::PodsReady { .. } => self.add::<Pod>("pods"),
            Check::Condition {
                api_version, kind, ..
            } => {
                let key = format!("{api_version}/{kind}");
                if self.kinds.contains(&key) {
                    return;
                }
                // Until its CRD is served, the CRDs' own events stand in.
                self.add::<CustomResourceDefinition>("crd");
                let Ok(gvk) = GroupVersionKind::try_from(&kube::api::TypeMeta {
                    api_version: api_version.clone(),
                    kind: kind.clone(),
                }) else {
                    return;
                };
                if let Ok((resource, _)) = kube::discovery::pinned_kind(&self.client, &gvk).await {
                    self.kinds.insert(key.clone());
                    let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
                    self.streams.push(changes(api, key));
                }
            }
            Check::DryRunCreate { .. } => {
                self.add::<EndpointSlice>("endpointslices");
                self.add::<CustomResourceDefinition>("crd");
            }
            Check::Http { .. } => {}
        }
    }

    /// Until some watched objects change (what arrived together counts once) or `poll`
    /// passes.
    async fn next(&mut self, poll: Duration) -> Woke {
        if self.streams.is_empty() {
            tokio::time::sleep(poll).await;
            return Woke::Timer;
        }
        match tokio::time::timeout(poll, self.streams.next()).await {
            Ok(Some(first)) => {
                let mut touched = BTreeSet::from([first]);
                while let Some(Some(t)) = self.streams.next().now_or_never() {
                    touched.insert(t);
                }
                Woke::Changed(touched)
            }
            Ok(None) | Err(_) => Woke::Timer,
        }
    }
}

/// Waits for `components` wave by wave (lowest first): a wave's checks are asked at once;
/// then a component is asked again when a watched object its checks depend on changes (and
/// every `poll` while its failing check is one nothing announces), until all hold; then the
/// next wave. API requests grow with the changes seen, not with the time waited.
///
/// # Errors
/// [`PlatformError::NotReady`] when the timeout passes: the component, its failing check
/// and what it last saw.
///
/// # Example
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use platform::components::{PlatformSpec, components};
/// use platform::wait::{WaitOptions, wait};
///
/// let spec = PlatformSpec::new("192.168.122.100".parse()?, "192.168.122.102".parse()?, "https://harbor.homelab.lan");
/// let client = kube::Client::try_default().await?;
/// let options = WaitOptions::default().timeout(Duration::from_secs(20 * 60));
/// // Prints each wave as it starts and each component as it becomes ready.
/// let done = wait(&client, &reqwest::Client::new(), &components(&spec), &options, &|event| eprintln!("{event}")).await?;
/// assert!(done.iter().all(|c| c.ready));
/// # Ok(()) }
/// ```
pub async fn wait(
    client: &Client,
    http: &reqwest::Client,
    components: &[Component],
    options: &WaitOptions,
    events: Events<'_>,
) -> Result<Vec<ComponentStatus>, PlatformError> {
    let started = Instant::now();
    let deadline = started + options.timeout;
    let mut waves: Vec<i64> = components.iter().map(|c| c.wave).collect();
    waves.dedup();
    let mut watches = Watches::new(client);
    let mut done = Vec::new();
    for wave in waves {
        let wave_components: Vec<&Component> =
            components.iter().filter(|c| c.wave == wave).collect();
        events(Event::Wave {
            wave,
            components: wave_components.iter().map(|c| c.name.clone()).collect(),
        });
        for c in &wave_components {
            for check in &c.checks {
                watches.cover(check).await;
            }
        }
        // Per pending component: its last status, and whether to ask it again.
        let mut pending: Vec<(&Component, Option<ComponentStatus>, bool)> = wave_components
            .into_iter()
            .map(|c| (c, None, true))
            .collect();
        loop {
            let asked = futures::future::join_all(pending.iter().map(|(c, _, ask)| async move {
                if *ask {
                    Some(check_component(client, http, c).await)
                } else {
                    None
                }
            }))
            .await;
            let mut still = Vec::new();
            for ((component, previous, _), fresh) in pending.into_iter().zip(asked) {
                let Some(status) = fresh.or(previous.clone()) else {
                    continue;
                };
                if status.ready {
                    events(Event::Ready {
                        component: status.name.clone(),
                        elapsed: started.elapsed(),
                    });
                    done.push(status);
                    continue;
                }
                let failing = status.failing().unwrap_or_default();
                let was = previous.as_ref().and_then(ComponentStatus::failing);
                if was != Some(failing) {
                    events(Event::Waiting {
                        component: status.name.clone(),
                        check: failing.0.to_owned(),
                        detail: failing.1.to_owned(),
                    });
                }
                if Instant::now() >= deadline {
                    return Err(PlatformError::NotReady {
                        component: status.name.clone(),
                        wave,
                        check: failing.0.to_owned(),
                        detail: failing.1.to_owned(),
                        waited: started.elapsed(),
                    });
                }
                still.push((component, Some(status), false));
            }
            if still.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let polled = |c: &Component, s: &ComponentStatus| {
                let failing = s.failing().map(|(check, _)| check).unwrap_or_default();
                c.checks
                    .iter()
                    .any(|k| k.polled() && k.to_string() == failing)
            };
            let any_polled = still
                .iter()
                .any(|(c, s, _)| s.as_ref().is_some_and(|s| polled(c, s)));
            let limit = if any_polled {
                options.poll.min(left)
            } else {
                left
            };
            let woke = watches.next(limit).await;
            let out_of_time = Instant::now() >= deadline;
            for (c, s, ask) in &mut still {
                *ask = out_of_time
                    || match &woke {
                        Woke::Changed(touched) => c
                            .checks
                            .iter()
                            .any(|k| touched.iter().any(|t| k.touched_by(t))),
                        Woke::Timer => s.as_ref().is_some_and(|s| polled(c, s)),
                    };
            }
            pending = still;
        }
    }
    Ok(done)
}
