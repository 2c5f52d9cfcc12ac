//! The validator on fixture repositories: one that passes, and one per rule that fails with
//! exactly that rule; and, on random CRD dependency graphs, it accepts exactly the wave
//! orderings that respect the dependencies.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
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
        &Options {
            repo_url: Some(REPO.into()),
            kustomize_build: true,
        },
    )
}

fn rules(report: &Report) -> BTreeSet<&'static str> {
    report
        .findings
        .iter()
        .filter(|f| f.severity != Severity::Note)
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
