//! Shared harness of the cross-layer integration suite.
//!
//! Every test calls [`init`] first: it installs the one rustls crypto provider the tools use
//! (kube and reqwest together otherwise panic at the first TLS handshake) and routes `tracing`
//! output to the test's captured output.

use std::path::PathBuf;
use std::sync::Once;

/// Installs the rustls crypto provider and a test log subscriber, once per process.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        homelab_cli_common::install_crypto_provider();
        // RUST_LOG=debug shows the layers' logs in a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}

/// The workspace root (where `Cargo.toml`, `README.md` and `examples/` are).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map_or(here.clone(), std::path::Path::to_path_buf)
}

/// The TOML code blocks of a Markdown document that are marked as `homelab.toml` examples
/// (a fenced block whose info string is `toml` and whose first line is `# homelab.toml`).
pub fn homelab_toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if line.trim_start().starts_with("```toml") => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => {
                if let Some(block) = current.take()
                    && block.starts_with("# homelab.toml")
                {
                    blocks.push(block);
                }
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_marked_toml_blocks_only() {
        let md = "x\n```toml\n# homelab.toml\na = 1\n```\n```toml\nb = 2\n```\n```sh\nc\n```\n";
        assert_eq!(
            homelab_toml_blocks(md),
            vec!["# homelab.toml\na = 1\n".to_owned()]
        );
    }

    #[test]
    fn init_installs_a_crypto_provider() {
        init();
        init();
        assert!(rustls_provider_installed());
    }

    fn rustls_provider_installed() -> bool {
        rustls::crypto::CryptoProvider::get_default().is_some()
    }
}
