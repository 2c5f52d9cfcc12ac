//! What nodes and workloads need to use a registry: a `kubernetes.io/dockerconfigjson` pull
//! Secret built from robot credentials (for any list of namespaces), and containerd's
//! `hosts.toml` for a registry mirror (`/etc/containerd/certs.d/<host>/hosts.toml`).

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use secrecy::{ExposeSecret, SecretString};

/// The Secret type kubelets read image pull credentials from.
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";

/// Pull Secrets named `name`, one per namespace, holding `username`/`password` for
/// `registry` (`host[:port]`).
///
/// ```
/// use harbor_client::node::{DOCKER_CONFIG_JSON, pull_secrets};
///
/// let password = "robot-secret".to_owned().into();
/// let secrets = pull_secrets("harbor-pull", &["shop", "ci"], "harbor.homelab.lan", "robot$homelab+pull", &password);
/// assert_eq!(secrets.len(), 2);
/// assert_eq!(secrets[1].metadata.namespace.as_deref(), Some("ci"));
/// assert_eq!(secrets[0].type_.as_deref(), Some(DOCKER_CONFIG_JSON));
/// // The password is in the data, as kubelets read it; a Secret's Debug shows its bytes, so
/// // keep Secrets out of logs.
/// let config = &secrets[0].data.as_ref().unwrap()[".dockerconfigjson"].0;
/// assert!(String::from_utf8_lossy(config).contains("harbor.homelab.lan"));
/// ```
pub fn pull_secrets(
    name: &str,
    namespaces: &[&str],
    registry: &str,
    username: &str,
    password: &SecretString,
) -> Vec<Secret> {
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose_secret()));
    let config = serde_json::json!({
        "auths": { registry: { "username": username, "password": password.expose_secret(), "auth": auth } }
    })
    .to_string();
    namespaces
        .iter()
        .map(|ns| Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some((*ns).to_owned()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "homelab".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some(DOCKER_CONFIG_JSON.to_owned()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_owned(),
                ByteString(config.clone().into_bytes()),
            )])),
            ..Secret::default()
        })
        .collect()
}

/// How containerd should trust the mirror's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorTls {
    /// The system's trust store.
    System,
    /// This CA file on the node.
    CaFile(String),
    /// No verification (only for a mirror you control on a private network).
    SkipVerify,
}

/// Where containerd looks for a registry's host configuration.
pub fn hosts_toml_path(registry: &str) -> String {
    format!("/etc/containerd/certs.d/{registry}/hosts.toml")
}

/// containerd's `hosts.toml` sending pulls of `registry` to `mirror` (a URL) first, then to
/// the registry itself.
///
/// ```
/// use harbor_client::node::{MirrorTls, hosts_toml, hosts_toml_path};
///
/// let tls = MirrorTls::CaFile("/etc/containerd/certs.d/homelab-ca.crt".into());
/// let toml = hosts_toml("docker.io", "https://harbor.homelab.lan/v2/dockerhub", &tls);
/// assert!(toml.contains(r#"server = "https://registry-1.docker.io""#));
/// assert!(toml.contains(r#"ca = "/etc/containerd/certs.d/homelab-ca.crt""#));
/// assert_eq!(hosts_toml_path("docker.io"), "/etc/containerd/certs.d/docker.io/hosts.toml");
/// ```
pub fn hosts_toml(registry: &str, mirror: &str, tls: &MirrorTls) -> String {
    let mut host = toml::Table::new();
    host.insert(
        "capabilities".into(),
        toml::Value::Array(vec!["pull".into(), "resolve".into()]),
    );
    match tls {
        MirrorTls::System => {}
        MirrorTls::CaFile(path) => {
            host.insert("ca".into(), path.clone().into());
        }
        MirrorTls::SkipVerify => {
            host.insert("skip_verify".into(), true.into());
        }
    }
    let mut hosts = toml::Table::new();
    hosts.insert(mirror.to_owned(), host.into());
    let mut root = toml::Table::new();
    let server = if registry == "docker.io" {
        "https://registry-1.docker.io".to_owned()
    } else {
        format!("https://{registry}")
    };
    root.insert("server".into(), server.into());
    root.insert("host".into(), hosts.into());
    format!(
        "# Written by homelab: pulls of {registry} try {mirror} first.\n{}",
        toml::to_string(&root).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_secrets_hold_docker_config_json() {
        let secrets = pull_secrets(
            "harbor-pull",
            &["apps", "ci"],
            "harbor.lan",
            "robot$homelab+pull",
            &"s3cret".to_owned().into(),
        );
        assert_eq!(secrets.len(), 2);
        assert_eq!(secrets[1].metadata.namespace.as_deref(), Some("ci"));
        assert_eq!(secrets[0].type_.as_deref(), Some(DOCKER_CONFIG_JSON));
        let data = &secrets[0].data.as_ref().unwrap()[".dockerconfigjson"].0;
        let config: serde_json::Value = serde_json::from_slice(data).unwrap();
        let entry = &config["auths"]["harbor.lan"];
        assert_eq!(entry["username"], "robot$homelab+pull");
        let auth = base64::engine::general_purpose::STANDARD
            .decode(entry["auth"].as_str().unwrap())
            .unwrap();
        assert_eq!(auth, b"robot$homelab+pull:s3cret");
    }

    #[test]
    fn hosts_toml_is_what_containerd_reads() {
        let text = hosts_toml(
            "docker.io",
            "https://harbor.lan/v2/proxy",
            &MirrorTls::CaFile("/etc/containerd/certs.d/docker.io/ca.crt".into()),
        );
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            parsed["server"].as_str(),
            Some("https://registry-1.docker.io")
        );
        let host = &parsed["host"]["https://harbor.lan/v2/proxy"];
        assert_eq!(
            host["ca"].as_str(),
            Some("/etc/containerd/certs.d/docker.io/ca.crt")
        );
        assert_eq!(
            host["capabilities"].as_array().unwrap().len(),
            2,
            "a mirror pulls and resolves"
        );
        let skip: toml::Table = toml::from_str(&hosts_toml(
            "harbor.lan:8443",
            "https://10.0.0.5:8443",
            &MirrorTls::SkipVerify,
        ))
        .unwrap();
        assert_eq!(
            skip["host"]["https://10.0.0.5:8443"]["skip_verify"].as_bool(),
            Some(true)
        );
        assert_eq!(skip["server"].as_str(), Some("https://harbor.lan:8443"));
        assert_eq!(
            hosts_toml_path("harbor.lan:8443"),
            "/etc/containerd/certs.d/harbor.lan:8443/hosts.toml"
        );
    }
}
