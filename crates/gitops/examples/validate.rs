//! Validates a GitOps manifests repository with the library alone and prints the report, as
//! `homelab-gitops validate` does (exit status 1 with errors, 2 when there is no repository).
//!
//! ```sh
//! cargo run -p gitops --example validate -- ./gitops [REPO_URL]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use gitops::validate::{Options, render, validate};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let options = Options::default()
        // Without one, the validator infers it from the Applications (and says so).
        .repo_url(args.next())
        // Build each kustomization with kubectl when it is on the PATH.
        .kustomize_build(true);
    match validate(&root, &options) {
        Ok(report) => {
            print!("{}", render(&report));
            if report.has_errors() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
