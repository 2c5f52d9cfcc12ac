//! `homelab`: builds a home-lab Kubernetes platform from one `homelab.toml`.
//!
//! It reads, checks and explains the configuration, and runs the phases each layer
//! implements: VMs (homelab-vm) and the cluster (homelab-boot).

#![allow(
    clippy::doc_markdown,
    reason = "doc comments here are --help text, read in a terminal"
)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use homelab_cli_common::LogArgs;

mod config_cmd;

/// Build and run a home-lab Kubernetes platform from one homelab.toml.
///
/// The configuration is read from --config, else $HOMELAB_CONFIG, else ./homelab.toml when
/// it exists, else the embedded default (one control plane and two workers on
/// 192.168.122.0/24). Start with `homelab config init` to get a commented file.
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

#[derive(Debug, clap::Args)]
struct UpArgs {
    #[command(flatten)]
    vms: homelab_vm::ApplyArgs,
    /// Stop after phase 1 (the VMs). --no-wait implies it.
    #[arg(long)]
    vms_only: bool,
    /// The pod network manifest's pinned sha256 (default: versions.flannel_manifest_sha256).
    #[arg(long, value_name = "HEX")]
    flannel_sha256: Option<String>,
    /// Where the cluster's kubeconfig goes.
    #[command(flatten)]
    kubeconfig: homelab_boot::KubeconfigArg,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the platform, phase by phase: 1. VMs (libvirt network, pool, disks, cloud-init,
    /// boot, wait for SSH); 2. cluster (node preparation, kubeadm init and join, kubeconfig,
    /// pod network, all nodes Ready). Re-running changes only what differs.
    Up(UpArgs),
    /// Show what `up` would change, per object, without changing anything.
    Plan,
    /// The state of every node.
    Status,
    /// Upgrade the cluster to cluster.kubernetes_version of homelab.toml, one node at a time,
    /// after pre-checks (see `homelab-boot upgrade --help`).
    Upgrade {
        /// Only check and show what would change.
        #[arg(long)]
        dry_run: bool,
        /// Where the cluster's kubeconfig is.
        #[command(flatten)]
        kubeconfig: homelab_boot::KubeconfigArg,
    },
    /// Remove everything `up` created for this cluster (and nothing else).
    Destroy(homelab_vm::DestroyArgs),
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
            phase => run_phase(phase, config).await,
        }
    })
}

/// Runs a phase command.
async fn run_phase(command: Command, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let global = homelab_vm::Global {
        config: homelab_cli_common::ConfigArg { config },
        uri: None,
        output: homelab_vm::Output::Text,
    };
    match command {
        Command::Up(args) => {
            let phase = homelab_vm::Phase::load(&global)?;
            eprintln!("== phase 1: VMs ({})", phase.uri);
            let code = homelab_vm::apply(&phase, &args.vms, false).await?;
            if code != ExitCode::SUCCESS || args.vms_only {
                return Ok(code);
            }
            if args.vms.no_wait {
                eprintln!(
                    "== phase 2 (cluster) not run: --no-wait leaves the nodes unready for it"
                );
                return Ok(code);
            }
            eprintln!("== phase 2: cluster");
            homelab_boot::run(
                homelab_boot::Command::Up {
                    package_source: None,
                    manifest: None,
                    sha256: args.flannel_sha256,
                    timeout: std::time::Duration::from_secs(10 * 60),
                    kubeconfig: args.kubeconfig,
                },
                &boot_global(&global),
            )
            .await
        }
        Command::Upgrade {
            dry_run,
            kubeconfig,
        } => {
            homelab_boot::run(
                homelab_boot::Command::Upgrade {
                    to: None,
                    dry_run,
                    drain_timeout: std::time::Duration::from_secs(10 * 60),
                    package_source: None,
                    kubeconfig,
                },
                &boot_global(&global),
            )
            .await
        }
        Command::Plan => {
            let phase = homelab_vm::Phase::load(&global)?;
            println!("== phase 1: VMs ({})", phase.uri);
            let vms = homelab_vm::plan(&phase).await?;
            homelab_vm::print_plan(&vms, false)?;
            if !vms.is_noop() {
                println!("== phase 2: cluster: every step, once the VMs exist");
                return Ok(ExitCode::SUCCESS);
            }
            println!("== phase 2: cluster (steps on standard error)");
            let boot = boot_global(&global);
            let code = homelab_boot::run(
                homelab_boot::Command::Prepare {
                    dry_run: true,
                    package_source: None,
                },
                &boot,
            )
            .await?;
            if code != ExitCode::SUCCESS {
                return Ok(code);
            }
            homelab_boot::run(
                homelab_boot::Command::Bootstrap {
                    dry_run: true,
                    kubeconfig: homelab_boot::KubeconfigArg {
                        kubeconfig: std::path::PathBuf::from("~/.kube/config"),
                    },
                },
                &boot,
            )
            .await
        }
        Command::Status => homelab_vm::run(homelab_vm::Command::List, &global).await,
        Command::Destroy(args) => {
            homelab_vm::run(homelab_vm::Command::Destroy(args), &global).await
        }
        Command::Config(_) => Ok(ExitCode::SUCCESS),
    }
}

/// The cluster phase's options: the configuration's nodes, keys and known_hosts.
fn boot_global(vm: &homelab_vm::Global) -> homelab_boot::Global {
    homelab_boot::Global {
        config: vm.config.clone(),
        nodes: Vec::new(),
        only: Vec::new(),
        user: None,
        key: None,
        known_hosts: None,
        trust_new_hosts: false,
        parallel: homelab_boot::DEFAULT_PARALLEL,
        output: homelab_boot::Output::Text,
    }
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
