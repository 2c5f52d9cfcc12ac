//! `homelab-gitops`: the GitOps layer of homelab.
#![allow(
    clippy::doc_markdown,
    reason = "doc comments here are --help text, read in a terminal"
)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use gitops::validate::{Options, render, validate};
use homelab_cli_common::{LogArgs, TextOrJson};

/// Argo CD for homelab: check the manifests repository Argo CD follows, and read, wait for,
/// refresh and sync its Applications (through the cluster of the current kubeconfig context,
/// or --context).
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
    /// Write the manifests repository from homelab.toml: bootstrap/ (the root Application and
    /// the AppProjects and components it owns, in sync waves), core/, infrastructure/,
    /// platform/. Files it wrote before are updated (with a diff); files without its marker
    /// line are left alone.
    Init {
        /// Where (default: the current directory).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Add an application: apps/NAME/ for its manifests and its Application, listed in
    /// bootstrap/workloads/.
    AddApp {
        /// Name (a DNS label; also its namespace).
        name: String,
        /// The repository (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Write a whole application instead of an empty one. `web-postgres`: a frontend
        /// (2-4 replicas) and a backend (1-3) behind an NGINX Ingress in namespace NAME,
        /// PostgreSQL (10Gi, dumped daily, 7 kept) in NAME-db, NetworkPolicies that let
        /// through only what each tier needs. The database login is the Secret NAME-postgres
        /// (username, password, database) in both namespaces, never in the repository.
        /// With features.cicd, also NAME-ci: a Tekton pipeline that builds frontend/ and
        /// backend/ of the source repository on each push to main (rootless BuildKit),
        /// pushes the images and commits their digests here; its webhook is /hooks on the
        /// host. What to set up once is printed.
        #[arg(long, value_enum)]
        template: Option<Template>,
        /// The Ingress host (default: NAME.<gitops.apps_domain>).
        #[arg(long, requires = "template")]
        host: Option<String>,
    },
    /// The Application tree from the root: each one's sync and health, and what is not
    /// Synced and Healthy with Argo CD's messages. Exit status 1 when anything is not.
    Status {
        #[command(flatten)]
        target: Target,
        /// Wait (by watching) until the whole tree is Synced and Healthy.
        #[arg(long)]
        wait: bool,
        /// How long to wait.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "20m")]
        timeout: std::time::Duration,
    },
    /// Ask Argo CD to compare an Application with Git again.
    Refresh {
        /// Application.
        name: String,
        /// Also drop Argo CD's manifest cache.
        #[arg(long)]
        hard: bool,
        #[command(flatten)]
        cluster: Cluster,
    },
    /// Ask Argo CD to sync an Application now.
    Sync {
        /// Application.
        name: String,
        /// Delete what left Git.
        #[arg(long)]
        prune: bool,
        #[command(flatten)]
        cluster: Cluster,
    },
}

#[derive(Debug, clap::Args)]
struct Cluster {
    /// Kubeconfig context (default: the current one).
    #[arg(long)]
    context: Option<String>,
    /// Argo CD's namespace.
    #[arg(long, default_value = "argocd")]
    namespace: String,
}

#[derive(Debug, clap::Args)]
struct Target {
    /// The root Application.
    #[arg(long, default_value = "root")]
    root: String,
    #[command(flatten)]
    cluster: Cluster,
}

async fn client(cluster: &Cluster) -> Result<kube::Client> {
    let config = kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
        context: cluster.context.clone(),
        ..Default::default()
    })
    .await?;
    Ok(kube::Client::try_from(config)?)
}

/// The scaffold's input, from homelab.toml.
/// The applications `add-app --template` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Template {
    /// A web frontend and backend with PostgreSQL.
    WebPostgres,
}

fn scaffold_spec(config: &homelab_config::Config) -> Result<gitops::scaffold::Spec> {
    homelab::inputs::gitops_spec(config).ok_or_else(|| {
        anyhow::anyhow!(
            "set [gitops] repo_url in homelab.toml: the Applications point at that repository"
        )
    })
}

fn print_changes(json: bool, changes: &[(PathBuf, gitops::scaffold::FileChange)]) -> Result<()> {
    use gitops::scaffold::FileChange;
    if json {
        println!("{}", serde_json::to_string_pretty(changes)?);
        return Ok(());
    }
    for (path, change) in changes {
        match change {
            FileChange::Created => println!("created   {}", path.display()),
            FileChange::Updated(diff) => println!("updated   {}\n{diff}", path.display()),
            FileChange::Unchanged => println!("unchanged {}", path.display()),
            FileChange::Kept => println!("kept      {} (yours: no marker line)", path.display()),
        }
    }
    Ok(())
}

#[allow(clippy::too_many_lines, reason = "one dispatch over the commands")]
async fn run(cli: Cli) -> Result<ExitCode> {
    let json = cli.output == TextOrJson::Json;
    match cli.command {
        Command::Init { dir } => {
            let config = homelab_config::ConfigSource::discover(cli.config.config.as_deref())
                .load()?
                .config;
            let changes = gitops::scaffold::init(&dir, &scaffold_spec(&config)?)?;
            print_changes(json, &changes)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::AddApp {
            name,
            dir,
            template,
            host,
        } => {
            let config = homelab_config::ConfigSource::discover(cli.config.config.as_deref())
                .load()?
                .config;
            let spec = scaffold_spec(&config)?;
            let changes = match template {
                None => gitops::scaffold::add_app(&dir, &spec, &name)?,
                Some(Template::WebPostgres) => {
                    let template = homelab::inputs::web_postgres(&config, &name, host.as_deref())?;
                    let changes = gitops::scaffold::add_app_template(&dir, &spec, &template)?;
                    // Once, by hand: the logins that are accounts elsewhere, and the webhook.
                    let notes = template.setup_notes();
                    if !notes.is_empty() {
                        eprintln!(
                            "so that pushes to {name}'s source repository deploy, set up once:"
                        );
                        for note in notes {
                            eprintln!("  - {note}");
                        }
                    }
                    changes
                }
            };
            print_changes(json, &changes)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            target,
            wait,
            timeout,
        } => {
            let client = client(&target.cluster).await?;
            let ns = &target.cluster.namespace;
            let tree = if wait {
                gitops::status::wait(&client, ns, &target.root, timeout, &|event| {
                    if let gitops::Event::Waiting(problems) = event {
                        for p in problems {
                            eprintln!("waiting: {p}");
                        }
                    }
                })
                .await?
            } else {
                gitops::status::tree(&client, ns, &target.root).await?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&tree)?);
            } else {
                print!("{}", tree.render());
                for p in tree.problems() {
                    println!("not ready: {p}");
                }
            }
            Ok(if tree.ready {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Refresh {
            name,
            hard,
            cluster,
        } => {
            gitops::status::refresh(&client(&cluster).await?, &cluster.namespace, &name, hard)
                .await?;
            eprintln!(
                "asked Argo CD to refresh {name}{}",
                if hard { " (hard)" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync {
            name,
            prune,
            cluster,
        } => {
            gitops::status::sync(&client(&cluster).await?, &cluster.namespace, &name, prune)
                .await?;
            eprintln!("asked Argo CD to sync {name}");
            Ok(ExitCode::SUCCESS)
        }
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
            // Else the library infers it (Applications' repoURLs, the Git remote origin) and says so.
            let repo_url = git_url(repo_url)?.or(configured);
            let report = match validate(
                &path,
                &Options::default()
                    .repo_url(repo_url)
                    .kustomize_build(!no_build),
            ) {
                Ok(report) => report,
                // Nothing to validate is not a pass: exit 2, as for a usage error.
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            if json {
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
    homelab_cli_common::run_main(&log, move || run(cli))
}

/// `--repo-url`: a Git URL without credentials (Applications name it, and it is printed).
/// Checked here, not by clap, whose error repeats the value.
fn git_url(value: Option<String>) -> Result<Option<String>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let problems = homelab_config::git_url_problems(&value);
    if problems.is_empty() {
        return Ok(Some(value));
    }
    anyhow::bail!(
        "--repo-url: {}",
        problems
            .into_iter()
            .map(|p| p.message)
            .collect::<Vec<_>>()
            .join("; ")
    )
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
