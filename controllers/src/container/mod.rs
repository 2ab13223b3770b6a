//! The Container controller: runs each Container's workload through a [`ContainerRuntime`]
//! (native shim + cgroup; Docker later), keeps it as declared, and reports what it observes.
//!
//! # What it does per Container
//! - resolves the rootfs: `{sandbox: NAME}` waits (Pending, `WaitingForSandbox`) until that
//!   Sandbox is Ready and uses its `status.path`; `{state: NAME}` creates an owned Sandbox
//!   `<container>-rootfs` (the owner GC deletes it with the container) and uses it the same way;
//!   omitted is the host filesystem;
//! - ensures the network attachments ([`Attachments`]), then starts the workload;
//! - notices exits through [`ContainerRuntime::exited`] (pidfd; no polling) and restarts per
//!   `restartPolicy` with exponential backoff (`CrashLoopBackOff` while backing off; the count
//!   resets once a run lasted [`ContainerConfig::backoff_reset`]);
//! - replaces the workload when the generation changes (SIGTERM, grace, SIGKILL, start);
//! - repairs drift around a running workload on every reconcile (resync included);
//! - on delete: stops the same way, removes the runtime's host objects and the attachments.
//!
//! At start-up ([`Reconciler::observe`]) every runtime lists the uids it has host objects for;
//! those no Container owns are stopped and removed. Workloads of existing Containers are
//! re-adopted by their first reconcile, which re-attaches the exit watcher.

mod decide;
mod depends;
mod driver;
mod exec;
pub mod fake;
mod faults;
mod network;
pub mod probe;
mod prober;
mod reconcile;
mod rollout;
mod rootfs;
mod status;

#[cfg(test)]
mod probe_tests;
#[cfg(test)]
mod tests;

pub use driver::{
    Attach, Attachments, ContainerRuntime, DriverError, Exit, LogQuery, LogStream, NoNetworks,
    Observed, Running, Runtimes, WorkloadSpec,
};
pub use exec::{
    collect as collect_exec, ExecEvent, ExecLimits, ExecOutput, ExecSession, EXEC_CHANNEL_DEPTH,
    EXEC_CHUNK,
};
pub use network::NetworkAttachments;
pub use probe::{ProbeOutcome, ProbeRunner, ProbeTarget, MAX_OUTPUT as PROBE_OUTPUT};
pub use reconcile::{ContainerConfig, ContainerReconciler, FINALIZER};
pub use status::restart_delay;

use tend_schema::ObjectKey;

/// What can fail in a Container reconcile; each variant names the object or uid involved.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The stored object does not decode (it bypassed validation).
    #[error("{key}: cannot decode: {source}")]
    Decode {
        key: ObjectKey,
        #[source]
        source: serde_json::Error,
    },
    /// A store call failed.
    #[error("{key}: {op}: {source}")]
    Store {
        key: ObjectKey,
        op: &'static str,
        #[source]
        source: tend_schema::store::StoreError,
    },
    /// A runtime or attachment call failed.
    #[error("container {uid}: {driver} {op}: {source}")]
    Driver {
        uid: String,
        driver: &'static str,
        op: &'static str,
        #[source]
        source: DriverError,
    },
}
