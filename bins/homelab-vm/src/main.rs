//! `homelab-vm`: the VM phase of homelab on its own.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let log = cli.log.clone();
    homelab_cli_common::run_main(&log, move || async move {
        cli::run(cli.command, &cli.global).await
    })
}
