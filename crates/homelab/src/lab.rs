//! The lab: one loaded `homelab.toml` and how to run against it.

use std::path::{Path, PathBuf};

use homelab_config::{Config, ConfigSource};

use crate::error::Error;
use crate::inputs;
use crate::lock::LockFile;

/// How the phases run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Record the host keys of nodes not yet in `known_hosts` (trust on first use).
    pub trust_new_hosts: bool,
    /// Where the base-image build keeps its temporary root filesystem.
    pub work_dir: PathBuf,
    /// A libvirt URI instead of `libvirt.uri`.
    pub libvirt_uri: Option<String>,
    /// Nodes worked on at once.
    pub parallelism: usize,
    /// Record new digests in `homelab.lock` instead of refusing changed artifacts.
    pub update_lock: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            trust_new_hosts: false,
            work_dir: PathBuf::from("/var/tmp"),
            libvirt_uri: None,
            parallelism: kubeadm_boot::steps::DEFAULT_PARALLELISM,
            update_lock: false,
        }
    }
}

/// A loaded configuration and how to run against it.
#[derive(Clone)]
pub struct Lab {
    /// The configuration.
    pub config: Config,
    /// The file it came from (`None`: the embedded default).
    pub config_file: Option<PathBuf>,
    /// Warnings found while reading it, rendered with file and line.
    pub warnings: Vec<String>,
    /// How to run.
    pub options: Options,
    kube: Option<kube::Client>,
    /// One SSH connection pool for every phase of this lab (made on first use): plan, apply
    /// and status reuse the connections instead of logging in again each time.
    ssh: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<homelab_ssh::Pool>>>,
    /// The node bundle, opened (every file hashed) once per lab.
    bundle: std::sync::Arc<std::sync::OnceLock<Option<kubeadm_boot::bundle::NodeBundle>>>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("cluster", &self.config.cluster.name)
            .field("config_file", &self.config_file)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Lab {
    /// Loads `explicit`, else `./homelab.toml`, else the embedded default; validates it.
    ///
    /// # Errors
    /// The file cannot be read or has errors (every one of them is in the message).
    pub fn load(explicit: Option<&Path>) -> Result<Self, Error> {
        let source = ConfigSource::discover(explicit);
        let loaded = source.load()?;
        let mut lab = Self::new(loaded.config);
        lab.warnings = loaded
            .warnings
            .iter()
            .map(|w| w.render(&loaded.source_name))
            .collect();
        if let ConfigSource::File(path) = source {
            lab.config_file = Some(path);
        }
        Ok(lab)
    }

    /// A lab of an already loaded configuration.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            config_file: None,
            warnings: Vec::new(),
            options: Options::default(),
            kube: None,
            ssh: std::sync::Arc::default(),
            bundle: std::sync::Arc::default(),
        }
    }

    /// Runs with `options`.
    #[must_use]
    pub fn with_options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Talks to the cluster with `client` instead of the kubeconfig (tests, or a caller
    /// that already has a client).
    #[must_use]
    pub fn with_kube_client(mut self, client: kube::Client) -> Self {
        self.kube = Some(client);
        self
    }

    /// The SSH connection pool of the cluster layer (`ssh.*` of the configuration), shared by
    /// every phase of this lab.
    ///
    /// # Errors
    /// The private key cannot be loaded.
    pub fn ssh_pool(&self) -> Result<std::sync::Arc<homelab_ssh::Pool>, Error> {
        if let Some(pool) = self.ssh.get() {
            return Ok(pool.clone());
        }
        let pool = std::sync::Arc::new(homelab_ssh::Pool::new(inputs::ssh_options(
            &self.config,
            self.options.trust_new_hosts,
        ))?);
        Ok(self.ssh.get_or_init(|| pool).clone())
    }

    /// The offline node bundle of `[packages] bundle`, if one is set: opened and checked
    /// against its `SHA256SUMS` on first use, then kept for every phase of this lab.
    ///
    /// # Errors
    /// The bundle cannot be read or a file differs from its digest.
    pub fn node_bundle(&self) -> Result<Option<kubeadm_boot::bundle::NodeBundle>, Error> {
        if let Some(bundle) = self.bundle.get() {
            return Ok(bundle.clone());
        }
        let bundle = crate::bundle::open(&self.config)?;
        Ok(self.bundle.get_or_init(|| bundle).clone())
    }

    /// The libvirt URI in use.
    pub fn libvirt_uri(&self) -> &str {
        self.options
            .libvirt_uri
            .as_deref()
            .unwrap_or(&self.config.libvirt.uri)
    }

    /// Where `homelab.lock` is: beside the configuration file, else in the current directory.
    pub fn lock_path(&self) -> PathBuf {
        LockFile::path_for(self.config_file.as_deref())
    }

    /// A client for the cluster: the one given, else the kubeconfig context of
    /// `cluster.kubeconfig` and `cluster.context`.
    ///
    /// # Errors
    /// The kubeconfig has no such context.
    pub async fn kube_client(&self) -> Result<kube::Client, Error> {
        if let Some(client) = &self.kube {
            return Ok(client.clone());
        }
        Ok(kubeadm_boot::cluster::client(
            &inputs::kubeconfig_path(&self.config),
            self.config.cluster.context_name(),
        )
        .await?)
    }

    /// [`Lab::kube_client`] when the API server answers (its version), else `None`: what a
    /// phase's plan asks before planning anything in the cluster.
    pub async fn answering_client(&self) -> Option<kube::Client> {
        let client = self.kube_client().await.ok()?;
        client.apiserver_version().await.ok()?;
        Some(client)
    }
}
