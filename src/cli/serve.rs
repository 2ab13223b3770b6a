//! `tend serve`: the daemon — one per state dir, announced in `engine.json`.

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reconciles running at once, per controller.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Every object is reconciled at least this often (seconds), to find unreported drift.
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
    /// Also serve the API on this TCP address (bearer token required), e.g. 127.0.0.1:6443.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Snapshot backend for States and Sandboxes: auto (btrfs, via an embedded loop image when
    /// the state dir is not on btrfs), btrfs, or copy.
    #[arg(long, default_value = "auto")]
    pub snapshot_backend: crate::snapshot::BackendMode,
    /// Size of the embedded btrfs image when one is created (sparse), e.g. 4Gi, 512Mi.
    #[arg(long, default_value = "4Gi", value_parser = tend_schema::Quantity::parse)]
    pub btrfs_image_size: tend_schema::Quantity,
    /// Use this existing btrfs mount for snapshots instead of an image.
    #[arg(long)]
    pub btrfs_root: Option<PathBuf>,
    /// Seconds a tree no object owns is left alone before it is removed.
    #[arg(long, default_value_t = 30)]
    pub orphan_grace_seconds: u64,
}

/// The daemon's announcement: who runs, since when, where to reach it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct EngineInfo {
    pub pid: u32,
    pub endpoint: Option<String>,
    /// The API's TCP address (`tend serve --listen`), for `tend kubeconfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    pub started_at: tend_schema::Time,
    pub version: String,
}

/// Holds the state dir's exclusive lock for the daemon's lifetime.
pub struct StateLock {
    _lock: Flock<File>,
    engine_json: PathBuf,
}

impl StateLock {
    /// Takes `<dir>/tend.lock` without waiting; a second daemon gets a clear error.
    pub fn acquire(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("tend.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            let holder = std::fs::read_to_string(dir.join("engine.json"))
                .ok()
                .and_then(|s| serde_json::from_str::<EngineInfo>(&s).ok())
                .map(|e| format!(" (pid {})", e.pid))
                .unwrap_or_default();
            anyhow::anyhow!(
                "another tend serve{holder} is already running on {} ({errno}); stop it or use --state-dir",
                dir.display()
            )
        })?;
        Ok(Self {
            _lock: lock,
            engine_json: dir.join("engine.json"),
        })
    }

    /// Writes `engine.json` atomically.
    pub fn announce(&self, endpoint: Option<String>) -> anyhow::Result<()> {
        self.announce_listeners(endpoint, None)
    }

    /// Writes `engine.json` atomically, with the API's TCP address when there is one.
    pub fn announce_listeners(
        &self,
        endpoint: Option<String>,
        listen: Option<String>,
    ) -> anyhow::Result<()> {
        let info = EngineInfo {
            pid: std::process::id(),
            endpoint,
            listen,
            started_at: tend_schema::meta::now(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let tmp = self.engine_json.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&info)?)?;
        std::fs::rename(&tmp, &self.engine_json)?;
        Ok(())
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.engine_json);
    }
}

pub async fn run(dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    crate::failpoint::init(dir.join("failpoints"));
    let store = super::open(dir).await?;
    let lock = StateLock::acquire(dir)?;
    let cfg = crate::daemon::DaemonConfig {
        state_dir: dir.to_path_buf(),
        instance: crate::daemon::instance_id(dir).context("reading the instance id")?,
        exe: std::env::current_exe().context("locating the tend binary")?,
        controller: tend_controllers::ControllerConfig {
            concurrency: args.concurrency,
            resync: std::time::Duration::from_secs(args.resync_seconds),
        },
        snapshot: crate::snapshot::register::SnapshotConfig {
            mode: args.snapshot_backend,
            image_size: args.btrfs_image_size.value(),
            btrfs_root: args.btrfs_root,
            orphan_grace: std::time::Duration::from_secs(args.orphan_grace_seconds),
        },
    };
    let daemon = crate::daemon::Daemon::build(store.clone(), &cfg).await?;
    let shutdown = shutdown_signal();
    // /readyz turns true once every controller has passed its start-up observation pass.
    let ready = Arc::new(AtomicBool::new(false));
    let api = crate::api::bind(crate::api::ApiConfig {
        state_dir: dir.to_path_buf(),
        listen: args.listen,
        store: store.clone(),
        ready: ready.clone(),
        metrics: Some(Arc::new(daemon.runtime.metrics_renderer())),
        limits: Default::default(),
    })
    .await?;
    let mut gate = daemon.runtime.ready();
    tokio::spawn(async move {
        if gate.wait_for(|v| *v).await.is_ok() {
            ready.store(true, Ordering::Release);
        }
    });
    let endpoint = format!("unix://{}", api.socket().display());
    let tcp = api.tcp_addr().map(|a| a.to_string());
    lock.announce_listeners(Some(endpoint.clone()), tcp.clone())?;
    tracing::info!(state_dir = %dir.display(), db = %store.path().display(), "tend serve started");
    eprintln!(
        "tend serve: state dir {}, pid {}, API on {endpoint}{}",
        dir.display(),
        std::process::id(),
        tcp.map(|a| format!(" and https://{a}")).unwrap_or_default()
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let api_task = tokio::spawn(api.run(stopped(stop_rx.clone())));
    let runtime_task = tokio::spawn(daemon.runtime.run(stopped(stop_rx)));
    shutdown.await;
    eprintln!("tend serve: shutting down");
    let _ = stop_tx.send(true);
    runtime_task.await??;
    api_task.await??;
    crate::snapshot::register::release(dir);
    drop(lock);
    Ok(ExitCode::SUCCESS)
}

/// Registers for SIGTERM and SIGINT now (so a signal from this moment on is not fatal) and
/// returns a future that resolves when one arrives.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers =
        signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)));
    async move {
        let Ok((mut term, mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop tend with SIGKILL");
            return std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
