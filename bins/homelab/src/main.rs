//! `homelab`: builds a home-lab Kubernetes platform from one `homelab.toml`.
//!
//! A thin front end of the `homelab` library: parse, one library call, print.

#![allow(
    clippy::doc_markdown,
    reason = "doc comments here are --help text, read in a terminal"
)]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

mod backup;

use backup::{BackupCmd, RestoreCmd, backup, restore};
use clap::{Args, Parser, Subcommand};
use homelab::{Lab, Pipeline, Selection, Status};
use homelab_cli_common::{LogArgs, TextOrJson};

mod config_cmd;
mod open;

/// Build and run a home-lab Kubernetes platform from one homelab.toml.
///
/// The configuration is read from --config, else $HOMELAB_CONFIG, else ./homelab.toml when
/// it exists, else the embedded default (one control plane and two workers on
/// 192.168.122.0/24). Start with `homelab config init` to get a commented file.
///
/// The phases run in order: vms (libvirt network, pool, disks, cloud-init, boot, SSH), then
/// cluster (node preparation, kubeadm init and join, kubeconfig, pod network, nodes Ready).
/// With [cluster] provider = "existing", a cluster you already have replaces both.
#[derive(Debug, Parser)]
#[command(
    name = "homelab",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(flatten)]
    config: homelab_cli_common::ConfigArg,

    #[command(flatten)]
    log: LogArgs,

    #[command(subcommand)]
    command: Command,
}

/// Which phases a command works on. The phases, in order: vms, nodes, cluster (with
/// `cluster.provider = "existing"`: cluster only).
#[derive(Debug, Clone, Args)]
struct Phases {
    /// Start at this phase (the earlier ones are taken as done).
    #[arg(long, value_name = "PHASE")]
    from: Option<String>,
    /// Run only this phase.
    #[arg(long, value_name = "PHASE", conflicts_with_all = ["from", "until"])]
    only: Option<String>,
    /// Stop after this phase.
    #[arg(long, value_name = "PHASE")]
    until: Option<String>,
}

impl Phases {
    fn selection(&self) -> Selection {
        Selection {
            from: self.from.clone(),
            only: self.only.clone(),
            until: self.until.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
struct UpArgs {
    #[command(flatten)]
    phases: Phases,
    /// Do not ask before changing anything.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Record the host keys of nodes not yet in known_hosts (trust on first use).
    #[arg(long)]
    trust_new_hosts: bool,
    /// Where the base-image build keeps its temporary root filesystem.
    #[arg(long, default_value = "/var/tmp", value_name = "DIR")]
    work_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the platform: prints every phase's plan, asks (or --yes), then runs the phases in
    /// order. Re-running changes only what differs; after a failure it continues where it
    /// stopped (phases done report unchanged).
    Up(UpArgs),
    /// Show what `up` would change, phase by phase, without changing anything.
    Plan {
        #[command(flatten)]
        phases: Phases,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
    },
    /// The live state of every layer: each VM (libvirt state, address, SSH), each node (Ready,
    /// kubelet and containerd versions). Exit status 1 when anything is unhealthy.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
    },
    /// Run every check of every phase (none stops the others) and print check, result,
    /// detail and how to fix it. Exit status 1 when any check failed.
    Verify {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
        output: TextOrJson,
    },
    /// Upgrade the cluster to cluster.kubernetes_version of homelab.toml, one node at a time,
    /// control plane first, after pre-checks (every node Ready, no downgrade, one minor
    /// release at most): kubeadm, `kubeadm upgrade apply|node`, drain, kubelet, uncordon.
    Upgrade {
        /// Only check and show what would change.
        #[arg(long)]
        dry_run: bool,
        /// Time allowed to drain each node.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        drain_timeout: std::time::Duration,
        /// Upgrade without taking an etcd snapshot first (a failed upgrade then has nothing
        /// to be restored from).
        #[arg(long)]
        skip_backup: bool,
    },
    /// etcd snapshots of the cluster (`[backups]`): taken on the control plane over SSH,
    /// checked there and here, copied into backups.dir (0600), the newest backups.keep within
    /// backups.max_age kept. `homelab upgrade` takes one first.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// Put a snapshot back (a single control plane, kubeadm's procedure as steps): shows the
    /// steps and asks (or --yes), uploads and restores it into a new data directory, stops
    /// the control plane's static pods, points etcd at the new data, starts them, and waits
    /// until the API answers and every node is Ready. The old data directory is kept.
    #[command(subcommand)]
    Restore(RestoreCmd),
    /// Remove every object `up` created for this cluster (and nothing else): shows what goes
    /// and asks first (or --yes).
    Destroy {
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// homelab.lock: the digests of downloaded artifacts. --update downloads them again and
    /// records their current digests (after a version change; review the diff).
    Lock {
        /// Record the current digests.
        #[arg(long)]
        update: bool,
    },
    /// Open a platform web interface on this machine: forwards a local port to the
    /// interface's pod through the Kubernetes API (no kubectl), prints the URL and how to
    /// read the login (never the password itself), and forwards until Ctrl-C. Grafana on
    /// 9000, Argo CD on 8080 (https).
    Open {
        /// Which interface.
        #[arg(value_enum)]
        interface: open::Interface,
        /// The local port instead of the interface's usual one.
        #[arg(long)]
        port: Option<u16>,
        /// The local address to listen on (another machine reaches it only when this is not
        /// loopback).
        #[arg(long, default_value = "127.0.0.1")]
        address: String,
    },
    /// Write, check, show and describe homelab.toml.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = cli.log.clone();
    homelab_cli_common::run_main(&log, move || async move {
        let config = cli.config.config;
        match cli.command {
            Command::Config(cmd) => config_cmd::run(cmd, config.as_deref()),
            command => Box::pin(run(command, config)).await,
        }
    })
}

fn load(config: Option<&std::path::Path>) -> anyhow::Result<Lab> {
    let lab = Lab::load(config)?;
    for warning in &lab.warnings {
        eprintln!("{warning}");
    }
    Ok(lab)
}

async fn run(command: Command, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up(args) => up(load(config.as_deref())?, &args).await,
        Command::Plan { phases, output } => {
            let lab = load(config.as_deref())?;
            let plans = Pipeline::for_lab(&lab)
                .plan(&lab, &phases.selection())
                .await?;
            if output == TextOrJson::Json {
                println!("{}", serde_json::to_string_pretty(&plans)?);
            } else {
                for plan in &plans {
                    println!("{plan}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { output } => {
            let lab = load(config.as_deref())?;
            let status = Status::of(Pipeline::for_lab(&lab).status(&lab).await);
            if output == TextOrJson::Json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{status}");
            }
            Ok(exit(status.healthy))
        }
        Command::Verify { output } => {
            let lab = load(config.as_deref())?;
            let checks = Pipeline::for_lab(&lab).verify(&lab).await;
            let passed = checks.iter().all(|c| c.passed);
            if output == TextOrJson::Json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                print!("{}", homelab::CheckTable(&checks));
            }
            Ok(exit(passed))
        }
        Command::Lock { update } => {
            let mut lab = load(config.as_deref())?;
            lab.options.update_lock = update;
            let fetched = homelab::cluster::pod_network(&lab, &|e| eprintln!("{e}")).await?;
            println!(
                "{}: {} ({})",
                lab.lock_path().display(),
                fetched.source,
                if update { "recorded" } else { "matches" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Upgrade {
            dry_run,
            drain_timeout,
            skip_backup,
        } => {
            let lab = load(config.as_deref())?;
            let reports =
                homelab::cluster::upgrade(&lab, dry_run, drain_timeout, skip_backup, &|e| {
                    eprintln!("{e}");
                })
                .await?;
            let changed = reports
                .iter()
                .filter(|r| r.outcome != kubeadm_boot::steps::Outcome::Unchanged)
                .count();
            println!(
                "{} steps, {changed} {}",
                reports.len(),
                if dry_run { "would change" } else { "changed" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Destroy { yes } => destroy(&load(config.as_deref())?, yes).await,
        Command::Backup(cmd) => backup(&load(config.as_deref())?, cmd).await,
        Command::Restore(RestoreCmd::Etcd {
            snapshot,
            dry_run,
            yes,
        }) => restore(&load(config.as_deref())?, &snapshot, dry_run, yes).await,
        Command::Open {
            interface,
            port,
            address,
        } => open::open(&load(config.as_deref())?, interface, port, &address).await,
        Command::Config(_) => Ok(ExitCode::SUCCESS),
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Asks on the terminal; refuses without one.
fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("refusing to change anything without confirmation: pass --yes");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn destroy(lab: &Lab, yes: bool) -> anyhow::Result<ExitCode> {
    let plan = homelab::destroy::plan(lab).await?;
    if plan.is_noop() {
        println!("{plan}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{plan}");
    if !yes && !confirm(&plan.question())? {
        eprintln!("nothing destroyed");
        return Ok(ExitCode::FAILURE);
    }
    let done = homelab::destroy::apply(lab, &|e| eprintln!("{e}")).await?;
    println!("{done}");
    Ok(ExitCode::SUCCESS)
}

async fn up(mut lab: Lab, args: &UpArgs) -> anyhow::Result<ExitCode> {
    lab.options.trust_new_hosts = args.trust_new_hosts;
    lab.options.work_dir.clone_from(&args.work_dir);
    let pipeline = Pipeline::for_lab(&lab);
    let selection = args.phases.selection();
    let plans = pipeline.plan(&lab, &selection).await?;
    for plan in &plans {
        eprintln!("{plan}");
    }
    if plans.iter().all(homelab::PhasePlan::is_noop) {
        eprintln!("nothing to change; checking every phase anyway");
    } else if !args.yes && !confirm("apply these changes?")? {
        eprintln!("nothing changed");
        return Ok(ExitCode::FAILURE);
    }
    let started = Instant::now();
    let events = move |event: homelab::Event| {
        eprintln!("[{:>4}s] {event}", started.elapsed().as_secs());
    };
    let reports = pipeline.up(&lab, &selection, &events).await?;
    for r in &reports {
        println!(
            "{:<10} {} changed, {} unchanged",
            r.phase, r.changed, r.unchanged
        );
    }
    Ok(ExitCode::SUCCESS)
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
