//! A command run inside a running container, as a stream: what the runtimes hand out for
//! `tend exec`, and the capped, timed, collected form probes use, built on top of it.
//!
//! # Guarantees
//! - Bounded: a runtime reads the command's output only as fast as the consumer takes
//!   [`ExecSession::events`] (at most [`EXEC_CHANNEL_DEPTH`] chunks of [`EXEC_CHUNK`] bytes in
//!   between); a command whose output nobody reads blocks on its write.
//! - Dropping [`ExecSession::events`] before the [`ExecEvent::Exit`] kills the command and every
//!   process it started (its process group).

use futures::stream::BoxStream;
use futures::StreamExt;
use std::time::Duration;

use super::DriverError;

/// Largest chunk of output a runtime reads at once.
pub const EXEC_CHUNK: usize = 32 * 1024;
/// Chunks a runtime may read ahead of its consumer.
pub const EXEC_CHANNEL_DEPTH: usize = 4;

/// One piece of what a running command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command's exit code (128 + signal when a signal ended it); always the last event.
    Exit(i64),
}

/// A command running inside a container.
pub struct ExecSession {
    /// The command's stdin when it was asked for; dropping the sender closes it (EOF).
    pub stdin: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    /// Output as it is read, then the exit. Dropping it before the exit kills the command.
    pub events: BoxStream<'static, Result<ExecEvent, DriverError>>,
}

/// Bounds of a collected exec (a probe's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecLimits {
    /// The command is killed and the exec fails with [`DriverError::TimedOut`] after this.
    pub timeout: Duration,
    /// Output bytes kept; the rest is read and dropped ([`ExecOutput::truncated`]).
    pub max_output: usize,
}

impl Default for ExecLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            max_output: 1 << 20,
        }
    }
}

/// What a command run inside a container printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    /// stdout and stderr as they arrived, up to [`ExecLimits::max_output`] bytes.
    pub output: Vec<u8>,
    /// More output came than was kept.
    pub truncated: bool,
}

/// Drains `session` into an [`ExecOutput`] within `limits`; on timeout the session is dropped,
/// which kills the command.
///
/// # Errors
/// [`DriverError::TimedOut`] after `limits.timeout`; the runtime's error when the stream ends
/// with one or without an exit.
pub async fn collect(session: ExecSession, limits: ExecLimits) -> Result<ExecOutput, DriverError> {
    let ExecSession { stdin, mut events } = session;
    drop(stdin);
    let drain = async move {
        let mut out = ExecOutput {
            exit_code: -1,
            output: Vec::new(),
            truncated: false,
        };
        while let Some(ev) = events.next().await {
            match ev? {
                ExecEvent::Stdout(b) | ExecEvent::Stderr(b) => {
                    let room = limits.max_output.saturating_sub(out.output.len());
                    out.truncated |= b.len() > room;
                    out.output.extend_from_slice(&b[..b.len().min(room)]);
                }
                ExecEvent::Exit(code) => {
                    out.exit_code = code;
                    return Ok(out);
                }
            }
        }
        Err(DriverError::NotRunning {
            message: "exec ended without an exit code".into(),
        })
    };
    tokio::time::timeout(limits.timeout, drain)
        .await
        .map_err(|_| DriverError::TimedOut {
            what: "exec",
            after: limits.timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A session whose stream sets `dropped` when it is dropped (as a runtime kills there).
    fn session(events: Vec<ExecEvent>, then_hang: bool, dropped: Arc<AtomicBool>) -> ExecSession {
        struct Guard(Arc<AtomicBool>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = Guard(dropped);
        let head = futures::stream::iter(events.into_iter().map(Ok));
        let tail = futures::stream::pending().take(usize::from(then_hang));
        ExecSession {
            stdin: None,
            events: head
                .chain(tail)
                .map(move |e| {
                    let _keep = &guard;
                    e
                })
                .boxed(),
        }
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_counted_as_truncated_and_the_exit_still_arrives() {
        let flag = Arc::new(AtomicBool::new(false));
        let s = session(
            vec![
                ExecEvent::Stdout(b"hello ".to_vec()),
                ExecEvent::Stderr(b"world".to_vec()),
                ExecEvent::Exit(7),
            ],
            false,
            flag,
        );
        let limits = ExecLimits {
            max_output: 8,
            ..Default::default()
        };
        let out = collect(s, limits).await.unwrap();
        assert_eq!(out.exit_code, 7);
        assert_eq!(out.output, b"hello wo");
        assert!(out.truncated);
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_past_its_timeout_is_dropped_so_the_runtime_kills_it() {
        let dropped = Arc::new(AtomicBool::new(false));
        let s = session(
            vec![ExecEvent::Stdout(b"x".to_vec())],
            true,
            dropped.clone(),
        );
        let limits = ExecLimits {
            timeout: Duration::from_secs(3),
            max_output: 10,
        };
        let err = collect(s, limits).await.unwrap_err();
        assert!(matches!(err, DriverError::TimedOut { .. }), "{err}");
        assert!(dropped.load(Ordering::SeqCst));
    }
}
