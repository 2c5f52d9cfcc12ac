//! Checks etcd snapshot files with the library alone, as etcd checks one before a restore: a
//! bbolt database followed by the sha256 that `etcdctl snapshot save` appends. Exit status 1
//! when one does not check out.
//!
//! ```sh
//! cargo run -p kubeadm-boot --example verify_snapshot -- backups/*.db
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use kubeadm_boot::backup::{parse_name, verify};

fn main() -> ExitCode {
    let mut ok = true;
    for file in std::env::args().skip(1).map(PathBuf::from) {
        let described = file
            .file_name()
            .and_then(|n| parse_name(&n.to_string_lossy()))
            .map(|(cluster, node, revision, _)| {
                format!(" (cluster {cluster}, node {node}, revision {revision})")
            })
            .unwrap_or_default();
        match verify(&file) {
            Ok(()) => println!("ok    {}{described}", file.display()),
            Err(e) => {
                ok = false;
                println!("FAIL  {e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
