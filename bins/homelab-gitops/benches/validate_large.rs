//! Benchmark (not a test): validate a generated repository of 2,000 Applications and 20,000
//! manifests, without kustomize builds; prints wall time and peak RSS.
//!
//!     cargo bench -p homelab-gitops --bench validate_large [-- APPS]
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark printing figures"
)]

use std::fmt::Write as _;
use std::time::Instant;

use gitops::validate::{Options, validate};

const REPO: &str = "https://git.example/homelab/gitops.git";

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let apps: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut manifests = 0;
    for i in 0..apps {
        let app_dir = root.join(format!("workloads/app{i:04}"));
        std::fs::create_dir_all(&app_dir).unwrap();
        std::fs::create_dir_all(root.join("apps")).unwrap();
        std::fs::write(
            root.join(format!("apps/app{i:04}.yaml")),
            format!(
                "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: app{i:04}\n  namespace: argocd\n  annotations:\n    argocd.argoproj.io/sync-wave: \"12\"\nspec:\n  project: default\n  source:\n    repoURL: {REPO}\n    targetRevision: main\n    path: workloads/app{i:04}\n  destination:\n    server: https://kubernetes.default.svc\n    namespace: app{i:04}\n  syncPolicy:\n    automated: {{prune: true, selfHeal: true}}\n    syncOptions: [CreateNamespace=true, ServerSideApply=true]\n"
            ),
        )
        .unwrap();
        manifests += 1;
        for m in 0..9 {
            let mut text = String::new();
            let _ = write!(
                text,
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app{i:04}-part{m}\n  labels:\n    app.kubernetes.io/name: app{i:04}\n    app.kubernetes.io/part-of: homelab\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: app{i:04}-part{m}}}\n  template:\n    metadata:\n      labels: {{app: app{i:04}-part{m}}}\n    spec:\n      containers:\n        - name: main\n          image: registry.example/app{i:04}:1.{m}.0\n          ports: [{{containerPort: 8080}}]\n          env:\n            - {{name: MODE, value: production}}\n            - {{name: UPSTREAM, value: \"https://api.example/v1\"}}\n"
            );
            std::fs::write(app_dir.join(format!("part{m}.yaml")), text).unwrap();
            manifests += 1;
        }
    }
    println!("repository: {apps} Applications, {manifests} manifests");
    let started = Instant::now();
    let report = validate(
        root,
        &Options::default()
            .repo_url(Some(REPO.into()))
            .kustomize_build(false),
    )
    .expect("the repository was just written");
    let elapsed = started.elapsed();
    assert!(!report.has_errors(), "{:?}", report.findings.first());
    println!(
        "validate: {:.2?} for {} files / {} objects ({} findings); peak RSS {} MiB",
        elapsed,
        report.files,
        report.objects,
        report.findings.len(),
        peak_rss_kib() / 1024
    );
}
