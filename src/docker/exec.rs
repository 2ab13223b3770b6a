//! A command run in a Docker container as a stream: the attached output read only as fast as
//! the caller polls it (dockerd blocks the command when nobody reads), stdin as a writer, and
//! the exec's state (exit code, host pid) from `inspect_exec`.

use std::pin::Pin;

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::AsyncWrite;

use super::error::{Ctx, Target};
use super::{DockerDriver, DockerError};

/// One piece of an exec's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecChunk {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// An exec started in a container and attached to.
pub struct DockerExec {
    /// Docker's id of the exec, for [`DockerDriver::exec_state`].
    pub exec_id: String,
    /// stdout and stderr as dockerd sends them; ends when the command's streams close.
    pub output: BoxStream<'static, Result<ExecChunk, DockerError>>,
    /// The command's stdin (when asked for); shutting it down is the command's EOF.
    pub input: Option<Pin<Box<dyn AsyncWrite + Send>>>,
}

/// What `inspect_exec` says about an exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecState {
    pub running: bool,
    pub exit_code: Option<i64>,
    /// The command's pid on the host (0 before it started).
    pub pid: i64,
}

impl DockerDriver {
    /// Creates and starts `argv` in the running container `id`, attached to stdout and stderr
    /// (and stdin when `stdin`), and returns it without waiting for it.
    ///
    /// # Errors
    /// `NotFound` for a missing container; `Conflict` when it is not running; `Unavailable`.
    pub async fn exec_start(
        &self,
        id: &str,
        argv: &[&str],
        stdin: bool,
    ) -> Result<DockerExec, DockerError> {
        let ctx = self.ctx("exec", id, Target::Container);
        let config = ExecConfig {
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(argv.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        let options = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: None,
        };
        let limit = self.timeouts.call;
        let (exec_id, started) = self
            .call_within(&ctx, limit, |d| async move {
                let exec_id = d.create_exec(id, config).await?.id;
                let started = d.start_exec(&exec_id, Some(options)).await?;
                Ok((exec_id, started))
            })
            .await?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(ctx.map(bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: "exec started detached".into(),
            }));
        };
        let (socket, object) = (self.socket.clone(), id.to_string());
        let output = output
            .filter_map(move |item| {
                let ctx = Ctx {
                    op: "exec output",
                    object: &object,
                    target: Target::Container,
                    socket: socket.as_ref(),
                };
                let r = match item {
                    Ok(bollard::container::LogOutput::StdOut { message }) => {
                        Some(Ok(ExecChunk::Stdout(message)))
                    }
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        Some(Ok(ExecChunk::Stderr(message)))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(ctx.map(e))),
                };
                std::future::ready(r)
            })
            .boxed();
        Ok(DockerExec {
            exec_id,
            output,
            input: stdin.then_some(input),
        })
    }

    /// The state of the exec `exec_id`.
    ///
    /// # Errors
    /// `NotFound` when dockerd no longer knows it; `Unavailable`.
    pub async fn exec_state(&self, exec_id: &str) -> Result<ExecState, DockerError> {
        let ctx = self.ctx("inspect exec", exec_id, Target::Container);
        let r = self
            .call(&ctx, |d| async move { d.inspect_exec(exec_id).await })
            .await?;
        Ok(ExecState {
            running: r.running.unwrap_or(false),
            exit_code: r.exit_code,
            pid: r.pid.unwrap_or(0),
        })
    }
}
