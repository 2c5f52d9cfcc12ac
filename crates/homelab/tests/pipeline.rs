//! The pipeline with phases that record what is asked of them: order, `--from/--only/--until`,
//! a phase failing midway and the re-run continuing, time limits and retries from the
//! configuration.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use homelab::{
    Check, Error, Event, Events, Lab, Phase, PhasePlan, PhaseReport, PhaseStatus, Pipeline,
    Selection, Settings, StatusItem,
};
use homelab_config::Config;

/// What the recording phases were asked, in order: `"<phase> <verb>"`.
type Log = Arc<Mutex<Vec<String>>>;

/// A phase that records its calls and keeps state like a real one: its first apply changes
/// one thing, later ones change nothing. It fails its first `fail_times` applies, and each
/// apply takes `takes` (on the test's clock).
struct Recording {
    name: &'static str,
    log: Log,
    fail_times: Mutex<u32>,
    takes: Duration,
    done: Mutex<bool>,
}

impl Recording {
    fn new(name: &'static str, log: &Log) -> Self {
        Self {
            name,
            log: log.clone(),
            fail_times: Mutex::new(0),
            takes: Duration::ZERO,
            done: Mutex::new(false),
        }
    }

    fn failing(mut self, times: u32) -> Self {
        self.fail_times = Mutex::new(times);
        self
    }

    fn taking(mut self, takes: Duration) -> Self {
        self.takes = takes;
        self
    }

    fn record(&self, verb: &str) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} {verb}", self.name));
    }
}

impl Phase for Recording {
    fn name(&self) -> &'static str {
        self.name
    }

    fn plan<'a>(&'a self, _lab: &'a Lab) -> BoxFuture<'a, Result<PhasePlan, Error>> {
        async move {
            self.record("plan");
            let done = *self.done.lock().unwrap();
            Ok(PhasePlan {
                phase: self.name,
                changes: if done {
                    Vec::new()
                } else {
                    vec![homelab::Change {
                        action: "create".into(),
                        object: format!("{} thing", self.name),
                        detail: None,
                    }]
                },
                unchanged: usize::from(done),
                pending: None,
            })
        }
        .boxed()
    }

    fn apply<'a>(
        &'a self,
        _lab: &'a Lab,
        events: Events<'a>,
    ) -> BoxFuture<'a, Result<PhaseReport, Error>> {
        async move {
            self.record("apply");
            tokio::time::sleep(self.takes).await;
            {
                let mut fail = self.fail_times.lock().unwrap();
                if *fail > 0 {
                    *fail -= 1;
                    return Err(Error::Selection(format!("{} broke", self.name)));
                }
            }
            events(Event::Progress {
                phase: self.name,
                message: "working".into(),
            });
            let mut done = self.done.lock().unwrap();
            let changed = usize::from(!*done);
            *done = true;
            Ok(PhaseReport {
                phase: self.name,
                changed,
                unchanged: 1 - changed,
            })
        }
        .boxed()
    }

    fn status<'a>(&'a self, _lab: &'a Lab) -> BoxFuture<'a, PhaseStatus> {
        async move {
            self.record("status");
            PhaseStatus {
                phase: self.name,
                items: vec![StatusItem {
                    name: self.name.into(),
                    state: "fine".into(),
                    detail: String::new(),
                    healthy: *self.done.lock().unwrap(),
                }],
                error: None,
            }
        }
        .boxed()
    }

    fn verify<'a>(&'a self, _lab: &'a Lab) -> BoxFuture<'a, Vec<Check>> {
        async move {
            self.record("verify");
            vec![if *self.done.lock().unwrap() {
                Check::pass(self.name, "made", "yes")
            } else {
                Check::fail(self.name, "made", "no", "run up")
            }]
        }
        .boxed()
    }
}

fn three(log: &Log) -> Pipeline {
    Pipeline::new(vec![
        Box::new(Recording::new("vms", log)),
        Box::new(Recording::new("cluster", log)),
        Box::new(Recording::new("platform", log)),
    ])
}

fn lab() -> Lab {
    Lab::new(Config::default())
}

fn sel(from: Option<&str>, only: Option<&str>, until: Option<&str>) -> Selection {
    Selection {
        from: from.map(Into::into),
        only: only.map(Into::into),
        until: until.map(Into::into),
    }
}

fn taken(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[tokio::test(start_paused = true)]
async fn phases_run_in_order_and_a_rerun_changes_nothing() {
    let log = Log::default();
    let pipeline = three(&log);
    let lab = lab();
    let events = Mutex::new(Vec::new());
    let record = |e: Event| events.lock().unwrap().push(e.to_string());
    let reports = pipeline.up(&lab, &Selection::all(), &record).await.unwrap();
    assert_eq!(
        taken(&log),
        ["vms apply", "cluster apply", "platform apply"]
    );
    assert!(reports.iter().all(|r| r.changed == 1));
    let events = events.into_inner().unwrap();
    assert_eq!(events[0], "== vms");
    assert_eq!(events[1], "[vms] working");
    assert!(events[2].starts_with("== vms: done in"), "{events:?}");
    let again = pipeline.up(&lab, &Selection::all(), &|_| {}).await.unwrap();
    assert!(again.iter().all(|r| r.changed == 0 && r.unchanged == 1));
    let plans = pipeline.plan(&lab, &Selection::all()).await.unwrap();
    assert!(plans.iter().all(PhasePlan::is_noop));
}

#[tokio::test(start_paused = true)]
async fn from_only_and_until_pick_the_phases() {
    let log = Log::default();
    let pipeline = three(&log);
    let lab = lab();
    for (selection, ran) in [
        (
            sel(Some("cluster"), None, None),
            vec!["cluster", "platform"],
        ),
        (sel(None, Some("cluster"), None), vec!["cluster"]),
        (sel(None, None, Some("cluster")), vec!["vms", "cluster"]),
        (sel(Some("cluster"), None, Some("cluster")), vec!["cluster"]),
        (
            sel(Some("vms"), None, Some("platform")),
            vec!["vms", "cluster", "platform"],
        ),
    ] {
        pipeline.up(&lab, &selection, &|_| {}).await.unwrap();
        let want: Vec<String> = ran.iter().map(|p| format!("{p} apply")).collect();
        assert_eq!(taken(&log), want, "{selection:?}");
    }
    let err = pipeline
        .up(&lab, &sel(Some("platform"), None, Some("vms")), &|_| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("--from platform comes after --until vms"),
        "{err}"
    );
    let err = pipeline
        .select(&sel(None, Some("platfrom"), None))
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "no phase named `platfrom`; the phases are, in order: vms, cluster, platform"
    );
    assert!(
        pipeline
            .select(&sel(Some("vms"), Some("vms"), None))
            .is_err()
    );
    assert!(taken(&log).is_empty(), "nothing ran for a wrong selection");
}

#[tokio::test(start_paused = true)]
async fn a_failed_phase_stops_the_run_and_the_rerun_continues() {
    let log = Log::default();
    let pipeline = Pipeline::new(vec![
        Box::new(Recording::new("vms", &log)),
        Box::new(Recording::new("cluster", &log).failing(1)),
        Box::new(Recording::new("platform", &log)),
    ])
    .with_settings(|_, _| Settings {
        timeout: Duration::from_secs(60),
        retries: 0,
        backoff: Duration::from_secs(1),
    });
    let lab = lab();
    let err = pipeline
        .up(&lab, &Selection::all(), &|_| {})
        .await
        .unwrap_err();
    assert_eq!(err.failed, "cluster");
    assert_eq!(err.done, ["vms"]);
    let text = err.to_string();
    assert!(
        text.starts_with("phase cluster failed: cluster broke"),
        "{text}"
    );
    assert!(text.contains("done: vms"), "{text}");
    assert!(text.contains("`homelab up --from cluster`"), "{text}");
    assert_eq!(taken(&log), ["vms apply", "cluster apply"]);
    // The re-run: vms has nothing left to do, cluster now works, platform follows.
    let reports = pipeline.up(&lab, &Selection::all(), &|_| {}).await.unwrap();
    assert_eq!(
        taken(&log),
        ["vms apply", "cluster apply", "platform apply"]
    );
    let changed: Vec<(&str, usize)> = reports.iter().map(|r| (r.phase, r.changed)).collect();
    assert_eq!(changed, [("vms", 0), ("cluster", 1), ("platform", 1)]);
}

#[tokio::test(start_paused = true)]
async fn retries_and_time_limits_come_from_the_configuration() {
    let log = Log::default();
    let mut config = Config::default();
    config.phases.vms.retries = 2;
    config.phases.vms.timeout = homelab_config::HumanDuration(Duration::from_secs(90));
    config.phases.cluster.retries = 0;
    config.phases.cluster.timeout = homelab_config::HumanDuration(Duration::from_secs(30));
    let lab = Lab::new(config);
    // vms fails twice, then works on its third attempt (retries = 2).
    let pipeline = Pipeline::new(vec![
        Box::new(Recording::new("vms", &log).failing(2)),
        Box::new(Recording::new("cluster", &log).taking(Duration::from_secs(31))),
    ]);
    let events = Mutex::new(Vec::new());
    let record = |e: Event| events.lock().unwrap().push(e.to_string());
    let started = tokio::time::Instant::now();
    let err = pipeline
        .up(&lab, &Selection::all(), &record)
        .await
        .unwrap_err();
    assert_eq!(
        taken(&log),
        ["vms apply", "vms apply", "vms apply", "cluster apply"]
    );
    // cluster takes 31 s and may take 30 (phases.cluster.timeout), with no retry.
    assert_eq!(err.failed, "cluster");
    assert_eq!(err.attempts, 1);
    assert_eq!(
        err.source.to_string(),
        "phase cluster did not finish within 30s (phases.cluster.timeout)"
    );
    let events = events.into_inner().unwrap();
    assert!(
        events.contains(&"== vms (attempt 3 of 3)".to_owned()),
        "{events:?}"
    );
    assert!(
        events.contains(&"== vms: attempt 1 failed: vms broke; trying again".to_owned()),
        "{events:?}"
    );
    // Backoff 5 s then 10 s between the vms attempts, then cluster's 30 s limit.
    assert_eq!(started.elapsed(), Duration::from_secs(45));
    // The default settings are the file's.
    assert_eq!(
        Settings::of(&lab, "vms"),
        Settings {
            timeout: Duration::from_secs(90),
            retries: 2,
            backoff: Duration::from_secs(5),
        }
    );
}

#[tokio::test(start_paused = true)]
async fn status_and_verify_ask_every_phase_and_verify_never_stops_early() {
    let log = Log::default();
    let pipeline = three(&log);
    let lab = lab();
    let status = homelab::Status::of(pipeline.status(&lab).await);
    assert!(!status.healthy);
    let checks = pipeline.verify(&lab).await;
    assert_eq!(
        checks.len(),
        3,
        "every phase's checks, though the first failed"
    );
    assert!(checks.iter().all(|c| !c.passed && c.fix.is_some()));
    let mut asked = taken(&log);
    asked.sort();
    assert_eq!(
        asked,
        [
            "cluster status",
            "cluster verify",
            "platform status",
            "platform verify",
            "vms status",
            "vms verify",
        ]
    );
    pipeline.up(&lab, &Selection::all(), &|_| {}).await.unwrap();
    assert!(homelab::Status::of(pipeline.status(&lab).await).healthy);
    assert!(pipeline.verify(&lab).await.iter().all(|c| c.passed));
}

#[test]
fn the_home_lab_pipeline_has_the_layers_in_dependency_order() {
    let lab = lab();
    assert_eq!(Pipeline::for_lab(&lab).names(), ["vms", "nodes", "cluster"]);
    let mut existing = Config::default();
    existing.cluster.provider = homelab_config::ClusterProvider::Existing;
    assert_eq!(Pipeline::for_lab(&Lab::new(existing)).names(), ["cluster"]);
}
