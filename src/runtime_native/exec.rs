//! A helper process (`tend exec-native`) run as an [`ExecSession`]: its stdout and stderr read
//! into a bounded channel, its stdin fed from one, its process group killed when the session is
//! dropped before the exit.

use futures::StreamExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tend_controllers::container::{
    DriverError, ExecEvent, ExecSession, EXEC_CHANNEL_DEPTH, EXEC_CHUNK,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::NativeError;

/// Kills the process group `pgid` when dropped, unless the exec was seen to end.
struct KillGroup {
    pgid: i32,
    ended: Arc<AtomicBool>,
}

impl Drop for KillGroup {
    fn drop(&mut self) {
        // pgid 0 would be the daemon's own group: never signal that.
        if self.pgid > 0 && !self.ended.load(Ordering::SeqCst) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Spawns `cmd` in a process group of its own (the command it execs, and everything that
/// starts, stays in it) and streams it.
///
/// # Errors
/// The spawn's I/O error, naming the program.
pub fn spawn(
    mut cmd: tokio::process::Command,
    with_stdin: bool,
) -> Result<ExecSession, NativeError> {
    cmd.stdin(if with_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let program = std::path::PathBuf::from(cmd.as_std().get_program());
    let mut child = cmd.spawn().map_err(NativeError::io("spawn", &program))?;
    let pgid = child.id().map_or(0, |p| p as i32);
    let (tx, rx) = mpsc::channel(EXEC_CHANNEL_DEPTH);
    let stdin = child.stdin.take().map(|mut pipe| {
        let (itx, mut irx) = mpsc::channel::<Vec<u8>>(EXEC_CHANNEL_DEPTH);
        tokio::spawn(async move {
            while let Some(b) = irx.recv().await {
                if pipe.write_all(&b).await.is_err() {
                    break;
                }
            }
            // Dropping the pipe is the command's EOF.
        });
        itx
    });
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let ended = Arc::new(AtomicBool::new(false));
    let guard = KillGroup {
        pgid,
        ended: ended.clone(),
    };
    tokio::spawn(async move {
        let out = pump(stdout, tx.clone(), ExecEvent::Stdout);
        let err = pump(stderr, tx.clone(), ExecEvent::Stderr);
        tokio::join!(out, err);
        let status = child.wait().await;
        ended.store(true, Ordering::SeqCst);
        let ev = match status {
            Ok(s) => Ok(ExecEvent::Exit(exit_code(s))),
            Err(e) => Err(DriverError::failed(e)),
        };
        let _ = tx.send(ev).await;
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        Some((ev, rx))
    })
    .map(move |ev| {
        let _kill_on_drop = &guard;
        ev
    });
    Ok(ExecSession {
        stdin,
        events: events.boxed(),
    })
}

/// Copies `r` into `tx` in chunks of at most [`EXEC_CHUNK`], waiting for room (backpressure);
/// stops at EOF, on a read error, or when nobody listens any more.
async fn pump(
    mut r: impl AsyncRead + Unpin,
    tx: mpsc::Sender<Result<ExecEvent, DriverError>>,
    wrap: fn(Vec<u8>) -> ExecEvent,
) {
    loop {
        let mut buf = vec![0u8; EXEC_CHUNK];
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buf.truncate(n);
                if tx.send(Ok(wrap(buf))).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn exit_code(s: std::process::ExitStatus) -> i64 {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => c.into(),
        (None, Some(sig)) => 128 + i64::from(sig),
        (None, None) => -1,
    }
}
