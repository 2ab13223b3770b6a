//! `tend exec NAME -- CMD…`: run a command inside a running container; its exit code is ours.

use super::backend::{Backend, Failure};
use crate::runtime_native::NativeRuntime;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Container.
    pub name: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
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
        let r = c
            .exec(&args.namespace, &args.name, &args.command)
            .await
            .map_err(Failure::from)?;
        let mut out = std::io::stdout();
        let _ = out.write_all(r.output.as_bytes()).and_then(|_| out.flush());
        return Ok(exit_code(r.exit_code));
    }
    let uid = super::logs::native_uid(backend, &args.namespace, &args.name).await?;
    let root = crate::daemon::Layout::new(dir).containers();
    let code =
        crate::util::blocking(move || NativeRuntime::exec(&root, &uid, &args.command)).await?;
    Ok(exit_code(code.into()))
}

/// Runs the command with its stderr joined to stdout (one pipe for the daemon to read); tend's
/// own failure goes to the original stderr and exits 1.
pub fn run_native(args: NativeArgs) -> anyhow::Result<ExitCode> {
    use std::os::fd::AsFd;
    let saved = nix::unistd::dup(std::io::stderr().as_fd())?;
    nix::unistd::dup2_stderr(std::io::stdout().as_fd())?;
    match NativeRuntime::exec(&args.root, &args.uid, &args.command) {
        Ok(code) => Ok(exit_code(code.into())),
        Err(e) => {
            let mut err = std::fs::File::from(saved);
            let _ = writeln!(err, "{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
