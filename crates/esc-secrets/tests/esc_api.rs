//! The ESC client against the contract fake of ESC's API (`homelab_testkit::esc_fake`).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use esc_secrets::Value;
use esc_secrets::client::{ACCEPT, EnvRef, Esc, EscError, EscOptions};
use homelab_testkit::esc_fake::{EscFake, TOKEN};
use secrecy::ExposeSecret;

const LAB: &str = "values:
  harbor:
    admin:
      password:
        fn::secret: hunter2-harbor
    url: https://harbor.lan
  github:
    token:
      fn::secret: ghp_fake_token
  ports: [80, 443]
";

fn client(fake: &EscFake, token: &str) -> Esc {
    Esc::new(
        token.to_owned().into(),
        EscOptions::default().api_url(&fake.url).backoff(
            3,
            Duration::from_millis(50),
            Duration::from_secs(2),
        ),
    )
    .unwrap()
}

fn lab() -> EnvRef {
    EnvRef::new("acme", "homelab", "dev")
}

/// Every request carried the API version and the token in its header, never in its URL.
fn headers_were_right(fake: &EscFake) {
    for r in fake.requests() {
        assert_eq!(r.accept.as_deref(), Some(ACCEPT), "{}", r.line);
        assert!(!r.line.contains(TOKEN), "{}", r.line);
    }
}

#[tokio::test]
async fn environments_are_listed_across_pages() {
    let fake = EscFake::start().await;
    for env in ["a", "b", "c", "d", "e"] {
        fake.define("acme", "homelab", env, "values: {}\n");
    }
    fake.define("other", "homelab", "x", "values: {}\n");
    let esc = client(&fake, TOKEN);
    let envs = esc.list_environments("acme").await.unwrap();
    let names: Vec<String> = envs.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        [
            "acme/homelab/a",
            "acme/homelab/b",
            "acme/homelab/c",
            "acme/homelab/d",
            "acme/homelab/e"
        ]
    );
    let lines: Vec<String> = fake.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(
        lines,
        [
            "GET /api/esc/environments/acme",
            "GET /api/esc/environments/acme?continuationToken=page-2",
            "GET /api/esc/environments/acme?continuationToken=page-4"
        ]
    );
    headers_were_right(&fake);
}

#[tokio::test]
async fn an_environment_is_opened_once_and_read_as_typed_values_whose_secrets_never_print() {
    let fake = EscFake::start().await;
    fake.define("acme", "homelab", "dev", LAB);
    let esc = client(&fake, TOKEN);
    let values = esc.read(&lab()).await.unwrap();
    assert_eq!(fake.opens(), 1);
    let password = values
        .get(&"harbor.admin.password".parse().unwrap())
        .unwrap();
    assert!(password.is_secret());
    assert_eq!(password.text().unwrap().expose_secret(), "hunter2-harbor");
    assert!(matches!(
        values.get(&"harbor.url".parse().unwrap()),
        Some(Value::String(u)) if u == "https://harbor.lan"
    ));
    assert!(matches!(
        values.get(&"ports[1]".parse().unwrap()),
        Some(Value::Number(n)) if n.as_u64() == Some(443)
    ));
    let printed = format!("{values:?} {}", values.redacted());
    assert!(!printed.contains("hunter2-harbor") && !printed.contains("ghp_fake_token"));

    // One property through the same session: no second open.
    let session = esc.open(&lab(), Duration::from_secs(60)).await.unwrap();
    let token = esc
        .property(&session, &"github.token".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(token.text().unwrap().expose_secret(), "ghp_fake_token");
    let err = esc
        .property(&session, &"github.nope".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment acme/homelab/dev has no value at github.nope"
    );
    assert_eq!(fake.opens(), 2);
    let opens: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.line.starts_with("POST"))
        .map(|r| r.line)
        .collect();
    assert_eq!(
        opens[0],
        "POST /api/esc/environments/acme/homelab/dev/open?duration=300s"
    );
    headers_were_right(&fake);
}

#[tokio::test]
async fn a_wrong_token_an_unknown_environment_and_an_expired_session_are_named_without_the_token() {
    let fake = EscFake::start().await;
    fake.define("acme", "homelab", "dev", LAB);
    let wrong = "pul-not-the-right-one-0000000000000000";
    let err = client(&fake, wrong).read(&lab()).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.status(), Some(401));
    assert!(
        text.starts_with(
            "POST /api/esc/environments/acme/homelab/dev/open (acme/homelab/dev): HTTP 401"
        ),
        "{text}"
    );
    assert!(!text.contains(wrong) && !format!("{err:?}").contains(wrong));

    let esc = client(&fake, TOKEN);
    let err = esc
        .read(&EnvRef::new("acme", "homelab", "prod"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert!(err.to_string().contains("(acme/homelab/prod)"), "{err}");

    let session = esc.open(&lab(), Duration::from_secs(1)).await.unwrap();
    esc.values(&session).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = esc.values(&session).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert!(!format!("{esc:?}").contains(TOKEN));
}

#[tokio::test]
async fn rate_limits_are_waited_out_as_retry_after_says() {
    let fake = EscFake::start().await;
    fake.define("acme", "homelab", "dev", LAB);
    let esc = client(&fake, TOKEN);
    // The open (a POST) is retried too: a 429 was not processed.
    fake.throttle(2, 1);
    let started = Instant::now();
    esc.read(&lab()).await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert_eq!(fake.requests().len(), 4, "two 429s, the open, the read");

    // More 429s than retries: the error says so.
    fake.throttle(10, 0);
    let err = esc.read(&lab()).await.unwrap_err();
    assert_eq!(err.status(), Some(429), "{err}");
    assert!(err.to_string().contains("Too Many Requests"), "{err}");
}

#[tokio::test]
async fn a_definition_is_updated_with_its_etag_and_a_concurrent_edit_is_refused() {
    let fake = EscFake::start().await;
    fake.define("acme", "homelab", "dev", LAB);
    let esc = client(&fake, TOKEN);
    let read = esc.definition(&lab()).await.unwrap();
    assert_eq!(read.yaml, LAB);
    assert_eq!(read.revision, 1);
    let changed = format!("{LAB}  extra: 1\n");
    let revision = esc.update(&lab(), &changed, &read.etag).await.unwrap();
    assert_eq!(revision, 2);
    // Someone else's edit in between: the second writer is refused, nothing overwritten.
    let stale = read.etag.clone();
    let err = esc
        .update(&lab(), "values: {}\n", &stale)
        .await
        .unwrap_err();
    assert!(matches!(err, EscError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert_eq!(fake.definition("acme", "homelab", "dev").unwrap(), changed);
    // A definition ESC refuses comes back as its diagnostics.
    let current = esc.definition(&lab()).await.unwrap();
    let err = esc
        .update(&lab(), "values: [not, a, map]\n", &current.etag)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("environment acme/homelab/dev has errors:"),
        "{err}"
    );
}

#[tokio::test]
async fn an_environment_with_errors_is_reported_with_its_diagnostics() {
    let fake = EscFake::start().await;
    fake.define("acme", "homelab", "broken", "values: [1, 2]\n");
    let err = client(&fake, TOKEN)
        .read(&EnvRef::new("acme", "homelab", "broken"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment acme/homelab/broken has errors:\n  1:1: `values` must be an object"
    );
}

#[tokio::test]
async fn an_unreachable_esc_is_a_transport_error_that_keeps_its_cause_and_not_the_token() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let esc = Esc::new(
        "pul-secret-token".to_owned().into(),
        EscOptions::default()
            .api_url(format!("http://127.0.0.1:{port}"))
            .backoff(0, Duration::from_millis(1), Duration::from_millis(1)),
    )
    .unwrap();
    let err = esc.list_environments("acme").await.unwrap_err();
    match &err {
        EscError::Transport { source, .. } => assert!(source.is_connect(), "{source:?}"),
        other => panic!("{other:?}"),
    }
    assert!(std::error::Error::source(&err).is_some());
    assert!(!format!("{err} {err:?}").contains("pul-secret-token"));
    let err = Esc::new(
        "t".to_owned().into(),
        EscOptions::default().api_url("::nope"),
    )
    .unwrap_err();
    assert!(matches!(err, EscError::Url { .. }), "{err:?}");
}
