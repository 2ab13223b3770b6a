//! `tend serve`: the daemon — one per state dir, announced in `engine.json`.

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also serve the API on this TCP address (bearer token required), e.g. 127.0.0.1:6443.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
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
    let store = super::open(dir).await?;
    let lock = StateLock::acquire(dir)?;
    let db = store.path().display().to_string();
    // No start-up observation pass is wired yet, so the daemon is ready once it listens.
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let api = crate::api::bind(crate::api::ApiConfig {
        state_dir: dir.to_path_buf(),
        listen: args.listen,
        store,
        ready: ready.clone(),
        metrics: None,
        limits: Default::default(),
    })
    .await?;
    let endpoint = format!("unix://{}", api.socket().display());
    let tcp = api.tcp_addr().map(|a| a.to_string());
    lock.announce_listeners(Some(endpoint.clone()), tcp.clone())?;
    ready.store(true, std::sync::atomic::Ordering::Release);
    tracing::info!(state_dir = %dir.display(), db, "tend serve started");
    eprintln!(
        "tend serve: state dir {}, pid {}, API on {endpoint}{}",
        dir.display(),
        std::process::id(),
        tcp.map(|a| format!(" and https://{a}")).unwrap_or_default()
    );
    api.run(shutdown_signal()).await?;
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
