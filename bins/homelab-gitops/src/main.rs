//! `homelab-gitops`: the GitOps layer of homelab.
#![allow(
    clippy::doc_markdown,
    reason = "doc comments here are --help text, read in a terminal"
)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use gitops::validate::{Options, render, validate};
use homelab_cli_common::{LogArgs, TextOrJson};

/// Argo CD for homelab: check the manifests repository Argo CD follows.
#[derive(Debug, Parser)]
#[command(name = "homelab-gitops", version, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    config: homelab_cli_common::ConfigArg,
    #[command(flatten)]
    log: LogArgs,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = TextOrJson::Text)]
    output: TextOrJson,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a manifests repository: YAML parses, Application paths and kustomization
    /// references exist, kustomizations build (with kubectl), sync waves are integers and put
    /// CRDs before their users, namespaces and AppProjects exist and allow the destinations, no
    /// resource has two owners, no plain-text Secrets or credentials in URLs, images pinned.
    /// Exit status 1 when there are errors, 0 with only warnings.
    Validate {
        /// The repository (default: the current directory).
        #[arg(default_value = ".")]
        path: PathBuf,
        /// This repository's URL as Applications name it (default: gitops.repo_url of
        /// homelab.toml, else the origin remote of the Git checkout).
        #[arg(long, value_name = "URL")]
        repo_url: Option<String>,
        /// Do not run `kubectl kustomize`.
        #[arg(long)]
        no_build: bool,
    },
}

/// The origin remote of a Git checkout, if any.
fn origin(path: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(path)
        .args(["remote", "get-url", "origin"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|u| !u.is_empty())
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate {
            path,
            repo_url,
            no_build,
        } => {
            let configured = homelab_config::ConfigSource::discover(cli.config.config.as_deref())
                .load()
                .ok()
                .and_then(|l| l.config.gitops)
                .map(|g| g.repo_url)
                .filter(|u| !u.is_empty());
            let repo_url = repo_url.or(configured).or_else(|| origin(&path));
            if repo_url.is_none() {
                eprintln!(
                    "note: no repository URL (--repo-url, gitops.repo_url or a Git origin): Application paths are checked only where they exist here"
                );
            }
            let report = validate(
                &path,
                &Options {
                    repo_url,
                    kustomize_build: !no_build,
                },
            );
            if cli.output == TextOrJson::Json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render(&report));
            }
            Ok(if report.has_errors() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = cli.log.clone();
    homelab_cli_common::run_main(&log, move || async move { run(cli) })
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
