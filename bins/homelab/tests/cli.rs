//! The `homelab` binary as a user runs it.
#![allow(clippy::unwrap_used)]

use assert_cmd::Command;
use predicates::prelude::*;
use tempfile::TempDir;

/// `homelab` run in an empty directory with no inherited configuration.
fn homelab(dir: &TempDir) -> Command {
    let mut cmd = Command::cargo_bin("homelab").unwrap();
    cmd.current_dir(dir.path())
        .env_remove("HOMELAB_CONFIG")
        .env_remove("RUST_LOG");
    cmd
}

const FIVE_MISTAKES: &str = r#"[cluster]
kubernetes_version = "1.33"

[network]
service_cidr = "10.244.0.0/16"

[libvirt]
uri = "qemu:///system"
pol_path = "/srv/pool"

[[nodes]]
name = "cp"
role = "control-plane"
memory = "1GiB"
ip = "192.168.122.10"

[[nodes]]
name = "cp"
ip = "192.168.122.11"
"#;

#[test]
fn validate_passes_with_no_file_at_all() {
    let dir = TempDir::new().unwrap();
    homelab(&dir)
        .args(["config", "validate"])
        .assert()
        .success()
        .stdout(predicate::str::contains("<embedded default>: valid"))
        .stdout(predicate::str::contains("1 control plane + 2 workers"));
}

#[test]
fn five_mistakes_give_five_errors_with_key_and_position() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("homelab.toml"), FIVE_MISTAKES).unwrap();
    let out = homelab(&dir)
        .args(["config", "validate"])
        .assert()
        .failure()
        .code(1);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(
        errors
            .iter()
            .map(|l| l.split(": error: ").next().unwrap())
            .collect::<Vec<_>>(),
        [
            "homelab.toml:2:22",
            "homelab.toml:5:16",
            "homelab.toml:9:1",
            "homelab.toml:14:10",
            "homelab.toml:18:8",
        ],
        "{stderr}"
    );
    for key in [
        "cluster.kubernetes_version",
        "network.service_cidr",
        "libvirt.pol_path",
        "nodes[0].memory",
        "nodes[1].name",
    ] {
        assert!(
            stderr.contains(&format!(": error: {key}: ")),
            "{key} missing from:\n{stderr}"
        );
    }
    assert!(stderr.contains("did you mean `pool_path`?"), "{stderr}");
    assert!(
        stderr.contains("see nodes[0].name at homelab.toml:12:8"),
        "{stderr}"
    );
    assert!(
        stderr
            .trim_end()
            .ends_with("homelab.toml: 5 errors, 0 warnings"),
        "{stderr}"
    );
}

#[test]
fn validate_json_lists_every_diagnostic() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("lab.toml");
    std::fs::write(&file, FIVE_MISTAKES).unwrap();
    let out = homelab(&dir)
        .args(["config", "validate", "-o", "json", "--config"])
        .arg(&file)
        .assert()
        .failure();
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(json["valid"], false);
    assert_eq!(json["errors"], 5);
    assert_eq!(json["diagnostics"][0]["path"], "cluster.kubernetes_version");
    assert_eq!(json["diagnostics"][0]["location"]["line"], 2);
}

#[test]
fn config_env_var_selects_the_file() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("other.toml");
    std::fs::write(&file, "[cluster]\nname = \"Bad Name\"\n").unwrap();
    homelab(&dir)
        .env("HOMELAB_CONFIG", &file)
        .args(["config", "validate"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "other.toml:2:8: error: cluster.name",
        ));
}

#[test]
fn missing_file_is_named() {
    let dir = TempDir::new().unwrap();
    homelab(&dir)
        .args(["config", "validate", "--config", "nope.toml"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "cannot read configuration file nope.toml",
        ));
}

#[test]
fn show_never_prints_a_token_value() {
    let dir = TempDir::new().unwrap();
    let token_file = dir.path().join("gh-token");
    std::fs::write(&token_file, "ghp_file_secret_value\n").unwrap();
    let config = format!(
        "[features]\nexternal_secrets = true\n\n[esc]\norganization = \"me\"\ntoken = {{ env = \"PULUMI_ACCESS_TOKEN\" }}\n\n[github]\nowner = \"me\"\ntoken = {{ file = \"{}\" }}\n",
        token_file.display()
    );
    std::fs::write(dir.path().join("homelab.toml"), config).unwrap();
    for format in ["toml", "json", "yaml"] {
        let out = homelab(&dir)
            .env("PULUMI_ACCESS_TOKEN", "pul-env-secret-value")
            .env("HARBOR_ADMIN_PASSWORD", "harbor-secret-value")
            .args(["-vv", "config", "show", "-o", format])
            .assert()
            .success();
        let all = [
            out.get_output().stdout.clone(),
            out.get_output().stderr.clone(),
        ]
        .concat();
        let text = String::from_utf8(all).unwrap();
        assert!(text.contains("PULUMI_ACCESS_TOKEN"), "{format}: {text}");
        for secret in [
            "pul-env-secret-value",
            "harbor-secret-value",
            "ghp_file_secret_value",
        ] {
            assert!(!text.contains(secret), "{format} printed {secret}:\n{text}");
        }
    }
}

#[test]
fn a_token_written_in_the_file_is_refused_without_echo() {
    let dir = TempDir::new().unwrap();
    std::fs::write(
        dir.path().join("homelab.toml"),
        "[harbor]\nadmin_password = \"Harbor12345-inline\"\n",
    )
    .unwrap();
    for args in [
        &["config", "show"][..],
        &["config", "validate"],
        &["config", "validate", "-o", "json"],
    ] {
        let out = homelab(&dir).args(args).assert().failure();
        let all = [
            out.get_output().stdout.clone(),
            out.get_output().stderr.clone(),
        ]
        .concat();
        let text = String::from_utf8(all).unwrap();
        assert!(text.contains("harbor.admin_password"), "{text}");
        assert!(
            !text.contains("Harbor12345"),
            "{args:?} echoed the secret:\n{text}"
        );
    }
}

#[test]
fn show_outputs_parse_back() {
    let dir = TempDir::new().unwrap();
    let toml_out = homelab(&dir).args(["config", "show"]).assert().success();
    let text = String::from_utf8(toml_out.get_output().stdout.clone()).unwrap();
    let reparsed = homelab_config::parse_str("show", &text).unwrap();
    assert_eq!(reparsed.config, homelab_config::Config::default());

    let json_out = homelab(&dir)
        .args(["config", "show", "-o", "json"])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&json_out.get_output().stdout).unwrap();
    assert_eq!(json["nodes"][0]["ip"], "192.168.122.10");

    let yaml_out = homelab(&dir)
        .args(["config", "show", "-o", "yaml"])
        .assert()
        .success();
    let yaml = String::from_utf8(yaml_out.get_output().stdout.clone()).unwrap();
    assert!(
        yaml.contains("metallb_range: 192.168.122.100-192.168.122.150"),
        "{yaml}"
    );
}

#[test]
fn init_writes_a_commented_valid_file_and_never_clobbers() {
    let dir = TempDir::new().unwrap();
    homelab(&dir)
        .args(["config", "init"])
        .assert()
        .success()
        .stdout(predicate::str::contains("wrote homelab.toml"));
    let written = std::fs::read_to_string(dir.path().join("homelab.toml")).unwrap();
    assert!(written.lines().filter(|l| l.starts_with('#')).count() > 10);
    homelab(&dir)
        .args(["config", "validate"])
        .assert()
        .success()
        .stdout(predicate::str::contains("homelab.toml: valid"));

    std::fs::write(dir.path().join("homelab.toml"), "# my edits\n").unwrap();
    homelab(&dir)
        .args(["config", "init"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("already exists; pass --force"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("homelab.toml")).unwrap(),
        "# my edits\n"
    );
    homelab(&dir)
        .args(["config", "init", "--force"])
        .assert()
        .success();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("homelab.toml")).unwrap(),
        written
    );
}

#[test]
fn schema_is_json_schema() {
    let dir = TempDir::new().unwrap();
    let out = homelab(&dir).args(["config", "schema"]).assert().success();
    let schema: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(schema["title"], "homelab.toml");
    assert!(schema["properties"]["nodes"].is_object());
}

#[test]
fn help_lists_only_commands_that_work() {
    let dir = TempDir::new().unwrap();
    let out = homelab(&dir).arg("--help").assert().success();
    let help = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for command in [
        "config", "up", "plan", "status", "verify", "upgrade", "destroy", "lock", "open",
    ] {
        assert!(
            help.contains(&format!("  {command} ")),
            "help lacks {command}:\n{help}"
        );
    }
    let out = homelab(&dir).args(["up", "--help"]).assert().success();
    let help = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for flag in [
        "--from <PHASE>",
        "--only <PHASE>",
        "--until <PHASE>",
        "--yes",
    ] {
        assert!(help.contains(flag), "up --help lacks {flag}:\n{help}");
    }
}

#[test]
fn an_unknown_phase_is_named_with_the_phases_there_are() {
    let dir = TempDir::new().unwrap();
    homelab(&dir)
        .args(["plan", "--only", "platfrom"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "no phase named `platfrom`; the phases are, in order: vms, nodes, cluster",
        ));
}

#[test]
fn json_logs_are_json() {
    let dir = TempDir::new().unwrap();
    let out = homelab(&dir)
        .args(["-v", "--log-format", "json", "config", "validate"])
        .assert()
        .success();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "-v should log the configuration source");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["level"].is_string());
    }
}

/// `homelab open` against a real API server (no kubelet: its pods never run): what is
/// missing is named, first the Service, then a ready pod behind it.
#[tokio::test]
async fn open_names_what_is_missing_on_a_real_api_server() {
    use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
    use kube::api::{Api, PostParams};

    let plane = homelab_testkit::control_plane::ControlPlane::start()
        .await
        .unwrap();
    let client = plane.client().await.unwrap();
    let dir = TempDir::new().unwrap();
    std::fs::write(
        dir.path().join("homelab.toml"),
        format!(
            "[cluster]\nkubeconfig = \"{}\"\ncontext = \"homelab-test\"\n",
            plane.kubeconfig().display()
        ),
    )
    .unwrap();
    let run = |dir: &TempDir| {
        let out = homelab(dir)
            .args(["open", "grafana", "--port", "0"])
            .timeout(std::time::Duration::from_secs(60))
            .assert()
            .failure();
        String::from_utf8(out.get_output().stderr.clone()).unwrap()
    };
    let err = run(&dir);
    assert!(
        err.contains("read Service monitoring/kube-prometheus-stack-grafana")
            && err.contains("not found"),
        "{err}"
    );

    let create = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(
            &create,
            &serde_json::from_value(serde_json::json!({ "metadata": { "name": "monitoring" } }))
                .unwrap(),
        )
        .await
        .unwrap();
    // No controller manager here makes the namespace's default account: a pod needs it.
    Api::<ServiceAccount>::namespaced(client.clone(), "monitoring")
        .create(
            &create,
            &serde_json::from_value(serde_json::json!({ "metadata": { "name": "default" } }))
                .unwrap(),
        )
        .await
        .unwrap();
    Api::<Service>::namespaced(client.clone(), "monitoring")
        .create(
            &create,
            &serde_json::from_value(serde_json::json!({
            "metadata": { "name": "kube-prometheus-stack-grafana" },
            "spec": { "selector": { "app.kubernetes.io/name": "grafana" },
                      "ports": [{ "name": "http-web", "port": 80, "targetPort": "grafana" }] } }))
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<Pod>::namespaced(client.clone(), "monitoring")
        .create(&create, &serde_json::from_value(serde_json::json!({
            "metadata": { "name": "grafana-0", "labels": { "app.kubernetes.io/name": "grafana" } },
            "spec": { "containers": [{ "name": "grafana", "image": "grafana/grafana:12.2.0",
                                       "ports": [{ "name": "grafana", "containerPort": 3000 }] }] } }))
        .unwrap())
        .await
        .unwrap();
    let err = run(&dir);
    assert!(
        err.contains(
            "no running and ready pod behind Service monitoring/kube-prometheus-stack-grafana"
        ),
        "{err}"
    );
}
