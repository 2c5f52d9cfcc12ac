//! Copies an image between two registries with the library alone: every platform of a
//! multi-platform image, blobs streamed through a temporary directory, digests unchanged.
//! Anonymous on both sides; `PLAIN_HTTP=1` for registries without TLS (a lab's mirror).
//!
//! ```sh
//! cargo run -p harbor-client --example copy -- docker.io/library/busybox:1.36 127.0.0.1:5000/mirror/busybox:1.36
//! ```

use harbor_client::image;
use harbor_client::reference::Reference;
use harbor_client::registry::{Credentials, Options, Registry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let (Some(source), Some(target)) = (args.next(), args.next()) else {
        return Err("usage: copy SOURCE TARGET (image references with their registry)".into());
    };
    let source: Reference = source.parse()?;
    let target: Reference = target.parse()?;
    let options =
        || Options::default().plain_http(std::env::var("PLAIN_HTTP").is_ok_and(|v| v == "1"));
    let from = Registry::new(&source.registry, Credentials::Anonymous, options())?;
    let to = Registry::new(&target.registry, Credentials::Anonymous, options())?;
    let work = tempfile::tempdir()?;
    let copied = image::copy(&from, &source, &to, &target, work.path(), 4).await?;
    println!(
        "{target} {} ({} blobs sent, {} mounted, {} there already, {} bytes)",
        copied.digest, copied.transferred, copied.mounted, copied.skipped, copied.bytes
    );
    Ok(())
}
