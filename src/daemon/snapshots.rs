//! Wiring of States and Sandboxes: choose the backend once, register both controllers, and start
//! the inotify watch on the class dirs, the read-only check of State trees and the orphan sweep.

use std::sync::Arc;
use std::time::Duration;

use tend_controllers::sandbox::SandboxReconciler;
use tend_controllers::snapshot::{SnapshotDriver, Sweeper};
use tend_controllers::state::StateReconciler;
use tend_controllers::Runtime;
use tend_schema::store::Store;

use super::DaemonConfig;
use crate::image::auth::Credentials;
use crate::image::ImageStore;
use crate::snapshot::adapter::Adapter;
use crate::snapshot::choose::choose;
use crate::snapshot::SnapshotBackend;

/// Registers the State and Sandbox controllers: chooses the backend, then starts the inotify
/// watch on the class dirs and the orphan sweep; both stop when the runtime is gone.
pub async fn register_snapshots(
    runtime: &mut Runtime,
    store: Arc<dyn Store>,
    cfg: &DaemonConfig,
) -> anyhow::Result<(Arc<Adapter>, ImageStore)> {
    let (state_dir, instance, snap) = (
        cfg.layout.root().to_path_buf(),
        cfg.instance.clone(),
        cfg.snapshot.clone(),
    );
    let (backend, why) =
        crate::util::blocking(move || choose(&state_dir, &instance, &snap)).await?;
    tracing::info!(backend = backend.name(), %why, "snapshot backend chosen");
    eprintln!("tend serve: snapshot backend {why}");
    let root = backend.root().to_path_buf();
    let adapter = Arc::new(Adapter::new(Arc::new(backend), cfg.layout.root())?);
    let driver: Arc<dyn SnapshotDriver> = adapter.clone();
    let images = image_store(cfg)?;
    let states = runtime.register(
        Arc::new(StateReconciler {
            driver: driver.clone(),
            images: Some(Arc::new(images.clone())),
        }),
        cfg.controller.clone(),
    );
    let sandboxes = runtime.register(
        Arc::new(SandboxReconciler {
            driver: driver.clone(),
        }),
        cfg.controller.clone(),
    );
    let sweeper = Arc::new(Sweeper::new(
        driver.clone(),
        store,
        cfg.snapshot.orphan_grace,
    ));
    let wake = Arc::new(tokio::sync::Notify::new());
    let every =
        (cfg.snapshot.orphan_grace / 3).clamp(Duration::from_millis(100), Duration::from_secs(10));
    let mut alive = runtime.ready();
    let read_only = read_only_check(driver, states.clone());
    let watch = crate::snapshot::watch::watch(&root, states, sandboxes, wake.clone())?;
    tokio::spawn(async move {
        let sweep = async {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = wake.notified() => {}
                }
                if let Err(e) = sweeper.sweep().await {
                    tracing::warn!(error = %e, "orphan tree sweep failed");
                }
            }
        };
        // The runtime drops its readiness sender when it stops: so do we.
        let gone = async { while alive.changed().await.is_ok() {} };
        tokio::select! {
            _ = sweep => {}
            _ = watch => {}
            _ = read_only => {}
            _ = gone => {}
        }
    });
    Ok((adapter, images))
}

/// The image blob store under the state dir, with the registry credentials the flags name.
fn image_store(cfg: &DaemonConfig) -> anyhow::Result<ImageStore> {
    let creds = match &cfg.registry_auth {
        // Named on the command line: a file that does not parse stops the start.
        Some(p) => Credentials::load(p).map_err(anyhow::Error::msg)?,
        None => default_credentials(),
    };
    Ok(ImageStore::new(&cfg.layout.images(), creds)?)
}

/// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` when present; one that does not
/// parse is logged and ignored (the user did not name it).
fn default_credentials() -> Credentials {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")));
    let Some(file) = dir.map(|d| d.join("config.json")).filter(|p| p.is_file()) else {
        return Credentials::default();
    };
    Credentials::load(&file).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "registry credentials ignored");
        Credentials::default()
    })
}

/// How often every State tree's read-only flag is looked at.
const READ_ONLY_CHECK: Duration = Duration::from_secs(1);

/// A State tree made writable behind tend's back raises no inotify event (btrfs' read-only
/// subvolume flag), so its flag is looked at every [`READ_ONLY_CHECK`]: one directory read and
/// one flag read per tree, and a writable one wakes its State, which makes it read-only again.
async fn read_only_check(driver: Arc<dyn SnapshotDriver>, states: tend_controllers::Trigger) {
    use tend_controllers::snapshot::TreeClass;
    let mut tick = tokio::time::interval(READ_ONLY_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(uids) = driver.list(TreeClass::States).await else {
            continue; // the sweep and the reconciles report a broken state dir
        };
        for uid in uids {
            if let Ok(Some(false)) = driver.stat(TreeClass::States, &uid).await {
                states.uid(&uid);
            }
        }
    }
}
