//! `homelab-platform` as a user runs it.
#![allow(clippy::unwrap_used)]

use assert_cmd::Command;
use predicates::prelude::*;

#[test]
fn checks_lists_the_components_in_wave_order_from_the_embedded_default() {
    let out = Command::cargo_bin("homelab-platform")
        .unwrap()
        .current_dir(std::env::temp_dir())
        .arg("checks")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let metallb = text.find("metallb\n").unwrap();
    let ingress = text.find("ingress-nginx\n").unwrap();
    assert!(metallb < ingress, "{text}");
    assert!(
        text.contains(
            "Service ingress-nginx/ingress-nginx-controller has load-balancer IP 192.168.122.100"
        ),
        "{text}"
    );
    assert!(
        text.contains("GET https://harbor.homelab.lan/api/v2.0/health healthy"),
        "{text}"
    );
}

#[test]
fn checks_as_json_are_data() {
    let out = Command::cargo_bin("homelab-platform")
        .unwrap()
        .current_dir(std::env::temp_dir())
        .args(["checks", "-o", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let metallb = value
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "metallb")
        .unwrap();
    assert_eq!(metallb["checks"][0]["check"], "crd_established");
    assert_eq!(metallb["checks"][0]["name"], "ipaddresspools.metallb.io");
}

#[test]
fn status_without_a_cluster_says_so() {
    Command::cargo_bin("homelab-platform")
        .unwrap()
        .current_dir(std::env::temp_dir())
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .args(["status"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("kubeconfig"));
}
