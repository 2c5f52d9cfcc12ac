//! `homelab backup` and `homelab restore`: etcd snapshots of the cluster.

use std::process::ExitCode;

use clap::Subcommand;
use homelab::Lab;

use crate::{confirm, exit};

/// `homelab backup`.
#[derive(Debug, Subcommand)]
pub(crate) enum BackupCmd {
    /// The snapshots of this cluster in backups.dir, newest first: revision, size, age.
    List,
    /// Take a snapshot now (then apply retention).
    Create,
    /// Check each snapshot (or those given) as etcd would before restoring it: a database
    /// followed by the sha256 etcd wrote. Exit status 1 when one does not check out.
    Verify {
        /// Snapshot files (default: every snapshot of this cluster).
        files: Vec<std::path::PathBuf>,
    },
}

/// `homelab restore`.
#[derive(Debug, Subcommand)]
pub(crate) enum RestoreCmd {
    /// Restore etcd from a snapshot file (one of `homelab backup list`).
    Etcd {
        /// The snapshot.
        snapshot: std::path::PathBuf,
        /// Only show the steps that would run.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

pub(crate) async fn restore(
    lab: &Lab,
    snapshot: &std::path::Path,
    dry_run: bool,
    yes: bool,
) -> anyhow::Result<ExitCode> {
    let say = |e: homelab::Event| eprintln!("{e}");
    let plan = homelab::backup::restore(lab, snapshot, true, &say).await?;
    let pending = plan
        .iter()
        .filter(|r| r.outcome != kubeadm_boot::steps::Outcome::Unchanged)
        .count();
    if dry_run || pending == 0 {
        println!(
            "{pending} of {} restore steps {}",
            plan.len(),
            if dry_run {
                "would run"
            } else {
                "left: restored already"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !yes
        && !confirm(&format!(
            "restore {} onto the control plane (its API server stops meanwhile)?",
            snapshot.display()
        ))?
    {
        return Ok(ExitCode::FAILURE);
    }
    homelab::backup::restore(lab, snapshot, false, &say).await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn backup(lab: &Lab, cmd: BackupCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BackupCmd::List => {
            let now = std::time::SystemTime::now();
            let snapshots = homelab::backup::list(lab)?;
            if snapshots.is_empty() {
                println!(
                    "no snapshots of {} in {}",
                    lab.config.cluster.name,
                    homelab::backup::dir(lab).display()
                );
            }
            let old = |t: std::time::SystemTime| {
                let age = now.duration_since(t).unwrap_or_default();
                humantime::format_duration(std::time::Duration::from_secs(age.as_secs()))
            };
            for s in snapshots {
                println!(
                    "{}  revision {}  {} bytes  {} old",
                    s.path.display(),
                    s.revision,
                    s.size,
                    old(s.taken)
                );
            }
            let Some(s3) = &lab.config.backups.s3 else {
                return Ok(ExitCode::SUCCESS);
            };
            // The scheduled copies in the bucket, with the key the CronJob uses.
            let url = homelab::backup::bucket_url(s3);
            let client = lab.answering_client().await;
            let Some((credentials, from)) =
                homelab::backup::bucket_credentials(client.as_ref()).await
            else {
                eprintln!(
                    "{url}: no key to list it with: set {} (the cluster's Secret kube-system/{} is not readable)",
                    homelab::backup::CREDENTIALS_FROM_ENV,
                    homelab::backup::BUCKET_SECRET
                );
                return Ok(ExitCode::FAILURE);
            };
            tracing::debug!("listing {url} with the key from {from}");
            let copies = homelab::backup::bucket_list(s3, &credentials).await?;
            if copies.is_empty() {
                println!("no snapshots in {url}");
            }
            for c in copies {
                println!(
                    "s3://{}/{}  {} bytes  {} old",
                    s3.bucket,
                    c.key,
                    c.size,
                    old(c.taken.unwrap_or(c.modified))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupCmd::Create => {
            let (taken, removed) = homelab::backup::create(lab).await?;
            println!("{taken}");
            for old in removed {
                println!("removed {} (retention)", old.path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupCmd::Verify { files } => {
            let files = if files.is_empty() {
                homelab::backup::list(lab)?
                    .into_iter()
                    .map(|s| s.path)
                    .collect()
            } else {
                files
            };
            let mut ok = true;
            for file in &files {
                match kubeadm_boot::backup::verify(file) {
                    Ok(()) => println!("ok    {}", file.display()),
                    Err(e) => {
                        ok = false;
                        println!("FAIL  {e}");
                    }
                }
            }
            Ok(exit(ok))
        }
    }
}
