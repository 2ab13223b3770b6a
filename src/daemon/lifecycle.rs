//! The daemon's lifecycle: one per state dir, held by an exclusive lock and announced in
//! `engine.json`; built, served, and stopped cleanly on SIGTERM or SIGINT.

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tend_schema::store::SqliteStore;

use super::{DaemonConfig, Layout};

/// The API's files in the state dir.
pub fn api_paths(layout: &Layout) -> crate::api::ApiPaths {
    crate::api::ApiPaths {
        socket: layout.socket(),
        tokens: layout.tokens(),
        ca_cert: layout.ca_cert(),
        ca_key: layout.ca_key(),
    }
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
    /// Takes the state dir's lock without waiting; a second daemon gets a clear error.
    pub fn acquire(layout: &Layout) -> anyhow::Result<Self> {
        let (dir, path) = (layout.root(), layout.lock());
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            let holder = std::fs::read_to_string(layout.engine_json())
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
            engine_json: layout.engine_json(),
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

/// What `tend serve` runs with besides the daemon's own configuration.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Also serve the API on this TCP address (bearer tokens, TLS).
    pub listen: Option<std::net::SocketAddr>,
    /// Extra names for the listener's certificate (`--tls-san`).
    pub tls_sans: Vec<String>,
    /// What namespace-limited tokens may ask for (`--allow-source-dir`).
    pub policy: tend_schema::policy::Policy,
}

/// Runs the daemon until SIGTERM or SIGINT: takes the state lock, builds and starts every
/// controller and the API, announces itself in `engine.json`, and on a signal stops the API
/// and the controllers, releases the snapshot image and removes the announcement.
///
/// # Errors
/// Another daemon holds the lock, the store cannot be opened, a driver cannot start, or a
/// listener cannot be bound.
pub async fn serve(
    store: Arc<SqliteStore>,
    cfg: DaemonConfig,
    opts: ServeOptions,
) -> anyhow::Result<ExitCode> {
    let layout = cfg.layout.clone();
    let dir = layout.root();
    let lock = StateLock::acquire(&layout)?;
    // A listener that cannot be had fails the start before anything touches the host.
    if let Some(addr) = opts.listen {
        std::net::TcpListener::bind(addr).with_context(|| format!("--listen {addr}"))?;
    }
    // From here a failed start releases what it set up (the snapshot image).
    let started = async {
        let daemon = super::Daemon::build(store.clone(), &cfg).await?;
        // /readyz turns true once every controller has passed its start-up observation pass.
        let ready = Arc::new(AtomicBool::new(false));
        let api = crate::api::bind(crate::api::ApiConfig {
            paths: api_paths(&layout),
            listen: opts.listen,
            tls_sans: opts.tls_sans.clone(),
            runtimes: Some(daemon.runtimes.clone()),
            store: store.clone(),
            ready: ready.clone(),
            metrics: Some({
                let (controllers, images) =
                    (daemon.runtime.metrics_renderer(), daemon.images.clone());
                Arc::new(move || controllers() + &images.metrics())
            }),
            limits: Default::default(),
            policy: opts.policy.clone(),
            images: Some(daemon.images.clone()),
        })
        .await?;
        anyhow::Ok((daemon, ready, api))
    };
    let (daemon, ready, api) = match started.await {
        Ok(parts) => parts,
        Err(e) => {
            crate::snapshot::choose::release(dir);
            return Err(e);
        }
    };
    let shutdown = shutdown_signal();
    super::systemd::spawn(daemon.runtime.ready(), store.clone());
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
    super::systemd::stopping();
    let _ = stop_tx.send(true);
    runtime_task.await??;
    api_task.await??;
    crate::snapshot::choose::release(dir);
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
