//! Loads a `homelab.toml` (the first argument; without one, the embedded default) and
//! prints every problem with its key path and line, then the topology it describes.
//!
//! ```sh
//! cargo run -p homelab-config --example check
//! cargo run -p homelab-config --example check -- ./homelab.toml
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let path = std::env::args().nth(1);
    let source = homelab_config::ConfigSource::discover(path.as_deref().map(std::path::Path::new));
    let loaded = match source.load() {
        Ok(loaded) => loaded,
        Err(report) => {
            // Every problem at once, each with where it is and (often) how to fix it.
            eprintln!("{report}");
            return ExitCode::FAILURE;
        }
    };
    for warning in &loaded.warnings {
        eprintln!("{}", warning.render(&loaded.source_name));
    }
    let c = &loaded.config;
    println!(
        "cluster {} (Kubernetes {})",
        c.cluster.name, c.cluster.kubernetes_version
    );
    println!("network {} via {}", c.network.nat_cidr, c.network.gateway);
    for node in &c.nodes {
        println!(
            "  {:<10} {:<14} {:>2} vCPU {} memory {} disk  {:?}",
            node.name, node.ip, node.vcpus, node.memory, node.disk, node.role
        );
    }
    ExitCode::SUCCESS
}
