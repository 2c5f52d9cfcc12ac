//! Server-side applies a manifest file to the cluster `KUBECONFIG` names, as `kubectl apply
//! --server-side` would, in dependency order (namespaces, then CRDs awaited until
//! `Established`, then the rest), and says which objects changed. `--dry-run` asks the
//! server what would change without changing anything; `--sha256 HEX` refuses a file that
//! is not the pinned one.
//!
//! ```sh
//! cargo run -p kube-manifest --example apply_file -- ./flannel.yml --dry-run
//! ```

use std::process::ExitCode;

use kube_manifest::{ApplyOptions, apply, check_sha256, parse};

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: apply_file FILE [--dry-run] [--sha256 HEX]");
        return Ok(ExitCode::from(2));
    };
    let bytes = std::fs::read(path)?;
    if let Some(i) = args.iter().position(|a| a == "--sha256") {
        let pin = args.get(i + 1).ok_or("--sha256 needs the digest")?;
        check_sha256(path, &bytes, pin)?;
    }
    let objects = parse(path, &String::from_utf8(bytes)?)?;
    println!("{path}: {} objects", objects.len());
    let mut options = ApplyOptions::new("kube-manifest-example");
    options.dry_run = args.iter().any(|a| a == "--dry-run");
    let client = kube::Client::try_default().await?;
    for applied in apply(&client, &objects, &options).await? {
        let what = if applied.changed {
            "changed"
        } else {
            "unchanged"
        };
        println!("{what:>9} {applied}");
    }
    Ok(ExitCode::SUCCESS)
}
