//! A whole command-line tool on homelab-cli-common, as every homelab binary is built: the
//! shared `-c/--config` and logging flags (`-v`, `-q`, `--log-format`), `run_main` (the
//! crypto provider, logging, a tokio runtime, an error printed with its causes and exit
//! status 1).
//!
//! ```sh
//! cargo run -p homelab-cli-common --example tool -- -v            # the workspace's crates at debug
//! cargo run -p homelab-cli-common --example tool -- --config /nope # error: …: No such file…
//! ```

use std::process::ExitCode;

use clap::Parser;
use homelab_cli_common::{ConfigArg, LogArgs, run_main};

/// Reads a configuration file's size, or says which filter its logging uses.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the configuration {path}")]
struct ReadError {
    path: String,
    source: std::io::Error,
}

fn main() -> ExitCode {
    let Cli { config, log } = Cli::parse();
    let filter = log.filter_directives();
    run_main(&log, || async move {
        println!("log filter: {filter}");
        if let Some(path) = &config.config {
            let size = tokio::fs::metadata(path)
                .await
                .map_err(|source| ReadError {
                    path: path.display().to_string(),
                    source,
                })
                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)?
                .len();
            println!("{} holds {size} bytes", path.display());
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(ExitCode::SUCCESS)
    })
}
