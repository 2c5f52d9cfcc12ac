//! The phase pipeline: the phases in dependency order, run with the time limit and retries
//! `phases.<name>` gives each, resumable from any phase.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::Error;
use crate::lab::Lab;
use crate::phase::{Check, Event, Events, Phase, PhasePlan, PhaseReport, PhaseStatus};

/// Which phases to run: `--from`, `--only`, `--until`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Start at this phase (the earlier ones are taken as done).
    pub from: Option<String>,
    /// Run only this phase.
    pub only: Option<String>,
    /// Stop after this phase.
    pub until: Option<String>,
}

impl Selection {
    /// Every phase.
    pub fn all() -> Self {
        Self::default()
    }
}

/// A phase's time limit and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Time allowed for one attempt.
    pub timeout: Duration,
    /// Further attempts after a failed one.
    pub retries: u32,
    /// Wait before the first retry (doubled for each further one).
    pub backoff: Duration,
}

impl Settings {
    /// The settings `phases.<name>` in `homelab.toml` gives the phase `name` (the platform's
    /// for a phase the file has no section for).
    pub fn of(lab: &Lab, name: &str) -> Self {
        let p = &lab.config.phases;
        let s = match name {
            "vms" => &p.vms,
            "nodes" => &p.nodes,
            "cluster" => &p.cluster,
            "secrets" => &p.secrets,
            "gitops" => &p.gitops,
            _ => &p.platform,
        };
        Self {
            timeout: s.timeout.0,
            retries: s.retries,
            backoff: Duration::from_secs(5),
        }
    }
}

/// `up` stopped at a phase.
#[derive(Debug, thiserror::Error)]
pub struct UpError {
    /// The phases that finished, in order.
    pub done: Vec<&'static str>,
    /// The phase that failed.
    pub failed: &'static str,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    #[source]
    pub source: Error,
    /// What to do.
    pub hint: String,
}

impl fmt::Display for UpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "phase {} failed{}: {}\n  done: {}\n  next: {}",
            self.failed,
            if self.attempts > 1 {
                format!(" after {} attempts", self.attempts)
            } else {
                String::new()
            },
            self.source,
            if self.done.is_empty() {
                "no phase".to_owned()
            } else {
                self.done.join(", ")
            },
            self.hint
        )
    }
}

/// Where a pipeline takes each phase's settings from.
type SettingsOf = Box<dyn Fn(&Lab, &str) -> Settings + Send + Sync>;

/// The phases, in dependency order.
pub struct Pipeline {
    phases: Vec<Box<dyn Phase>>,
    settings: SettingsOf,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("phases", &self.names())
            .finish_non_exhaustive()
    }
}

/// One row of `verify`'s table: every check of every phase.
pub type Checks = Vec<Check>;

impl Pipeline {
    /// A pipeline of `phases`, in the order given, with the settings of `homelab.toml`.
    pub fn new(phases: Vec<Box<dyn Phase>>) -> Self {
        Self {
            phases,
            settings: Box::new(Settings::of),
        }
    }

    /// The home lab's pipeline for `lab`: the VMs and the cluster (for
    /// `cluster.provider = "libvirt"`), or the existing cluster alone; then the secrets from
    /// Pulumi ESC with `[esc]`; then the platform when `[gitops] repo_url` names the
    /// repository Argo CD deploys it from.
    pub fn for_lab(lab: &Lab) -> Self {
        let mut phases: Vec<Box<dyn Phase>> = match lab.config.cluster.provider {
            homelab_config::ClusterProvider::Libvirt => vec![
                Box::new(crate::vms::VmsPhase),
                Box::new(crate::nodes::NodesPhase),
                Box::new(crate::cluster::ClusterPhase),
            ],
            homelab_config::ClusterProvider::Existing => {
                vec![Box::new(crate::cluster::ExistingCluster)]
            }
            homelab_config::ClusterProvider::Kind => vec![Box::new(crate::kind::KindPhase)],
        };
        if crate::secrets::wanted(lab) {
            phases.push(Box::new(crate::secrets::SecretsPhase));
        }
        if crate::platform::wanted(lab) {
            phases.push(Box::new(crate::platform::PlatformPhase));
        }
        Self::new(phases)
    }

    /// The same pipeline with other settings (tests; callers with their own limits).
    #[must_use]
    pub fn with_settings(
        mut self,
        settings: impl Fn(&Lab, &str) -> Settings + Send + Sync + 'static,
    ) -> Self {
        self.settings = Box::new(settings);
        self
    }

    /// The phases' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.phases.iter().map(|p| p.name()).collect()
    }

    fn index(&self, name: &str) -> Result<usize, Error> {
        self.phases
            .iter()
            .position(|p| p.name() == name)
            .ok_or_else(|| Error::UnknownPhase {
                name: name.to_owned(),
                known: self.names(),
            })
    }

    /// The phases `selection` picks, in order.
    ///
    /// # Errors
    /// A name is not a phase, `--only` is combined with `--from`/`--until`, or `--from`
    /// comes after `--until`.
    pub fn select(&self, selection: &Selection) -> Result<Vec<&dyn Phase>, Error> {
        let (first, last) = if let Some(only) = &selection.only {
            if selection.from.is_some() || selection.until.is_some() {
                return Err(Error::Selection(
                    "--only runs one phase: it cannot be combined with --from or --until".into(),
                ));
            }
            let i = self.index(only)?;
            (i, i)
        } else {
            let first = selection.from.as_deref().map_or(Ok(0), |n| self.index(n))?;
            let last = selection
                .until
                .as_deref()
                .map_or(Ok(self.phases.len().saturating_sub(1)), |n| self.index(n))?;
            if first > last {
                return Err(Error::Selection(format!(
                    "--from {} comes after --until {}: the phases run in the order {}",
                    self.phases[first].name(),
                    self.phases[last].name(),
                    self.names().join(", ")
                )));
            }
            (first, last)
        };
        Ok(self.phases[first..=last]
            .iter()
            .map(AsRef::as_ref)
            .collect())
    }

    /// Every selected phase's plan, in order.
    ///
    /// # Errors
    /// The selection is wrong, or a phase cannot read its live state.
    pub async fn plan(&self, lab: &Lab, selection: &Selection) -> Result<Vec<PhasePlan>, Error> {
        let mut plans = Vec::new();
        for phase in self.select(selection)? {
            plans.push(phase.plan(lab).await?);
        }
        Ok(plans)
    }

    /// Applies the selected phases in order; each attempt has the phase's time limit, and a
    /// failed attempt is retried as its settings allow. Stops at the first phase that fails
    /// for good.
    ///
    /// # Errors
    /// The selection is wrong ([`UpError::failed`] is then the first phase), or a phase
    /// failed: the error says which, what was done before it, and what to do.
    pub async fn up(
        &self,
        lab: &Lab,
        selection: &Selection,
        events: Events<'_>,
    ) -> Result<Vec<PhaseReport>, UpError> {
        let phases = self.select(selection).map_err(|source| UpError {
            done: Vec::new(),
            failed: self.phases.first().map_or("", |p| p.name()),
            attempts: 0,
            hint: "pick phases among those listed above".into(),
            source,
        })?;
        let mut reports = Vec::new();
        for phase in phases {
            let name = phase.name();
            let settings = (self.settings)(lab, name);
            let attempts = settings.retries + 1;
            let mut attempt = 1;
            let report = loop {
                events(Event::Started {
                    phase: name,
                    attempt,
                    attempts,
                });
                let started = Instant::now();
                let result =
                    match tokio::time::timeout(settings.timeout, phase.apply(lab, events)).await {
                        Ok(result) => result,
                        Err(_) => Err(Error::Timeout {
                            phase: name,
                            after: settings.timeout,
                        }),
                    };
                match result {
                    Ok(report) => {
                        events(Event::Finished {
                            phase: name,
                            changed: report.changed,
                            unchanged: report.unchanged,
                            elapsed: started.elapsed(),
                        });
                        break report;
                    }
                    Err(error) => {
                        let retrying = attempt < attempts;
                        events(Event::Failed {
                            phase: name,
                            attempt,
                            error: error.to_string(),
                            retrying,
                        });
                        if !retrying {
                            return Err(UpError {
                                done: reports.iter().map(|r: &PhaseReport| r.phase).collect(),
                                failed: name,
                                attempts: attempt,
                                hint: phase.hint(&error),
                                source: error,
                            });
                        }
                        tokio::time::sleep(settings.backoff * 2u32.pow(attempt - 1)).await;
                        attempt += 1;
                    }
                }
            };
            reports.push(report);
        }
        Ok(reports)
    }

    /// Every phase's live state, read concurrently.
    pub async fn status(&self, lab: &Lab) -> Vec<PhaseStatus> {
        futures::future::join_all(self.phases.iter().map(|p| p.status(lab))).await
    }

    /// Every check of every phase (none stops the others), in phase order.
    pub async fn verify(&self, lab: &Lab) -> Checks {
        futures::future::join_all(self.phases.iter().map(|p| p.verify(lab)))
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The whole state at once, as `homelab status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Each phase's state.
    pub phases: Vec<PhaseStatus>,
    /// Whether everything is healthy.
    pub healthy: bool,
}

/// The table `homelab status` prints: each phase, its items with `ok` or `FAIL`, then
/// `healthy` or `NOT healthy`.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for phase in &self.phases {
            writeln!(f, "== {}", phase.phase)?;
            if let Some(error) = &phase.error {
                writeln!(f, "  unavailable: {error}")?;
            }
            for item in &phase.items {
                writeln!(
                    f,
                    "  {} {:<20} {:<10} {}",
                    if item.healthy { "ok  " } else { "FAIL" },
                    item.name,
                    item.state,
                    item.detail
                )?;
            }
        }
        writeln!(
            f,
            "{}",
            if self.healthy {
                "healthy"
            } else {
                "NOT healthy"
            }
        )
    }
}

impl Status {
    /// Collects the phases' states.
    pub fn of(phases: Vec<PhaseStatus>) -> Self {
        let healthy = phases.iter().all(PhaseStatus::healthy);
        Self { phases, healthy }
    }
}
