//! The daemon: which drivers and controllers run ([`Daemon::build`]), its lifecycle (state
//! lock, `engine.json`, signals, shutdown: [`lifecycle`]) and the state dir's layout
//! ([`layout`]). The only module that knows every driver; drivers never import it.

mod containers;
pub mod layout;
pub mod lifecycle;
pub mod network;
mod snapshots;
mod systemd;

use std::path::PathBuf;
use std::sync::Arc;

use tend_controllers::network::Attacher;
use tend_controllers::{ControllerConfig, Runtime, RuntimeConfig};
use tend_schema::store::{SqliteStore, Store};

pub use layout::Layout;

/// What `tend serve` (or an in-process bench) was asked for.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub layout: Layout,
    /// This state dir's instance id (8 hex digits, [`Layout::instance_id`]). Every host object
    /// tend creates carries it (in its name, link alias or label), and orphan sweeps only ever
    /// consider objects with this daemon's id — so daemons with different state dirs (tests run
    /// many at once) never remove each other's objects.
    pub instance: String,
    /// Path of this binary, for spawning `tend shim`.
    pub exe: PathBuf,
    pub controller: ControllerConfig,
    /// Snapshot backend choice for States and Sandboxes.
    pub snapshot: crate::snapshot::choose::SnapshotConfig,
    /// Where every probe run is recorded (`tend bench probes`); `None` records nothing.
    pub probe_timings: Option<Arc<crate::probe::ProbeTimings>>,
    /// How often native workloads' usage is sampled (`tend serve --usage-interval`).
    pub usage_interval: std::time::Duration,
    /// Log rotation of native containers without `spec.logs` (`--log-max-size/--log-max-files`).
    pub log: crate::shim::LogLimits,
    /// A docker `config.json` with registry credentials; `None`: `$DOCKER_CONFIG/config.json`
    /// or `~/.docker/config.json` when present.
    pub registry_auth: Option<PathBuf>,
    /// Host id ranges for `securityContext.userNamespace` (`--userns-first-id/--userns-ranges`).
    pub id_pool: tend_schema::store::IdPool,
}

impl DaemonConfig {
    /// The defaults for the state dir `layout`: its instance id (made on first use), this
    /// binary, default controller and snapshot settings.
    ///
    /// # Errors
    /// The instance id cannot be read or written, or this binary cannot be located.
    pub fn new(layout: Layout) -> std::io::Result<Self> {
        Ok(Self {
            instance: instance_id(&layout)?,
            layout,
            exe: std::env::current_exe()?,
            controller: ControllerConfig::default(),
            snapshot: Default::default(),
            probe_timings: None,
            usage_interval: crate::runtime_native::usage::DEFAULT_INTERVAL,
            log: Default::default(),
            registry_auth: None,
            id_pool: Default::default(),
        })
    }
}

/// Reads the state dir's instance id, creating it with a random id on first use.
pub fn instance_id(layout: &Layout) -> std::io::Result<String> {
    let path = layout.instance_id();
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

/// A built daemon: the controller runtime with every controller registered, and the parts the
/// API and benches reach into.
pub struct Daemon {
    pub runtime: Runtime,
    pub store: Arc<SqliteStore>,
    /// The Network side's attachment component (the Container controller's network seam).
    pub attacher: Arc<Attacher>,
    /// The container runtimes (logs and exec for the API).
    pub runtimes: tend_controllers::container::Runtimes,
    /// `tend image prune` and the image-content metrics.
    pub images: Arc<crate::image::prune::Pruner>,
}

impl Daemon {
    /// Probes the host and registers every controller: States and Sandboxes, Networks and
    /// the attachment repairer, Containers on the native and Docker runtimes.
    pub async fn build(store: Arc<SqliteStore>, cfg: &DaemonConfig) -> anyhow::Result<Self> {
        let dyn_store: Arc<dyn Store> = store.clone();
        let mut runtime = Runtime::new(dyn_store.clone(), RuntimeConfig::default());
        let (snapshots, images) =
            snapshots::register_snapshots(&mut runtime, dyn_store.clone(), cfg).await?;
        let images = Arc::new(crate::image::prune::Pruner::new(
            images,
            (*snapshots).clone(),
            dyn_store,
        ));
        let attacher = network::register_network(&mut runtime, cfg).await?;
        let attachments = Arc::new(tend_controllers::container::NetworkAttachments {
            attacher: attacher.clone(),
            ctx: runtime.context(),
        });
        let runtimes = containers::register_containers(&mut runtime, cfg, attachments, snapshots)?;
        Ok(Self {
            runtime,
            store,
            attacher,
            runtimes,
            images,
        })
    }
}
