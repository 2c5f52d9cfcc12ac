//! The Application tree, `wait`, refresh and sync against the fake Kubernetes API server.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gitops::status::{refresh, sync, tree, wait};
use homelab_testkit::kube_api::{ApiServer, Kind};
use serde_json::{Value, json};

const APPLICATION: Kind = Kind {
    api_version: "argoproj.io/v1alpha1",
    plural: "applications",
    kind: "Application",
    namespaced: true,
};

fn app(name: &str, sync: &str, health: &str, children: &[&str]) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": { "name": name, "namespace": "argocd" },
        "spec": { "project": "default", "destination": { "server": "https://kubernetes.default.svc" } },
        "status": {
            "sync": { "status": sync },
            "health": if health == "Degraded" {
                json!({ "status": health, "message": "Deployment web exceeded its progress deadline" })
            } else { json!({ "status": health }) },
            "resources": children.iter().map(|c| json!({
                "group": "argoproj.io", "kind": "Application", "namespace": "argocd", "name": c, "status": sync
            })).collect::<Vec<_>>(),
        }
    })
}

fn start(apps: Vec<Value>) -> (kube::Client, ApiServer) {
    ApiServer::start(apps, &[APPLICATION])
}

#[tokio::test]
async fn an_already_synced_tree_returns_at_once() {
    let (client, _server) = start(vec![
        app("root", "Synced", "Healthy", &["core", "platform"]),
        app("core", "Synced", "Healthy", &[]),
        app("platform", "Synced", "Healthy", &["harbor"]),
        app("harbor", "Synced", "Healthy", &[]),
    ]);
    let t = wait(&client, "argocd", "root", Duration::from_secs(30), &|_| {})
        .await
        .unwrap();
    assert!(t.ready);
    assert_eq!(t.children.len(), 2);
    assert_eq!(t.children[1].children[0].name, "harbor");
    assert!(t.render().contains("    harbor"), "{}", t.render());
}

#[tokio::test]
async fn waits_until_a_child_becomes_healthy() {
    let (client, server) = start(vec![
        app("root", "Synced", "Healthy", &["core"]),
        app("core", "Synced", "Progressing", &[]),
    ]);
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let waiting = tokio::spawn({
        let client = client.clone();
        let heard = heard.clone();
        async move {
            wait(
                &client,
                "argocd",
                "root",
                Duration::from_secs(30),
                &move |e| {
                    if let gitops::Event::Waiting(p) = e {
                        heard.lock().unwrap().push(p);
                    }
                },
            )
            .await
        }
    });
    server.wait_for_watchers(1).await;
    server.update(app("core", "Synced", "Healthy", &[]));
    assert!(waiting.await.unwrap().unwrap().ready);
    assert_eq!(
        heard.lock().unwrap().as_slice(),
        [vec!["core: Synced/Progressing".to_owned()]]
    );
}

// A paused clock: the deadline passes only once the wait has seen everything the server
// has to say, so load cannot change which message the timeout carries.
#[tokio::test(start_paused = true)]
async fn a_parent_is_not_ready_while_a_child_is_degraded() {
    let (client, _server) = start(vec![
        app("root", "Synced", "Healthy", &["apps"]),
        app("apps", "Synced", "Healthy", &["web"]),
        app("web", "OutOfSync", "Degraded", &[]),
    ]);
    let t = tree(&client, "argocd", "root").await.unwrap();
    assert_eq!(
        (t.sync.as_str(), t.health.as_str()),
        ("Synced", "Healthy"),
        "its own status"
    );
    assert!(!t.ready && !t.children[0].ready, "but not its aggregate");
    assert_eq!(
        t.problems(),
        ["web: OutOfSync/Degraded: Deployment web exceeded its progress deadline"]
    );
    let err = wait(
        &client,
        "argocd",
        "root",
        Duration::from_millis(400),
        &|_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("not Synced and Healthy: web: OutOfSync/Degraded: Deployment web exceeded"),
        "{err}"
    );
}

// A paused clock: the deadline passes only once the wait has seen everything the server
// has to say, so load cannot change which message the timeout carries.
#[tokio::test(start_paused = true)]
async fn missing_children_and_roots_are_named() {
    let (client, _server) = start(vec![app("root", "Synced", "Healthy", &["later"])]);
    let err = wait(
        &client,
        "argocd",
        "root",
        Duration::from_millis(300),
        &|_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("later: Unknown/Missing: the Application does not exist yet"),
        "{err}"
    );
    let err = tree(&client, "argocd", "nope")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, "no Application nope in namespace argocd");
}

#[tokio::test]
async fn refresh_and_sync_go_through_the_application() {
    let (client, server) = start(vec![app("web", "OutOfSync", "Healthy", &[])]);
    refresh(&client, "argocd", "web", true).await.unwrap();
    sync(&client, "argocd", "web", true).await.unwrap();
    let stored = server
        .get(
            "argoproj.io/v1alpha1",
            "applications",
            Some("argocd"),
            "web",
        )
        .unwrap();
    assert_eq!(
        stored["metadata"]["annotations"]["argocd.argoproj.io/refresh"],
        "hard"
    );
    assert_eq!(stored["operation"]["sync"]["prune"], true);
    let patches: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PATCH"))
        .collect();
    assert!(patches.iter().all(|p| p.starts_with("PATCH /apis/argoproj.io/v1alpha1/namespaces/argocd/applications/web? application/merge-patch+json")), "{patches:#?}");
}
