//! Validation on hostile input: thousands of nodes sharing a few hundred addresses, so that
//! almost every node has a diagnostic. Prints the time to parse and validate each size; it
//! should grow linearly with the number of nodes.
//!
//!     cargo bench -p homelab-config --bench hostile [-- NODES...]

use std::fmt::Write;
use std::time::Instant;

fn file(nodes: usize, addresses: usize) -> String {
    let mut text = String::from(
        "[network]\nnat_cidr = \"10.0.0.0/8\"\ngateway = \"10.0.0.1\"\nmetallb_range = \"10.255.0.100-10.255.0.150\"\n\n[network.load_balancer_ips]\ningress = \"10.255.0.100\"\nharbor = \"10.255.0.101\"\nargocd = \"10.255.0.102\"\n",
    );
    for i in 0..nodes {
        let a = i % addresses;
        let _ = write!(
            text,
            "\n[[nodes]]\nname = \"n{i}\"\nrole = \"{}\"\nvcpus = 2\nmemory = \"2GiB\"\ndisk = \"20GiB\"\nip = \"10.1.{}.{}\"\n",
            if i == 0 { "control-plane" } else { "worker" },
            a / 250,
            a % 250 + 2,
        );
    }
    text
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 4_000, 20_000]
    } else {
        sizes
    };
    for nodes in sizes {
        let text = file(nodes, 200);
        let started = Instant::now();
        let result = homelab_config::parse_str("hostile.toml", &text);
        let elapsed = started.elapsed();
        let errors = result.err().map_or(0, |r| r.errors().count());
        println!("{nodes:>6} nodes sharing 200 addresses: {errors} errors in {elapsed:.2?}");
    }
}
