//! Benchmark (not a test): push and pull an image of 8 incompressible 64 MiB layers to and
//! from a local registry (docker-registry on loopback), `harbor` against `skopeo copy` from
//! the same OCI layout, alternating runs, each push into a fresh registry (so nothing is
//! mounted or skipped). Prints throughput, the ratio and each tool's peak RSS (GNU time).
//!
//!     cargo bench -p harbor --bench push_pull [-- ROUNDS]
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    reason = "a benchmark printing figures"
)]

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use homelab_testkit::registry::Registry;
use rand::RngExt;

const LAYERS: usize = 8;
const LAYER_MIB: usize = 64;

fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// An OCI layout with `LAYERS` random layers of `LAYER_MIB` MiB, tagged `v1`.
fn make_layout(dir: &Path) -> u64 {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut layers = Vec::new();
    let mut total = 0u64;
    let mut rng = rand::rng();
    let mut chunk = vec![0u8; 1 << 20];
    for i in 0..LAYERS {
        let tmp = dir.join(format!("layer{i}"));
        let mut f = std::fs::File::create(&tmp).unwrap();
        for _ in 0..LAYER_MIB {
            rng.fill(&mut chunk[..]);
            f.write_all(&chunk).unwrap();
        }
        drop(f);
        let hex = sha256_file(&tmp);
        std::fs::rename(&tmp, blobs.join(&hex)).unwrap();
        let size = (LAYER_MIB << 20) as u64;
        total += size;
        layers.push((hex, size));
    }
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|(h, _)| format!("\"sha256:{h}\""))
        .collect();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let write = |bytes: &[u8]| {
        let tmp = dir.join("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        let hex = sha256_file(&tmp);
        std::fs::rename(&tmp, blobs.join(&hex)).unwrap();
        hex
    };
    let config_hex = write(config.as_bytes());
    let layer_json: Vec<String> = layers
        .iter()
        .map(|(h, s)| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{h}","size":{s}}}"#))
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_hex}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        layer_json.join(",")
    );
    let manifest_hex = write(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_hex}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    total
}

/// Runs a command under GNU time; returns wall time and peak RSS in KiB.
fn timed(program: &str, args: &[String]) -> (Duration, u64) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(report.path())
        .arg(program)
        .args(args)
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rss = std::fs::read_to_string(report.path())
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    (elapsed, rss)
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    (bytes as f64 / f64::from(1u32 << 20)) / d.as_secs_f64()
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    assert!(
        Path::new("/usr/bin/time").exists(),
        "GNU time is needed for peak RSS (apt-get install time)"
    );
    let harbor = env!("CARGO_BIN_EXE_harbor");
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let bytes = make_layout(&layout);
    println!(
        "image: {LAYERS} layers x {LAYER_MIB} MiB, incompressible; {rounds} alternating rounds"
    );
    let mut results: Vec<(&str, &str, Duration, u64)> = Vec::new();
    for round in 0..rounds {
        for tool in ["harbor", "skopeo"] {
            let registry = Registry::start().unwrap();
            let target = format!("{}/bench/img:v1", registry.host());
            let push_args: Vec<String> = if tool == "harbor" {
                vec![
                    "--plain-http".into(),
                    "push".into(),
                    format!("{}:v1", layout.display()),
                    target.clone(),
                ]
            } else {
                vec![
                    "copy".into(),
                    "--quiet".into(),
                    "--dest-tls-verify=false".into(),
                    format!("oci:{}:v1", layout.display()),
                    format!("docker://{target}"),
                ]
            };
            let (push, push_rss) =
                timed(if tool == "harbor" { harbor } else { "skopeo" }, &push_args);
            let into = work.path().join(format!("pulled-{tool}-{round}"));
            let pull_args: Vec<String> = if tool == "harbor" {
                vec![
                    "--plain-http".into(),
                    "pull".into(),
                    target.clone(),
                    format!("{}:v1", into.display()),
                ]
            } else {
                vec![
                    "copy".into(),
                    "--quiet".into(),
                    "--src-tls-verify=false".into(),
                    format!("docker://{target}"),
                    format!("oci:{}:v1", into.display()),
                ]
            };
            let (pull, pull_rss) =
                timed(if tool == "harbor" { harbor } else { "skopeo" }, &pull_args);
            println!(
                "round {round} {tool:<7} push {:6.1} MiB/s ({:.1?}, peak RSS {} MiB)   pull {:6.1} MiB/s ({:.1?}, peak RSS {} MiB)",
                mib_per_s(bytes, push),
                push,
                push_rss / 1024,
                mib_per_s(bytes, pull),
                pull,
                pull_rss / 1024
            );
            results.push((tool, "push", push, push_rss));
            results.push((tool, "pull", pull, pull_rss));
            std::fs::remove_dir_all(&into).unwrap();
        }
    }
    for op in ["push", "pull"] {
        let total = |tool: &str| -> (Duration, u64) {
            let runs: Vec<_> = results
                .iter()
                .filter(|r| r.0 == tool && r.1 == op)
                .collect();
            (
                runs.iter().map(|r| r.2).sum(),
                runs.iter().map(|r| r.3).max().unwrap_or(0),
            )
        };
        let (ours, our_rss) = total("harbor");
        let (theirs, their_rss) = total("skopeo");
        println!(
            "{op}: harbor {:.1} MiB/s, skopeo {:.1} MiB/s, ratio (harbor/skopeo throughput) {:.2}; peak RSS harbor {} MiB, skopeo {} MiB",
            mib_per_s(bytes * rounds as u64, ours),
            mib_per_s(bytes * rounds as u64, theirs),
            theirs.as_secs_f64() / ours.as_secs_f64(),
            our_rss / 1024,
            their_rss / 1024
        );
    }
}
