//! The seams the Container controller reaches the host through: a container runtime (native
//! shim + cgroup, later Docker) and the network attachments of a container.

use async_trait::async_trait;
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::time::Duration;
use tend_schema::kinds::container::{ContainerSpec, NetworkStatusEntry};
use tend_schema::Time;

/// A driver error, boxed: the runtime and attachment implementations keep their own enums.
pub type DriverError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A runtime failure the controller shows as a condition rather than as a bare reconcile error.
/// Runtimes return it boxed in a [`DriverError`]; [`RuntimeFault::of`] finds it again.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeFault {
    /// The runtime's daemon cannot be reached (down, restarting, a call timed out): the
    /// Container shows Ready=Unknown reason `RuntimeUnavailable` and is retried.
    #[error("{runtime} runtime unavailable: {message}")]
    Unavailable {
        runtime: &'static str,
        message: String,
    },
    /// The workload cannot be started as declared (e.g. `ImageNotFound`): Ready=False with
    /// `reason`, retried later (the user may fix the host, e.g. import the image).
    #[error("{message}")]
    Refused {
        reason: &'static str,
        message: String,
    },
}

impl RuntimeFault {
    /// The fault inside a driver error, if it is one.
    pub fn of(e: &DriverError) -> Option<&RuntimeFault> {
        e.downcast_ref::<RuntimeFault>()
    }

    /// True for [`RuntimeFault::Unavailable`] inside `e`.
    pub fn is_unavailable(e: &DriverError) -> bool {
        matches!(Self::of(e), Some(RuntimeFault::Unavailable { .. }))
    }
}

/// Everything a runtime needs to start one workload, resolved by the reconciler.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    /// The Container's uid: the runtime names its host objects after it.
    pub uid: String,
    /// `namespace/name`, for logs and labels only.
    pub name: String,
    /// The generation this workload is started for (recorded, so a spec change is noticed).
    pub generation: i64,
    pub spec: ContainerSpec,
    /// The root filesystem (a Sandbox's path); `None` is the host filesystem.
    pub rootfs: Option<PathBuf>,
    /// The network namespace to join; `None` keeps the host's.
    pub netns: Option<PathBuf>,
}

/// A running workload as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The generation it was started for.
    pub generation: i64,
    /// Host pid of the workload.
    pub pid: u32,
    /// Process start time (clock ticks since boot): with the pid, an identity no recycled pid
    /// can take over.
    pub start_time: u64,
    pub started_at: Option<Time>,
}

/// How a workload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The generation it was started for.
    pub generation: i64,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    /// Why it never started, if it did not (e.g. `execve: No such file or directory`).
    pub error: Option<String>,
}

impl Exit {
    /// True for a clean exit (code 0).
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.oom_killed
    }

    /// `OOMKilled`, `Completed` or `Error`, the reasons `lastState.reason` carries.
    pub fn reason(&self) -> &'static str {
        if self.oom_killed {
            "OOMKilled"
        } else if self.succeeded() {
            "Completed"
        } else {
            "Error"
        }
    }

    /// How long it ran, when both ends are known.
    pub fn ran_for(&self) -> Option<Duration> {
        let (a, b) = (self.started_at?, self.finished_at?);
        (b - a).to_std().ok()
    }
}

/// What the host has for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Nothing was started (or everything was removed).
    Absent,
    /// The workload runs.
    Running(Running),
    /// The workload has ended and its exit is being recorded right now: look again shortly.
    Exiting { generation: i64 },
    /// The workload ended; this is the record.
    Exited(Exit),
    /// A workload was started but neither it nor its supervisor lives and no exit was
    /// recorded (the supervisor was killed): the exit status is unknown.
    Lost { generation: i64 },
}

/// One container runtime (native: shim + cgroup; docker: a Docker container). Every method is
/// idempotent and keyed by the Container's uid; host objects carry the daemon's instance so a
/// runtime only ever lists and removes its own.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// `native`, `docker`: for conditions and logs.
    fn name(&self) -> &'static str;

    /// What the host has for `uid`.
    async fn inspect(&self, uid: &str) -> Result<Observed, DriverError>;

    /// Starts the workload (creating its cgroup etc.); the previous run must have ended.
    async fn start(&self, w: &WorkloadSpec) -> Result<Running, DriverError>;

    /// Stops the workload: SIGTERM, up to `grace`, then SIGKILL; returns its exit when known.
    async fn stop(&self, uid: &str, grace: Duration) -> Result<Option<Exit>, DriverError>;

    /// Removes every host object of `uid` (kills what is left first). Missing is fine.
    async fn remove(&self, uid: &str) -> Result<(), DriverError>;

    /// uids that have host objects of this runtime and this daemon instance (orphan sweep).
    async fn list_owned(&self) -> Result<Vec<String>, DriverError>;

    /// Puts back what changed behind tend's back around a running workload (a limit rewritten,
    /// a cgroup deleted); returns one line per repair, empty when nothing had drifted.
    async fn repair(&self, w: &WorkloadSpec, running: &Running)
        -> Result<Vec<String>, DriverError>;

    /// A future that resolves when `running` exits, without polling (pidfd, event stream);
    /// `None` when it is already gone.
    fn exited(&self, uid: &str, running: &Running) -> Option<BoxFuture<'static, ()>>;

    /// The runtime's own id of the workload of `uid` as last seen by `inspect`/`start` (Docker's
    /// container id; `status.containerID`). `None` for runtimes without one.
    fn container_id(&self, _uid: &str) -> Option<String> {
        None
    }
}

/// A container's network attachments, as far as they are ready.
#[derive(Debug, Clone, PartialEq)]
pub enum Attach {
    /// Attached: the namespace to join (None: no networks, stay on the host's) and one status
    /// entry per network.
    Ready {
        netns: Option<PathBuf>,
        networks: Vec<NetworkStatusEntry>,
    },
    /// A network is not ready yet: the container stays Pending with this reason and message.
    Waiting { reason: String, message: String },
}

/// Network attachments of containers (netns, veths, leased IPs), implemented by the Network
/// side. Both methods are idempotent.
#[async_trait]
pub trait Attachments: Send + Sync + 'static {
    /// Makes the attachments of container `uid` match `spec.networks`.
    async fn ensure(
        &self,
        namespace: &str,
        uid: &str,
        spec: &ContainerSpec,
    ) -> Result<Attach, DriverError>;

    /// Removes every attachment of `uid` (namespace, veths, leases). Missing is fine.
    async fn remove(&self, uid: &str) -> Result<(), DriverError>;
}

/// The attachments of a build without network support: containers without networks run on the
/// host's network; containers with networks wait (`WaitingForNetwork`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoNetworks;

#[async_trait]
impl Attachments for NoNetworks {
    async fn ensure(
        &self,
        _namespace: &str,
        _uid: &str,
        spec: &ContainerSpec,
    ) -> Result<Attach, DriverError> {
        Ok(match spec.networks.first() {
            None => Attach::Ready {
                netns: None,
                networks: vec![],
            },
            Some(n) => Attach::Waiting {
                reason: "WaitingForNetwork".into(),
                message: format!(
                    "network {:?}: network attachments are not available in this daemon",
                    n.name
                ),
            },
        })
    }

    async fn remove(&self, _uid: &str) -> Result<(), DriverError> {
        Ok(())
    }
}
