//! Server-side apply of a manifest's objects, in dependency order.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};

use crate::ManifestError;

/// How [`apply`] applies: [`ApplyOptions::new`], changed by its setters.
///
/// ```
/// use std::time::Duration;
///
/// let options = kube_manifest::ApplyOptions::new("my-tool")
///     .dry_run(true)
///     .crd_timeout(Duration::from_secs(120));
/// assert!(options.force && options.dry_run);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// The field manager every object is applied with (one per tool, so that its fields
    /// are its own and a re-run is a no-op).
    pub field_manager: String,
    /// Take fields another manager owns instead of failing with a conflict (what a tool
    /// that owns these objects does; `false` reports the conflict).
    pub force: bool,
    /// Ask the server what would change (`dryRun=All`) without changing anything.
    pub dry_run: bool,
    /// How long a CustomResourceDefinition may take to become `Established`.
    pub crd_timeout: Duration,
    /// Where namespaced objects without a namespace go (`kubectl apply -n`); `default`
    /// when unset.
    pub namespace: Option<String>,
}

impl ApplyOptions {
    /// Forced apply as `field_manager`, for real, CRDs given a minute.
    pub fn new(field_manager: impl Into<String>) -> Self {
        Self {
            field_manager: field_manager.into(),
            force: true,
            dry_run: false,
            crd_timeout: Duration::from_secs(60),
            namespace: None,
        }
    }

    /// Taking fields other managers own (`true`), or reporting the conflict.
    #[must_use]
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Asking the server what would change, changing nothing.
    #[must_use]
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Giving CustomResourceDefinitions this long to become `Established`.
    #[must_use]
    pub fn crd_timeout(mut self, crd_timeout: Duration) -> Self {
        self.crd_timeout = crd_timeout;
        self
    }

    /// Putting namespaced objects without a namespace there.
    #[must_use]
    pub fn namespace(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace;
        self
    }
}

/// One object [`apply`] sent (or, in a dry run, would send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Its kind.
    pub kind: String,
    /// `namespace/name`, or `name` for a cluster-scoped object.
    pub name: String,
    /// Whether the apply created or changed it (an unchanged object keeps its
    /// resourceVersion).
    pub changed: bool,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// `namespace/name`, or `name` without a namespace.
pub fn label(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// Namespaces first, then CustomResourceDefinitions, then everything else.
fn rank(object: &DynamicObject) -> u8 {
    match object.types.as_ref().map(|t| t.kind.as_str()) {
        Some("Namespace") => 0,
        Some("CustomResourceDefinition") => 1,
        _ => 2,
    }
}

/// The (group, kind) pairs the manifest's own CRDs define.
fn defined_kinds(objects: &[&DynamicObject]) -> BTreeSet<(String, String)> {
    objects
        .iter()
        .filter(|o| rank(o) == 1)
        .filter_map(|o| {
            let spec = &o.data["spec"];
            Some((
                spec["group"].as_str()?.to_owned(),
                spec["names"]["kind"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The object without what the server changes on every write, to compare a dry run's
/// answer with what is stored.
fn comparable(object: &DynamicObject) -> serde_json::Value {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    if let Some(meta) = value["metadata"].as_object_mut() {
        for field in ["managedFields", "resourceVersion", "generation"] {
            meta.remove(field);
        }
    }
    value
}

/// Applies `objects` by server-side apply, namespaces first, then CRDs (waited on until
/// `Established` before anything else is applied), then the rest in manifest order. Each
/// kind's resource and scope come from API discovery; a namespaced object without a
/// namespace goes to [`ApplyOptions::namespace`] (else `default`). In a dry run, the custom
/// resources of CRDs the manifest itself defines (not served yet) are reported as changes
/// without asking the server.
///
/// An object whose applied configuration holds nothing but its name gets no managed fields
/// of this manager, and a real API server changes it once more on the next apply (it
/// records a `before-first-apply` manager): give such objects a label of their own when
/// re-runs must report no change.
///
/// # Errors
/// Discovery or an apply fails, or a CRD is not Established in time; the error names the
/// object.
pub async fn apply(
    client: &Client,
    objects: &[DynamicObject],
    options: &ApplyOptions,
) -> Result<Vec<Applied>, ManifestError> {
    let mut ordered: Vec<&DynamicObject> = objects.iter().collect();
    ordered.sort_by_key(|o| rank(o));
    let new_kinds = defined_kinds(&ordered);
    let mut kinds: HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)> = HashMap::new();
    let mut params = PatchParams::apply(&options.field_manager);
    params.force = options.force;
    params.dry_run = options.dry_run;
    let mut applied = Vec::new();
    let mut crds = Vec::new();
    for object in ordered {
        if rank(object) == 2 && !crds.is_empty() && !options.dry_run {
            crds_established(client, &std::mem::take(&mut crds), options.crd_timeout).await?;
        }
        let types = object.types.clone().unwrap_or_default();
        let name = object.name_any();
        let gvk =
            GroupVersionKind::try_from(&types).map_err(|source| ManifestError::ApiVersion {
                kind: types.kind.clone(),
                name: label(object.namespace().as_deref(), &name),
                source,
            })?;
        if !kinds.contains_key(&gvk) {
            match kube::discovery::pinned_kind(client, &gvk).await {
                Ok(found) => {
                    kinds.insert(gvk.clone(), found);
                }
                Err(_) if options.dry_run && new_kinds.contains(&(gvk.group, gvk.kind)) => {
                    applied.push(Applied {
                        kind: types.kind.clone(),
                        name: label(object.namespace().as_deref(), &name),
                        changed: true,
                    });
                    continue;
                }
                Err(source) => {
                    return Err(ManifestError::Apply {
                        kind: types.kind.clone(),
                        name: label(object.namespace().as_deref(), &name),
                        source,
                    });
                }
            }
        }
        let (resource, caps) = &kinds[&gvk];
        let namespace = match caps.scope {
            Scope::Namespaced => Some(object.namespace().unwrap_or_else(|| {
                options
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into())
            })),
            Scope::Cluster => None,
        };
        let failed = |source| ManifestError::Apply {
            kind: types.kind.clone(),
            name: label(namespace.as_deref(), &name),
            source,
        };
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
            None => Api::all_with(client.clone(), resource),
        };
        let until = tokio::time::Instant::now() + options.crd_timeout;
        let before = once_served(until, || api.get_opt(&name))
            .await
            .map_err(failed)?;
        let patch = Patch::Apply(object);
        let after = once_served(until, || api.patch(&name, &params, &patch))
            .await
            .map_err(|source| {
                refused(
                    &types,
                    label(namespace.as_deref(), &name),
                    options.force,
                    source,
                )
            })?;
        let changed = match &before {
            None => true,
            Some(_) if options.dry_run => {
                before.as_ref().map(comparable) != Some(comparable(&after))
            }
            Some(b) => b.resource_version() != after.resource_version(),
        };
        if rank(object) == 1 {
            crds.push(name.clone());
        }
        tracing::debug!(kind = %types.kind, name = %label(namespace.as_deref(), &name), changed, "applied");
        applied.push(Applied {
            kind: types.kind.clone(),
            name: label(namespace.as_deref(), &name),
            changed,
        });
    }
    if !crds.is_empty() && !options.dry_run {
        crds_established(client, &crds, options.crd_timeout).await?;
    }
    Ok(applied)
}

/// Whether the server answered a request as a path it does not serve: a plain `404 page not
/// found` from its mux, not a `Status` saying which object is missing. Discovery has just
/// listed the kind, so this is the moment after a CustomResourceDefinition is `Established`
/// in which the API server has not yet put the handler for its path in place (met on a real
/// kube-apiserver v1.33.5 on two cores), and asking again is right.
fn not_served_yet(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404 && status.reason != "NotFound")
}

/// Runs `call` until its answer is other than [`not_served_yet`], asking again after a pause
/// that grows from 100 ms to 2 s, up to `until` (after which the last answer is returned).
async fn once_served<T, F, Fut>(until: tokio::time::Instant, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut pause = Duration::from_millis(100);
    loop {
        match call().await {
            Err(error) if not_served_yet(&error) && tokio::time::Instant::now() + pause < until => {
                tracing::debug!(%error, "the API server does not serve this kind's path yet; asking again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            answer => return answer,
        }
    }
}

/// The error for an apply the server refused: a conflict of field managers and an unknown
/// field get errors of their own, anything else is the client's error.
fn refused(
    types: &kube::api::TypeMeta,
    name: String,
    force: bool,
    source: kube::Error,
) -> ManifestError {
    match source {
        // Server-side apply's conflict: another field manager owns a field this apply sets
        // to another value (the message lists managers and fields).
        kube::Error::Api(status) if status.code == 409 && !force => ManifestError::Conflict {
            kind: types.kind.clone(),
            name,
            message: status.message.clone(),
        },
        // A field the type's schema does not know: server-side apply refuses the whole
        // object (whatever `fieldValidation` says), where a create would have dropped the
        // field silently.
        kube::Error::Api(status) if status.code == 500 => match unknown_field(&status.message) {
            Some(field) => ManifestError::UnknownField {
                kind: types.kind.clone(),
                name,
                api_version: types.api_version.clone(),
                field,
            },
            None => ManifestError::Apply {
                kind: types.kind.clone(),
                name,
                source: kube::Error::Api(status),
            },
        },
        source => ManifestError::Apply {
            kind: types.kind.clone(),
            name,
            source,
        },
    }
}

/// The field a server-side apply refused as unknown to the schema, from the API server's
/// message (`failed to create typed patch object (…): .spec.colur: field not declared in
/// schema`).
fn unknown_field(message: &str) -> Option<String> {
    let head = message.strip_suffix(": field not declared in schema")?;
    let field = head.rsplit(": ").next()?;
    field.starts_with('.').then(|| field.to_owned())
}

/// Waits, by watching, until every named CustomResourceDefinition is `Established`, and
/// then until the API server serves its custom resources' path (which, on a busy server,
/// can follow `Established` by a moment, answering `404 page not found` meanwhile).
///
/// # Errors
/// [`ManifestError::NotEstablished`] naming the first CRD that was not, with its last
/// conditions, or that was but whose path was still not served.
pub async fn crds_established(
    client: &Client,
    names: &[String],
    timeout: Duration,
) -> Result<(), ManifestError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let until = tokio::time::Instant::now() + timeout;
    let waits = names.iter().map(|name| {
        let api = api.clone();
        async move {
            let established = await_condition(api.clone(), name, conditions::is_crd_established());
            match tokio::time::timeout_at(until, established).await {
                Ok(Ok(Some(crd))) => match served(client, &crd, until).await {
                    Err(e) => Err(ManifestError::NotEstablished {
                        name: name.clone(),
                        waited_secs: timeout.as_secs(),
                        last: format!("Established, but its path is not served yet: {e}"),
                    }),
                    Ok(()) => Ok(()),
                },
                Ok(Ok(None)) => Ok(()),
                outcome => {
                    let last = match outcome {
                        Ok(Err(e)) => format!("watch failed: {e}"),
                        _ => match api.get_opt(name).await {
                            Ok(Some(crd)) => conditions_text(&crd),
                            Ok(None) => "it does not exist".into(),
                            Err(e) => format!("could not read it: {e}"),
                        },
                    };
                    Err(ManifestError::NotEstablished {
                        name: name.clone(),
                        waited_secs: timeout.as_secs(),
                        last,
                    })
                }
            }
        }
    });
    futures::future::try_join_all(waits).await.map(|_| ())
}

/// Waits, up to `until`, while the API server answers a list of the CRD's custom resources
/// (its first served version) as a path it does not serve. Any other answer, a refusal
/// included, says the path is served.
async fn served(
    client: &Client,
    crd: &CustomResourceDefinition,
    until: tokio::time::Instant,
) -> Result<(), kube::Error> {
    let spec = &crd.spec;
    let Some(version) = spec.versions.iter().find(|v| v.served) else {
        return Ok(());
    };
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(&spec.group, &version.name, &spec.names.kind),
        &spec.names.plural,
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let one = ListParams::default().limit(1);
    match once_served(until, || api.list(&one)).await {
        Err(e) if not_served_yet(&e) => Err(e),
        _ => Ok(()),
    }
}

/// A CRD's conditions as `Type=Status (reason: message)`, or that it has none.
fn conditions_text(crd: &CustomResourceDefinition) -> String {
    let conditions = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| {
            c.iter()
                .map(|c| {
                    format!(
                        "{}={} ({}: {})",
                        c.type_,
                        c.status,
                        c.reason.as_deref().unwrap_or(""),
                        c.message.as_deref().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    if conditions.is_empty() {
        "no conditions yet".into()
    } else {
        conditions
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use homelab_testkit::kube_api::{ApiServer, Kind};
    use kube::api::DynamicObject;
    use serde_json::json;

    use super::{ApplyOptions, apply, unknown_field};
    use crate::ManifestError;

    const GADGET: Kind = Kind {
        api_version: "test.homelab.dev/v1",
        plural: "gadgets",
        kind: "Gadget",
        namespaced: true,
    };

    fn gadget() -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "test.homelab.dev/v1", "kind": "Gadget",
            "metadata": { "name": "g", "namespace": "default" }, "spec": { "size": 3 },
        }))
        .unwrap()
    }

    fn established_crd() -> serde_json::Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": { "name": "gadgets.test.homelab.dev" },
            "spec": {
                "group": "test.homelab.dev", "scope": "Namespaced",
                "names": { "plural": "gadgets", "kind": "Gadget" },
                "versions": [{ "name": "v1", "served": true, "storage": true }],
            },
            "status": { "conditions": [{ "type": "Established", "status": "True" }] },
        })
    }

    /// Established is not enough: the wait lasts until the custom resources' path is served,
    /// and names the CRD when it never is.
    #[tokio::test(start_paused = true)]
    async fn a_crd_is_waited_on_until_its_path_is_served() {
        let names = ["gadgets.test.homelab.dev".to_owned()];
        let (client, server) = ApiServer::start(vec![established_crd()], &[GADGET]);
        server.not_served_yet("gadgets", 2);
        super::crds_established(&client, &names, Duration::from_secs(5))
            .await
            .unwrap();
        let lists = server
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET /apis/test.homelab.dev/v1/gadgets?"))
            .count();
        assert_eq!(lists, 3);

        let (client, server) = ApiServer::start(vec![established_crd()], &[GADGET]);
        server.not_served_yet("gadgets", u32::MAX);
        let err = super::crds_established(&client, &names, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ManifestError::NotEstablished { name, last, .. }
                if name == "gadgets.test.homelab.dev" && last.contains("not served yet")),
            "{err:?}"
        );
    }

    /// The moment after a CRD is Established in which the server does not serve its path
    /// yet is waited out; a path that stays unserved is an error naming the object once the
    /// CRD timeout has passed.
    #[tokio::test(start_paused = true)]
    async fn a_kind_whose_path_is_not_served_yet_is_asked_again_until_the_crd_timeout() {
        let (client, server) = ApiServer::start(vec![], &[GADGET]);
        server.not_served_yet("gadgets", 3);
        let applied = apply(&client, &[gadget()], &ApplyOptions::new("homelab"))
            .await
            .unwrap();
        assert_eq!(applied.len(), 1);
        assert!(applied[0].changed);
        assert!(
            server
                .get("test.homelab.dev/v1", "gadgets", Some("default"), "g")
                .is_some()
        );

        let (client, server) = ApiServer::start(vec![], &[GADGET]);
        server.not_served_yet("gadgets", u32::MAX);
        let options = ApplyOptions {
            crd_timeout: Duration::from_secs(5),
            ..ApplyOptions::new("homelab")
        };
        let started = tokio::time::Instant::now();
        let err = apply(&client, &[gadget()], &options).await.unwrap_err();
        assert!(
            matches!(&err, ManifestError::Apply { kind, name, source: kube::Error::Api(s) }
                if kind == "Gadget" && name == "default/g" && s.code == 404),
            "{err:?}"
        );
        assert!(
            started.elapsed() <= Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // A Status that names a missing object is an answer, not a path not served.
        let (client, _server) = ApiServer::start(vec![], &[GADGET]);
        let started = tokio::time::Instant::now();
        let missing = kube::Api::<DynamicObject>::namespaced_with(
            client,
            "default",
            &kube::discovery::ApiResource::from_gvk_with_plural(
                &kube::api::GroupVersionKind::gvk("test.homelab.dev", "v1", "Gadget"),
                "gadgets",
            ),
        );
        let until = started + Duration::from_secs(5);
        let err = super::once_served(until, || missing.get("absent"))
            .await
            .unwrap_err();
        assert!(!super::not_served_yet(&err), "{err:?}");
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[test]
    fn the_unknown_field_is_read_from_the_servers_message() {
        assert_eq!(
            unknown_field(
                "failed to create typed patch object (ns/g; test.homelab.dev/v1, Kind=Gadget): .spec.colur: field not declared in schema"
            )
            .as_deref(),
            Some(".spec.colur")
        );
        assert_eq!(unknown_field("etcdserver: request timed out"), None);
        assert_eq!(unknown_field("x: y: field not declared in schema"), None);
    }
}
