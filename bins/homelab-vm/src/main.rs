//! `homelab-vm`: the VM phase of homelab on its own.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = homelab_vm::Cli::parse();
    let log = cli.log.clone();
    homelab_cli_common::run_main(&log, move || async move {
        homelab_vm::run(cli.command, &cli.global).await
    })
}
