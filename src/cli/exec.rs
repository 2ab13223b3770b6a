//! `tend exec NAME -- CMD…`: run a command inside a running container; its exit code is ours.

use super::backend::{Backend, Failure};
use crate::api::client::ClientError;
use crate::api::ExecOutputFrame;
use crate::runtime_native::NativeRuntime;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Container.
    pub name: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Pass this process's stdin to the command (without it, the command reads EOF through a
    /// daemon; direct mode always shares the terminal's stdio).
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `tend exec-native ROOT UID -- CMD…` (hidden): what the daemon runs to serve an exec.
#[derive(Debug, clap::Args)]
pub struct NativeArgs {
    /// The native runtime's containers directory.
    pub root: PathBuf,
    pub uid: String,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

fn exit_code(code: i64) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

pub async fn run(backend: &Backend, dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    if let Backend::Daemon(c) = backend {
        let stdin = args.stdin.then(forward_stdin);
        let frames = c
            .exec(&args.namespace, &args.name, &args.command, stdin)
            .await
            .map_err(Failure::from)?;
        return Ok(exit_code(print_frames(frames).await?));
    }
    let uid = super::logs::native_uid(backend, &args.namespace, &args.name).await?;
    let root = crate::daemon::Layout::new(dir).containers();
    let code =
        crate::util::blocking(move || NativeRuntime::exec(&root, &uid, &args.command)).await?;
    Ok(exit_code(code.into()))
}

/// This process's stdin, read in chunks into a small channel (read no faster than it is sent).
fn forward_stdin() -> tokio::sync::mpsc::Receiver<Bytes> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut input = tokio::io::stdin();
        loop {
            let mut buf = vec![0u8; 32 * 1024];
            match input.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Bytes::from(buf)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Writes stdout and stderr frames where they belong; the exit code at the end.
async fn print_frames(
    mut frames: BoxStream<'static, Result<ExecOutputFrame, ClientError>>,
) -> anyhow::Result<i64> {
    let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
    while let Some(f) = frames.next().await {
        match f.map_err(Failure::from)? {
            ExecOutputFrame::Stdout(b) => {
                out.write_all(&b).await?;
                out.flush().await?;
            }
            ExecOutputFrame::Stderr(b) => {
                err.write_all(&b).await?;
                err.flush().await?;
            }
            ExecOutputFrame::Exit(code) => return Ok(code),
        }
    }
    anyhow::bail!("exec: the daemon sent no exit code")
}

/// Runs the command with the daemon's pipes as its stdio. When it cannot be run, says why on
/// stderr and exits 127 (no such command) or 126 (anything else), as a shell does.
pub fn run_native(args: NativeArgs) -> anyhow::Result<ExitCode> {
    match NativeRuntime::exec(&args.root, &args.uid, &args.command) {
        Ok(code) => Ok(exit_code(code.into())),
        Err(e) => {
            let msg = e.to_string();
            eprintln!("tend exec: {msg}");
            let not_found = msg.contains("No such file or directory");
            Ok(ExitCode::from(if not_found { 127 } else { 126 }))
        }
    }
}
