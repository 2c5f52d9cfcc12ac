//! Upstream release files the tests check the project's output against, fetched through the
//! Go module proxy (the one registry of release sources these machines reach): a project
//! published as a Go module carries its release manifests in the module's files, byte for
//! byte as its Git tag has them.

use std::path::PathBuf;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::FixtureError;

/// A file of the Go module `module` at `version` (downloaded once into the Go module cache),
/// checked against `sha256` — a pin of the file as the project's Git tag has it, which is
/// why Go's checksum database is not asked (`GOSUMDB=off`: the pin is the stronger check).
///
/// # Errors
/// Go cannot download the module, the file is missing, or its digest is not `sha256`.
pub fn module_file(
    module: &str,
    version: &str,
    path: &str,
    sha256: &str,
) -> Result<PathBuf, FixtureError> {
    let out = Command::new("go")
        .args(["mod", "download", "-json", &format!("{module}@{version}")])
        .current_dir(std::env::temp_dir())
        .env("GOSUMDB", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "on")
        .output()
        .map_err(|e| FixtureError(format!("run go mod download {module}@{version}: {e}")))?;
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let Some(dir) = answer["Dir"].as_str().filter(|_| out.status.success()) else {
        return Err(FixtureError(format!(
            "go mod download {module}@{version}: {}{}",
            answer["Error"].as_str().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        )));
    };
    let path = PathBuf::from(dir).join(path);
    let bytes =
        std::fs::read(&path).map_err(|e| FixtureError(format!("read {}: {e}", path.display())))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != sha256 {
        return Err(FixtureError(format!(
            "{} has sha256 {actual}, not the pinned {sha256}",
            path.display()
        )));
    }
    Ok(path)
}

/// Argo CD's `manifests/install.yaml` of `release` (`v3.2.0`), from the Go module
/// `github.com/argoproj/argo-cd/v3`, checked against `sha256` (homelab's own pin of the file
/// GitHub serves).
///
/// # Errors
/// Go cannot download the module, or the file's digest is not `sha256`.
pub fn argocd_install_manifest(release: &str, sha256: &str) -> Result<PathBuf, FixtureError> {
    let module = format!("github.com/argoproj/argo-cd/v{}", major(release)?);
    module_file(&module, release, "manifests/install.yaml", sha256)
}

/// One upstream CustomResourceDefinition file: (Go module, version, path in the module,
/// sha256 of the file).
pub type CrdFile = (&'static str, &'static str, &'static str, &'static str);

/// The CRDs of the platform's components at the versions of homelab's embedded default,
/// for the custom resources homelab generates (MetalLB's pool and advertisement,
/// cert-manager's issuers and certificate, External Secrets' stores and secrets).
pub const PLATFORM_CRDS: &[CrdFile] = &[
    (
        "go.universe.tf/metallb",
        "v0.15.2",
        "config/crd/bases/metallb.io_ipaddresspools.yaml",
        "2e4888107eb90cbf49aa57f30a3caac45b73a9f3a64ecd0454fd7b1e9d79e486",
    ),
    (
        "go.universe.tf/metallb",
        "v0.15.2",
        "config/crd/bases/metallb.io_l2advertisements.yaml",
        "52063c56073177480abcbd7261b8f8401729792e8270f384ad3a72a33c279905",
    ),
    (
        "github.com/cert-manager/cert-manager",
        "v1.19.1",
        "deploy/crds/cert-manager.io_certificates.yaml",
        "7c99af3441710ffb4c0988c87a36a1448b293d4c99bf4e5ca8d3adbfc1f63b3e",
    ),
    (
        "github.com/cert-manager/cert-manager",
        "v1.19.1",
        "deploy/crds/cert-manager.io_clusterissuers.yaml",
        "3d71d9faf472b2c1fdc49639b3896c4b373bdeff41f25bd9f502a4bd1f14a538",
    ),
    (
        "github.com/external-secrets/external-secrets",
        "v0.20.4",
        "deploy/crds/bundle.yaml",
        "db2c51e928f25dd9b43f583e61b3deeba3fbdfa6286768b8c92aef94f862b4e3",
    ),
];

/// The Prometheus operator's `ServiceMonitor` CRD at the operator release of homelab's
/// kube-prometheus-stack chart (88.5.3 ships operator v0.93.1), for the `ServiceMonitor`s the
/// application templates write.
pub const SERVICE_MONITOR_CRD: CrdFile = (
    "github.com/prometheus-operator/prometheus-operator",
    "v0.93.1",
    "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
    "7dd4206947c94bc76f71daa07c45a1010a5d697c54fe079f8207b0e82026a26a",
);

fn major(release: &str) -> Result<&str, FixtureError> {
    release
        .strip_prefix('v')
        .and_then(|r| r.split('.').next())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| FixtureError(format!("{release} is not a vMAJOR.MINOR.PATCH tag")))
}

/// What Tekton's own Go types make of `yaml` (documents separated by `---` lines): the
/// `tekton-check` program (`crates/testkit/tekton`, built by `scripts/kube-tools.sh
/// tekton-check` against Tekton Pipelines v1.15.0 and Triggers v0.37.0) decodes every
/// Tekton object strictly, defaults it and runs the `Validate` Tekton's admission webhook
/// runs; a `TriggerTemplate`'s objects too. Whether every object passed, and its report
/// (`ok KIND NAME` or what is wrong, a line each).
///
/// # Errors
/// `tekton-check` is not built or cannot be run.
pub fn tekton_check(yaml: &str) -> Result<(bool, String), FixtureError> {
    use std::io::Write;
    let binary = crate::control_plane::kube_bin_dir()?.join("tekton-check");
    if !binary.exists() {
        return Err(FixtureError(format!(
            "{} is not built: run scripts/kube-tools.sh tekton-check (make test does)",
            binary.display()
        )));
    }
    let mut child = Command::new(&binary)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| FixtureError(format!("run {}: {e}", binary.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(yaml.as_bytes())
            .map_err(|e| FixtureError(format!("write to tekton-check: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| FixtureError(format!("wait for tekton-check: {e}")))?;
    match out.status.code() {
        Some(0 | 1) => Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )),
        _ => Err(FixtureError(format!(
            "tekton-check failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))),
    }
}
