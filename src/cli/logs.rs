//! `tend logs NAME [-f] [--tail N] [--since D] [--previous]`: a container's output.

use super::backend::Backend;
use crate::runtime_native::cli::{logs, parse_duration, LogQuery};
use futures::StreamExt;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use tend_schema::kinds::container::{ContainerSpec, ContainerStatus, Runtime};
use tend_schema::{Kind, ObjectKey};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Container.
    pub name: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Keep printing new output until the workload ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    /// Only lines newer than this (e.g. 10s, 5m, 1h).
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<std::time::Duration>,
    /// The output of the run before the current one.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Show each line's timestamp and stream.
    #[arg(long)]
    pub timestamps: bool,
}

/// The uid of native Container `namespace/name`, or a clear error (docker containers need the
/// daemon, which reaches dockerd).
pub(crate) async fn native_uid(
    backend: &Backend,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    let key = ObjectKey::new(Kind::Container, namespace, name);
    let obj = backend.get(&key).await?;
    let c = obj.typed::<ContainerSpec, ContainerStatus>()?;
    if c.spec.runtime != Runtime::Native {
        anyhow::bail!(
            "container {namespace}/{name} uses the {:?} runtime; without a running daemon this \
             command serves native containers only (start `tend serve`)",
            c.spec.runtime
        );
    }
    Ok(c.metadata.uid.unwrap_or_default())
}

pub async fn run(backend: &Backend, dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let q = LogQuery {
        tail: args.tail,
        since: args.since,
        previous: args.previous,
        follow: args.follow,
        timestamps: args.timestamps,
    };
    let mut out = std::io::stdout();
    if let Backend::Daemon(c) = backend {
        let mut stream = c
            .logs(&args.namespace, &args.name, &q)
            .await
            .map_err(super::backend::Failure::from)?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(super::backend::Failure::from)?;
            if out.write_all(&chunk).and_then(|_| out.flush()).is_err() {
                break; // stdout closed (e.g. piped into head)
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let uid = native_uid(backend, &args.namespace, &args.name).await?;
    logs(
        &crate::daemon::Layout::new(dir).containers(),
        &uid,
        &q,
        &mut out,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
