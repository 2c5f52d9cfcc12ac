//! Brings a home lab up through the library alone: loads `homelab.toml`, prints every
//! selected phase's plan, then runs them.
//!
//! ```sh
//! cargo run -p homelab --example up -- [CONFIG] [--from PHASE] [--only PHASE] [--until PHASE]
//! ```

use std::path::Path;

use homelab::{Lab, Pipeline, Selection};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One TLS provider for every client the layers make.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = None;
    let mut selection = Selection::all();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--from" => selection.from = args.next(),
            "--only" => selection.only = args.next(),
            "--until" => selection.until = args.next(),
            _ if config.is_none() && !arg.starts_with('-') => config = Some(arg),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let lab = Lab::load(config.as_deref().map(Path::new))?;
    let pipeline = Pipeline::for_lab(&lab);
    for plan in pipeline.plan(&lab, &selection).await? {
        println!("{plan}");
    }
    let reports = pipeline
        .up(&lab, &selection, &|event| eprintln!("{event}"))
        .await?;
    for r in reports {
        println!(
            "{}: {} changed, {} unchanged",
            r.phase, r.changed, r.unchanged
        );
    }
    Ok(())
}
