//! `homelab-boot`: the cluster phase of homelab on its own.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = homelab_boot::Cli::parse();
    let log = cli.log.clone();
    homelab_cli_common::run_main(&log, move || async move {
        homelab_boot::run(cli.command, &cli.global).await
    })
}
