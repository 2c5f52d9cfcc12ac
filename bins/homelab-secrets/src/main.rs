//! `homelab-secrets`: the secrets layer of homelab.
#![allow(
    clippy::doc_markdown,
    reason = "doc comments here are --help text, read in a terminal"
)]

use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use esc_secrets::PropertyPath;
use esc_secrets::declared::check;
use homelab::Lab;
use homelab_cli_common::{LogArgs, TextOrJson};
use secrecy::{ExposeSecret, SecretString};

/// The platform's secrets in a Pulumi ESC environment ([esc] in homelab.toml: organization,
/// project, environment; the token from [esc] token, an environment variable or a file only
/// you can read — never a flag). Every secret the platform needs is declared once (see
/// `check`); each lives in one ESC object whose fields become a Kubernetes Secret's keys.
///
/// The environment is opened once per command. Values never print unless asked for with
/// `get --reveal`.
#[derive(Debug, Parser)]
#[command(name = "homelab-secrets", version, max_term_width = 100)]
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
    /// Every declared secret and whether the environment holds it; for each missing value
    /// the `esc env set` line that adds it (no values printed). Exit status 1 when a
    /// required one is missing.
    Check,
    /// The environment's value paths, secrets marked (no values).
    Ls,
    /// One value. A secret is printed only with --reveal, and only to a terminal or to
    /// --to FILE (created with mode 0600).
    Get {
        /// Property path, e.g. `harbor.admin.password` or `a["x.y"][0]`.
        path: PropertyPath,
        /// Print a secret value.
        #[arg(long)]
        reveal: bool,
        /// Write the value to this file (mode 0600) instead of standard output.
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
    },
    /// Set a value from standard input (trailing newline removed), as a secret unless
    /// --plain. Reads the definition and writes it back with its etag: an edit made
    /// meanwhile is refused, not overwritten. Comments in the definition are not kept.
    Set {
        /// Property path under `values:`.
        path: PropertyPath,
        /// Store it as plain text, not as a secret.
        #[arg(long)]
        plain: bool,
    },
    /// Apply every declared Secret into the cluster directly from one read of the
    /// environment (bootstrap, or clusters without External Secrets). A Secret of the same
    /// name that homelab did not make is never overwritten.
    Sync {
        /// Ask the API server what would change; show names and keys only.
        #[arg(long)]
        dry_run: bool,
    },
    /// Each declared Secret in the cluster: present, where it came from.
    Status,
    /// External Secrets' objects for the declared secrets (the ClusterSecretStore and one
    /// ExternalSecret each), as YAML for the GitOps repository.
    Manifests,
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Writes `text` to `path`, created with mode 0600 (refused if it exists).
fn write_private(path: &PathBuf, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {} (it must not exist)", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

async fn check_command(lab: &Lab, env: &esc_secrets::EnvRef, json: bool) -> Result<ExitCode> {
    let values = homelab::secrets::client(lab)?.read(env).await?;
    let list = homelab::secrets::list(lab);
    let missing = check(&values, env, &list);
    if json {
        print_json(&serde_json::json!({ "environment": env, "missing": missing }))?;
    } else {
        for d in &list {
            let absent: Vec<_> = missing.iter().filter(|m| m.secret == d.name).collect();
            let state = match (absent.is_empty(), d.optional) {
                (true, _) => "ok",
                (false, true) => "missing (optional)",
                (false, false) => "MISSING",
            };
            println!(
                "{:<22} {state:<19} {}/{} from {}",
                d.name, d.namespace, d.secret, d.source
            );
            for m in absent {
                println!("    {}", m.set_line);
            }
        }
    }
    Ok(if missing.iter().any(|m| !m.optional) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn get_command(
    lab: &Lab,
    env: &esc_secrets::EnvRef,
    path: &PropertyPath,
    reveal: bool,
    to: Option<PathBuf>,
) -> Result<ExitCode> {
    let esc = homelab::secrets::client(lab)?;
    let session = esc.open(env, std::time::Duration::from_secs(60)).await?;
    let value = esc.property(&session, path).await?;
    let secret = value.is_secret();
    if secret && !reveal {
        bail!("{path} is a secret: add --reveal to print it");
    }
    if secret && to.is_none() && !std::io::stdout().is_terminal() {
        bail!(
            "{path} is a secret and standard output is not a terminal: write it with --to FILE (mode 0600)"
        );
    }
    let text = match value.text() {
        Some(t) => t.expose_secret().to_owned(),
        None => serde_json::to_string_pretty(&value.reveal())?,
    };
    match to {
        Some(file) => write_private(&file, &format!("{text}\n"))?,
        None => println!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let json = cli.output == TextOrJson::Json;
    let config = homelab_config::ConfigSource::discover(cli.config.config.as_deref())
        .load()?
        .config;
    let lab = Lab::new(config);
    let env = homelab::secrets::environment(&lab)?;
    match cli.command {
        Command::Check => check_command(&lab, &env, json).await,
        Command::Ls => {
            let values = homelab::secrets::client(&lab)?.read(&env).await?;
            let leaves = values.leaves();
            if json {
                let list: Vec<_> = leaves
                    .iter()
                    .map(|(p, s)| serde_json::json!({ "path": p, "secret": s }))
                    .collect();
                print_json(&list)?;
            } else {
                for (path, secret) in leaves {
                    println!("{path}{}", if secret { "  (secret)" } else { "" });
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Get { path, reveal, to } => get_command(&lab, &env, &path, reveal, to).await,
        Command::Set { path, plain } => {
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input)?;
            let value: SecretString = input.trim_end_matches(['\n', '\r']).to_owned().into();
            if value.expose_secret().is_empty() {
                bail!("no value on standard input");
            }
            let revision = homelab::secrets::client(&lab)?
                .set(&env, &path, &value, !plain)
                .await?;
            eprintln!("{env}: {path} set (revision {revision})");
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync { dry_run } => {
            let values = homelab::secrets::client(&lab)?.read(&env).await?;
            let kube = lab.kube_client().await?;
            let delivered = esc_secrets::deliver::sync(
                &kube,
                &values,
                &env,
                &homelab::secrets::list(&lab),
                dry_run,
            )
            .await?;
            if json {
                print_json(&delivered)?;
            } else {
                for d in &delivered {
                    let state = match (&d.skipped, d.changed) {
                        (Some(why), _) => format!("skipped: {why}"),
                        (None, Some(true)) if dry_run => "would change".into(),
                        (None, Some(true)) => "applied".into(),
                        _ => "unchanged".into(),
                    };
                    println!("{:<40} {state}  [{}]", d.target, d.keys.join(", "));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            let status = homelab::Phase::status(&homelab::secrets::SecretsPhase, &lab).await;
            if json {
                print_json(&status)?;
            } else {
                for i in &status.items {
                    println!("{:<40} {:<8} {}", i.name, i.state, i.detail);
                }
            }
            Ok(if status.items.iter().all(|i| i.healthy) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Manifests => {
            let store = homelab::secrets::store(&lab)?;
            let mut docs = vec![esc_secrets::deliver::cluster_secret_store(&store)];
            docs.extend(
                homelab::secrets::list(&lab)
                    .iter()
                    .map(|d| esc_secrets::deliver::external_secret(d, &store)),
            );
            if json {
                print_json(&docs)?;
            } else {
                for d in docs {
                    print!("---\n{}", serde_norway::to_string(&d)?);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = cli.log.clone();
    homelab_cli_common::run_main(&log, move || run(cli))
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
