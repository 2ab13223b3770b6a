//! Probes and dependencies in the Container reconciler, against the fake runtime, a scripted
//! probe runner and a real SQLite store.

use super::probe::{ProbeOutcome, ProbeRunner, ProbeTarget};
use super::tests::{cfg, harness, key, reason, H};
use super::ContainerReconciler;
use async_trait::async_trait;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tend_schema::kinds::container::{ContainerStatus, Probe};
use tend_schema::store::EventQuery;
use tend_schema::{ConditionStatus, Kind};

/// Answers each exec probe by its command's first word: success when set true; records calls.
#[derive(Default)]
struct Scripted {
    ok: Mutex<HashMap<String, bool>>,
    calls: Mutex<Vec<String>>,
}

impl Scripted {
    fn set(&self, name: &str, ok: bool) {
        self.ok.lock().unwrap().insert(name.into(), ok);
    }

    fn called(&self, name: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == name)
            .count()
    }
}

#[async_trait]
impl ProbeRunner for Scripted {
    async fn run(&self, _t: &ProbeTarget, p: &Probe) -> ProbeOutcome {
        let name = p.exec.as_ref().unwrap().command[0].clone();
        self.calls.lock().unwrap().push(name.clone());
        let ok = self.ok.lock().unwrap().get(&name).copied().unwrap_or(false);
        ProbeOutcome::new(ok, format!("{name} said {ok}"))
    }
}

async fn probed() -> (H, Arc<Scripted>) {
    let mut h = harness().await;
    let s = Arc::new(Scripted::default());
    h.r = ContainerReconciler::new(h.rt.clone(), None, h.att.clone(), cfg(), None)
        .with_probes(s.clone());
    (h, s)
}

fn probe(name: &str, failure_threshold: u32) -> serde_json::Value {
    json!({"exec": {"command": [name]}, "periodSeconds": 1, "failureThreshold": failure_threshold})
}

fn cond(s: &ContainerStatus, t: &str) -> (ConditionStatus, String) {
    let c = s.common.condition(t).unwrap();
    (c.status, c.reason.clone())
}

/// Reconciles `name` until `ok` holds for its status (the probe workers run on their own
/// timers; the test has no trigger, so it asks again), at most 5 s.
async fn until(h: &H, name: &str, ok: impl Fn(&ContainerStatus) -> bool) -> ContainerStatus {
    let t0 = Instant::now();
    loop {
        h.reconcile(name).await;
        let s = h.status(name).await;
        if ok(&s) {
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "gave up: {s:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn readiness_drives_ready_both_ways() {
    let (h, p) = probed().await;
    h.create(
        Kind::Container,
        "web",
        json!({"command": ["httpd"],
        "probes": {"readiness": probe("ready", 1)}}),
    )
    .await;
    h.reconcile("web").await;
    let s = h.status("web").await;
    assert_eq!(s.common.phase.as_deref(), Some("Running"));
    assert_eq!(
        cond(&s, "Started"),
        (ConditionStatus::True, "Started".into())
    );
    assert_eq!(cond(&s, "Ready").0, ConditionStatus::False);
    until(&h, "web", |s| reason(s) == "ProbeFailed").await;
    p.set("ready", true);
    until(&h, "web", |s| cond(s, "Ready").0 == ConditionStatus::True).await;
    p.set("ready", false);
    let s = until(&h, "web", |s| reason(s) == "ProbeFailed").await;
    let msg = &s.common.condition("Ready").unwrap().message;
    assert!(msg.contains("ready said false"), "{msg}");
    assert_eq!(h.rt.count("start"), 1, "readiness never restarts");
}

#[tokio::test]
async fn a_failed_liveness_probe_restarts_counts_and_says_why() {
    let (h, p) = probed().await;
    p.set("live", true);
    h.create(
        Kind::Container,
        "svc",
        json!({"command": ["svc"],
        "probes": {"liveness": probe("live", 2)}}),
    )
    .await;
    h.reconcile("svc").await;
    assert_eq!(reason(&h.status("svc").await), "Running");
    p.set("live", false);
    let s = until(&h, "svc", |s| s.restart_count == 1).await;
    assert_eq!(s.last_state.as_ref().unwrap().reason, "Unhealthy");
    assert_eq!(h.rt.count("start"), 2);
    assert_eq!(h.rt.count("stop"), 1);
    let events = h
        .ctx
        .store
        .list_events(&EventQuery {
            object: Some(key("svc")),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = events.iter().find(|e| e.reason == "Unhealthy").unwrap();
    assert_eq!(e.message, "liveness probe failed: live said false");
}

#[tokio::test]
async fn the_startup_probe_holds_liveness_and_readiness_off() {
    let (h, p) = probed().await;
    h.create(
        Kind::Container,
        "slow",
        json!({"command": ["slow"],
        "probes": {"startup": probe("startup", 30), "liveness": probe("live", 1),
                   "readiness": probe("ready", 1)}}),
    )
    .await;
    h.reconcile("slow").await;
    let s = h.status("slow").await;
    assert_eq!(
        cond(&s, "Started"),
        (ConditionStatus::False, "WaitingForProbe".into())
    );
    // Wait for two startup runs: neither of the others ran in between.
    let t0 = Instant::now();
    while p.called("startup") < 2 {
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((p.called("live"), p.called("ready")), (0, 0));
    p.set("live", true);
    p.set("ready", true);
    p.set("startup", true);
    let s = until(&h, "slow", |s| cond(s, "Ready").0 == ConditionStatus::True).await;
    assert_eq!(cond(&s, "Started").0, ConditionStatus::True);
    assert_eq!(s.restart_count, 0);
}

#[tokio::test]
async fn a_new_controller_resumes_ready_without_a_flip() {
    let (mut h, p) = probed().await;
    p.set("ready", true);
    h.create(
        Kind::Container,
        "db",
        json!({"command": ["db"],
        "probes": {"startup": probe("startup", 3), "readiness": probe("ready", 3)}}),
    )
    .await;
    p.set("startup", true);
    let before = until(&h, "db", |s| cond(s, "Ready").0 == ConditionStatus::True).await;
    let since = before
        .common
        .condition("Ready")
        .unwrap()
        .last_transition_time;
    // The daemon restarts: a new controller, and the probe now fails (fewer than 3 times yet).
    p.set("ready", false);
    p.set("startup", false);
    h.r = ContainerReconciler::new(h.rt.clone(), None, h.att.clone(), cfg(), None)
        .with_probes(p.clone());
    h.reconcile("db").await;
    let after = h.status("db").await;
    assert_eq!(cond(&after, "Ready").0, ConditionStatus::True);
    assert_eq!(cond(&after, "Started").0, ConditionStatus::True);
    assert_eq!(
        after
            .common
            .condition("Ready")
            .unwrap()
            .last_transition_time,
        since
    );
    assert_eq!(p.called("startup"), 1, "a resumed run is not started again");
    assert_eq!(h.rt.count("start"), 1);
}

#[tokio::test]
async fn a_dependent_waits_for_its_dependency_to_be_ready_and_running() {
    let (h, p) = probed().await;
    h.create(
        Kind::Container,
        "web",
        json!({"command": ["web"],
        "dependsOn": [{"container": "db", "condition": "Ready"}]}),
    )
    .await;
    h.reconcile("web").await;
    let s = h.status("web").await;
    assert_eq!(reason(&s), "WaitingForDependency");
    assert!(s
        .common
        .condition("Ready")
        .unwrap()
        .message
        .contains("\"db\" does not exist"));
    let db = h
        .create(
            Kind::Container,
            "db",
            json!({"command": ["db"],
            "probes": {"readiness": probe("ready", 1)}}),
        )
        .await;
    h.reconcile("db").await;
    h.reconcile("web").await;
    let s = h.status("web").await;
    assert_eq!(reason(&s), "WaitingForDependency");
    assert!(s
        .common
        .condition("Ready")
        .unwrap()
        .message
        .contains("\"db\" is not Ready"));
    assert_eq!(h.rt.count("start"), 1, "only db started");
    p.set("ready", true);
    until(&h, "db", |s| cond(s, "Ready").0 == ConditionStatus::True).await;
    h.reconcile("web").await;
    assert_eq!(reason(&h.status("web").await), "Running");
    // Everything dies (a host reboot): db's stored Ready=True is stale until db is
    // reconciled, and web waits again.
    let uid = |o: &tend_schema::AnyObject| o.metadata.uid.clone().unwrap();
    let web = h.ctx.store.get(&key("web")).await.unwrap();
    h.rt.exit(&uid(&db), 137, false, Duration::from_secs(60));
    h.rt.exit(&uid(&web), 137, false, Duration::from_secs(60));
    h.reconcile("web").await;
    let s = h.status("web").await;
    assert_eq!(reason(&s), "WaitingForDependency", "{s:#?}");
    h.reconcile("db").await;
    until(&h, "db", |s| cond(s, "Ready").0 == ConditionStatus::True).await;
    h.reconcile("web").await;
    assert_eq!(reason(&h.status("web").await), "Running");
}

#[tokio::test]
async fn the_crash_loop_backoff_survives_a_new_controller() {
    let mut h = harness().await;
    let c = h
        .create(Kind::Container, "crash", json!({"command": ["false"]}))
        .await;
    let uid = c.metadata.uid.clone().unwrap();
    h.reconcile("crash").await;
    for _ in 0..2 {
        h.rt.exit(&uid, 1, false, Duration::ZERO);
        h.reconcile("crash").await;
    }
    assert_eq!(reason(&h.status("crash").await), "CrashLoopBackOff");
    let crashes = h.status("crash").await.crash_loop.unwrap().crashes;
    assert_eq!(crashes, 2, "{:?}", h.rt.calls());
    // The daemon restarts: the loop goes on from the store, not from an immediate restart.
    h.r = ContainerReconciler::new(h.rt.clone(), None, h.att.clone(), cfg(), None);
    let a = h.reconcile("crash").await;
    assert_eq!(reason(&h.status("crash").await), "CrashLoopBackOff");
    assert!(a.requeue_after().is_some());
    assert_eq!(h.status("crash").await.crash_loop.unwrap().crashes, 2);
}
