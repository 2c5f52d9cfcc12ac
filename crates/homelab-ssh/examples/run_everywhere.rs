//! Runs one command on several machines at once, over one pooled connection each, and
//! prints each machine's output and exit status. Host keys are checked against
//! `~/.ssh/known_hosts`; an unknown host is refused unless `--trust-new-hosts` comes first.
//!
//! ```sh
//! cargo run -p homelab-ssh --example run_everywhere -- debian@192.168.122.10 debian@192.168.122.11 -- uptime
//! ```

use std::time::Duration;

use homelab_ssh::{Cmd, HostKeyPolicy, Pool, SshOptions, Target};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let trust = args.first().is_some_and(|a| a == "--trust-new-hosts");
    if trust {
        args.remove(0);
    }
    let split = args
        .iter()
        .position(|a| a == "--")
        .ok_or("usage: run_everywhere [--trust-new-hosts] USER@HOST[:PORT]... -- COMMAND")?;
    let command = args[split + 1..].join(" ");
    let home = std::env::var("HOME")?;
    let pool = Pool::new(SshOptions {
        private_key: format!("{home}/.ssh/id_ed25519").into(),
        known_hosts: format!("{home}/.ssh/known_hosts").into(),
        policy: if trust {
            HostKeyPolicy::TrustOnFirstUse
        } else {
            HostKeyPolicy::Strict
        },
        connect_timeout: Duration::from_secs(10),
        attempts: 2,
    })?;
    let mut targets = Vec::new();
    for spec in &args[..split] {
        let (user, host) = spec
            .split_once('@')
            .ok_or("each machine is USER@HOST[:PORT]")?;
        let (address, port) = match host.rsplit_once(':') {
            Some((a, p)) => (a, p.parse()?),
            None => (host, 22),
        };
        let mut target = Target::new(address, address, user);
        target.port = port;
        targets.push(target);
    }
    // One task per machine, all at once; results in the order given.
    let pool = std::sync::Arc::new(pool);
    let mut tasks = tokio::task::JoinSet::new();
    for (index, target) in targets.into_iter().enumerate() {
        let pool = pool.clone();
        let cmd = Cmd::new(command.clone()).timeout(Duration::from_secs(60));
        tasks.spawn(async move {
            let result = match pool.session(&target).await {
                Ok(session) => session.exec(&cmd, &mut |_, _| {}).await,
                Err(e) => Err(e),
            };
            (index, target, result)
        });
    }
    let mut results = tasks.join_all().await;
    results.sort_by_key(|(index, _, _)| *index);
    let mut failed = false;
    for (_, target, result) in results {
        match result {
            Ok(out) => {
                println!("== {} (exit {})", target.name, out.exit_status);
                print!("{}", out.stdout_text());
                failed |= out.exit_status != 0;
            }
            Err(e) => {
                println!("== {}: {e}", target.name);
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}
