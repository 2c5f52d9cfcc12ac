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
//! | `files` | entries the walk did not read: unreadable, links out of the tree or to directories |
//! | `unowned` | (information) a file no Application in the repository deploys |

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
    /// For information: nothing is wrong (a file no Application deploys).
    Info,
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

/// How to validate: `Options::default()` (nothing known of the repository's URL, no
/// kustomize builds), changed by its setters.
///
/// ```
/// let options = gitops::validate::Options::default()
///     .repo_url(Some("https://git.example.org/lab/gitops.git".into()))
///     .kustomize_build(true);
/// assert!(options.kustomize_build);
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Options {
    /// This repository's URL as Applications name it (`repoURL`), to check their paths.
    /// Without it, an Application's source counts as this repository when its path exists
    /// here (so missing paths cannot be told from other repositories' paths).
    pub repo_url: Option<String>,
    /// Build kustomizations with `kubectl kustomize` when kubectl is on the PATH.
    pub kustomize_build: bool,
}

impl Options {
    /// With this repository's URL as Applications name it.
    #[must_use]
    pub fn repo_url(mut self, repo_url: Option<String>) -> Self {
        self.repo_url = repo_url;
        self
    }

    /// Building kustomizations with `kubectl kustomize` (when kubectl is on the PATH) or not.
    #[must_use]
    pub fn kustomize_build(mut self, kustomize_build: bool) -> Self {
        self.kustomize_build = kustomize_build;
        self
    }
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

/// What the directory walk found.
#[derive(Default)]
struct Walk {
    /// YAML files, relative to the root, each once.
    files: Vec<PathBuf>,
    /// Entries that were not read, and why.
    skipped: Vec<(PathBuf, Severity, String)>,
    /// Canonical paths already taken (a file reached through a link is read once).
    seen: BTreeSet<PathBuf>,
}

/// Every `.yaml`/`.yml` file under `dir`, hidden entries left out. A link to a file inside
/// the tree is read once (as the file it names); a link to a directory is not followed (its
/// target, when inside the tree, is walked as itself; a link out of the tree or into a loop
/// would make the walk leave the repository or never end); unreadable entries are reported.
fn walk(root: &Path, canonical_root: &Path, dir: &Path, out: &mut Walk) {
    let relative = |p: &Path| p.strip_prefix(root).unwrap_or(p).to_owned();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            out.skipped.push((
                relative(dir),
                Severity::Error,
                format!("the directory cannot be read: {e}"),
            ));
            return;
        }
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            out.skipped
                .push((relative(&path), Severity::Error, "cannot be read".into()));
            continue;
        };
        let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if kind.is_dir() {
            walk(root, canonical_root, &path, out);
        } else if kind.is_symlink() {
            let target = std::fs::canonicalize(&path);
            match target {
                Err(e) => out.skipped.push((
                    relative(&path),
                    Severity::Warning,
                    format!("a link that leads nowhere: {e}"),
                )),
                Ok(target) if !target.starts_with(canonical_root) => out.skipped.push((
                    relative(&path),
                    Severity::Note,
                    format!(
                        "a link out of the repository (to {}): not followed",
                        target.display()
                    ),
                )),
                Ok(target) if target.is_dir() => out.skipped.push((
                    relative(&path),
                    Severity::Info,
                    "a link to a directory: not followed (Argo CD does not follow it either)"
                        .into(),
                )),
                Ok(target) => {
                    if is_yaml && out.seen.insert(target) {
                        out.files.push(relative(&path));
                    }
                }
            }
        } else if is_yaml {
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if out.seen.insert(canonical) {
                out.files.push(relative(&path));
            }
        }
    }
}

/// The 1-based line of each document of a multi-document YAML text, as a YAML parser
/// numbers them: text before the first `---` is a document only when it holds content (not
/// just comments), every `---` starts one (an empty one too). A document's line is its
/// first line of content, else the line after its `---`.
fn document_lines(text: &str) -> Vec<usize> {
    let is_separator = |line: &str| {
        line.strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
    };
    let is_content = |line: &str| {
        let t = line.trim_start();
        !t.is_empty() && !t.starts_with('#') && line != "..."
    };
    // (line of the separator or 0 for the implicit first document, first content line)
    let mut documents: Vec<(usize, Option<usize>)> = vec![(0, None)];
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        if is_separator(line) {
            if documents.len() == 1 && documents[0].1.is_none() {
                documents[0] = (number, None);
            } else {
                documents.push((number, None));
            }
            // `--- {a: 1}`: the content is on the separator's line.
            if is_content(line[3..].trim_start())
                && let Some(last) = documents.last_mut()
            {
                last.1 = Some(number);
            }
        } else if is_content(line)
            && let Some(last) = documents.last_mut()
            && last.1.is_none()
        {
            last.1 = Some(number);
        }
    }
    documents
        .into_iter()
        .filter(|(separator, content)| *separator > 0 || content.is_some())
        .map(|(separator, content)| content.unwrap_or(separator + 1))
        .collect()
}

/// Values in `value`, counting at most up to `limit`.
fn values_in(value: &Value, limit: usize) -> usize {
    let mut count = 0;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        count += 1;
        if count > limit {
            break;
        }
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    count
}

/// A document may expand (through YAML aliases) to this many values per line of its file
/// before it is refused as an alias bomb; real manifests hold about one value per line.
const EXPANSION_PER_LINE: usize = 50;
/// ... and small documents may always hold this many.
const EXPANSION_FLOOR: usize = 5_000;

fn normalize_repo(url: &str) -> String {
    url.trim_end_matches('/')
        .trim_end_matches(".git")
        .to_ascii_lowercase()
}

struct Validator<'a> {
    root: &'a Path,
    options: &'a Options,
    /// This repository's URL: given, or inferred ([`Validator::infer_repo_url`]).
    repo_url: Option<String>,
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
    fn read(&mut self) -> (Vec<Object>, Vec<(PathBuf, Kustomization)>, Vec<PathBuf>) {
        let canonical_root =
            std::fs::canonicalize(self.root).unwrap_or_else(|_| self.root.to_owned());
        let mut found = Walk::default();
        walk(self.root, &canonical_root, self.root, &mut found);
        for (path, severity, message) in found.skipped {
            self.add(&path, None, severity, "files", message);
        }
        let files = found.files;
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
            let limit = EXPANSION_FLOOR.max(EXPANSION_PER_LINE * text.lines().count());
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
                if values_in(&value, limit) > limit {
                    self.add(
                        file,
                        Some(line),
                        Severity::Error,
                        "yaml",
                        format!(
                            "document {}: its aliases expand it to more than {limit} values \
                             ({EXPANSION_PER_LINE} per line of the file): refused, as an alias \
                             bomb would be; write the values out",
                            index + 1
                        ),
                    );
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
        (objects, kustomizations, files)
    }

    fn is_this_repo(&self, repo_url: &str, path: Option<&str>) -> bool {
        match &self.repo_url {
            Some(ours) => normalize_repo(ours) == normalize_repo(repo_url),
            None => path.is_some_and(|p| self.root.join(p).exists()),
        }
    }

    /// The files an Application's source at `dir` deploys, as Argo CD reads it: a
    /// kustomization, what it lists; a plain directory, its own files (every level below
    /// too with `directory.recurse`), kept by `directory.include` and dropped by
    /// `directory.exclude` (globs on the path below `dir`, `{a,b}` alternatives).
    fn deployed(
        dir: &Path,
        directory: Option<&Value>,
        kustomizations: &BTreeMap<PathBuf, &Kustomization>,
        files: &BTreeSet<PathBuf>,
    ) -> Result<BTreeSet<PathBuf>, String> {
        let mut out = BTreeSet::new();
        if kustomizations.contains_key(&dir.join("kustomization.yaml"))
            || kustomizations.contains_key(&dir.join("kustomization.yml"))
        {
            kustomize_owned(dir, kustomizations, files, &mut out, &mut BTreeSet::new());
            return Ok(out);
        }
        let recurse = directory.is_some_and(|d| d["recurse"] == true);
        let glob = |key: &str| -> Result<Option<globset::GlobMatcher>, String> {
            directory
                .and_then(|d| d[key].as_str())
                .filter(|p| !p.is_empty())
                .map(|pattern| {
                    globset::GlobBuilder::new(pattern)
                        .build()
                        .map(|g| g.compile_matcher())
                        .map_err(|e| format!("directory.{key} {pattern:?} is not a glob: {e}"))
                })
                .transpose()
        };
        let (include, exclude) = (glob("include")?, glob("exclude")?);
        // Paths order component by component: the files below `dir` are one run of the set.
        for file in files
            .range(dir.to_path_buf()..)
            .take_while(|f| f.starts_with(dir))
        {
            let Ok(below) = file.strip_prefix(dir) else {
                continue;
            };
            if !recurse && below.components().count() > 1 {
                continue;
            }
            if exclude.as_ref().is_some_and(|g| g.is_match(below))
                || include.as_ref().is_some_and(|g| !g.is_match(below))
            {
                continue;
            }
            out.insert(file.clone());
        }
        Ok(out)
    }

    /// This repository's URL when none was given: the `repoURL` of the Applications whose
    /// paths exist here (when they agree; else the Git remote `origin` among them, else the
    /// most used), else the Git remote `origin`. Says which it took, or that Application
    /// paths are not checked.
    fn infer_repo_url(&mut self, apps: &[(usize, Application)]) -> Option<String> {
        let mut counts: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for (_, app) in apps {
            for source in app
                .spec
                .source
                .iter()
                .chain(app.spec.sources.iter().flatten())
            {
                if let Some(path) = source.path.as_deref()
                    && self.root.join(path.trim_matches('/')).exists()
                {
                    let entry = counts
                        .entry(normalize_repo(&source.repo_url))
                        .or_insert((0, source.repo_url.clone()));
                    entry.0 += 1;
                }
            }
        }
        let origin = std::process::Command::new("git")
            .arg("-C")
            .arg(self.root)
            .args(["remote", "get-url", "origin"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| without_userinfo(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|u| !u.is_empty());
        let chosen = match counts.len() {
            0 => origin.map(|u| (u, "the Git remote origin".to_owned())),
            1 => counts.into_values().next().map(|(n, url)| {
                (
                    url,
                    format!("the repoURL of the {n} Application sources whose paths exist here"),
                )
            }),
            _ => {
                let by_origin = origin
                    .as_ref()
                    .and_then(|o| counts.get(&normalize_repo(o)))
                    .map(|(_, url)| {
                        (
                            url.clone(),
                            "the Git remote origin, one of the repoURLs whose paths exist here"
                                .to_owned(),
                        )
                    });
                by_origin.or_else(|| {
                    counts
                        .into_values()
                        .max_by_key(|(n, _)| *n)
                        .map(|(n, url)| (url, format!("the repoURL most Application sources whose paths exist here name ({n}); others differ")))
                })
            }
        };
        if let Some((url, why)) = chosen {
            self.add(
                Path::new("."),
                None,
                Severity::Note,
                "app-path",
                format!(
                    "no repository URL given: this repository taken as {} ({why}); pass --repo-url to choose",
                    without_userinfo(&url)
                ),
            );
            Some(url)
        } else {
            self.add(
                Path::new("."),
                None,
                Severity::Note,
                "app-path",
                "no repository URL given and none found (no Application path exists here, no Git remote origin): Application paths are not checked; pass --repo-url".into(),
            );
            None
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
                if is_remote(r) {
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
        for (file, k) in kustomizations.iter().filter(|(f, _)| !broken.contains(f)) {
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
                    let tail = tail.into_iter().rev().collect::<Vec<_>>().join(" / ");
                    // A remote base that cannot be fetched (no network here) is not the
                    // repository's fault: say it was not checked. kustomize names the
                    // resource it was accumulating when the fetch failed.
                    let unfetched = remote_refs(k).into_iter().find(|r| stderr.contains(r));
                    if let Some(remote) = unfetched {
                        self.add(
                            file,
                            None,
                            Severity::Warning,
                            "kustomize-build",
                            format!(
                                "could not check: the remote base {remote} could not be fetched ({tail})"
                            ),
                        );
                    } else {
                        self.add(
                            file,
                            None,
                            Severity::Error,
                            "kustomize-build",
                            format!("kubectl kustomize failed: {tail}"),
                        );
                    }
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
    fn check_objects(
        &mut self,
        objects: &[Object],
        kustomizations: &[(PathBuf, Kustomization)],
        files: &[PathBuf],
    ) {
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

        // What each app deploys from this repository, and which CRD groups it installs.
        if self.repo_url.is_none() {
            self.repo_url = self.infer_repo_url(&apps);
        }
        let by_file: BTreeMap<PathBuf, &Kustomization> =
            kustomizations.iter().map(|(f, k)| (f.clone(), k)).collect();
        let file_set: BTreeSet<PathBuf> = files.iter().cloned().collect();
        // file -> (app, depth of the app's path): the deepest path first.
        let mut owned: BTreeMap<PathBuf, Vec<(usize, usize)>> = BTreeMap::new();
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
                let dir = normalize(Path::new(path.trim_matches('/')));
                if self.root.join(&dir).is_dir() {
                    let deployed = match Self::deployed(
                        &dir,
                        source.extra.get("directory"),
                        &by_file,
                        &file_set,
                    ) {
                        Ok(d) => d,
                        Err(message) => {
                            self.add(
                                &o.file,
                                Some(o.line),
                                Severity::Error,
                                "app-path",
                                format!("Application {}: {message}", o.name),
                            );
                            BTreeSet::new()
                        }
                    };
                    let depth = dir.components().count();
                    for file in deployed {
                        owned.entry(file).or_default().push((*i, depth));
                    }
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
        // Every Application that deploys a file, the one with the deepest path first.
        for owners in owned.values_mut() {
            owners.sort_by_key(|(app, depth)| (std::cmp::Reverse(*depth), *app));
            owners.dedup_by_key(|(app, _)| *app);
        }
        let owners_of = |file: &Path| -> Vec<usize> {
            owned
                .get(file)
                .map(|o| o.iter().map(|(app, _)| *app).collect())
                .unwrap_or_default()
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
        let mut unowned: BTreeSet<&Path> = BTreeSet::new();
        for (i, o) in objects.iter().enumerate() {
            // A file no Application deploys (a bootstrap file applied by hand, a template):
            // nothing to order or to collide; said once, for information.
            let Some(owner) = owner_of(&o.file) else {
                if !apps.is_empty() && unowned.insert(&o.file) {
                    self.add(&o.file, Some(o.line), Severity::Info, "unowned", "no Application in this repository deploys this file (applied by hand, or by another tool?)".into());
                }
                continue;
            };
            // Argo CD's own kinds exist before Argo CD syncs anything (an Application that
            // deploys itself, or Argo CD's chart installing its CRDs, is not an ordering
            // problem).
            let argo_kind = o.group == "argoproj.io";
            if let Some(&installer) = installs.get(&o.group)
                && !argo_kind
                && owner != installer
                && owner != i
            {
                let (user, user_wave) = (objects[owner].name.clone(), wave_of(owner));
                if user_wave <= wave_of(installer) {
                    self.add(&o.file, Some(o.line), Severity::Error, "crd-order", format!(
                        "{} {} needs the CRDs of {} installed by Application {} (wave {}), but {user} is in wave {user_wave}: put it in a later wave",
                        o.kind, o.name, o.group, objects[installer].name, wave_of(installer)
                    ));
                }
            }
            for app in owners_of(&o.file) {
                // A cluster-scoped object is one object whatever namespace its Applications
                // deploy to.
                let ns = if is_cluster_scoped(&o.group, &o.kind) {
                    String::new()
                } else {
                    o.namespace
                        .clone()
                        .or_else(|| app_namespace.get(&app).cloned().flatten())
                        .unwrap_or_default()
                };
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

/// `path` with `.` and `..` resolved lexically (`a/./b/../c` is `a/c`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Kinds that are never in a namespace (the built-in ones and those of the platform's
/// charts).
fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    const KINDS: &[(&str, &str)] = &[
        ("", "Namespace"),
        ("", "Node"),
        ("", "PersistentVolume"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration",
        ),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
        ),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
        (
            "admissionregistration.k8s.io",
            "ValidatingAdmissionPolicyBinding",
        ),
        ("apiregistration.k8s.io", "APIService"),
        ("storage.k8s.io", "StorageClass"),
        ("storage.k8s.io", "CSIDriver"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("networking.k8s.io", "IngressClass"),
        ("node.k8s.io", "RuntimeClass"),
        ("cert-manager.io", "ClusterIssuer"),
        ("external-secrets.io", "ClusterSecretStore"),
        ("external-secrets.io", "ClusterExternalSecret"),
    ];
    KINDS.iter().any(|(g, k)| *g == group && *k == kind)
}

/// The files a kustomization in `dir` lists (resources and components, through the
/// kustomizations of the directories it lists), into `out`.
fn kustomize_owned(
    dir: &Path,
    kustomizations: &BTreeMap<PathBuf, &Kustomization>,
    files: &BTreeSet<PathBuf>,
    out: &mut BTreeSet<PathBuf>,
    visited: &mut BTreeSet<PathBuf>,
) {
    if !visited.insert(dir.to_owned()) {
        return;
    }
    let Some(k) = kustomizations
        .get(&dir.join("kustomization.yaml"))
        .or_else(|| kustomizations.get(&dir.join("kustomization.yml")))
    else {
        return;
    };
    for r in k.resources.iter().chain(&k.components) {
        if is_remote(r) {
            continue;
        }
        let path = normalize(&dir.join(r));
        if files.contains(&path) {
            out.insert(path);
        } else {
            kustomize_owned(&path, kustomizations, files, out, visited);
        }
    }
}

/// A URL without the `user:password@` it may carry (a Git remote's URL is printed).
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Whether a kustomization reference is fetched from elsewhere (a Git or HTTP URL).
fn is_remote(reference: &str) -> bool {
    reference.contains("://")
        || reference.starts_with("github.com/")
        || reference.starts_with("git@")
        || reference.starts_with("gitlab.com/")
}

/// A kustomization's remote references (resources and components).
fn remote_refs(k: &Kustomization) -> Vec<&str> {
    k.resources
        .iter()
        .chain(&k.components)
        .map(String::as_str)
        .filter(|r| is_remote(r))
        .collect()
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

/// Why a repository could not be validated at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidateError {
    /// The path does not exist or cannot be reached.
    #[error("{path}: {source}")]
    Unreadable {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The path is not a directory.
    #[error("{0}: not a directory (give the repository's top directory)")]
    NotADirectory(PathBuf),
}

/// Validates the repository at `root`.
///
/// # Errors
/// `root` does not exist or is not a directory (never "0 files, no findings").
pub fn validate(root: &Path, options: &Options) -> Result<Report, ValidateError> {
    let metadata = std::fs::metadata(root).map_err(|source| ValidateError::Unreadable {
        path: root.to_owned(),
        source,
    })?;
    if !metadata.is_dir() {
        return Err(ValidateError::NotADirectory(root.to_owned()));
    }
    let mut v = Validator {
        root,
        options,
        repo_url: options.repo_url.clone(),
        findings: Vec::new(),
    };
    let (objects, kustomizations, files) = v.read();
    v.check_kustomizations(&kustomizations);
    v.check_objects(&objects, &kustomizations, &files);
    let mut findings = v.findings;
    findings.sort();
    // One finding once: a document repeated through aliases says each thing once.
    findings.dedup();
    Ok(Report {
        findings,
        files: files.len(),
        objects: objects.len(),
    })
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
            Severity::Info => "info",
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
        // A leading `---` opens the first document; its line is its first of content.
        assert_eq!(document_lines("---\na: 1\n"), [2]);
        // Comments before the first `---` are no document.
        assert_eq!(
            document_lines("# generated\n# by hand\n---\napiVersion: v1\n---\n# c\n\nkind: B\n"),
            [4, 8]
        );
        // Content on the separator's line; an empty document between two separators.
        assert_eq!(document_lines("--- {a: 1}\n---\n---\nb: 2\n"), [1, 3, 4]);
        // `----` and `---x` are not separators.
        assert_eq!(document_lines("a: |\n  ----\n  ---x\n"), [1]);
    }
}
