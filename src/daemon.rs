//! The daemon's wiring: the store, the controller runtime and every registered controller.
//!
//! Each kind's controller is registered by one function below; the drivers it needs are
//! probed here, once, at start-up.

use std::path::PathBuf;
use std::sync::Arc;
use tend_controllers::{ControllerConfig, Runtime, RuntimeConfig};
use tend_schema::store::{SqliteStore, Store};

/// What `tend serve` was asked for.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    /// This state dir's instance id (8 hex digits, `<state-dir>/instance-id`). Every host object
    /// tend creates carries it (in its name, link alias or label), and orphan sweeps only ever
    /// consider objects with this daemon's id — so daemons with different state dirs (tests run
    /// many at once) never remove each other's objects.
    pub instance: String,
    /// Path of this binary, for spawning `tend shim`.
    pub exe: PathBuf,
    pub controller: ControllerConfig,
    /// Snapshot backend choice for States and Sandboxes.
    pub snapshot: crate::snapshot::register::SnapshotConfig,
}

/// Reads `<state-dir>/instance-id`, creating it with a random id on first use.
pub fn instance_id(state_dir: &std::path::Path) -> std::io::Result<String> {
    let path = state_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() == 8 && s.trim().chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(s.trim().to_string())
        }
        _ => {
            let id = format!("{:08x}", rand::random::<u32>());
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{id}\n"))?;
            std::fs::rename(&tmp, &path)?;
            Ok(id)
        }
    }
}

/// A running daemon's parts that the API needs.
pub struct Daemon {
    pub runtime: Runtime,
    pub store: Arc<SqliteStore>,
}

impl Daemon {
    /// Probes the host and registers every controller.
    pub async fn build(store: Arc<SqliteStore>, cfg: &DaemonConfig) -> anyhow::Result<Self> {
        let dyn_store: Arc<dyn Store> = store.clone();
        let mut runtime = Runtime::new(dyn_store.clone(), RuntimeConfig::default());
        // States and Sandboxes (issue 4).
        crate::snapshot::register::register_snapshots(&mut runtime, dyn_store.clone(), cfg).await?;
        // Network (issue 5): bridges, leases, the attachment component that the Container
        // controller uses (`network.attacher`), and the repairer of drifted attachments.
        let network = crate::net::adapter::register_network(&mut runtime, cfg).await?;
        // Controllers for each kind are registered here (issues 4–7).
        // Containers, native runtime (issue 6): shim + cgroups.
        let attachments = Arc::new(tend_controllers::container::NetworkAttachments {
            attacher: network.attacher.clone(),
            ctx: runtime.context(),
        });
        // Containers, docker runtime (issue 7): connects lazily (tend runs with dockerd down);
        // Docker's events wake the Container controller.
        let docker = crate::runtime_docker::connect(cfg, runtime.context())?;
        let containers =
            crate::runtime_native::register(&mut runtime, cfg, attachments, Some(docker.clone()))?;
        docker.watch_events(containers);
        Ok(Self { runtime, store })
    }
}
