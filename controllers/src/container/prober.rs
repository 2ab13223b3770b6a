//! Runs the probes of every probed workload: one tokio task per running workload that declares
//! probes, sleeping on tokio's timer wheel between runs — no thread per probe. Each task keeps
//! the run's [`Health`] and wakes the Container's key when a verdict changes; the reconcile
//! reads the health, writes the conditions and acts (a liveness failure restarts).
//!
//! # Guarantees
//! - The startup probe runs alone; liveness and readiness start only once it has passed.
//! - A run resumed after a daemon restart starts from the verdicts its status recorded
//!   (Started, Ready): a Ready container stays Ready unless `failureThreshold` readiness
//!   failures in a row say otherwise; initial delays are not waited again.
//! - A worker belongs to one run (generation, pid, start time): a new run gets a new worker.

use super::driver::Running;
use super::probe::{Counter, Health, ProbeRunner, ProbeTarget, Verdict};
use crate::runtime::Trigger;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tend_schema::kinds::container::{ContainerStatus, Probe, Probes};
use tend_schema::ConditionStatus;
use tokio::time::Instant;

/// Identity of one run of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunId {
    pub generation: i64,
    pub pid: u32,
    pub start_time: u64,
}

/// Where a run's probing starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seed {
    /// A run this daemon just started.
    Fresh,
    /// A run found running (daemon restart): the verdicts its status recorded.
    Resumed { started: bool, ready: bool },
}

impl Seed {
    /// The seed for `r` found running: the recorded verdicts when the status describes this
    /// very run (same pid and start), else a fresh start.
    pub fn resumed_from(st: &ContainerStatus, r: &Running) -> Self {
        if st.pid != Some(r.pid) || st.started_at != r.started_at {
            return Self::Fresh;
        }
        let is_true = |t: &str| {
            st.common
                .condition(t)
                .is_some_and(|c| c.status == ConditionStatus::True)
        };
        Self::Resumed {
            started: is_true("Started"),
            ready: is_true("Ready"),
        }
    }
}

struct Worker {
    run: RunId,
    health: Arc<Mutex<Health>>,
    task: tokio::task::AbortHandle,
}

/// The probe workers of one Container controller.
pub(crate) struct Prober {
    runner: Option<Arc<dyn ProbeRunner>>,
    trigger: Option<Trigger>,
    workers: Mutex<HashMap<String, Worker>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Prober {
    pub fn new(runner: Option<Arc<dyn ProbeRunner>>, trigger: Option<Trigger>) -> Self {
        Self {
            runner,
            trigger,
            workers: Mutex::default(),
        }
    }

    /// The health of `run` of the workload `target`, starting its worker when it has none.
    pub fn health(&self, target: ProbeTarget, run: RunId, probes: &Probes, seed: Seed) -> Health {
        let mut h = Health::fresh(probes.startup.is_some(), probes.readiness.is_some());
        if let Seed::Resumed { started, ready } = seed {
            h.started = h.started || started;
            if ready && h.started {
                h.ready = Verdict::Success;
            }
        }
        if probes.is_empty() {
            self.forget(&target.uid);
            return h;
        }
        let Some(runner) = self.runner.clone() else {
            h.readiness_output = "this daemon runs no probes".into();
            return h;
        };
        let mut workers = lock(&self.workers);
        if let Some(w) = workers.get(&target.uid) {
            if w.run == run {
                return lock(&w.health).clone();
            }
            w.task.abort();
        }
        let uid = target.uid.clone();
        let health = Arc::new(Mutex::new(h.clone()));
        let trigger = self.trigger.clone();
        let wake = move |uid: &str| {
            if let Some(t) = &trigger {
                t.uid(uid);
            }
        };
        let resumed = matches!(seed, Seed::Resumed { .. });
        let task = tokio::spawn(work(
            runner,
            target,
            probes.clone(),
            health.clone(),
            resumed,
            wake,
        ))
        .abort_handle();
        workers.insert(uid, Worker { run, health, task });
        h
    }

    /// Stops probing `uid` (its run ended, or it is being deleted).
    pub fn forget(&self, uid: &str) {
        if let Some(w) = lock(&self.workers).remove(uid) {
            w.task.abort();
        }
    }
}

impl Drop for Prober {
    /// A dropped prober (its controller stopped) leaves no worker probing on.
    fn drop(&mut self) {
        for (_, w) in lock(&self.workers).drain() {
            w.task.abort();
        }
    }
}

/// One run's probing, until its liveness or startup probe fails for good or it is aborted.
async fn work(
    runner: Arc<dyn ProbeRunner>,
    target: ProbeTarget,
    probes: Probes,
    health: Arc<Mutex<Health>>,
    resumed: bool,
    wake: impl Fn(&str) + Send + Sync,
) {
    let uid = target.uid.clone();
    let started = lock(&health).started;
    if let (false, Some(p)) = (started, &probes.startup) {
        tokio::time::sleep(p.initial_delay()).await;
        let mut c = Counter::new(Verdict::Unknown);
        loop {
            let out = runner.run(&target, p).await;
            if c.record(out.success, 1, p.failure_threshold()) {
                let mut h = lock(&health);
                match c.verdict {
                    Verdict::Success => h.started = true,
                    _ => h.unhealthy = Some(format!("startup probe failed: {}", out.output)),
                }
                drop(h);
                wake(&uid);
                if c.verdict != Verdict::Success {
                    return;
                }
                break;
            }
            tokio::time::sleep(p.period()).await;
        }
    }
    let now = Instant::now();
    let first = |p: &Probe| match resumed {
        true => now,
        false => now + p.initial_delay(),
    };
    let mut live = probes
        .liveness
        .as_ref()
        .map(|p| Timed::new(p, first(p), Verdict::Success));
    let seeded = lock(&health).ready;
    let mut ready = probes
        .readiness
        .as_ref()
        .map(|p| Timed::new(p, first(p), seeded));
    loop {
        let next = [live.as_ref(), ready.as_ref()]
            .into_iter()
            .flatten()
            .map(|t| t.due)
            .min();
        let Some(next) = next else { return };
        tokio::time::sleep_until(next).await;
        if let Some(t) = live.as_mut().filter(|t| t.due <= Instant::now()) {
            let out = runner.run(&target, t.probe).await;
            if t.record(out.success) && t.counter.verdict == Verdict::Failure {
                lock(&health).unhealthy = Some(format!("liveness probe failed: {}", out.output));
                wake(&uid);
                return;
            }
        }
        if let Some(t) = ready.as_mut().filter(|t| t.due <= Instant::now()) {
            let out = runner.run(&target, t.probe).await;
            let changed = t.record(out.success);
            {
                let mut h = lock(&health);
                h.ready = t.counter.verdict;
                h.readiness_output = out.output;
            }
            if changed {
                wake(&uid);
            }
        }
    }
}

/// A periodic probe with its counter and next due time.
struct Timed<'a> {
    probe: &'a Probe,
    due: Instant,
    counter: Counter,
}

impl<'a> Timed<'a> {
    fn new(probe: &'a Probe, due: Instant, verdict: Verdict) -> Self {
        Self {
            probe,
            due,
            counter: Counter::new(verdict),
        }
    }

    /// Records a result and schedules the next run one period on (from now when it overran).
    fn record(&mut self, success: bool) -> bool {
        let period = self.probe.period().max(Duration::from_millis(1));
        self.due = (self.due + period).max(Instant::now());
        self.counter.record(
            success,
            self.probe.success_threshold(),
            self.probe.failure_threshold(),
        )
    }
}
