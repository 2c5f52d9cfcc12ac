//! The validator on fixture repositories: one that passes, and one per rule that fails with
//! exactly that rule; and, on random CRD dependency graphs, it accepts exactly the wave
//! orderings that respect the dependencies.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use gitops::validate::{Options, Report, Severity, validate};
use proptest::prelude::*;

const REPO: &str = "https://git.example/homelab/gitops.git";

fn app(
    name: &str,
    wave: &str,
    project: &str,
    source: &str,
    namespace: &str,
    create_ns: bool,
) -> String {
    format!(
        r"apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: {name}
  namespace: argocd
  annotations:
    argocd.argoproj.io/sync-wave: {wave:?}
spec:
  project: {project}
  source:
{source}
  destination:
    server: https://kubernetes.default.svc
    namespace: {namespace}
  syncPolicy:
    automated: {{prune: true, selfHeal: true}}
    syncOptions: [{}ServerSideApply=true]
",
        if create_ns {
            "CreateNamespace=true, "
        } else {
            ""
        }
    )
}

fn git(path: &str) -> String {
    format!("    repoURL: {REPO}\n    targetRevision: main\n    path: {path}")
}

/// A small repository in the seeds' layout that passes every rule.
fn base() -> Vec<(String, String)> {
    let files = [
        ("bootstrap/root.yaml", app("root", "0", "default", &git("apps"), "argocd", true)),
        (
            "apps/projects.yaml",
            "apiVersion: argoproj.io/v1alpha1\nkind: AppProject\nmetadata:\n  name: platform\n  namespace: argocd\n  annotations:\n    argocd.argoproj.io/sync-wave: \"1\"\nspec:\n  sourceRepos: [\"*\"]\n  destinations:\n    - server: https://kubernetes.default.svc\n      namespace: \"*\"\n".to_owned(),
        ),
        (
            "apps/metallb.yaml",
            app("metallb", "3", "platform", "    repoURL: https://metallb.github.io/metallb\n    chart: metallb\n    targetRevision: 0.15.2", "metallb-system", true),
        ),
        ("apps/metallb-config.yaml", app("metallb-config", "4", "platform", &git("infrastructure/metallb-config"), "metallb-system", false)),
        ("apps/web.yaml", app("web", "12", "platform", &git("workloads/web"), "web", false)),
        (
            "core/namespaces.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: metallb-system\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n".to_owned(),
        ),
        ("infrastructure/metallb-config/kustomization.yaml", "resources:\n  - pool.yaml\n".to_owned()),
        (
            "infrastructure/metallb-config/pool.yaml",
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: default\n  namespace: metallb-system\nspec:\n  addresses: [192.168.122.100-192.168.122.150]\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: default\n  namespace: metallb-system\n".to_owned(),
        ),
        (
            "workloads/web/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n        - name: web\n          image: nginx:1.27.2\n".to_owned(),
        ),
    ];
    files.into_iter().map(|(p, t)| (p.to_owned(), t)).collect()
}

fn write(files: &[(String, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn check(files: &[(String, String)]) -> Report {
    // Every check builds the kustomizations: kubectl must be there.
    homelab_testkit::require_kubectl();
    let dir = write(files);
    validate(
        dir.path(),
        &Options::default()
            .repo_url(Some(REPO.into()))
            .kustomize_build(true),
    )
    .unwrap()
}

fn rules(report: &Report) -> BTreeSet<&'static str> {
    report
        .findings
        .iter()
        .filter(|f| f.severity < Severity::Note)
        .map(|f| f.rule)
        .collect()
}

fn with(
    mut files: Vec<(String, String)>,
    path: &str,
    edit: impl FnOnce(&str) -> String,
) -> Vec<(String, String)> {
    match files.iter_mut().find(|(p, _)| p == path) {
        Some(entry) => entry.1 = edit(&entry.1),
        None => files.push((path.to_owned(), edit(""))),
    }
    files
}

#[test]
fn the_base_repository_passes() {
    let report = check(&base());
    assert!(rules(&report).is_empty(), "{:#?}", report.findings);
    assert_eq!(report.objects, 10);
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one fixture per rule, listed together"
)]
fn each_rule_fails_alone() {
    // The kustomize-build fixture needs kubectl; without it this test fails, not shrinks.
    homelab_testkit::require_kubectl();
    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        (
            "yaml",
            with(base(), "workloads/web/broken.yaml", |_| "a: [1, 2\n".into()),
        ),
        (
            "app-path",
            with(base(), "apps/extra.yaml", |_| {
                app(
                    "extra",
                    "12",
                    "platform",
                    &git("workloads/nope"),
                    "web",
                    false,
                )
            }),
        ),
        (
            "kustomize-ref",
            with(
                base(),
                "infrastructure/metallb-config/kustomization.yaml",
                |t| format!("{t}  - missing.yaml\n"),
            ),
        ),
        (
            "sync-wave",
            with(base(), "apps/web.yaml", |t| t.replace("\"12\"", "twelve")),
        ),
        (
            "crd-order",
            with(base(), "apps/metallb-config.yaml", |t| {
                t.replace("\"4\"", "\"3\"")
            }),
        ),
        (
            "namespace",
            with(base(), "apps/web.yaml", |t| {
                t.replace("namespace: web", "namespace: nowhere")
            }),
        ),
        (
            "project",
            with(base(), "apps/web.yaml", |t| {
                t.replace("project: platform", "project: missing")
            }),
        ),
        (
            "project",
            with(base(), "apps/projects.yaml", |t| {
                t.replace("namespace: \"*\"", "namespace: \"metallb-*\"")
            }),
        ),
        (
            "duplicate",
            with(base(), "apps/web-copy.yaml", |_| {
                app(
                    "web-copy",
                    "12",
                    "platform",
                    &git("workloads/web"),
                    "web",
                    false,
                )
            }),
        ),
        (
            "secret",
            with(base(), "workloads/web/secret.yaml", |_| {
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2\n".into()
            }),
        ),
        (
            "url-credentials",
            with(base(), "workloads/web/config.yaml", |_| {
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  upstream: https://bot:s3cret@git.example/x.git\n".into()
            }),
        ),
        (
            "image-pin",
            with(base(), "workloads/web/deployment.yaml", |t| {
                t.replace("nginx:1.27.2", "nginx:latest")
            }),
        ),
        (
            "kustomize-build",
            with(base(), "infrastructure/metallb-config/pool.yaml", |t| {
                format!("{t}---\nnot: a kubernetes object\n")
            }),
        ),
    ];
    for (rule, files) in cases {
        let report = check(&files);
        let found = rules(&report);
        let want: BTreeSet<&str> = [rule].into_iter().filter(|r| !r.is_empty()).collect();
        assert_eq!(found, want, "fixture for {rule:?}: {:#?}", report.findings);
        if rule == "image-pin" {
            assert!(!report.has_errors(), "an unpinned image is a warning");
        } else if !rule.is_empty() {
            assert!(report.has_errors());
        }
        for f in &report.findings {
            assert!(!f.message.is_empty());
        }
    }
}

#[test]
fn yaml_errors_name_the_line() {
    let files = with(base(), "workloads/web/broken.yaml", |_| {
        "a: 1\n---\nb: 2\nc: [1, 2\n".into()
    });
    let report = check(&files);
    let f = report.findings.iter().find(|f| f.rule == "yaml").unwrap();
    assert_eq!(f.file, Path::new("workloads/web/broken.yaml"));
    assert!(f.line.is_some_and(|l| l >= 3), "{f:?}");
    assert!(f.message.starts_with("document 2:"), "{f:?}");
}

/// A repository of `n` Applications in the given waves; app `i` ships a CRD of group
/// `gi.example.com`, and uses (creates an object of) the CRDs of each app in `uses[i]`.
fn graph_repo(waves: &[i64], uses: &[Vec<usize>]) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for (i, wave) in waves.iter().enumerate() {
        files.push((
            format!("apps/app{i}.yaml"),
            app(
                &format!("app{i}"),
                &wave.to_string(),
                "default",
                &git(&format!("comps/app{i}")),
                "default",
                false,
            ),
        ));
        files.push((
            format!("comps/app{i}/crd.yaml"),
            format!("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: things.g{i}.example.com\nspec:\n  group: g{i}.example.com\n  names: {{kind: Thing, plural: things}}\n  scope: Namespaced\n"),
        ));
        for j in &uses[i] {
            files.push((
                format!("comps/app{i}/uses-{j}.yaml"),
                format!("apiVersion: g{j}.example.com/v1\nkind: Thing\nmetadata:\n  name: from-app{i}\n  namespace: default\n"),
            ));
        }
    }
    files
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn crd_order_accepts_exactly_the_orderings_that_respect_dependencies(
        n in 2usize..6,
        waves in proptest::collection::vec(-2i64..6, 6),
        edges in proptest::collection::vec((0usize..6, 0usize..6), 0..8),
    ) {
        let waves = &waves[..n];
        let mut uses = vec![Vec::new(); n];
        for (a, b) in edges {
            let (a, b) = (a % n, b % n);
            if a != b && !uses[a].contains(&b) {
                uses[a].push(b);
            }
        }
        let respects = uses.iter().enumerate().all(|(i, us)| us.iter().all(|&j| waves[i] > waves[j]));
        let report = check(&graph_repo(waves, &uses));
        let order_errors = report.findings.iter().filter(|f| f.rule == "crd-order").count();
        prop_assert_eq!(order_errors == 0, respects, "waves {:?} uses {:?}: {:#?}", waves, uses, report.findings);
        let others: BTreeSet<_> = rules(&report).into_iter().filter(|r| *r != "crd-order").collect();
        prop_assert!(others.is_empty(), "{:?}", others);
    }
}

/// An Application of the default project with `CreateNamespace=true`.
fn plain_app(name: &str, wave: i64, source: &str, namespace: &str) -> String {
    app(name, &wave.to_string(), "default", source, namespace, true)
}

/// A repository of the shapes real home-lab repositories have, and exactly what the
/// validator must say about it.
#[test]
fn ownership_follows_what_argo_cd_deploys() {
    let cm = |name: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n");
    let cluster_role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: team-reader\nrules: []\n";
    let files: Vec<(String, String)> = [
        // The root deploys the directory it lives in: itself included.
        ("apps/root.yaml", plain_app("root", 0, &git("apps"), "argocd")),
        ("apps/platform.yaml", plain_app("platform-config", 2, &git("platform"), "platform")),
        (
            "apps/tools.yaml",
            plain_app(
                "tools",
                3,
                &format!("{}\n    directory:\n      recurse: true\n      include: '{{*.yaml,deep/*.yaml}}'\n      exclude: 'templates/*'", git("tools")),
                "tools",
            ),
        ),
        (
            "apps/cert-manager.yaml",
            plain_app("cert-manager", 4, "    repoURL: https://charts.jetstack.io\n    chart: cert-manager\n    targetRevision: v1.19.1", "cert-manager"),
        ),
        ("apps/team-a.yaml", plain_app("team-a", 5, &git("teams/a"), "team-a")),
        ("apps/team-b.yaml", plain_app("team-b", 5, &git("teams/b"), "team-b")),
        ("apps/web.yaml", plain_app("web", 6, &git("web"), "web")),
        // Recurse off: only the top directory.
        ("platform/config.yaml", cm("platform")),
        ("platform/sub/skipped.yaml", cm("below")),
        // Recurse on, with include and exclude.
        ("tools/a.yaml", cm("a")),
        ("tools/deep/b.yaml", cm("b")),
        ("tools/notes.yml", cm("notes")),
        // A template no one deploys, using cert-manager's kind before cert-manager's wave.
        (
            "tools/templates/cert.yaml",
            "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata:\n  name: t\n  namespace: tools\nspec:\n  secretName: t\n".into(),
        ),
        // One cluster-scoped object from two Applications deploying to two namespaces.
        ("teams/a/role.yaml", cluster_role.into()),
        ("teams/b/role.yaml", cluster_role.into()),
        // A kustomization deploys what it lists.
        ("web/kustomization.yaml", "resources:\n  - deploy.yaml\n".into()),
        (
            "web/deploy.yaml",
            "# Written by hand.\n# Comments before the first separator.\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: \"nginx:latest\"}]\n".into(),
        ),
        ("web/unlisted.yaml", cm("unlisted")),
        ("web/extra/unlisted.yaml", cm("extra")),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_owned(), t))
    .collect();
    let report = check(&files);
    let found: Vec<(String, Option<usize>, Severity, &str)> = report
        .findings
        .iter()
        .filter(|f| f.severity != Severity::Note)
        .map(|f| (f.file.display().to_string(), f.line, f.severity, f.rule))
        .collect();
    let want: Vec<(String, Option<usize>, Severity, &str)> = [
        (
            "platform/sub/skipped.yaml",
            Some(1),
            Severity::Info,
            "unowned",
        ),
        ("teams/b/role.yaml", Some(1), Severity::Error, "duplicate"),
        ("tools/notes.yml", Some(1), Severity::Info, "unowned"),
        (
            "tools/templates/cert.yaml",
            Some(1),
            Severity::Info,
            "unowned",
        ),
        ("web/deploy.yaml", Some(4), Severity::Warning, "image-pin"),
        (
            "web/extra/unlisted.yaml",
            Some(1),
            Severity::Info,
            "unowned",
        ),
        ("web/unlisted.yaml", Some(1), Severity::Info, "unowned"),
    ]
    .into_iter()
    .map(|(f, l, s, r)| (f.to_owned(), l, s, r))
    .collect();
    assert_eq!(found, want, "{:#?}", report.findings);
    let duplicate = report
        .findings
        .iter()
        .find(|f| f.rule == "duplicate")
        .unwrap();
    assert_eq!(
        duplicate.message,
        "ClusterRole /team-reader is managed by both Application team-a and Application team-b"
    );
}

#[test]
fn without_a_repository_url_the_applications_name_it_and_it_is_said() {
    homelab_testkit::require_kubectl();
    let mut files = base();
    files.push((
        "apps/extra.yaml".into(),
        plain_app("extra", 12, &git("workloads/nope"), "web"),
    ));
    let dir = write(&files);
    let report = validate(
        dir.path(),
        &Options::default().repo_url(None).kustomize_build(false),
    )
    .unwrap();
    let note = report
        .findings
        .iter()
        .find(|f| f.rule == "app-path" && f.severity == Severity::Note)
        .unwrap();
    assert!(note.message.contains(REPO), "{note:?}");
    assert!(
        report.findings.iter().any(|f| f.rule == "app-path"
            && f.severity == Severity::Error
            && f.message.contains("workloads/nope")),
        "{:#?}",
        report.findings
    );
    // Nothing to infer from: said, not skipped silently.
    let empty = write(&[(
        "apps/x.yaml".into(),
        plain_app("x", 0, &git("nowhere"), "x"),
    )]);
    let report = validate(empty.path(), &Options::default()).unwrap();
    assert!(
        report.findings.iter().any(|f| f.severity == Severity::Note
            && f.message.contains("Application paths are not checked")),
        "{:#?}",
        report.findings
    );
}

#[test]
fn a_remote_base_that_cannot_be_fetched_is_not_checked_not_failed() {
    let files = with(
        base(),
        "infrastructure/metallb-config/kustomization.yaml",
        |t| format!("{t}  - https://github.invalid/homelab/bases//metallb?ref=v1\n"),
    );
    let report = check(&files);
    let builds: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == "kustomize-build")
        .collect();
    assert_eq!(builds.len(), 1, "{builds:#?}");
    assert_eq!(builds[0].severity, Severity::Warning, "{builds:#?}");
    assert!(
        builds[0]
            .message
            .starts_with("could not check: the remote base https://github.invalid/"),
        "{builds:#?}"
    );
    assert!(!report.has_errors(), "{:#?}", report.findings);
}

/// A ConfigMap whose key `x0` is `first` and each key `x<i>` (up to `levels`) lists the
/// one before it `fanout` times through an alias.
fn aliased(name: &str, first: &str, levels: usize, fanout: usize) -> String {
    let mut text =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\nx0: &a0 {first}\n");
    for i in 1..=levels {
        let refs = vec![format!("*a{}", i - 1); fanout].join(", ");
        let _ = writeln!(text, "x{i}: &a{i} [{refs}]");
    }
    text
}

/// The findings about `path` once the base repository holds `text` there.
fn findings_about(path: &str, text: &str) -> Vec<gitops::validate::Finding> {
    let report = check(&with(base(), path, |_| text.to_owned()));
    report
        .findings
        .into_iter()
        .filter(|f| f.file == Path::new(path))
        .collect()
}

#[test]
fn an_alias_bomb_is_refused_once() {
    // 3^8 = 6,561 copies of one URL with credentials, from a dozen lines.
    let url = "\"https://u:p@h.example/\"";
    let text = aliased("bomb", &format!("[{url}, {url}, {url}]"), 8, 3);
    let about = findings_about("workloads/web/bomb.yaml", &text);
    assert_eq!(about.len(), 1, "{about:#?}");
    assert_eq!(about[0].rule, "yaml");
    assert!(about[0].message.contains("repetition limit"), "{about:#?}");

    // Below the parser's limit (3^6 = 729 copies): what the copies hold is said once.
    let text = aliased("bomb", &format!("[{url}, {url}, {url}]"), 5, 3);
    let about = findings_about("workloads/web/bomb.yaml", &text);
    let rules: Vec<&str> = about.iter().map(|f| f.rule).collect();
    // Once per key that holds the URL (x0 to x5), not once per copy.
    assert_eq!(rules, ["url-credentials"; 6], "{about:#?}");
}

#[test]
fn a_document_expanding_far_beyond_its_size_is_refused() {
    // A list of 300 values replayed a thousand times: 300,000 values from seven lines, with
    // few enough alias jumps for the parser's own limit (100 per event of the document).
    let list: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    let text = aliased("wide", &format!("[{}]", list.join(", ")), 3, 10);
    let about = findings_about("workloads/web/wide.yaml", &text);
    assert_eq!(about.len(), 1, "{about:#?}");
    assert!(
        about[0]
            .message
            .contains("aliases expand it to more than 5000 values"),
        "{about:#?}"
    );
}

#[test]
fn links_to_directories_and_out_of_the_tree_are_not_followed() {
    let dir = write(&base());
    let root = dir.path();
    // Two links to the top: walked naively, the tree never ends.
    std::os::unix::fs::symlink(".", root.join("loop-a")).unwrap();
    std::os::unix::fs::symlink(".", root.join("workloads/loop-b")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("outside")).unwrap();
    // A link to a file of the tree: read once.
    std::os::unix::fs::symlink("deployment.yaml", root.join("workloads/web/again.yaml")).unwrap();
    let started = std::time::Instant::now();
    let report = validate(
        root,
        &Options::default()
            .repo_url(Some(REPO.into()))
            .kustomize_build(false),
    )
    .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(report.files, base().len());
    let files: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == "files")
        .map(|f| (f.file.display().to_string(), f.severity))
        .collect();
    assert_eq!(
        files,
        [
            ("loop-a".to_owned(), Severity::Info),
            ("outside".to_owned(), Severity::Note),
            ("workloads/loop-b".to_owned(), Severity::Info),
        ]
    );
    assert!(rules(&report).is_empty(), "{:#?}", report.findings);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Random trees of directories, files and links (to directories anywhere, the top
    /// included, and to files): the walk ends and reads each real file once.
    #[test]
    fn the_walk_reads_each_real_file_once(
        dirs in proptest::collection::vec(0usize..4, 1..6),
        files in proptest::collection::vec(0usize..6, 0..10),
        links in proptest::collection::vec((0usize..6, 0usize..12, proptest::bool::ANY), 0..8),
    ) {
        let root = tempfile::tempdir().unwrap();
        // Directory i lives under directory dirs[i] % i (0 is the top).
        let mut paths = vec![root.path().to_owned()];
        for (i, parent) in dirs.iter().enumerate() {
            let p = paths[parent % (i + 1)].join(format!("d{i}"));
            std::fs::create_dir_all(&p).unwrap();
            paths.push(p);
        }
        let mut real = Vec::new();
        for (i, d) in files.iter().enumerate() {
            let p = paths[d % paths.len()].join(format!("f{i}.yaml"));
            std::fs::write(&p, format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\n")).unwrap();
            real.push(p);
        }
        for (i, (at, to, to_file)) in links.iter().enumerate() {
            let at = paths[at % paths.len()].join(format!("l{i}.yaml"));
            let to = if *to_file && !real.is_empty() {
                real[to % real.len()].clone()
            } else {
                paths[to % paths.len()].clone()
            };
            std::os::unix::fs::symlink(&to, &at).unwrap();
        }
        let report = validate(root.path(), &Options::default().repo_url(Some(REPO.into())).kustomize_build(false)).unwrap();
        prop_assert_eq!(report.files, real.len());
        prop_assert_eq!(report.objects, real.len());
    }
}
