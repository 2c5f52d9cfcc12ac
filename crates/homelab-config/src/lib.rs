//! The typed `homelab.toml` shared by the homelab command-line tools.
//!
//! - [`Config`] is the whole file; every section has a default equal to the embedded default
//!   ([`EMBEDDED_DEFAULT`]), which reproduces the reference topology: one control plane at
//!   192.168.122.10 (4 vCPU, 8 GiB, 50 GiB) and workers at .11 and .12 (2 vCPU, 4 GiB, 30 GiB),
//!   MetalLB on 192.168.122.100–150.
//! - [`parse_str`] and [`ConfigSource::load`] read a file and report **every** problem at once
//!   (type errors, unknown keys with a "did you mean", and semantic rules such as addresses
//!   outside the NAT network or overlapping CIDRs), each named by key path and line:column.
//! - Secrets are never values in the file: [`SecretRef`] names an environment variable or a
//!   private file, and resolves into a [`secrecy::SecretString`] that never prints.
//! - [`json_schema`] describes the file for editors.
//!
//! This crate depends on no layer, and no layer depends on it: the composition library
//! (`homelab`) converts a [`Config`] into each layer's own input types.
//!
//! ```
//! let loaded = homelab_config::parse_str("homelab.toml", r#"
//! [cluster]
//! name = "lab"
//! "#).unwrap();
//! assert_eq!(loaded.config.cluster.name, "lab");
//! assert_eq!(loaded.config.nodes.len(), 3); // the default topology
//!
//! let report = homelab_config::parse_str("homelab.toml", "[cluster]\nnmae = \"lab\"\n").unwrap_err();
//! let text = report.to_string();
//! assert!(text.contains("homelab.toml:2:1: error: cluster.nmae: unknown key `nmae`"), "{text}");
//! assert!(text.contains("did you mean `name`?"));
//! ```

mod diagnostic;
pub mod edit;
mod load;
mod model;
mod path;
mod secret;
mod types;
mod validate;

use std::sync::LazyLock;

pub use diagnostic::{Diagnostic, Location, Related, Report, Severity};
pub use load::{
    ConfigSource, DEFAULT_FILE_NAME, EMBEDDED_DEFAULT, EMBEDDED_NAME, LoadError, Loaded, parse_str,
};
pub use model::{
    ARGOCD_MANIFEST_SHA256, ARGOCD_RELEASE, BackupsConfig, BackupsS3, ClusterConfig,
    ClusterProvider, ComponentVersions, Config, DomainType, EscConfig, Features, GithubConfig,
    GitopsConfig, HarborConfig, HarborStorage, LibvirtConfig, LoadBalancerIps, NetworkConfig, Node,
    NodeRole, PackagesConfig, PhaseSettings, Phases, RunnerRepo, SshConfig,
};
pub use path::{KeyPath, Segment};
pub use secret::{SecretError, SecretRef};
pub use types::{
    HumanDuration, IpRange, KubeVersion, MacAddress, Mebibytes, PinnedVersion, Quantity, ValueError,
};
pub use validate::{
    MIN_CONTROL_PLANE_MEMORY_MIB, MIN_CONTROL_PLANE_VCPUS, MIN_DISK_MIB, MIN_KUBERNETES_MINOR,
    MIN_WORKER_MEMORY_MIB, UrlProblem, git_url_problems, is_dns_label, url_problems, validate,
    without_userinfo,
};

static SCHEMA: LazyLock<serde_json::Value> = LazyLock::new(|| {
    let mut schema = schemars::schema_for!(Config);
    schema.insert(
        "$id".into(),
        "https://homelab.invalid/schema/homelab.toml.json".into(),
    );
    schema.to_value()
});

/// The JSON Schema (draft 2020-12) of `homelab.toml`, for editors such as taplo or
/// VS Code's Even Better TOML.
pub fn json_schema() -> serde_json::Value {
    SCHEMA.clone()
}

pub(crate) fn schema_json() -> &'static serde_json::Value {
    &SCHEMA
}

/// Why a configuration could not be written as text.
#[derive(Debug, thiserror::Error)]
#[error("cannot serialize the configuration as TOML: {0}")]
pub struct SerializeError(#[from] toml::ser::Error);

/// `path` with a leading `~/` replaced by `$HOME/`.
pub fn expand_home(path: &std::path::Path) -> std::path::PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => std::path::PathBuf::from(home).join(rest),
        _ => path.to_owned(),
    }
}

impl Config {
    /// The configuration as TOML text; parsing it gives back an equal `Config`.
    ///
    /// # Errors
    /// Only if a value cannot be represented in TOML, which the types here rule out.
    pub fn to_toml(&self) -> Result<String, SerializeError> {
        Ok(toml::to_string_pretty(self)?)
    }
}
