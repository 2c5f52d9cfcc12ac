//! The step engine (after k0sctl's phases). A step knows how to check whether a host is
//! already in the wanted state, says in words what it would change, and applies the change.
//! Steps run in order on each host; hosts run in parallel (bounded). `dry_run` runs the same
//! checks and reports what would change. A lock directory on each host refuses a second run
//! at the same time. Every failure names host, step, command, exit status and the tail of
//! standard error.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::event::{Event, Events};
use crate::ssh::{Cmd, Pool, Redacted, Session, SshError, Target, shell_quote};

/// Default number of hosts worked on at once.
pub const DEFAULT_PARALLELISM: usize = 10;
/// The lock directory on each host.
pub const LOCK_DIR: &str = "/run/lock/homelab";

/// How to tell whether a host is already in the wanted state.
#[derive(Clone)]
pub enum Check {
    /// In the wanted state when the command exits 0.
    Command(Cmd),
    /// In the wanted state when the file holds exactly these bytes with this mode.
    File {
        /// Remote path.
        path: String,
        /// Wanted contents.
        contents: Vec<u8>,
        /// Wanted mode, e.g. `0o644`.
        mode: u32,
    },
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Command(cmd) => f.debug_tuple("Command").field(cmd).finish(),
            Self::File {
                path,
                contents,
                mode,
            } => f
                .debug_struct("File")
                .field("path", path)
                .field("contents", &Redacted(contents))
                .field("mode", &format_args!("{mode:04o}"))
                .finish(),
        }
    }
}

/// One change a step makes.
#[derive(Clone)]
pub enum Change {
    /// Run a command (must exit 0).
    Run(Cmd),
    /// Write a file atomically.
    Upload {
        /// Remote path.
        path: String,
        /// Contents (sent over standard input).
        contents: Vec<u8>,
        /// Mode.
        mode: u32,
        /// `user:group`, when not root's.
        owner: Option<String>,
    },
    /// Copy a local file (streamed, bounded memory), installed only when its copy on the host
    /// has this digest ([`crate::ssh::Session::upload_file`]).
    UploadFile {
        /// The file on this machine.
        local: std::path::PathBuf,
        /// Remote path.
        path: String,
        /// Its sha256, lower-case hex.
        sha256: String,
        /// Mode.
        mode: u32,
    },
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Run(cmd) => f.debug_tuple("Run").field(cmd).finish(),
            Self::Upload {
                path,
                contents,
                mode,
                owner,
            } => f
                .debug_struct("Upload")
                .field("path", path)
                .field("contents", &Redacted(contents))
                .field("mode", &format_args!("{mode:04o}"))
                .field("owner", owner)
                .finish(),
            Self::UploadFile {
                local,
                path,
                sha256,
                mode,
            } => f
                .debug_struct("UploadFile")
                .field("local", local)
                .field("path", path)
                .field("sha256", sha256)
                .field("mode", &format_args!("{mode:04o}"))
                .finish(),
        }
    }
}

/// A unit of work on one host.
///
/// ```
/// use kubeadm_boot::steps::{Change, Check, Step};
///
/// // Checked first (content and mode); written, then sysctl reloaded, only when it differs.
/// let step = Step::file(
///     "sysctl",
///     "/etc/sysctl.d/99-kubernetes.conf",
///     "net.ipv4.ip_forward = 1\n",
///     0o644,
///     Some(kubeadm_boot::ssh::Cmd::new("sysctl --system").sudo()),
/// );
/// assert_eq!(step.description, "write /etc/sysctl.d/99-kubernetes.conf (mode 0644)");
/// assert!(matches!(step.check, Check::File { mode: 0o644, .. }));
/// assert!(matches!(step.changes[..], [Change::Upload { .. }, Change::Run(_)]));
/// // Or checked and applied by commands, both as root.
/// let swap = Step::command("swap-off", "turn swap off", "! swapon --show | grep -q .", "swapoff -a");
/// assert!(matches!(&swap.check, Check::Command(cmd) if cmd.sudo));
/// ```
#[derive(Debug, Clone)]
pub struct Step {
    /// Short name, e.g. `swap-off`.
    pub name: String,
    /// What it changes, in words, for plans and dry runs.
    pub description: String,
    /// Whether the host is already in the wanted state.
    pub check: Check,
    /// The changes, in order.
    pub changes: Vec<Change>,
}

impl Step {
    /// A step that writes one file (checked by content and mode) and then, if it changed,
    /// runs `then` (e.g. a reload).
    pub fn file(
        name: &str,
        path: &str,
        contents: impl Into<Vec<u8>>,
        mode: u32,
        then: Option<Cmd>,
    ) -> Self {
        let contents = contents.into();
        let mut changes = vec![Change::Upload {
            path: path.to_owned(),
            contents: contents.clone(),
            mode,
            owner: None,
        }];
        changes.extend(then.map(Change::Run));
        Self {
            name: name.to_owned(),
            description: format!("write {path} (mode {mode:04o})"),
            check: Check::File {
                path: path.to_owned(),
                contents,
                mode,
            },
            changes,
        }
    }

    /// A step checked and applied by commands (both as root).
    pub fn command(name: &str, description: &str, check: &str, apply: &str) -> Self {
        Self {
            name: name.to_owned(),
            description: description.to_owned(),
            check: Check::Command(Cmd::new(check).sudo()),
            changes: vec![Change::Run(Cmd::new(apply).sudo())],
        }
    }
}

/// What happened to a step on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Already in the wanted state.
    Unchanged,
    /// Changed.
    Changed,
    /// Would change (dry run).
    WouldChange,
}

/// One step's result on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Host name.
    pub host: String,
    /// Step name.
    pub step: String,
    /// What happened.
    pub outcome: Outcome,
    /// What the step changes, in words.
    pub description: String,
    /// Time taken, in milliseconds.
    pub millis: u64,
}

/// A step that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{host}: step {step}: {message}{}", command.as_ref().map(|c| format!(" (command `{c}`{}{})", exit_status.map(|s| format!(", exit status {s}")).unwrap_or_default(), if stderr_tail.is_empty() { String::new() } else { format!(", stderr: {stderr_tail}") })).unwrap_or_default())]
pub struct StepFailure {
    /// Host name.
    pub host: String,
    /// Step name (or `lock`/`connect`).
    pub step: String,
    /// What went wrong.
    pub message: String,
    /// The command that failed, if one did.
    pub command: Option<String>,
    /// Its exit status.
    pub exit_status: Option<u32>,
    /// The last lines of its standard error.
    pub stderr_tail: String,
}

impl StepFailure {
    fn from_ssh(host: &str, step: &str, e: SshError) -> Self {
        let message = match &e {
            SshError::Failed { .. } => "command failed".to_owned(),
            other => other.to_string(),
        };
        let (command, exit_status, stderr_tail) = match e {
            SshError::Failed {
                command,
                exit_status,
                stderr_tail,
                ..
            } => (Some(command), Some(exit_status), stderr_tail),
            SshError::Timeout { command, .. } | SshError::Channel { command, .. } => {
                (Some(command), None, String::new())
            }
            _ => (None, None, String::new()),
        };
        Self {
            host: host.to_owned(),
            step: step.to_owned(),
            message,
            command,
            exit_status,
            stderr_tail,
        }
    }
}

/// The run failed on some hosts; the reports of what was done are kept.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} host{} failed:\n  {}", .failures.len(), if .failures.len() == 1 { "" } else { "s" }, .failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
pub struct RunError {
    /// One failure per failed host.
    pub failures: Vec<StepFailure>,
    /// What was done before (and on other hosts).
    pub reports: Vec<Report>,
}

/// Runs steps on hosts.
///
/// ```no_run
/// # async fn demo(pool: std::sync::Arc<kubeadm_boot::ssh::Pool>) -> Result<(), kubeadm_boot::steps::RunError> {
/// use kubeadm_boot::ssh::Target;
/// use kubeadm_boot::steps::{Outcome, Runner, Step};
///
/// let mut runner = Runner::new(pool);
/// runner.dry_run = true; // check every host, change nothing
/// let swap = Step::command("swap-off", "turn swap off", "! swapon --show | grep -q .", "swapoff -a");
/// let work = ["cp1", "w1"]
///     .iter()
///     .zip(["192.168.122.10", "192.168.122.11"])
///     .map(|(name, ip)| (Target::new(*name, ip, "debian"), vec![swap.clone()]))
///     .collect();
/// for report in runner.run(work, &|event| eprintln!("{event}")).await? {
///     if report.outcome == Outcome::WouldChange {
///         println!("{}: {}", report.host, report.description);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Runner {
    pool: Arc<Pool>,
    /// Hosts worked on at once.
    pub parallelism: usize,
    /// Only check and report.
    pub dry_run: bool,
    /// Lock directory on each host ([`LOCK_DIR`]). `{host}` in it is replaced by the host's
    /// name, for hosts that share a filesystem.
    pub lock_dir: String,
}

impl Runner {
    /// A runner over `pool` with the default parallelism.
    pub fn new(pool: Arc<Pool>) -> Self {
        Self {
            pool,
            parallelism: DEFAULT_PARALLELISM,
            dry_run: false,
            lock_dir: LOCK_DIR.to_owned(),
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Runs every host's steps, hosts in parallel (at most `parallelism` at once).
    ///
    /// # Errors
    /// Some hosts failed; each failure names host, step and command.
    pub async fn run(
        &self,
        work: Vec<(Target, Vec<Step>)>,
        events: Events<'_>,
    ) -> Result<Vec<Report>, RunError> {
        let mut results: Vec<_> = futures::stream::iter(work.into_iter().enumerate())
            .map(|(index, (target, steps))| async move {
                let mut reports = Vec::new();
                let result = self.run_host(&target, &steps, &mut reports, events).await;
                (index, reports, result)
            })
            .buffer_unordered(self.parallelism.max(1))
            .collect()
            .await;
        results.sort_by_key(|(index, ..)| *index);
        let mut reports = Vec::new();
        let mut failures = Vec::new();
        for (_, host_reports, result) in results {
            reports.extend(host_reports);
            if let Err(f) = result {
                failures.push(f);
            }
        }
        if failures.is_empty() {
            Ok(reports)
        } else {
            Err(RunError { failures, reports })
        }
    }

    async fn run_host(
        &self,
        target: &Target,
        steps: &[Step],
        reports: &mut Vec<Report>,
        events: Events<'_>,
    ) -> Result<(), StepFailure> {
        let host = target.name.as_str();
        let session = self
            .pool
            .session(target)
            .await
            .map_err(|e| StepFailure::from_ssh(host, "connect", e))?;
        let lock_dir = self.lock_dir.replace("{host}", host);
        lock(&session, &lock_dir).await?;
        let result = async {
            // Every check at once, in one remote command: on a host where nothing is to
            // change (the usual re-run) that is one round trip instead of one per step. The
            // steps up to the first one not in its wanted state are unchanged; from there on,
            // each is checked again in turn, as earlier changes may affect later checks.
            let batch_started = Instant::now();
            let settled = checks_at_once(&session, steps).await;
            let batch_millis =
                u64::try_from(batch_started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let unchanged_prefix = settled.iter().take_while(|done| **done).count();
            for (index, step) in steps.iter().enumerate() {
                events(Event::Checking {
                    host: host.to_owned(),
                    step: step.name.clone(),
                });
                let started = Instant::now();
                let outcome = if index < unchanged_prefix {
                    Outcome::Unchanged
                } else {
                    self.run_step(&session, step).await?
                };
                let millis = if index < unchanged_prefix {
                    if index == 0 { batch_millis } else { 0 }
                } else {
                    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
                };
                let report = Report {
                    host: host.to_owned(),
                    step: step.name.clone(),
                    outcome,
                    description: step.description.clone(),
                    millis,
                };
                events(Event::Step(report.clone()));
                reports.push(report);
            }
            Ok(())
        }
        .await;
        // Released even when a step failed: the next run must not find a stale lock.
        let unlocked = unlock(&session, &lock_dir).await;
        result?;
        unlocked.map_err(|e| StepFailure::from_ssh(host, "unlock", e))
    }

    async fn run_step(&self, session: &Session, step: &Step) -> Result<Outcome, StepFailure> {
        let host = &session.target().name;
        let fail = |e| StepFailure::from_ssh(host, &step.name, e);
        if is_done(session, &step.check).await.map_err(fail)? {
            return Ok(Outcome::Unchanged);
        }
        if self.dry_run {
            return Ok(Outcome::WouldChange);
        }
        for change in &step.changes {
            match change {
                Change::Run(cmd) => {
                    session.run(cmd).await.map_err(fail)?;
                }
                Change::Upload {
                    path,
                    contents,
                    mode,
                    owner,
                } => session
                    .upload(path, contents, *mode, owner.as_deref(), true)
                    .await
                    .map_err(fail)?,
                Change::UploadFile {
                    local,
                    path,
                    sha256,
                    mode,
                } => session
                    .upload_file(local, path, *mode, sha256, true)
                    .await
                    .map_err(fail)?,
            }
        }
        if is_done(session, &step.check).await.map_err(fail)? {
            Ok(Outcome::Changed)
        } else {
            Err(StepFailure {
                host: host.clone(),
                step: step.name.clone(),
                message: "the change was applied but the host is still not in the wanted state"
                    .into(),
                command: match &step.check {
                    Check::Command(c) => Some(c.line.clone()),
                    Check::File { path, .. } => Some(format!("sha256sum {path}")),
                },
                exit_status: None,
                stderr_tail: String::new(),
            })
        }
    }
}

/// The shell test that is true when the host is in the state `check` describes (as root).
fn check_test(check: &Check) -> Option<String> {
    match check {
        // Only checks that run as root: the batch runs as root.
        Check::Command(cmd) if cmd.sudo && cmd.stdin.is_none() => {
            Some(format!("( {} ) </dev/null >/dev/null 2>&1", cmd.line))
        }
        Check::Command(_) => None,
        Check::File {
            path,
            contents,
            mode,
        } => {
            let p = shell_quote(path);
            Some(format!(
                "[ -f {p} ] && [ \"$(stat -c %a {p})\" = {mode:o} ] && [ \"$(sha256sum < {p} | cut -d' ' -f1)\" = {} ]",
                hex::encode(Sha256::digest(contents))
            ))
        }
    }
}

/// Every step's check in one remote command: for each step, whether its host is already in
/// the wanted state. A check that cannot be batched, or a batch that fails as a whole, counts
/// as not settled (the step is then checked on its own).
async fn checks_at_once(session: &Session, steps: &[Step]) -> Vec<bool> {
    let tests: Vec<Option<String>> = steps.iter().map(|s| check_test(&s.check)).collect();
    if tests.iter().all(Option::is_none) {
        return vec![false; steps.len()];
    }
    let script = tests
        .iter()
        .enumerate()
        .map(|(i, test)| match test {
            Some(t) => format!("if {t}; then echo {i}=1; else echo {i}=0; fi"),
            None => format!("echo {i}=0"),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cmd = Cmd::new(script).sudo().timeout(Duration::from_secs(120));
    match session.run(&cmd).await {
        Ok(out) => {
            let text = out.stdout_text();
            (0..steps.len())
                .map(|i| text.lines().any(|l| l == format!("{i}=1")))
                .collect()
        }
        Err(e) => {
            tracing::debug!(host = %session.target().name, error = %e, "batched checks failed; checking step by step");
            vec![false; steps.len()]
        }
    }
}

/// Whether the host is in the state `check` describes.
async fn is_done(session: &Session, check: &Check) -> Result<bool, SshError> {
    match check {
        Check::Command(cmd) => Ok(session.exec(cmd, &mut |_, _| {}).await?.exit_status == 0),
        Check::File {
            path,
            contents,
            mode,
        } => {
            let want = hex::encode(Sha256::digest(contents));
            let cmd = Cmd::new(format!(
                "if [ -f {p} ]; then stat -c %a {p} && sha256sum < {p}; fi",
                p = shell_quote(path)
            ))
            .sudo();
            let out = session.run(&cmd).await?.stdout_text();
            let mut lines = out.lines();
            let have_mode = lines
                .next()
                .and_then(|m| u32::from_str_radix(m.trim(), 8).ok());
            let have_sum = lines.next().and_then(|l| l.split_whitespace().next());
            Ok(have_mode == Some(*mode) && have_sum == Some(want.as_str()))
        }
    }
}

/// This process, as written into a lock: `<local host> <pid> <since>`.
fn lock_owner() -> String {
    format!(
        "{} {} {}",
        local_hostname(),
        std::process::id(),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    )
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "unknown".into(), |h| h.trim().to_owned())
}

/// Whether a lock written by [`lock_owner`] was left by a process of this machine that no
/// longer runs (a killed run), or has no owner at all (left by a run of an earlier version
/// killed between making the directory and writing its owner): such a lock is taken over.
fn is_stale(owner: &str) -> bool {
    if owner.trim().is_empty() {
        return true;
    }
    let mut fields = owner.split_whitespace();
    match (
        fields.next(),
        fields.next().and_then(|p| p.parse::<u32>().ok()),
    ) {
        (Some(host), Some(pid)) => {
            host == local_hostname() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

/// Takes the host's lock, or explains who holds it.
async fn lock(session: &Session, dir: &str) -> Result<(), StepFailure> {
    let host = session.target().name.clone();
    // The lock appears with its owner in one rename: a run killed while taking it leaves
    // at most a temporary directory beside it, never a lock without an owner (which no
    // later run could tell from a live one).
    let take = Cmd::new(format!(
        "d={}; p=$(dirname \"$d\"); mkdir -p \"$p\" && t=$(mktemp -d \"$p/.homelab-lock.XXXXXX\") && cat > \"$t/owner\" && \
         if [ -s \"$t/owner\" ] && mv -T \"$t\" \"$d\" 2>/dev/null; then exit 0; fi; \
         rm -rf \"$t\"; cat \"$d/owner\" 2>/dev/null; exit 75",
        shell_quote(dir)
    ))
    .sudo()
    .stdin(lock_owner().into_bytes())
    .timeout(Duration::from_secs(30));
    for attempt in 0..2 {
        let out = session
            .exec(&take, &mut |_, _| {})
            .await
            .map_err(|e| StepFailure::from_ssh(&host, "lock", e))?;
        match out.exit_status {
            0 => return Ok(()),
            75 => {
                let owner = out.stdout_text().trim().to_owned();
                if attempt == 0 && is_stale(&owner) {
                    tracing::warn!(host = %host, lock = %dir, owner = %owner, "taking over the lock of a run that no longer exists");
                    unlock(session, dir)
                        .await
                        .map_err(|e| StepFailure::from_ssh(&host, "lock", e))?;
                    continue;
                }
                return Err(StepFailure {
                    host,
                    step: "lock".into(),
                    message: format!(
                        "another run holds {dir} (host, pid, since: {}); wait for it, or if it died, remove that directory on the host",
                        if owner.is_empty() { "unknown" } else { &owner }
                    ),
                    command: None,
                    exit_status: Some(75),
                    stderr_tail: String::new(),
                });
            }
            status => {
                return Err(StepFailure {
                    host,
                    step: "lock".into(),
                    message: "cannot take the lock".into(),
                    command: Some(take.line.clone()),
                    exit_status: Some(status),
                    stderr_tail: out.stderr_tail(5),
                });
            }
        }
    }
    Ok(())
}

async fn unlock(session: &Session, dir: &str) -> Result<(), SshError> {
    session
        .run(
            &Cmd::new(format!("rm -rf {}", shell_quote(dir)))
                .sudo()
                .timeout(Duration::from_secs(30)),
        )
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_of_a_dead_local_process_is_stale() {
        let me = lock_owner();
        assert!(!is_stale(&me), "this process is alive");
        let dead = format!("{} 4294967 2026-01-01T00:00:00Z", local_hostname());
        assert!(is_stale(&dead));
        assert!(
            !is_stale("other-machine 4294967 2026-01-01T00:00:00Z"),
            "another machine's process cannot be checked"
        );
        assert!(!is_stale("garbage"));
        assert!(
            is_stale(""),
            "a lock without an owner was left by a killed run"
        );
        assert!(is_stale("\n"));
    }
}
