//! `homelab`: builds a home-lab Kubernetes platform from one `homelab.toml`.
//!
//! Today it reads, checks and explains the configuration; each layer adds its phase
//! commands (`up`, `plan`, `status`, ...) as it lands.

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the platform, phase by phase. Phases today: VMs (libvirt network, pool, disks,
    /// cloud-init, boot, wait for SSH). Re-running changes only what differs.
    Up(homelab_vm::ApplyArgs),
    /// Show what `up` would change, per object, without changing anything.
    Plan,
    /// The state of every node.
    Status,
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
            homelab_vm::apply(&phase, &args, false).await
        }
        Command::Plan => {
            let phase = homelab_vm::Phase::load(&global)?;
            println!("== phase 1: VMs ({})", phase.uri);
            homelab_vm::print_plan(&homelab_vm::plan(&phase).await?, false)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => homelab_vm::run(homelab_vm::Command::List, &global).await,
        Command::Destroy(args) => {
            homelab_vm::run(homelab_vm::Command::Destroy(args), &global).await
        }
        Command::Config(_) => Ok(ExitCode::SUCCESS),
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
