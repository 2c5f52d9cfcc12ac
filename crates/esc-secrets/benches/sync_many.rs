//! Benchmark (not a test): 500 declared secrets synced from the ESC contract fake into the
//! fake API server, by `esc_secrets::deliver::sync` (one open and one read of the
//! environment for all of them) and by the reference's approach (one open and one read per
//! secret, then the same apply). Prints wall time, ESC requests and API requests.
//!
//! `cargo bench -p esc-secrets --bench sync_many`
#![allow(clippy::unwrap_used, missing_docs)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use esc_secrets::client::{EnvRef, Esc, EscOptions};
use esc_secrets::declared::{Declared, Kind};
use esc_secrets::deliver::sync;
use esc_secrets::{PropertyPath, Value};
use homelab_testkit::esc_fake::{EscFake, TOKEN};
use homelab_testkit::kube_api::ApiServer;

const SECRETS: usize = 500;

fn declared() -> Vec<Declared> {
    (0..SECRETS)
        .map(|i| Declared {
            name: format!("s{i}"),
            purpose: "bench".into(),
            source: PropertyPath::root("bench").key(format!("s{i}")),
            namespace: "bench".into(),
            secret: format!("s{i}"),
            kind: Kind::Opaque {
                keys: vec![("password".into(), "password".into())],
            },
            optional: false,
        })
        .collect()
}

async fn run(one_open: bool) -> (Duration, usize, usize) {
    let fake = EscFake::start().await;
    let mut yaml = String::from("values:\n  bench:\n");
    for i in 0..SECRETS {
        writeln!(
            yaml,
            "    s{i}:\n      password:\n        fn::secret: pw-{i}"
        )
        .unwrap();
    }
    fake.define("acme", "homelab", "bench", &yaml);
    let (client, server) = ApiServer::start(Vec::new(), &[]);
    let esc = Esc::new(
        TOKEN.to_owned().into(),
        EscOptions::default().api_url(&fake.url),
    )
    .unwrap();
    let env = EnvRef::new("acme", "homelab", "bench");
    let list = declared();
    let started = Instant::now();
    let values = if one_open {
        esc.read(&env).await.unwrap()
    } else {
        // The reference: each secret opens the environment and reads its own path.
        let mut bench = std::collections::BTreeMap::new();
        for d in &list {
            let session = esc.open(&env, Duration::from_secs(60)).await.unwrap();
            let v = esc.property(&session, &d.source).await.unwrap();
            bench.insert(d.name.clone(), v);
        }
        Value::Object(std::collections::BTreeMap::from([(
            "bench".to_owned(),
            Value::Object(bench),
        )]))
    };
    sync(&client, &values, &env, &list, false).await.unwrap();
    (
        started.elapsed(),
        fake.requests().len(),
        server.requests().len(),
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{SECRETS} declared secrets, ESC contract fake -> fake API server");
    println!(
        "{:<34} {:>10} {:>14} {:>14}",
        "strategy", "wall (ms)", "ESC requests", "API requests"
    );
    for (name, one_open) in [
        ("one open for all (esc-secrets)", true),
        ("one open per secret (reference)", false),
    ] {
        for _ in 0..2 {
            let (wall, esc, api) = runtime.block_on(run(one_open));
            println!(
                "{name:<34} {:>10.1} {esc:>14} {api:>14}",
                wall.as_secs_f64() * 1000.0
            );
        }
    }
}
