//! The cluster commands: bootstrap, kubeconfig, cni, upgrade.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use homelab_config::expand_home;
use kubeadm_boot::bootstrap::{self, BootstrapPlan};
use kubeadm_boot::cluster::{self as boot, PodNetwork};
use kubeadm_boot::kubeadm::Version;
use kubeadm_boot::nodes;
use kubeadm_boot::ssh::Pool;
use kubeadm_boot::steps::Runner;
use kubeadm_boot::upgrade;

use crate::cli::{Global, KubeconfigArg, Setup, print_reports, progress};

impl KubeconfigArg {
    pub(crate) fn path(&self) -> PathBuf {
        expand_home(&self.kubeconfig)
    }
}

fn version_of(setup: &Setup) -> Version {
    homelab::inputs::kube_version(&setup.config)
}

fn bootstrap_plan(setup: &Setup) -> Result<BootstrapPlan> {
    let selected = homelab::inputs::SelectedNodes {
        targets: setup.targets.clone(),
        control_plane: setup.control_plane.clone(),
    };
    Ok(homelab::inputs::bootstrap_plan_for(
        &setup.config,
        &selected,
    )?)
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
    let mut runner = global.runner(pool.clone());
    runner.dry_run = dry_run;
    let result = match bootstrap::bootstrap(&runner, &plan, &|e| progress(json, &e)).await {
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

async fn merge_kubeconfig(pool: &Arc<Pool>, plan: &BootstrapPlan, kubeconfig: &Path) -> Result<()> {
    boot::merge_kubeconfig(&Runner::new(pool.clone()), plan, kubeconfig).await?;
    eprintln!(
        "kubeconfig: context {} in {} (kubectl --context {} get nodes)",
        plan.cluster.name,
        kubeconfig.display(),
        plan.cluster.name
    );
    Ok(())
}

pub(crate) async fn kubeconfig(
    setup: &Setup,
    pool: &Arc<Pool>,
    kubeconfig: &Path,
) -> Result<ExitCode> {
    let plan = bootstrap_plan(setup)?;
    merge_kubeconfig(pool, &plan, kubeconfig).await?;
    Ok(ExitCode::SUCCESS)
}

/// A client for the cluster's context in `kubeconfig`.
async fn client(setup: &Setup, kubeconfig: &Path) -> Result<kube::Client> {
    boot::client(kubeconfig, &setup.config.cluster.name)
        .await
        .context("run `homelab-boot bootstrap` or `homelab-boot kubeconfig` first")
}

/// The pod network's manifest (Flannel's release of versions.flannel unless `manifest`
/// names a URL or a file), checked against `sha256`, else `versions.flannel_manifest_sha256`,
/// else the digest homelab.lock recorded on first use.
pub(crate) async fn pod_network(
    setup: &Setup,
    config_file: Option<&Path>,
    manifest: Option<String>,
    sha256: Option<String>,
) -> Result<PodNetwork> {
    let source = manifest.unwrap_or_else(|| {
        kubeadm_boot::cni::flannel_manifest_url(setup.config.versions.flannel.as_str())
    });
    let pin = sha256.or_else(|| setup.config.versions.flannel_manifest_sha256.clone());
    let mut lock = homelab::lock::LockFile::load(&homelab::lock::LockFile::path_for(config_file))?;
    eprintln!("fetching {source}");
    let fetched = homelab::lock::fetch(
        &reqwest::Client::new(),
        &source,
        pin.as_deref(),
        &mut lock,
        false,
    )
    .await?;
    if fetched.recorded {
        eprintln!(
            "recorded sha256 {} of {source} in {} (check it against the release; commit the file)",
            fetched.sha256,
            lock.path().display()
        );
    }
    Ok(PodNetwork::new(source, fetched.bytes))
}

pub(crate) async fn cni(
    setup: &Setup,
    network: &PodNetwork,
    timeout: Duration,
    kubeconfig: &Path,
) -> Result<ExitCode> {
    let plan = bootstrap_plan(setup)?;
    let client = client(setup, kubeconfig).await?;
    for applied in boot::apply_pod_network(&client, &plan, network).await? {
        eprintln!("applied {applied}");
    }
    let names: Vec<String> = setup.targets.iter().map(|t| t.name.clone()).collect();
    eprintln!("waiting for {} nodes to be Ready", names.len());
    nodes::wait_nodes_ready(&client, &names, None, timeout, &|event| {
        if let kubeadm_boot::Event::Waiting(missing) = event {
            for (node, why) in missing {
                eprintln!("  {node}: {why}");
            }
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
    pub(crate) skip_backup: bool,
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
    let BootstrapPlan {
        control_plane,
        workers,
        ..
    } = bootstrap_plan(setup)?;
    let plan = upgrade::UpgradePlan {
        target,
        source: {
            let mut source = homelab::inputs::package_source(&setup.config);
            if let Some(base) = crate::cli::repository_url(args.package_source)? {
                source.base_url = base;
            }
            if !args.dry_run {
                source.fetch_key(&reqwest::Client::new(), &target).await?;
            }
            source
        },
        control_plane,
        workers,
        drain_timeout: args.drain_timeout,
        ready_timeout: Duration::from_secs(10 * 60),
        backup: {
            let mut lab = homelab::Lab::new(setup.config.clone());
            lab.config_file.clone_from(&setup.config_file);
            homelab::backup::upgrade_backups(&lab, args.skip_backup, &|e| eprintln!("{e}"))
        },
    };
    let client = client(setup, kubeconfig).await?;
    let mut runner = global.runner(pool);
    runner.dry_run = args.dry_run;
    let result = match upgrade::upgrade(&runner, &client, &plan, &|e| progress(json, &e)).await {
        Ok(reports) => Ok(reports),
        Err(upgrade::UpgradeError::Steps(e)) => Err(e),
        Err(other) => return Err(other.into()),
    };
    let upgraded = result.is_ok();
    let code = print_reports(json, result)?;
    if upgraded && !args.dry_run {
        record(setup, &target)?;
    }
    Ok(code)
}

/// Writes the version an upgrade reached into homelab.toml when it said another one, so that
/// `homelab up` does not try to prepare the nodes at the old version.
fn record(setup: &Setup, target: &Version) -> Result<()> {
    let mut lab = homelab::Lab::new(setup.config.clone());
    lab.config_file.clone_from(&setup.config_file);
    let target = format!("{}.{}.{}", target.major, target.minor, target.patch);
    match homelab::cluster::record_kubernetes_version(&lab, &target.parse()?)? {
        homelab::cluster::Recorded::File(path) => eprintln!(
            "recorded cluster.kubernetes_version = \"{target}\" in {} (the cluster runs it now)",
            path.display()
        ),
        homelab::cluster::Recorded::AlreadyThere(_) => {}
        homelab::cluster::Recorded::Embedded => eprintln!(
            "the cluster runs {target} now, and the embedded default says {}: run `homelab config init` \
             and set cluster.kubernetes_version = \"{target}\", or `homelab up` will refuse to prepare its nodes",
            setup.config.cluster.kubernetes_version
        ),
    }
    Ok(())
}
