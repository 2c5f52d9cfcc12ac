//! The end-to-end check that the nodes pull from Harbor as a pod's image would come: a probe
//! image (one empty layer, a label unique to the run) is pushed to Harbor's project, then
//! every node pulls it through its own containerd (`ctr images pull --hosts-dir`, so the
//! `hosts.toml` and CA that [`crate::registry`] wrote are what is used) with the pull
//! robot's login taken from the pull Secret that workloads use; the image is then removed
//! from each node and from Harbor.
//!
//! `ctr` takes a login only as `--user name:password` on its command line (or from a
//! terminal prompt, which a non-interactive SSH session has not): the password travels to
//! the node on the command's standard input and is on `ctr`'s command line only while it
//! runs, on a node where only root can run it.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use harbor_client::reference::Digest;
use harbor_client::registry::Registry;
use kubeadm_boot::ssh::{Cmd, Pool, SshError, Target, shell_quote};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

/// The containerd namespace the probe is pulled into (never `k8s.io`, the kubelet's).
pub const CONTAINERD_NAMESPACE: &str = "homelab-verify";

/// The media type of an OCI image manifest.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What the check needs.
pub struct NodePull {
    /// A client of Harbor's registry API that may push to `repository` (the probe is pushed
    /// and deleted with it).
    pub registry: Registry,
    /// The probe's repository, `<project>/homelab-verify`.
    pub repository: String,
    /// The login the nodes pull with (the pull robot's, from its Secret); `None` pulls
    /// anonymously (a public project).
    pub login: Option<(String, SecretString)>,
    /// containerd's hosts directory on the nodes ([`crate::registry::CONTAINERD_CERTS_DIR`]).
    pub certs_dir: String,
    /// containerd's socket on the nodes.
    pub containerd_socket: String,
    /// How long one node's pull may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for NodePull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodePull")
            .field("registry", &self.registry.host())
            .field("repository", &self.repository)
            .field("login", &self.login.as_ref().map(|(user, _)| user))
            .field("certs_dir", &self.certs_dir)
            .field("containerd_socket", &self.containerd_socket)
            .finish_non_exhaustive()
    }
}

impl NodePull {
    /// The check of `project` through `registry`, with the nodes' defaults
    /// (`/etc/containerd/certs.d`, `/run/containerd/containerd.sock`, two minutes a node).
    pub fn new(registry: Registry, project: &str, login: Option<(String, SecretString)>) -> Self {
        Self {
            registry,
            repository: format!("{project}/homelab-verify"),
            login,
            certs_dir: crate::registry::CONTAINERD_CERTS_DIR.into(),
            containerd_socket: "/run/containerd/containerd.sock".into(),
            timeout: Duration::from_secs(120),
        }
    }
}

/// The probe image: an empty layer (an empty tar, uncompressed), a config naming `token`,
/// and the manifest's bytes. Returns (layer, config, manifest).
pub fn probe_image(token: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    // An empty tar archive is two 512-byte blocks of zeros.
    let layer = vec![0u8; 1024];
    let layer_digest = Digest::of(&layer);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "homelab.verify": token } },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest.to_string()] },
    })
    .to_string()
    .into_bytes();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": Digest::of(&config).to_string(), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar",
                     "digest": layer_digest.to_string(), "size": layer.len() }],
    })
    .to_string()
    .into_bytes();
    (layer, config, manifest)
}

/// The shell line a node runs: read the login from standard input (an empty line: none),
/// pull `reference` into [`CONTAINERD_NAMESPACE`], remove it again whatever happened, and
/// exit with the pull's status.
pub fn pull_line(check: &NodePull, reference: &str) -> String {
    let ctr = format!(
        "ctr --address {} -n {CONTAINERD_NAMESPACE}",
        shell_quote(&check.containerd_socket)
    );
    let reference = shell_quote(reference);
    format!(
        "IFS= read -r login || true; \
         if [ -n \"$login\" ]; then set -- --user \"$login\"; else set --; fi; \
         {ctr} images pull --all-platforms --hosts-dir {dir} \"$@\" {reference} >/dev/null; rc=$?; \
         {ctr} images rm {reference} >/dev/null 2>&1; exit $rc",
        dir = shell_quote(&check.certs_dir),
    )
}

/// Pushes the probe, has every node in `targets` pull it, removes it everywhere.
///
/// # Errors
/// The probe cannot be pushed, or a node cannot pull it: each failing node with the last
/// line `ctr` wrote (an unknown certificate authority, an unauthorized login, …).
pub async fn node_pulls(
    pool: &Pool,
    targets: &[Target],
    check: &NodePull,
) -> Result<String, String> {
    if targets.is_empty() {
        return Err("no nodes to pull on".into());
    }
    let token = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let tag = format!("verify-{token}");
    let reference = format!("{}/{}:{tag}", check.registry.host(), check.repository);
    let (layer, config, manifest) = probe_image(&tag);
    let push = async {
        for blob in [&layer, &config] {
            check
                .registry
                .push_blob_bytes(&check.repository, blob)
                .await?;
        }
        check
            .registry
            .put_manifest(&check.repository, &tag, &manifest, OCI_MANIFEST)
            .await
    };
    let digest = push
        .await
        .map_err(|e| format!("push the probe image {reference}: {e}"))?;

    let line = pull_line(check, &reference);
    let stdin = match &check.login {
        Some((user, password)) => format!("{user}:{}\n", password.expose_secret()),
        None => "\n".to_owned(),
    };
    let pulls = targets.iter().map(|target| {
        let cmd = Cmd::new(line.clone())
            .sudo()
            .stdin(stdin.clone().into_bytes())
            .timeout(check.timeout);
        async move {
            match pool.run(target, &cmd).await {
                Ok(_) => Ok(target.name.clone()),
                // The command line is known; what ctr said last is what matters.
                Err(SshError::Failed {
                    exit_status,
                    stderr_tail,
                    ..
                }) => Err(format!(
                    "{}: ctr exited {exit_status}: {}",
                    target.name,
                    stderr_tail.lines().last().unwrap_or_default()
                )),
                Err(e) => Err(e.to_string()),
            }
        }
    });
    let results = join_all(pulls).await;
    // The probe goes whatever the nodes did.
    let removed = check
        .registry
        .delete_manifest(&check.repository, &digest.to_string())
        .await;
    let (pulled, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let failed: Vec<String> = failed.into_iter().filter_map(Result::err).collect();
    let mut detail = if failed.is_empty() {
        format!(
            "{} pulled {reference} through containerd{}",
            pulled
                .into_iter()
                .filter_map(Result::ok)
                .collect::<Vec<_>>()
                .join(", "),
            check
                .login
                .as_ref()
                .map(|(user, _)| format!(" as {user}"))
                .unwrap_or_default()
        )
    } else {
        failed.join("; ")
    };
    if let Err(e) = removed {
        let _ = write!(
            detail,
            " (the probe could not be deleted from the registry: {e})"
        );
    }
    if failed.is_empty() {
        Ok(detail)
    } else {
        Err(detail)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_probe_is_one_empty_layer_named_by_its_config() {
        let (layer, config, manifest) = probe_image("t1");
        assert_eq!(layer.len(), 1024);
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m["config"]["digest"], Digest::of(&config).to_string());
        assert_eq!(m["layers"][0]["size"], 1024);
        let c: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(c["rootfs"]["diff_ids"][0], Digest::of(&layer).to_string());
        // Another run's probe is another image.
        assert_ne!(probe_image("t2").2, manifest);
    }
}
