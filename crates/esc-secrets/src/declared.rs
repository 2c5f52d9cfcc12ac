//! Every secret the platform needs, as data: where it lives in the ESC environment (one
//! object per secret, whose fields become the Secret's keys), which Secret it becomes, and
//! of what type. Both deliveries ([`crate::deliver`]) and the check read this one list.
//!
//! One object per secret is what lets External Secrets read each secret with one open of
//! the environment (`dataFrom.extract` of the object), rather than one per key.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::SecretString;

use crate::client::EnvRef;
use crate::path::PropertyPath;
use crate::value::Value;

/// What a Kubernetes Secret holds and how its keys come from the object's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `Opaque`: each Secret key from a field.
    Opaque {
        /// (Secret key, field of the ESC object).
        keys: Vec<(String, String)>,
    },
    /// `kubernetes.io/dockerconfigjson` for a registry, from the fields `username` and
    /// `password`.
    DockerConfig {
        /// The registry, `host[:port]`.
        registry: String,
    },
    /// Argo CD repository credentials (labelled `argocd.argoproj.io/secret-type:
    /// repository`) for a Git URL, from the fields `username` and `password`.
    ArgoRepository {
        /// The repository's clone URL.
        url: String,
    },
}

impl Kind {
    /// The fields of the ESC object this kind reads.
    pub fn fields(&self) -> Vec<String> {
        match self {
            Self::Opaque { keys } => keys.iter().map(|(_, f)| f.clone()).collect(),
            Self::DockerConfig { .. } | Self::ArgoRepository { .. } => {
                vec!["username".into(), "password".into()]
            }
        }
    }

    /// The Secret's `type`.
    pub fn secret_type(&self) -> &'static str {
        match self {
            Self::Opaque { .. } | Self::ArgoRepository { .. } => "Opaque",
            Self::DockerConfig { .. } => "kubernetes.io/dockerconfigjson",
        }
    }
}

/// One secret the platform needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// Short name (`harbor-admin`).
    pub name: String,
    /// What it is for, in words.
    pub purpose: String,
    /// The ESC object holding its fields.
    pub source: PropertyPath,
    /// The Secret's namespace.
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// Its type and keys.
    pub kind: Kind,
    /// Needed only in some setups (a public GitOps repository needs no credentials): a
    /// missing one is reported, not an error, and not delivered.
    pub optional: bool,
}

impl fmt::Display for Declared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (Secret {}/{} from {})",
            self.name, self.namespace, self.secret, self.source
        )
    }
}

/// What decides which secrets are needed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Harbor's registry, `host[:port]`.
    pub harbor_registry: String,
    /// The GitOps repository Argo CD clones, when there is one.
    pub gitops_repo: Option<String>,
    /// GitHub Actions runners are deployed.
    pub runners: bool,
    /// The monitoring stack is deployed.
    pub monitoring: bool,
    /// The scheduled etcd snapshots are copied to an S3-compatible bucket.
    pub backup_s3: bool,
}

/// The Secret (in `kube-system`) whose `access_key_id` and `secret_access_key` the scheduled
/// etcd backup copies to S3 with.
pub const BACKUP_S3_SECRET: &str = "etcd-backup-s3";

/// A path of dotted keys (the literals below).
fn path(text: &str) -> PropertyPath {
    let mut keys = text.split('.');
    let first = PropertyPath::root(keys.next().unwrap_or_default());
    keys.fold(first, PropertyPath::key)
}

/// The Secret name Argo CD's repository credentials get (the platform's bootstrap uses the
/// same).
pub const ARGOCD_REPOSITORY_SECRET: &str = "homelab-repository";

/// Every secret the platform needs for `needs`, in a fixed order.
pub fn declared(needs: &Needs) -> Vec<Declared> {
    let mut out = vec![
        Declared {
            name: "harbor-admin".into(),
            purpose: "Harbor's admin password (the chart's existingSecretAdminPassword)".into(),
            source: path("harbor.admin"),
            namespace: "harbor".into(),
            secret: "harbor-admin".into(),
            kind: Kind::Opaque {
                keys: vec![("HARBOR_ADMIN_PASSWORD".into(), "password".into())],
            },
            optional: false,
        },
        Declared {
            name: "harbor-robot".into(),
            purpose: "a Harbor robot's login kept in ESC, for pulls outside homelab's own \
                      registry wiring (which makes its own pull-only robot)"
                .into(),
            source: path("harbor.robot"),
            namespace: "default".into(),
            secret: "harbor-robot".into(),
            kind: Kind::DockerConfig {
                registry: needs.harbor_registry.clone(),
            },
            optional: true,
        },
    ];
    if let Some(url) = &needs.gitops_repo {
        out.push(Declared {
            name: "argocd-repository".into(),
            purpose: "credentials Argo CD clones the GitOps repository with (a private \
                      repository; a public one needs none)"
                .into(),
            source: path("argocd.repository"),
            namespace: "argocd".into(),
            secret: ARGOCD_REPOSITORY_SECRET.into(),
            kind: Kind::ArgoRepository { url: url.clone() },
            optional: true,
        });
    }
    if needs.runners {
        out.push(Declared {
            name: "github-runner-token".into(),
            purpose: "the GitHub token the runner scale sets register with".into(),
            source: path("github"),
            namespace: "arc-runners".into(),
            secret: "github-runner-token".into(),
            kind: Kind::Opaque {
                keys: vec![("github_token".into(), "token".into())],
            },
            optional: false,
        });
    }
    if needs.monitoring {
        out.push(Declared {
            name: "grafana-admin".into(),
            purpose: "Grafana's admin login".into(),
            source: path("grafana"),
            namespace: "monitoring".into(),
            secret: "grafana-admin".into(),
            kind: Kind::Opaque {
                keys: vec![
                    ("admin-user".into(), "adminUser".into()),
                    ("admin-password".into(), "adminPassword".into()),
                ],
            },
            optional: false,
        });
    }
    if needs.backup_s3 {
        out.push(Declared {
            name: BACKUP_S3_SECRET.into(),
            purpose: "the S3 access key the scheduled etcd snapshots are copied to the bucket with"
                .into(),
            source: path("backups.s3"),
            namespace: "kube-system".into(),
            secret: BACKUP_S3_SECRET.into(),
            kind: Kind::Opaque {
                keys: vec![
                    ("access_key_id".into(), "accessKeyId".into()),
                    ("secret_access_key".into(), "secretAccessKey".into()),
                ],
            },
            optional: false,
        });
    }
    out
}

/// A declared field the environment lacks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Missing {
    /// The declared secret's name.
    pub secret: String,
    /// The path of the missing value.
    pub path: PropertyPath,
    /// Whether the secret is optional.
    pub optional: bool,
    /// The command that adds it (no value: the user types it).
    pub set_line: String,
}

/// Every declared field missing from `values` (one read of the environment), with the
/// `esc env set` line that adds it.
pub fn check(values: &Value, env: &EnvRef, declared: &[Declared]) -> Vec<Missing> {
    let mut out = Vec::new();
    for d in declared {
        for field in d.kind.fields() {
            let at = d.source.clone().key(field);
            let present = values.get(&at).and_then(Value::text).is_some();
            if !present {
                out.push(Missing {
                    secret: d.name.clone(),
                    set_line: format!("esc env set {env} '{at}' \"$VALUE\" --secret"),
                    path: at,
                    optional: d.optional,
                });
            }
        }
    }
    out
}

/// A declared secret's fields, read from the environment's values: `None` when one is
/// missing.
pub fn fields(values: &Value, declared: &Declared) -> Option<BTreeMap<String, SecretString>> {
    declared
        .kind
        .fields()
        .into_iter()
        .map(|field| {
            let text = values
                .get(&declared.source.clone().key(field.clone()))?
                .text()?;
            Some((field, text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn everything() -> Needs {
        Needs {
            harbor_registry: "harbor.lan".into(),
            gitops_repo: Some("https://github.com/me/lab.git".into()),
            runners: true,
            monitoring: true,
            backup_s3: true,
        }
    }

    #[test]
    fn the_list_follows_the_features_and_every_source_is_a_bare_path() {
        let names =
            |n: &Needs| -> Vec<String> { declared(n).into_iter().map(|d| d.name).collect() };
        assert_eq!(names(&Needs::default()), ["harbor-admin", "harbor-robot"]);
        assert_eq!(
            names(&everything()),
            [
                "harbor-admin",
                "harbor-robot",
                "argocd-repository",
                "github-runner-token",
                "grafana-admin",
                "etcd-backup-s3"
            ]
        );
        for d in declared(&everything()) {
            assert_eq!(
                d.source.to_string().parse::<PropertyPath>().unwrap(),
                d.source
            );
        }
        // Secrets are unique by namespace and name.
        let mut targets: Vec<(String, String)> = declared(&everything())
            .into_iter()
            .map(|d| (d.namespace, d.secret))
            .collect();
        targets.sort();
        targets.dedup();
        assert_eq!(targets.len(), 6);
    }

    #[test]
    fn the_check_names_each_missing_field_with_the_line_that_adds_it() {
        let props = json!({
            "harbor": { "value": { "admin": { "value": { "password": { "value": "x", "secret": true } } } } },
            "github": { "value": { "token": { "value": "ghp_x", "secret": true } } },
        });
        let values = Value::from_properties(props.as_object().unwrap());
        let env = EnvRef::new("acme", "homelab", "dev");
        let missing = check(&values, &env, &declared(&everything()));
        let lines: Vec<(String, bool)> = missing
            .iter()
            .map(|m| (m.path.to_string(), m.optional))
            .collect();
        assert_eq!(
            lines,
            [
                ("harbor.robot.username".to_owned(), true),
                ("harbor.robot.password".to_owned(), true),
                ("argocd.repository.username".to_owned(), true),
                ("argocd.repository.password".to_owned(), true),
                ("grafana.adminUser".to_owned(), false),
                ("grafana.adminPassword".to_owned(), false),
                ("backups.s3.accessKeyId".to_owned(), false),
                ("backups.s3.secretAccessKey".to_owned(), false),
            ]
        );
        assert_eq!(
            missing[4].set_line,
            "esc env set acme/homelab/dev 'grafana.adminUser' \"$VALUE\" --secret"
        );
        let admin = &declared(&everything())[0];
        let fields = fields(&values, admin).unwrap();
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&fields["password"]),
            "x"
        );
    }
}
