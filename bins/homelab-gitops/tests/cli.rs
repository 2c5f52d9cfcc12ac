//! `homelab-gitops validate` on small repositories.
#![allow(clippy::unwrap_used)]

use assert_cmd::Command;
use predicates::prelude::*;

fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn gitops() -> Command {
    let mut cmd = Command::cargo_bin("homelab-gitops").unwrap();
    cmd.env_remove("HOMELAB_CONFIG");
    cmd
}

const APP: &str = "apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: web, namespace: argocd}
spec:
  project: default
  source: {repoURL: https://git.example/r.git, path: web, targetRevision: main}
  destination: {server: https://kubernetes.default.svc, namespace: web}
  syncPolicy: {syncOptions: [CreateNamespace=true]}
";

#[test]
fn errors_fail_warnings_do_not() {
    let ok = repo(&[
        ("apps/web.yaml", APP),
        (
            "web/deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: [{name: web, image: \"nginx:latest\"}]\n",
        ),
    ]);
    gitops()
        .current_dir(ok.path())
        .args(["validate", "--repo-url", "https://git.example/r"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "web/deploy.yaml\n  1: warning [image-pin]",
        ))
        .stdout(predicate::str::ends_with(
            "2 files, 2 objects: 0 errors, 1 warnings\n",
        ));
    let bad = repo(&[("apps/web.yaml", &APP.replace("path: web", "path: nowhere"))]);
    let out = gitops()
        .args([
            "validate",
            "-o",
            "json",
            "--repo-url",
            "https://git.example/r.git",
        ])
        .arg(bad.path())
        .assert()
        .code(1);
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["findings"][0]["rule"], "app-path");
    assert_eq!(report["findings"][0]["file"], "apps/web.yaml");
    assert_eq!(report["findings"][0]["severity"], "error");
}

#[test]
fn a_path_that_is_not_a_repository_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    gitops()
        .args(["validate", "--repo-url", "https://git.example/r"])
        .arg(dir.path().join("nowhere"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "nowhere: No such file or directory",
        ));
    let file = dir.path().join("file.yaml");
    std::fs::write(&file, "a: 1\n").unwrap();
    gitops()
        .args(["validate", "--repo-url", "https://git.example/r"])
        .arg(&file)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a directory"));
}

#[test]
fn init_writes_a_repository_that_validates() {
    // The validation below builds every kustomization with kubectl.
    homelab_testkit::require_kubectl();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("homelab.toml");
    std::fs::write(
        &config,
        "[gitops]\nrepo_url = \"https://git.example/me/gitops.git\"\n",
    )
    .unwrap();
    let repo = dir.path().join("repo");
    gitops()
        .arg("--config")
        .arg(&config)
        .arg("init")
        .arg(&repo)
        .assert()
        .success()
        .stdout(predicate::str::contains("created   bootstrap/root.yaml"));
    gitops()
        .args(["--config"])
        .arg(&config)
        .args(["add-app", "web", "--dir"])
        .arg(&repo)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "created   apps/web/kustomization.yaml",
        ));
    gitops()
        .arg("--config")
        .arg(&config)
        .arg("validate")
        .arg(&repo)
        .assert()
        .success()
        .stdout(predicate::str::contains(" 0 errors, 0 warnings"))
        .stdout(predicate::str::contains("were not built").not());
    gitops()
        .arg("--config")
        .arg(&config)
        .arg("init")
        .arg(&repo)
        .assert()
        .success()
        .stdout(predicate::str::contains("created").not());
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, "").unwrap();
    gitops()
        .arg("--config")
        .arg(&bare)
        .arg("init")
        .arg(dir.path().join("other"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("set [gitops] repo_url"));
}

#[test]
fn a_repository_url_with_a_token_is_refused_without_repeating_it() {
    let out = assert_cmd::Command::cargo_bin("homelab-gitops")
        .unwrap()
        .env_remove("HOMELAB_CONFIG")
        .args(["validate", ".", "--repo-url"])
        .arg("https://ghp_SeCrEt0123@github.com/me/lab.git")
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("carries credentials"), "{stderr}");
    assert!(!stderr.contains("ghp_SeCrEt0123"), "{stderr}");
}

#[test]
fn the_web_template_with_cicd_writes_its_pipeline_and_says_what_to_set_up_once() {
    homelab_testkit::require_kubectl();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("homelab.toml");
    std::fs::write(
        &config,
        "[gitops]\nrepo_url = \"https://git.example/me/gitops.git\"\n[features]\ncicd = true\n",
    )
    .unwrap();
    let repo = dir.path().join("repo");
    gitops()
        .arg("--config")
        .arg(&config)
        .arg("init")
        .arg(&repo)
        .assert()
        .success();
    gitops()
        .arg("--config")
        .arg(&config)
        .args(["add-app", "shop", "--template", "web-postgres", "--dir"])
        .arg(&repo)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "created   apps/shop/ci/pipeline.yaml",
        ))
        .stderr(predicate::str::contains(
            "so that pushes to shop's source repository deploy, set up once:",
        ))
        .stderr(predicate::str::contains(
            "kubectl -n shop-ci create secret docker-registry shop-push",
        ))
        .stderr(predicate::str::contains("https://shop.homelab.lan/hooks"));
    let pipeline = std::fs::read_to_string(repo.join("apps/shop/ci/pipeline.yaml")).unwrap();
    assert!(
        pipeline.contains("value: https://git.example/me/gitops.git"),
        "{pipeline}"
    );
    assert!(
        pipeline.contains("value: harbor.homelab.lan/homelab/shop-backend\n"),
        "{pipeline}"
    );
    // Tekton's own release files cannot be fetched here: warnings, never errors.
    gitops()
        .arg("--config")
        .arg(&config)
        .arg("validate")
        .arg(&repo)
        .assert()
        .success()
        .stdout(predicate::str::contains(" 0 errors,"));
    // An ssh GitOps URL cannot take the pipeline's token: said, with the URL.
    std::fs::write(
        &config,
        "[gitops]\nrepo_url = \"git@git.example:me/gitops.git\"\n[features]\ncicd = true\n",
    )
    .unwrap();
    gitops()
        .arg("--config")
        .arg(&config)
        .args(["add-app", "cart", "--template", "web-postgres", "--dir"])
        .arg(&repo)
        .assert()
        .failure()
        .stderr(predicate::str::contains("git@git.example:me/gitops.git"));
    assert!(!repo.join("apps/cart").exists());
}
