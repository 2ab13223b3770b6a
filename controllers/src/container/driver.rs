//! The seams the Container controller reaches the host through: a container runtime (native
//! shim + cgroup, later Docker) and the network attachments of a container.

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tend_schema::kinds::container::{
    ContainerSpec, NetworkStatusEntry, Runtime, UserNamespaceStatus,
};
use tend_schema::Time;

use super::exec::{ExecLimits, ExecOutput, ExecSession};

/// What a runtime or attachment call failed with. The first variants are the faults the
/// controller and the API act on (a condition, an HTTP status); everything else carries the
/// driver's own error, shown as it is.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
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
    /// The runtime has nothing for this uid (logs or exec of a container it never ran).
    #[error("{message}")]
    NotFound { message: String },
    /// The workload does not run (exec).
    #[error("{message}")]
    NotRunning { message: String },
    /// A call bounded by a deadline did not finish in time (a collected exec).
    #[error("{what} timed out after {after:?}")]
    TimedOut { what: &'static str, after: Duration },
    /// Any other failure of the driver, with its own error.
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl DriverError {
    /// Wraps a driver's own error.
    pub fn failed(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Failed(Box::new(e))
    }

    /// True for [`DriverError::Unavailable`].
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// True for the faults shown as a condition rather than as a bare reconcile error.
    pub fn is_fault(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Refused { .. })
    }
}

impl From<String> for DriverError {
    fn from(message: String) -> Self {
        Self::Failed(message.into())
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
    /// The host ids of its user namespace (`securityContext.userNamespace`), allocated by the
    /// controller; `None` runs without one.
    pub user_namespace: Option<UserNamespaceStatus>,
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

/// Which log lines to read (the Kubernetes pod-log options).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only the last N lines (before following).
    pub tail: Option<usize>,
    /// Only lines newer than this.
    pub since: Option<Duration>,
    /// The run before the current one.
    pub previous: bool,
    /// Keep sending new lines until the workload has ended.
    pub follow: bool,
    /// Each line with its timestamp (and stream).
    pub timestamps: bool,
}

/// A workload's output as it is read: chunks of whole lines.
pub type LogStream = BoxStream<'static, Result<Vec<u8>, DriverError>>;

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

    /// The output of the workload of `uid`, as `q` asks; with `follow`, the stream ends when
    /// the workload has ended and everything was sent.
    async fn logs(&self, uid: &str, q: &LogQuery) -> Result<LogStream, DriverError>;

    /// Starts `argv` inside the running workload of `uid` (its namespaces and cgroup) and
    /// streams it; with `stdin` the session takes the command's input, else it reads EOF.
    /// The [`ExecSession`] guarantees (bounded reads, kill on drop) are the runtime's to keep.
    ///
    /// # Errors
    /// `NotRunning`/`NotFound` when there is no running workload, before anything started. A
    /// command that cannot be executed (no such file) is not an error: it writes why on
    /// stderr and exits 126 or 127, as a shell would.
    async fn exec(
        &self,
        uid: &str,
        argv: &[String],
        stdin: bool,
    ) -> Result<ExecSession, DriverError>;

    /// Runs `argv` to its end within `limits` (a probe): [`exec`](Self::exec) without stdin,
    /// collected by [`super::exec::collect`], the command killed at the timeout.
    async fn exec_collected(
        &self,
        uid: &str,
        argv: &[String],
        limits: ExecLimits,
    ) -> Result<ExecOutput, DriverError> {
        let session = self.exec(uid, argv, false).await?;
        super::exec::collect(session, limits).await
    }

    /// The runtime's own id of the workload of `uid` as last seen by `inspect`/`start` (Docker's
    /// container id; `status.containerID`). `None` for runtimes without one.
    fn container_id(&self, _uid: &str) -> Option<String> {
        None
    }

    /// The last usage sample of the workload of `uid` (`status.usage`), from the runtime's own
    /// periodic sampler; `None` when it has none (not running, not sampled yet, or a runtime
    /// that does not sample).
    fn usage(&self, _uid: &str) -> Option<tend_schema::kinds::container::ContainerUsage> {
        None
    }

    /// The last few samples of the workload of `uid`, oldest first (the web view's sparklines);
    /// empty for a runtime that does not sample.
    fn usage_history(&self, _uid: &str) -> Vec<tend_schema::kinds::container::ContainerUsage> {
        Vec::new()
    }
}

/// The runtimes of one daemon, and the one place that decides which serves a Container: the
/// controller, the API's logs and exec, and anything else ask [`Runtimes::serving`].
#[derive(Clone)]
pub struct Runtimes {
    pub native: Arc<dyn ContainerRuntime>,
    /// `spec.runtime: docker`, when this daemon has it.
    pub docker: Option<Arc<dyn ContainerRuntime>>,
}

impl Runtimes {
    /// The runtime that runs `spec`, if this daemon has it.
    pub fn serving(&self, spec: &ContainerSpec) -> Option<&Arc<dyn ContainerRuntime>> {
        match spec.runtime {
            Runtime::Native => Some(&self.native),
            Runtime::Docker => self.docker.as_ref(),
        }
    }

    /// Every runtime (for the orphan sweep and a runtime switch).
    pub fn all(&self) -> Vec<&Arc<dyn ContainerRuntime>> {
        std::iter::once(&self.native)
            .chain(self.docker.iter())
            .collect()
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
