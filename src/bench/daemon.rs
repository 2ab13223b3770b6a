//! The one in-process daemon every bench runs against: a throwaway state dir, the real
//! [`Daemon::build`] with its controllers running, and one teardown that deletes what the bench
//! made, stops the controllers, releases the snapshot image and removes the dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tend_controllers::network::Attacher;
use tend_schema::store::{DeleteOptions, ListQuery, OpenOptions, Propagation, SqliteStore, Store};
use tend_schema::Kind;

use super::until;
use crate::daemon::{Daemon, DaemonConfig, Layout};
use crate::snapshot::choose::SnapshotConfig;
use crate::snapshot::BackendMode;

/// How the bench daemon runs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub snapshot: SnapshotConfig,
    /// Resync period: long, so figures measure events, not resync.
    pub resync: Duration,
    pub concurrency: usize,
    /// Where the daemon records every probe run (`tend bench probes`).
    pub probe_timings: Option<Arc<crate::probe::ProbeTimings>>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            snapshot: SnapshotConfig {
                mode: BackendMode::Copy,
                ..Default::default()
            },
            resync: Duration::from_secs(600),
            concurrency: 8,
            probe_timings: None,
        }
    }
}

impl BenchOptions {
    /// The defaults on the embedded btrfs image (`auto`) of `image_size` bytes.
    pub fn btrfs(image_size: u64) -> Self {
        Self {
            snapshot: SnapshotConfig {
                mode: BackendMode::Auto,
                image_size,
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// A running in-process daemon on a scratch dir (`<dir>/state` is its state dir; the bench
/// may keep its own files beside it in `<dir>`).
pub struct BenchDaemon {
    pub dir: PathBuf,
    pub store: Arc<SqliteStore>,
    pub daemon_cfg: DaemonConfig,
    pub attacher: Arc<Attacher>,
    /// The running controllers' context (store, index), for benches that call components.
    pub ctx: tend_controllers::Context,
    running: Option<Running>,
}

/// The controllers of one daemon, running until `stop` is sent.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tend_schema::store::StoreError>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Builds the daemon on `store` and `cfg` and runs its controllers.
async fn launch(
    store: &Arc<SqliteStore>,
    cfg: &DaemonConfig,
) -> anyhow::Result<(Arc<Attacher>, tend_controllers::Context, Running)> {
    let Daemon {
        runtime, attacher, ..
    } = Daemon::build(store.clone(), cfg).await?;
    let ctx = runtime.context();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run(async {
        let _ = stopped.await;
    }));
    Ok((attacher, ctx, Running { stop, task }))
}

impl BenchDaemon {
    /// Builds and starts a daemon on a new scratch dir named after `what`.
    ///
    /// # Errors
    /// The dir, store or any driver cannot be set up (the dir is removed again).
    pub async fn start(what: &str, opts: BenchOptions) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "tend-bench-{what}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        ));
        let state = dir.join("state");
        std::fs::create_dir_all(&state)?;
        match Self::start_in(dir.clone(), state, opts).await {
            Ok(d) => Ok(d),
            Err(e) => {
                remove_scratch(&dir);
                Err(e)
            }
        }
    }

    async fn start_in(dir: PathBuf, state: PathBuf, opts: BenchOptions) -> anyhow::Result<Self> {
        let layout = Layout::new(&state);
        let store = Arc::new(SqliteStore::open(layout.db(), OpenOptions::default()).await?);
        let mut cfg = DaemonConfig::new(layout)?;
        cfg.controller = tend_controllers::ControllerConfig {
            concurrency: opts.concurrency,
            resync: opts.resync,
        };
        cfg.snapshot = opts.snapshot;
        cfg.probe_timings = opts.probe_timings;
        let (attacher, ctx, running) = launch(&store, &cfg).await?;
        Ok(Self {
            dir,
            store,
            daemon_cfg: cfg,
            attacher,
            ctx,
            running: Some(running),
        })
    }

    /// Stops the controllers without deleting anything — the workloads keep running under
    /// their shims, as through a restart of `tend serve` — and starts a new daemon on the same
    /// state dir and store. Returns when the new daemon's controllers run.
    ///
    /// # Errors
    /// The new daemon cannot be built.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(old) = self.running.take() {
            old.stop().await;
        }
        let (attacher, ctx, running) = launch(&self.store, &self.daemon_cfg).await?;
        self.running = Some(running);
        self.attacher = attacher;
        self.ctx = ctx;
        Ok(())
    }

    /// The daemon's state dir.
    pub fn state_dir(&self) -> &Path {
        self.daemon_cfg.layout.root()
    }

    pub fn instance(&self) -> &str {
        &self.daemon_cfg.instance
    }

    /// Deletes every object (Containers first, then the rest in the foreground) and waits up
    /// to `limit` for the finalizers to remove them, so no host object outlives the bench.
    pub async fn delete_all(&self, limit: Duration) -> anyhow::Result<()> {
        let store = &self.store;
        for kind in [Some(Kind::Container), None] {
            let all = store
                .list(&ListQuery {
                    kind,
                    ..Default::default()
                })
                .await?;
            for o in &all.items {
                let opts = DeleteOptions {
                    propagation: Propagation::Foreground,
                    ..Default::default()
                };
                let _ = store.delete(&o.key()?, &opts).await;
            }
            until(limit, Duration::from_millis(10), || async {
                store
                    .list(&ListQuery {
                        kind,
                        ..Default::default()
                    })
                    .await
                    .is_ok_and(|l| l.items.is_empty())
            })
            .await;
        }
        Ok(())
    }

    /// Deletes everything, stops the controllers, releases the image and removes the dir.
    pub async fn stop(self) -> anyhow::Result<()> {
        let deleted = self.delete_all(Duration::from_secs(120)).await;
        if let Some(r) = self.running {
            r.stop().await;
        }
        crate::snapshot::choose::release(self.daemon_cfg.layout.root());
        drop(self.store);
        remove_scratch(&self.dir);
        deleted
    }
}

/// Removes a scratch dir, clearing the immutable flag a State's tree may carry first.
fn remove_scratch(dir: &Path) {
    if std::fs::remove_dir_all(dir).is_err() {
        crate::snapshot::clear_immutable_tree(dir);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A Container's status as the store has it now.
pub async fn container_status(
    store: &SqliteStore,
    key: &tend_schema::ObjectKey,
) -> Option<tend_schema::kinds::container::ContainerStatus> {
    let o = store.get(key).await.ok()?;
    serde_json::from_value(o.status).ok()
}

/// Waits up to a minute until `pred` holds for the Container's status, reading the store every
/// `every` (fine for latency figures; coarser where a busy poll would steal the daemon's CPU).
pub async fn until_status(
    store: &SqliteStore,
    key: &tend_schema::ObjectKey,
    every: Duration,
    pred: impl Fn(&tend_schema::kinds::container::ContainerStatus) -> bool,
) -> anyhow::Result<tend_schema::kinds::container::ContainerStatus> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = container_status(store, key).await.filter(|s| pred(s)) {
            return Ok(s);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "{key}: timed out");
        tokio::time::sleep(every).await;
    }
}
