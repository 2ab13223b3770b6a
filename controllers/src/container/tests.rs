//! The Container reconciler against the recording fake runtime and a real SQLite store.

use super::fake::{FakeAttachments, FakeRuntime};
use super::*;
use crate::context::Context;
use crate::controller::{ControllerConfig, Reconciler};
use crate::index::Index;
use crate::metrics::ControllerMetrics;
use crate::runtime::{Runtime as CtlRuntime, RuntimeConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tend_schema::kinds::container::{ContainerStatus, UserNamespaceStatus};
use tend_schema::store::{DeleteOptions, OpenOptions, SqliteStore, Store};
use tend_schema::{AnyObject, Kind, ObjectKey};

pub(super) struct H {
    pub ctx: Context,
    pub rt: Arc<FakeRuntime>,
    pub att: Arc<FakeAttachments>,
    pub r: ContainerReconciler,
    pub _dir: tempfile::TempDir,
}

pub(super) fn cfg() -> ContainerConfig {
    ContainerConfig {
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        backoff_reset: Duration::from_secs(10),
        ..ContainerConfig::default()
    }
}

pub(super) async fn harness() -> H {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("t.db"), OpenOptions::default())
            .await
            .unwrap(),
    );
    let ctx = Context {
        store,
        index: Arc::new(Index::new()),
        metrics: Arc::new(ControllerMetrics::default()),
    };
    let rt = FakeRuntime::new();
    let att = Arc::new(FakeAttachments::default());
    let r = ContainerReconciler::new(rt.clone(), None, att.clone(), cfg(), None);
    H {
        ctx,
        rt,
        att,
        r,
        _dir: dir,
    }
}

impl H {
    pub async fn create(&self, kind: Kind, name: &str, spec: serde_json::Value) -> AnyObject {
        let o = self
            .ctx
            .store
            .create(AnyObject::new(kind, "default", name, spec))
            .await
            .unwrap();
        self.ctx.index.upsert(&o);
        o
    }

    pub async fn reconcile(&self, name: &str) -> crate::Action {
        self.r
            .reconcile(&self.ctx, &key(name))
            .await
            .expect("reconcile")
    }

    pub async fn status(&self, name: &str) -> ContainerStatus {
        let o = self.ctx.store.get(&key(name)).await.unwrap();
        serde_json::from_value(o.status).unwrap()
    }
}

pub(super) fn key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Container, "default", name)
}

pub(super) fn reason(s: &ContainerStatus) -> String {
    s.common.condition("Ready").unwrap().reason.clone()
}

#[test]
fn backoff_is_immediate_then_doubles_up_to_the_cap() {
    let (b, m) = (Duration::from_secs(1), Duration::from_secs(300));
    let d: Vec<u64> = (1..=12).map(|n| restart_delay(n, b, m).as_secs()).collect();
    assert_eq!(d, [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    assert_eq!(restart_delay(u32::MAX, b, m), m);
}

#[tokio::test]
async fn starts_reports_running_and_restarts_a_long_run_at_once() {
    let h = harness().await;
    let c = h
        .create(Kind::Container, "web", json!({"command": ["sleep", "1"]}))
        .await;
    let uid = c.metadata.uid.clone().unwrap();
    h.reconcile("web").await;
    let s = h.status("web").await;
    assert_eq!(s.common.phase.as_deref(), Some("Running"));
    assert_eq!(s.pid, Some(1001));
    assert_eq!(reason(&s), "Running");
    h.reconcile("web").await;
    assert_eq!(
        h.rt.count("start"),
        1,
        "a running workload is never started twice"
    );
    h.rt.exit(&uid, 1, false, Duration::from_secs(60));
    assert_eq!(h.reconcile("web").await.requeue_after(), None);
    let s = h.status("web").await;
    assert_eq!((s.restart_count, s.pid), (1, Some(1002)));
    assert_eq!(s.last_state.unwrap().exit_code, Some(1));
    assert_eq!(h.att.calls.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn crash_loop_backs_off_with_growing_delays() {
    let h = harness().await;
    let c = h
        .create(Kind::Container, "crash", json!({"command": ["false"]}))
        .await;
    let uid = c.metadata.uid.clone().unwrap();
    h.reconcile("crash").await;
    h.rt.exit(&uid, 1, false, Duration::ZERO);
    h.reconcile("crash").await;
    assert_eq!(h.rt.count("start"), 2, "the first restart is immediate");
    let mut waits = Vec::new();
    for round in 0..3 {
        h.rt.exit(&uid, 1, false, Duration::ZERO);
        let a = h.reconcile("crash").await;
        let s = h.status("crash").await;
        assert_eq!(reason(&s), "CrashLoopBackOff", "round {round}");
        assert_eq!(s.pid, None);
        let wait = a.requeue_after().expect("requeued for the backoff");
        waits.push(wait);
        tokio::time::sleep(wait).await;
        h.reconcile("crash").await;
        assert_eq!(h.status("crash").await.restart_count, round + 2);
    }
    assert!(waits[0] <= Duration::from_millis(100), "{waits:?}");
    assert!(waits[1] > Duration::from_millis(150), "{waits:?}");
    assert!(waits[2] > Duration::from_millis(350), "{waits:?}");
}

#[tokio::test]
async fn never_and_on_failure_finish_with_the_exit_reason() {
    let h = harness().await;
    let a = h
        .create(
            Kind::Container,
            "once",
            json!({"command": ["true"], "restartPolicy": "Never"}),
        )
        .await;
    let b = h
        .create(
            Kind::Container,
            "hog",
            json!({"command": ["hog"], "restartPolicy": "OnFailure"}),
        )
        .await;
    h.reconcile("once").await;
    h.reconcile("hog").await;
    h.rt.exit(a.metadata.uid.as_deref().unwrap(), 0, false, Duration::ZERO);
    h.reconcile("once").await;
    let s = h.status("once").await;
    assert_eq!(s.common.phase.as_deref(), Some("Succeeded"));
    assert_eq!(reason(&s), "Completed");
    // OnFailure restarts an OOM kill…
    h.rt.exit(b.metadata.uid.as_deref().unwrap(), 0, true, Duration::ZERO);
    h.reconcile("hog").await;
    let s = h.status("hog").await;
    assert_eq!(s.last_state.as_ref().unwrap().reason, "OOMKilled");
    assert_eq!(s.restart_count, 1);
    // …but not a clean exit.
    h.rt.exit(b.metadata.uid.as_deref().unwrap(), 0, false, Duration::ZERO);
    h.reconcile("hog").await;
    h.reconcile("once").await;
    assert_eq!(
        h.status("hog").await.common.phase.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(h.rt.count("start"), 3);
}

#[tokio::test]
async fn a_spec_change_stops_the_old_workload_and_starts_the_new() {
    let h = harness().await;
    let c = h
        .create(
            Kind::Container,
            "web",
            json!({"command": ["a"], "stopGracePeriodSeconds": 3}),
        )
        .await;
    let uid = c.metadata.uid.clone().unwrap();
    h.reconcile("web").await;
    let mut o = h.ctx.store.get(&key("web")).await.unwrap();
    o.spec["command"] = json!(["b"]);
    let o = h.ctx.store.update(o).await.unwrap();
    h.ctx.index.upsert(&o);
    h.reconcile("web").await;
    let calls = h.rt.calls();
    assert_eq!(
        calls[calls.len() - 2..],
        [format!("stop {uid} 3s"), format!("start {uid} g2")]
    );
    assert_eq!(h.rt.spec_of(&uid).unwrap().spec.command, ["b"]);
    let s = h.status("web").await;
    assert_eq!((s.common.observed_generation, s.restart_count), (2, 0));
}

#[tokio::test]
async fn sandbox_rootfs_waits_until_ready_and_state_rootfs_gets_an_owned_sandbox() {
    let h = harness().await;
    h.create(
        Kind::Container,
        "web",
        json!({"command": ["a"], "rootfs": {"sandbox": "dev"}}),
    )
    .await;
    h.reconcile("web").await;
    let s = h.status("web").await;
    assert_eq!(s.common.phase.as_deref(), Some("Pending"));
    assert_eq!(reason(&s), "WaitingForSandbox");
    let sb = h
        .create(Kind::Sandbox, "dev", json!({"state": "base"}))
        .await;
    let ready = json!({"phase": "Ready", "path": "/srv/dev", "conditions": [{"type": "Ready",
        "status": "True", "reason": "Cloned", "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1}]});
    let sbkey = sb.key().unwrap();
    h.ctx
        .store
        .update_status(&sbkey, sb.metadata.revision().unwrap(), ready)
        .await
        .unwrap();
    h.reconcile("web").await;
    assert_eq!(
        h.status("web").await.common.phase.as_deref(),
        Some("Running")
    );
    let uid = h
        .ctx
        .store
        .get(&key("web"))
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    assert_eq!(h.rt.spec_of(&uid).unwrap().rootfs, Some("/srv/dev".into()));

    let c = h
        .create(
            Kind::Container,
            "app",
            json!({"command": ["a"], "rootfs": {"state": "base"}}),
        )
        .await;
    h.reconcile("app").await;
    assert_eq!(reason(&h.status("app").await), "WaitingForSandbox");
    let owned = h
        .ctx
        .store
        .get(&ObjectKey::new(Kind::Sandbox, "default", "app-rootfs"))
        .await
        .unwrap();
    assert_eq!(owned.spec, json!({"state": "base"}));
    let o = &owned.metadata.owner_references[0];
    assert_eq!(
        (o.uid.as_str(), o.controller),
        (c.metadata.uid.as_deref().unwrap(), Some(true))
    );
}

#[tokio::test]
async fn delete_stops_removes_and_releases_the_row() {
    let h = harness().await;
    let c = h
        .create(Kind::Container, "web", json!({"command": ["a"]}))
        .await;
    let uid = c.metadata.uid.clone().unwrap();
    h.reconcile("web").await;
    h.ctx
        .store
        .delete(&key("web"), &DeleteOptions::default())
        .await
        .unwrap();
    h.reconcile("web").await;
    assert!(
        h.ctx.store.get(&key("web")).await.is_err(),
        "finalizer removed, row gone"
    );
    let calls = h.rt.calls();
    assert_eq!(
        calls[calls.len() - 2..],
        [format!("stop {uid} 10s"), format!("remove {uid}")]
    );
    assert_eq!(
        h.att.calls.lock().unwrap().last().unwrap(),
        &format!("remove {uid}")
    );
}

#[tokio::test]
async fn observe_removes_orphans_and_keeps_owned_workloads() {
    let h = harness().await;
    let c = h
        .create(Kind::Container, "web", json!({"command": ["a"]}))
        .await;
    let uid = c.metadata.uid.clone().unwrap();
    h.reconcile("web").await;
    h.rt.orphans.lock().unwrap().push("gone-uid".into());
    h.r.observe(&h.ctx).await.unwrap();
    assert_eq!(h.rt.count("stop"), 1);
    assert_eq!(h.rt.count("remove gone-uid"), 1);
    assert_eq!(h.rt.count(&format!("remove {uid}")), 0);
}

#[tokio::test]
async fn drift_repairs_are_counted_and_reported() {
    let h = harness().await;
    h.create(Kind::Container, "web", json!({"command": ["a"]}))
        .await;
    h.reconcile("web").await;
    h.rt.drift
        .lock()
        .unwrap()
        .push("memory limit put back".into());
    h.reconcile("web").await;
    assert_eq!(h.ctx.metrics.drift_repairs.get(), 1);
    assert_eq!(h.rt.count("start"), 1);
}

#[tokio::test]
async fn an_exit_wakes_the_controller_without_resync() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("t.db"), OpenOptions::default())
            .await
            .unwrap(),
    );
    let c = store
        .create(AnyObject::new(
            Kind::Container,
            "default",
            "web",
            json!({"command": ["a"]}),
        ))
        .await
        .unwrap();
    let uid = c.metadata.uid.unwrap();
    let rt = FakeRuntime::new();
    let mut runtime = CtlRuntime::new(store.clone(), RuntimeConfig::default());
    runtime.register_with(
        Kind::Container,
        |t| {
            Arc::new(ContainerReconciler::new(
                rt.clone(),
                None,
                Arc::new(NoNetworks),
                cfg(),
                Some(t),
            ))
        },
        ControllerConfig {
            concurrency: 2,
            resync: Duration::from_secs(3600),
        },
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run(async {
        let _ = rx.await;
    }));
    let wait_starts = |n: usize| {
        let rt = rt.clone();
        async move {
            for _ in 0..200 {
                if rt.count("start") >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("expected {n} starts: {:?}", rt.calls());
        }
    };
    wait_starts(1).await;
    let t0 = std::time::Instant::now();
    rt.exit(&uid, 137, false, Duration::from_secs(60));
    wait_starts(2).await;
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_unreachable_docker_runtime_is_a_condition_and_holds_up_nothing_else() {
    let mut h = harness().await;
    let docker = FakeRuntime::new();
    h.r = ContainerReconciler::new(
        h.rt.clone(),
        Some(docker.clone()),
        h.att.clone(),
        cfg(),
        None,
    );
    *docker.unavailable.lock().unwrap() = true;
    h.create(
        Kind::Container,
        "dk",
        json!({"runtime": "docker", "image": "busybox:local"}),
    )
    .await;
    h.create(Kind::Container, "nat", json!({"command": ["sleep", "1"]}))
        .await;
    h.r.observe(&h.ctx).await.expect("the start-up gate passes");

    let a = h.reconcile("dk").await;
    assert_eq!(a.requeue_after(), Some(Duration::from_secs(5)));
    let s = h.status("dk").await;
    let ready = s.common.condition("Ready").unwrap();
    assert_eq!(ready.status, tend_schema::ConditionStatus::Unknown);
    assert_eq!(ready.reason, "RuntimeUnavailable");

    // Native containers start, and are deleted, while docker is away.
    h.reconcile("nat").await;
    assert_eq!(
        h.status("nat").await.common.phase.as_deref(),
        Some("Running")
    );
    h.ctx
        .store
        .delete(&key("nat"), &DeleteOptions::default())
        .await
        .unwrap();
    h.reconcile("nat").await;
    assert!(h.ctx.store.get(&key("nat")).await.is_err());

    // Back, but the image is missing: Ready=False with the runtime's reason, retried.
    *docker.unavailable.lock().unwrap() = false;
    *docker.refuse_start.lock().unwrap() = Some("ImageNotFound");
    let a = h.reconcile("dk").await;
    assert_eq!(a.requeue_after(), Some(Duration::from_secs(10)));
    let s = h.status("dk").await;
    assert_eq!(reason(&s), "ImageNotFound");
    assert_eq!(s.common.phase.as_deref(), Some("Pending"));

    *docker.refuse_start.lock().unwrap() = None;
    h.reconcile("dk").await;
    let s = h.status("dk").await;
    assert_eq!(
        (s.common.phase.as_deref(), reason(&s).as_str()),
        (Some("Running"), "Running")
    );
}

#[tokio::test]
async fn user_namespaces_get_a_held_range_wait_for_a_full_pool_and_release_on_delete() {
    let h = harness().await;
    let pool = tend_schema::store::IdPool {
        first: 2_000_000_000,
        size: 65536,
        count: 1,
    };
    let r = ContainerReconciler::new(
        h.rt.clone(),
        None,
        h.att.clone(),
        ContainerConfig {
            id_pool: pool,
            ..cfg()
        },
        None,
    );
    let sb = h
        .create(Kind::Sandbox, "dev", json!({"state": "base"}))
        .await;
    let ready = json!({"phase": "Ready", "path": "/srv/dev", "conditions": [{"type": "Ready",
        "status": "True", "reason": "Cloned", "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1}]});
    h.ctx
        .store
        .update_status(&sb.key().unwrap(), sb.metadata.revision().unwrap(), ready)
        .await
        .unwrap();
    let spec = json!({"command": ["a"], "rootfs": {"sandbox": "dev"},
        "securityContext": {"userNamespace": true}});
    let a = h.create(Kind::Container, "a", spec.clone()).await;
    let b = h.create(Kind::Container, "b", spec).await;
    let mapped = UserNamespaceStatus {
        host_id: 2_000_000_000,
        size: 65536,
    };
    r.reconcile(&h.ctx, &key("a")).await.unwrap();
    let ua = a.metadata.uid.clone().unwrap();
    assert_eq!(h.rt.spec_of(&ua).unwrap().user_namespace, Some(mapped));
    assert_eq!(h.status("a").await.user_namespace, Some(mapped));

    // The pool holds one range: b waits, and says why.
    let act = r.reconcile(&h.ctx, &key("b")).await.unwrap();
    assert_eq!(act.requeue_after(), Some(Duration::from_secs(10)));
    assert_eq!(reason(&h.status("b").await), "UserNamespacePoolExhausted");
    assert_eq!(h.rt.spec_of(b.metadata.uid.as_deref().unwrap()), None);

    // A restart of a's workload keeps its range.
    h.rt.exit(&ua, 1, false, Duration::from_secs(60));
    r.reconcile(&h.ctx, &key("a")).await.unwrap();
    assert_eq!(h.rt.count("start"), 2);
    assert_eq!(h.rt.spec_of(&ua).unwrap().user_namespace, Some(mapped));

    // Deleted, a gives its range back, and b gets it.
    h.ctx
        .store
        .delete(&key("a"), &DeleteOptions::default())
        .await
        .unwrap();
    r.reconcile(&h.ctx, &key("a")).await.unwrap();
    assert!(h
        .ctx
        .store
        .list_id_ranges(Some(&ua))
        .await
        .unwrap()
        .is_empty());
    r.reconcile(&h.ctx, &key("b")).await.unwrap();
    assert_eq!(h.status("b").await.user_namespace, Some(mapped));
}
