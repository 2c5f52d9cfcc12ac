//! The Harbor REST client against the contract fake of Harbor's v2.0 API.
#![allow(clippy::unwrap_used)]

use harbor_client::harbor::{GcSchedule, Harbor, HarborOptions, RobotCreate, repository_access};
use homelab_testkit::harbor_fake::{ADMIN, DEVELOPER, HarborFake};
use reqwest::StatusCode;
use secrecy::ExposeSecret;

fn client(fake: &HarborFake, (user, password): (&str, &str)) -> Harbor {
    Harbor::new(
        &fake.url,
        user,
        password.to_owned().into(),
        &HarborOptions::default().plain_http(true),
    )
    .unwrap()
}

fn digest(n: u32) -> String {
    format!("sha256:{n:064x}")
}

#[tokio::test]
async fn projects_are_created_once_and_listed_across_pages() {
    let fake = HarborFake::start().await;
    let admin = client(&fake, ADMIN);
    assert_eq!(admin.health().await.unwrap()["status"], "healthy");
    let (p, created) = admin.ensure_project("homelab", false).await.unwrap();
    assert!(created && !p.is_public());
    let (again, created) = admin.ensure_project("homelab", false).await.unwrap();
    assert!(!created);
    assert_eq!(again, p);
    for i in 0..104 {
        admin
            .ensure_project(&format!("p{i:03}"), i % 2 == 0)
            .await
            .unwrap();
    }
    let all = admin.projects().await.unwrap();
    assert_eq!(all.len(), 105, "two pages of 100 and the rest");
    assert!(
        fake.log()
            .iter()
            .any(|l| l.starts_with("GET /api/v2.0/projects?page=2&page_size=100")),
        "{:?}",
        fake.log()
    );
    admin.delete_project("p000").await.unwrap();
    assert!(admin.project("p000").await.unwrap().is_none());
}

#[tokio::test]
async fn errors_carry_harbors_code_message_and_request_id() {
    let fake = HarborFake::start().await;
    // A wrong password makes the caller anonymous (not a 401 by itself); an endpoint that
    // needs a user then answers 401.
    let wrong = client(&fake, ("admin", "wrong"));
    let err = wrong.robots(None).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    let text = err.to_string();
    assert!(text.contains("UNAUTHORIZED unauthorized"), "{text}");
    assert!(text.contains("(X-Request-Id fake-req-"), "{text}");

    let dev = client(&fake, DEVELOPER);
    let err = dev.ensure_project("mine", false).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));

    let admin = client(&fake, ADMIN);
    admin.ensure_project("busy", false).await.unwrap();
    fake.push_artifact("busy/app", &digest(1), &["v1"], "2026-11-01T00:00:00Z");
    let err = admin.delete_project("busy").await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::PRECONDITION_FAILED));
    assert!(err.to_string().contains("contains repositories"), "{err}");
}

#[tokio::test]
async fn robots_get_push_and_pull_and_their_secret_is_shown_once() {
    let fake = HarborFake::start().await;
    let admin = client(&fake, ADMIN);
    let (project, _) = admin.ensure_project("homelab", false).await.unwrap();
    let robot = RobotCreate {
        name: "ci".into(),
        description: "pushes from CI".into(),
        level: "project".into(),
        duration: -1,
        permissions: vec![repository_access("homelab", true)],
    };
    let creds = admin.create_robot(&robot).await.unwrap();
    assert_eq!(creds.name, "robot$homelab+ci");
    assert!(
        !format!("{creds:?}").contains(creds.secret.expose_secret()),
        "secrets never print"
    );
    let err = admin.create_robot(&robot).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::CONFLICT));
    // Harbor lists a project's robots only when asked for that project (ListRobot with
    // q=Level=project,ProjectID=<id>); without it, the system robots.
    assert!(admin.robots(None).await.unwrap().is_empty());
    let listed = admin.robots(Some(&project)).await.unwrap();
    assert_eq!(listed.len(), 1);
    let actions: Vec<&str> = listed[0].permissions[0]
        .access
        .iter()
        .map(|a| a.action.as_str())
        .collect();
    assert_eq!(actions, ["pull", "push"]);
    let refreshed = admin.refresh_robot_secret(creds.id).await.unwrap();
    assert_ne!(refreshed.expose_secret(), creds.secret.expose_secret());
    admin.delete_robot(creds.id).await.unwrap();
    assert!(admin.robots(Some(&project)).await.unwrap().is_empty());
    assert_eq!(
        admin.delete_robot(creds.id).await.unwrap_err().status(),
        Some(StatusCode::NOT_FOUND)
    );
}

#[tokio::test]
async fn nested_repositories_are_double_encoded_and_cleanup_keeps_the_newest() {
    let fake = HarborFake::start().await;
    let admin = client(&fake, ADMIN);
    admin.ensure_project("homelab", false).await.unwrap();
    for i in 1..=15u32 {
        fake.push_artifact(
            "homelab/team/web",
            &digest(i),
            &[&format!("v{i}")],
            &format!("2026-11-{i:02}T10:00:00Z"),
        );
    }
    fake.push_artifact(
        "homelab/tool",
        &digest(100),
        &["1.0"],
        "2026-10-01T00:00:00Z",
    );
    let artifacts = admin
        .artifacts("homelab", "homelab/team/web")
        .await
        .unwrap();
    assert_eq!(artifacts.len(), 15);
    assert!(
        fake.log().iter().any(|l| l
            .starts_with("GET /api/v2.0/projects/homelab/repositories/team%252Fweb/artifacts?")),
        "{:?}",
        fake.log()
    );
    let dry = admin.cleanup("homelab", 10, true).await.unwrap();
    assert_eq!(dry.removed.len(), 5);
    assert_eq!(dry.kept, 11);
    assert_eq!(
        fake.digests("homelab/team/web").len(),
        15,
        "a dry run deletes nothing"
    );
    let done = admin.cleanup("homelab", 10, false).await.unwrap();
    assert_eq!(done.removed, dry.removed);
    let left = fake.digests("homelab/team/web");
    assert_eq!(left.len(), 10);
    assert!(
        !left.contains(&digest(5)) && left.contains(&digest(6)),
        "the oldest went"
    );
    admin
        .scan("homelab", "homelab/team/web", "v15")
        .await
        .unwrap();
    assert_eq!(fake.scans(), ["homelab/team/web@v15"]);
    admin
        .delete_repository("homelab", "homelab/team/web")
        .await
        .unwrap();
    let names: Vec<String> = admin
        .repositories("homelab")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["homelab/tool"]);
}

#[tokio::test]
async fn retention_and_garbage_collection() {
    let fake = HarborFake::start().await;
    let admin = client(&fake, ADMIN);
    let (project, _) = admin.ensure_project("homelab", false).await.unwrap();
    let id = admin
        .set_retention(&project, 10, "0 0 3 * * *")
        .await
        .unwrap();
    assert!(id > 0);
    // A second policy is refused by Harbor (CreateRetention: "already has retention
    // policy"); the client updates the one there is.
    let again = admin
        .set_retention(&project, 5, "0 0 4 * * *")
        .await
        .unwrap();
    assert_eq!(again, id);
    assert!(
        fake.log()
            .iter()
            .any(|l| l == &format!("PUT /api/v2.0/retentions/{id}")),
        "{:?}",
        fake.log()
    );
    for schedule in [
        GcSchedule::Hourly,
        GcSchedule::Daily,
        GcSchedule::Weekly,
        GcSchedule::parse("custom", Some("0 30 2 * * *")).unwrap(),
        GcSchedule::None,
    ] {
        admin
            .set_gc_schedule(&schedule)
            .await
            .unwrap_or_else(|e| panic!("{schedule:?}: {e}"));
    }
    let run = admin.run_gc(true).await.unwrap();
    assert_eq!(admin.gc_status(run).await.unwrap()["job_status"], "Success");
    let dev = client(&fake, DEVELOPER);
    assert_eq!(
        dev.run_gc(false).await.unwrap_err().status(),
        Some(StatusCode::FORBIDDEN)
    );
}

#[test]
fn gc_schedules_are_what_harbor_accepts() {
    assert_eq!(GcSchedule::Weekly.cron(), Some("0 0 0 * * 0"));
    for (kind, cron, why) in [
        ("Custom", Some("*/5 * * * *"), "six-field"),
        ("Custom", Some("30 0 3 * * *"), "seconds"),
        ("Custom", None, "needs --cron"),
        ("Schedule", None, "not a schedule"),
        ("Daily", Some("0 0 3 * * *"), "Custom only"),
    ] {
        let err = GcSchedule::parse(kind, cron).unwrap_err();
        assert!(err.contains(why), "{kind} {cron:?}: {err}");
    }
}

#[tokio::test]
async fn the_fake_refuses_what_harbor_refuses_for_gc_schedules() {
    // What the client used to send: a scheduled type with an empty cron.
    let fake = HarborFake::start().await;
    let http = reqwest::Client::new();
    let put = |body: serde_json::Value| {
        http.put(format!("{}/api/v2.0/system/gc/schedule", fake.url))
            .basic_auth(ADMIN.0, Some(ADMIN.1))
            .json(&body)
            .send()
    };
    let old = put(serde_json::json!({ "schedule": { "type": "Weekly", "cron": "" } }))
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::BAD_REQUEST);
    let bad_type = put(serde_json::json!({ "schedule": { "type": "Monthly" } }))
        .await
        .unwrap();
    assert_eq!(bad_type.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_wrong_password_is_caught_although_harbor_answers_as_to_anonymous() {
    let fake = HarborFake::start().await;
    let admin = client(&fake, ADMIN);
    admin.ensure_project("private", false).await.unwrap();
    admin.ensure_project("open", true).await.unwrap();
    let wrong = client(&fake, ("admin", "not-the-password"));
    // What Harbor does: no 401 on listProjects, only the public projects.
    let seen: Vec<String> = wrong
        .projects()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(seen, ["open"]);
    // What the client does about it.
    let err = wrong.check_login().await.unwrap_err().to_string();
    assert!(
        err.contains("Harbor refused the credentials of admin"),
        "{err}"
    );
    admin.check_login().await.unwrap();
}

#[test]
fn plain_http_must_be_asked_for() {
    let err = Harbor::new(
        "http://harbor.lan",
        "admin",
        "pw".to_owned().into(),
        &HarborOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("plain HTTP") && err.contains("--plain-http"),
        "{err}"
    );
    Harbor::new(
        "http://harbor.lan",
        "admin",
        "pw".to_owned().into(),
        &HarborOptions::default().plain_http(true),
    )
    .unwrap();
}

/// What a proxy in front of a Harbor that is down may answer: 200 and an HTML page.
#[tokio::test]
async fn an_answer_that_is_not_harbor_s_is_named_with_the_decoder_s_error_kept() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = vec![0; 4096];
            let _ = stream.read(&mut request).await;
            let body = "<html>maintenance</html>";
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let harbor = Harbor::new(
        &format!("http://{addr}"),
        "admin",
        "pw".to_owned().into(),
        &HarborOptions::default().plain_http(true),
    )
    .unwrap();
    let err = harbor.project("homelab").await.unwrap_err();
    match &err {
        harbor_client::harbor::HarborError::Answer { path, source } => {
            assert_eq!(path, "projects/homelab");
            assert!(source.is_syntax(), "{source}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("unexpected answer"), "{err}");
    // A URL that does not parse keeps the parser's error, and is not repeated.
    let err = Harbor::new(
        "https://admin:hunter2@[bad",
        "admin",
        "pw".to_owned().into(),
        &HarborOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, harbor_client::harbor::HarborError::Url { .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("hunter2"), "{err}");
}
