//! One controller: a reconciler, its work queue and workers, its triggers and resync.

use crate::action::{Action, Error};
use crate::backoff;
use crate::context::Context;
use crate::index::Index;
use crate::informer::Change;
use crate::queue::Queue;
use async_trait::async_trait;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tend_schema::store::ChangeType;
use tend_schema::{Kind, ObjectKey};
use tokio::sync::watch;
use tracing::Instrument;

/// A reconcile loop for one kind.
///
/// # Contract
/// `reconcile` gets a key, reads the current row itself, observes the host, acts, and writes
/// status. It is never told which event woke it, and must be idempotent: the runtime runs it
/// again on any trigger, on resync, and after errors. At most one reconcile per key runs at a
/// time.
#[async_trait]
pub trait Reconciler: Send + Sync + 'static {
    /// The kind this controller owns.
    fn kind(&self) -> Kind;

    /// A short name for logs and metrics.
    fn name(&self) -> String {
        self.kind().plural().to_string()
    }

    /// Start-up gate: observe the whole host state this controller owns before any reconcile
    /// runs, so no decision is made on a partial view. Retried with backoff until it succeeds.
    async fn observe(&self, _ctx: &Context) -> Result<(), Error> {
        Ok(())
    }

    async fn reconcile(&self, ctx: &Context, key: &ObjectKey) -> Result<Action, Error>;

    /// The delay before retrying a key whose reconcile failed `failures` times in a row.
    fn error_policy(&self, _key: &ObjectKey, _error: &Error, failures: u32) -> Duration {
        backoff::jittered(failures)
    }

    /// Which of this controller's keys a store change should wake.
    fn triggers(&self, change: &Change, index: &Index) -> Vec<ObjectKey> {
        default_triggers(self.kind(), change, index)
    }
}

/// The standard triggers for a controller of `kind`:
/// - its own objects, when spec (generation), deletion, finalizers, owners or the
///   `tend.dev/reconcile-requested-at` annotation changed — not on status-only writes, so a controller's own status updates do not wake it in a loop;
/// - its objects that use the changed object by name (a Container when its Sandbox changes,
///   status included: readiness of a dependency matters);
/// - its objects that own the changed object;
/// - its objects the changed object uses, when that use appears, goes or starts terminating
///   (in-use protection needs to know its last user left).
pub fn default_triggers(kind: Kind, change: &Change, index: &Index) -> Vec<ObjectKey> {
    let Change::Event {
        event,
        previous,
        current,
    } = change
    else {
        return index.keys(kind);
    };
    let Ok(key) = event.object.key() else {
        return vec![];
    };
    let mut out = Vec::new();
    let lifecycle = match (previous, current) {
        (Some(p), Some(c)) => {
            p.generation != c.generation
                || p.terminating != c.terminating
                || p.finalizers != c.finalizers
                || p.owners != c.owners
                || p.refs != c.refs
                || p.requested != c.requested
        }
        _ => true,
    };
    if key.kind == kind && (lifecycle || event.type_ == ChangeType::Added) {
        out.push(key.clone());
    }
    out.extend(index.referrers(&key).into_iter().filter(|r| r.kind == kind));
    for e in previous.iter().chain(current.iter()) {
        for owner in &e.owners {
            if let Some(k) = index.key_of_uid(owner).filter(|k| k.kind == kind) {
                out.push(k);
            }
        }
        if lifecycle {
            out.extend(e.refs.iter().filter(|r| r.kind == kind).cloned());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// How one controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Reconciles running at once.
    pub concurrency: usize,
    /// Every object is reconciled at least this often, so drift nobody reported is found.
    pub resync: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            resync: Duration::from_secs(60),
        }
    }
}

pub(crate) struct Controller {
    pub reconciler: Arc<dyn Reconciler>,
    pub queue: Arc<Queue>,
    pub ctx: Context,
    pub cfg: ControllerConfig,
}

impl Controller {
    /// Runs until `stop` turns true: gate, initial fill, then resync and workers. Store changes
    /// reach the queue through the informer (`informer::Sink`).
    /// Sends `true` on `ready` once the start-up gate has passed.
    pub async fn run(self, mut stop: watch::Receiver<bool>, ready: watch::Sender<bool>) {
        let name = self.reconciler.name();
        let mut failures = 0;
        loop {
            match self.reconciler.observe(&self.ctx).await {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(controller = %name, error = %e, "start-up observation failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff::jittered(failures)) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        }
        let kind = self.reconciler.kind();
        for key in self.ctx.index.keys(kind) {
            self.queue.add(key);
        }
        let _ = ready.send(true);
        tracing::info!(controller = %name, objects = self.queue.depth(), "controller started");

        let resync = {
            let (queue, index, every) =
                (self.queue.clone(), self.ctx.index.clone(), self.cfg.resync);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    for key in index.keys(kind) {
                        queue.add_resync(key);
                    }
                }
            })
        };
        let workers: Vec<_> = (0..self.cfg.concurrency.max(1))
            .map(|_| {
                let (queue, ctx, r) = (
                    self.queue.clone(),
                    self.ctx.clone(),
                    self.reconciler.clone(),
                );
                tokio::spawn(worker(queue, ctx, r))
            })
            .collect();
        let _ = stop.wait_for(|s| *s).await;
        self.queue.shutdown();
        resync.abort();
        for w in workers {
            let _ = w.await;
        }
        tracing::info!(controller = %name, "controller stopped");
    }
}

async fn worker(queue: Arc<Queue>, ctx: Context, r: Arc<dyn Reconciler>) {
    let name = r.name();
    while let Some((key, waited)) = queue.next().await {
        let m = &ctx.metrics;
        m.trigger_latency.observe(waited);
        m.queue_depth.store(queue.depth() as u64, Ordering::Relaxed);
        m.active.fetch_add(1, Ordering::Relaxed);
        let generation = ctx.index.get(&key).map(|e| e.generation).unwrap_or(0);
        let span = tracing::info_span!("reconcile", controller = %name, kind = %key.kind, namespace = %key.namespace, name = %key.name, generation);
        let started = tokio::time::Instant::now();
        let task = {
            let (r, ctx, key) = (r.clone(), ctx.clone(), key.clone());
            tokio::spawn(async move { r.reconcile(&ctx, &key).await }.instrument(span))
        };
        let result: Result<Action, Error> = match task.await {
            Ok(res) => res,
            Err(join) => {
                m.panics.inc();
                let msg = join
                    .try_into_panic()
                    .ok()
                    .and_then(|p| {
                        p.downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                    })
                    .unwrap_or_else(|| "cancelled".into());
                tracing::error!(controller = %name, object = %key, panic = %msg, "reconciler panicked; backing off");
                Err(format!("reconciler panicked: {msg}").into())
            }
        };
        m.duration.observe(started.elapsed());
        m.reconciles.inc();
        m.active.fetch_sub(1, Ordering::Relaxed);
        queue.done(&key);
        match result {
            Ok(action) => {
                queue.record_success(&key);
                if let Some(d) = action.requeue_after() {
                    queue.add_after(key, d);
                }
            }
            Err(e) => {
                m.errors.inc();
                let n = queue.record_failure(&key);
                let delay = r.error_policy(&key, &e, n);
                tracing::warn!(controller = %name, object = %key, failures = n, retry_in = ?delay, error = %e, "reconcile failed");
                if n >= crate::report::AFTER_FAILURES {
                    crate::report::show(&ctx, &key, &e.to_string()).await;
                }
                queue.add_after(key, delay);
            }
        }
    }
}
