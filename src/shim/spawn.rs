//! Daemon side: start a detached shim, read a container directory's state, stop a workload.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::config::{read_json, ExitRecord, ShimHandle};
use super::proc::{is_alive, PidFd};
use super::run::Report;
use super::{io_err, Result, ShimError};

/// Starts `exe shim <container_dir>` fully detached (own session, not a child of the caller,
/// stdio on /dev/null) and waits until the workload has exec'd.
///
/// Blocking: call it through `tend::util::blocking` from async code.
///
/// # Errors
/// [`ShimError::AlreadyRunning`] when a shim already holds the directory's lock;
/// [`ShimError::StartFailed`] with the failed step (e.g. `execve: No such file or directory`).
pub fn spawn_shim(exe: &Path, container_dir: &Path) -> Result<ShimHandle> {
    crate::failpoint::check("shim.spawn").map_err(|fp| ShimError::StartFailed {
        dir: container_dir.to_owned(),
        message: fp.to_string(),
    })?;
    let mut child = Command::new(exe)
        .arg("shim")
        .arg(container_dir)
        // systemd's notify socket and watchdog belong to the daemon, not to shims or workloads.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io_err("spawn", exe))?;
    // The report is the first line that parses; anything a wrapper printed before it is skipped.
    let mut report = None;
    let mut last = String::new();
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines() {
            last = line.map_err(io_err("read report of", exe))?;
            if let Ok(r) = serde_json::from_str::<Report>(last.trim()) {
                report = Some(r);
                break;
            }
        }
    }
    // Stage 0 exits right after forking the shim; reap it so it leaves no zombie.
    let status = child.wait().map_err(io_err("wait", exe))?;
    let failed = |message: String| ShimError::StartFailed {
        dir: container_dir.to_owned(),
        message,
    };
    match report {
        Some(Report::Started(h)) => Ok(h),
        Some(Report::AlreadyRunning) => Err(ShimError::AlreadyRunning {
            dir: container_dir.to_owned(),
        }),
        Some(Report::Failed(m)) => Err(failed(m)),
        Some(Report::Unsupported(message)) => Err(ShimError::Unsupported { message }),
        None => Err(failed(format!(
            "no report from the shim ({status}); last output {:?}",
            last.trim()
        ))),
    }
}

/// What a container directory says about its workload, verified against /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimState {
    /// The workload runs: its pid has the recorded start time (never a recycled pid).
    Running(ShimHandle),
    /// The workload has ended but its shim is still alive, about to write `exit.json`.
    Exiting(ShimHandle),
    /// The workload ended and the shim recorded how.
    Exited(ExitRecord),
    /// `shim.json` exists but neither the workload nor the shim lives, and no exit was
    /// recorded (the shim was killed): the exit status is unknown.
    Lost(ShimHandle),
    /// Nothing was started in this directory (or it is being started right now).
    Absent,
}

/// [`read_state_in`] against the real `/proc`.
pub fn read_state(container_dir: &Path) -> Result<ShimState> {
    read_state_in(Path::new("/proc"), container_dir)
}

/// Reads `exit.json` and `shim.json` of `container_dir` and checks the recorded pids against
/// `<proc_root>/<pid>/stat` start times.
pub fn read_state_in(proc_root: &Path, container_dir: &Path) -> Result<ShimState> {
    if let Some(rec) = read_json::<ExitRecord>(&container_dir.join("exit.json"))? {
        return Ok(ShimState::Exited(rec));
    }
    let Some(h) = read_json::<ShimHandle>(&container_dir.join("shim.json"))? else {
        return Ok(ShimState::Absent);
    };
    if is_alive(proc_root, h.workload_pid, h.workload_start_time) {
        return Ok(ShimState::Running(h));
    }
    if is_alive(proc_root, h.shim_pid, h.shim_start_time) {
        return Ok(ShimState::Exiting(h));
    }
    // The shim may have written exit.json between our two reads.
    match read_json::<ExitRecord>(&container_dir.join("exit.json"))? {
        Some(rec) => Ok(ShimState::Exited(rec)),
        None => Ok(ShimState::Lost(h)),
    }
}

/// SIGKILLs the workload and the shim of every container recorded under `containers_root`
/// (`<uid>/shim.json`), each through a pidfd verified against its start time, so a reused pid
/// is never hit. Last-resort cleanup (benches, test harnesses) when the daemon did not stop
/// them; the daemon itself stops workloads with [`stop`].
pub fn kill_recorded(containers_root: &Path) {
    for e in std::fs::read_dir(containers_root)
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(ShimState::Running(h)) = read_state(&e.path()) {
            for (pid, start) in [
                (h.workload_pid, h.workload_start_time),
                (h.shim_pid, h.shim_start_time),
            ] {
                if let Ok(p) = PidFd::open(pid, start) {
                    let _ = p.signal(Signal::SIGKILL);
                }
            }
        }
    }
}

/// How long [`stop`] waits for the shim to record the exit after the workload died.
const SHIM_RECORD_TIMEOUT: Duration = Duration::from_secs(5);

/// Stops the workload of `container_dir`: SIGTERM, up to `grace` for it to exit, then SIGKILL;
/// then waits for the shim to write `exit.json` and returns that record (`None` when nothing
/// ran or the exit status was lost).
///
/// # Guarantees
/// Signals go through a pidfd opened and verified against the recorded start time, so a
/// recycled pid is never signalled. Idempotent: stopping an exited container returns its record.
///
/// Note: the workload is PID 1 of its namespace, so SIGTERM is ignored unless it installed a
/// handler (as with `docker run` without `--init`); SIGKILL after `grace` always works.
pub async fn stop(container_dir: &Path, grace: Duration) -> Result<Option<ExitRecord>> {
    let dir: PathBuf = container_dir.to_owned();
    let state = crate::util::blocking(move || read_state(&dir)).await?;
    let handle = match state {
        ShimState::Running(h) => {
            if let Ok(pfd) = PidFd::open(h.workload_pid, h.workload_start_time) {
                // No grace: SIGKILL now, without a SIGTERM the workload could act on.
                let first = if grace.is_zero() {
                    Signal::SIGKILL
                } else {
                    Signal::SIGTERM
                };
                pfd.signal(first)?;
                if tokio::time::timeout(grace, pfd.exited()).await.is_err() {
                    pfd.signal(Signal::SIGKILL)?;
                    pfd.exited().await?;
                }
            }
            h
        }
        ShimState::Exiting(h) => h,
        ShimState::Exited(rec) => return Ok(Some(rec)),
        ShimState::Lost(_) | ShimState::Absent => return Ok(None),
    };
    if let Ok(shim) = PidFd::open(handle.shim_pid, handle.shim_start_time) {
        let _ = tokio::time::timeout(SHIM_RECORD_TIMEOUT, shim.exited()).await;
    }
    let dir = container_dir.to_owned();
    match crate::util::blocking(move || read_state(&dir)).await? {
        ShimState::Exited(rec) => Ok(Some(rec)),
        _ => Ok(None),
    }
}
