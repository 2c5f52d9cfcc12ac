//! The configurations the documentation shows are real: every example file and every
//! `homelab.toml` block of README.md validates, and converts the way the docs say.
#![allow(clippy::unwrap_used)]

use homelab_config::{ConfigSource, NodeRole};
use homelab_integration::{homelab_toml_blocks, init, workspace_root};

#[test]
fn example_files_validate_without_warnings() {
    init();
    let dir = workspace_root().join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let loaded = ConfigSource::File(path.clone())
                .load()
                .unwrap_or_else(|e| panic!("{} does not validate:\n{e}", path.display()));
            assert!(
                loaded.warnings.is_empty(),
                "{}: {:?}",
                path.display(),
                loaded.warnings
            );
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected the example files in {}", dir.display());
}

#[test]
fn full_example_turns_on_every_integration() {
    init();
    let loaded = ConfigSource::File(workspace_root().join("examples/full.toml"))
        .load()
        .unwrap();
    let c = loaded.config;
    assert!(c.features.external_secrets && c.features.runners);
    assert_eq!(c.github.unwrap().runners.len(), 2);
    assert_eq!(c.cluster.kubernetes_version.package_channel(), "v1.34");
    assert!(c.nodes.iter().skip(1).all(|n| n.role == NodeRole::Worker));
}

#[test]
fn readme_config_blocks_validate() {
    init();
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let blocks = homelab_toml_blocks(&readme);
    assert!(
        !blocks.is_empty(),
        "README.md shows no homelab.toml example"
    );
    for block in blocks {
        if let Err(report) = homelab_config::parse_str("README.md block", &block) {
            panic!("README example does not validate:\n{block}\n{report}");
        }
    }
}
