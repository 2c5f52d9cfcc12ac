//! `homelab config ...`: init, validate, show, schema.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use homelab_config::{ConfigSource, EMBEDDED_DEFAULT, LoadError, Loaded, Report};

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Write a commented homelab.toml holding the defaults, ready to edit.
    Init {
        /// Where to write it.
        #[arg(default_value = "homelab.toml")]
        path: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Check the configuration and report every problem with its key and line:column.
    ///
    /// Exits 0 when the configuration is usable (warnings allowed), 1 when it has errors.
    Validate {
        /// Report format.
        #[arg(short, long, value_enum, default_value_t = ReportFormat::Text)]
        output: ReportFormat,
    },
    /// Print the effective configuration: the file with every default filled in.
    ///
    /// Secrets are only ever references ({ env = .. } or { file = .. }); their values are
    /// never read or printed.
    Show {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = DataFormat::Toml)]
        output: DataFormat,
    },
    /// Print the JSON Schema of homelab.toml, for editor completion and checks.
    Schema,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReportFormat {
    /// Compiler-style lines: FILE:LINE:COL: error: KEY: MESSAGE.
    Text,
    /// One JSON object with every diagnostic.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DataFormat {
    /// TOML, as in homelab.toml.
    Toml,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

pub(crate) fn run(cmd: ConfigCommand, explicit: Option<&Path>) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Init { path, force } => init(&path, force),
        ConfigCommand::Validate { output } => validate(explicit, output),
        ConfigCommand::Show { output } => show(explicit, output),
        ConfigCommand::Schema => {
            let schema = serde_json::to_string_pretty(&homelab_config::json_schema())?;
            println!("{schema}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init(path: &Path, force: bool) -> Result<ExitCode> {
    if path.exists() && !force {
        bail!(
            "{} already exists; pass --force to replace it (or choose another path)",
            path.display()
        );
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    // Write beside the target and rename, so a crash never leaves half a file.
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(EMBEDDED_DEFAULT.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    println!(
        "wrote {}: edit it, then run `homelab config validate`",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Loads the configuration; on errors returns the report so callers can print it their way.
fn load(explicit: Option<&Path>) -> Result<std::result::Result<Loaded, Report>> {
    let source = ConfigSource::discover(explicit);
    tracing::debug!(source = %source.name(), "reading configuration");
    match source.load() {
        Ok(loaded) => Ok(Ok(loaded)),
        Err(LoadError::Invalid(report)) => Ok(Err(report)),
        Err(e) => Err(e.into()),
    }
}

fn validate(explicit: Option<&Path>, output: ReportFormat) -> Result<ExitCode> {
    let outcome = load(explicit)?;
    let summary = outcome.as_ref().ok().map(|loaded| summary(&loaded.config));
    // What this host's libvirt says of the network (warnings: the file itself is valid, and
    // `up` refuses to start while an active network collides).
    let collisions = outcome
        .as_ref()
        .ok()
        .and_then(|loaded| homelab::vms::network_collisions(&loaded.config));
    let (valid, report) = match outcome {
        Ok(loaded) => (
            true,
            Report {
                source_name: loaded.source_name,
                diagnostics: loaded.warnings,
            },
        ),
        Err(report) => (false, report),
    };
    match output {
        ReportFormat::Json => {
            let json = serde_json::json!({
                "valid": valid,
                "source": report.source_name,
                "errors": report.errors().count(),
                "warnings": report.warnings().count(),
                "diagnostics": report.diagnostics,
                "libvirt": collisions,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        ReportFormat::Text if valid => {
            for w in report.warnings() {
                eprintln!("{}", w.render(&report.source_name));
            }
            // What the host says is not part of the file's report: it goes to the log, so
            // that `--log-format json` keeps every line of standard error JSON.
            for c in collisions.iter().flatten() {
                tracing::warn!(
                    key = "network.nat_cidr",
                    fix = c.fix.as_deref().unwrap_or_default(),
                    "{}",
                    c.detail
                );
            }
            let warnings = report.warnings().count();
            println!(
                "{}: valid, {warnings} warning{}: {}",
                report.source_name,
                if warnings == 1 { "" } else { "s" },
                summary.unwrap_or_default()
            );
        }
        ReportFormat::Text => eprintln!("{report}"),
    }
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn show(explicit: Option<&Path>, output: DataFormat) -> Result<ExitCode> {
    let loaded = match load(explicit)? {
        Ok(loaded) => loaded,
        Err(report) => {
            eprintln!("{report}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &loaded.warnings {
        eprintln!("{}", w.render(&loaded.source_name));
    }
    let config = &loaded.config;
    let text = match output {
        DataFormat::Toml => format!(
            "# effective configuration from {}\n{}",
            loaded.source_name,
            config.to_toml()?
        ),
        DataFormat::Json => serde_json::to_string_pretty(config)? + "\n",
        DataFormat::Yaml => serde_norway::to_string(config)?,
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// One line naming what the configuration builds.
fn summary(config: &homelab_config::Config) -> String {
    format!(
        "cluster {} on Kubernetes {}, {} control plane + {} workers on {}",
        config.cluster.name,
        config.cluster.kubernetes_version,
        config.control_plane_nodes().count(),
        config.worker_nodes().count(),
        config.network.nat_cidr,
    )
}
