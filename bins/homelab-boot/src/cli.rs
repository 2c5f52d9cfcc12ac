//! `homelab-boot`: the cluster phase of homelab over SSH, as a library (for `homelab up`)
//! and the `homelab-boot` command.
#![allow(
    clippy::doc_markdown,
    reason = "doc comments here are --help text, read in a terminal"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use homelab_cli_common::LogArgs;
use homelab_config::ConfigSource;
use kubeadm_boot::Event;
use kubeadm_boot::prepare::{FACTS_COMMAND, node_steps, parse_facts};
use kubeadm_boot::ssh::{Cmd, Pool, SshOptions, Target};
use kubeadm_boot::steps::{Outcome, Runner};

use crate::cluster;

/// Turn SSH-reachable Linux nodes into a kubeadm cluster.
///
/// Nodes, login user, key and known_hosts come from homelab.toml (or --node/--user/--key).
/// Host keys must already be in known_hosts (homelab-vm records them when it creates the
/// VMs); --trust-new-hosts records unknown ones on first contact. A changed key is always
/// refused.
#[derive(Debug, Parser)]
#[command(name = "homelab-boot", version, max_term_width = 100)]
pub(crate) struct Cli {
    /// Options of every command.
    #[command(flatten)]
    pub(crate) global: Global,
    /// Logging.
    #[command(flatten)]
    pub(crate) log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Hosts worked on at once, unless --parallel says otherwise.
pub(crate) const DEFAULT_PARALLEL: usize = kubeadm_boot::steps::DEFAULT_PARALLELISM;

/// Options of every command.
#[derive(Debug, Clone, Args)]
pub(crate) struct Global {
    /// The configuration file.
    #[command(flatten)]
    pub(crate) config: homelab_cli_common::ConfigArg,
    /// A node as NAME=ADDRESS[:PORT], instead of the configuration's nodes (repeatable; the
    /// first is the control plane).
    #[arg(long = "node", global = true, value_name = "NAME=ADDRESS[:PORT]")]
    pub(crate) nodes: Vec<String>,
    /// Only these nodes (by name; repeatable).
    #[arg(long = "only", global = true, value_name = "NAME")]
    pub(crate) only: Vec<String>,
    /// Login user (default: ssh.user).
    #[arg(long, global = true)]
    pub(crate) user: Option<String>,
    /// Private key (default: ssh.private_key).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// known_hosts file (default: ssh.known_hosts).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) known_hosts: Option<PathBuf>,
    /// Record the host keys of hosts not yet in known_hosts (trust on first use).
    #[arg(long, global = true)]
    pub(crate) trust_new_hosts: bool,
    /// Hosts worked on at once.
    #[arg(long, global = true, default_value_t = DEFAULT_PARALLEL)]
    pub(crate) parallel: usize,
    /// The directory on each host that keeps two runs apart (`{host}` is replaced by the
    /// host's name; for several "hosts" that share one machine, such as test servers).
    #[arg(long, global = true, value_name = "DIR", default_value = kubeadm_boot::steps::LOCK_DIR)]
    pub(crate) lock_dir: String,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

impl Global {
    /// A step runner with these flags' parallelism and lock directory.
    pub(crate) fn runner(&self, pool: Arc<Pool>) -> Runner {
        let mut runner = Runner::new(pool);
        runner.parallelism = self.parallel;
        runner.lock_dir.clone_from(&self.lock_dir);
        runner
    }
}

/// Output format.
pub(crate) use homelab_cli_common::TextOrJson as Output;

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Report each node's OS, CPUs, memory and missing tools, changing nothing.
    Preflight,
    /// Prepare the nodes for kubeadm: swap off, modules, sysctls, containerd, packages of the
    /// configured Kubernetes release (held), kubelet enabled. Re-running changes nothing.
    Prepare {
        /// Only check and show what would change.
        #[arg(long)]
        dry_run: bool,
        /// Kubernetes package repository base, for offline mirrors.
        #[arg(long, value_name = "URL")]
        package_source: Option<String>,
    },
    /// Create the cluster: `kubeadm init` on the control plane (only when it has no
    /// /etc/kubernetes/admin.conf), then every worker not yet joined, in parallel, with a
    /// bootstrap token made (or reused) for the purpose; then merge the admin kubeconfig into
    /// --kubeconfig. Run `prepare` first. Re-running changes nothing.
    Bootstrap {
        /// Only check and show what would change.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        /// Where the cluster's kubeconfig goes.
        kubeconfig: KubeconfigArg,
    },
    /// Fetch the control plane's admin kubeconfig and merge it into --kubeconfig under a
    /// context named after the cluster (other contexts are kept; the file is written 0600).
    Kubeconfig {
        #[command(flatten)]
        /// Where the cluster's kubeconfig goes.
        kubeconfig: KubeconfigArg,
    },
    /// Install the pod network (Flannel) by server-side apply and wait, by watching, until
    /// every node is Ready. The manifest is Flannel's release file of versions.flannel. Its
    /// sha256 must match --sha256, else versions.flannel_manifest_sha256 in homelab.toml,
    /// else the digest homelab.lock (beside homelab.toml) recorded when it was first
    /// downloaded; the first download records it.
    Cni {
        /// Manifest URL or local file (default: Flannel's release of versions.flannel).
        #[arg(long, value_name = "URL|FILE")]
        manifest: Option<String>,
        /// The manifest's pinned sha256.
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// How long the nodes may take to become Ready.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        timeout: Duration,
        #[command(flatten)]
        /// Where the cluster's kubeconfig goes.
        kubeconfig: KubeconfigArg,
    },
    /// Upgrade the cluster to cluster.kubernetes_version (or --to), one node at a time,
    /// control plane first: kubeadm, `kubeadm upgrade apply|node`, drain, kubelet, uncordon,
    /// Ready at the new version. Pre-checks (all nodes Ready, one minor release at most, no
    /// downgrade) and an etcd snapshot of the control plane (into backups.dir, checked) come
    /// before anything changes: no snapshot, no upgrade.
    Upgrade {
        /// Target release (default: cluster.kubernetes_version).
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        /// Only check and show what would change.
        #[arg(long)]
        dry_run: bool,
        /// Time allowed to drain each node.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        drain_timeout: Duration,
        /// Kubernetes package repository base, for offline mirrors.
        #[arg(long, value_name = "URL")]
        package_source: Option<String>,
        /// Upgrade without an etcd snapshot first (nothing to restore from if it fails).
        #[arg(long)]
        skip_backup: bool,
        #[command(flatten)]
        /// Where the cluster's kubeconfig goes.
        kubeconfig: KubeconfigArg,
    },
    /// Everything, in order: prepare, bootstrap (with the kubeconfig), cni. What `homelab up`
    /// runs after the VMs. Re-running changes nothing.
    Up {
        /// Kubernetes package repository base, for offline mirrors.
        #[arg(long, value_name = "URL")]
        package_source: Option<String>,
        /// The pod network manifest (see `cni`).
        #[arg(long, value_name = "URL|FILE")]
        manifest: Option<String>,
        /// The manifest's pinned sha256 (see `cni`).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// How long the nodes may take to become Ready.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        timeout: Duration,
        /// Where the cluster's kubeconfig goes.
        #[command(flatten)]
        kubeconfig: KubeconfigArg,
    },
    /// Run one command on the nodes in parallel and report each exit status.
    Exec {
        /// Run as root (sudo -n).
        #[arg(long)]
        sudo: bool,
        /// Time limit per node.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
        timeout: Duration,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// The kubeconfig file the commands write and read.
#[derive(Debug, Clone, Args)]
pub(crate) struct KubeconfigArg {
    /// Kubeconfig file to merge the cluster's context into, and to reach the API with.
    #[arg(
        long,
        env = "KUBECONFIG",
        default_value = "~/.kube/config",
        value_name = "FILE"
    )]
    pub(crate) kubeconfig: PathBuf,
}

pub(crate) struct Setup {
    pub(crate) config: homelab_config::Config,
    /// The file it came from (`None`: the embedded default).
    pub(crate) config_file: Option<std::path::PathBuf>,
    pub(crate) targets: Vec<Target>,
    /// Name of the control-plane node (the configuration's, or the first --node).
    pub(crate) control_plane: String,
    pub(crate) options: SshOptions,
}

fn setup(global: &Global) -> Result<Setup> {
    let source = ConfigSource::discover(global.config.config.as_deref());
    let loaded = source.load()?;
    let config = loaded.config;
    let config_file = match source {
        ConfigSource::File(path) => Some(path),
        ConfigSource::Embedded => None,
    };
    let selection = homelab::inputs::NodeSelection::all()
        .user(global.user.clone())
        .nodes(global.nodes.clone())
        .only(global.only.clone());
    let picked = homelab::inputs::select_nodes(&config, &selection)?;
    let mut options = homelab::inputs::ssh_options(&config, global.trust_new_hosts);
    if let Some(key) = &global.key {
        options.private_key.clone_from(key);
    }
    if let Some(known) = &global.known_hosts {
        options.known_hosts.clone_from(known);
    }
    Ok(Setup {
        config,
        config_file,
        targets: picked.targets,
        control_plane: picked.control_plane,
        options,
    })
}

/// Runs one command.
///
/// # Errors
/// The configuration is invalid, or the command fails.
pub(crate) async fn run(command: Command, global: &Global) -> Result<ExitCode> {
    // Flags first, before any file or node is touched.
    if let Command::Up { package_source, .. }
    | Command::Prepare { package_source, .. }
    | Command::Upgrade { package_source, .. } = &command
    {
        repository_url(package_source.clone())?;
    }
    let setup = setup(global)?;
    let pool = Arc::new(Pool::new(setup.options.clone())?);
    let json = global.output == Output::Json;
    match command {
        Command::Preflight => preflight(&setup, &pool, json).await,
        Command::Up {
            package_source,
            manifest,
            sha256,
            timeout,
            kubeconfig,
        } => {
            eprintln!("== cluster: prepare the nodes");
            let code = prepare(&setup, pool.clone(), global, json, false, package_source).await?;
            if code != ExitCode::SUCCESS {
                return Ok(code);
            }
            eprintln!("== cluster: kubeadm init and join");
            let code =
                cluster::bootstrap(&setup, pool, global, json, false, &kubeconfig.path()).await?;
            if code != ExitCode::SUCCESS {
                return Ok(code);
            }
            eprintln!("== cluster: pod network");
            let network =
                cluster::pod_network(&setup, global.config.config.as_deref(), manifest, sha256)
                    .await?;
            cluster::cni(&setup, &network, timeout, &kubeconfig.path()).await
        }
        Command::Prepare {
            dry_run,
            package_source,
        } => prepare(&setup, pool, global, json, dry_run, package_source).await,
        Command::Exec {
            sudo,
            timeout,
            command,
        } => exec(&setup, &pool, json, sudo, timeout, &command).await,
        Command::Bootstrap {
            dry_run,
            kubeconfig,
        } => cluster::bootstrap(&setup, pool, global, json, dry_run, &kubeconfig.path()).await,
        Command::Kubeconfig { kubeconfig } => {
            cluster::kubeconfig(&setup, &pool, &kubeconfig.path()).await
        }
        Command::Cni {
            manifest,
            sha256,
            timeout,
            kubeconfig,
        } => {
            let network =
                cluster::pod_network(&setup, global.config.config.as_deref(), manifest, sha256)
                    .await?;
            cluster::cni(&setup, &network, timeout, &kubeconfig.path()).await
        }
        Command::Upgrade {
            to,
            dry_run,
            drain_timeout,
            package_source,
            skip_backup,
            kubeconfig,
        } => {
            cluster::upgrade(
                &setup,
                pool,
                global,
                json,
                cluster::UpgradeArgs {
                    to,
                    dry_run,
                    drain_timeout,
                    package_source,
                    skip_backup,
                },
                &kubeconfig.path(),
            )
            .await
        }
    }
}

async fn preflight(setup: &Setup, pool: &Arc<Pool>, json: bool) -> Result<ExitCode> {
    let results = fan_out(pool, &setup.targets, &Cmd::new(FACTS_COMMAND)).await;
    let mut failed = false;
    let mut report = BTreeMap::new();
    for (target, result) in setup.targets.iter().zip(results) {
        match result {
            Ok(out) => {
                let facts = parse_facts(&out.stdout_text());
                if !json {
                    println!(
                        "{:<16} {} | {} CPU | {} MiB{}",
                        target.name,
                        facts.os,
                        facts.cpus,
                        facts.memory_mib,
                        if facts.missing.is_empty() {
                            String::new()
                        } else {
                            format!(" | missing: {}", facts.missing.join(", "))
                        }
                    );
                }
                report.insert(target.name.clone(), serde_json::to_value(&facts)?);
            }
            Err(e) => {
                failed = true;
                if !json {
                    println!("{:<16} unreachable: {e}", target.name);
                }
                report.insert(
                    target.name.clone(),
                    serde_json::json!({ "error": e.to_string() }),
                );
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn prepare(
    setup: &Setup,
    pool: Arc<Pool>,
    global: &Global,
    json: bool,
    dry_run: bool,
    package_source: Option<String>,
) -> Result<ExitCode> {
    let version = homelab::inputs::kube_version(&setup.config);
    let mut source = homelab::inputs::package_source(&setup.config);
    if let Some(base) = repository_url(package_source)? {
        source.base_url = base;
    }
    if let Some(bundle) = homelab::bundle::open(&setup.config)? {
        // Offline: the cluster's images on the mirrors first, then the nodes from the bundle.
        let images = homelab::bundle::mirrored_images(&setup.config, &bundle).await?;
        for image in images.iter().filter(|i| !i.present) {
            eprintln!("image {} is not on {} yet", image.reference, image.mirror);
        }
        if !dry_run {
            homelab::bundle::publish(&images, &bundle, &|m| eprintln!("{m}")).await?;
        }
        source = source.with_bundle(Some(bundle));
    } else if !dry_run {
        source.fetch_key(&reqwest::Client::new(), &version).await?;
    }
    let steps = node_steps(&version, &source);
    let mut runner = global.runner(pool);
    runner.dry_run = dry_run;
    let work = setup
        .targets
        .iter()
        .map(|t| (t.clone(), steps.clone()))
        .collect();
    let result = runner.run(work, &|e| progress(json, &e)).await;
    print_reports(json, result)
}

/// Prints each finished step on standard error (people) as it happens.
pub(crate) fn progress(json: bool, event: &Event) {
    if let Event::Step(_) = event
        && !json
    {
        eprintln!("{event}");
    }
}

/// The reports as JSON (with -o json) and the exit code; failures keep what was done.
pub(crate) fn print_reports(
    json: bool,
    result: Result<Vec<kubeadm_boot::steps::Report>, kubeadm_boot::steps::RunError>,
) -> Result<ExitCode> {
    match result {
        Ok(reports) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                let changed = reports
                    .iter()
                    .filter(|r| r.outcome != Outcome::Unchanged)
                    .count();
                eprintln!(
                    "{} steps, {changed} {}",
                    reports.len(),
                    if reports.iter().any(|r| r.outcome == Outcome::WouldChange) {
                        "would change"
                    } else {
                        "changed"
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "reports": e.reports, "failures": e.failures })
                    )?
                );
            }
            Err(e.into())
        }
    }
}

async fn exec(
    setup: &Setup,
    pool: &Arc<Pool>,
    json: bool,
    sudo: bool,
    timeout: Duration,
    command: &[String],
) -> Result<ExitCode> {
    let mut cmd = Cmd::new(command.join(" ")).timeout(timeout);
    cmd.sudo = sudo;
    let results = fan_out(pool, &setup.targets, &cmd).await;
    let mut worst = 0;
    let mut report = BTreeMap::new();
    for (target, result) in setup.targets.iter().zip(results) {
        let (status, stdout, stderr) = match result {
            Ok(out) => (
                i64::from(out.exit_status),
                out.stdout_text(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ),
            Err(e) => (-1, String::new(), e.to_string()),
        };
        if status != 0 {
            worst = 1;
        }
        if json {
            report.insert(
                target.name.clone(),
                serde_json::json!({ "exit_status": status, "stdout": stdout, "stderr": stderr }),
            );
        } else {
            for line in stdout.lines() {
                println!("[{}] {line}", target.name);
            }
            for line in stderr.lines() {
                eprintln!("[{}] {line}", target.name);
            }
            eprintln!("[{}] exit {status}", target.name);
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::from(worst))
}

/// Runs `cmd` on every target at once; results in target order.
async fn fan_out(
    pool: &Arc<Pool>,
    targets: &[Target],
    cmd: &Cmd,
) -> Vec<Result<kubeadm_boot::ssh::Output, kubeadm_boot::ssh::SshError>> {
    let mut set = tokio::task::JoinSet::new();
    let mut index = std::collections::HashMap::new();
    for (i, t) in targets.iter().enumerate() {
        let pool = pool.clone();
        let t = t.clone();
        let cmd = cmd.clone();
        let task = set.spawn(async move {
            match pool.session(&t).await {
                Ok(s) => s.exec(&cmd, &mut |_, _| {}).await,
                Err(e) => Err(e),
            }
        });
        index.insert(task.id(), i);
    }
    let mut results: Vec<Option<_>> = (0..targets.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next_with_id().await {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            // The task panicked or was cancelled: that is its command's result.
            Err(e) => {
                if let Some(&i) = index.get(&e.id()) {
                    results[i] = Some(Err(kubeadm_boot::ssh::SshError::Channel {
                        host: targets[i].name.clone(),
                        command: cmd.line.clone(),
                        stage: "the task running it stopped",
                        source: Box::new(e),
                    }));
                }
                continue;
            }
        };
        if let Some(&i) = index.get(&id) {
            results[i] = Some(result);
        }
    }
    results
        .into_iter()
        .zip(targets)
        .map(|(r, t)| {
            r.unwrap_or_else(|| {
                Err(kubeadm_boot::ssh::SshError::NoExitStatus {
                    host: t.name.clone(),
                    command: cmd.line.clone(),
                })
            })
        })
        .collect()
}

/// `--package-source`: an http(s) URL without credentials (it ends up in an apt source list on
/// every node, and in messages). Checked here, not by clap, whose error repeats the value.
pub(crate) fn repository_url(value: Option<String>) -> Result<Option<String>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let problems = homelab_config::url_problems(&value, &["https", "http"]);
    if problems.is_empty() {
        return Ok(Some(value));
    }
    anyhow::bail!(
        "--package-source: {}",
        problems
            .into_iter()
            .map(|p| p
                .help
                .map_or(p.message.clone(), |h| format!("{} ({h})", p.message)))
            .collect::<Vec<_>>()
            .join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
