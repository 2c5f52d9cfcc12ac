//! `homelab open`: a platform web interface on a local port, forwarded through the API.

use std::process::ExitCode;

use homelab::Lab;
use platform::open::{OpenError, Ui, serve};

/// The interfaces `homelab open` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Interface {
    /// Grafana of the monitoring stack (`features.monitoring`), local port 9000.
    Grafana,
    /// Argo CD's web interface, local port 8080 (https, Argo CD's own certificate).
    Argocd,
}

pub(crate) async fn open(
    lab: &Lab,
    which: Interface,
    port: Option<u16>,
    address: &str,
) -> anyhow::Result<ExitCode> {
    let mut ui = match which {
        Interface::Grafana => homelab::inputs::grafana_ui(&lab.config),
        Interface::Argocd => Ui::argocd(),
    };
    if let Some(port) = port {
        ui.local_port = port;
    }
    let client = lab.kube_client().await?;
    // Asked once first, so that a missing deployment is said now, not at the first click.
    let endpoint = platform::open::resolve(&client, &ui.service).await?;
    let listener = tokio::net::TcpListener::bind((address, ui.local_port))
        .await
        .map_err(|source| OpenError::Bind {
            address: format!("{address}:{}", ui.local_port),
            source,
        })?;
    println!(
        "{} at {} (Service {}/{} port {}, now pod {} port {})",
        ui.title,
        ui.url(),
        ui.service.namespace,
        ui.service.service,
        ui.service.port,
        endpoint.pod,
        endpoint.port
    );
    println!("login: {}", ui.login);
    println!("Ctrl-C stops forwarding.");
    tokio::select! {
        served = serve(client, &ui.service, listener, &|event| tracing::info!("{event}")) => {
            served?;
        }
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}
