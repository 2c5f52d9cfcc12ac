//! `homelab-platform`: the platform layer of homelab.
#![allow(
    clippy::doc_markdown,
    reason = "doc comments here are --help text, read in a terminal"
)]

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use homelab_cli_common::{LogArgs, TextOrJson};
use platform::Event;
use platform::components::{Component, components};
use platform::wait::{ComponentStatus, WaitOptions};

/// The platform on the cluster (MetalLB, ingress-nginx, cert-manager and its issuers,
/// local-path storage, External Secrets, Argo CD, Harbor, the Actions Runner Controller):
/// each component's deep readiness checks, what they see now, and a wait that follows the
/// Argo CD sync waves in order. "Ready" means working: CRDs Established, workloads rolled
/// out, admission webhooks with ready endpoints that accept a server-side dry run, the fixed
/// load-balancer addresses given, issuers Ready, Harbor's health green.
#[derive(Debug, Parser)]
#[command(name = "homelab-platform", version, max_term_width = 100)]
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
    /// List the components, their waves and their checks, from homelab.toml (no cluster
    /// needed).
    Checks,
    /// Ask the cluster: every check of every component, stopping per component at the first
    /// that fails. Exit status 1 when a component is not ready.
    Status {
        /// Kubeconfig context (default: the current one).
        #[arg(long)]
        context: Option<String>,
    },
    /// Wait for the components wave by wave, re-checking whenever a watched object changes.
    /// Exit status 1 with the component, the check and what it last saw when time runs out.
    Wait {
        /// Kubeconfig context (default: the current one).
        #[arg(long)]
        context: Option<String>,
        /// How long to wait in all.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
        timeout: Duration,
    },
    /// Install Argo CD from its pinned release manifest (checked against its sha256) by
    /// server-side apply, CRDs first, its workloads waited on until rolled out, then the
    /// root Application of [gitops] repo_url. Re-running changes nothing.
    Bootstrap {
        /// Kubeconfig context (default: the current one).
        #[arg(long)]
        context: Option<String>,
        /// Ask the API server what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Prove the platform works from a user's side: every node Ready, DNS from a pod (a
    /// Job), an HTTP request through the ingress address to a backend, the certificate the
    /// ingress serves chaining to the homelab CA, Harbor's health. Every check runs even when
    /// one fails; what they create lives in a namespace of their own, deleted at the end.
    /// Exit status 1 when a check fails.
    Verify {
        /// Kubeconfig context (default: the current one).
        #[arg(long)]
        context: Option<String>,
        /// The probe image (sh, nslookup and httpd, as busybox has), pullable by the nodes.
        #[arg(long)]
        image: Option<String>,
        /// How long each check may take.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
        timeout: Duration,
    },
    /// Let the nodes and the pods pull from Harbor, once it answers: the project
    /// ([harbor] project), a pull-only robot account `pull` (never the admin account for
    /// pulls), its pull Secret `harbor-pull` in each of [harbor] pull_namespaces, and on
    /// every node containerd's hosts.toml for Harbor with the homelab CA (read from the
    /// cluster's Secret cert-manager/homelab-ca), over SSH. Idempotent: the robot's secret is
    /// renewed only when a namespace lacks its Secret. The admin password comes from
    /// [harbor] admin_password.
    Registry {
        /// Kubeconfig context (default: the current one).
        #[arg(long)]
        context: Option<String>,
        /// Only read, and say what would change.
        #[arg(long)]
        dry_run: bool,
    },
}

async fn client(context: Option<String>) -> Result<kube::Client> {
    let config = kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
        context,
        ..Default::default()
    })
    .await?;
    Ok(kube::Client::try_from(config)?)
}

fn table(config: &homelab_config::Config) -> Vec<Component> {
    components(&homelab::inputs::platform_spec(config))
}

fn print_statuses(json: bool, statuses: &[ComponentStatus]) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(statuses)?);
        return Ok(());
    }
    for s in statuses {
        let state = if s.ready { "ready" } else { "NOT READY" };
        println!("wave {:>2}  {:<28} {state}", s.wave, s.name);
        for c in &s.checks {
            match &c.outcome {
                Some(o) => println!(
                    "           {} {}: {}",
                    if o.ok { "ok  " } else { "FAIL" },
                    c.check,
                    o.detail
                ),
                None => println!("           -    {} (not asked)", c.check),
            }
        }
    }
    Ok(())
}

async fn bootstrap(
    config: homelab_config::Config,
    context: Option<String>,
    dry_run: bool,
    json: bool,
) -> Result<ExitCode> {
    let client = client(context).await?;
    let lab = homelab::Lab::new(config);
    let (source, bytes) = homelab::platform::argocd_manifest(&lab, &|e| {
        if let homelab::Event::Progress { message, .. } = e {
            eprintln!("{message}");
        }
    })
    .await?;
    let spec = homelab::platform::bootstrap_spec(&lab, &source, &bytes)?;
    let options = WaitOptions::default().timeout(lab.config.phases.platform.timeout.0);
    let applied = platform::argocd::bootstrap(&client, &spec, dry_run, &options, &|p| {
        if let Event::Waiting { .. } = p {
            eprintln!("  {p}");
        }
    })
    .await?;
    let changed = applied.iter().filter(|a| a.changed).count();
    if json {
        let list: Vec<_> = applied
            .iter()
            .map(|a| serde_json::json!({ "object": a.to_string(), "changed": a.changed }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for a in applied.iter().filter(|a| a.changed) {
            println!("{} {a}", if dry_run { "would apply" } else { "applied" });
        }
        println!(
            "{changed} of {} objects {}",
            applied.len(),
            if dry_run { "would change" } else { "changed" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(
    config: homelab_config::Config,
    context: Option<String>,
    image: Option<String>,
    timeout: Duration,
    json: bool,
) -> Result<ExitCode> {
    let client = client(context).await?;
    let lab = homelab::Lab::new(config);
    let mut spec = homelab::platform::verify_spec(&lab, &client).await;
    if let Some(image) = image {
        spec.image = image;
    }
    spec.timeout = timeout;
    let results = Box::pin(homelab::platform::verify_platform(&lab, &client, &spec)).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            println!(
                "{} {:<20} {}",
                if r.ok { "ok  " } else { "FAIL" },
                r.name,
                r.detail
            );
        }
    }
    Ok(if results.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn registry(
    config: homelab_config::Config,
    context: Option<String>,
    dry_run: bool,
    json: bool,
) -> Result<ExitCode> {
    let client = client(context).await?;
    let lab = homelab::Lab::new(config);
    let wired = homelab::platform::wire_registry(&lab, &client, dry_run).await?;
    if json {
        let nodes: Vec<_> = wired.nodes.iter().collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "project_created": wired.access.project_created,
                "robot": wired.access.robot_name,
                "robot_change": format!("{:?}", wired.access.robot).to_lowercase(),
                "applied": wired.access.applied.iter().map(|a| serde_json::json!({
                    "object": a.to_string(), "changed": a.changed })).collect::<Vec<_>>(),
                "nodes": nodes,
            }))?
        );
    } else {
        let verb = if dry_run { "would be" } else { "" };
        println!(
            "project {}{}",
            lab.config.harbor.project,
            if wired.access.project_created {
                format!(" {verb} created")
            } else {
                String::new()
            }
        );
        println!(
            "robot {}: {}",
            wired.access.robot_name,
            format!("{:?}", wired.access.robot).to_lowercase()
        );
        for a in &wired.access.applied {
            println!("{a}: {}", if a.changed { "changed" } else { "unchanged" });
        }
        for r in &wired.nodes {
            println!("{} {}: {:?}", r.host, r.step, r.outcome);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let json = cli.output == TextOrJson::Json;
    let config = homelab_config::ConfigSource::discover(cli.config.config.as_deref())
        .load()?
        .config;
    let components = table(&config);
    let http = reqwest::Client::new();
    match cli.command {
        Command::Checks => {
            if json {
                println!("{}", serde_json::to_string_pretty(&components)?);
            } else {
                for c in &components {
                    println!("wave {:>2}  {}", c.wave, c.name);
                    for check in &c.checks {
                        println!("           {check}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { context } => {
            let client = client(context).await?;
            let statuses = platform::wait::status(&client, &http, &components).await;
            print_statuses(json, &statuses)?;
            Ok(if statuses.iter().all(|s| s.ready) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bootstrap { context, dry_run } => bootstrap(config, context, dry_run, json).await,
        Command::Verify {
            context,
            image,
            timeout,
        } => verify(config, context, image, timeout, json).await,
        Command::Registry { context, dry_run } => registry(config, context, dry_run, json).await,
        Command::Wait { context, timeout } => {
            let client = client(context).await?;
            let options = WaitOptions::default().timeout(timeout);
            let statuses =
                platform::wait::wait(&client, &http, &components, &options, &|e| match e {
                    Event::Wave { .. } => eprintln!("{e}"),
                    _ => eprintln!("  {e}"),
                })
                .await?;
            print_statuses(json, &statuses)?;
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
