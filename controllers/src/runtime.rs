//! The runtime: the informer, the index and every registered controller, started together
//! and stopped together.

use crate::context::Context;
use crate::controller::{Controller, ControllerConfig, Reconciler};
use crate::gc::GarbageCollector;
use crate::index::Index;
use crate::informer::{self, Sink};
use crate::metrics::{self, ControllerMetrics};
use crate::queue::Queue;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tend_schema::store::{Store, StoreError};
use tend_schema::{Kind, ObjectKey};
use tokio::sync::watch;

/// Runtime-wide settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// In-flight reconciles get this long to finish after shutdown is asked for.
    pub shutdown_grace: Duration,
    /// Whether to run the owner garbage collectors.
    pub garbage_collection: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(10),
            garbage_collection: true,
        }
    }
}

/// A handle that wakes a controller's keys from outside the store: driver events (pidfd,
/// netlink, Docker) push the objects whose host state changed.
#[derive(Clone)]
pub struct Trigger {
    queue: Arc<Queue>,
    index: Arc<Index>,
    kind: Kind,
}

impl Trigger {
    /// Wakes `key` now — or within a second when its last reconcile failed, so a reconcile
    /// woken by its own host changes cannot retry in a loop (see `Queue::add_event`).
    pub fn key(&self, key: ObjectKey) {
        self.queue.add_event(key);
    }

    /// Wakes the object with this uid, if it is of this controller's kind.
    pub fn uid(&self, uid: &str) {
        self.uid_after(uid, Duration::ZERO);
    }

    /// Wakes the object with this uid after `delay`, unless it is due sooner: a burst of such
    /// wakes within `delay` makes one reconcile.
    pub fn uid_after(&self, uid: &str, delay: Duration) {
        if let Some(k) = self.index.key_of_uid(uid).filter(|k| k.kind == self.kind) {
            match delay.is_zero() {
                true => self.queue.add_event(k),
                false => self.queue.add_after(k, delay),
            }
        }
    }
}

struct Registered {
    controller: Controller,
}

/// Everything reconcile-related in one daemon.
pub struct Runtime {
    store: Arc<dyn Store>,
    index: Arc<Index>,
    cfg: RuntimeConfig,
    controllers: Vec<Registered>,
    metrics: Vec<(String, Arc<ControllerMetrics>)>,
    ready_tx: watch::Sender<bool>,
}

impl Runtime {
    pub fn new(store: Arc<dyn Store>, cfg: RuntimeConfig) -> Self {
        let mut rt = Self {
            store,
            index: Arc::new(Index::new()),
            cfg: cfg.clone(),
            controllers: Vec::new(),
            metrics: Vec::new(),
            ready_tx: watch::channel(false).0,
        };
        if cfg.garbage_collection {
            for kind in Kind::ALL {
                rt.register(
                    Arc::new(GarbageCollector { kind }),
                    ControllerConfig {
                        concurrency: 2,
                        ..Default::default()
                    },
                );
            }
        }
        rt
    }

    /// Adds a controller; the returned trigger wakes its keys from driver events.
    pub fn register(&mut self, reconciler: Arc<dyn Reconciler>, cfg: ControllerConfig) -> Trigger {
        let kind = reconciler.kind();
        self.register_with(kind, |_| reconciler, cfg)
    }

    /// Registers the reconciler that `make` builds from its own trigger, for reconcilers whose
    /// driver events (an exit watcher, say) wake their keys: no cell to fill in afterwards.
    ///
    /// # Panics
    /// When the reconciler's kind is not `kind`.
    pub fn register_with(
        &mut self,
        kind: Kind,
        make: impl FnOnce(Trigger) -> Arc<dyn Reconciler>,
        cfg: ControllerConfig,
    ) -> Trigger {
        let queue = Arc::new(Queue::new());
        let trigger = Trigger {
            queue: queue.clone(),
            index: self.index.clone(),
            kind,
        };
        let reconciler = make(trigger.clone());
        assert_eq!(
            reconciler.kind(),
            kind,
            "register_with: kind of the reconciler"
        );
        let metrics = Arc::new(ControllerMetrics::default());
        self.metrics.push((reconciler.name(), metrics.clone()));
        let ctx = Context {
            store: self.store.clone(),
            index: self.index.clone(),
            metrics,
        };
        self.controllers.push(Registered {
            controller: Controller {
                reconciler,
                queue: queue.clone(),
                ctx,
                cfg,
            },
        });
        trigger
    }

    pub fn index(&self) -> Arc<Index> {
        self.index.clone()
    }

    /// A store-and-index view for components that serve controllers from outside the reconcile
    /// loop (e.g. the attachments the Container controller asks the Network side for).
    pub fn context(&self) -> Context {
        Context {
            store: self.store.clone(),
            index: self.index.clone(),
            metrics: Arc::new(ControllerMetrics::default()),
        }
    }

    /// True once every controller has passed its start-up gate (what `/readyz` reports).
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready_tx.subscribe()
    }

    /// A function rendering all controllers' metrics in Prometheus text.
    pub fn metrics_renderer(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let m = self.metrics.clone();
        move || metrics::render(&m)
    }

    /// Runs until `shutdown` resolves, then stops taking work and gives in-flight reconciles
    /// `shutdown_grace` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StoreError> {
        let revision = informer::prime(&*self.store, &self.index).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut sinks = Vec::new();
        let mut tasks = Vec::new();
        let mut readies = Vec::new();
        for r in self.controllers {
            sinks.push(Sink {
                reconciler: r.controller.reconciler.clone(),
                queue: r.controller.queue.clone(),
            });
            let (ready_tx, ready_rx) = watch::channel(false);
            readies.push(ready_rx);
            tasks.push(tokio::spawn(r.controller.run(stop_rx.clone(), ready_tx)));
        }
        let informer = tokio::spawn(informer::run(
            self.store.clone(),
            self.index.clone(),
            revision,
            sinks,
        ));
        let ready_tx = self.ready_tx.clone();
        let gate = tokio::spawn(async move {
            for mut r in readies {
                let _ = r.wait_for(|v| *v).await;
            }
            let _ = ready_tx.send(true);
            tracing::info!("all controllers passed their start-up gate");
        });
        shutdown.await;
        tracing::info!("runtime: shutting down");
        let _ = stop_tx.send(true);
        let all = futures::future::join_all(tasks);
        if tokio::time::timeout(self.cfg.shutdown_grace, all)
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.cfg.shutdown_grace, "runtime: reconciles still running after the grace period; abandoning them");
        }
        informer.abort();
        gate.abort();
        Ok(())
    }
}
