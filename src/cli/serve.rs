//! `tend serve`: the daemon — one per state dir, announced in `engine.json`.

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reconciles running at once, per controller.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Every object is reconciled at least this often (seconds), to find unreported drift.
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
}

/// The daemon's announcement: who runs, since when, where to reach it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct EngineInfo {
    pub pid: u32,
    pub endpoint: Option<String>,
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
        let info = EngineInfo {
            pid: std::process::id(),
            endpoint,
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
    use tokio::signal::unix::{signal, SignalKind};
    let store = super::open(dir).await?;
    let lock = StateLock::acquire(dir)?;
    let cfg = crate::daemon::DaemonConfig {
        state_dir: dir.to_path_buf(),
        instance: crate::daemon::instance_id(dir)?,
        exe: std::env::current_exe().context("locating the tend binary for `tend shim`")?,
        controller: tend_controllers::ControllerConfig {
            concurrency: args.concurrency,
            resync: std::time::Duration::from_secs(args.resync_seconds.max(1)),
        },
    };
    let daemon = crate::daemon::Daemon::build(store.clone(), &cfg).await?;
    // Signal handlers exist before engine.json does: from then on SIGTERM shuts down cleanly.
    let (mut term, mut int) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    lock.announce(None)?;
    tracing::info!(state_dir = %dir.display(), db = %store.path().display(), instance = %cfg.instance, "tend serve started");
    eprintln!(
        "tend serve: state dir {}, pid {}",
        dir.display(),
        std::process::id()
    );
    daemon
        .runtime
        .run(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
        .await?;
    eprintln!("tend serve: shutting down");
    drop(lock);
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
