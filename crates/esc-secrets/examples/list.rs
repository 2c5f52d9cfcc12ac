//! Lists the Pulumi ESC environments of an organization, or, given one, the paths its
//! values have with secrets marked — never a value. The token is read from
//! `PULUMI_ACCESS_TOKEN` (never an argument: arguments show in `ps`).
//!
//! ```sh
//! PULUMI_ACCESS_TOKEN=pul-... cargo run -p esc-secrets --example list -- acme
//! PULUMI_ACCESS_TOKEN=pul-... cargo run -p esc-secrets --example list -- acme/homelab/dev
//! ```

use esc_secrets::{EnvRef, Esc, EscOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let what = std::env::args()
        .nth(1)
        .ok_or("usage: list ORGANIZATION | ORGANIZATION/PROJECT/ENVIRONMENT")?;
    let token = std::env::var("PULUMI_ACCESS_TOKEN")
        .map_err(|_| "set PULUMI_ACCESS_TOKEN (a Pulumi access token)")?;
    let esc = Esc::new(token.into(), EscOptions::default())?;
    match what.split('/').collect::<Vec<_>>()[..] {
        [organization] => {
            for env in esc.list_environments(organization).await? {
                println!("{env}");
            }
        }
        [organization, project, environment] => {
            let values = esc
                .read(&EnvRef::new(organization, project, environment))
                .await?;
            for (path, secret) in values.leaves() {
                println!("{path}{}", if secret { "  (secret)" } else { "" });
            }
        }
        _ => return Err("give ORGANIZATION or ORGANIZATION/PROJECT/ENVIRONMENT".into()),
    }
    Ok(())
}
