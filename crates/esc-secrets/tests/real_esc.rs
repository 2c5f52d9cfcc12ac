//! Against the real Pulumi ESC: runs only when `PULUMI_ACCESS_TOKEN` and `HOMELAB_ESC_ENV`
//! (`organization/project/environment`) are given; `scripts/test.sh` leaves it out otherwise
//! and says so (it is never counted as passed without them). Read-only: it lists, opens and
//! reads, and changes nothing.
#![allow(clippy::unwrap_used)]

use esc_secrets::client::{EnvRef, Esc, EscOptions};
use esc_secrets::declared::{Needs, check, declared};

#[tokio::test]
#[ignore = "needs PULUMI_ACCESS_TOKEN and HOMELAB_ESC_ENV=organization/project/environment"]
async fn real_esc_environment_is_listed_opened_once_and_checked() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = std::env::var("PULUMI_ACCESS_TOKEN")
        .expect("set PULUMI_ACCESS_TOKEN to run this test against Pulumi ESC");
    let env = std::env::var("HOMELAB_ESC_ENV")
        .expect("set HOMELAB_ESC_ENV=organization/project/environment");
    let parts: Vec<&str> = env.split('/').collect();
    assert_eq!(
        parts.len(),
        3,
        "HOMELAB_ESC_ENV is organization/project/environment"
    );
    let env = EnvRef::new(parts[0], parts[1], parts[2]);
    let api_url = std::env::var("PULUMI_BACKEND_URL")
        .unwrap_or_else(|_| esc_secrets::client::DEFAULT_API_URL.into());
    let esc = Esc::new(token.clone().into(), EscOptions::default().api_url(api_url)).unwrap();
    let all = esc.list_environments(&env.organization).await.unwrap();
    assert!(
        all.contains(&env),
        "{env} is not among {} listed",
        all.len()
    );
    let values = esc.read(&env).await.unwrap();
    let leaves = values.leaves();
    eprintln!("{env}: {} values", leaves.len());
    let missing = check(&values, &env, &declared(&Needs::default()));
    for m in &missing {
        eprintln!("missing: {} ({})", m.path, m.set_line);
    }
    let printed = format!("{values:?} {missing:?}");
    assert!(!printed.contains(&token));
    // A path that is not there is named, never the token.
    let session = esc
        .open(&env, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let err = esc
        .property(&session, &"homelab-no-such-path-42".parse().unwrap())
        .await
        .unwrap_err();
    assert!(!err.to_string().contains(&token));
}
