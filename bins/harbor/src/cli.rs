//! The command line of `harbor`: what it accepts, and its --help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use harbor_client::image;
use homelab_cli_common::LogArgs;
pub(crate) use homelab_cli_common::TextOrJson as Output;

/// Harbor and OCI registries from the command line.
///
/// Credentials never go on the command line: the password (or robot secret) comes from
/// $HARBOR_PASSWORD, from standard input (--password-stdin), or from a file only you can
/// read (--password-file, mode 0600). They are used for every registry a command talks to;
/// without a user name, registries are used anonymously.
///
/// Image references name their registry: 127.0.0.1:5000/team/app:v1, harbor.lan/p/app@sha256:…
/// An OCI image layout directory is written DIR or DIR:TAG.
#[derive(Debug, Parser)]
#[command(name = "harbor", version, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(flatten)]
    pub(crate) log: LogArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Harbor's URL, for the REST commands (project, robot, artifact, cleanup, gc).
    #[arg(long, env = "HARBOR_URL", global = true, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// User (or robot account) name.
    #[arg(long, short = 'u', env = "HARBOR_USERNAME", global = true)]
    pub(crate) username: Option<String>,
    /// Read the password from standard input (one line).
    #[arg(long, global = true)]
    pub(crate) password_stdin: bool,
    /// Read the password from this file (it must be readable by you only: chmod 600).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) password_file: Option<PathBuf>,
    /// Trust this CA certificate (PEM) too.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Talk plain HTTP to registries and to Harbor's API (never the default: credentials
    /// cross the network in clear text).
    #[arg(long, global = true)]
    pub(crate) plain_http: bool,
    /// Blobs moved at once.
    #[arg(long, global = true, default_value_t = 4)]
    pub(crate) parallel: usize,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Harbor projects.
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Harbor robot accounts.
    #[command(subcommand)]
    Robot(RobotCmd),
    /// Harbor artifacts of a repository.
    #[command(subcommand)]
    Artifact(ArtifactCmd),
    /// Keep the newest N artifacts of every repository of a project, delete the rest.
    Cleanup {
        /// Project.
        project: String,
        /// How many artifacts to keep per repository.
        #[arg(long)]
        keep: usize,
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Harbor garbage collection.
    #[command(subcommand)]
    Gc(GcCmd),
    /// Push an image from an OCI image layout (DIR or DIR:TAG) to a registry. A
    /// multi-platform image (an index in the layout) is pushed whole, its digest unchanged.
    Push {
        /// Layout directory, optionally with the tag to push.
        layout: String,
        /// Target reference.
        target: String,
    },
    /// Pull an image into an OCI image layout (DIR or DIR:TAG; the tag defaults to the
    /// image's), verifying every digest. A multi-platform image is pulled whole (the index
    /// and every platform, digests unchanged) unless --platform picks one.
    Pull {
        /// Source reference.
        source: String,
        /// Layout directory, optionally with the tag to record.
        layout: String,
        /// all, or one platform: os/architecture[/variant] (linux/amd64, linux/arm64/v8).
        #[arg(long, default_value = "all", value_parser = |s: &str| s.parse::<image::Platforms>())]
        platform: image::Platforms,
    },
    /// List the tags of a repository (registry/repository).
    Tags {
        /// Repository.
        repository: String,
    },
    /// Copy an image between repositories or registries (blobs mounted on the same
    /// registry; only missing blobs uploaded). A multi-platform image (OCI index, Docker
    /// manifest list) is copied whole, its digest unchanged, unless --platform picks one.
    Copy {
        /// Source reference.
        source: String,
        /// Target reference.
        target: String,
        /// all, or one platform: os/architecture[/variant] (linux/amd64, linux/arm64/v8).
        #[arg(long, default_value = "all", value_parser = |s: &str| s.parse::<image::Platforms>())]
        platform: image::Platforms,
    },
    /// Copy every image listed in a file (one reference per line, # comments) to
    /// TARGET/<its repository>, for offline installs.
    Mirror {
        /// File of image references.
        list: PathBuf,
        /// Target registry and path prefix, e.g. harbor.lan/mirror.
        target: String,
    },
    /// Delete an image by tag or digest (a tag's manifest is deleted with every tag on it).
    Delete {
        /// Reference.
        reference: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectCmd {
    /// List projects.
    List,
    /// Create a project unless it exists.
    Ensure {
        /// Name.
        name: String,
        /// Anyone may pull.
        #[arg(long)]
        public: bool,
    },
    /// Delete an empty project.
    Delete {
        /// Name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RobotCmd {
    /// Create a project robot account that can pull (and with --push, push); prints its
    /// secret once.
    Create {
        /// Short name.
        name: String,
        /// Project.
        #[arg(long)]
        project: String,
        /// Allow pushes too.
        #[arg(long)]
        push: bool,
        /// Lifetime in days (-1: never expires).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        duration: i64,
    },
    /// List robot accounts: a project's with --project, else the system-level ones (Harbor
    /// lists the two separately).
    List {
        /// The project whose robots to list.
        #[arg(long)]
        project: Option<String>,
    },
    /// Delete a robot account.
    Delete {
        /// Id.
        id: i64,
    },
    /// Give a robot account a new secret and print it.
    Refresh {
        /// Id.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ArtifactCmd {
    /// List artifacts with their tags.
    List {
        /// Project.
        project: String,
        /// Repository (inside the project).
        repository: String,
    },
    /// Delete an artifact by digest or tag.
    Delete {
        /// Project.
        project: String,
        /// Repository.
        repository: String,
        /// Digest or tag.
        reference: String,
    },
    /// Start a vulnerability scan.
    Scan {
        /// Project.
        project: String,
        /// Repository.
        repository: String,
        /// Digest or tag.
        reference: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum GcCmd {
    /// Run garbage collection now.
    Run {
        /// Also delete untagged artifacts.
        #[arg(long)]
        delete_untagged: bool,
    },
    /// Set the schedule: Hourly, Daily, Weekly, None, or Custom with --cron.
    Schedule {
        /// Kind.
        kind: String,
        /// Six-field cron, for Custom.
        #[arg(long)]
        cron: Option<String>,
    },
    /// A run's status.
    Status {
        /// Run id.
        id: i64,
    },
}
