//! A Docker exec as an [`ExecSession`]: output through a bounded channel (nothing read ahead of
//! the consumer beyond it), stdin written as it comes, and the command killed by its host pid
//! when the session is dropped before the exit (Docker has no call to stop an exec).

use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tend_controllers::container::{DriverError, ExecEvent, ExecSession, EXEC_CHANNEL_DEPTH};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::docker::{DockerDriver, DockerExec, ExecChunk};

/// Kills the exec (its process group when it leads one) when dropped before it ended.
struct KillExec {
    driver: DockerDriver,
    exec_id: String,
    ended: Arc<AtomicBool>,
}

impl Drop for KillExec {
    fn drop(&mut self) {
        if self.ended.load(Ordering::SeqCst) {
            return;
        }
        let (driver, exec_id) = (self.driver.clone(), std::mem::take(&mut self.exec_id));
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let Ok(state) = driver.exec_state(&exec_id).await else {
                return;
            };
            if !state.running || state.pid <= 0 {
                return;
            }
            let pid = nix::unistd::Pid::from_raw(state.pid as i32);
            let kill = nix::sys::signal::Signal::SIGKILL;
            if nix::unistd::getpgid(Some(pid)) == Ok(pid) {
                let _ = nix::sys::signal::killpg(pid, kill);
            } else {
                let _ = nix::sys::signal::kill(pid, kill);
            }
        });
    }
}

/// Streams `exec` started through `driver`.
pub(super) fn session(driver: DockerDriver, exec: DockerExec) -> ExecSession {
    let DockerExec {
        exec_id,
        mut output,
        input,
    } = exec;
    let stdin = input.map(|mut w| {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(EXEC_CHANNEL_DEPTH);
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if w.write_all(&b).await.is_err() {
                    return;
                }
            }
            let _ = w.shutdown().await;
        });
        tx
    });
    let ended = Arc::new(AtomicBool::new(false));
    let guard = KillExec {
        driver: driver.clone(),
        exec_id: exec_id.clone(),
        ended: ended.clone(),
    };
    let (tx, rx) = mpsc::channel(EXEC_CHANNEL_DEPTH);
    tokio::spawn(async move {
        while let Some(chunk) = output.next().await {
            let ev = match chunk {
                Ok(ExecChunk::Stdout(b)) => Ok(ExecEvent::Stdout(b.to_vec())),
                Ok(ExecChunk::Stderr(b)) => Ok(ExecEvent::Stderr(b.to_vec())),
                Err(e) => Err(DriverError::failed(e)),
            };
            let failed = ev.is_err();
            if tx.send(ev).await.is_err() || failed {
                return;
            }
        }
        let _ = tx.send(exit(&driver, &exec_id).await).await;
        ended.store(true, Ordering::SeqCst);
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        Some((ev, rx))
    })
    .map(move |ev| {
        let _kill_on_drop = &guard;
        ev
    });
    ExecSession {
        stdin,
        events: events.boxed(),
    }
}

/// The exit code once dockerd has recorded it: the output can end a moment before.
async fn exit(driver: &DockerDriver, exec_id: &str) -> Result<ExecEvent, DriverError> {
    let mut wait = Duration::from_millis(2);
    for _ in 0..20 {
        let state = driver
            .exec_state(exec_id)
            .await
            .map_err(DriverError::failed)?;
        if let (false, Some(code)) = (state.running, state.exit_code) {
            return Ok(ExecEvent::Exit(code));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(200));
    }
    Err(DriverError::failed(std::io::Error::other(format!(
        "exec {exec_id}: output ended but dockerd reports no exit code"
    ))))
}
