//! Checks a manifests repository before Argo CD sees it. Each finding names its rule, the
//! file and line, and says what is wrong:
//!
//! | rule | checks |
//! | --- | --- |
//! | `yaml` | every document of every `.yaml`/`.yml` file parses (multi-document files) |
//! | `app-path` | an Application whose `repoURL` is this repository points at a path that exists |
//! | `kustomize-ref` | a kustomization's `resources` and patches exist |
//! | `kustomize-build` | `kubectl kustomize` builds each kustomization (a note when kubectl is missing) |
//! | `sync-wave` | sync waves are integers |
//! | `crd-order` | an object whose kind comes from a CRD sits in a later wave than the Application that installs the CRD |
//! | `namespace` | an Application's destination namespace is in the repository, built in, or created (`CreateNamespace=true`) |
//! | `project` | an Application's AppProject exists and allows its destination |
//! | `duplicate` | no two Applications manage the same (group, kind, namespace, name) |
//! | `secret` | no Secret with data in plain text |
//! | `url-credentials` | no credentials in URLs (`user:password@`) |
//! | `image-pin` | images are pinned (warning for `:latest` or no tag) |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::{Application, SYNC_WAVE};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Argo CD would fail or do the wrong thing.
    Error,
    /// Probably a mistake.
    Warning,
    /// Something the validator could not check.
    Note,
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    /// File, relative to the repository root.
    pub file: PathBuf,
    /// Line (1-based), when known.
    pub line: Option<usize>,
    /// How bad.
    pub severity: Severity,
    /// The rule (see the module documentation).
    pub rule: &'static str,
    /// What is wrong.
    pub message: String,
}

/// What the validator found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Findings, by file and line.
    pub findings: Vec<Finding>,
    /// YAML files read.
    pub files: usize,
    /// Kubernetes objects read.
    pub objects: usize,
}

impl Report {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// How to validate.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// This repository's URL as Applications name it (`repoURL`), to check their paths.
    /// Without it, an Application's source counts as this repository when its path exists
    /// here (so missing paths cannot be told from other repositories' paths).
    pub repo_url: Option<String>,
    /// Build kustomizations with `kubectl kustomize` when kubectl is on the PATH.
    pub kustomize_build: bool,
}

/// Helm charts known to install CRDs, with the API groups of those CRDs: the charts of the
/// platform homelab deploys. CRDs defined in the repository itself are found by reading it.
pub const CHART_CRDS: &[(&str, &[&str])] = &[
    ("metallb", &["metallb.io"]),
    ("cert-manager", &["cert-manager.io", "acme.cert-manager.io"]),
    (
        "external-secrets",
        &["external-secrets.io", "generators.external-secrets.io"],
    ),
    ("gha-runner-scale-set-controller", &["actions.github.com"]),
    ("argo-cd", &["argoproj.io"]),
    ("ingress-nginx", &[]),
    ("harbor", &[]),
];

/// Namespaces every cluster has.
const BUILTIN_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// A Kubernetes object read from the repository.
#[derive(Debug, Clone)]
struct Object {
    file: PathBuf,
    line: usize,
    group: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    value: Value,
}

#[derive(Deserialize)]
struct Kustomization {
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    patches: Vec<Value>,
    #[serde(default, rename = "patchesStrategicMerge")]
    patches_strategic_merge: Vec<String>,
    #[serde(default)]
    components: Vec<String>,
}

fn group_of(api_version: &str) -> String {
    api_version
        .rsplit_once('/')
        .map(|(g, _)| g.to_owned())
        .unwrap_or_default()
}

fn yaml_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            yaml_files(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_owned());
        }
    }
}

/// The 1-based line each document of a multi-document YAML text starts on.
fn document_lines(text: &str) -> Vec<usize> {
    let mut starts = vec![1];
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") && i > 0 {
            starts.push(i + 2);
        }
    }
    starts
}

fn normalize_repo(url: &str) -> String {
    url.trim_end_matches('/')
        .trim_end_matches(".git")
        .to_ascii_lowercase()
}

struct Validator<'a> {
    root: &'a Path,
    options: &'a Options,
    findings: Vec<Finding>,
}

impl Validator<'_> {
    fn add(
        &mut self,
        file: &Path,
        line: Option<usize>,
        severity: Severity,
        rule: &'static str,
        message: String,
    ) {
        self.findings.push(Finding {
            file: file.to_owned(),
            line,
            severity,
            rule,
            message,
        });
    }

    /// Reads every YAML file; returns objects and kustomizations (by directory).
    fn read(&mut self) -> (Vec<Object>, Vec<(PathBuf, Kustomization)>, usize) {
        let mut files = Vec::new();
        yaml_files(self.root, self.root, &mut files);
        let mut objects = Vec::new();
        let mut kustomizations = Vec::new();
        for file in &files {
            let Ok(text) = std::fs::read_to_string(self.root.join(file)) else {
                self.add(
                    file,
                    None,
                    Severity::Error,
                    "yaml",
                    "cannot be read as UTF-8 text".into(),
                );
                continue;
            };
            let lines = document_lines(&text);
            for (index, document) in serde_norway::Deserializer::from_str(&text).enumerate() {
                let line = lines.get(index).copied().unwrap_or(1);
                let value = match Value::deserialize(document) {
                    Ok(v) => v,
                    Err(e) => {
                        let at = e.location().map_or(line, |l| l.line());
                        self.add(
                            file,
                            Some(at),
                            Severity::Error,
                            "yaml",
                            format!("document {}: {e}", index + 1),
                        );
                        break;
                    }
                };
                if value.is_null() {
                    continue;
                }
                let is_kustomization = file
                    .file_name()
                    .is_some_and(|n| n == "kustomization.yaml" || n == "kustomization.yml");
                if is_kustomization {
                    match serde_json::from_value::<Kustomization>(value) {
                        Ok(k) => kustomizations.push((file.clone(), k)),
                        Err(e) => self.add(
                            file,
                            Some(line),
                            Severity::Error,
                            "yaml",
                            format!("not a kustomization: {e}"),
                        ),
                    }
                    continue;
                }
                let (Some(api_version), Some(kind), Some(name)) = (
                    value["apiVersion"].as_str(),
                    value["kind"].as_str(),
                    value["metadata"]["name"].as_str(),
                ) else {
                    // Values files and the like: not Kubernetes objects.
                    continue;
                };
                objects.push(Object {
                    file: file.clone(),
                    line,
                    group: group_of(api_version),
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                    namespace: value["metadata"]["namespace"].as_str().map(str::to_owned),
                    value,
                });
            }
        }
        (objects, kustomizations, files.len())
    }

    fn is_this_repo(&self, repo_url: &str, path: Option<&str>) -> bool {
        match &self.options.repo_url {
            Some(ours) => normalize_repo(ours) == normalize_repo(repo_url),
            None => path.is_some_and(|p| self.root.join(p).exists()),
        }
    }

    fn check_kustomizations(&mut self, kustomizations: &[(PathBuf, Kustomization)]) {
        // Kustomizations with a missing reference are not built: the build would only fail
        // for the same reason.
        let mut broken = BTreeSet::new();
        for (file, k) in kustomizations {
            let dir = file.parent().unwrap_or(Path::new(""));
            let mut refs: Vec<&str> = k.resources.iter().map(String::as_str).collect();
            refs.extend(k.patches_strategic_merge.iter().map(String::as_str));
            refs.extend(k.components.iter().map(String::as_str));
            refs.extend(k.patches.iter().filter_map(|p| p["path"].as_str()));
            for r in refs {
                if r.contains("://") || r.starts_with("github.com/") {
                    continue;
                }
                if !self.root.join(dir).join(r).exists() {
                    broken.insert(file.clone());
                    self.add(
                        file,
                        None,
                        Severity::Error,
                        "kustomize-ref",
                        format!("{r} does not exist (relative to {})", dir.display()),
                    );
                }
            }
        }
        if !self.options.kustomize_build || kustomizations.is_empty() {
            return;
        }
        let kubectl = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("kubectl"))
                .find(|p| p.is_file())
        });
        let Some(kubectl) = kubectl else {
            self.add(
                Path::new("."),
                None,
                Severity::Note,
                "kustomize-build",
                "kubectl is not on the PATH: kustomizations were not built".into(),
            );
            return;
        };
        for (file, _) in kustomizations.iter().filter(|(f, _)| !broken.contains(f)) {
            let dir = self.root.join(file.parent().unwrap_or(Path::new("")));
            match std::process::Command::new(&kubectl)
                .arg("kustomize")
                .arg(&dir)
                .output()
            {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
                    self.add(
                        file,
                        None,
                        Severity::Error,
                        "kustomize-build",
                        format!(
                            "kubectl kustomize failed: {}",
                            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                        ),
                    );
                }
                Err(e) => self.add(
                    file,
                    None,
                    Severity::Note,
                    "kustomize-build",
                    format!("cannot run kubectl: {e}"),
                ),
            }
        }
    }

    #[allow(
        clippy::too_many_lines,
        reason = "the rules read best one after another"
    )]
    fn check_objects(&mut self, objects: &[Object]) {
        // Waves, secrets, credentials, images: per object.
        let mut waves: BTreeMap<usize, i64> = BTreeMap::new();
        for (i, o) in objects.iter().enumerate() {
            if let Some(text) = o.value["metadata"]["annotations"][SYNC_WAVE]
                .as_str()
                .map(str::to_owned)
                .or_else(|| {
                    let v = &o.value["metadata"]["annotations"][SYNC_WAVE];
                    (!v.is_null()).then(|| v.to_string())
                })
            {
                match text.trim().parse::<i64>() {
                    Ok(w) => {
                        waves.insert(i, w);
                    }
                    Err(_) => self.add(
                        &o.file,
                        Some(o.line),
                        Severity::Error,
                        "sync-wave",
                        format!(
                            "{} {}: sync wave {text:?} is not an integer",
                            o.kind, o.name
                        ),
                    ),
                }
            }
            if o.kind == "Secret" && o.group.is_empty() {
                let has = |k: &str| o.value[k].as_object().is_some_and(|m| !m.is_empty());
                if has("data") || has("stringData") {
                    self.add(&o.file, Some(o.line), Severity::Error, "secret", format!("Secret {} holds its data in plain text: deliver it with an ExternalSecret instead", o.name));
                }
            }
            let mut strings = Vec::new();
            collect_strings(&o.value, "", &mut strings);
            for (key, s) in strings {
                if has_url_credentials(&s) {
                    self.add(
                        &o.file,
                        Some(o.line),
                        Severity::Error,
                        "url-credentials",
                        format!("{} {}: {key} holds credentials in a URL", o.kind, o.name),
                    );
                }
                if key.ends_with("image") && !is_pinned(&s) {
                    self.add(
                        &o.file,
                        Some(o.line),
                        Severity::Warning,
                        "image-pin",
                        format!(
                            "{} {}: image {s} is not pinned to a version or digest",
                            o.kind, o.name
                        ),
                    );
                }
            }
        }

        // Applications and what they own.
        let apps: Vec<(usize, Application)> = objects
            .iter()
            .enumerate()
            .filter(|(_, o)| o.group == "argoproj.io" && o.kind == "Application")
            .filter_map(
                |(i, o)| match serde_json::from_value::<Application>(o.value.clone()) {
                    Ok(a) => Some((i, a)),
                    Err(e) => {
                        self.add(
                            &o.file,
                            Some(o.line),
                            Severity::Error,
                            "yaml",
                            format!("Application {}: {e}", o.name),
                        );
                        None
                    }
                },
            )
            .collect();
        let projects: BTreeMap<String, crate::types::AppProjectSpec> = objects
            .iter()
            .filter(|o| o.group == "argoproj.io" && o.kind == "AppProject")
            .filter_map(|o| {
                Some((
                    o.name.clone(),
                    serde_json::from_value(o.value["spec"].clone()).ok()?,
                ))
            })
            .collect();
        let namespaces: BTreeSet<&str> = objects
            .iter()
            .filter(|o| o.group.is_empty() && o.kind == "Namespace")
            .map(|o| o.name.as_str())
            .chain(BUILTIN_NAMESPACES.iter().copied())
            .collect();

        // Which app owns which directory, and which CRD groups each app installs.
        let mut owner_dirs: Vec<(PathBuf, usize, bool)> = Vec::new();
        let mut installs: BTreeMap<String, usize> = BTreeMap::new(); // group -> app index
        for (i, app) in &apps {
            let o = &objects[*i];
            let sources: Vec<_> = app
                .spec
                .source
                .iter()
                .chain(app.spec.sources.iter().flatten())
                .collect();
            for source in sources {
                if let Some(chart) = &source.chart {
                    for (name, groups) in CHART_CRDS {
                        if name == chart {
                            for g in *groups {
                                installs.insert((*g).to_owned(), *i);
                            }
                        }
                    }
                }
                let Some(path) = source.path.as_deref() else {
                    continue;
                };
                if !self.is_this_repo(&source.repo_url, Some(path)) {
                    continue;
                }
                let dir = self.root.join(path);
                if dir.is_dir() {
                    // Argo CD reads a plain directory without its subdirectories unless told
                    // to recurse; a kustomization can reach anything below it.
                    let recurse = source
                        .extra
                        .get("directory")
                        .is_some_and(|d| d["recurse"] == true)
                        || dir.join("kustomization.yaml").exists()
                        || dir.join("kustomization.yml").exists();
                    owner_dirs.push((PathBuf::from(path.trim_matches('/')), *i, recurse));
                } else {
                    self.add(
                        &o.file,
                        Some(o.line),
                        Severity::Error,
                        "app-path",
                        format!(
                            "Application {}: path {path} does not exist in this repository",
                            o.name
                        ),
                    );
                }
            }
            // Destination namespace.
            if let Some(ns) = app.spec.destination.namespace.as_deref() {
                let creates = app
                    .spec
                    .sync_policy
                    .as_ref()
                    .is_some_and(|p| p.has_option("CreateNamespace=true"));
                if !creates && !namespaces.contains(ns) {
                    self.add(&o.file, Some(o.line), Severity::Error, "namespace", format!("Application {}: namespace {ns} is not in the repository and CreateNamespace=true is not set", o.name));
                }
            }
            // Project.
            if app.spec.project != "default" {
                match projects.get(&app.spec.project) {
                    None => self.add(
                        &o.file,
                        Some(o.line),
                        Severity::Error,
                        "project",
                        format!(
                            "Application {}: AppProject {} is not in the repository",
                            o.name, app.spec.project
                        ),
                    ),
                    Some(p) if !p.allows(&app.spec.destination) => self.add(
                        &o.file,
                        Some(o.line),
                        Severity::Error,
                        "project",
                        format!(
                            "Application {}: AppProject {} does not allow destination {}/{}",
                            o.name,
                            app.spec.project,
                            app.spec
                                .destination
                                .server
                                .as_deref()
                                .or(app.spec.destination.name.as_deref())
                                .unwrap_or("?"),
                            app.spec.destination.namespace.as_deref().unwrap_or("")
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
        // Every Application that manages a file, the one with the deepest path first: the
        // file's directory and, for recursive sources, each directory above it.
        let mut by_dir: BTreeMap<&Path, Vec<(usize, bool)>> = BTreeMap::new();
        for (dir, app, recurse) in &owner_dirs {
            by_dir
                .entry(dir.as_path())
                .or_default()
                .push((*app, *recurse));
        }
        let owners_of = |file: &Path| -> Vec<usize> {
            let mut owners = Vec::new();
            let parent = file.parent().unwrap_or(Path::new(""));
            for (depth, dir) in parent.ancestors().enumerate() {
                for (app, recurse) in by_dir.get(dir).into_iter().flatten() {
                    if (depth == 0 || *recurse) && !owners.contains(app) {
                        owners.push(*app);
                    }
                }
            }
            owners
        };
        let owner_of = |file: &Path| owners_of(file).first().copied();
        for o in objects
            .iter()
            .filter(|o| o.kind == "CustomResourceDefinition")
        {
            if let (Some(owner), Some(group)) =
                (owner_of(&o.file), o.value["spec"]["group"].as_str())
            {
                installs.insert(group.to_owned(), owner);
            }
        }
        let wave_of = |i: usize| waves.get(&i).copied().unwrap_or(0);
        let app_namespace: BTreeMap<usize, Option<String>> = apps
            .iter()
            .map(|(i, a)| (*i, a.spec.destination.namespace.clone()))
            .collect();

        // CRD order and duplicates.
        let mut managed: BTreeMap<(String, String, String, String), usize> = BTreeMap::new();
        for (i, o) in objects.iter().enumerate() {
            let owner = owner_of(&o.file);
            if let Some(&installer) = installs.get(&o.group) {
                // The object's wave is its Application's when it lives in one's path, else its own.
                let (user, user_wave) = match owner {
                    Some(app) if app == installer => continue,
                    Some(app) => (objects[app].name.clone(), wave_of(app)),
                    None => (format!("{} {}", o.kind, o.name), wave_of(i)),
                };
                if user_wave <= wave_of(installer) {
                    self.add(&o.file, Some(o.line), Severity::Error, "crd-order", format!(
                        "{} {} needs the CRDs of {} installed by Application {} (wave {}), but {user} is in wave {user_wave}: put it in a later wave",
                        o.kind, o.name, o.group, objects[installer].name, wave_of(installer)
                    ));
                }
            }
            for app in owners_of(&o.file) {
                let ns = o
                    .namespace
                    .clone()
                    .or_else(|| app_namespace.get(&app).cloned().flatten())
                    .unwrap_or_default();
                let key = (o.group.clone(), o.kind.clone(), ns, o.name.clone());
                if let Some(&first) = managed.get(&key)
                    && first != app
                {
                    self.add(
                        &o.file,
                        Some(o.line),
                        Severity::Error,
                        "duplicate",
                        format!(
                            "{} {}/{} is managed by both Application {} and Application {}",
                            o.kind, key.2, o.name, objects[first].name, objects[app].name
                        ),
                    );
                } else {
                    managed.insert(key, app);
                }
            }
        }
    }
}

fn collect_strings(value: &Value, key: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => out.push((key.to_owned(), s.clone())),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, key, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| collect_strings(v, k, out)),
        _ => {}
    }
}

/// Whether a string holds a URL with `user:password@`.
fn has_url_credentials(s: &str) -> bool {
    s.split_whitespace().any(|word| {
        word.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+')
                && rest
                    .split(['/', '?', '#'])
                    .next()
                    .and_then(|authority| authority.rsplit_once('@'))
                    .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        })
    })
}

/// Whether an image reference names a version (a tag other than `latest`) or a digest.
fn is_pinned(image: &str) -> bool {
    if image.contains('@') {
        return true;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    last.rsplit_once(':')
        .is_some_and(|(_, tag)| tag != "latest" && !tag.is_empty())
}

/// Validates the repository at `root`.
pub fn validate(root: &Path, options: &Options) -> Report {
    let mut v = Validator {
        root,
        options,
        findings: Vec::new(),
    };
    let (objects, kustomizations, files) = v.read();
    v.check_kustomizations(&kustomizations);
    v.check_objects(&objects);
    let mut findings = v.findings;
    findings.sort();
    Report {
        findings,
        files,
        objects: objects.len(),
    }
}

/// The report for people: findings grouped by file, then a summary line.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let mut current: Option<&Path> = None;
    for f in &report.findings {
        if current != Some(f.file.as_path()) {
            let _ = writeln!(out, "{}", f.file.display());
            current = Some(f.file.as_path());
        }
        let at = f.line.map(|l| format!("{l}: ")).unwrap_or_default();
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        let _ = writeln!(out, "  {at}{sev} [{}] {}", f.rule, f.message);
    }
    let count = |s: Severity| report.findings.iter().filter(|f| f.severity == s).count();
    let _ = writeln!(
        out,
        "{} files, {} objects: {} errors, {} warnings",
        report.files,
        report.objects,
        count(Severity::Error),
        count(Severity::Warning)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_and_image_pins() {
        assert!(has_url_credentials("https://user:pw@git.example/repo.git"));
        assert!(!has_url_credentials("https://git.example/repo.git"));
        assert!(!has_url_credentials("https://user@git.example/repo.git"));
        assert!(!has_url_credentials("see https://x.example/a:b@c"));
        assert!(is_pinned("ghcr.io/flannel-io/flannel:v0.27.4"));
        assert!(is_pinned("busybox@sha256:abc"));
        assert!(is_pinned("localhost:5000/app:1.0"));
        assert!(!is_pinned("busybox"));
        assert!(!is_pinned("busybox:latest"));
        assert!(!is_pinned("localhost:5000/app"));
    }

    #[test]
    fn documents_start_where_their_separator_is() {
        assert_eq!(document_lines("a: 1\n---\nb: 2\n---\nc: 3\n"), [1, 3, 5]);
        assert_eq!(document_lines("---\na: 1\n"), [1]);
    }
}
