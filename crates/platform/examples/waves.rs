//! Prints the platform's components in their waves, each with the readiness checks the
//! platform waits on (the table `platform::components` is), for the reference addresses.
//! With `--status`, also asks the cluster `KUBECONFIG` names how far each has come (one
//! evaluation of every check, no waiting).
//!
//! ```sh
//! cargo run -p platform --example waves
//! cargo run -p platform --example waves -- --status
//! ```

use std::net::Ipv4Addr;

use platform::components::{PlatformSpec, components};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = PlatformSpec::new(
        Ipv4Addr::new(192, 168, 122, 100),
        Ipv4Addr::new(192, 168, 122, 102),
        "https://harbor.homelab.lan",
    )
    .external_secrets(true);
    let status = std::env::args().any(|a| a == "--status");
    let client = if status {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Some((kube::Client::try_default().await?, reqwest::Client::new()))
    } else {
        None
    };
    for component in components(&spec) {
        println!("wave {:>2}  {}", component.wave, component.name);
        for check in &component.checks {
            match &client {
                None => println!("           {check}"),
                Some((client, http)) => {
                    let seen = check.evaluate(client, http).await;
                    let mark = if seen.ok { "ok" } else { "waiting" };
                    println!("           {check}: {mark} ({})", seen.detail);
                }
            }
        }
    }
    Ok(())
}
