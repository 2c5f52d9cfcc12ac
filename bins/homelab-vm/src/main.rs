//! `homelab-vm`: the VM phase of homelab on its own.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    homelab_cli_common::install_crypto_provider();
    let cli = homelab_vm::Cli::parse();
    if let Err(e) = cli.log.init() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(homelab_vm::run(cli.command, &cli.global)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", homelab_cli_common::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
