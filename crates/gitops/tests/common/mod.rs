//! What the scaffold's tests share: the spec every test repository is made from, and the
//! check that a repository passes the validator with every kustomization built.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::Path;

use gitops::scaffold::{Runner, Spec};
use gitops::validate::{Options, Severity, validate};

pub(crate) const REPO: &str = "https://git.example/homelab/gitops.git";

pub(crate) fn spec() -> Spec {
    Spec {
        repo_url: REPO.into(),
        branch: "main".into(),
        metallb_range: "192.168.122.100-192.168.122.150".into(),
        ingress_ip: "192.168.122.100".into(),
        harbor_ip: "192.168.122.101".into(),
        harbor_url: "https://harbor.homelab.lan".into(),
        argocd_ip: "192.168.122.102".into(),
        versions: [
            ("metallb", "v0.15.2"),
            ("ingress_nginx", "4.13.3"),
            ("cert_manager", "v1.19.1"),
            ("external_secrets", "0.20.4"),
            ("harbor", "1.18.0"),
            ("actions_runner_controller", "0.13.0"),
            ("local_path_provisioner", "v0.0.32"),
            ("kube_prometheus_stack", "88.5.3"),
            ("loki", "18.11.0"),
            ("alloy", "1.11.1"),
            ("tekton_pipelines", "v1.15.0"),
            ("tekton_triggers", "v0.37.0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        external_secrets: true,
        secret_objects: vec![
            serde_json::json!({ "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
                "metadata": { "name": "pulumi-esc" },
                "spec": { "provider": { "pulumi": { "organization": "acme", "project": "homelab",
                    "environment": "dev", "accessToken": { "secretRef": {
                        "name": "pulumi-esc-token", "key": "PULUMI_ACCESS_TOKEN", "namespace": "external-secrets" } } } } } }),
            serde_json::json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "metadata": { "name": "harbor-admin", "namespace": "harbor" },
                "spec": { "refreshInterval": "1h",
                          "secretStoreRef": { "kind": "ClusterSecretStore", "name": "pulumi-esc" },
                          "target": { "name": "harbor-admin" },
                          "dataFrom": [ { "extract": { "key": "harbor.admin" } } ] } }),
        ],
        github_owner: "me".into(),
        runners: vec![Runner {
            repository: "homelab".into(),
            min: 0,
            max: 3,
        }],
        etcd_backup: Some(gitops::scaffold::EtcdBackup {
            schedule: "0 3 * * *".into(),
            node_dir: "/var/backups/etcd".into(),
            keep: 7,
            etcd_image: "registry.k8s.io/etcd:3.5.21-0".into(),
            shell_image: "docker.io/library/busybox:1.36".into(),
            s3: Some(gitops::scaffold::S3Copy {
                endpoint: "https://s3.example.net".into(),
                bucket: "lab-backups".into(),
                prefix: "etcd".into(),
                region: "us-east-1".into(),
                secret: "etcd-backup-s3".into(),
                image: "docker.io/rclone/rclone:1.68.2".into(),
            }),
        }),
        monitoring: Some(gitops::scaffold::Monitoring {
            grafana_admin_secret: Some("grafana-admin".into()),
        }),
        // Tekton's kustomizations name its release files by URL, which the validator cannot
        // fetch here (a warning): scaffold.rs checks them on their own.
        cicd: false,
    }
}

pub(crate) fn check(root: &Path) {
    homelab_testkit::require_kubectl();
    let report = validate(
        root,
        &Options::default()
            .repo_url(Some(REPO.into()))
            .kustomize_build(true),
    )
    .unwrap();
    let real: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity < Severity::Note)
        .collect();
    assert!(real.is_empty(), "{real:#?}");
    let unbuilt: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == "kustomize-build")
        .collect();
    assert!(unbuilt.is_empty(), "kustomizations not built: {unbuilt:#?}");
}

/// Whether the real API server's authorizer lets `user` (in `groups`) do what
/// `attributes` (a `SubjectAccessReview`'s `resourceAttributes`) describe.
pub(crate) async fn may(
    client: &kube::Client,
    user: &str,
    groups: &[&str],
    attributes: serde_json::Value,
) -> bool {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let review: SubjectAccessReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": { "user": user, "groups": groups, "resourceAttributes": attributes } }))
    .unwrap();
    kube::Api::<SubjectAccessReview>::all(client.clone())
        .create(&kube::api::PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap()
        .allowed
}

/// Waits (30 s at most) until [`may`] allows: the authorizer learns of new roles and bindings
/// through its informers, so a loaded API server may allow a moment after they were made.
pub(crate) async fn until_allowed<F, Fut>(what: &str, may: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !may().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still not allowed 30 s after the binding was made"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
