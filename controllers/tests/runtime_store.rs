//! The runtime against a real SQLite store: finalizers, owner GC (background, foreground,
//! orphan), in-use protection, and 1,000 objects converging with every host effect exactly once
//! across a restart. Host effects are files in a temp dir, counted in a ledger.

use async_trait::async_trait;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tend_controllers::finalizer::{finalizer, users, Cleanup, Event};
use tend_controllers::{
    Action, Context, ControllerConfig, Error, Reconciler, Runtime, RuntimeConfig,
};
use tend_schema::meta::{CommonStatus, ConditionStatus, OwnerReference};
use tend_schema::store::*;
use tend_schema::{AnyObject, Kind, ObjectKey};
use tokio::sync::oneshot;

/// Creates `<dir>/<uid>` once per object and removes it on deletion, logging both in a ledger.
struct Effects {
    kind: Kind,
    dir: PathBuf,
    protect_in_use: bool,
}

impl Effects {
    fn log(&self, line: String) {
        self.log_to("ledger", line);
    }

    fn log_to(&self, file: &str, line: String) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(file))
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

#[async_trait]
impl Reconciler for Effects {
    fn kind(&self) -> Kind {
        self.kind
    }

    async fn reconcile(&self, ctx: &Context, key: &ObjectKey) -> Result<Action, Error> {
        finalizer(ctx, "tend.dev/test", key, |ev| async move {
            match ev {
                Event::Apply(obj) => {
                    let uid = obj.metadata.uid.clone().unwrap();
                    // Every reconcile that ran, for tests to wait on (not an effect).
                    self.log_to("reconciled", uid.clone());
                    let path = self.dir.join(&uid);
                    if !path.exists() {
                        std::fs::write(&path, b"")?;
                        self.log(format!("+{uid}"));
                    }
                    let mut st = CommonStatus::default();
                    if let Some(cs) = obj.status.get("conditions") {
                        st.conditions = serde_json::from_value(cs.clone())?;
                    }
                    st.set_condition(
                        "Ready",
                        ConditionStatus::True,
                        "Done",
                        "",
                        obj.metadata.generation,
                    );
                    st.observed_generation = obj.metadata.generation;
                    st.phase = Some("Ready".into());
                    ctx.write_status(&obj, &st).await?;
                    Ok(Action::await_change().into())
                }
                Event::Cleanup(obj) => {
                    if self.protect_in_use && !users(ctx, key).is_empty() {
                        // The decision to hold, for tests to wait on.
                        self.log(format!("held {}", obj.metadata.uid.clone().unwrap()));
                        return Ok(Cleanup::Wait(Action::await_change()).into());
                    }
                    let uid = obj.metadata.uid.clone().unwrap();
                    if std::fs::remove_file(self.dir.join(&uid)).is_ok() {
                        self.log(format!("-{uid}"));
                    }
                    Ok(Cleanup::Done.into())
                }
            }
        })
        .await
    }
}

struct Daemon {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Daemon {
    async fn start(store: Arc<SqliteStore>, dir: &std::path::Path, kinds: &[(Kind, bool)]) -> Self {
        let mut rt = Runtime::new(store, RuntimeConfig::default());
        for (kind, protect) in kinds {
            let r = Effects {
                kind: *kind,
                dir: dir.to_path_buf(),
                protect_in_use: *protect,
            };
            rt.register(
                Arc::new(r),
                ControllerConfig {
                    concurrency: 8,
                    resync: Duration::from_secs(60),
                },
            );
        }
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            rt.run(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, f: impl Fn() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn open() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("t.db"), OpenOptions::default())
            .await
            .unwrap(),
    );
    (dir, store)
}

fn ledger(dir: &std::path::Path) -> Vec<String> {
    lines(dir, "ledger")
}

fn lines(dir: &std::path::Path, file: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// How many reconciles of `uid` have run.
fn reconciles_of(dir: &std::path::Path, uid: &str) -> usize {
    lines(dir, "reconciled")
        .iter()
        .filter(|l| *l == uid)
        .count()
}

async fn gone(store: &SqliteStore, key: &ObjectKey) -> bool {
    matches!(store.get(key).await, Err(StoreError::NotFound(_)))
}

fn sandbox(name: &str, state: &str) -> AnyObject {
    AnyObject::new(Kind::Sandbox, "default", name, json!({"state": state}))
}

fn state(name: &str) -> AnyObject {
    AnyObject::new(
        Kind::State,
        "default",
        name,
        json!({"source": {"directory": "/srv"}}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizer_runs_cleanup_before_the_row_goes() {
    let (dir, store) = open().await;
    let d = Daemon::start(store.clone(), dir.path(), &[(Kind::Sandbox, false)]).await;
    let obj = store.create(sandbox("a", "base")).await.unwrap();
    let uid = obj.metadata.uid.clone().unwrap();
    let key = obj.key().unwrap();
    eventually("the effect and Ready", || async {
        store
            .get(&key)
            .await
            .map(|o| o.status["phase"] == "Ready" && o.metadata.has_finalizer("tend.dev/test"))
            .unwrap_or(false)
    })
    .await;
    assert!(dir.path().join(&uid).exists());
    store.delete(&key, &DeleteOptions::default()).await.unwrap();
    eventually("the row to go", || gone(&store, &key)).await;
    assert!(
        !dir.path().join(&uid).exists(),
        "cleanup ran before the row went"
    );
    assert_eq!(ledger(dir.path()), [format!("+{uid}"), format!("-{uid}")]);
    d.stop().await;
}

/// A State used by a Sandbox, both Ready, then deleted: returns once the State's controller
/// has decided to hold it (a positive signal, not a pause), with the State's and Sandbox's keys.
async fn a_state_held_in_use(
    store: &Arc<SqliteStore>,
    dir: &std::path::Path,
) -> (Daemon, ObjectKey, ObjectKey) {
    let d = Daemon::start(
        store.clone(),
        dir,
        &[(Kind::State, true), (Kind::Sandbox, false)],
    )
    .await;
    let st = store.create(state("base")).await.unwrap();
    let sb = store.create(sandbox("dev", "base")).await.unwrap();
    let (stk, sbk) = (st.key().unwrap(), sb.key().unwrap());
    eventually("both Ready", || async {
        let a = store.get(&stk).await.unwrap();
        let b = store.get(&sbk).await.unwrap();
        a.status["phase"] == "Ready" && b.status["phase"] == "Ready"
    })
    .await;
    store.delete(&stk, &DeleteOptions::default()).await.unwrap();
    let held = format!("held {}", st.metadata.uid.clone().unwrap());
    eventually("the State held in use", || async {
        std::fs::read_to_string(dir.join("ledger")).is_ok_and(|l| l.contains(&held))
    })
    .await;
    (d, stk, sbk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_use_protection_holds_a_state_until_its_last_user_goes() {
    let (dir, store) = open().await;
    let (d, stk, sbk) = a_state_held_in_use(&store, dir.path()).await;
    assert!(store.get(&stk).await.unwrap().metadata.is_terminating());
    assert!(store.get(&sbk).await.is_ok(), "its user is untouched");
    store.delete(&sbk, &DeleteOptions::default()).await.unwrap();
    eventually("the State to go after its last user", || gone(&store, &stk)).await;
    d.stop().await;
}

/// What the InUse message advises works: a State already Terminating because it is in use is
/// deleted again with foreground propagation, and goes with its users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_on_a_state_held_in_use_takes_its_users_along() {
    let (dir, store) = open().await;
    let (d, stk, sbk) = a_state_held_in_use(&store, dir.path()).await;
    let fg = DeleteOptions {
        propagation: Propagation::Foreground,
        ..Default::default()
    };
    store.delete(&stk, &fg).await.unwrap();
    eventually("the Sandbox to go", || gone(&store, &sbk)).await;
    eventually("then the State", || gone(&store, &stk)).await;
    d.stop().await;
}

fn owned(name: &str, owner: &AnyObject) -> AnyObject {
    let mut o = sandbox(name, "none");
    o.metadata.owner_references.push(OwnerReference {
        api_version: "tend.dev/v1".into(),
        kind: owner.kind.clone(),
        name: owner.metadata.name.clone(),
        uid: owner.metadata.uid.clone().unwrap(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    });
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_foreground_and_orphan_propagation() {
    let (dir, store) = open().await;
    let d = Daemon::start(
        store.clone(),
        dir.path(),
        &[(Kind::Network, false), (Kind::Sandbox, false)],
    )
    .await;
    let net = |n: &str| {
        AnyObject::new(
            Kind::Network,
            "default",
            n,
            json!({"subnet": "10.1.0.0/24"}),
        )
    };

    // Background: the owner goes at once, then its dependent.
    let o = store.create(net("bg")).await.unwrap();
    let dep = store
        .create(owned("bg-dep", &o))
        .await
        .unwrap()
        .key()
        .unwrap();
    let ok = o.key().unwrap();
    eventually("owner finalized", || async {
        store
            .get(&ok)
            .await
            .unwrap()
            .metadata
            .has_finalizer("tend.dev/test")
    })
    .await;
    store.delete(&ok, &DeleteOptions::default()).await.unwrap();
    eventually("background: owner gone", || gone(&store, &ok)).await;
    eventually("background: dependent collected", || gone(&store, &dep)).await;

    // Foreground: the owner waits, Terminating, until its dependent is gone.
    let o = store.create(net("fg")).await.unwrap();
    let dep = store
        .create(owned("fg-dep", &o))
        .await
        .unwrap()
        .key()
        .unwrap();
    let ok = o.key().unwrap();
    let opts = DeleteOptions {
        propagation: Propagation::Foreground,
        ..Default::default()
    };
    store.delete(&ok, &opts).await.unwrap();
    eventually("foreground: dependent gone", || gone(&store, &dep)).await;
    eventually("foreground: then the owner", || gone(&store, &ok)).await;

    // Orphan: the dependent stays and loses its owner reference.
    let o = store.create(net("or")).await.unwrap();
    let dep = store
        .create(owned("or-dep", &o))
        .await
        .unwrap()
        .key()
        .unwrap();
    let ok = o.key().unwrap();
    let opts = DeleteOptions {
        propagation: Propagation::Orphan,
        ..Default::default()
    };
    let dep_uid = store.get(&dep).await.unwrap().metadata.uid.unwrap();
    let before = reconciles_of(dir.path(), &dep_uid);
    store.delete(&ok, &opts).await.unwrap();
    eventually("orphan: owner gone", || gone(&store, &ok)).await;
    // Losing its owner reference is a change the dependent's own controller reconciles: once
    // that reconcile has run, the orphaning has been seen, and the dependent must be there.
    eventually(
        "orphan: the dependent reconciled after the change",
        || async { reconciles_of(dir.path(), &dep_uid) > before },
    )
    .await;
    let kept = store.get(&dep).await.expect("orphaned dependent stays");
    assert!(kept.metadata.owner_references.is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_cascades_to_users_by_name() {
    let (dir, store) = open().await;
    let d = Daemon::start(
        store.clone(),
        dir.path(),
        &[(Kind::State, true), (Kind::Sandbox, false)],
    )
    .await;
    let stk = store.create(state("base")).await.unwrap().key().unwrap();
    let sbk = store
        .create(sandbox("dev", "base"))
        .await
        .unwrap()
        .key()
        .unwrap();
    eventually("finalized", || async {
        store
            .get(&stk)
            .await
            .unwrap()
            .metadata
            .has_finalizer("tend.dev/test")
    })
    .await;
    let opts = DeleteOptions {
        propagation: Propagation::Foreground,
        ..Default::default()
    };
    store.delete(&stk, &opts).await.unwrap();
    eventually("the user goes first", || gone(&store, &sbk)).await;
    eventually("then the State", || gone(&store, &stk)).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_objects_converge_with_each_effect_once_and_a_restart_repeats_none() {
    let (dir, store) = open().await;
    let objs: Vec<AnyObject> = (0..1000)
        .map(|i| sandbox(&format!("s{i}"), "base"))
        .collect();
    store.apply(objs, false).await.unwrap();
    let all_ready = || async {
        let l = store
            .list(&ListQuery {
                kind: Some(Kind::Sandbox),
                ..Default::default()
            })
            .await
            .unwrap();
        l.items.len() == 1000 && l.items.iter().all(|o| o.status["phase"] == "Ready")
    };
    let d = Daemon::start(store.clone(), dir.path(), &[(Kind::Sandbox, false)]).await;
    eventually("1000 objects Ready", all_ready).await;
    d.stop().await;
    let first = ledger(dir.path());
    assert_eq!(first.len(), 1000);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &first {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    assert!(counts.values().all(|c| *c == 1), "an effect ran twice");

    // Restart: everything is reconciled again (initial fill) but no effect repeats.
    let rev_before = store.revision().await.unwrap();
    let runs = lines(dir.path(), "reconciled").len();
    let d = Daemon::start(store.clone(), dir.path(), &[(Kind::Sandbox, false)]).await;
    // The restart's initial fill reconciles every object once more: wait until it has.
    eventually("every object reconciled again", || async {
        lines(dir.path(), "reconciled").len() >= runs + 1000
    })
    .await;
    eventually("still Ready", all_ready).await;
    d.stop().await;
    assert_eq!(ledger(dir.path()), first, "a restart repeated no effect");
    assert_eq!(
        store.revision().await.unwrap(),
        rev_before,
        "and wrote nothing: status unchanged means no write"
    );
}
