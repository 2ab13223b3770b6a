//! The State and Sandbox controllers on the real runtime and SQLite, with the fake driver.

use super::fake::{FakeDriver, FakeSource};
use super::{SnapshotDriver, Sweeper, TreeClass};
use crate::sandbox::SandboxReconciler;
use crate::state::StateReconciler;
use crate::{ControllerConfig, Runtime, RuntimeConfig, Trigger};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tend_schema::store::{DeleteOptions, EventQuery, OpenOptions, SqliteStore, Store};
use tend_schema::{AnyObject, Kind, ObjectKey};
use tokio::sync::oneshot;

struct H {
    store: Arc<dyn Store>,
    fake: Arc<FakeDriver>,
    states: Trigger,
    sandboxes: Trigger,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> H {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("t.db"), OpenOptions::default())
            .await
            .unwrap(),
    );
    let fake = Arc::new(FakeDriver::new());
    let driver: Arc<dyn SnapshotDriver> = fake.clone();
    let mut rt = Runtime::new(store.clone(), RuntimeConfig::default());
    let cfg = ControllerConfig {
        concurrency: 4,
        resync: Duration::from_secs(3600),
    };
    let states = rt.register(
        Arc::new(StateReconciler {
            driver: driver.clone(),
            images: None,
        }),
        cfg.clone(),
    );
    let sandboxes = rt.register(Arc::new(SandboxReconciler { driver }), cfg);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        rt.run(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    H {
        store,
        fake,
        states,
        sandboxes,
        stop: Some(tx),
        task,
        _dir: dir,
    }
}

impl H {
    async fn create(&self, kind: Kind, name: &str, spec: serde_json::Value) -> AnyObject {
        self.store
            .create(AnyObject::new(kind, "default", name, spec))
            .await
            .unwrap()
    }

    /// Waits until `f` holds for the object (None = gone).
    async fn until(&self, kind: Kind, name: &str, f: impl Fn(Option<&AnyObject>) -> bool) {
        let key = ObjectKey::new(kind, "default", name);
        for _ in 0..500 {
            let o = self.store.get(&key).await.ok();
            if f(o.as_ref()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "timed out on {key}: {:?}",
            self.store.get(&key).await.ok().map(|o| o.status)
        );
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

fn reason(o: Option<&AnyObject>) -> String {
    o.and_then(|o| o.status.get("conditions")?.get(0)?.get("reason")?.as_str())
        .unwrap_or("")
        .to_string()
}

fn ready(o: Option<&AnyObject>) -> bool {
    o.is_some_and(|o| o.status.get("phase").and_then(|p| p.as_str()) == Some("Ready"))
}

#[tokio::test]
async fn sandbox_waits_for_its_state_then_snapshots_it() {
    let h = start().await;
    h.fake.add_source("/src/base", FakeSource::Dir(42));
    let sb = h
        .create(Kind::Sandbox, "dev", json!({"state": "base"}))
        .await;
    h.until(Kind::Sandbox, "dev", |o| reason(o) == "WaitingForState")
        .await;
    let st = h
        .create(
            Kind::State,
            "base",
            json!({"source": {"directory": "/src/base"}}),
        )
        .await;
    h.until(Kind::Sandbox, "dev", ready).await;
    let got = h
        .store
        .get(&ObjectKey::new(Kind::State, "default", "base"))
        .await
        .unwrap();
    assert_eq!(got.status["sizeBytes"], 42);
    assert_eq!(reason(Some(&got)), "Imported");
    let (suid, bid) = (st.metadata.uid.unwrap(), sb.metadata.uid.unwrap());
    assert_eq!(h.fake.tree(TreeClass::States, &suid), Some(true));
    assert_eq!(h.fake.tree(TreeClass::Sandboxes, &bid), Some(false));
    assert!(h
        .fake
        .calls()
        .contains(&format!("snapshot {suid} -> {bid} ro=false")));
    h.stop().await;
}

#[tokio::test]
async fn drift_is_repaired_and_reported() {
    let h = start().await;
    h.fake.add_source("/src/base", FakeSource::Tarball(7));
    let st = h
        .create(
            Kind::State,
            "base",
            json!({"source": {"tarball": "/src/base.tar"}}),
        )
        .await;
    h.until(Kind::State, "base", |o| reason(o) == "SourceNotFound")
        .await;
    h.fake.add_source("/src/base.tar", FakeSource::Tarball(7));
    h.until(Kind::State, "base", ready).await;
    let sb = h
        .create(Kind::Sandbox, "dev", json!({"state": "base"}))
        .await;
    h.until(Kind::Sandbox, "dev", ready).await;
    let (suid, bid) = (st.metadata.uid.unwrap(), sb.metadata.uid.unwrap());

    h.fake.vanish(TreeClass::Sandboxes, &bid);
    h.sandboxes.uid(&bid);
    h.fake.tamper_read_only(TreeClass::States, &suid, false);
    h.states.uid(&suid);
    for _ in 0..200 {
        if h.fake.tree(TreeClass::Sandboxes, &bid) == Some(false)
            && h.fake.tree(TreeClass::States, &suid) == Some(true)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.fake.tree(TreeClass::Sandboxes, &bid), Some(false));
    assert_eq!(h.fake.tree(TreeClass::States, &suid), Some(true));
    let events = h.store.list_events(&EventQuery::default()).await.unwrap();
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    assert!(reasons.contains(&"Recreated"), "{reasons:?}");
    assert!(reasons.contains(&"DriftRepaired"), "{reasons:?}");

    // The State's tree vanishes and so does its source: SourceLost.
    h.fake.remove_source("/src/base.tar");
    h.fake.vanish(TreeClass::States, &suid);
    h.states.uid(&suid);
    h.until(Kind::State, "base", |o| reason(o) == "SourceLost")
        .await;
    h.stop().await;
}

#[tokio::test]
async fn a_state_in_use_stays_terminating_until_its_users_go() {
    let h = start().await;
    h.fake.add_source("/src/base", FakeSource::Dir(1));
    let st = h
        .create(
            Kind::State,
            "base",
            json!({"source": {"directory": "/src/base"}}),
        )
        .await;
    h.create(Kind::Sandbox, "dev", json!({"state": "base"}))
        .await;
    h.until(Kind::Sandbox, "dev", ready).await;
    let base = ObjectKey::new(Kind::State, "default", "base");
    h.store
        .delete(&base, &DeleteOptions::default())
        .await
        .unwrap();
    h.until(Kind::State, "base", |o| reason(o) == "InUse").await;
    let msg = h.store.get(&base).await.unwrap().status["conditions"][0]["message"].clone();
    assert!(
        msg.as_str().unwrap().contains("sandbox/default/dev"),
        "{msg}"
    );
    let dev = ObjectKey::new(Kind::Sandbox, "default", "dev");
    h.store
        .delete(&dev, &DeleteOptions::default())
        .await
        .unwrap();
    h.until(Kind::State, "base", |o| o.is_none()).await;
    assert_eq!(
        h.fake.tree(TreeClass::States, &st.metadata.uid.unwrap()),
        None
    );
    h.stop().await;
}

#[tokio::test]
async fn a_sandbox_frozen_into_a_state_and_bad_sources() {
    let h = start().await;
    h.fake.add_source("/src/base", FakeSource::Dir(1));
    h.fake.add_source("/src/file.tar", FakeSource::File);
    h.create(
        Kind::State,
        "base",
        json!({"source": {"directory": "/src/base"}}),
    )
    .await;
    let sb = h
        .create(Kind::Sandbox, "dev", json!({"state": "base"}))
        .await;
    let frozen = h
        .create(Kind::State, "snap", json!({"source": {"sandbox": "dev"}}))
        .await;
    h.until(Kind::State, "snap", |o| ready(o) && reason(o) == "Frozen")
        .await;
    assert!(h.fake.calls().contains(&format!(
        "snapshot {} -> {} ro=true",
        sb.metadata.uid.unwrap(),
        frozen.metadata.uid.unwrap()
    )));
    h.create(
        Kind::State,
        "bad",
        json!({"source": {"tarball": "/src/file.tar"}}),
    )
    .await;
    h.until(Kind::State, "bad", |o| reason(o) == "BadTarball")
        .await;
    let bad = h
        .store
        .get(&ObjectKey::new(Kind::State, "default", "bad"))
        .await
        .unwrap();
    assert_eq!(bad.status["phase"], "Failed");
    h.stop().await;
}

#[tokio::test]
async fn the_sweeper_removes_only_unowned_trees_after_the_grace_period() {
    let h = start().await;
    h.fake.add_source("/src/base", FakeSource::Dir(1));
    let st = h
        .create(
            Kind::State,
            "base",
            json!({"source": {"directory": "/src/base"}}),
        )
        .await;
    h.until(Kind::State, "base", ready).await;
    h.fake.plant(TreeClass::Sandboxes, "stray");
    let driver: Arc<dyn SnapshotDriver> = h.fake.clone();
    let sweeper = Sweeper::new(driver, h.store.clone(), Duration::from_millis(50));
    assert!(sweeper.sweep().await.unwrap().is_empty(), "grace not over");
    tokio::time::sleep(Duration::from_millis(60)).await;
    let removed = sweeper.sweep().await.unwrap();
    assert_eq!(removed, vec![(TreeClass::Sandboxes, "stray".to_string())]);
    assert!(h
        .fake
        .tree(TreeClass::States, &st.metadata.uid.unwrap())
        .is_some());
    h.stop().await;
}
