//! The controller loop under paused time, with a scripted fake reconciler.

use crate::action::{Action, Error};
use crate::context::Context;
use crate::controller::{Controller, ControllerConfig, Reconciler};
use crate::index::Index;
use crate::metrics::ControllerMetrics;
use crate::queue::Queue;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tend_schema::store::{OpenOptions, SqliteStore};
use tend_schema::{AnyObject, Kind, ObjectKey};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

type Script = Box<dyn Fn(usize) -> Result<Action, Error> + Send + Sync>;

/// Records every call (with virtual time) and answers from a script keyed by call number.
struct Fake {
    calls: Mutex<Vec<(ObjectKey, Instant)>>,
    running: Mutex<HashMap<ObjectKey, usize>>,
    max_parallel_same_key: AtomicUsize,
    hold: Arc<Semaphore>,
    script: Script,
    observe_failures: AtomicUsize,
    panic_on_first: bool,
}

impl Fake {
    fn new(script: Script) -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::default(),
            running: Mutex::default(),
            max_parallel_same_key: AtomicUsize::new(0),
            hold: Arc::new(Semaphore::new(1_000_000)),
            script,
            observe_failures: AtomicUsize::new(0),
            panic_on_first: false,
        })
    }

    fn times(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().iter().map(|(_, t)| *t).collect()
    }

    fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

#[async_trait]
impl Reconciler for Fake {
    fn kind(&self) -> Kind {
        Kind::Network
    }

    async fn observe(&self, _ctx: &Context) -> Result<(), Error> {
        if self.observe_failures.load(Ordering::SeqCst) > 0 {
            self.observe_failures.fetch_sub(1, Ordering::SeqCst);
            return Err("host not readable yet".into());
        }
        Ok(())
    }

    async fn reconcile(&self, _ctx: &Context, key: &ObjectKey) -> Result<Action, Error> {
        let n = {
            let mut c = self.calls.lock().unwrap();
            c.push((key.clone(), Instant::now()));
            c.len()
        };
        {
            let mut r = self.running.lock().unwrap();
            let v = r.entry(key.clone()).or_insert(0);
            *v += 1;
            self.max_parallel_same_key.fetch_max(*v, Ordering::SeqCst);
        }
        let _permit = self.hold.acquire().await.unwrap();
        *self.running.lock().unwrap().get_mut(key).unwrap() -= 1;
        if self.panic_on_first && n == 1 {
            panic!("scripted panic");
        }
        (self.script)(n)
    }
}

fn key(n: &str) -> ObjectKey {
    ObjectKey::new(Kind::Network, "default", n)
}

struct Harness {
    queue: Arc<Queue>,
    stop: watch::Sender<bool>,
    ready: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<ControllerMetrics>,
    _dir: tempfile::TempDir,
}

async fn start(fake: Arc<Fake>, objects: &[&str], cfg: ControllerConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("t.db"), OpenOptions::default())
            .await
            .unwrap(),
    );
    let index = Arc::new(Index::new());
    for name in objects {
        let mut o = AnyObject::new(
            Kind::Network,
            "default",
            name,
            serde_json::json!({"subnet": "10.1.0.0/24"}),
        );
        o.metadata.uid = Some(format!("uid-{name}"));
        index.upsert(&o);
    }
    let metrics = Arc::new(ControllerMetrics::default());
    let queue = Arc::new(Queue::new());
    let ctx = Context {
        store,
        index,
        metrics: metrics.clone(),
    };
    let c = Controller {
        reconciler: fake,
        queue: queue.clone(),
        ctx,
        cfg,
    };
    let (stop, stop_rx) = watch::channel(false);
    let (ready_tx, ready) = watch::channel(false);
    let task = tokio::spawn(c.run(stop_rx, ready_tx));
    Harness {
        queue,
        stop,
        ready,
        task,
        metrics,
        _dir: dir,
    }
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn ok() -> Script {
    Box::new(|_| Ok(Action::await_change()))
}

fn slow_resync() -> ControllerConfig {
    ControllerConfig {
        concurrency: 4,
        resync: Duration::from_secs(3600),
    }
}

#[tokio::test(start_paused = true)]
async fn initial_fill_reconciles_every_object_once() {
    let fake = Fake::new(ok());
    let h = start(fake.clone(), &["a", "b", "c"], slow_resync()).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fake.count(), 3);
    assert!(*h.ready.borrow());
}

#[tokio::test(start_paused = true)]
async fn triggers_during_a_reconcile_coalesce_and_never_overlap() {
    let fake = Fake::new(ok());
    fake.hold.forget_permits(1_000_000);
    let h = start(fake.clone(), &["a"], slow_resync()).await;
    settle().await;
    assert_eq!(fake.count(), 1, "first reconcile is running, held");
    for _ in 0..10 {
        h.queue.add(key("a"));
    }
    settle().await;
    assert_eq!(fake.count(), 1, "no second reconcile of a while one runs");
    fake.hold.add_permits(1_000_000);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fake.count(), 2, "ten triggers coalesced into one more run");
    assert_eq!(fake.max_parallel_same_key.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_per_key_and_resets_on_success() {
    // Calls 1-5 fail, 6 succeeds and asks for a requeue in 1 s, 7 fails again.
    let fake = Fake::new(Box::new(|n| match n {
        1..=5 | 7 => Err("host said no".into()),
        6 => Ok(Action::requeue(Duration::from_secs(1))),
        _ => Ok(Action::await_change()),
    }));
    let _h = start(fake.clone(), &["a"], slow_resync()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t = fake.times();
    assert_eq!(t.len(), 8, "{t:?}");
    let gaps: Vec<f64> = t
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect();
    for (i, base) in [5.0, 10.0, 20.0, 40.0, 80.0].iter().enumerate() {
        assert!(
            gaps[i] >= base * 0.8 - 0.01 && gaps[i] <= base * 1.2 + 0.01,
            "retry {i}: {gaps:?}"
        );
    }
    assert!(
        (gaps[5] - 1000.0).abs() < 1.0,
        "requeue-after is honoured: {gaps:?}"
    );
    assert!(
        gaps[6] <= 6.0 + 0.01,
        "backoff restarted from 5 ms after the success: {gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn resync_reconciles_without_any_trigger() {
    let fake = Fake::new(ok());
    let _h = start(
        fake.clone(),
        &["a", "b"],
        ControllerConfig {
            concurrency: 2,
            resync: Duration::from_secs(60),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(fake.count(), 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.count(), 4);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(fake.count(), 6);
}

#[tokio::test(start_paused = true)]
async fn resync_does_not_cut_a_backoff_short() {
    let fake = Fake::new(Box::new(|_| Err("host object unavailable".into())));
    let _h = start(
        fake.clone(),
        &["a"],
        ControllerConfig {
            concurrency: 1,
            resync: Duration::from_secs(60),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    // Backoff alone: ~16 tries to reach the 5-minute cap (about 330 s), then one per 5 minutes,
    // about 27 in the hour. A resync retrying the key every minute would make over 60.
    let n = fake.count();
    assert!((20..=35).contains(&n), "{n} tries in an hour");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_reconciler_is_backed_off_and_the_controller_lives_on() {
    let mut f = Fake::new(ok());
    Arc::get_mut(&mut f).unwrap().panic_on_first = true;
    let h = start(f.clone(), &["a"], slow_resync()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(f.count(), 2, "retried after the panic");
    assert_eq!(h.metrics.panics.get(), 1);
    assert_eq!(h.metrics.errors.get(), 1);
    h.queue.add(key("a"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(f.count(), 3, "still serving keys");
}

#[tokio::test(start_paused = true)]
async fn the_start_up_gate_holds_reconciles_until_observation_succeeds() {
    let fake = Fake::new(ok());
    fake.observe_failures.store(3, Ordering::SeqCst);
    let h = start(fake.clone(), &["a"], slow_resync()).await;
    settle().await;
    assert_eq!(fake.count(), 0);
    assert!(!*h.ready.borrow());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.count(), 1);
    assert!(*h.ready.borrow());
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_in_flight_work_finish_and_takes_no_more() {
    let fake = Fake::new(ok());
    fake.hold.forget_permits(1_000_000);
    let h = start(
        fake.clone(),
        &["a", "b"],
        ControllerConfig {
            concurrency: 1,
            resync: Duration::from_secs(3600),
        },
    )
    .await;
    settle().await;
    assert_eq!(fake.count(), 1, "one worker, one in flight");
    h.stop.send(true).unwrap();
    settle().await;
    assert!(!h.task.is_finished(), "waits for the in-flight reconcile");
    fake.hold.add_permits(1_000_000);
    tokio::time::timeout(Duration::from_secs(1), h.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fake.count(), 1, "b was never started after shutdown");
}

/// A failure that persists shows on the object (Ready=False `ReconcileError` and a Warning
/// event with the error), not only in the log; a one-off failure does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisting_reconcile_error_is_shown_on_the_object() {
    use tend_schema::store::{EventQuery, Store};
    let fake = Fake::new(Box::new(|_| Err("the host refused: EPERM".into())));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("t.db"), OpenOptions::default())
            .await
            .unwrap(),
    );
    let obj = store
        .create(AnyObject::new(
            Kind::Network,
            "default",
            "a",
            serde_json::json!({"subnet": "10.1.0.0/24"}),
        ))
        .await
        .unwrap();
    let index = Arc::new(Index::new());
    index.upsert(&obj);
    let c = Controller {
        reconciler: fake.clone(),
        queue: Arc::new(Queue::new()),
        ctx: Context {
            store: store.clone(),
            index,
            metrics: Arc::new(ControllerMetrics::default()),
        },
        cfg: slow_resync(),
    };
    let (stop, stop_rx) = watch::channel(false);
    let (ready_tx, _ready) = watch::channel(false);
    let task = tokio::spawn(c.run(stop_rx, ready_tx));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let o = store.get(&key("a")).await.unwrap();
        let ready = o.status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned());
        if let Some(c) = ready {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "never shown");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(fake.count() >= crate::report::AFTER_FAILURES as usize);
    assert_eq!(shown["status"], "False");
    assert_eq!(shown["reason"], crate::report::REASON);
    assert!(shown["message"].as_str().unwrap().contains("EPERM"));
    let events = store.list_events(&EventQuery::default()).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.reason == crate::report::REASON && e.message.contains("EPERM")),
        "{events:?}"
    );
    let _ = stop.send(true);
    task.await.unwrap();
}
