//! The per-container shim: `tend shim <dir>` runs one workload in fresh namespaces, outside the daemon.
//!
//! # Layout of a container directory (written by the daemon and the shim)
//! - `config.json` — [`ShimConfig`], written by the daemon before [`spawn_shim`].
//! - `shim.lock` — held (flock, exclusive) by the live shim for its whole life: a container can
//!   never run twice; a second shim for the same directory exits at once with [`ShimError::AlreadyRunning`].
//! - `shim.json` — [`ShimHandle`] (shim pid, workload pid and both `/proc/<pid>/stat` start
//!   times), written atomically once the workload has exec'd.
//! - `log`, `log.1`, … — the workload's stdout/stderr, one line per record:
//!   `<RFC3339 UTC timestamp, microseconds> <stdout|stderr> <text>`, e.g.
//!   `2026-01-01T00:00:00.123456Z stdout hello`. Lines longer than 16 KiB are split; a final line
//!   without newline is written at EOF. `log` rotates to `log.1` (and `log.1` to `log.2`, …) when
//!   the next line would push it past `log.max_bytes`; at most `log.max_files` files are kept.
//! - `exit.json` — [`ExitRecord`], written atomically (temp file + rename) when the workload ends.
//!
//! # Process tree
//! The daemon runs `exe shim <dir>` (stage 0) with stdout on a pipe. Stage 0 takes the lock,
//! forks and exits; the fork calls `setsid` and becomes the shim, re-parented away from the daemon
//! (to init or the nearest subreaper), so killing the daemon never kills it. The shim forks the
//! workload into new PID, mount, UTS and IPC namespaces (and a user namespace when asked, see
//! [`userns`]), reports one JSON line on the pipe and then
//! points its stdio at /dev/null.
//!
//! # Tests
//! `tests/shim_native.rs` runs the shim by re-executing the test binary itself ("self-exec"): a
//! tiny wrapper script passed as `exe` execs the test binary filtered to one entry test that calls
//! [`main_from_args`] when `TEND_SHIM_SELFEXEC_DIR` is set.

mod child;
mod config;
mod exec;
mod init;
mod log;
mod proc;
mod run;
mod seccomp;
mod security;
mod spawn;
mod userns;

use std::path::PathBuf;

pub use config::{ExitRecord, LogLimits, OomCheck, ShimConfig, ShimHandle};
pub use exec::exec_in;
pub use log::RotatingLog;
pub use proc::{pidfd_open, process_start_time, PidFd};
pub use run::main_from_args;
pub use seccomp::SeccompError;
pub use security::{Security, SecurityError, DOCKER_DEFAULT_CAPS, MASKED_PATHS, READONLY_PATHS};
pub use spawn::{kill_recorded, read_state, read_state_in, spawn_shim, stop, ShimState};
pub use userns::IdMap;

/// Everything that can go wrong in the shim and its daemon-side helpers; each variant names the
/// path or syscall involved.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`open`, `write`, `rename`…).
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{syscall}({target}): {source}")]
    Sys {
        /// The system call.
        syscall: &'static str,
        /// What it was applied to (a pid, a path, a namespace).
        target: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// A JSON file could not be parsed.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Another shim holds `shim.lock`: the container is already running.
    #[error("container {dir} is already running: {dir}/shim.lock is held by another shim")]
    AlreadyRunning {
        /// The container directory.
        dir: PathBuf,
    },
    /// The shim could not start the workload (the message says which step failed).
    #[error("shim for {dir} failed: {message}")]
    StartFailed {
        /// The container directory.
        dir: PathBuf,
        /// What the shim reported.
        message: String,
    },
    /// The process is gone, or its pid now belongs to another process (start time differs).
    #[error("process {pid} is gone or its pid was reused")]
    ProcessGone {
        /// The pid.
        pid: i32,
    },
    /// The kernel or the filesystem cannot give the container what it asks for (a user
    /// namespace, an id-mapped root); the message says what refused and with which errno.
    #[error("{message}")]
    Unsupported {
        /// What refused, and why.
        message: String,
    },
    /// `tend shim` was called with bad arguments.
    #[error("usage: tend shim <container-dir>: {0}")]
    Usage(String),
}

/// Shorthand for results in this module.
pub type Result<T, E = ShimError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> ShimError {
    let path = path.into();
    move |source| ShimError::Io { op, path, source }
}

pub(crate) fn sys_err(
    syscall: &'static str,
    target: impl ToString,
) -> impl FnOnce(nix::Error) -> ShimError {
    let target = target.to_string();
    move |source| ShimError::Sys {
        syscall,
        target,
        source,
    }
}
