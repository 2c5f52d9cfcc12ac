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
use homelab_cli_common::{LogArgs, install_crypto_provider};

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
    /// Configuration file (default: ./homelab.toml if present, else the embedded default).
    #[arg(
        short,
        long,
        global = true,
        env = "HOMELAB_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,

    #[command(flatten)]
    log: LogArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write, check, show and describe homelab.toml.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
}

fn main() -> ExitCode {
    install_crypto_provider();
    let cli = Cli::parse();
    if let Err(e) = cli.log.init() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Config(cmd) => config_cmd::run(cmd, cli.config.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
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
