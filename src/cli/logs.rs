//! `tend logs NAME [-f] [--tail N] [--since D] [--previous]`: a container's output.

use crate::runtime_native::cli::{logs, parse_duration, LogQuery};
use std::path::Path;
use std::process::ExitCode;
use tend_schema::kinds::container::{ContainerSpec, ContainerStatus, Runtime};
use tend_schema::store::{SqliteStore, Store};
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

/// The uid of native Container `namespace/name`, or a clear error.
pub(crate) async fn native_uid(
    store: &SqliteStore,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    let key = ObjectKey::new(Kind::Container, namespace, name);
    let obj = store.get(&key).await?;
    let c = obj.typed::<ContainerSpec, ContainerStatus>()?;
    if c.spec.runtime != Runtime::Native {
        anyhow::bail!("container {namespace}/{name} uses the {:?} runtime; this command serves native containers", c.spec.runtime);
    }
    Ok(c.metadata.uid.unwrap_or_default())
}

pub async fn run(store: &SqliteStore, dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let uid = native_uid(store, &args.namespace, &args.name).await?;
    let q = LogQuery {
        tail: args.tail,
        since: args.since,
        previous: args.previous,
        follow: args.follow,
        timestamps: args.timestamps,
    };
    let mut out = std::io::stdout();
    logs(&dir.join("containers"), &uid, &q, &mut out).await?;
    Ok(ExitCode::SUCCESS)
}
