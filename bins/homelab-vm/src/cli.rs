//! The `homelab-vm` command line, also used by `homelab up/plan/destroy` for the VM phase.
#![allow(
    clippy::doc_markdown,
    reason = "doc comments here are --help text, read in a terminal"
)]

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use homelab_cli_common::LogArgs;
use homelab_config::{Config, ConfigSource, expand_home};
use libvirt_vm::preflight::Status;
use libvirt_vm::provision::{self, Event, UpOptions};
use libvirt_vm::{Hypervisor, VmClusterSpec, VmPlan};

/// Declarative home-lab VMs on libvirt, from homelab.toml.
///
/// Reads what libvirt has (no state file), shows the difference, and changes only that.
/// Objects this tool creates carry the cluster's name in their libvirt metadata; nothing
/// else is ever changed or removed.
#[derive(Debug, Parser)]
#[command(name = "homelab-vm", version, max_term_width = 100)]
pub(crate) struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub(crate) global: Global,
    /// Logging flags.
    #[command(flatten)]
    pub(crate) log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct Global {
    /// The configuration file.
    #[command(flatten)]
    pub(crate) config: homelab_cli_common::ConfigArg,
    /// libvirt URI, overriding libvirt.uri (e.g. qemu+ssh://root@host/system).
    #[arg(long, global = true, value_name = "URI")]
    pub(crate) uri: Option<String>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// Output format.
pub(crate) use homelab_cli_common::TextOrJson as Output;

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check libvirt, virtualization, image access, memory, disk and the network before
    /// changing anything; each failure names the command that fixes it.
    Preflight,
    /// Show what apply would create, change, replace, start or delete.
    Plan,
    /// Create or update the VMs, then wait until each answers SSH and cloud-init is done.
    Apply(ApplyArgs),
    /// Remove this cluster's VMs, their disks, the network and the pool it created.
    Destroy(DestroyArgs),
    /// The nodes and their state.
    List,
    /// Print a node's serial console log (boot messages, cloud-init output).
    ConsoleLog {
        /// Node name.
        node: String,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
    },
    /// Base image commands.
    #[command(subcommand)]
    Image(ImageCommand),
}

/// `apply` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct ApplyArgs {
    /// Do not wait for SSH and cloud-init.
    #[arg(long)]
    pub(crate) no_wait: bool,
    /// How long to wait for the nodes (default: phases.vms.timeout).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub(crate) timeout: Option<Duration>,
    /// Where the image build keeps its temporary root filesystem.
    #[arg(long, default_value = "/var/tmp", value_name = "DIR")]
    pub(crate) work_dir: PathBuf,
}

/// `destroy` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct DestroyArgs {
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}

/// `image` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Build the Debian base image with debootstrap (needs root), unless an image of the
    /// same recipe is already in place.
    Build {
        /// Where the temporary root filesystem is made.
        #[arg(long, default_value = "/var/tmp", value_name = "DIR")]
        work_dir: PathBuf,
    },
}

/// The loaded configuration and the VM spec made from it.
pub(crate) struct Phase {
    /// The configuration.
    pub(crate) config: Config,
    /// The VM layer's spec.
    pub(crate) spec: VmClusterSpec,
    /// The libvirt URI in use.
    pub(crate) uri: String,
}

impl Phase {
    /// Loads the configuration and converts it.
    ///
    /// # Errors
    /// The configuration is invalid or the public key cannot be read.
    pub(crate) fn load(global: &Global) -> Result<Self> {
        let loaded = ConfigSource::discover(global.config.config.as_deref()).load()?;
        for w in &loaded.warnings {
            eprintln!("{}", w.render(&loaded.source_name));
        }
        let config = loaded.config;
        let spec =
            homelab::inputs::vm_spec(&config, vec![homelab::inputs::authorized_key(&config)?]);
        let uri = global
            .uri
            .clone()
            .unwrap_or_else(|| config.libvirt.uri.clone());
        Ok(Self { config, spec, uri })
    }

    fn hypervisor(&self) -> Result<Hypervisor> {
        Ok(Hypervisor::connect(&self.uri)?)
    }
}

/// Runs a command.
///
/// # Errors
/// Whatever the command fails with; the message names what failed.
pub(crate) async fn run(command: Command, global: &Global) -> Result<ExitCode> {
    let phase = Phase::load(global)?;
    let json = global.output == Output::Json;
    match command {
        Command::Preflight => {
            let checks = provision::check(&phase.spec, &phase.uri).await;
            let failed = checks.iter().any(|c| c.status == Status::Fail);
            if json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                for c in &checks {
                    println!("{c}");
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Plan => {
            let plan = plan(&phase).await?;
            print_plan(&plan, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply(args) => apply(&phase, &args, json).await,
        Command::Destroy(args) => destroy(&phase, &args, json).await,
        Command::List => {
            let hv = phase.hypervisor()?;
            let status = hv.status(&phase.spec)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!("{:<20} {:<16} {:<10} OWNER", "NODE", "ADDRESS", "STATE");
                for (s, n) in status.iter().zip(&phase.spec.nodes) {
                    let state = if !s.defined {
                        "absent"
                    } else if s.running {
                        "running"
                    } else {
                        "shut off"
                    };
                    let owner = if !s.defined {
                        "-"
                    } else if s.owned {
                        "this cluster"
                    } else {
                        "NOT OURS"
                    };
                    println!("{:<20} {:<16} {state:<10} {owner}", s.name, n.ip);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ConsoleLog { node, tail } => console_log(&phase, &node, tail),
        Command::Image(ImageCommand::Build { work_dir }) => {
            let Some(files) = homelab::inputs::built_image(&phase.config) else {
                bail!(
                    "libvirt.build_base_image is off: the configuration uses its own image {}",
                    phase.config.libvirt.base_image.display()
                );
            };
            let recipe = homelab::inputs::image_recipe(&phase.config);
            let started = Instant::now();
            let outcome = tokio::task::spawn_blocking(move || {
                libvirt_vm::image::build(&recipe, &files, &work_dir, &|e| eprintln!("{e}"))
            })
            .await??;
            println!(
                "image {}: {} ({:.0?})",
                phase.config.libvirt.base_image.display(),
                match outcome {
                    libvirt_vm::image::BuildOutcome::Cached => "up to date",
                    libvirt_vm::image::BuildOutcome::Built => "built",
                },
                started.elapsed()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The plan of the VM phase.
///
/// # Errors
/// libvirt cannot be reached or read.
pub(crate) async fn plan(phase: &Phase) -> Result<VmPlan> {
    let spec = phase.spec.clone();
    let uri = phase.uri.clone();
    Ok(tokio::task::spawn_blocking(move || Hypervisor::connect(&uri)?.plan(&spec)).await??)
}

/// Prints a plan as a table or JSON.
///
/// # Errors
/// JSON serialization fails.
pub(crate) fn print_plan(plan: &VmPlan, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(plan)?);
    } else {
        println!("{plan}");
    }
    Ok(())
}

/// Applies the VM phase with live progress on standard error.
///
/// # Errors
/// Preflight, image, libvirt or readiness failures.
pub(crate) async fn apply(phase: &Phase, args: &ApplyArgs, json: bool) -> Result<ExitCode> {
    let config = &phase.config;
    let image = homelab::inputs::built_image(config)
        .filter(|files| config.libvirt.kernel.is_none() || !files.image.exists())
        .map(|files| (homelab::inputs::image_recipe(config), files));
    let options = UpOptions {
        uri: phase.uri.clone(),
        image,
        work_dir: args.work_dir.clone(),
        wait: !args.no_wait,
        timeout: args.timeout.unwrap_or(config.phases.vms.timeout.0),
        private_key: expand_home(&config.ssh.private_key),
        known_hosts: Some(expand_home(&config.ssh.known_hosts)),
    };
    let started = Instant::now();
    let report =
        provision::up(&phase.spec, &options, &|event| print_event(&event, started)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let changed = report
            .plan
            .actions
            .iter()
            .filter(|a| !a.change.is_noop())
            .count();
        println!(
            "{} nodes ready in {:.0?} ({changed} changes); host keys recorded in {}",
            phase.spec.nodes.len(),
            started.elapsed(),
            options
                .known_hosts
                .as_deref()
                .unwrap_or(Path::new("-"))
                .display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_event(event: &Event, started: Instant) {
    if !event.is_passed_check() {
        eprintln!("[{:>4}s] {event}", started.elapsed().as_secs());
    }
}

async fn destroy(phase: &Phase, args: &DestroyArgs, json: bool) -> Result<ExitCode> {
    let spec = phase.spec.clone();
    let uri = phase.uri.clone();
    let plan = tokio::task::spawn_blocking(move || Hypervisor::connect(&uri)?.destroy_plan(&spec))
        .await??;
    if plan.is_noop() {
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            println!("nothing of cluster {} to destroy", phase.spec.cluster_id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes {
        eprintln!("{plan}");
        if !std::io::stdin().is_terminal() {
            bail!("refusing to destroy without confirmation: pass --yes");
        }
        eprint!(
            "destroy these objects of cluster {}? [y/N] ",
            phase.spec.cluster_id
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing destroyed");
            return Ok(ExitCode::FAILURE);
        }
    }
    let spec = phase.spec.clone();
    let uri = phase.uri.clone();
    let started = Instant::now();
    let done = tokio::task::spawn_blocking(move || {
        Hypervisor::connect(&uri)?.destroy(&spec, &|e| print_event(&e, started))
    })
    .await??;
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        println!("{done}");
    }
    Ok(ExitCode::SUCCESS)
}

fn console_log(phase: &Phase, node: &str, tail: Option<usize>) -> Result<ExitCode> {
    if !phase.spec.nodes.iter().any(|n| n.name == node) {
        let names: Vec<&str> = phase.spec.nodes.iter().map(|n| n.name.as_str()).collect();
        bail!("no node named {node}; the nodes are: {}", names.join(", "));
    }
    if !libvirt_vm::is_local_uri(&phase.uri) {
        bail!(
            "the console log of {node} is on the libvirt host ({}); read it there: {}",
            phase.uri,
            libvirt_vm::console_log_path(node)
        );
    }
    let path = libvirt_vm::console_log_path(node);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {path} (has {node} been started?)"))?;
    let lines: Vec<&str> = text.lines().collect();
    let from = tail.map_or(0, |n| lines.len().saturating_sub(n));
    for line in &lines[from..] {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
