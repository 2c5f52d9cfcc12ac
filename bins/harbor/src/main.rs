//! `harbor`: Harbor and any OCI registry from the command line.
#![allow(
    clippy::doc_markdown,
    reason = "doc comments here are --help text, read in a terminal"
)]

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use harbor_client::harbor::{GcSchedule, RobotCreate, repository_access};
use harbor_client::image::{self, Layout};
use harbor_client::reference::Reference;
use harbor_client::registry::{Credentials, Options};
use secrecy::ExposeSecret;

mod cli;
mod ctx;
mod progress;

use cli::{ArtifactCmd, Cli, Command, GcCmd, Output, ProjectCmd, RobotCmd};
use ctx::{Ctx, password};
use progress::{progress_bars, transfer_line};

fn parse_ref(text: &str) -> Result<Reference> {
    Ok(text.parse()?)
}

#[allow(clippy::too_many_lines, reason = "one dispatch over the commands")]
async fn run(cli: Cli) -> Result<ExitCode> {
    let global = &cli.global;
    let credentials = match (&global.username, password(global)?) {
        (Some(username), Some(password)) => Credentials::Basic {
            username: username.clone(),
            password,
        },
        (Some(username), None) => bail!(
            "--username {username} without a password: set $HARBOR_PASSWORD, or use --password-stdin or --password-file"
        ),
        (None, _) => Credentials::Anonymous,
    };
    let json = global.output == Output::Json;
    let ctx = Ctx {
        credentials,
        options: Options::default()
            .plain_http(global.plain_http)
            .ca_file(global.ca_file.clone())
            .events(
                (!json && std::io::stderr().is_terminal() && !cli.log.quiet).then(progress_bars),
            ),
        json,
        parallel: global.parallel,
        global_url: global.url.clone(),
        ca_file: global.ca_file.clone(),
    };
    match cli.command {
        Command::Project(cmd) => {
            let harbor = ctx.harbor().await?;
            match cmd {
                ProjectCmd::List => ctx.print(&harbor.projects().await?, |ps| {
                    for p in ps {
                        println!(
                            "{:<6} {:<30} {}",
                            p.project_id,
                            p.name,
                            if p.is_public() { "public" } else { "private" }
                        );
                    }
                })?,
                ProjectCmd::Ensure { name, public } => {
                    let (p, created) = harbor.ensure_project(&name, public).await?;
                    ctx.print(
                        &serde_json::json!({ "project": p, "created": created }),
                        |_| {
                            println!(
                                "project {name} {}",
                                if created { "created" } else { "exists" }
                            );
                        },
                    )?;
                }
                ProjectCmd::Delete { name } => {
                    harbor.delete_project(&name).await?;
                    eprintln!("project {name} deleted");
                }
            }
        }
        Command::Robot(cmd) => {
            let harbor = ctx.harbor().await?;
            match cmd {
                RobotCmd::Create {
                    name,
                    project,
                    push,
                    duration,
                } => {
                    let creds = harbor
                        .create_robot(&RobotCreate {
                            name,
                            description: format!("created by homelab's harbor CLI for {project}"),
                            level: "project".into(),
                            duration,
                            permissions: vec![repository_access(&project, push)],
                        })
                        .await?;
                    ctx.print(
                        &serde_json::json!({ "id": creds.id, "name": creds.name, "secret": creds.secret.expose_secret() }),
                        |_| {
                            println!("id: {}\nname: {}\nsecret: {}", creds.id, creds.name, creds.secret.expose_secret());
                            eprintln!("the secret is shown only now; store it");
                        },
                    )?;
                }
                RobotCmd::List { project } => {
                    let project = match project {
                        Some(name) => Some(
                            harbor
                                .project(&name)
                                .await?
                                .ok_or_else(|| anyhow::anyhow!("no project {name}"))?,
                        ),
                        None => None,
                    };
                    ctx.print(&harbor.robots(project.as_ref()).await?, |rs| {
                        for r in rs {
                            println!("{:<6} {}", r.id, r.name);
                        }
                    })?;
                }
                RobotCmd::Delete { id } => {
                    harbor.delete_robot(id).await?;
                    eprintln!("robot {id} deleted");
                }
                RobotCmd::Refresh { id } => {
                    let secret = harbor.refresh_robot_secret(id).await?;
                    ctx.print(
                        &serde_json::json!({ "id": id, "secret": secret.expose_secret() }),
                        |_| {
                            println!("{}", secret.expose_secret());
                        },
                    )?;
                }
            }
        }
        Command::Artifact(cmd) => {
            let harbor = ctx.harbor().await?;
            match cmd {
                ArtifactCmd::List {
                    project,
                    repository,
                } => ctx.print(&harbor.artifacts(&project, &repository).await?, |xs| {
                    for a in xs {
                        let tags: Vec<&str> =
                            a.tags.iter().flatten().map(|t| t.name.as_str()).collect();
                        println!("{} {} {}", a.digest, a.push_time, tags.join(","));
                    }
                })?,
                ArtifactCmd::Delete {
                    project,
                    repository,
                    reference,
                } => {
                    harbor
                        .delete_artifact(&project, &repository, &reference)
                        .await?;
                    eprintln!("{repository}@{reference} deleted");
                }
                ArtifactCmd::Scan {
                    project,
                    repository,
                    reference,
                } => {
                    harbor.scan(&project, &repository, &reference).await?;
                    eprintln!("scan of {repository}@{reference} started");
                }
            }
        }
        Command::Cleanup {
            project,
            keep,
            dry_run,
        } => {
            let report = ctx.harbor().await?.cleanup(&project, keep, dry_run).await?;
            ctx.print(&report, |r| {
                for gone in &r.removed {
                    println!(
                        "{} {gone}",
                        if dry_run { "would delete" } else { "deleted" }
                    );
                }
                println!(
                    "kept {}, {} {}",
                    r.kept,
                    if dry_run { "would delete" } else { "deleted" },
                    r.removed.len()
                );
            })?;
        }
        Command::Gc(cmd) => {
            let harbor = ctx.harbor().await?;
            match cmd {
                GcCmd::Run { delete_untagged } => {
                    let id = harbor.run_gc(delete_untagged).await?;
                    ctx.print(&serde_json::json!({ "id": id }), |_| {
                        println!("garbage collection {id} started");
                    })?;
                }
                GcCmd::Schedule { kind, cron } => {
                    let schedule = GcSchedule::parse(&kind, cron.as_deref())
                        .map_err(|e| anyhow::anyhow!("gc schedule: {e}"))?;
                    harbor.set_gc_schedule(&schedule).await?;
                    eprintln!(
                        "garbage collection schedule: {}{}",
                        schedule.kind(),
                        schedule
                            .cron()
                            .map(|c| format!(" ({c})"))
                            .unwrap_or_default()
                    );
                }
                GcCmd::Status { id } => ctx.print(&harbor.gc_status(id).await?, |v| {
                    println!("{}", v["job_status"].as_str().unwrap_or("unknown"));
                })?,
            }
        }
        Command::Push { layout, target } => {
            let (dir, tag) = harbor_client::reference::split_layout(&layout);
            let target = parse_ref(&target)?;
            let registry = ctx.registry(&target.registry)?;
            let layout = Layout::open_or_create(&dir)?;
            let t = image::push(&registry, &layout, tag.as_deref(), &target, ctx.parallel).await?;
            ctx.print(&t, |t| transfer_line(&format!("pushed {target}"), t))?;
        }
        Command::Pull {
            source,
            layout,
            platform,
        } => {
            let source = parse_ref(&source)?;
            let (dir, tag) = harbor_client::reference::split_layout(&layout);
            let tag = tag.unwrap_or_else(|| source.tag.clone().unwrap_or_else(|| "latest".into()));
            let registry = ctx.registry(&source.registry)?;
            let t = image::pull_platforms(
                &registry,
                &source,
                &Layout::open_or_create(&dir)?,
                &tag,
                ctx.parallel,
                &platform,
            )
            .await?;
            ctx.print(&t, |t| {
                transfer_line(&format!("pulled {source} into {}:{tag}", dir.display()), t);
            })?;
        }
        Command::Tags { repository } => {
            let r = parse_ref(&repository)?;
            let tags = ctx.registry(&r.registry)?.tags(&r.repository, 100).await?;
            ctx.print(&tags, |ts| {
                for t in ts {
                    println!("{t}");
                }
            })?;
        }
        Command::Copy {
            source,
            target,
            platform,
        } => {
            let (source, target) = (parse_ref(&source)?, parse_ref(&target)?);
            let work = tempfile::tempdir()?;
            let from = ctx.registry(&source.registry)?;
            let to = ctx.registry(&target.registry)?;
            let t = image::copy_platforms(
                &from,
                &source,
                &to,
                &target,
                work.path(),
                ctx.parallel,
                &platform,
            )
            .await?;
            ctx.print(&t, |t| {
                transfer_line(&format!("copied {source} to {target}"), t);
            })?;
        }
        Command::Mirror { list, target } => {
            let images = read_list(&list)?;
            let (host, prefix) = target.split_once('/').unwrap_or((target.as_str(), ""));
            let to = ctx.registry(host)?;
            let work = tempfile::tempdir()?;
            let connect = |h: &str| {
                ctx.registry(h)
                    .map_err(|e| harbor_client::registry::RegistryError::Setup(e.to_string()))
            };
            let done = image::mirror(&images, &connect, &to, prefix, work.path(), ctx.parallel)
                .await
                .map_err(|(image, e)| anyhow::anyhow!("{image}: {e}"))?;
            let report: Vec<_> = done
                .iter()
                .map(|(r, t)| serde_json::json!({ "image": r.to_string(), "transfer": t }))
                .collect();
            ctx.print(&report, |_| {
                for (r, t) in &done {
                    transfer_line(&format!("mirrored {r}"), t);
                }
            })?;
        }
        Command::Delete { reference } => {
            let r = parse_ref(&reference)?;
            let digest = ctx
                .registry(&r.registry)?
                .delete_manifest(&r.repository, r.reference())
                .await?;
            ctx.print(
                &serde_json::json!({ "deleted": digest.to_string() }),
                |_| println!("deleted {}@{digest}", r.repository),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_list(path: &Path) -> Result<Vec<Reference>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    harbor_client::reference::parse_list(&text)
        .map_err(|(line, e)| anyhow::anyhow!("{}:{line}: {e}", path.display()))
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
