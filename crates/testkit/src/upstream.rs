//! Upstream release files the tests check the project's output against, fetched through the
//! Go module proxy (the one registry of release sources these machines reach): a project
//! published as a Go module carries its release manifests in the module's files, byte for
//! byte as its Git tag has them.

use std::path::PathBuf;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::FixtureError;

/// Argo CD's `manifests/install.yaml` of `release` (`v3.2.0`), from the Go module
/// `github.com/argoproj/argo-cd/v3` (downloaded once into the Go module cache), checked
/// against `sha256` — homelab's own pin of the file GitHub serves, which is why Go's checksum
/// database is not asked (`GOSUMDB=off`: the pin is the stronger check here).
///
/// # Errors
/// Go cannot download the module, or the file's digest is not `sha256`.
pub fn argocd_install_manifest(release: &str, sha256: &str) -> Result<PathBuf, FixtureError> {
    let module = format!("github.com/argoproj/argo-cd/v{}", major(release)?);
    let out = Command::new("go")
        .args(["mod", "download", "-json", &format!("{module}@{release}")])
        .current_dir(std::env::temp_dir())
        .env("GOSUMDB", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "on")
        .output()
        .map_err(|e| FixtureError(format!("run go mod download {module}@{release}: {e}")))?;
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let Some(dir) = answer["Dir"].as_str().filter(|_| out.status.success()) else {
        return Err(FixtureError(format!(
            "go mod download {module}@{release}: {}{}",
            answer["Error"].as_str().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        )));
    };
    let path = PathBuf::from(dir).join("manifests/install.yaml");
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

fn major(release: &str) -> Result<&str, FixtureError> {
    release
        .strip_prefix('v')
        .and_then(|r| r.split('.').next())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| FixtureError(format!("{release} is not a vMAJOR.MINOR.PATCH tag")))
}
