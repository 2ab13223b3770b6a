//! `tend exec NAME -- CMD…`: run a command inside a running container; its exit code is ours.

use crate::runtime_native::NativeRuntime;
use std::path::Path;
use std::process::ExitCode;
use tend_schema::store::SqliteStore;

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

pub async fn run(store: &SqliteStore, dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let uid = super::logs::native_uid(store, &args.namespace, &args.name).await?;
    let root = dir.join("containers");
    let code =
        crate::util::blocking(move || NativeRuntime::exec(&root, &uid, &args.command)).await?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
