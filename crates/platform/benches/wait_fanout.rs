//! Benchmark (not a test): `wait` over a platform of 40 components on the fake API server,
//! each component's Deployment becoming rolled out at a scripted time, against a
//! `kubectl wait`-style loop that asks every check every 2 s. Prints, for each: the time
//! from the last Deployment turning ready to the wait returning, and the number of API
//! requests.
//!
//! `cargo bench -p platform --bench wait_fanout`
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use homelab_testkit::kube_api::ApiServer;
use platform::checks::{Check, Workload};
use platform::components::Component;
use platform::wait::{WaitOptions, status, wait};
use serde_json::{Value, json};

const COMPONENTS: usize = 40;

fn deployment(i: usize, ready: bool) -> Value {
    let status = if ready {
        json!({ "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1 })
    } else {
        json!({})
    };
    json!({ "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": format!("c{i}"), "namespace": "platform", "generation": 1 },
            "spec": { "replicas": 1, "selector": {}, "template": {} }, "status": status })
}

fn components() -> Vec<Component> {
    (0..COMPONENTS)
        .map(|i| Component {
            name: format!("c{i}"),
            // Four waves of ten.
            wave: i64::try_from(i / 10).unwrap(),
            checks: vec![Check::RolledOut {
                workload: Workload::Deployment,
                namespace: "platform".into(),
                name: format!("c{i}"),
            }],
        })
        .collect()
}

/// Makes the Deployments ready one after the other, every `step`; returns when the last is.
async fn script(server: ApiServer, step: Duration) -> Instant {
    for i in 0..COMPONENTS {
        tokio::time::sleep(step).await;
        server.update(deployment(i, true));
    }
    Instant::now()
}

async fn run(watching: bool, step: Duration) -> (Duration, usize, Duration) {
    let (client, server) =
        ApiServer::start((0..COMPONENTS).map(|i| deployment(i, false)).collect(), &[]);
    let http = reqwest::Client::new();
    let all = components();
    let started = Instant::now();
    let flips = tokio::spawn(script(server.clone(), step));
    if watching {
        let options = WaitOptions::default().timeout(Duration::from_secs(60));
        wait(&client, &http, &all, &options, &|_| {}).await.unwrap();
    } else {
        // kubectl wait-style: ask everything, sleep 2 s, again.
        loop {
            if status(&client, &http, &all).await.iter().all(|s| s.ready) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let done = Instant::now();
    let last_ready = flips.await.unwrap();
    (
        done.saturating_duration_since(last_ready),
        server.requests().len(),
        started.elapsed(),
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{COMPONENTS} components in 4 waves, one Deployment each, made ready one at a time");
    println!(
        "{:<22} {:>9} {:>22} {:>10} {:>10}",
        "strategy", "step (ms)", "after last ready (ms)", "requests", "total (s)"
    );
    for step in [Duration::from_millis(50), Duration::from_millis(250)] {
        for (name, watching) in [("wait (watch-driven)", true), ("poll every 2 s", false)] {
            for _ in 0..2 {
                let (after, requests, total) = runtime.block_on(run(watching, step));
                println!(
                    "{name:<22} {:>9} {:>22.1} {requests:>10} {:>10.2}",
                    step.as_millis(),
                    after.as_secs_f64() * 1000.0,
                    total.as_secs_f64()
                );
            }
        }
    }
}
