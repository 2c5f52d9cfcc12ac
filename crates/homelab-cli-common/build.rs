//! Lists the crates of this workspace (their names as `tracing` targets) for the log filter,
//! so that `-v`/`-vv` raise exactly this project's crates, the list never names a crate that
//! does not exist, and a new crate needs no edit here. Outside the workspace (a published
//! copy) the list is empty and the flags fall back to every target.

use std::path::Path;

fn names(manifest: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut section = String::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            line.clone_into(&mut section);
            continue;
        }
        let Some(value) = line
            .strip_prefix("name")
            .map(str::trim_start)
            .and_then(|rest| rest.strip_prefix('='))
        else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        if matches!(section.as_str(), "[package]" | "[lib]" | "[[bin]]") {
            found.push(value.replace('-', "_"));
        }
    }
    found
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut crates = Vec::new();
    for group in ["crates", "bins"] {
        let dir = root.join(group);
        println!("cargo::rerun-if-changed={}", dir.display());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let manifest = entry.path().join("Cargo.toml");
            println!("cargo::rerun-if-changed={}", manifest.display());
            if let Ok(text) = std::fs::read_to_string(&manifest) {
                crates.extend(names(&text));
            }
        }
    }
    crates.sort();
    crates.dedup();
    let out = Path::new(&std::env::var("OUT_DIR").unwrap_or_default()).join("crates.rs");
    let list: Vec<String> = crates.iter().map(|c| format!("{c:?}")).collect();
    let _ = std::fs::write(
        out,
        format!(
            "/// This workspace's crates, as `tracing` targets.\npub const WORKSPACE_CRATES: &[&str] = &[{}];\n",
            list.join(", ")
        ),
    );
}
