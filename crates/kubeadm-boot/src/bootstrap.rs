//! The cluster bootstrap: `kubeadm init` on the control plane (only when
//! `/etc/kubernetes/admin.conf` is absent), a bootstrap token created or reused, the discovery
//! hash computed here from the cluster CA, workers joined in parallel from a 0600
//! JoinConfiguration file that is removed again, and the admin kubeconfig fetched.
//!
//! Re-running a finished bootstrap reports every step unchanged and creates no token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::ca::{CaError, ca_cert_hash};
use crate::kubeadm::{
    BootstrapToken, ClusterSpec, ConfigError, NodeSpec, init_config, join_config,
};
use crate::ssh::{Cmd, Pool, Session, SshError, Target};
use crate::steps::{Change, Check, Event, Report, RunError, Runner, Step};

/// Where homelab keeps kubeadm's configuration files on a node.
pub const CONFIG_DIR: &str = "/etc/kubernetes/homelab";
/// The admin kubeconfig kubeadm writes on the control plane.
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
/// The kubelet kubeconfig a joined node has.
pub const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
/// The cluster CA certificate on the control plane.
pub const CA_CERT: &str = "/etc/kubernetes/pki/ca.crt";
/// The description of the tokens homelab creates; only such tokens are reused.
pub const TOKEN_DESCRIPTION: &str = "homelab node join";
/// A token is reused only while it has at least this long to live.
pub const TOKEN_MIN_REMAINING: Duration = Duration::from_secs(15 * 60);
/// Lifetime of a token homelab creates.
pub const TOKEN_TTL: &str = "1h";

/// The bootstrap could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Steps failed on some hosts.
    #[error(transparent)]
    Steps(#[from] RunError),
    /// A command or the connection failed.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// The kubeadm configuration could not be written.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The cluster CA is unusable.
    #[error("{host}: {CA_CERT}: {source}")]
    Ca {
        /// Control-plane host.
        host: String,
        /// Why.
        source: CaError,
    },
    /// A file kubeadm should have written is not there.
    #[error("{host}: {path} does not exist: has `kubeadm init` run on this node?")]
    Missing {
        /// Host.
        host: String,
        /// The file.
        path: &'static str,
    },
    /// kubeadm printed something this crate does not understand.
    #[error("{host}: cannot read the output of `{command}`: {message}")]
    Output {
        /// Host.
        host: String,
        /// The command.
        command: String,
        /// What was wrong.
        message: String,
    },
}

/// A node: how to reach it and who it is in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// SSH target.
    pub target: Target,
    /// Name and address in the cluster.
    pub spec: NodeSpec,
}

/// What to bootstrap.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The cluster.
    pub cluster: ClusterSpec,
    /// The node `kubeadm init` runs on.
    pub control_plane: Node,
    /// Nodes that join as workers.
    pub workers: Vec<Node>,
}

fn config_path(file: &str) -> String {
    format!("{CONFIG_DIR}/{file}")
}

/// The control plane's steps: the InitConfiguration file (0600, kept for upgrades) and
/// `kubeadm init`, which runs only while `/etc/kubernetes/admin.conf` is absent.
///
/// # Errors
/// The configuration cannot be serialized.
pub fn init_steps(cluster: &ClusterSpec, node: &NodeSpec) -> Result<Vec<Step>, ConfigError> {
    let path = config_path("kubeadm-init.yaml");
    let config = init_config(cluster, node, None)?;
    Ok(vec![
        Step::file("kubeadm-init-config", &path, config, 0o600, None),
        Step {
            name: "kubeadm-init".into(),
            description: format!(
                "run `kubeadm init` for cluster {} (Kubernetes {}, API at {})",
                cluster.name, cluster.version, cluster.control_plane_endpoint
            ),
            check: Check::Command(Cmd::new(format!("test -f {ADMIN_CONF}")).sudo()),
            changes: vec![Change::Run(
                Cmd::new(format!("kubeadm init --config {path} --skip-token-print"))
                    .sudo()
                    .timeout(Duration::from_secs(15 * 60)),
            )],
        },
    ])
}

/// A worker's join step: the JoinConfiguration (it holds the token) written 0600, `kubeadm
/// join`, and the file removed whether the join worked or not. Runs only while the node
/// has no `/etc/kubernetes/kubelet.conf`.
///
/// # Errors
/// The configuration cannot be serialized.
pub fn join_step(
    cluster: &ClusterSpec,
    node: &NodeSpec,
    token: &BootstrapToken,
    ca_hash: &str,
) -> Result<Step, ConfigError> {
    let path = config_path("kubeadm-join.yaml");
    Ok(Step {
        name: "kubeadm-join".into(),
        description: format!(
            "join the cluster at {} as worker {}",
            cluster.control_plane_endpoint, node.name
        ),
        check: Check::Command(Cmd::new(format!("test -f {KUBELET_CONF}")).sudo()),
        changes: vec![
            Change::Upload {
                path: path.clone(),
                contents: join_config(cluster, node, token, ca_hash)?.into_bytes(),
                mode: 0o600,
                owner: None,
            },
            Change::Run(
                Cmd::new(format!(
                    "kubeadm join --config {path}; status=$?; rm -f {path}; exit $status"
                ))
                .sudo()
                .timeout(Duration::from_secs(10 * 60)),
            ),
        ],
    })
}

/// One token as `kubeadm token list -o json` prints it (no `Debug`: it holds the secret).
#[derive(Deserialize)]
struct ListedToken {
    token: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    usages: Vec<String>,
}

/// Picks a token homelab made that can still authenticate joins for a while, from the
/// output of `kubeadm token list -o json` (one JSON object per token).
///
/// # Errors
/// The output is not a sequence of JSON objects.
pub fn reusable_token(
    list_output: &str,
    now: SystemTime,
) -> Result<Option<BootstrapToken>, String> {
    let mut best = None;
    for item in serde_json::Deserializer::from_str(list_output).into_iter::<ListedToken>() {
        let item = item.map_err(|e| e.to_string())?;
        if item.description != TOKEN_DESCRIPTION
            || !item.usages.iter().any(|u| u == "authentication")
        {
            continue;
        }
        let Some(expires) = item
            .expires
            .as_deref()
            .and_then(|e| humantime::parse_rfc3339(e).ok())
        else {
            // Never-expiring tokens are not made by homelab; leave them alone.
            continue;
        };
        if expires
            .duration_since(now)
            .is_ok_and(|left| left >= TOKEN_MIN_REMAINING)
            && let Ok(token) = BootstrapToken::parse(&item.token)
        {
            best = Some(token);
        }
    }
    Ok(best)
}

/// A bootstrap token for joining: one homelab made earlier that lives at least
/// [`TOKEN_MIN_REMAINING`] more, or a new one (kubeadm generates it; it comes back on
/// standard output, never through a command line).
///
/// # Errors
/// kubeadm fails or prints something unexpected.
pub async fn ensure_token(session: &Session) -> Result<BootstrapToken, BootstrapError> {
    let host = session.target().name.clone();
    let list = Cmd::new("kubeadm token list -o json").sudo();
    let out = session.run(&list).await?;
    let existing = reusable_token(&out.stdout_text(), SystemTime::now()).map_err(|message| {
        BootstrapError::Output {
            host: host.clone(),
            command: list.line.clone(),
            message,
        }
    })?;
    if let Some(token) = existing {
        tracing::info!(host = %host, token_id = token.id(), "reusing a bootstrap token");
        return Ok(token);
    }
    let create = Cmd::new(format!(
        "kubeadm token create --ttl {TOKEN_TTL} --description '{TOKEN_DESCRIPTION}'"
    ))
    .sudo();
    let out = session.run(&create).await?;
    let token =
        BootstrapToken::parse(out.stdout_text().trim()).map_err(|e| BootstrapError::Output {
            host: host.clone(),
            command: create.line.clone(),
            message: e.to_string(),
        })?;
    tracing::info!(host = %host, token_id = token.id(), "created a bootstrap token");
    Ok(token)
}

/// The discovery hash (`sha256:…`) of the cluster CA on the control plane.
///
/// # Errors
/// The certificate is missing or unreadable.
pub async fn discovery_hash(session: &Session) -> Result<String, BootstrapError> {
    let host = session.target().name.clone();
    let pem = session
        .read_file(CA_CERT, true)
        .await?
        .ok_or_else(|| BootstrapError::Missing {
            host: host.clone(),
            path: CA_CERT,
        })?;
    ca_cert_hash(&pem).map_err(|source| BootstrapError::Ca { host, source })
}

/// The admin kubeconfig of the control plane, as kubeadm wrote it.
///
/// # Errors
/// The file is missing or unreadable.
pub async fn admin_kubeconfig(session: &Session) -> Result<String, BootstrapError> {
    let host = session.target().name.clone();
    let bytes = session
        .read_file(ADMIN_CONF, true)
        .await?
        .ok_or(BootstrapError::Missing {
            host: host.clone(),
            path: ADMIN_CONF,
        })?;
    String::from_utf8(bytes).map_err(|e| BootstrapError::Output {
        host,
        command: format!("cat {ADMIN_CONF}"),
        message: e.to_string(),
    })
}

/// Runs the bootstrap: init on the control plane, then every worker not yet joined, in
/// parallel. A token is made only when some worker needs to join. With `runner.dry_run`,
/// nothing changes and the reports say what would.
///
/// # Errors
/// A step failed (the error names host, step, command and stderr), or the token or CA hash
/// could not be had.
pub async fn bootstrap(
    runner: &Runner,
    plan: &Plan,
    events: Arc<dyn Fn(Event<'_>) + Send + Sync>,
) -> Result<Vec<Report>, BootstrapError> {
    let cp = &plan.control_plane;
    let mut reports = runner
        .run(
            vec![(cp.target.clone(), init_steps(&plan.cluster, &cp.spec)?)],
            events.clone(),
        )
        .await?;
    if plan.workers.is_empty() {
        return Ok(reports);
    }
    // Which workers still need to join: the same step, checked only. Its contents are
    // never sent, so a placeholder token does no harm.
    let placeholder = BootstrapToken::generate();
    let join_steps = |token: &BootstrapToken, hash: &str| {
        plan.workers
            .iter()
            .map(|w| {
                Ok((
                    w.target.clone(),
                    vec![join_step(&plan.cluster, &w.spec, token, hash)?],
                ))
            })
            .collect::<Result<Vec<_>, ConfigError>>()
    };
    let mut checker = runner.clone();
    checker.dry_run = true;
    let quiet: Arc<dyn Fn(Event<'_>) + Send + Sync> = Arc::new(|_| {});
    let checked = checker
        .run(join_steps(&placeholder, "sha256:")?, quiet)
        .await?;
    let pending: Vec<String> = checked
        .iter()
        .filter(|r| r.outcome != crate::steps::Outcome::Unchanged)
        .map(|r| r.host.clone())
        .collect();
    if pending.is_empty() || runner.dry_run {
        for r in &checked {
            events(Event::Done(r));
        }
        reports.extend(checked);
        return Ok(reports);
    }
    let session = runner.pool().session(&cp.target).await?;
    let token = ensure_token(&session).await?;
    let hash = discovery_hash(&session).await?;
    let work = join_steps(&token, &hash)?
        .into_iter()
        .filter(|(t, _)| pending.contains(&t.name))
        .collect();
    let joined = runner.run(work, events.clone()).await?;
    for r in checked.into_iter().filter(|r| !pending.contains(&r.host)) {
        events(Event::Done(&r));
        reports.push(r);
    }
    reports.extend(joined);
    Ok(reports)
}

/// The connection pool's session to the control plane (for [`admin_kubeconfig`] and
/// friends).
///
/// # Errors
/// It cannot be reached.
pub async fn control_plane_session(
    pool: &Pool,
    plan: &Plan,
) -> Result<Arc<Session>, BootstrapError> {
    Ok(pool.session(&plan.control_plane.target).await?)
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_join_step_never_shows_its_token_in_debug() {
        let cluster = crate::testing::cluster_spec(33);
        let node = NodeSpec {
            name: "w1".into(),
            address: "192.168.122.11".parse().unwrap(),
        };
        let token = BootstrapToken::generate();
        let step = join_step(&cluster, &node, &token, "sha256:00").unwrap();
        let uploads = step
            .changes
            .iter()
            .any(|c| matches!(c, crate::steps::Change::Upload { contents, .. } if String::from_utf8_lossy(contents).contains(token.expose())));
        let in_check = matches!(&step.check, crate::steps::Check::File { contents, .. } if String::from_utf8_lossy(contents).contains(token.expose()));
        assert!(uploads || in_check, "the step carries the token");
        let shown = format!("{step:?}");
        assert!(!shown.contains(token.expose()), "{shown}");
        let secret = token.expose().split('.').nth(1).unwrap();
        assert!(!shown.contains(secret), "{shown}");
    }

    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    const LIST: &str = r#"{
    "kind": "BootstrapToken",
    "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
    "token": "abcdef.0123456789abcdef",
    "description": "The default bootstrap token generated by 'kubeadm init'.",
    "ttl": "23h",
    "expires": "2026-11-24T12:00:00Z",
    "usages": ["authentication", "signing"],
    "groups": ["system:bootstrappers:kubeadm:default-node-token"]
}
{
    "kind": "BootstrapToken",
    "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
    "token": "hl0001.aaaaaaaaaaaaaaaa",
    "description": "homelab node join",
    "ttl": "50m",
    "expires": "2026-11-23T13:00:00Z",
    "usages": ["authentication", "signing"],
    "groups": ["system:bootstrappers:kubeadm:default-node-token"]
}
"#;

    #[test]
    fn reuses_only_homelab_tokens_with_time_left() {
        let reused = reusable_token(LIST, at("2026-11-23T12:10:00Z"))
            .unwrap()
            .unwrap();
        assert_eq!(
            reused.id(),
            "hl0001",
            "the kubeadm default token is not ours"
        );
        assert!(
            reusable_token(LIST, at("2026-11-23T12:50:00Z"))
                .unwrap()
                .is_none(),
            "10 minutes left is too little"
        );
        assert!(reusable_token("", SystemTime::now()).unwrap().is_none());
        let err = reusable_token("{\"token\": 5}", SystemTime::now()).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
    }

    fn cluster() -> ClusterSpec {
        crate::testing::cluster_spec(33)
    }

    #[test]
    fn join_keeps_the_token_off_command_lines_and_removes_its_file() {
        let token = BootstrapToken::parse("hl0001.aaaaaaaaaaaaaaaa").unwrap();
        let node = NodeSpec {
            name: "w1".into(),
            address: "192.168.122.11".parse().unwrap(),
        };
        let step = join_step(&cluster(), &node, &token, "sha256:00").unwrap();
        let mut saw_upload = false;
        for change in &step.changes {
            match change {
                Change::Run(cmd) => {
                    assert!(!cmd.line.contains(token.expose()), "{}", cmd.line);
                    assert!(
                        cmd.line
                            .contains("rm -f /etc/kubernetes/homelab/kubeadm-join.yaml")
                    );
                    assert!(
                        cmd.line.ends_with("exit $status"),
                        "join's own status counts"
                    );
                }
                Change::Upload { contents, mode, .. } => {
                    saw_upload = true;
                    assert_eq!(*mode, 0o600);
                    assert!(String::from_utf8_lossy(contents).contains(token.expose()));
                }
            }
        }
        assert!(saw_upload);
        assert!(
            matches!(&step.check, Check::Command(c) if c.line == "test -f /etc/kubernetes/kubelet.conf")
        );
    }

    #[test]
    fn init_runs_only_without_admin_conf_and_keeps_no_token() {
        let node = NodeSpec {
            name: "cp".into(),
            address: "192.168.122.10".parse().unwrap(),
        };
        let steps = init_steps(&cluster(), &node).unwrap();
        assert_eq!(steps[0].name, "kubeadm-init-config");
        let Check::File { contents, mode, .. } = &steps[0].check else {
            panic!("the config is a file step");
        };
        assert_eq!(*mode, 0o600);
        assert!(!String::from_utf8_lossy(contents).contains("bootstrapTokens"));
        assert!(
            matches!(&steps[1].check, Check::Command(c) if c.line == "test -f /etc/kubernetes/admin.conf")
        );
    }
}
