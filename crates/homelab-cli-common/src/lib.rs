//! What every homelab binary does at start.
//!
//! - [`install_crypto_provider`]: install exactly one rustls crypto provider (ring) before any
//!   TLS use. kube and reqwest together pull in more than one provider, and rustls then
//!   panics at the first handshake unless one was installed explicitly.
//! - [`LogArgs`]: the `-v`/`-vv`/`-q` and `--log-format` flags, flattened into each CLI, and
//!   [`LogArgs::init`] to set up `tracing` from them (`RUST_LOG` still wins when set).
//! - [`OutputFormat`]: the `-o text|json|yaml|toml` choice shared by the tools, and
//!   [`TextOrJson`] for tools whose results are reports.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Installs the ring crypto provider as rustls' process default.
///
/// Idempotent: a second call (or a provider installed earlier by the same process) is fine.
pub fn install_crypto_provider() {
    // `Err` means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The `-c/--config` flag every tool takes.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArg {
    /// Configuration file (default: ./homelab.toml if present, else the embedded default).
    #[arg(
        short,
        long,
        global = true,
        env = "HOMELAB_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<std::path::PathBuf>,
}

/// The body of every tool's `main`: installs the crypto provider, sets up logging from
/// `log`, runs `work` on a multi-threaded tokio runtime, and prints an error with its causes.
pub fn run_main<F, E>(log: &LogArgs, work: impl FnOnce() -> F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<std::process::ExitCode, E>>,
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    install_crypto_provider();
    if let Err(e) = log.init() {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging flags shared by every tool.
#[derive(Debug, Clone, Default, Args)]
pub struct LogArgs {
    /// More log output: -v for debug, -vv for trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less log output: errors only.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// `RUST_LOG` holds a filter that does not parse.
    #[error("RUST_LOG={value:?} is not a valid filter: {source}")]
    BadFilter {
        /// The variable's value.
        value: String,
        /// The parse error.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("logging was already initialized: {0}")]
    AlreadySet(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl LogArgs {
    /// The filter these flags ask for: this workspace's crates at `info` by default, `debug`
    /// with `-v`, `trace` with `-vv`, `error` with `-q`; every dependency stays at `warn`
    /// (`RUST_LOG`, when set, replaces all of it).
    pub fn filter_directives(&self) -> String {
        let ours = match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "info",
            (false, 1) => "debug",
            (false, _) => "trace",
        };
        // A host key learned on first use is a trust decision: shown at every verbosity.
        let learned = "homelab_ssh::learned=warn";
        if WORKSPACE_CRATES.is_empty() {
            return format!("{ours},{learned}");
        }
        format!("warn,{},{learned}", crate_directives(ours))
    }

    /// Installs the global `tracing` subscriber, writing to standard error.
    ///
    /// # Errors
    /// `RUST_LOG` does not parse, or a subscriber is already installed.
    pub fn init(&self) -> Result<(), LoggingError> {
        let filter = match std::env::var("RUST_LOG") {
            Ok(value) if !value.is_empty() => EnvFilter::try_new(&value)
                .map_err(|source| LoggingError::BadFilter { value, source })?,
            _ => EnvFilter::new(self.filter_directives()),
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let result = match self.log_format {
            LogFormat::Text => builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(self.verbose > 0)
                .try_init(),
            LogFormat::Json => builder.json().with_current_span(false).try_init(),
        };
        result.map_err(LoggingError::AlreadySet)
    }
}

// WORKSPACE_CRATES, listed by build.rs from the workspace manifests.
include!(concat!(env!("OUT_DIR"), "/crates.rs"));

fn crate_directives(level: &str) -> String {
    WORKSPACE_CRATES
        .iter()
        .map(|c| format!("{c}={level}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Output of the tools whose results are reports: for people, or JSON on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum TextOrJson {
    /// For people.
    #[default]
    Text,
    /// JSON on standard output.
    Json,
}

/// Output format of a command's result (logs always go to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    #[default]
    Text,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// TOML.
    Toml,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_maps_to_levels() {
        let mut args = LogArgs::default();
        assert!(args.filter_directives().contains("homelab=info"));
        args.verbose = 1;
        assert!(args.filter_directives().contains("homelab=debug"));
        assert!(args.filter_directives().starts_with("warn,"));
        args.verbose = 2;
        let vv = args.filter_directives();
        // -vv: this workspace at trace, dependencies (russh, hyper, kube, ...) still at warn.
        assert!(
            vv.starts_with("warn,") && vv.contains("kubeadm_boot=trace"),
            "{vv}"
        );
        assert!(!vv.contains("russh") && !vv.contains("hyper"), "{vv}");
        args = LogArgs {
            quiet: true,
            ..LogArgs::default()
        };
        assert!(args.filter_directives().contains("homelab=error"));
        // Learned host keys show even with -q (homelab_ssh::LEARNED_TARGET).
        assert!(
            args.filter_directives()
                .ends_with(",homelab_ssh::learned=warn")
        );
        EnvFilter::try_new(args.filter_directives()).expect("directives parse");
    }

    #[test]
    fn the_crate_list_is_this_workspace_exactly() {
        // Every library and binary of the workspace, and nothing that does not exist.
        for name in [
            "homelab",
            "homelab_config",
            "homelab_cli_common",
            "libvirt_vm",
            "kubeadm_boot",
            "gitops",
            "harbor_client",
            "homelab_vm",
            "homelab_boot",
            "homelab_gitops",
            "harbor",
        ] {
            assert!(
                WORKSPACE_CRATES.contains(&name),
                "{name} in {WORKSPACE_CRATES:?}"
            );
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for name in WORKSPACE_CRATES {
            let exists = ["crates", "bins"].iter().any(|group| {
                std::fs::read_dir(root.join(group)).is_ok_and(|dirs| {
                    dirs.flatten().any(|d| {
                        std::fs::read_to_string(d.path().join("Cargo.toml")).is_ok_and(|m| {
                            m.replace('-', "_").contains(&format!("name = \"{name}\""))
                        })
                    })
                })
            });
            assert!(exists, "{name} is not a crate of this workspace");
        }
    }

    #[test]
    fn crypto_provider_installs_once_and_is_idempotent() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}

/// An error and its causes on one line, `outer: cause: root cause`, skipping a cause whose
/// text the line already holds (many errors quote their source in their own message).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read x: {source}")]
    struct Quoting {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("loading failed")]
    struct Outer(#[source] Quoting);

    #[test]
    fn causes_are_appended_once() {
        let e = Outer(Quoting {
            source: std::io::Error::other("disk on fire"),
        });
        assert_eq!(
            error_chain(&e),
            "loading failed: cannot read x: disk on fire"
        );
    }
}
