//! One phase, one shape: every layer offers the pipeline the same four verbs, as k0sctl's
//! phases do. `plan` reads live state and lists typed changes without making any; `apply`
//! makes them (each idempotent) and reports progress as events; `status` reads live state
//! only (no state file); `verify` runs named checks, all of them, each with a fix.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::error::Error;
use crate::lab::Lab;

/// One change a phase would make (or made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// What happens: `create`, `change`, `replace`, `start`, `delete`, `run`, ...
    pub action: String,
    /// To what: `domain k8s-cp-1`, `k8s-cp-1: containerd-config`, ...
    pub object: String,
    /// Why, when the action alone does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What a phase would change.
#[derive(Debug, Clone, Serialize)]
pub struct PhasePlan {
    /// The phase.
    pub phase: &'static str,
    /// The changes, in the order `apply` makes them.
    pub changes: Vec<Change>,
    /// How many objects or steps are already as wanted.
    pub unchanged: usize,
    /// Set when the plan cannot be complete yet (an earlier phase has not run): why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

impl PhasePlan {
    /// The plan of a phase that cannot be planned yet: `why`, and what will run once it can.
    pub fn pending(phase: &'static str, why: impl Into<String>) -> Self {
        Self {
            phase,
            changes: Vec::new(),
            unchanged: 0,
            pending: Some(why.into()),
        }
    }

    /// Whether applying changes nothing.
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty() && self.pending.is_none()
    }
}

impl fmt::Display for PhasePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== {}", self.phase)?;
        for c in &self.changes {
            write!(f, "  {:>9}  {}", c.action, c.object)?;
            if let Some(detail) = &c.detail {
                write!(f, " ({detail})")?;
            }
            writeln!(f)?;
        }
        if let Some(pending) = &self.pending {
            writeln!(f, "  pending: {pending}")?;
        }
        write!(
            f,
            "  {}: {} to change, {} unchanged",
            self.phase,
            self.changes.len(),
            self.unchanged
        )
    }
}

/// What `apply` did.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// The phase.
    pub phase: &'static str,
    /// What changed.
    pub changed: usize,
    /// What was already as wanted.
    pub unchanged: usize,
}

/// One thing a phase watches over, as it is now.
#[derive(Debug, Clone, Serialize)]
pub struct StatusItem {
    /// What (`k8s-cp-1`, `node k8s-cp-1`, ...).
    pub name: String,
    /// Its state in a word or two (`running`, `Ready`, `shut off`, ...).
    pub state: String,
    /// More, such as an address and versions.
    pub detail: String,
    /// Whether this is as it should be.
    pub healthy: bool,
}

/// A phase's live state.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseStatus {
    /// The phase.
    pub phase: &'static str,
    /// Each thing it watches over.
    pub items: Vec<StatusItem>,
    /// Set when the state could not be read at all: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PhaseStatus {
    /// Whether everything is as it should be.
    pub fn healthy(&self) -> bool {
        self.error.is_none() && self.items.iter().all(|i| i.healthy)
    }
}

/// One named check of `verify`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The phase.
    pub phase: &'static str,
    /// The check (`libvirt`, `ssh k8s-cp-1`, `nodes Ready`, ...).
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was found.
    pub detail: String,
    /// How to fix it, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The table `homelab verify` prints: one line per check (with how to fix a failed one),
/// then the count of checks and failures.
#[derive(Debug, Clone, Copy)]
pub struct CheckTable<'a>(pub &'a [Check]);

impl fmt::Display for CheckTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<8} {:<24} {:<6} DETAIL", "PHASE", "CHECK", "RESULT")?;
        for c in self.0 {
            writeln!(
                f,
                "{:<8} {:<24} {:<6} {}",
                c.phase,
                c.name,
                if c.passed { "ok" } else { "FAIL" },
                c.detail
            )?;
            if let Some(fix) = c.fix.as_ref().filter(|_| !c.passed) {
                writeln!(f, "{:<8} {:<24} {:<6} fix: {fix}", "", "", "")?;
            }
        }
        let failed = self.0.iter().filter(|c| !c.passed).count();
        writeln!(f, "{} checks, {failed} failed", self.0.len())
    }
}

impl Check {
    /// A passed check.
    pub fn pass(phase: &'static str, name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            phase,
            name: name.into(),
            passed: true,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A failed check and its fix.
    pub fn fail(
        phase: &'static str,
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            phase,
            name: name.into(),
            passed: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// What the pipeline and its phases report while they work.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Event {
    /// A phase begins (`attempt` of `attempts`).
    Started {
        /// The phase.
        phase: &'static str,
        /// This attempt (1-based).
        attempt: u32,
        /// Attempts allowed (`phases.<name>.retries` + 1).
        attempts: u32,
    },
    /// A phase says what it is doing.
    Progress {
        /// The phase.
        phase: &'static str,
        /// What.
        message: String,
    },
    /// A phase finished.
    Finished {
        /// The phase.
        phase: &'static str,
        /// What changed.
        changed: usize,
        /// What was already as wanted.
        unchanged: usize,
        /// How long it took.
        #[serde(with = "millis")]
        elapsed: Duration,
    },
    /// An attempt failed.
    Failed {
        /// The phase.
        phase: &'static str,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: String,
        /// Whether another attempt follows.
        retrying: bool,
    },
}

mod millis {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u128(d.as_millis())
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Started {
                phase,
                attempt,
                attempts,
            } if *attempt > 1 => write!(f, "== {phase} (attempt {attempt} of {attempts})"),
            Self::Started { phase, .. } => write!(f, "== {phase}"),
            Self::Progress { phase, message } => write!(f, "[{phase}] {message}"),
            Self::Finished {
                phase,
                changed,
                unchanged,
                elapsed,
            } => write!(
                f,
                "== {phase}: done in {elapsed:.1?} ({changed} changed, {unchanged} unchanged)"
            ),
            Self::Failed {
                phase,
                attempt,
                error,
                retrying,
            } => write!(
                f,
                "== {phase}: attempt {attempt} failed: {error}{}",
                if *retrying { "; trying again" } else { "" }
            ),
        }
    }
}

/// Where events go.
pub type Events<'a> = &'a (dyn Fn(Event) + Send + Sync);

/// Runs `work`, which reports progress as messages on a channel (for work on a blocking
/// thread, whose callback must be `'static`: libvirt's), passing each message on as an
/// [`Event::Progress`] of `phase` as it comes.
pub(crate) async fn relaying<T, E, F>(
    phase: &'static str,
    events: Events<'_>,
    work: impl FnOnce(tokio::sync::mpsc::UnboundedSender<String>) -> F,
) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let work = work(tx);
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            Some(message) = rx.recv() => events(Event::Progress { phase, message }),
            result = &mut work => break result,
        }
    };
    while let Ok(message) = rx.try_recv() {
        events(Event::Progress { phase, message });
    }
    result
}

/// A phase of the pipeline. The later layers (platform, secrets, GitOps, registry) are phases
/// too: a new phase is a new implementation, never a change to this trait.
pub trait Phase: Send + Sync {
    /// The phase's name (`vms`, `cluster`, ...): what `--from/--only/--until` take and
    /// what `phases.<name>` in `homelab.toml` configures.
    fn name(&self) -> &'static str;

    /// What `apply` would change, from live state; changes nothing.
    fn plan<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, Result<PhasePlan, Error>>;

    /// Makes the changes (only those), reporting progress through `events`.
    fn apply<'a>(
        &'a self,
        lab: &'a Lab,
        events: Events<'a>,
    ) -> BoxFuture<'a, Result<PhaseReport, Error>>;

    /// The live state of what the phase made.
    fn status<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, PhaseStatus>;

    /// Every check of the phase, all run even when one fails.
    fn verify<'a>(&'a self, lab: &'a Lab) -> BoxFuture<'a, Vec<Check>>;

    /// What to do when `apply` failed with `error` (shown under the error).
    fn hint(&self, error: &Error) -> String {
        let _ = error;
        format!(
            "fix the cause above, then run `homelab up` again: phases already done report \
             unchanged, and `homelab up --from {}` starts here",
            self.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;

    #[test]
    fn status_and_checks_print_as_tables_that_name_what_failed() {
        let status = Status::of(vec![
            PhaseStatus {
                phase: "vms",
                items: vec![StatusItem {
                    name: "k8s-cp-1".into(),
                    state: "running".into(),
                    detail: "192.168.122.10".into(),
                    healthy: true,
                }],
                error: None,
            },
            PhaseStatus {
                phase: "cluster",
                items: vec![],
                error: Some("no kubeconfig".into()),
            },
        ]);
        assert_eq!(
            status.to_string(),
            "== vms\n  ok   k8s-cp-1             running    192.168.122.10\n\
             == cluster\n  unavailable: no kubeconfig\nNOT healthy\n"
        );
        let checks = [
            Check::pass("vms", "libvirt", "qemu:///system"),
            Check::fail("nodes", "ssh k8s-w-1", "refused", "start the VM"),
        ];
        let table = CheckTable(&checks).to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(
            lines[2].starts_with("nodes    ssh k8s-w-1") && lines[2].contains("FAIL   refused")
        );
        assert!(
            lines[3].trim_start().starts_with("fix: start the VM"),
            "{table}"
        );
        assert_eq!(lines[4], "2 checks, 1 failed");
    }
}
