//! Merging a cluster's admin kubeconfig into a user's kubeconfig file.

use std::path::Path;

use serde_norway::{Mapping, Value};

/// The kubeconfig could not be merged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeconfigError {
    /// A file is not a kubeconfig.
    #[error("{what} is not a valid kubeconfig: {message}")]
    Invalid {
        /// Which file.
        what: String,
        /// Why.
        message: String,
    },
    /// A file is not YAML, or the merged one could not be written.
    #[error("{what}: {source}")]
    Yaml {
        /// Which file.
        what: String,
        /// The YAML error.
        source: serde_norway::Error,
    },
    /// The file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn yaml(what: &str, source: serde_norway::Error) -> KubeconfigError {
    KubeconfigError::Yaml {
        what: what.to_owned(),
        source,
    }
}

fn invalid(what: &str, message: impl Into<String>) -> KubeconfigError {
    KubeconfigError::Invalid {
        what: what.to_owned(),
        message: message.into(),
    }
}

fn first_named<'a>(doc: &'a Value, list: &str, what: &str) -> Result<&'a Value, KubeconfigError> {
    doc.get(list)
        .and_then(Value::as_sequence)
        .and_then(|s| s.first())
        .ok_or_else(|| invalid(what, format!("no {list}")))
}

/// Entries of `existing` whose name is not `name`, followed by `entry`.
fn replace_named(existing: Option<&Value>, name: &str, entry: Value) -> Value {
    let mut items: Vec<Value> = existing
        .and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .filter(|e| e.get("name").and_then(Value::as_str) != Some(name))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    items.push(entry);
    Value::Sequence(items)
}

/// Merges the admin kubeconfig `admin` (as kubeadm writes it) into `existing` (a user's
/// kubeconfig, possibly empty): its cluster, user and context are renamed after `cluster`,
/// the server URL is set to `server`, entries of the same names are replaced, every other
/// context is kept, and the current context is set to `cluster`.
///
/// # Errors
/// Either document is not a kubeconfig.
pub fn merge(
    admin: &str,
    existing: &str,
    cluster: &str,
    server: &str,
) -> Result<String, KubeconfigError> {
    let admin: Value = serde_norway::from_str(admin).map_err(|e| yaml("admin.conf", e))?;
    let mut cluster_data = first_named(&admin, "clusters", "admin.conf")?
        .get("cluster")
        .cloned()
        .ok_or_else(|| invalid("admin.conf", "cluster entry without data"))?;
    if let Value::Mapping(m) = &mut cluster_data {
        m.insert("server".into(), server.into());
    }
    let user_data = first_named(&admin, "users", "admin.conf")?
        .get("user")
        .cloned()
        .ok_or_else(|| invalid("admin.conf", "user entry without data"))?;
    let user_name = format!("{cluster}-admin");

    let mut doc: Value = if existing.trim().is_empty() {
        Value::Mapping(Mapping::new())
    } else {
        serde_norway::from_str(existing).map_err(|e| yaml("the existing kubeconfig", e))?
    };
    let Value::Mapping(map) = &mut doc else {
        return Err(invalid("the existing kubeconfig", "not a mapping"));
    };
    map.entry("apiVersion".into()).or_insert("v1".into());
    map.entry("kind".into()).or_insert("Config".into());
    let named = |name: &str, key: &str, data: Value| {
        let mut m = Mapping::new();
        m.insert("name".into(), name.into());
        m.insert(key.into(), data);
        Value::Mapping(m)
    };
    let mut context = Mapping::new();
    context.insert("cluster".into(), cluster.into());
    context.insert("user".into(), user_name.clone().into());
    let clusters = replace_named(
        map.get("clusters"),
        cluster,
        named(cluster, "cluster", cluster_data),
    );
    let users = replace_named(
        map.get("users"),
        &user_name,
        named(&user_name, "user", user_data),
    );
    let contexts = replace_named(
        map.get("contexts"),
        cluster,
        named(cluster, "context", Value::Mapping(context)),
    );
    map.insert("clusters".into(), clusters);
    map.insert("users".into(), users);
    map.insert("contexts".into(), contexts);
    map.insert("current-context".into(), cluster.into());
    serde_norway::to_string(&doc).map_err(|e| yaml("the merged kubeconfig", e))
}

/// Merges into the file at `path` (created if missing), written atomically with mode 0600.
///
/// # Errors
/// The file cannot be read or written, or is not a kubeconfig.
pub fn merge_into_file(
    path: &Path,
    admin: &str,
    cluster: &str,
    server: &str,
) -> Result<(), KubeconfigError> {
    let io = |action, source| KubeconfigError::Io {
        action,
        path: path.display().to_string(),
        source,
    };
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io("read", e)),
    };
    let merged = merge(admin, &existing, cluster, server)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io("write next to", e))?;
    std::io::Write::write_all(&mut tmp, merged.as_bytes()).map_err(|e| io("write", e))?;
    tmp.persist(path).map_err(|e| io("replace", e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://k8s-cp-1:6443\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: kubernetes-admin\n  name: kubernetes-admin@kubernetes\ncurrent-context: kubernetes-admin@kubernetes\nusers:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n";

    #[test]
    fn merge_keeps_other_contexts_and_renames_ours() {
        let existing = "apiVersion: v1\nkind: Config\nclusters:\n- name: work\n  cluster:\n    server: https://work:6443\ncontexts:\n- name: work\n  context:\n    cluster: work\n    user: me\nusers:\n- name: me\n  user:\n    token: abc\ncurrent-context: work\n";
        let merged = merge(ADMIN, existing, "homelab", "https://192.168.122.10:6443").unwrap();
        let doc: Value = serde_norway::from_str(&merged).unwrap();
        assert_eq!(doc["current-context"].as_str(), Some("homelab"));
        let names = |list: &str| -> Vec<String> {
            doc[list]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names("contexts"), ["work", "homelab"]);
        assert_eq!(names("users"), ["me", "homelab-admin"]);
        assert_eq!(
            doc["clusters"][1]["cluster"]["server"].as_str(),
            Some("https://192.168.122.10:6443")
        );
        assert_eq!(
            doc["clusters"][1]["cluster"]["certificate-authority-data"].as_str(),
            Some("Q0E=")
        );
        // Merging again replaces instead of duplicating.
        let again = merge(ADMIN, &merged, "homelab", "https://192.168.122.10:6443").unwrap();
        assert_eq!(again, merged);
    }

    #[test]
    fn file_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".kube/config");
        merge_into_file(&path, ADMIN, "lab", "https://10.0.0.1:6443").unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("current-context: lab")
        );
        assert!(merge(ADMIN, "- not a map", "lab", "x").is_err());
    }
}
