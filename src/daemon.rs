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
    /// Path of this binary, for spawning `tend shim`.
    pub exe: PathBuf,
    pub controller: ControllerConfig,
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
        let runtime = Runtime::new(dyn_store, RuntimeConfig::default());
        let _ = cfg;
        // Controllers for each kind are registered here (issues 4–7).
        Ok(Self { runtime, store })
    }
}
