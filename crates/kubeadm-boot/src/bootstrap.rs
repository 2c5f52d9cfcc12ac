//! The cluster bootstrap: `kubeadm init` on the control plane (or the rest of an init that
//! stopped half-way), a bootstrap token created or reused, the discovery hash computed here
//! from the cluster CA, workers that are not registered joined in parallel (reset first when
//! an earlier join left files behind) from a 0600 JoinConfiguration file that is removed
//! again, and the admin kubeconfig fetched.
//!
//! Re-running a finished bootstrap reports every step unchanged and creates no token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::ca::{CaError, ca_cert_hash};
use crate::kubeadm::{
    BootstrapToken, ClusterSpec, ConfigError, NodeSpec, init_config, join_config,
};
use crate::ssh::{Cmd, Pool, Session, SshError, Target, shell_quote};
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

/// The directory kubeadm works in on every node.
pub const KUBERNETES_DIR: &str = "/etc/kubernetes";

/// What a finished `kubeadm init` leaves in the cluster, besides admin.conf (which kubeadm
/// writes early, in its kubeconfig phase): the ConfigMaps joins need and the two addons.
const INIT_RESULTS: &str = "kc -n kube-public get configmap/cluster-info && \
     kc -n kube-system get configmap/kubeadm-config configmap/kubelet-config deployment/coredns daemonset/kube-proxy";

/// A shell function `kc` running kubectl with the node's admin kubeconfig, quietly.
fn kc(kubernetes_dir: &str) -> String {
    format!(
        "kc() {{ kubectl --kubeconfig {} --request-timeout=10s \"$@\" >/dev/null 2>&1; }}",
        shell_quote(&format!("{kubernetes_dir}/admin.conf"))
    )
}

/// The control plane's steps: the InitConfiguration file (0600, kept for upgrades) and
/// `kubeadm init`. Init counts as done only when what a finished init leaves is in the
/// cluster (cluster-info, kubeadm-config, kubelet-config, CoreDNS, kube-proxy), not when
/// admin.conf exists: kubeadm writes that early, so an init that died later would otherwise be
/// skipped for ever and every join would fail. Such an init is resumed: the phases whose
/// results are missing run again (`kubeadm init phase …`), after the API server answers.
///
/// # Errors
/// The configuration cannot be serialized.
pub fn init_steps(cluster: &ClusterSpec, node: &NodeSpec) -> Result<Vec<Step>, ConfigError> {
    init_steps_in(KUBERNETES_DIR, cluster, node)
}

/// [`init_steps`] with kubeadm's directory elsewhere than [`KUBERNETES_DIR`] (tests).
///
/// # Errors
/// The configuration cannot be serialized.
pub fn init_steps_in(
    kubernetes_dir: &str,
    cluster: &ClusterSpec,
    node: &NodeSpec,
) -> Result<Vec<Step>, ConfigError> {
    let path = format!("{kubernetes_dir}/homelab/kubeadm-init.yaml");
    let config = init_config(cluster, node, None)?;
    let k = shell_quote(kubernetes_dir);
    let c = shell_quote(&path);
    let phase = |args: &str| format!("kubeadm init phase {args} --config {c} || exit 1");
    let resume = [
        format!("[ -f {k}/manifests/etcd.yaml ] || {}", phase("etcd local")),
        format!(
            "[ -f {k}/manifests/kube-apiserver.yaml ] || {}",
            phase("control-plane all")
        ),
        format!(
            "{{ [ -f {k}/kubelet.conf ] && systemctl is-active --quiet kubelet; }} || {}",
            phase("kubelet-start")
        ),
        format!(
            "n=0; until kc get --raw /readyz; do n=$((n+1)); if [ $n -ge 120 ]; then \
             echo 'the API server at {} did not answer /readyz within 4 minutes' >&2; exit 1; fi; \
             sleep 2; done",
            cluster.control_plane_endpoint
        ),
        format!(
            "kc -n kube-system get configmap/kubeadm-config configmap/kubelet-config || {}",
            phase("upload-config all")
        ),
        phase("mark-control-plane"),
        format!(
            "kc -n kube-public get configmap/cluster-info || kubeadm init phase bootstrap-token --config {c} --skip-token-print || exit 1"
        ),
        phase("kubelet-finalize all"),
        format!(
            "kc -n kube-system get deployment/coredns || {}",
            phase("addon coredns")
        ),
        format!(
            "kc -n kube-system get daemonset/kube-proxy || {}",
            phase("addon kube-proxy")
        ),
    ];
    let run = format!(
        "{kc}; if [ ! -f {k}/admin.conf ]; then exec kubeadm init --config {c} --skip-token-print; fi; \
         echo 'kubeadm init did not finish on an earlier run: running the phases whose results are missing' >&2; \
         {resume}",
        kc = kc(kubernetes_dir),
        resume = resume.join("; ")
    );
    Ok(vec![
        Step::file("kubeadm-init-config", &path, config, 0o600, None),
        Step {
            name: "kubeadm-init".into(),
            description: format!(
                "run `kubeadm init` for cluster {} (Kubernetes {}, API at {}), or finish one that stopped",
                cluster.name, cluster.version, cluster.control_plane_endpoint
            ),
            check: Check::Command(
                Cmd::new(format!("{}; {INIT_RESULTS}", kc(kubernetes_dir))).sudo(),
            ),
            changes: vec![Change::Run(
                Cmd::new(run).sudo().timeout(Duration::from_secs(15 * 60)),
            )],
        },
    ])
}

/// A worker's join step: the JoinConfiguration (it holds the token) written 0600, `kubeadm
/// join`, and the file removed whether the join worked or not. `member` says whether the
/// cluster already has this node registered: a member with `/etc/kubernetes/kubelet.conf` is
/// left alone. Anything else joins; when it carries what an earlier, failed join (or another
/// cluster) left — kubelet.conf, bootstrap-kubelet.conf, pki/ca.crt, static pod manifests,
/// each of which kubeadm's join preflight refuses — it is reset first (`kubeadm reset -f`,
/// its CNI configuration removed).
///
/// # Errors
/// The configuration cannot be serialized.
pub fn join_step(
    cluster: &ClusterSpec,
    node: &NodeSpec,
    token: &BootstrapToken,
    ca_hash: &str,
    member: bool,
) -> Result<Step, ConfigError> {
    join_step_in(KUBERNETES_DIR, cluster, node, token, ca_hash, member)
}

/// [`join_step`] with kubeadm's directory elsewhere than [`KUBERNETES_DIR`] (tests).
///
/// # Errors
/// The configuration cannot be serialized.
pub fn join_step_in(
    kubernetes_dir: &str,
    cluster: &ClusterSpec,
    node: &NodeSpec,
    token: &BootstrapToken,
    ca_hash: &str,
    member: bool,
) -> Result<Step, ConfigError> {
    let path = format!("{kubernetes_dir}/homelab/kubeadm-join.yaml");
    let k = shell_quote(kubernetes_dir);
    let p = shell_quote(&path);
    let check = if member {
        format!("test -f {k}/kubelet.conf")
    } else {
        // Not registered with the API server: whatever the node holds, it joins.
        "false".to_owned()
    };
    let run = format!(
        "left=''; for f in kubelet.conf bootstrap-kubelet.conf pki/ca.crt; do \
         if [ -e {k}/$f ]; then left=\"$left $f\"; fi; done; \
         if [ -n \"$(ls -A {k}/manifests 2>/dev/null)\" ]; then left=\"$left manifests/\"; fi; \
         if [ -n \"$left\" ]; then \
         echo \"not a member of the cluster, but holds what an earlier join left ($left ): resetting it first\" >&2; \
         kubeadm reset -f --cri-socket {cri} || exit 1; rm -rf /etc/cni/net.d; fi; \
         kubeadm join --config {p}; status=$?; rm -f {p}; exit $status",
        cri = crate::cluster::CRI_SOCKET,
    );
    Ok(Step {
        name: "kubeadm-join".into(),
        description: format!(
            "join the cluster at {} as worker {}",
            cluster.control_plane_endpoint, node.name
        ),
        check: Check::Command(Cmd::new(check).sudo()),
        changes: vec![
            Change::Upload {
                path: path.clone(),
                contents: join_config(cluster, node, token, ca_hash)?.into_bytes(),
                mode: 0o600,
                owner: None,
            },
            Change::Run(Cmd::new(run).sudo().timeout(Duration::from_secs(10 * 60))),
        ],
    })
}

/// The names of the nodes the cluster has registered, read with kubectl on the control plane
/// (none when there is no admin.conf yet, or the API server does not answer).
///
/// # Errors
/// The connection fails.
pub async fn registered_nodes(session: &Session) -> Result<Vec<String>, BootstrapError> {
    let cmd = Cmd::new(format!(
        "kubectl --kubeconfig {ADMIN_CONF} --request-timeout=10s get nodes -o name 2>/dev/null || true"
    ))
    .sudo();
    let out = session.run(&cmd).await?;
    Ok(out
        .stdout_text()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("node/").map(str::to_owned))
        .collect())
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
    let cp_session = runner.pool().session(&cp.target).await?;
    let registered = registered_nodes(&cp_session).await?;
    let join_steps = |token: &BootstrapToken, hash: &str| {
        plan.workers
            .iter()
            .map(|w| {
                let member = registered.contains(&w.spec.name);
                Ok((
                    w.target.clone(),
                    vec![join_step(&plan.cluster, &w.spec, token, hash, member)?],
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
        let step = join_step(&cluster, &node, &token, "sha256:00", false).unwrap();
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
        let step = join_step(&cluster(), &node, &token, "sha256:00", true).unwrap();
        let mut saw_upload = false;
        for change in &step.changes {
            match change {
                Change::Run(cmd) => {
                    assert!(!cmd.line.contains(token.expose()), "{}", cmd.line);
                    assert!(
                        cmd.line
                            .contains("rm -f '/etc/kubernetes/homelab/kubeadm-join.yaml'")
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
            matches!(&step.check, Check::Command(c) if c.line == "test -f '/etc/kubernetes'/kubelet.conf"),
            "a registered member with kubelet.conf is left alone"
        );
        let not_member = join_step(&cluster(), &node, &token, "sha256:00", false).unwrap();
        assert!(
            matches!(&not_member.check, Check::Command(c) if c.line == "false"),
            "a node the cluster has not registered always joins"
        );
    }

    #[test]
    fn init_is_done_only_when_its_results_are_in_the_cluster() {
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
        let Check::Command(check) = &steps[1].check else {
            panic!("init is checked by a command");
        };
        for wanted in [
            "configmap/cluster-info",
            "configmap/kubelet-config",
            "deployment/coredns",
            "daemonset/kube-proxy",
        ] {
            assert!(check.line.contains(wanted), "{}", check.line);
        }
        assert!(
            !check.line.contains("test -f"),
            "admin.conf alone proves nothing"
        );
    }
}
