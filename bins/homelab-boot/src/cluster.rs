//! The cluster commands: bootstrap, kubeconfig, cni, upgrade.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use homelab_config::expand_home;
use kubeadm_boot::bootstrap::{self, Node, Plan};
use kubeadm_boot::cni;
use kubeadm_boot::kubeadm::{ClusterSpec, NodeSpec, Version};
use kubeadm_boot::nodes;
use kubeadm_boot::prepare::PackageSource;
use kubeadm_boot::ssh::Pool;
use kubeadm_boot::steps::Runner;
use kubeadm_boot::upgrade;

use crate::{Global, KubeconfigArg, Setup, print_reports, progress};

impl KubeconfigArg {
    pub(crate) fn path(&self) -> PathBuf {
        expand_home(&self.kubeconfig)
    }
}

fn version_of(setup: &Setup) -> Version {
    let kv = setup.config.cluster.kubernetes_version;
    Version {
        major: kv.major,
        minor: kv.minor,
        patch: kv.patch,
    }
}

/// The control plane and workers, as the bootstrap needs them.
fn nodes_of(setup: &Setup) -> Result<(Node, Vec<Node>)> {
    let mut control_plane = None;
    let mut workers = Vec::new();
    for target in &setup.targets {
        let address = target.address.parse().with_context(|| {
            format!(
                "node {}: address {} is not an IPv4 address (kubeadm advertises it)",
                target.name, target.address
            )
        })?;
        let node = Node {
            target: target.clone(),
            spec: NodeSpec {
                name: target.name.clone(),
                address,
            },
        };
        if target.name == setup.control_plane {
            control_plane = Some(node);
        } else {
            workers.push(node);
        }
    }
    let control_plane = control_plane.with_context(|| {
        format!(
            "the control plane {} is not among the selected nodes (--only?)",
            setup.control_plane
        )
    })?;
    Ok((control_plane, workers))
}

fn cluster_spec(setup: &Setup, control_plane: &Node) -> ClusterSpec {
    ClusterSpec {
        name: setup.config.cluster.name.clone(),
        version: version_of(setup),
        control_plane_endpoint: format!("{}:6443", control_plane.spec.address),
        pod_cidr: setup.config.network.pod_cidr,
        service_cidr: setup.config.network.service_cidr,
        image_repository: None,
        cri_socket: "unix:///run/containerd/containerd.sock".into(),
    }
}

fn bootstrap_plan(setup: &Setup) -> Result<Plan> {
    let (control_plane, workers) = nodes_of(setup)?;
    Ok(Plan {
        cluster: cluster_spec(setup, &control_plane),
        control_plane,
        workers,
    })
}

fn server_url(control_plane: &Node) -> String {
    format!("https://{}:6443", control_plane.spec.address)
}

pub(crate) async fn bootstrap(
    setup: &Setup,
    pool: Arc<Pool>,
    global: &Global,
    json: bool,
    dry_run: bool,
    kubeconfig: &Path,
) -> Result<ExitCode> {
    let plan = bootstrap_plan(setup)?;
    let mut runner = Runner::new(pool.clone());
    runner.dry_run = dry_run;
    runner.parallelism = global.parallel;
    let result = match bootstrap::bootstrap(&runner, &plan, progress(json)).await {
        Ok(reports) => Ok(reports),
        Err(bootstrap::BootstrapError::Steps(e)) => Err(e),
        Err(other) => return Err(other.into()),
    };
    let code = print_reports(json, result)?;
    if !dry_run {
        merge_kubeconfig(&pool, &plan, kubeconfig).await?;
    }
    Ok(code)
}

async fn merge_kubeconfig(pool: &Pool, plan: &Plan, kubeconfig: &Path) -> Result<()> {
    let session = bootstrap::control_plane_session(pool, plan).await?;
    let admin = bootstrap::admin_kubeconfig(&session).await?;
    kubeadm_boot::kubeconfig::merge_into_file(
        kubeconfig,
        &admin,
        &plan.cluster.name,
        &server_url(&plan.control_plane),
    )?;
    eprintln!(
        "kubeconfig: context {} in {} (kubectl --context {} get nodes)",
        plan.cluster.name,
        kubeconfig.display(),
        plan.cluster.name
    );
    Ok(())
}

pub(crate) async fn kubeconfig(setup: &Setup, pool: &Pool, kubeconfig: &Path) -> Result<ExitCode> {
    let plan = bootstrap_plan(setup)?;
    merge_kubeconfig(pool, &plan, kubeconfig).await?;
    Ok(ExitCode::SUCCESS)
}

/// A client for the cluster's context in `kubeconfig`.
async fn client(setup: &Setup, kubeconfig: &Path) -> Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let context = setup.config.cluster.name.clone();
    let config = kube::Config::from_custom_kubeconfig(
        file,
        &kube::config::KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        },
    )
    .await
    .with_context(|| {
        format!(
            "context {context} in {} (run `homelab-boot bootstrap` or `homelab-boot kubeconfig` first)",
            kubeconfig.display()
        )
    })?;
    Ok(kube::Client::try_from(config)?)
}

pub(crate) async fn cni(
    setup: &Setup,
    manifest: Option<String>,
    sha256: Option<String>,
    timeout: Duration,
    kubeconfig: &Path,
) -> Result<ExitCode> {
    let source = manifest
        .unwrap_or_else(|| cni::flannel_manifest_url(setup.config.versions.flannel.as_str()));
    let bytes = if source.starts_with("https://") || source.starts_with("http://") {
        eprintln!("downloading {source}");
        cni::download(&reqwest::Client::new(), &source).await?
    } else {
        std::fs::read(&source).with_context(|| format!("reading {source}"))?
    };
    let Some(pinned) = sha256.or_else(|| setup.config.versions.flannel_manifest_sha256.clone())
    else {
        bail!(
            "{source} is not pinned: its sha256 is {}; check it against the release, then pin it \
             with --sha256 or `flannel_manifest_sha256 = \"…\"` under [versions] in homelab.toml",
            cni::sha256_hex(&bytes)
        );
    };
    cni::verify(&source, &bytes, &pinned)?;
    let text = String::from_utf8(bytes).with_context(|| format!("{source} is not UTF-8"))?;
    let mut objects = cni::parse_manifest(&source, &text)?;
    cni::set_pod_network(&mut objects, setup.config.network.pod_cidr)?;
    let client = client(setup, kubeconfig).await?;
    for applied in cni::apply(&client, &objects).await? {
        eprintln!("applied {applied}");
    }
    let names: Vec<String> = setup.targets.iter().map(|t| t.name.clone()).collect();
    eprintln!("waiting for {} nodes to be Ready", names.len());
    nodes::wait_ready(&client, &names, None, timeout, &|missing| {
        for (node, why) in missing {
            eprintln!("  {node}: {why}");
        }
    })
    .await?;
    eprintln!("all {} nodes are Ready", names.len());
    Ok(ExitCode::SUCCESS)
}

pub(crate) struct UpgradeArgs {
    pub(crate) to: Option<String>,
    pub(crate) dry_run: bool,
    pub(crate) drain_timeout: Duration,
    pub(crate) package_source: Option<String>,
}

pub(crate) async fn upgrade(
    setup: &Setup,
    pool: Arc<Pool>,
    global: &Global,
    json: bool,
    args: UpgradeArgs,
    kubeconfig: &Path,
) -> Result<ExitCode> {
    let target = match args.to {
        Some(to) => to.parse().with_context(|| format!("--to {to}"))?,
        None => version_of(setup),
    };
    let (control_plane, workers) = nodes_of(setup)?;
    let plan = upgrade::Plan {
        target,
        source: args
            .package_source
            .map_or_else(PackageSource::default, |base_url| PackageSource {
                base_url,
            }),
        control_plane,
        workers,
        drain_timeout: args.drain_timeout,
        ready_timeout: Duration::from_secs(10 * 60),
    };
    let client = client(setup, kubeconfig).await?;
    let mut runner = Runner::new(pool);
    runner.dry_run = args.dry_run;
    runner.parallelism = global.parallel;
    let result = match upgrade::upgrade(&runner, &client, &plan, progress(json)).await {
        Ok(reports) => Ok(reports),
        Err(upgrade::UpgradeError::Steps(e)) => Err(e),
        Err(other) => return Err(other.into()),
    };
    print_reports(json, result)
}
